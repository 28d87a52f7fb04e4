//! Which media streams the box takes: a stream whose `start` names a real CallSid of a call
//! the box answered a short while ago, that has had no stream yet. Any other is closed with
//! 1008 (policy) before it touches the call log, and the call it names is left as it was.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use callbox::calls::export::media_outcome;
use callbox::media::admission::ANSWER_WINDOW;
use common::twilio_ws::{Caller, FromBox, call_sid, test_audio};
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TO: &str = "+15035550100";

/// The incoming-call webhook: the box answers the call with its `<Connect><Stream>`.
async fn answer(server: &TestServer, call_sid: &str) {
    let params = incoming_params(call_sid);
    let reply = server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// A stream whose `start` names `call_sid` and `stream_sid`, as given.
async fn stream_for(server: &TestServer, named_call: &str, stream_sid: &str) -> Caller {
    let mut c = Caller::new(server.ws_connect().await, &call_sid(0));
    c.call_sid = named_call.to_owned();
    c.stream_sid = stream_sid.to_owned();
    c.start(TO).await;
    c
}

/// A stream the box takes: the greeting begins.
async fn accepted(server: &TestServer, call_sid: &str) -> Caller {
    let mut c = Caller::new(server.ws_connect().await, call_sid);
    c.start(TO).await;
    assert!(matches!(c.recv().await, FromBox::Media(_)), "the greeting begins");
    c
}

/// Leaves a message on an accepted stream and hangs up; returns the call's stream record.
async fn leave_message(server: &TestServer, c: &mut Caller) -> callbox::calls::StreamInfo {
    loop {
        match c.recv().await {
            FromBox::Media(_) => {}
            FromBox::Mark(name) => {
                c.mark(&name).await;
                break;
            }
            other => panic!("expected the greeting, got {other:?}"),
        }
    }
    for frame in test_audio(5).chunks(160) {
        c.media(frame).await;
    }
    c.stop().await;
    assert_eq!(c.closed().await, Some(CloseCode::Normal));
    let stream = server.wait_stream_outcome(&c.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));
    stream
}

