//! Connection-level limits: a client that sends nothing cannot hold a connection slot, one
//! address cannot take every slot, and a flood of connections is held to the cap in count and
//! memory.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::twilio_ws;
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn silent_and_half_sent_requests_are_dropped_after_the_header_timeout() {
    let server = TestServer::start_with(|c| {
        c.server.header_timeout_secs = 1;
        c.server.max_connections = 2;
    })
    .await;
    // Two clients take both slots: one says nothing, one sends half a request head.
    let mut silent = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.public).await.unwrap();
    slow.write_all(b"POST /api/v1/webhooks/call-status HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for conn in [&mut silent, &mut slow] {
        let mut buf = Vec::new();
        // The server closes them (with or without a 408); generous bound, not a timing assertion.
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection still held open after the header timeout");
    }
    // Their slots are free again: a real request is served.
    let params = incoming_params("CA00000000000000000000000037353030");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
}

/// A signed incoming-call webhook gets its 200 within a generous deadline (a bound on a hang,
/// not a timing assertion); `when` names the situation in the failure message.
async fn assert_incoming_call_answered(server: &TestServer, call_sid: &str, when: &str) {
    let params = incoming_params(call_sid);
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)),
    )
    .await
    .unwrap_or_else(|_| panic!("a signed webhook was not answered {when}"));
    assert_eq!(reply.status, StatusCode::OK);
}

/// Opens a connection to `server` from the loopback address `from` (all of 127/8 is local).
async fn connect_from(from: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(server).await
}

/// A slowloris: sends a request head one byte at a time and never finishes it. Returns once the
/// server closes the connection, or `stop` is cancelled (then `false`).
async fn trickle_headers(mut conn: TcpStream, stop: CancellationToken) -> bool {
    let head = b"POST /api/v1/webhooks/incoming-call HTTP/1.1\r\nHost: shop.example.com\r\nX-Padding: ";
    let (mut reader, mut writer) = conn.split();
    let closed = async {
        let mut buf = [0u8; 512];
        // EOF, a reset or a 4xx answer: in each case the server let go of the connection.
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let trickle = async {
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = closed => true,
        () = trickle => true,
        () = stop.cancelled() => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_writers_from_one_address_cannot_lock_twilio_out() {
    let server = TestServer::start_with(|c| {
        // Long enough that only the per-address share keeps slots free during the test.
        c.server.header_timeout_secs = 600;
        c.server.max_connections = 32;
        c.server.max_connections_per_address = 8;
    })
    .await;
    let stop = CancellationToken::new();
    // Each attacker the server lets go of says so.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let attackers: Vec<_> = (0..100)
        .map(|_| {
            let (stop, closed_tx) = (stop.clone(), closed_tx.clone());
            let public = server.public;
            tokio::spawn(async move {
                let conn = connect_from([127, 0, 0, 2], public).await.unwrap();
                if trickle_headers(conn, stop).await {
                    let _ = closed_tx.send(());
                }
            })
        })
        .collect();

    // Every request from Twilio's address is answered while the attack goes on. Without the
    // share, the attacker would hold all 32 slots for the 600 s header timeout and these would
    // wait in the backlog past the client's deadline.
    for _ in 0..20 {
        assert_incoming_call_answered(
            &server,
            "CA00000000000000000000000037353031",
            "while slow writers held connections",
        )
        .await;
    }

    // Every refused connection sees its close (the accept loop may still be working through
    // the backlog under a loaded CI machine); only the held share is left running.
    let mut closed_by_server = 0;
    let refused = async {
        while closed_by_server < 100 - 8 && closed_rx.recv().await.is_some() {
            closed_by_server += 1;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), refused).await;
    stop.cancel();
    for attacker in attackers {
        attacker.await.unwrap();
    }
    // Any the server closed after those: the share would not have held.
    while closed_rx.try_recv().is_ok() {
        closed_by_server += 1;
    }
    // The attack was real: the share of 8 stayed open and trickling all along; the rest were refused.
    assert_eq!(closed_by_server, 100 - 8, "connections the server refused");
}

/// Connections the server has accepted and still holds on `port`: sockets of this process in
/// ESTABLISHED state on the server's side. A connection still in the kernel's accept queue has
/// no inode yet, so it does not count.
fn accepted_connections(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().map(|p| u16::from_str_radix(p, 16).unwrap());
            local_port == Some(port) && fields[3] == "01" && fields[9] != "0"
        })
        .count()
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_held_to_the_cap_in_count_and_memory() {
    const CAP: usize = 128;
    const FLOOD: usize = 2_000;
    let server = TestServer::start_with(|c| {
        c.server.header_timeout_secs = 600;
        c.server.max_connections = CAP;
    })
    .await;
    let public = server.public;
    let before = rss_kib();

    // The flood: from 40 addresses, so that the per-address share is not what stops it, each
    // connection with half a request head.
    let attempts: Vec<_> = (0..FLOOD)
        .map(|i| {
            tokio::spawn(async move {
                let from = [127, 0, 1, 2 + (i % 40) as u8];
                // Beyond the cap and the accept queue the kernel stops answering SYNs.
                let mut conn =
                    tokio::time::timeout(Duration::from_secs(1), connect_from(from, public)).await.ok()?.ok()?;
                conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.ok()?;
                Some(conn)
            })
        })
        .collect();
    let mut flood = Vec::new();
    for attempt in attempts {
        flood.extend(attempt.await.unwrap());
    }
    assert!(flood.len() > CAP, "the flood opened only {} connections", flood.len());
    // The server takes connections off the backlog until the cap is full; then the cap must
    // hold while the rest of the flood waits, so it is looked at again after a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while accepted_connections(public.port()) < CAP && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not a synchronising sleep: the window in which the cap must hold.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let accepted = accepted_connections(public.port());
    let grown_kib = rss_kib().saturating_sub(before);
    eprintln!("flood: {} connections opened, {accepted} accepted (cap {CAP}), RSS grew {grown_kib} KiB", flood.len());
    assert!(accepted <= CAP, "{accepted} connections accepted with a cap of {CAP}");
    assert!(accepted >= CAP / 2, "the flood should have filled the cap: {accepted}");
    // Bounded: what CAP idle connections cost, not what the flood does (a few KiB each).
    assert!(grown_kib < 32 * 1024, "memory grew by {grown_kib} KiB under a flood of {}", flood.len());

    // The owner's LAN listener has its own cap and still answers.
    let health = tokio::time::timeout(
        Duration::from_secs(30),
        request(server.admin, Method::GET, "/healthz", &[], bytes::Bytes::new()),
    )
    .await
    .expect("the admin listener did not answer during the flood");
    assert_eq!(health.status, StatusCode::OK);

    // Once the flood lets go, Twilio is served again.
    drop(flood);
    assert_incoming_call_answered(&server, "CA00000000000000000000000037353032", "after the flood ended").await;
}

/// Opens the media stream as Twilio does (signed upgrade), from the loopback address `from`.
async fn media_stream_from(from: [u8; 4], server: &TestServer) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}{MEDIA_PATH}", server.public).into_client_request()?;
    req.headers_mut().insert("x-twilio-signature", server.media_signature().parse().unwrap());
    let io: Box<dyn Io> = Box::new(connect_from(from, server.public).await?);
    tokio_tungstenite::client_async(req, io).await.map(|(ws, _)| ws)
}

