//! One media stream: Twilio's messages in, the flow's answers out, and what happened into the
//! call record and onto the bus.
//!
//! A session is a single task driven by one `select!` over Twilio's socket, the flow's own
//! clock or upstream socket, and the shutdown token, so nothing is shared and nothing needs a
//! lock. Every way out of the loop (stop, keypress, protocol error, lost socket, shutdown)
//! goes through [`Session::finish`], which finalizes the recording before the call log
//! is written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Shared;
use super::admission::{self, Claim};
use super::audio::{Recording, SAMPLE_RATE};
use crate::calls::{CallEvent, EventSource, MediaEvent, StreamInfo, StreamOutcome, detail};
use crate::config::FlowKind;
use crate::twilio::media::{self as proto, FRAME_SAMPLES, Inbound, Outbound, Start};

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One greeting frame.
const FRAME: Duration = Duration::from_millis(20);
/// Twilio sends a frame every 20 ms; this much silence means the peer is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that does not take a frame for this long is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to the peer to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Name of the mark sent after the greeting.
const GREETING_MARK: &str = "greeting-end";
/// Twilio sends `start` right after the upgrade; a socket that has not by then is not a call
/// (a replayed handshake), and must not hold a session slot.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Name of the mark sent once the agent ended the call: its echo says the agent's last words
/// have played, so closing then does not cut them off.
const AGENT_END_MARK: &str = "agent-end";
/// Longest the agent's last words may take to play out before the stream ends anyway.
const AGENT_END_DRAIN: Duration = Duration::from_secs(20);
/// DTMF digits kept in the record (a stuck key must not grow it without bound).
const MAX_DIGITS: usize = 64;

/// Where the flow is.
enum Phase {
    /// No `start` yet; the socket is closed at `until`.
    AwaitStart { until: tokio::time::Instant },
    /// Playing the greeting, one frame per tick.
    Greeting { pos: usize, ticker: Interval },
    /// Greeting sent; waiting for Twilio to echo its mark (it has then been played).
    AwaitGreetingMark,
    /// Recording the caller.
    Recording(Recording),
    /// Relaying to the upstream agent.
    Relay(Box<Upstream>),
    /// The agent ended the call; waiting (up to `until`) for its last audio to play.
    AgentEnding { until: tokio::time::Instant },
    /// Over.
    Done,
}

/// Why the session ends.
#[derive(Debug)]
enum End {
    /// Twilio sent `stop` or closed the socket: the caller hung up (or the call ended).
    Hangup,
    /// The caller pressed `0`: close so Twilio runs the fallthrough (the front desk).
    FrontDesk,
    /// The message is complete (`#` or the length limit).
    MessageDone,
    /// The socket broke without a close.
    Lost(String),
    /// Twilio (or whoever) broke the protocol: close with this code.
    Protocol(CloseCode, String),
    /// Something on the box failed (disk).
    Failed(String),
    /// The box is shutting down.
    Shutdown,
    /// The stream is not one the box takes (see [`admission`]): close with this code.
    Refused(CloseCode, String),
    /// The relay's agent ended the call (a clean close): Twilio goes on with the TwiML.
    AgentDone,
}

impl End {
    /// What the stream's end means for the call log: its outcome, the error to note, and the
    /// close frame for Twilio (`None` when the socket is already gone).
    fn verdict(&self, was_relay: bool, has_message: bool) -> (StreamOutcome, Option<String>, Option<CloseFrame>) {
        use StreamOutcome::*;
        let close = |code: CloseCode, reason: &str| Some(CloseFrame { code, reason: Utf8Bytes::from(reason) });
        let heard = if has_message { Message } else { Hangup };
        match self {
            Self::Hangup if was_relay => (Relayed, None, close(CloseCode::Normal, "")),
            Self::Hangup | Self::MessageDone => (heard, None, close(CloseCode::Normal, "")),
            Self::FrontDesk => (FrontDesk, None, close(CloseCode::Normal, "to the front desk")),
            Self::Lost(why) if was_relay => (Relayed, Some(why.clone()), None),
            Self::Lost(why) if has_message => (Message, Some(why.clone()), None),
            Self::Lost(why) => (Error, Some(why.clone()), None),
            Self::Protocol(code, why) => (Error, Some(why.clone()), close(*code, "protocol error")),
            Self::Failed(why) => (Error, Some(why.clone()), close(CloseCode::Error, "internal error")),
            Self::Shutdown if has_message => (Message, Some("the box shut down".into()), close(CloseCode::Away, "")),
            Self::Shutdown => (Error, Some("the box shut down".into()), close(CloseCode::Away, "")),
            Self::Refused(code, why) => (Refused, Some(why.clone()), close(*code, "stream refused")),
            Self::AgentDone => (Relayed, None, close(CloseCode::Normal, "")),
        }
    }

