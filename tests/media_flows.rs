//! The media-stream call flows over a real WebSocket against the real server.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use callbox::calls::{BusMessage, EventSource};
use callbox::config::FlowKind;
use callbox::media::audio::{mulaw_decode, prompt_tone};
use common::twilio_ws::{Caller, FromBox, test_audio};
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TO: &str = "+15035550100";

async fn incoming(server: &TestServer, call_sid: &str) {
    let params = incoming_params(call_sid);
    let reply = server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

async fn caller(server: &TestServer, call_sid: &str) -> Caller {
    incoming(server, call_sid).await;
    let mut c = Caller::new(server.ws_connect().await, call_sid);
    c.start(TO).await;
    c
}

fn wav_samples(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect()
}

fn decoded(mulaw: &[u8]) -> Vec<i16> {
    mulaw.iter().map(|b| mulaw_decode(*b)).collect()
}

/// The media-stream events the bus carries, as (what, message), up to the `stopped` one.
async fn media_events(rx: &mut tokio::sync::broadcast::Receiver<BusMessage>) -> Vec<(String, BusMessage)> {
    let mut out = Vec::new();
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        if m.event.source == EventSource::MediaStream {
            let what = m.event.details["MediaEvent"].clone();
            let done = what == "stopped";
            out.push((what, m));
            if done {
                return out;
            }
        }
    }
}

#[tokio::test]
async fn upgrade_needs_twilios_signature_and_a_websocket() {
    let server = TestServer::start().await;
    assert!(server.ws_connect_with(None).await.is_err());
    assert!(server.ws_connect_with(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=")).await.is_err());
    let sig = server.media_signature();
    let reply = request(server.public, Method::GET, MEDIA_PATH, &[], Default::default()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply =
        request(server.public, Method::GET, MEDIA_PATH, &[("x-twilio-signature", sig.as_str())], Default::default())
            .await;
    assert_eq!(reply.status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(reply.headers["upgrade"], "websocket");
    // Nothing was opened, so nothing was logged.
    assert_eq!(server.app.calls.store().count(), 0);
}

#[tokio::test]
async fn voicemail_plays_greeting_then_records_what_the_caller_says() {
    let server = TestServer::start().await;
    let mut bus = server.app.calls.subscribe();
    let mut c = caller(&server, "CA00000000000000000000000000000001").await;
    let (greeting, mark) = c.greeting().await;
    assert_eq!(greeting, prompt_tone(), "the built-in prompt, as 20 ms frames");
    c.mark(&mark).await;
    let said = test_audio(50);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    c.stop().await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal));

    let record = server.wait_stream_outcome(&c.call_sid).await;
    let stream = record.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    assert_eq!(stream.flow, "voicemail");
    assert_eq!(stream.frames_in, 50);
    assert_eq!(stream.frames_out as usize, prompt_tone().len() / 160);
    assert_eq!((stream.marks_sent, stream.marks_echoed), (1, 1));
    let rec = stream.recording.unwrap();
    assert_eq!(rec.duration_ms, 1000);
    assert_eq!(wav_samples(&server.dir.path().join(&rec.path)), decoded(&said));

    // The bus contract the indicators build on.
    let events = media_events(&mut bus).await;
    let whats: Vec<&str> = events.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(whats, ["started", "answered", "stopped"]);
    for (what, m) in &events {
        assert_eq!(m.event.dedupe_key, format!("media:{}:voicemail:{what}", c.stream_sid));
        assert_eq!(m.event.details["Flow"], "voicemail");
        assert!(m.event.status.is_none());
    }
    let stopped = &events[2].1;
    assert_eq!(stopped.event.details["Outcome"], "message");
    assert_eq!(stopped.event.details["Recording"], rec.path);
    assert_eq!(stopped.record.stream.as_ref().unwrap().outcome.map(|o| o.as_str()), Some("message"));
}

#[tokio::test]
async fn a_configured_greeting_is_resampled_to_8k_mono() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greeting.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..8_000 {
        let v = ((i as f32 * 0.2).sin() * 8000.0) as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let server = TestServer::start_with(|c| c.media.greeting_wav = Some(path.clone())).await;
    let mut c = caller(&server, "CA00000000000000000000000000000002").await;
    let (greeting, mark) = c.greeting().await;
    assert_eq!(greeting.len(), 4000, "half a second at 8 kHz");
    c.mark(&mark).await;
    c.stop().await;
    c.closed().await;
    let record = server.wait_stream_outcome(&c.call_sid).await;
    let stream = record.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("hangup"), "left without a message");
    assert!(stream.recording.is_none());
    assert!(record.events.iter().any(|e| e.dedupe_key.ends_with(":stopped")));
}

#[tokio::test]
async fn hash_ends_the_message_and_zero_goes_to_the_front_desk() {
    let server = TestServer::start().await;
    let mut c = caller(&server, "CA00000000000000000000000000000003").await;
    c.through_greeting().await;
    let said = test_audio(10);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    c.dtmf("#").await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    assert_eq!(stream.dtmf, "#");
    let rec = stream.recording.unwrap();
    assert_eq!(wav_samples(&server.dir.path().join(&rec.path)), decoded(&said));

    let mut c = caller(&server, "CA00000000000000000000000000000004").await;
    c.through_greeting().await;
    c.dtmf("0").await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal), "closing lets Twilio run the <Dial> fallthrough");
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("front-desk"));
    assert!(stream.recording.is_none());
}

