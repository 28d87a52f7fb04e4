//! An acknowledged event is on disk: across graceful stops, SIGKILL, retries and reordering.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::StatusCode;

const STATUS: &str = "/api/v1/webhooks/call-status";

fn seqs_of(call: &serde_json::Value) -> BTreeSet<u64> {
    call["events"].as_array().unwrap().iter().filter_map(|e| e["sequence"].as_u64()).collect()
}

#[tokio::test]
async fn events_survive_a_graceful_restart() {
    let server = TestServer::start().await;
    let params = incoming_params("CA00000000000000000000000035303030");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
    for (seq, status) in [(0, "initiated"), (1, "ringing"), (2, "in-progress"), (3, "completed")] {
        let s = seq.to_string();
        let mut p = vec![
            ("CallSid", "CA00000000000000000000000035303030"),
            ("CallStatus", status),
            ("SequenceNumber", s.as_str()),
        ];
        if status == "completed" {
            p.push(("CallDuration", "61"));
        }
        assert_eq!(server.post_signed(STATUS, &p).await.status, StatusCode::NO_CONTENT);
    }
    let dir = server.stop().await;

    let server = TestServer::start_in(dir, |_| {}).await;
    let call = server.admin_get("/api/v1/calls/CA00000000000000000000000035303030", true).await.json();
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_secs"], 61);
    assert_eq!(call["from"], "+15035550123");
    assert_eq!(seqs_of(&call), BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(call["events"].as_array().unwrap().len(), 5, "incoming + 4 status events");
}

#[tokio::test]
async fn duplicates_are_stored_once_and_late_events_never_move_a_call_back() {
    let server = TestServer::start().await;
    let completed = [
        ("CallSid", "CA00000000000000000000000035313030"),
        ("CallStatus", "completed"),
        ("SequenceNumber", "3"),
        ("CallDuration", "12"),
    ];
    let ringing =
        [("CallSid", "CA00000000000000000000000035313030"), ("CallStatus", "ringing"), ("SequenceNumber", "1")];
    assert_eq!(server.post_signed(STATUS, &completed).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.post_signed(STATUS, &ringing).await.status, StatusCode::NO_CONTENT);
    // Twilio retries: same SequenceNumber, answered again with 2xx, stored once.
    assert_eq!(server.post_signed(STATUS, &completed).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.post_signed(STATUS, &ringing).await.status, StatusCode::NO_CONTENT);
    let call = server.admin_get("/api/v1/calls/CA00000000000000000000000035313030", true).await.json();
    assert_eq!(call["status"], "completed", "a late ringing does not reopen the call");
    assert_eq!(call["duration_secs"], 12);
    assert_eq!(call["events"].as_array().unwrap().len(), 2);
    assert_eq!(seqs_of(&call), BTreeSet::from([1, 3]));
}

/// Fires status callbacks from several connections at full speed, SIGKILLs the server at a
/// random moment while they are in flight, restarts it on the same store, and repeats; at the
/// end every callback that got a 2xx must be in the store. `CALLBOX_CRASH_ROUNDS` sets the
/// number of rounds (default 50).
// Long on purpose: one loop of rounds (storm, kill, restart, check); the steps share its counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let rounds: u64 = std::env::var("CALLBOX_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let started = std::time::Instant::now();
    for round in 0..rounds {
        let server = BinServer::spawn_dev(dir.path());
        let mut writers = Vec::new();
        for w in 0..4 {
            let twilio = server.twilio();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let sid = format!("CA6{round:030}{w}");
                for seq in 0u64.. {
                    let s = seq.to_string();
                    let p = [("CallSid", sid.as_str()), ("CallStatus", "ringing"), ("SequenceNumber", s.as_str())];
                    // Once the server is killed, requests fail: that ends this writer.
                    match twilio.try_post_signed(STATUS, &p).await {
                        Ok(reply) if reply.status == StatusCode::NO_CONTENT => {
                            acked.lock().unwrap().push((sid.clone(), seq))
                        }
                        Ok(reply) => panic!("unexpected {}", reply.status),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Let the writers get going, then kill at a random moment while requests are in flight.
        let target = acked.lock().unwrap().len() + rand::random_range(5..150);
        while acked.lock().unwrap().len() < target {
            tokio::time::sleep(std::time::Duration::from_micros(rand::random_range(100..2000))).await;
        }
        server.kill9();
        for w in writers {
            w.await.unwrap();
        }
    }
    let server = BinServer::spawn_dev(dir.path());
    let acked = acked.lock().unwrap().clone();
    let mut missing = Vec::new();
    for (sid, seq) in &acked {
        let reply = server.admin_get(&format!("/api/v1/calls/{sid}")).await;
        if reply.status != StatusCode::OK || !seqs_of(&reply.json()).contains(seq) {
            missing.push((sid.clone(), *seq));
        }
    }
    println!(
        "crash safety: {rounds} SIGKILL rounds, {} acknowledged events, {} lost, {:.1} s",
        acked.len(),
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked.len() as u64 >= 5 * rounds);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { dir_bytes(&e.path()) } else { e.metadata().unwrap().len() })
        .sum()
}

/// A captured status callback without SequenceNumber, replayed with a fresh
/// `I-Twilio-Idempotency-Token` each time (the signature does not cover headers), used to add
/// an event per replay: 1,500 replays grew a store from 39 to 346 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_with_fresh_idempotency_tokens_are_stored_once_and_do_not_grow_the_log() {
    let server = TestServer::start().await;
    let sid = &common::twilio_ws::call_sid(0x52a);
    let padding = "x".repeat(900);
    let p = [
        ("CallSid", sid.as_str()),
        ("CallStatus", "in-progress"),
        ("Timestamp", "Tue, 01 Sep 2026 17:04:05 +0000"),
        ("CallerName", padding.as_str()),
    ];
    let signature = server.sign(STATUS, &p);
    let body = Bytes::from(encode_form(&p));
    let replay = |token: String| {
        let (body, signature) = (body.clone(), signature.clone());
        let public = server.public;
        async move {
            let headers = [
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", signature.as_str()),
                ("i-twilio-idempotency-token", token.as_str()),
            ];
            request(public, http::Method::POST, STATUS, &headers, body).await.status
        }
    };
    assert_eq!(replay("first".into()).await, StatusCode::NO_CONTENT);
    server.app.calls.store().flush().await.unwrap();
    let before = dir_bytes(server.dir.path());
    for i in 0..1_000 {
        assert_eq!(replay(format!("token-{i}")).await, StatusCode::NO_CONTENT, "a replay is still answered 2xx");
    }
    server.app.calls.store().flush().await.unwrap();
    let after = dir_bytes(server.dir.path());
    let call = server.admin_get(&format!("/api/v1/calls/{sid}"), true).await.json();
    assert_eq!(call["events"].as_array().unwrap().len(), 1, "stored once");
    println!("replays: 1,000 replays of a {}-byte callback; data dir {before} -> {after} bytes", body.len());
    // sled may still settle a segment or two; 1,000 stored copies would be over a megabyte.
    assert!(after < before + 256 * 1024, "the data dir grew from {before} to {after} bytes");
}
