//! The owner's view on the admin listener: the single-page dashboard (assets embedded in the
//! binary, no CDN), its live feed (Server-Sent Events), voicemail playback with range
//! requests, CSV export and Prometheus metrics. Authentication lives in [`auth`].

pub mod auth;
pub mod live;

use std::convert::Infallible;
use std::path::{Component, Path};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast::error::RecvError;

use crate::calls::export;
use crate::server::App;
use crate::server::http::{self as h, Body};

/// How often an idle live feed sends a comment so proxies and phones keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// A static asset of the dashboard, if `path` names one.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (body, kind) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/assets/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/assets/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = h::with_type(StatusCode::OK, kind, Bytes::from_static(body.as_bytes()));
    secure_headers(r.headers_mut());
    Some(r)
}

/// The login form, with an optional message.
pub fn login_page(status: StatusCode, message: &str) -> Response<Body> {
    // The message is one of our own constants, never user input; escaped anyway.
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page = LOGIN_HTML.replace("{{message}}", &escaped);
    let mut r = h::with_type(status, "text/html; charset=utf-8", Bytes::from(page));
    secure_headers(r.headers_mut());
    r
}

/// Headers that keep the pages from being framed or mixed with foreign scripts.
fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; media-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `GET /api/v1/events`: every call change as an SSE `call` event carrying the call's record;
/// a `resync` event tells the page to reload the list when it fell behind.
pub fn events(app: &App) -> Response<Body> {
    let rx = app.bus.subscribe();
    let shutdown = app.shutdown.clone();
    let first = Bytes::from_static(b"retry: 3000\n\n");
    let body = stream::unfold((rx, shutdown, Some(first)), |(mut rx, shutdown, first)| async move {
        if let Some(bytes) = first {
            return Some((Ok::<_, Infallible>(Frame::data(bytes)), (rx, shutdown, None)));
        }
        let chunk = tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
            msg = rx.recv() => match msg {
                Ok(m) => match serde_json::to_string(&m.record) {
                    Ok(json) => Bytes::from(format!("event: call\ndata: {json}\n\n")),
                    Err(_) => Bytes::from_static(b": unencodable record\n\n"),
                },
                Err(RecvError::Lagged(_)) => Bytes::from_static(b"event: resync\ndata: {}\n\n"),
                Err(RecvError::Closed) => return None,
            },
        };
        Some((Ok(Frame::data(chunk)), (rx, shutdown, None)))
    });
    let mut r = Response::new(StreamBody::new(body).boxed());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /api/v1/calls/{sid}/recording`: the voicemail WAV, with single-range requests so the
/// browser's audio element can seek and learn the duration.
pub async fn recording(app: &App, sid: &str, headers: &HeaderMap) -> Response<Body> {
    let record = match app.store.get(sid) {
        Ok(Some(r)) => r,
        Ok(None) => return h::text(StatusCode::NOT_FOUND, "no such call\n"),
        Err(e) => {
            log::error!("recording of {sid}: {e}");
            return h::text(StatusCode::SERVICE_UNAVAILABLE, "call log unavailable\n");
        }
    };
    let (_, relative) = export::media_outcome(&record);
    let relative = Path::new(&relative);
    // Recordings live under the data dir; anything else in a record is refused.
    if relative.as_os_str().is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return h::text(StatusCode::NOT_FOUND, "no recording for this call\n");
    }
    let bytes = match tokio::fs::read(app.config.storage.dir.join(relative)).await {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            log::warn!("recording of {sid} at {}: {e}", relative.display());
            return h::text(StatusCode::NOT_FOUND, "recording file missing\n");
        }
    };
    let len = bytes.len() as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let mut r = match range.map(|v| http_range_header::parse_range_header(v).and_then(|p| p.validate(len))) {
        None => h::with_type(StatusCode::OK, "audio/wav", bytes),
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let (start, end) = (*ranges[0].start(), *ranges[0].end());
            let part = bytes.slice(start as usize..=end as usize);
            let mut r = h::with_type(StatusCode::PARTIAL_CONTENT, "audio/wav", part);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        // Several ranges: answer with the whole file, which RFC 9110 allows.
        Some(Ok(_)) => h::with_type(StatusCode::OK, "audio/wav", bytes),
        Some(Err(_)) => {
            let mut r = h::empty(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
    };
    r.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

/// `GET /api/v1/calls.csv?from=&to=`: calls first seen in the range, oldest first. `from` and
/// `to` are dates (`2026-11-25`, the box's local time zone) or RFC 3339 timestamps; `to` is
/// exclusive for timestamps and inclusive for dates. Default: the last 30 days.
pub fn csv(app: &App, uri: &http::Uri) -> Response<Body> {
    let range = match date_range(h::query_param(uri, "from").as_deref(), h::query_param(uri, "to").as_deref()) {
        Ok(r) => r,
        Err(msg) => return h::text(StatusCode::BAD_REQUEST, msg),
    };
    let calls = match app.store.between(range.0, range.1) {
        Ok(c) => c,
        Err(e) => {
            log::error!("CSV export: {e}");
            return h::text(StatusCode::SERVICE_UNAVAILABLE, "call log unavailable\n");
        }
    };
    let mut out = Vec::new();
    if let Err(e) = export::write_csv(&calls, &mut out) {
        log::error!("CSV export: {e}");
        return h::text(StatusCode::INTERNAL_SERVER_ERROR, "export failed\n");
    }
    let mut r = h::with_type(StatusCode::OK, "text/csv; charset=utf-8", Bytes::from(out));
    r.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"calls.csv\""));
    r
}

/// Parses the CSV export's `from`/`to` parameters. A day or time beyond what the box can
/// represent (jiff's range, about ±9999 years) is clamped to that range's end: "everything up
/// to 9999-12-31" is a fair question whose answer is "everything".
pub fn date_range(from: Option<&str>, to: Option<&str>) -> Result<(jiff::Timestamp, jiff::Timestamp), &'static str> {
    use jiff::Timestamp;
    let now = Timestamp::now();
    let parse = |s: &str, end: bool| -> Result<Timestamp, &'static str> {
        if let Ok(t) = s.parse::<Timestamp>() {
            return Ok(t);
        }
        let clamp = |date: jiff::civil::Date| if date.year() > 0 { Timestamp::MAX } else { Timestamp::MIN };
        let date: jiff::civil::Date = match s.parse() {
            Ok(date) => date,
            Err(_) => {
                // A well-formed RFC 3339 time that is no `Timestamp` is one out of range.
                return match jiff::fmt::temporal::Pieces::parse(s) {
                    Ok(pieces) if pieces.time().is_some() && pieces.offset().is_some() => Ok(clamp(pieces.date())),
                    _ => Err("from/to must be dates like 2026-11-25 or RFC 3339 timestamps\n"),
                };
            }
        };
        let clamped = clamp(date);
        let Ok(date) = (if end { date.tomorrow() } else { Ok(date) }) else {
            return Ok(clamped);
        };
        Ok(date.to_zoned(jiff::tz::TimeZone::system()).map(|z| z.timestamp()).unwrap_or(clamped))
    };
    let from = match from {
        Some(s) if !s.is_empty() => parse(s, false)?,
        _ => now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(Timestamp::MIN),
    };
    let to = match to {
        Some(s) if !s.is_empty() => parse(s, true)?,
        _ => now.checked_add(jiff::SignedDuration::from_hours(24)).unwrap_or(Timestamp::MAX),
    };
    // Both ends clamped to the same edge is an empty range past that edge, not a mistake.
    let past_an_edge = from == Timestamp::MAX || to == Timestamp::MIN;
    if to < from || (to == from && !past_an_edge) {
        return Err("`to` must be after `from`\n");
    }
    Ok((from, to))
}

/// `GET /metrics`.
pub fn metrics(app: &App) -> Response<Body> {
    if let Ok(size) = app.store.size_on_disk() {
        app.metrics.store_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
    }
    if let Some(cert) = &app.tls.status().borrow().certificate {
        let left = cert.not_after.duration_since(jiff::Timestamp::now()).as_secs();
        app.metrics.certificate_expiry_seconds.set(left);
    }
    h::with_type(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        Bytes::from(app.metrics.encode()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_dates_are_clamped_and_survive_the_cli_round_trip() {
        let (from, to) = date_range(Some("-009999-01-01"), Some("9999-12-31")).unwrap();
        assert_eq!((from, to), (jiff::Timestamp::MIN, jiff::Timestamp::MAX));
        // `callbox calls --csv` sends the range on as RFC 3339: the clamped ends must parse back.
        assert_eq!(date_range(Some(&from.to_string()), Some(&to.to_string())), Ok((from, to)));
        assert_eq!(date_range(Some("9999-12-31"), Some("9999-12-31")), Ok((to, to)));
        assert!(date_range(Some("2026-02-01"), Some("2026-01-01")).is_err());
        assert!(date_range(Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:00Z")).is_err());
        assert!(date_range(Some("yesterday"), None).is_err());
        assert!(date_range(Some("2026-13-01T00:00:00Z"), None).is_err(), "malformed, not out of range");
        assert_eq!(date_range(None, Some("9999-12-31T23:59:59+01:00")).map(|r| r.1), Ok(jiff::Timestamp::MAX));
    }
}