/// Files in the recordings directory.
fn recordings(server: &TestServer) -> usize {
    std::fs::read_dir(server.dir.path().join("recordings")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn a_start_without_a_real_call_sid_is_refused_and_never_becomes_a_store_key() {
    let server = TestServer::start().await;
    let good_stream = format!("MZ{}", &call_sid(1)[2..]);
    let bad_sids = [
        String::new(),
        "x".repeat(5000),
        format!("CA{}\0", "0".repeat(31)),
        format!("CA{}/", "0".repeat(31)),
        "CA../../../../etc/passwd00000000000".into(),
        format!("CA{}", "A".repeat(32)),
        format!("CA{}", "0".repeat(31)),
        format!("MZ{}", "0".repeat(32)),
    ];
    for bad in &bad_sids {
        let mut c = stream_for(&server, bad, &good_stream).await;
        assert_eq!(c.closed().await, Some(CloseCode::Policy), "CallSid {:?}", &bad[..bad.len().min(40)]);
    }
    assert_eq!(server.app.calls.store().count(), 0, "no refused CallSid was stored");
    assert_eq!(recordings(&server), 0);

    // A real call with a StreamSid that is not one (it would become part of a file name).
    let sid = call_sid(2);
    answer(&server, &sid).await;
    let mut c = stream_for(&server, &sid, "MZ../../x").await;
    assert_eq!(c.closed().await, Some(CloseCode::Policy));
    assert!(server.app.calls.store().get(&sid).unwrap().unwrap().stream.is_none());
    // The refusal left the call alone: its real stream is taken.
    let mut c = accepted(&server, &sid).await;
    leave_message(&server, &mut c).await;
    assert_eq!(server.app.calls.store().count(), 1);
}

#[tokio::test]
async fn a_stream_for_a_call_the_box_never_answered_is_refused() {
    let server = TestServer::start().await;
    let sid = call_sid(3);
    let mut c = Caller::new(server.ws_connect().await, &sid);
    c.start(TO).await;
    assert_eq!(c.closed().await, Some(CloseCode::Policy));
    assert!(server.app.calls.store().get(&sid).unwrap().is_none(), "the stream did not create a call");
    assert_eq!(recordings(&server), 0);
}

#[tokio::test]
async fn a_stream_for_a_call_answered_long_ago_is_refused() {
    let server = TestServer::start().await;
    let sid = call_sid(4);
    answer(&server, &sid).await;
    // The box answered it longer ago than a stream may take to open.
    let long_ago = jiff::Timestamp::now() - (ANSWER_WINDOW + Duration::from_secs(60));
    server
        .app
        .calls
        .store()
        .update(&sid, |r| r.events.iter_mut().for_each(|e| e.received_at = long_ago))
        .await
        .unwrap();
    let before = server.app.calls.store().get(&sid).unwrap().unwrap();
    let mut c = Caller::new(server.ws_connect().await, &sid);
    c.start(TO).await;
    assert_eq!(c.closed().await, Some(CloseCode::Policy));
    assert_eq!(server.app.calls.store().get(&sid).unwrap().unwrap(), before, "the call is left as it was");
}

#[tokio::test]
async fn a_second_stream_while_the_first_is_live_is_refused_and_the_first_goes_on() {
    let server = TestServer::start().await;
    let sid = call_sid(5);
    answer(&server, &sid).await;
    let mut first = accepted(&server, &sid).await;
    let mut second = stream_for(&server, &sid, &format!("MZ{}", "f".repeat(32))).await;
    assert_eq!(second.closed().await, Some(CloseCode::Policy));
    let stream = leave_message(&server, &mut first).await;
    assert_eq!(stream.stream_sid, first.stream_sid);
    assert_eq!(stream.frames_in, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sockets_racing_for_one_call_get_one_stream() {
    let server = TestServer::start().await;
    let sid = call_sid(6);
    answer(&server, &sid).await;
    let mut a = Caller::new(server.ws_connect().await, &sid);
    let mut b = Caller::new(server.ws_connect().await, &sid);
    b.stream_sid = format!("MZ{}", "e".repeat(32));
    // Both starts are on the wire before the box has read either.
    tokio::join!(a.start(TO), b.start(TO));
    let (from_a, from_b) = tokio::join!(a.recv(), b.recv());
    let (mut winner, loser) = match (from_a, from_b) {
        (FromBox::Media(_), FromBox::Closed(code)) => (a, code),
        (FromBox::Closed(code), FromBox::Media(_)) => (b, code),
        other => panic!("expected one stream taken and one refused, got {other:?}"),
    };
    assert_eq!(loser, Some(CloseCode::Policy));
    let stream = leave_message(&server, &mut winner).await;
    assert_eq!(stream.stream_sid, winner.stream_sid);
}

#[tokio::test]
async fn a_second_stream_after_the_first_ended_leaves_its_message_alone() {
    let server = TestServer::start().await;
    let sid = call_sid(7);
    answer(&server, &sid).await;
    let mut first = accepted(&server, &sid).await;
    let stream = leave_message(&server, &mut first).await;
    let before = server.app.calls.store().get(&sid).unwrap().unwrap();

    // The same call again (a replayed handshake, or a confused peer), with the same StreamSid
    // and with a new one.
    for stream_sid in [first.stream_sid.clone(), format!("MZ{}", "d".repeat(32))] {
        let mut again = stream_for(&server, &sid, &stream_sid).await;
        assert_eq!(again.closed().await, Some(CloseCode::Policy));
    }
    let after = server.app.calls.store().get(&sid).unwrap().unwrap();
    assert_eq!(after, before, "the call record is untouched");
    let recording = stream.recording.unwrap();
    assert_eq!(media_outcome(&after), ("message".to_owned(), recording.path.clone()), "what the CSV export shows");
    let wav = server.admin_get(&format!("/api/v1/calls/{sid}/recording"), true).await;
    assert_eq!(wav.status, StatusCode::OK);
    assert_eq!(wav.body.len() as u64, recording.bytes);
}

#[tokio::test]
async fn a_socket_that_never_starts_is_closed() {
    let server = TestServer::start().await;
    let mut ws = server.ws_connect().await;
    // Keep-alives that are not a start: the socket must not be held on them.
    let connected = serde_json::json!({"event":"connected","protocol":"Call","version":"1.0.0"}).to_string();
    let mut keepalive = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    let code = loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if ws.send(Message::text(connected.clone())).await.is_err() {
                    break None;
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                Some(Err(_)) | None => break None,
            },
            () = &mut deadline => panic!("a socket without start is still open after 30 s"),
        }
    };
    assert_eq!(code, Some(CloseCode::Policy));
    assert_eq!(server.app.calls.store().count(), 0);
}