#[tokio::test]
async fn a_key_during_the_greeting_clears_it() {
    let server = TestServer::start().await;
    let mut bus = server.app.calls.subscribe();
    let mut c = caller(&server, "CA00000000000000000000000000000005").await;
    assert!(matches!(c.recv().await, FromBox::Media(_)));
    c.dtmf("5").await;
    // Frames already on the wire may still arrive; then the clear.
    loop {
        match c.recv().await {
            FromBox::Media(_) => continue,
            FromBox::Clear => break,
            other => panic!("expected clear, got {other:?}"),
        }
    }
    // Recording starts at once: what the caller says next is the message.
    let said = test_audio(5);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    c.stop().await;
    c.closed().await;
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    assert!((stream.frames_out as usize) < prompt_tone().len() / 160, "the greeting stopped early");
    assert_eq!(wav_samples(&server.dir.path().join(stream.recording.unwrap().path)), decoded(&said));
    let whats: Vec<String> = media_events(&mut bus).await.into_iter().map(|(w, _)| w).collect();
    assert_eq!(whats, ["started", "answered", "stopped"]);

    // `0` during the greeting: clear, then straight to the front desk.
    let mut c = caller(&server, "CA00000000000000000000000000000006").await;
    c.dtmf("0").await;
    let mut cleared = false;
    let code = loop {
        match c.recv().await {
            FromBox::Clear => cleared = true,
            FromBox::Closed(code) => break code,
            _ => {}
        }
    };
    assert!(cleared);
    assert_eq!(code, Some(CloseCode::Normal));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("front-desk"));
}

#[tokio::test]
async fn a_dropped_socket_leaves_a_playable_partial_recording() {
    let server = TestServer::start().await;
    let mut c = caller(&server, "CA00000000000000000000000000000007").await;
    c.through_greeting().await;
    let said = test_audio(30);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    c.ws.flush().await.unwrap();
    // The network goes away: no stop, no close frame.
    drop(c.ws);
    let stream = server.wait_stream_outcome("CA00000000000000000000000000000007").await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    assert!(stream.error.is_some(), "the lost connection is noted");
    let rec = stream.recording.unwrap();
    assert_eq!(wav_samples(&server.dir.path().join(&rec.path)), decoded(&said));
}

#[tokio::test]
async fn a_partial_recording_from_a_crash_is_finished_at_the_next_start() {
    let server = TestServer::start().await;
    let call_sid = "CA00000000000000000000000000000008";
    let mut c = caller(&server, call_sid).await;
    c.through_greeting().await;
    for frame in test_audio(60).chunks(160) {
        c.media(frame).await;
    }
    c.ws.flush().await.unwrap();
    // Wait until the recording has reached the disk past its first checkpoint (1 s).
    let partial = server.dir.path().join(format!("recordings/{call_sid}-MZ{}.wav.partial", &call_sid[2..]));
    for _ in 0..500 {
        if std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) >= 44 + 16_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A power cut: the file stays `.partial`, the session never finishes.
    let copy = std::fs::read(&partial).unwrap();
    let dir = server.stop().await;
    let _ = std::fs::remove_file(partial.with_extension(""));
    std::fs::write(&partial, &copy).unwrap();

    let server = TestServer::start_in(dir, |_| {}).await;
    // Recovery runs before the listener serves: one request is enough to be past it.
    let _ = request(server.public, Method::GET, "/healthz", &[], Default::default()).await;
    let wav = partial.with_extension("");
    assert!(!partial.exists());
    let samples = wav_samples(&wav);
    assert!(samples.len() >= 8000, "{}", samples.len());
    assert!(wav.exists());
}

