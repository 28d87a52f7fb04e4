//! Media streams: the Twilio Media Streams WebSocket sessions and their call flows
//! (voicemail, relay with fail-over), and the audio they need.
//!
//! The server checks the upgrade request (signature, WebSocket headers) and asks
//! [`Media::can_accept`] before it agrees; the session itself checks the stream's `start`
//! before it touches the call log ([`admission`]). Each accepted stream runs as one task owned
//! by [`Media`]'s tracker, which the box waits for on shutdown so that recordings are
//! finalized and the log is written before the store closes. A session runs over any byte
//! stream ([`Media::serve`]): a real upgraded connection, or an in-memory one in tests.

pub mod admission;
pub mod audio;
mod session;

/// The stream `<Parameter>` the incoming-call TwiML sets to `closed` while the shop is closed
/// (`[hours]`): the session then plays the after-hours greeting and flow.
pub const AFTER_HOURS_PARAM: &str = "Hours";

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OnceCell;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::{CallLog, StreamOutcome};
use crate::config::MediaConfig;

/// Largest WebSocket message or frame accepted (Twilio's are about 400 bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long the server waits for sessions to finish their recordings at shutdown.
pub const SESSION_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a media session needs from the rest of the box.
#[derive(Debug, Clone)]
pub struct MediaContext {
    /// Where stream events and outcomes go.
    pub calls: CallLog,
    /// `[media]`.
    pub config: MediaConfig,
    /// `storage.dir`: recordings live under it.
    pub storage_dir: PathBuf,
    /// Sessions at once (an upgraded socket no longer holds a connection permit).
    pub max_sessions: usize,
    /// Cancelled when the box shuts down: sessions end with a close.
    pub shutdown: CancellationToken,
}

/// The media streams of a running box: their shared greeting, the calls that have a session,
/// and the sessions themselves. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Media(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    context: MediaContext,
    greeting: OnceCell<Arc<[u8]>>,
    after_hours_greeting: OnceCell<Arc<[u8]>>,
    sessions: TaskTracker,
    live: admission::LiveCalls,
}

impl std::ops::Deref for Shared {
    type Target = MediaContext;
    fn deref(&self) -> &MediaContext {
        &self.context
    }
}

/// Why a new stream is turned away before its upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The box is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// `max_sessions` streams are running.
    #[error("{0} sessions already running (server.max_connections)")]
    Full(usize),
}

impl Media {
    /// Media streams over these parts, with no session yet.
    pub fn new(context: MediaContext) -> Self {
        Self(Arc::new(Shared {
            context,
            greeting: OnceCell::new(),
            after_hours_greeting: OnceCell::new(),
            sessions: TaskTracker::new(),
            live: admission::LiveCalls::default(),
        }))
    }

    /// Whether a new stream may start now.
    pub fn can_accept(&self) -> Result<(), Busy> {
        if self.0.shutdown.is_cancelled() || self.0.sessions.is_closed() {
            return Err(Busy::ShuttingDown);
        }
        let running = self.active_sessions();
        if running >= self.0.max_sessions {
            return Err(Busy::Full(running));
        }
        Ok(())
    }

    /// Runs a session, as a task the box waits for at shutdown, on the socket `upgrade`
    /// yields (`None`: the upgrade failed, already logged). `hold` (the connection's place in
    /// its address's share) is kept for the session's whole life.
    pub fn spawn<S, U, H>(&self, upgrade: U, hold: H)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        U: Future<Output = Option<S>> + Send + 'static,
        H: Send + 'static,
    {
        let media = self.clone();
        self.0.sessions.spawn(async move {
            let _hold = hold;
            if let Some(io) = upgrade.await {
                media.serve(io).await;
            }
        });
    }

    /// Runs one session to its end on `io`, a socket whose WebSocket handshake is done.
    pub async fn serve<S>(&self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
        crate::logging::scope(session::run(&self.0, ws)).await;
    }

    /// Stops accepting new sessions and waits (bounded) for the running ones to finish.
    pub async fn drain(&self) {
        self.0.sessions.close();
        if tokio::time::timeout(SESSION_DRAIN_TIMEOUT, self.0.sessions.wait()).await.is_err() {
            log::warn!("shutdown: some media sessions did not finish within {SESSION_DRAIN_TIMEOUT:?}");
        }
    }

    /// Media sessions running now.
    pub fn active_sessions(&self) -> usize {
        self.0.sessions.len()
    }

    /// Finishes recordings a crash cut off and notes them in their call records; run once at
    /// start.
    pub async fn recover_recordings(&self) {
        let dir = self.0.storage_dir.clone();
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
            let updated = self
                .0
                .calls
                .update(&call_sid, move |record| {
                    if let Some(stream) = record.stream.as_mut().filter(|s| s.stream_sid == stream_sid) {
                        stream.recording = Some(info);
                        if stream.outcome.is_none() {
                            stream.outcome = Some(StreamOutcome::Message);
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
}

impl Shared {
    /// The greeting as 8 kHz μ-law: the configured WAV file (while the shop is closed, the
    /// after-hours one when set), or the built-in prompt tone when none is configured or it
    /// cannot be used (logged once).
    async fn greeting(&self, after_hours: bool) -> Arc<[u8]> {
        let (cell, path) = match (&self.config.after_hours_greeting_wav, after_hours) {
            (Some(path), true) => (&self.after_hours_greeting, Some(path.clone())),
            _ => (&self.greeting, self.config.greeting_wav.clone()),
        };
        cell.get_or_init(|| async {
            let Some(path) = path else {
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
}

/// WebSocket settings for both sockets of a session (Twilio's and the relay's).
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        // Media messages are ~400 bytes: a small read buffer (it grows for a larger message
        // up to the limit) keeps a thousand idle-ish streams from holding 128 KiB each, and
        // writing each message at once adds no latency to paced audio.
        .read_buffer_size(4096)
        .write_buffer_size(0)
}
