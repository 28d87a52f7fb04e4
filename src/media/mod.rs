//! Media streams: the Twilio Media Streams WebSocket, its sessions and call flows
//! (voicemail, relay with fail-over), and the audio they need.
//!
//! The upgrade request is checked (signature, then WebSocket headers) before anything is
//! accepted, and the stream's `start` before it touches the call log ([`admission`]); each
//! accepted stream runs as one task owned by [`Media`]'s tracker, which the server waits for
//! on shutdown so that recordings are finalized and the log is written before the store
//! closes. A session keeps its connection's place in the client address's share for its
//! whole life, so one address cannot take every session.

pub mod admission;
pub mod audio;
mod session;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OnceCell;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;

use crate::config::MediaConfig;
use crate::server::App;
use crate::server::http::{self as h, Body};

/// Largest WebSocket message or frame accepted (Twilio's are about 400 bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long the server waits for sessions to finish their recordings at shutdown.
pub const SESSION_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Media-stream state shared by all sessions: the greeting (loaded once) and the sessions.
#[derive(Debug, Default)]
pub struct Media {
    greeting: OnceCell<Arc<[u8]>>,
    sessions: TaskTracker,
    live: admission::LiveCalls,
}

impl Media {
    /// State for a box with no session yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The greeting as 8 kHz μ-law: the configured WAV file, or the built-in prompt tone
    /// when none is configured or it cannot be used (logged once).
    async fn greeting(&self, config: &MediaConfig) -> Arc<[u8]> {
        self.greeting
            .get_or_init(|| async {
                let Some(path) = config.greeting_wav.clone() else {
                    return Arc::from(audio::prompt_tone());
                };
                let loaded = tokio::task::spawn_blocking(move || audio::load_greeting(&path)).await;
                match loaded {
                    Ok(Ok(mulaw)) => Arc::from(mulaw),
                    Ok(Err(e)) => {
                        log::error!("{e}; callers hear the built-in prompt tone instead");
                        Arc::from(audio::prompt_tone())
                    }
                    Err(e) => {
                        log::error!("loading the greeting failed ({e}); callers hear the built-in prompt tone");
                        Arc::from(audio::prompt_tone())
                    }
                }
            })
            .await
            .clone()
    }

    /// Stops accepting new sessions and waits (bounded) for the running ones to finish.
    pub async fn drain(&self) {
        self.sessions.close();
        if tokio::time::timeout(SESSION_DRAIN_TIMEOUT, self.sessions.wait()).await.is_err() {
            log::warn!("shutdown: some media sessions did not finish within {SESSION_DRAIN_TIMEOUT:?}");
        }
    }

    /// Media sessions running now.
    pub fn active_sessions(&self) -> usize {
        self.sessions.len()
    }
}

/// Finishes recordings a crash cut off and notes them in their call records; run once at start.
pub async fn recover_recordings(app: &App) {
    let dir = app.config.storage.dir.clone();
    let recovered = match tokio::task::spawn_blocking(move || audio::recover(&dir)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            log::warn!("recovering partial recordings failed: {e}");
            return;
        }
        Err(e) => {
            log::warn!("recovering partial recordings failed: {e}");
            return;
        }
    };
    for r in recovered {
        log::info!("recovered partial recording {} ({} ms)", r.info.path, r.info.duration_ms);
        let Some((call_sid, stream_sid)) = r.file_name.trim_end_matches(".wav").split_once('-') else { continue };
        let (call_sid, stream_sid) = (call_sid.to_owned(), stream_sid.to_owned());
        let info = r.info.clone();
        let updated = app
            .store
            .update(&call_sid, move |record| {
                if let Some(stream) = record.stream.as_mut().filter(|s| s.stream_sid == stream_sid) {
                    stream.recording = Some(info);
                    if stream.outcome.is_none() {
                        stream.outcome = Some("message".into());
                        stream.error = Some("the box stopped during the call; recording recovered".into());
                    }
                }
            })
            .await;
        if let Err(e) = updated {
            log::warn!("cannot note recovered recording {} in call {call_sid}: {e}", r.info.path);
        }
    }
}

/// `GET /api/v1/voice/media-stream`: checks Twilio's signature, then upgrades to a WebSocket
/// and runs the session.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
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
    if app.shutdown.is_cancelled() || app.media.sessions.is_closed() {
        return h::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // An upgraded socket no longer holds a connection permit, so sessions have their own cap.
    if app.media.active_sessions() >= app.config.server.max_connections {
        log::warn!(
            "refused media stream: {} sessions already running (server.max_connections)",
            app.media.active_sessions()
        );
        return h::text(StatusCode::SERVICE_UNAVAILABLE, "too many media streams\n");
    }
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return h::text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key\n");
    };
    // Without a share (a request that did not come through a capped listener) the session is
    // held to the total alone.
    let share = req.extensions().get::<crate::net::AddressShareCell>().and_then(crate::net::AddressShareCell::take);
    let session_app = app.clone();
    app.media.sessions.spawn(async move {
        let _share = share;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                log::warn!("media stream upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await;
        session::run(session_app, ws).await;
    });
    let mut r = h::empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = r.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    r
}

/// WebSocket settings for both sockets of a session (Twilio's and the relay's).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        // Media messages are ~400 bytes: a small read buffer (it grows for a larger message
        // up to the limit) keeps a thousand idle-ish streams from holding 128 KiB each, and
        // writing each message at once adds no latency to paced audio.
        .read_buffer_size(4096)
        .write_buffer_size(0)
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