/// A voice agent speaking Twilio's protocol; it echoes the caller's audio back in its own
/// stream, and drops the connection after `drop_after` media frames if set.
async fn agent(listener: TcpListener, drop_after: Option<usize>) -> (Vec<String>, Vec<Vec<u8>>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let mut events = Vec::new();
    let mut heard = Vec::new();
    while let Some(Ok(Message::Text(t))) = ws.next().await {
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let event = v["event"].as_str().unwrap().to_owned();
        events.push(event.clone());
        match event.as_str() {
            "start" => {
                let hello = serde_json::json!({"event":"media","streamSid":"MZagent","media":{"payload":"//////8="}});
                ws.send(Message::text(hello.to_string())).await.unwrap();
                let mark = serde_json::json!({"event":"mark","streamSid":"MZagent","mark":{"name":"hello"}});
                ws.send(Message::text(mark.to_string())).await.unwrap();
            }
            "media" => {
                use base64::Engine as _;
                let payload = v["media"]["payload"].as_str().unwrap();
                heard.push(base64::engine::general_purpose::STANDARD.decode(payload).unwrap());
                if drop_after == Some(heard.len()) {
                    return (events, heard);
                }
                let echo = serde_json::json!({"event":"media","streamSid":"MZagent","media":{"payload":payload}});
                ws.send(Message::text(echo.to_string())).await.unwrap();
            }
            "stop" => break,
            _ => {}
        }
    }
    (events, heard)
}

async fn relay_server(upstream: &str, timeout_ms: u64) -> TestServer {
    let url = upstream.to_owned();
    TestServer::start_with(move |c| {
        c.media.flows.insert(TO.into(), FlowKind::Relay);
        c.media.relay_url = Some(url);
        c.media.relay_connect_timeout_ms = timeout_ms;
    })
    .await
}

#[tokio::test]
async fn relay_carries_audio_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    let agent = tokio::spawn(agent(listener, None));
    let server = relay_server(&url, 2000).await;
    let mut bus = server.app.calls.subscribe();
    let mut c = caller(&server, "CA00000000000000000000000000000009").await;
    // The agent's greeting and mark, re-addressed to Twilio's stream (checked in recv).
    assert!(matches!(c.recv().await, FromBox::Media(m) if m == [0xFF; 5]));
    assert!(matches!(c.recv().await, FromBox::Mark(name) if name == "hello"));
    let said = test_audio(5);
    for frame in said.chunks(160) {
        c.media(frame).await;
        match c.recv().await {
            FromBox::Media(echo) => assert_eq!(echo, frame),
            other => panic!("expected the agent's echo, got {other:?}"),
        }
    }
    c.mark("hello").await;
    c.dtmf("1").await;
    c.stop().await;
    c.closed().await;
    let (events, heard) = agent.await.unwrap();
    assert_eq!(events, ["connected", "start", "media", "media", "media", "media", "media", "mark", "dtmf", "stop"]);
    assert_eq!(heard.concat(), said);
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("relayed"));
    assert_eq!((stream.flow.as_str(), stream.frames_in, stream.frames_out), ("relay", 5, 6));
    assert!(stream.failover.is_none());
    let events = media_events(&mut bus).await;
    assert_eq!(events.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(), ["started", "answered", "stopped"]);
    assert!(events.iter().all(|(_, m)| m.event.details["Flow"] == "relay"));
    assert_eq!(events[2].1.event.details["Outcome"], "relayed");
}