/// A stream from `from` for a call the box has just answered; returns once the greeting plays.
async fn live_stream_from(from: [u8; 4], server: &TestServer, call_sid: &str) -> twilio_ws::Caller {
    assert_incoming_call_answered(server, call_sid, "before its stream").await;
    let mut c = twilio_ws::Caller::new(media_stream_from(from, server).await.unwrap(), call_sid);
    c.start("+15035550100").await;
    assert!(matches!(c.recv().await, twilio_ws::FromBox::Media(_)), "the greeting begins");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_sessions_from_one_address_hold_its_share_and_leave_room_for_others() {
    const SHARE: usize = 4;
    let server = TestServer::start_with(|c| {
        c.server.max_connections = 64;
        c.server.max_connections_per_address = SHARE;
    })
    .await;
    // One address takes its whole share with live streams (answered calls, so they stay).
    let mut held = Vec::new();
    for i in 0..SHARE {
        held.push(live_stream_from([127, 0, 0, 2], &server, &twilio_ws::call_sid(0x7600 + i as u128)).await);
    }
    // Its upgraded sessions still count against it: more from it are turned away at once.
    for _ in 0..3 {
        assert!(media_stream_from([127, 0, 0, 2], &server).await.is_err(), "a stream beyond the address's share");
    }

    // Another address's stream is taken and runs to its end meanwhile.
    let mut other = live_stream_from([127, 0, 0, 3], &server, &twilio_ws::call_sid(0x7610)).await;
    other.through_greeting().await;
    for frame in twilio_ws::test_audio(5).chunks(160) {
        other.media(frame).await;
    }
    other.stop().await;
    other.closed().await;
    let stream = server.wait_stream_outcome(&other.call_sid).await.stream.unwrap();
    assert_eq!(stream.outcome.map(|o| o.as_str()), Some("message"));

    // One held stream ends: its place in the share is free again once its session is over.
    let mut ending = held.pop().unwrap();
    ending.stop().await;
    ending.closed().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        match media_stream_from([127, 0, 0, 2], &server).await {
            Ok(ws) => break ws,
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("the address's share was not freed when its stream ended: {e}"),
        }
    };
    drop(again);
    // The others were never disturbed: still up, still answering.
    for c in &mut held {
        c.ws.send(tokio_tungstenite::tungstenite::Message::Ping(Default::default())).await.unwrap();
        loop {
            match c.ws.next().await.unwrap().unwrap() {
                m if m.is_pong() => break,
                m if m.is_text() => continue, // the greeting goes on
                m => panic!("expected a pong, got {m:?}"),
            }
        }
    }
}
