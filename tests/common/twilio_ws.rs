//! Playing Twilio on a media-stream WebSocket, message by message, for tests that need
//! finer control than `callbox simulate-call`.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Ws;

/// Longest a test waits for the box to say something.
const WAIT: Duration = Duration::from_secs(10);

/// Twilio's side of one stream.
pub struct Caller {
    pub ws: Ws,
    pub stream_sid: String,
    pub call_sid: String,
    seq: u64,
    chunk: u64,
}

/// What the box sent.
#[derive(Debug)]
pub enum FromBox {
    /// Outbound media (decoded μ-law).
    Media(Vec<u8>),
    Mark(String),
    Clear,
    /// The box closed the socket with this code (None: without a close frame).
    Closed(Option<CloseCode>),
}

impl Caller {
    pub fn new(ws: Ws, call_sid: &str) -> Self {
        Self { ws, stream_sid: format!("MZ{}", &call_sid[2..]), call_sid: call_sid.into(), seq: 0, chunk: 0 }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    /// `connected` and `start`, with the parameters the box's TwiML passes.
    pub async fn start(&mut self, to: &str) {
        self.send_json(json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await;
        let seq = self.next_seq();
        let start = json!({"event":"start","sequenceNumber":seq,"streamSid":self.stream_sid,"start":{
            "streamSid":self.stream_sid,"accountSid":"AC00000000000000000000000000000001","callSid":self.call_sid,
            "tracks":["inbound"],"customParameters":{"From":"+15035550123","To":to,"CallSid":self.call_sid},
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
        self.send_json(start).await;
    }

    pub async fn media(&mut self, mulaw: &[u8]) {
        self.chunk += 1;
        let seq = self.next_seq();
        let payload = base64::engine::general_purpose::STANDARD.encode(mulaw);
        let v = json!({"event":"media","sequenceNumber":seq,"streamSid":self.stream_sid,"media":{
            "track":"inbound","chunk":self.chunk.to_string(),"timestamp":((self.chunk - 1) * 20).to_string(),"payload":payload}});
        self.send_json(v).await;
    }

    pub async fn dtmf(&mut self, digit: &str) {
        let seq = self.next_seq();
        let v = json!({"event":"dtmf","sequenceNumber":seq,"streamSid":self.stream_sid,"dtmf":{"track":"inbound_track","digit":digit}});
        self.send_json(v).await;
    }

    pub async fn mark(&mut self, name: &str) {
        let seq = self.next_seq();
        let v = json!({"event":"mark","sequenceNumber":seq,"streamSid":self.stream_sid,"mark":{"name":name}});
        self.send_json(v).await;
    }

    pub async fn stop(&mut self) {
        let seq = self.next_seq();
        let v = json!({"event":"stop","sequenceNumber":seq,"streamSid":self.stream_sid,"stop":{
            "accountSid":"AC00000000000000000000000000000001","callSid":self.call_sid}});
        self.send_json(v).await;
    }

    /// The next thing the box sends; checks every message is for this stream.
    pub async fn recv(&mut self) -> FromBox {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("the box said nothing for 10 s");
            let text = match msg {
                None | Some(Err(_)) => return FromBox::Closed(None),
                Some(Ok(Message::Close(frame))) => {
                    // Reading on sends tungstenite's reply, completing the close handshake.
                    while let Some(Ok(_)) = self.ws.next().await {}
                    return FromBox::Closed(frame.map(|f| f.code));
                }
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(other)) if other.is_ping() || other.is_pong() => continue,
                Some(Ok(other)) => panic!("unexpected frame from the box: {other:?}"),
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["streamSid"], self.stream_sid.as_str(), "{v}");
            return match v["event"].as_str().unwrap() {
                "media" => FromBox::Media(
                    base64::engine::general_purpose::STANDARD.decode(v["media"]["payload"].as_str().unwrap()).unwrap(),
                ),
                "mark" => FromBox::Mark(v["mark"]["name"].as_str().unwrap().into()),
                "clear" => FromBox::Clear,
                other => panic!("unknown event from the box: {other}"),
            };
        }
    }

    /// Receives the whole greeting up to its mark; returns the audio and the mark's name.
    pub async fn greeting(&mut self) -> (Vec<u8>, String) {
        let mut audio = Vec::new();
        loop {
            match self.recv().await {
                FromBox::Media(m) => {
                    assert_eq!(m.len(), 160, "greeting frames are 20 ms");
                    audio.extend(m);
                }
                FromBox::Mark(name) => return (audio, name),
                other => panic!("expected greeting, got {other:?}"),
            }
        }
    }

    /// Plays the greeting through and echoes its mark, as Twilio does when playback ends.
    pub async fn through_greeting(&mut self) -> Vec<u8> {
        let (audio, mark) = self.greeting().await;
        self.mark(&mark).await;
        audio
    }

    /// Waits for the box to close the socket, skipping any media; returns the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        loop {
            if let FromBox::Closed(code) = self.recv().await {
                return code;
            }
        }
    }
}

/// `n` 20 ms frames of a test signal (a sweep, so a shifted or dropped frame is visible).
pub fn test_audio(frames: usize) -> Vec<u8> {
    (0..frames * 160)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let s = (2.0 * std::f32::consts::PI * (300.0 + 50.0 * t) * t).sin() * 12_000.0;
            callbox::media::audio::mulaw_encode(s as i16)
        })
        .collect()
}

/// A CallSid of Twilio's shape (`CA` + 32 lowercase hex digits), distinct per `n`.
pub fn call_sid(n: u128) -> String {
    format!("CA{n:032x}")
}
