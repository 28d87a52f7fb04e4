//! `GET /api/v1/voice/media-stream`: the edge of a media stream. Twilio's signature is checked,
//! then the WebSocket handshake, then whether the box takes another session; only then is
//! the connection switched and handed to [`crate::media`], which never sees HTTP.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::app::App;
use crate::web::{self as h, Body};

/// Checks the upgrade request and, when it is one the box takes, answers `101` and starts the
/// session on the upgraded connection.
pub(super) async fn media_stream(app: &App, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        let mut r = h::text(StatusCode::METHOD_NOT_ALLOWED, "use GET with a WebSocket upgrade\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let target = h::raw_target(req.uri()).to_owned();
    let signature = req.headers().get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if signature.is_empty() || app.validator.validate_websocket(&target, signature).is_none() {
        log::warn!(
            "refused media stream {target}: {}; check public_url ({}) and twilio.auth_token",
            if signature.is_empty() { "no X-Twilio-Signature header" } else { "signature mismatch" },
            app.config.public_url
        );
        return h::text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    let Some(key) = upgrade_key(req.headers()) else {
        let mut r = h::text(StatusCode::UPGRADE_REQUIRED, "this URL is a WebSocket (Twilio Media Streams)\n");
        r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return r;
    };
    match app.media.can_accept() {
        Ok(()) => {}
        Err(crate::media::Busy::ShuttingDown) => return h::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Err(busy) => {
            log::warn!("refused media stream: {busy}");
            return h::text(StatusCode::SERVICE_UNAVAILABLE, "too many media streams\n");
        }
    }
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return h::text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key\n");
    };
    // Without a share (a request that did not come through a capped listener) the session is
    // held to the total alone.
    let share = req.extensions().get::<crate::net::AddressShareCell>().and_then(crate::net::AddressShareCell::take);
    let upgraded = async move {
        match hyper::upgrade::on(req).await {
            Ok(u) => Some(TokioIo::new(u)),
            Err(e) => {
                log::warn!("media stream upgrade failed: {e}");
                None
            }
        }
    };
    app.media.spawn(upgraded, share);
    let mut r = h::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = r.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    r
}

/// The `Sec-WebSocket-Key` of a valid upgrade request, or `None` when it is not one.
fn upgrade_key(headers: &http::HeaderMap) -> Option<String> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return None;
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?.trim();
    (!key.is_empty()).then(|| key.to_owned())
}