#[tokio::test]
async fn relay_fails_over_to_voicemail_when_the_agent_is_absent_or_silent() {
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let server = relay_server(&format!("ws://127.0.0.1:{port}/agent"), 2000).await;
    let mut c = caller(&server, "CA00000000000000000000000000000010").await;
    c.through_greeting().await;
    for frame in test_audio(5).chunks(160) {
        c.media(frame).await;
    }
    c.stop().await;
    c.closed().await;
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.flow, "voicemail");
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    assert!(stream.failover.as_deref().unwrap().contains("refused"), "{:?}", stream.failover);

    // An agent that accepts TCP but never answers the handshake: the connect timeout applies.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = relay_server(&format!("ws://{}/agent", silent.local_addr().unwrap()), 300).await;
    let mut c = caller(&server, "CA00000000000000000000000000000011").await;
    c.through_greeting().await;
    c.stop().await;
    c.closed().await;
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert!(stream.failover.as_deref().unwrap().contains("did not connect"), "{:?}", stream.failover);
    drop(silent);
}

#[tokio::test]
async fn relay_fails_over_when_the_agent_drops_mid_call() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    let agent = tokio::spawn(agent(listener, Some(3)));
    let server = relay_server(&url, 2000).await;
    let mut bus = server.app.calls.subscribe();
    let mut c = caller(&server, "CA00000000000000000000000000000012").await;
    assert!(matches!(c.recv().await, FromBox::Media(_)));
    assert!(matches!(c.recv().await, FromBox::Mark(_)));
    for frame in test_audio(3).chunks(160) {
        c.media(frame).await;
    }
    agent.await.unwrap();
    // Echoes of the first two frames, then the clear of the agent's audio, then the greeting.
    loop {
        match c.recv().await {
            FromBox::Media(_) => continue,
            FromBox::Clear => break,
            other => panic!("expected clear, got {other:?}"),
        }
    }
    c.through_greeting().await;
    let said = test_audio(5);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    c.stop().await;
    c.closed().await;
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!((stream.flow.as_str(), stream.outcome.map(|o| o.as_str())), ("voicemail", Some("message")));
    assert!(stream.failover.as_deref().unwrap().contains("mid-call"), "{:?}", stream.failover);
    assert_eq!(wav_samples(&server.dir.path().join(stream.recording.unwrap().path)), decoded(&said));
    let events = media_events(&mut bus).await;
    let stopped = &events.last().unwrap().1.event;
    assert_eq!(stopped.details["MediaEvent"], "stopped");
    assert!(stopped.details.contains_key("Failover"));
    let record = server.app.calls.store().get(&c.call_sid).unwrap().unwrap();
    let expected = [
        ("started", "relay"),
        ("answered", "relay"),
        ("failover", "relay"),
        ("answered", "voicemail"),
        ("stopped", "voicemail"),
    ];
    assert_eq!(media_parts(&record), parts(&expected));
}

/// An agent that, at the caller's first frame, says goodbye and closes with `code` (a bot
/// ending its conversation closes with 1000, as pipecat's Twilio transport does).
async fn closing_agent(listener: TcpListener, code: CloseCode) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    while let Some(Ok(Message::Text(t))) = ws.next().await {
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["event"] == "media" {
            let bye = serde_json::json!({"event":"media","streamSid":"MZagent","media":{"payload":"AAAA"}});
            ws.send(Message::text(bye.to_string())).await.unwrap();
            ws.close(Some(CloseFrame { code, reason: "conversation over".into() })).await.unwrap();
            // Completing the close handshake.
            while let Some(Ok(_)) = ws.next().await {}
            return;
        }
    }
}

/// The call log's media-stream timeline as (what, flow).
fn media_parts(record: &callbox::calls::CallRecord) -> Vec<(String, String)> {
    record
        .events
        .iter()
        .filter(|e| e.source == EventSource::MediaStream)
        .map(|e| (e.details["MediaEvent"].clone(), e.details["Flow"].clone()))
        .collect()
}

fn parts(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(w, f)| (w.to_string(), f.to_string())).collect()
}