    /// Logs the ends that are someone's problem.
    fn log(&self, stream_sid: &str) {
        match self {
            Self::Protocol(code, why) => {
                log::warn!("media stream {stream_sid}: closing with {}: {why}", u16::from(*code))
            }
            Self::Lost(why) => log::warn!("media stream {stream_sid}: connection lost: {why}"),
            Self::Failed(why) => log::error!("media stream {stream_sid}: {why}"),
            Self::Refused(code, why) => log::warn!("refused media stream (closing with {}): {why}", u16::from(*code)),
            _ => {}
        }
    }
}

/// What woke the session up.
enum Wake {
    Twilio(Option<Result<Message, WsError>>),
    Idle,
    Tick,
    Upstream(Option<Result<Message, WsError>>),
    /// No `start` within [`START_TIMEOUT`].
    StartTimeout,
    /// The agent's last audio had [`AGENT_END_DRAIN`] to play.
    AgentEndTimeout,
    Shutdown,
}

/// Runs one accepted media stream to its end.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(media: &Shared, ws: WebSocketStream<S>) {
    let mut session = Session {
        media,
        ws,
        call_sid: None,
        info: StreamInfo::default(),
        flow: FlowKind::Voicemail,
        phase: Phase::AwaitStart { until: tokio::time::Instant::now() + START_TIMEOUT },
        greeting: Arc::from(Vec::new()),
        after_hours: false,
        scratch: Vec::with_capacity(FRAME_SAMPLES),
        raw_connected: None,
        raw_start: None,
        stop_seen: false,
        _claim: None,
    };
    let end = session.serve().await;
    session.finish(end).await;
}

