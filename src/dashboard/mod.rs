//! The owner's view on the admin listener: the single-page dashboard (assets embedded in the
//! binary, no CDN), its live feed (Server-Sent Events), voicemail playback with range
//! requests, CSV export and Prometheus metrics. Authentication lives in [`auth`].

pub mod auth;
pub mod live;

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::calls::{CallLog, export, search};
use crate::metrics::Metrics;
use crate::tls::TlsStatusRx;
use crate::web::{self as h, Body};

/// How often an idle live feed sends a comment so proxies and phones keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// A static asset of the dashboard, if `path` names one.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (body, kind) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/assets/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/assets/style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "/assets/favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
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

/// The search a request's `q`, `outcome`, `line`, `from` and `to` ask for (see
/// [`search::Query`]), or what is wrong with them.
pub fn search_query(
    uri: &http::Uri,
    tz: &jiff::tz::TimeZone,
    undated: (jiff::Timestamp, jiff::Timestamp),
) -> Result<search::Query, String> {
    let [text, outcome, line, from, to] = ["q", "outcome", "line", "from", "to"].map(|k| h::query_param(uri, k));
    let params = search::Params {
        text: text.as_deref(),
        outcome: outcome.as_deref(),
        line: line.as_deref(),
        from: from.as_deref(),
        to: to.as_deref(),
    };
    search::Query::parse(params, tz, undated)
}

/// One call change as an SSE event, with its bus position as its id.
fn sse_call(bus: &crate::calls::Bus, m: &crate::calls::BusMessage) -> String {
    match serde_json::to_string(&m.record) {
        Ok(json) => format!("id: {}\nevent: call\ndata: {json}\n\n", bus.position(m.seq)),
        Err(_) => ": unencodable record\n\n".to_owned(),
    }
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

/// What the owner's pages read: the call log, the recordings under the data dir, the metrics
/// and the certificate state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dashboard {
    calls: CallLog,
    storage_dir: PathBuf,
    metrics: Arc<Metrics>,
    certificate: TlsStatusRx,
    shutdown: CancellationToken,
    /// The shop's time zone, for the CSV's local times.
    time_zone: jiff::tz::TimeZone,
}

impl Dashboard {
    /// The dashboard over these parts; its live feeds end when `shutdown` is cancelled.
    pub fn new(
        calls: CallLog,
        storage_dir: PathBuf,
        metrics: Arc<Metrics>,
        certificate: TlsStatusRx,
        shutdown: CancellationToken,
        time_zone: jiff::tz::TimeZone,
    ) -> Self {
        Self { calls, storage_dir, metrics, certificate, shutdown, time_zone }
    }

    /// Follows the call bus for the live board's metrics until shutdown (see [`live`]).
    pub async fn run_live_board(self) {
        live::run(self.calls.subscribe(), &self.metrics, &self.shutdown).await;
    }

    /// `GET /api/v1/events`: every call change as an SSE `call` event carrying the call's
    /// record, with its bus position as the event id. A page that comes back with
    /// `Last-Event-ID` (or `?after=`, the position its call list was read at) first gets what
    /// it missed; when that is no longer known (the box restarted, or too much happened) it
    /// gets a `resync` event and reloads the list, so nothing is lost either way.
    pub fn events(&self, headers: &HeaderMap, uri: &http::Uri) -> Response<Body> {
        let bus = self.calls.bus().clone();
        let position = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| h::query_param(uri, "after"));
        let (missed, rx) = match position {
            Some(p) => match bus.seq_of(&p) {
                Some(seq) => bus.since(seq),
                None => (None, self.calls.subscribe()),
            },
            None => (Some(Vec::new()), self.calls.subscribe()),
        };
        let mut first = String::from("retry: 3000\n\n");
        match missed {
            Some(messages) => messages.iter().for_each(|m| first.push_str(&sse_call(&bus, m))),
            None => first.push_str("event: resync\ndata: {}\n\n"),
        }
        let shutdown = self.shutdown.clone();
        let body = stream::unfold((rx, shutdown, Some(Bytes::from(first))), move |(mut rx, shutdown, first)| {
            let bus = bus.clone();
            async move {
                if let Some(bytes) = first {
                    return Some((Ok::<_, Infallible>(Frame::data(bytes)), (rx, shutdown, None)));
                }
                let chunk = tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
                    msg = rx.recv() => match msg {
                        Ok(m) => Bytes::from(sse_call(&bus, &m)),
                        Err(RecvError::Lagged(_)) => Bytes::from_static(b"event: resync\ndata: {}\n\n"),
                        Err(RecvError::Closed) => return None,
                    },
                };
                Some((Ok(Frame::data(chunk)), (rx, shutdown, None)))
            }
        });
        let mut r = Response::new(StreamBody::new(body).boxed());
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// `GET /api/v1/calls/{sid}/recording`: the voicemail WAV, with single-range requests so the
    /// browser's audio element can seek and learn the duration.
    pub async fn recording(&self, sid: &str, headers: &HeaderMap) -> Response<Body> {
        let record = match self.calls.store().get(sid) {
            Ok(Some(r)) => r,
            Ok(None) => return h::text(StatusCode::NOT_FOUND, "no such call\n"),
            Err(e) => return h::call_log_unavailable(&format!("recording of {sid}"), &e),
        };
        let (_, relative) = export::media_outcome(&record);
        let relative = Path::new(&relative);
        // Recordings live under the data dir; anything else in a record is refused.
        if relative.as_os_str().is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return h::text(StatusCode::NOT_FOUND, "no recording for this call\n");
        }
        let bytes = match tokio::fs::read(self.storage_dir.join(relative)).await {
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

    /// `GET /api/v1/calls.csv?from=&to=&q=&outcome=&line=`: the calls a search finds (see
    /// [`search_query`]), oldest first. `from` and `to` are dates (`2026-11-25`, the shop's time
    /// zone) or RFC 3339 timestamps; `to` is exclusive for timestamps and inclusive for dates.
    /// Without either: the last 30 days.
    pub fn csv(&self, uri: &http::Uri) -> Response<Body> {
        let last_30_days = match export::date_range(None, None, &self.time_zone) {
            Ok(range) => range,
            Err(msg) => return h::text(StatusCode::BAD_REQUEST, msg),
        };
        let query = match search_query(uri, &self.time_zone, last_30_days) {
            Ok(q) => q,
            Err(msg) => return h::text_owned(StatusCode::BAD_REQUEST, msg),
        };
        let calls = match self.calls.store().between(query.from, query.to) {
            Ok(c) => c.into_iter().filter(|c| query.matches(c)).collect::<Vec<_>>(),
            Err(e) => return h::call_log_unavailable("CSV export", &e),
        };
        let mut out = Vec::new();
        if let Err(e) = export::write_csv(&calls, &self.time_zone, &mut out) {
            log::error!("CSV export: {e}");
            return h::text(StatusCode::INTERNAL_SERVER_ERROR, "export failed\n");
        }
        let mut r = h::with_type(StatusCode::OK, "text/csv; charset=utf-8", Bytes::from(out));
        r.headers_mut()
            .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"calls.csv\""));
        r
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> Response<Body> {
        if let Ok(size) = self.calls.store().size_on_disk() {
            self.metrics.store_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        if let Some(cert) = &self.certificate.borrow().certificate {
            let left = cert.not_after.duration_since(jiff::Timestamp::now()).as_secs();
            self.metrics.certificate_expiry_seconds.set(left);
        }
        h::with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(self.metrics.encode()),
        )
    }
}
