//! The media session on its own: no listener, no HTTP upgrade, no TCP. Twilio's side speaks
//! the Media Streams protocol over an in-memory duplex to `Media::serve`, which is what the
//! server hands an upgraded socket to; the call log is a real store in a temp dir.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use callbox::calls::{CallLog, CallRecord, StreamOutcome};
use callbox::config::MediaConfig;
use callbox::media::audio::{mulaw_decode, prompt_tone};
use callbox::media::{Media, MediaContext};
use callbox::twilio::webhook;
use common::twilio_ws::{Caller, call_sid, test_audio};
use common::{Io, Ws, incoming_params, owned, refs};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

const TO: &str = "+15035550100";

/// One box's media side over a fresh call log.
struct Rig {
    dir: tempfile::TempDir,
    calls: CallLog,
    media: Media,
    shutdown: CancellationToken,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let calls = CallLog::new(callbox::calls::Store::open(dir.path()).unwrap());
        let shutdown = CancellationToken::new();
        let media = Media::new(MediaContext {
            calls: calls.clone(),
            config: MediaConfig::default(),
            storage_dir: dir.path().to_owned(),
            max_sessions: 4,
            shutdown: shutdown.clone(),
        });
        Self { dir, calls, media, shutdown }
    }

    /// The incoming-call webhook's event, as the server records it before answering.
    async fn answered(&self, call_sid: &str) {
        let fields = owned(&refs(&incoming_params(call_sid)));
        self.calls.record(webhook::incoming_call(&fields, jiff::Timestamp::now()).unwrap()).await.unwrap();
    }

    /// A session on one end of a duplex, Twilio's WebSocket on the other.
    async fn connect(&self) -> (Ws, JoinHandle<()>) {
        let (twilio, the_box) = tokio::io::duplex(64 * 1024);
        let media = self.media.clone();
        let session = tokio::spawn(async move { media.serve(the_box).await });
        let ws = WebSocketStream::from_raw_socket(Box::new(twilio) as Box<dyn Io>, Role::Client, None).await;
        (ws, session)
    }

    async fn caller(&self, call_sid: &str) -> (Caller, JoinHandle<()>) {
        self.answered(call_sid).await;
        let (ws, session) = self.connect().await;
        let mut caller = Caller::new(ws, call_sid);
        caller.start(TO).await;
        (caller, session)
    }

    fn record(&self, call_sid: &str) -> Option<CallRecord> {
        self.calls.store().get(call_sid).unwrap()
    }
}

fn wav_samples(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect()
}

/// Waits (bounded) for the session task: everything it writes is in the log once it ends.
async fn ended(session: JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(10), session).await.unwrap().unwrap();
}

#[tokio::test]
async fn greeting_then_message_then_hash_over_a_duplex() {
    let rig = Rig::new();
    let sid = call_sid(1);
    let (mut c, session) = rig.caller(&sid).await;
    assert_eq!(c.through_greeting().await, prompt_tone(), "the built-in prompt tone, in 20 ms frames");
    let said = test_audio(25);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    c.dtmf("#").await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal));
    ended(session).await;

    let stream = rig.record(&sid).unwrap().stream.unwrap();
    assert_eq!(stream.outcome, Some(StreamOutcome::Message));
    assert_eq!(stream.dtmf, "#");
    let recording = stream.recording.unwrap();
    let samples = wav_samples(&rig.dir.path().join(&recording.path));
    assert_eq!(samples, said.iter().map(|b| mulaw_decode(*b)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stream_that_stops_before_its_start_touches_no_call() {
    let rig = Rig::new();
    let sid = call_sid(2);
    rig.answered(&sid).await;
    let (ws, session) = rig.connect().await;
    let mut c = Caller::new(ws, &sid);
    c.send_json(serde_json::json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await;
    c.ws.close(None).await.unwrap();
    ended(session).await;
    assert!(rig.record(&sid).unwrap().stream.is_none(), "no stream recorded for a stream that never started");
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let rig = Rig::new();
    let sid = call_sid(3);
    let (mut c, session) = rig.caller(&sid).await;
    c.through_greeting().await;
    c.ws.send(Message::binary(vec![0xff; 160])).await.unwrap();
    assert_eq!(c.closed().await, Some(CloseCode::Unsupported));
    ended(session).await;
}

#[tokio::test]
async fn a_start_for_a_call_the_box_never_answered_closes_with_1008() {
    let rig = Rig::new();
    for sid in [call_sid(4), "CA-not-a-sid".to_owned()] {
        let (ws, session) = rig.connect().await;
        let mut c = Caller::new(ws, &sid);
        c.start(TO).await;
        assert_eq!(c.closed().await, Some(CloseCode::Policy), "{sid}");
        ended(session).await;
        assert!(rig.record(&sid).is_none(), "a refused stream writes nothing: {sid}");
    }
}

#[tokio::test]
async fn shutdown_closes_the_session_with_1001_and_keeps_the_message() {
    let rig = Rig::new();
    let sid = call_sid(5);
    let (mut c, session) = rig.caller(&sid).await;
    c.through_greeting().await;
    let said = test_audio(10);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    // Messages are handled in order and a ping is answered when it is read: once the pong is
    // back, every frame before it is in the recording.
    c.ws.send(Message::Ping(Default::default())).await.unwrap();
    assert!(c.ws.next().await.unwrap().unwrap().is_pong());
    rig.shutdown.cancel();
    assert_eq!(c.closed().await, Some(CloseCode::Away));
    ended(session).await;
    let stream = rig.record(&sid).unwrap().stream.unwrap();
    assert_eq!(stream.outcome, Some(StreamOutcome::Message));
    assert!(stream.error.unwrap().contains("shut down"));
    let samples = wav_samples(&rig.dir.path().join(stream.recording.unwrap().path));
    assert_eq!(samples, said.iter().map(|b| mulaw_decode(*b)).collect::<Vec<_>>());
}