#[tokio::test]
async fn an_agent_that_closes_cleanly_ends_the_stream_after_its_last_words() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    let agent = tokio::spawn(closing_agent(listener, CloseCode::Normal));
    let server = relay_server(&url, 2000).await;
    let mut c = caller(&server, "CA00000000000000000000000000000014").await;
    c.media(&test_audio(1)).await;
    assert!(matches!(c.recv().await, FromBox::Media(m) if m == [0, 0, 0]), "the agent's goodbye");
    // A mark after the goodbye, not a fail-over's clear and greeting.
    let FromBox::Mark(name) = c.recv().await else { panic!("expected a mark after the agent's last words") };
    // The stream stays open until the goodbye has played: a ping is still answered.
    c.ws.send(Message::Ping(Default::default())).await.unwrap();
    assert!(c.ws.next().await.unwrap().unwrap().is_pong());
    c.mark(&name).await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal), "a normal end: Twilio goes on with the TwiML");
    agent.await.unwrap();

    let record = server.wait_stream_outcome(&c.call_sid).await;
    let stream = record.stream.clone().unwrap();
    assert_eq!((stream.flow.as_str(), stream.outcome.map(|o| o.as_str())), ("relay", Some("relayed")));
    assert!(stream.failover.is_none(), "{:?}", stream.failover);
    assert!(stream.recording.is_none());
    assert_eq!(media_parts(&record), parts(&[("started", "relay"), ("answered", "relay"), ("stopped", "relay")]));
}

#[tokio::test]
async fn an_agent_that_closes_with_an_error_fails_over_and_the_log_shows_both_parts() {
    for (n, code) in [(15, CloseCode::Error), (16, CloseCode::Away)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/agent", listener.local_addr().unwrap());
        let agent = tokio::spawn(closing_agent(listener, code));
        let server = relay_server(&url, 2000).await;
        let mut c = caller(&server, &format!("CA000000000000000000000000000000{n}")).await;
        c.media(&test_audio(1)).await;
        assert!(matches!(c.recv().await, FromBox::Media(m) if m == [0, 0, 0]));
        assert!(matches!(c.recv().await, FromBox::Clear), "the agent's audio is cleared");
        c.through_greeting().await;
        let said = test_audio(5);
        for frame in said.chunks(160) {
            c.media(frame).await;
        }
        c.stop().await;
        assert_eq!(c.closed().await, Some(CloseCode::Normal));
        agent.await.unwrap();

        let record = server.wait_stream_outcome(&c.call_sid).await;
        let stream = record.stream.clone().unwrap();
        assert_eq!((stream.flow.as_str(), stream.outcome.map(|o| o.as_str())), ("voicemail", Some("message")));
        let why = stream.failover.unwrap();
        assert!(why.contains(&format!("closed the stream mid-call ({}", u16::from(code))), "{why}");
        assert_eq!(wav_samples(&server.dir.path().join(stream.recording.unwrap().path)), decoded(&said));
        let expected = [
            ("started", "relay"),
            ("answered", "relay"),
            ("failover", "relay"),
            ("answered", "voicemail"),
            ("stopped", "voicemail"),
        ];
        assert_eq!(media_parts(&record), parts(&expected), "close code {code}");
        let failover = record.events.iter().find(|e| e.details.get("MediaEvent").is_some_and(|w| w == "failover"));
        assert_eq!(failover.unwrap().details["Failover"], why);
    }
}

#[tokio::test]
async fn shutdown_closes_streams_cleanly_and_keeps_the_message() {
    let server = TestServer::start().await;
    let mut c = caller(&server, "CA00000000000000000000000000000013").await;
    c.through_greeting().await;
    let said = test_audio(10);
    for frame in said.chunks(160) {
        c.media(frame).await;
    }
    // The session handles messages in order and answers a ping when it reads it: once the
    // pong is back, every frame before it is in the recording.
    c.ws.send(Message::Ping(Default::default())).await.unwrap();
    let reply = c.ws.next().await.unwrap().unwrap();
    assert!(reply.is_pong(), "{reply:?}");
    let call_sid = c.call_sid.clone();
    let app = server.app.clone();
    let closing = tokio::spawn(async move { c.closed().await });
    let dir = server.stop().await;
    assert_eq!(closing.await.unwrap(), Some(CloseCode::Away));
    // The store is closed now; reopen the log as the next start would.
    drop(app);
    let server = TestServer::start_in(dir, |_| {}).await;
    let stream = server.app.calls.store().get(&call_sid).unwrap().unwrap().stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    assert!(stream.error.unwrap().contains("shut down"));
    assert_eq!(wav_samples(&server.dir.path().join(stream.recording.unwrap().path)), decoded(&said));
}
