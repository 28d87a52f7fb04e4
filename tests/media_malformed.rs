//! Malformed media streams: each is closed (or ignored) as specified, nothing panics, the call
//! log says what happened, and the server goes on serving the next call.

#![allow(clippy::unwrap_used)]

mod common;

use common::twilio_ws::{Caller, FromBox, test_audio};
use common::*;
use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TO: &str = "+15035550100";

/// A stream for a call the box has just answered (it takes no other).
async fn answered(server: &TestServer, call_sid: &str) -> Caller {
    let params = incoming_params(call_sid);
    let reply = server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
    Caller::new(server.ws_connect().await, call_sid)
}

/// A complete, well-formed voicemail call on a fresh socket.
async fn next_call_works(server: &TestServer, call_sid: &str) {
    let mut c = answered(server, call_sid).await;
    c.start(TO).await;
    c.through_greeting().await;
    for frame in test_audio(3).chunks(160) {
        c.media(frame).await;
    }
    c.stop().await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal));
    let stream = server.wait_stream_outcome(call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
}

async fn started(server: &TestServer, call_sid: &str) -> Caller {
    let mut c = answered(server, call_sid).await;
    c.start(TO).await;
    assert!(matches!(c.recv().await, FromBox::Media(_)), "the greeting begins");
    c
}

#[tokio::test]
async fn invalid_json_closes_with_1007_and_is_logged() {
    let server = TestServer::start().await;
    let mut c = started(&server, "CA10000000000000000000000000000001").await;
    c.ws.send(Message::text("{\"event\": \"media\", oops")).await.unwrap();
    assert_eq!(c.closed().await, Some(CloseCode::Invalid));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("error"));
    assert!(stream.error.unwrap().contains("invalid message"));
    next_call_works(&server, "CA10000000000000000000000000000002").await;
}

#[tokio::test]
async fn unknown_events_are_ignored() {
    let server = TestServer::start().await;
    let mut c = answered(&server, "CA20000000000000000000000000000001").await;
    c.send_json(serde_json::json!({"event":"transcription","streamSid":"MZx","text":"hello"})).await;
    c.start(TO).await;
    c.send_json(serde_json::json!({"event":"something-new","streamSid":c.stream_sid,"x":{"y":1}})).await;
    c.through_greeting().await;
    c.media(&test_audio(1)).await;
    c.stop().await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
}

#[tokio::test]
async fn media_before_start_closes_with_1002() {
    let server = TestServer::start().await;
    let mut c = Caller::new(server.ws_connect().await, "CA30000000000000000000000000000001");
    c.send_json(serde_json::json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await;
    c.media(&test_audio(1)).await;
    assert_eq!(c.closed().await, Some(CloseCode::Protocol));
    // No start, so no call to log it under.
    assert!(server.app.calls.store().get("CA30000000000000000000000000000001").unwrap().is_none());
    next_call_works(&server, "CA30000000000000000000000000000002").await;
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let server = TestServer::start().await;
    let mut c = started(&server, "CA40000000000000000000000000000001").await;
    let huge = format!("{{\"event\":\"media\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    // The box may close while the frame is still being written.
    let _ = c.ws.send(Message::text(huge)).await;
    assert_eq!(c.closed().await, Some(CloseCode::Size));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("error"));
    next_call_works(&server, "CA40000000000000000000000000000002").await;
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let server = TestServer::start().await;
    let mut c = started(&server, "CA50000000000000000000000000000001").await;
    c.ws.send(Message::binary(vec![0xFFu8; 160])).await.unwrap();
    assert_eq!(c.closed().await, Some(CloseCode::Unsupported));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("error"));
    assert!(stream.error.unwrap().contains("binary"));
    next_call_works(&server, "CA50000000000000000000000000000002").await;
}

#[tokio::test]
async fn an_abrupt_tcp_close_is_logged_and_harmless() {
    let server = TestServer::start().await;
    // Before start: nothing to log, nothing breaks.
    drop(server.ws_connect().await);
    // During the greeting.
    let c = started(&server, "CA60000000000000000000000000000001").await;
    drop(c.ws);
    let stream = server.wait_stream_outcome("CA60000000000000000000000000000001").await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("error"));
    assert!(stream.error.is_some());
    // A raw TCP connection that sends half an upgrade and vanishes.
    {
        use tokio::io::AsyncWriteExt as _;
        let mut tcp = tokio::net::TcpStream::connect(server.public).await.unwrap();
        tcp.write_all(b"GET /api/v1/voice/media-stream HTTP/1.1\r\nHost: x\r\nUpgr").await.unwrap();
    }
    next_call_works(&server, "CA60000000000000000000000000000002").await;
}