struct Session<'a, S> {
    media: &'a Shared,
    ws: WebSocketStream<S>,
    call_sid: Option<String>,
    info: StreamInfo,
    flow: FlowKind,
    phase: Phase,
    greeting: Arc<[u8]>,
    /// The call came in while the shop was closed: the after-hours greeting and flow.
    after_hours: bool,
    scratch: Vec<u8>,
    raw_connected: Option<String>,
    raw_start: Option<String>,
    stop_seen: bool,
    /// The session's hold on its call, from an admitted `start` until the session is gone.
    _claim: Option<Claim>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    async fn serve(&mut self) -> End {
        // One coarse timer for the idle check, rather than a timer armed for every frame.
        let mut idle_check = tokio::time::interval(IDLE_TIMEOUT / 4);
        idle_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            let wake = tokio::select! {
                m = self.ws.next() => {
                    last_heard = tokio::time::Instant::now();
                    Wake::Twilio(m)
                }
                _ = idle_check.tick() => {
                    if last_heard.elapsed() < IDLE_TIMEOUT { continue; }
                    Wake::Idle
                }
                w = phase_wake(&mut self.phase) => w,
                () = self.media.shutdown.cancelled() => Wake::Shutdown,
            };
            let step = match wake {
                Wake::Twilio(m) => self.on_twilio(m).await,
                Wake::Idle => Err(End::Lost(format!("no message from Twilio for {IDLE_TIMEOUT:?}"))),
                Wake::Tick => self.on_tick().await,
                Wake::Upstream(m) => self.on_upstream(m).await,
                Wake::StartTimeout => {
                    Err(End::Refused(CloseCode::Policy, format!("no start message within {START_TIMEOUT:?}")))
                }
                Wake::AgentEndTimeout => Err(End::AgentDone),
                Wake::Shutdown => Err(End::Shutdown),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn sid(&self) -> &str {
        &self.info.stream_sid
    }

    async fn on_twilio(&mut self, message: Option<Result<Message, WsError>>) -> Result<(), End> {
        match message {
            None => Err(End::Lost("connection closed without a close frame".into())),
            Some(Ok(Message::Text(text))) => self.on_text(text).await,
            Some(Ok(Message::Binary(_))) => {
                Err(End::Protocol(CloseCode::Unsupported, "binary frame (the protocol uses text frames only)".into()))
            }
            Some(Ok(Message::Close(_))) => Err(End::Hangup),
            Some(Ok(_)) => Ok(()), // ping/pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => Err(End::Protocol(
                CloseCode::Size,
                format!("message of {size} bytes exceeds the {max_size}-byte limit"),
            )),
            Some(Err(WsError::Capacity(e))) => Err(End::Protocol(CloseCode::Size, e.to_string())),
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                Err(End::Lost("connection reset without a close frame".into()))
            }
            Some(Err(WsError::Protocol(e))) => Err(End::Protocol(CloseCode::Protocol, e.to_string())),
            Some(Err(WsError::Utf8(e))) => {
                Err(End::Protocol(CloseCode::Invalid, format!("text frame is not UTF-8: {e}")))
            }
            Some(Err(e)) => Err(End::Lost(e.to_string())),
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        let message = proto::decode_inbound(&text).map_err(|e| End::Protocol(CloseCode::Invalid, e.to_string()))?;
        let started = !matches!(self.phase, Phase::AwaitStart { .. });
        match message {
            Inbound::Connected { .. } => {
                self.raw_connected = Some(text.to_string());
                Ok(())
            }
            Inbound::Start { start, .. } if !started => self.on_start(start, &text).await,
            Inbound::Start { .. } => {
                log::warn!("media stream {}: second start message ignored", self.sid());
                Ok(())
            }
            Inbound::Stop { .. } if !started => Err(End::Hangup),
            Inbound::Unknown => {
                let shown: String = text.chars().take(120).collect();
                log::info!("media stream {}: ignoring unknown event {shown}", self.sid());
                self.forward_upstream(text).await;
                Ok(())
            }
            _ if !started => {
                Err(End::Protocol(CloseCode::Protocol, "media, dtmf or mark received before start".into()))
            }
            Inbound::Media { media, .. } => {
                self.info.frames_in += 1;
                self.on_media(&media.payload, text).await
            }
            Inbound::Dtmf { dtmf, .. } => self.on_dtmf(&dtmf.digit, text).await,
            Inbound::Mark { mark, .. } => {
                self.info.marks_echoed += 1;
                self.on_mark(&mark.name, text).await
            }
            Inbound::Stop { .. } => {
                self.stop_seen = true;
                self.forward_upstream(text).await;
                Err(End::Hangup)
            }
        }
    }

    async fn on_start(&mut self, start: Start, raw: &str) -> Result<(), End> {
        // Checked before anything of it is used: the CallSid becomes a store key and a file name.
        let claim = admission::admit(&self.media.live, self.media.calls.store(), &start, Timestamp::now())
            .map_err(|refusal| End::Refused(refusal.close_code(), refusal.to_string()))?;
        self._claim = Some(claim);
        self.raw_start = Some(raw.to_owned());
        let call_sid = start.call_sid.clone();
        let mut to = start.custom_parameters.get("To").cloned();
        if to.is_none() {
            to = self.media.calls.store().get(&call_sid).ok().flatten().and_then(|r| r.to);
        }
        // The box's TwiML says whether the shop was closed when the call came in.
        self.after_hours = start.custom_parameters.get(super::AFTER_HOURS_PARAM).is_some_and(|v| v == "closed");
        self.flow = self.media.config.flow_for(to.as_deref(), self.after_hours);
        self.info = StreamInfo {
            stream_sid: start.stream_sid.clone(),
            started_at: Some(Timestamp::now()),
            flow: self.flow.as_str().into(),
            ..StreamInfo::default()
        };
        self.call_sid = Some(call_sid.clone());
        crate::logging::set_call(&call_sid, &start.stream_sid);
        log::info!("media stream {} of call {call_sid} started ({} flow)", start.stream_sid, self.flow.as_str());
        self.event(MediaEvent::Started, BTreeMap::new()).await;
        self.save().await;
        match self.flow {
            FlowKind::Voicemail => {
                self.start_greeting().await;
                Ok(())
            }
            FlowKind::Relay => self.start_relay().await,
        }
    }

    async fn start_greeting(&mut self) {
        self.flow = FlowKind::Voicemail;
        self.info.flow = self.flow.as_str().into();
        self.greeting = self.media.greeting(self.after_hours).await;
        // `interval` keeps an absolute schedule (catching up after a stall), so the greeting
        // never drifts from real time however long each send takes.
        let mut ticker = tokio::time::interval(FRAME);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        self.phase = Phase::Greeting { pos: 0, ticker };
    }

    async fn on_tick(&mut self) -> Result<(), End> {
        let Phase::Greeting { pos, .. } = &mut self.phase else { return Ok(()) };
        let start = *pos;
        let end = (start + FRAME_SAMPLES).min(self.greeting.len());
        *pos = end;
        let done = end >= self.greeting.len();
        if end > start {
            let frame = Outbound::media(&self.info.stream_sid, &self.greeting[start..end]);
            self.send(&frame).await?;
            self.info.frames_out += 1;
        }
        if done {
            let mark = Outbound::mark(&self.info.stream_sid, GREETING_MARK);
            self.send(&mark).await?;
            self.info.marks_sent += 1;
            self.phase = Phase::AwaitGreetingMark;
        }
        Ok(())
    }

    async fn on_mark(&mut self, name: &str, raw: Utf8Bytes) -> Result<(), End> {
        match self.phase {
            Phase::AwaitGreetingMark if name == GREETING_MARK => self.start_recording().await,
            Phase::AgentEnding { .. } if name == AGENT_END_MARK => Err(End::AgentDone),
            Phase::Relay(_) => {
                self.forward_upstream(raw).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn start_recording(&mut self) -> Result<(), End> {
        let call_sid = self.call_sid.clone().unwrap_or_default();
        let storage = &self.media.storage_dir;
        super::audio::ensure_room(storage, self.media.config.max_recording_secs)
            .map_err(|e| End::Failed(format!("not recording: {e}")))?;
        let recording = Recording::create(&self.media.storage_dir, &call_sid, &self.info.stream_sid)
            .map_err(|e| End::Failed(format!("cannot create the recording: {e}")))?;
        log::info!("call {call_sid}: recording to {}", recording.relative_path());
        self.phase = Phase::Recording(recording);
        self.event(MediaEvent::Answered, BTreeMap::new()).await;
        Ok(())
    }

    async fn on_media(&mut self, payload: &str, raw: Utf8Bytes) -> Result<(), End> {
        match &mut self.phase {
            Phase::Recording(rec) => {
                proto::decode_payload(payload, &mut self.scratch)
                    .map_err(|e| End::Protocol(CloseCode::Invalid, e.to_string()))?;
                rec.write_mulaw(&self.scratch).map_err(|e| End::Failed(format!("writing the recording: {e}")))?;
                let max = u64::from(self.media.config.max_recording_secs) * u64::from(SAMPLE_RATE);
                if rec.samples() >= max { Err(End::MessageDone) } else { Ok(()) }
            }
            Phase::Relay(_) => {
                self.forward_upstream(raw).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_dtmf(&mut self, digit: &str, raw: Utf8Bytes) -> Result<(), End> {
        if self.info.dtmf.len() < MAX_DIGITS {
            self.info.dtmf.extend(digit.chars().take(1));
        }
        match self.phase {
            Phase::Relay(_) => {
                self.forward_upstream(raw).await;
                Ok(())
            }
            Phase::Greeting { .. } | Phase::AwaitGreetingMark => {
                // Barge-in: stop the greeting at once.
                let clear = Outbound::clear(&self.info.stream_sid);
                self.send(&clear).await?;
                if digit == "0" {
                    return Err(End::FrontDesk);
                }
                self.start_recording().await
            }
            Phase::Recording(_) if digit == "#" => Err(End::MessageDone),
            Phase::Recording(_) if digit == "0" => Err(End::FrontDesk),
            _ => Ok(()),
        }
    }

    async fn start_relay(&mut self) -> Result<(), End> {
        let config = &self.media.config;
        let Some(url) = config.relay_url.clone() else {
            return self.fail_over("no relay_url configured".into()).await;
        };
        let timeout = config.relay_connect_timeout();
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(super::ws_config()), true);
        let mut upstream = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok((upstream, _))) => upstream,
            Ok(Err(e)) => return self.fail_over(format!("upstream {url} refused: {e}")).await,
            Err(_) => return self.fail_over(format!("upstream {url} did not connect within {timeout:?}")).await,
        };
        let connected = self
            .raw_connected
            .clone()
            .unwrap_or_else(|| r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into());
        for text in [Some(connected), self.raw_start.clone()].into_iter().flatten() {
            if let Err(e) = upstream.send(Message::text(text)).await {
                return self.fail_over(format!("upstream {url} dropped during setup: {e}")).await;
            }
        }
        log::info!("media stream {}: relaying to {url}", self.sid());
        self.phase = Phase::Relay(Box::new(upstream));
        self.event(MediaEvent::Answered, BTreeMap::new()).await;
        Ok(())
    }

    async fn fail_over(&mut self, why: String) -> Result<(), End> {
        log::warn!("media stream {}: relay failed over to voicemail: {why}", self.sid());
        if let Phase::Relay(mut upstream) = std::mem::replace(&mut self.phase, Phase::Done) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, WebSocketStream::close(&mut upstream, None)).await;
            // Whatever the agent queued must not play over the greeting.
            let clear = Outbound::clear(&self.info.stream_sid);
            self.send(&clear).await?;
        }
        // The relay's part of the call, in the call log before the voicemail's.
        self.event(MediaEvent::Failover, BTreeMap::from([(detail::FAILOVER.to_owned(), why.clone())])).await;
        self.info.failover = Some(why);
        self.save().await;
        self.start_greeting().await;
        Ok(())
    }

    /// The agent closed cleanly: it ended the call. Its last words may still be queued at
    /// Twilio, so the stream ends once a mark after them comes back (or after a while).
    async fn agent_ended(&mut self, reason: &str) -> Result<(), End> {
        log::info!("media stream {}: the agent ended the call ({reason:?})", self.sid());
        if let Phase::Relay(mut upstream) = std::mem::replace(&mut self.phase, Phase::Done) {
            // Completes the agent's close handshake.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, WebSocketStream::close(&mut upstream, None)).await;
        }
        // Ending from here on, even if the mark cannot be sent: the call was relayed.
        self.phase = Phase::AgentEnding { until: tokio::time::Instant::now() + AGENT_END_DRAIN };
        let mark = Outbound::mark(&self.info.stream_sid, AGENT_END_MARK);
        self.send(&mark).await?;
        self.info.marks_sent += 1;
        Ok(())
    }

    async fn on_upstream(&mut self, message: Option<Result<Message, WsError>>) -> Result<(), End> {
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                log::warn!("media stream {}: upstream sent a binary frame; ignored", self.sid());
                return Ok(());
            }
            Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode::Normal => {
                return self.agent_ended(&frame.reason).await;
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                return self.fail_over(format!("upstream agent closed the stream mid-call ({why})")).await;
            }
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => return self.fail_over(format!("upstream agent dropped mid-call: {e}")).await,
            None => return self.fail_over("upstream agent dropped mid-call".into()).await,
        };
        match proto::decode_outbound(&text) {
            Ok(Outbound::Unknown) => log::debug!("media stream {}: unknown upstream event ignored", self.sid()),
            Ok(message) => {
                match &message {
                    Outbound::Media { .. } => self.info.frames_out += 1,
                    Outbound::Mark { .. } => self.info.marks_sent += 1,
                    _ => {}
                }
                let message = message.with_stream_sid(&self.info.stream_sid);
                self.send(&message).await?;
            }
            Err(e) => log::warn!("media stream {}: upstream sent an invalid message ({e}); ignored", self.sid()),
        }
        Ok(())
    }

    /// Passes one of Twilio's messages to the agent unchanged; a failure fails over.
    async fn forward_upstream(&mut self, text: Utf8Bytes) {
        let Phase::Relay(upstream) = &mut self.phase else { return };
        if let Err(e) = upstream.send(Message::Text(text)).await {
            // The next wake of the upstream side reports the drop; fail over right away.
            let _ = self.fail_over(format!("upstream agent dropped mid-call: {e}")).await;
        }
    }

    async fn send(&mut self, message: &Outbound) -> Result<(), End> {
        let text = proto::encode(message);
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Lost(format!("sending to Twilio failed: {e}"))),
            Err(_) => Err(End::Lost(format!("Twilio took no data for {SEND_TIMEOUT:?}"))),
        }
    }

    /// Closes everything, finalizes the recording and writes the outcome to the call log.
    async fn finish(&mut self, end: End) {
        let was_relay = self.end_phase().await;
        let (outcome, error, frame) = end.verdict(was_relay, self.info.recording.is_some());
        end.log(self.sid());
        self.info.stopped_at = Some(Timestamp::now());
        self.info.outcome = Some(outcome);
        if self.info.error.is_none() {
            self.info.error = error;
        }
        let Some(call_sid) = self.call_sid.clone() else {
            if !matches!(end, End::Refused(..)) {
                log::info!("media stream closed before start ({outcome})");
            }
            self.close(frame).await;
            return;
        };
        log::info!(
            "media stream {} of call {call_sid} ended: {outcome}; {} frames in, {} out, digits {:?}{}",
            self.sid(),
            self.info.frames_in,
            self.info.frames_out,
            self.info.dtmf,
            self.info
                .recording
                .as_ref()
                .map(|r| format!(", recording {} ({} ms)", r.path, r.duration_ms))
                .unwrap_or_default()
        );
        self.save().await;
        let mut extra = BTreeMap::from([(detail::OUTCOME.to_owned(), outcome.as_str().to_owned())]);
        let info = &self.info;
        for (name, value) in [
            (detail::RECORDING, info.recording.as_ref().map(|r| &r.path)),
            (detail::FAILOVER, info.failover.as_ref()),
            (detail::ERROR, info.error.as_ref()),
        ] {
            if let Some(value) = value {
                extra.insert(name.to_owned(), value.clone());
            }
        }
        self.event(MediaEvent::Stopped, extra).await;
        self.close(frame).await;
    }

    /// Ends the flow's part: finalizes the recording, or closes the upstream agent's socket.
    /// Whether the call was with the agent.
    async fn end_phase(&mut self) -> bool {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let was_relay = matches!(phase, Phase::Relay(_) | Phase::AgentEnding { .. });
        match phase {
            Phase::Recording(rec) => match rec.finish() {
                Ok(info) => self.info.recording = info,
                Err(e) => {
                    log::error!("media stream {}: finishing the recording failed: {e}", self.sid());
                    self.info.error = Some(format!("finishing the recording failed: {e}"));
                }
            },
            Phase::Relay(mut upstream) => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, WebSocketStream::close(&mut upstream, None)).await;
            }
            _ => {}
        }
        was_relay
    }

    /// Sends our close and gives Twilio a moment to answer it, so the close is clean. This comes
    /// after the outcome is in the call log: whoever sees the stream close may read the log at once.
    async fn close(&mut self, frame: Option<CloseFrame>) {
        let Some(frame) = frame else { return };
        let closing = async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }

    /// Writes the stream's state into the call record.
    async fn save(&mut self) {
        let Some(call_sid) = &self.call_sid else { return };
        let info = self.info.clone();
        if let Err(e) = self.media.calls.update(call_sid, move |r| r.stream = Some(info)).await {
            log::error!("cannot save media stream of call {call_sid}: {e}");
        }
    }

    /// Records a stream event in the call log and announces it on the bus.
    async fn event(&mut self, what: MediaEvent, mut details: BTreeMap<String, String>) {
        let Some(call_sid) = &self.call_sid else { return };
        details.insert(detail::MEDIA_EVENT.into(), what.as_str().into());
        details.insert(detail::FLOW.into(), self.flow.as_str().into());
        details.insert(detail::STREAM_SID.into(), self.info.stream_sid.clone());
        let event = CallEvent {
            call_sid: call_sid.clone(),
            source: EventSource::MediaStream,
            status: None,
            sequence: None,
            twilio_timestamp: None,
            received_at: Timestamp::now(),
            from: None,
            to: None,
            direction: None,
            duration_secs: None,
            // A stream that failed over has two parts, each with its own `answered`.
            dedupe_key: format!("media:{}:{}:{}", self.info.stream_sid, self.flow.as_str(), what.as_str()),
            details,
        };
        // The session goes on either way: the caller is still on the line.
        if let Err(e) = self.media.calls.record(event).await {
            log::error!("could not store the {} event of call {call_sid}: {e}", what.as_str());
        }
    }
}

/// What the flow's own side has to say: the greeting clock or the upstream agent.
async fn phase_wake(phase: &mut Phase) -> Wake {
    match phase {
        Phase::Greeting { ticker, .. } => {
            ticker.tick().await;
            Wake::Tick
        }
        Phase::Relay(upstream) => Wake::Upstream(upstream.next().await),
        Phase::AwaitStart { until } => {
            tokio::time::sleep_until(*until).await;
            Wake::StartTimeout
        }
        Phase::AgentEnding { until } => {
            tokio::time::sleep_until(*until).await;
            Wake::AgentEndTimeout
        }
        _ => std::future::pending().await,
    }
}
