//! An acknowledged event is on disk: across graceful stops, SIGKILL, retries and reordering.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::*;
use http::StatusCode;

const STATUS: &str = "/api/v1/webhooks/call-status";

fn seqs_of(call: &serde_json::Value) -> BTreeSet<u64> {
    call["events"].as_array().unwrap().iter().filter_map(|e| e["sequence"].as_u64()).collect()
}

#[tokio::test]
async fn events_survive_a_graceful_restart() {
    let server = TestServer::start().await;
    let params = incoming_params("CA5000");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
    for (seq, status) in [(0, "initiated"), (1, "ringing"), (2, "in-progress"), (3, "completed")] {
        let s = seq.to_string();
        let mut p = vec![("CallSid", "CA5000"), ("CallStatus", status), ("SequenceNumber", s.as_str())];
        if status == "completed" {
            p.push(("CallDuration", "61"));
        }
        assert_eq!(server.post_signed(STATUS, &p).await.status, StatusCode::NO_CONTENT);
    }
    let dir = server.stop().await;

    let server = TestServer::start_in(dir, |_| {}).await;
    let call = server.admin_get("/api/v1/calls/CA5000", true).await.json();
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_secs"], 61);
    assert_eq!(call["from"], "+15035550123");
    assert_eq!(seqs_of(&call), BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(call["events"].as_array().unwrap().len(), 5, "incoming + 4 status events");
}

#[tokio::test]
async fn duplicates_are_stored_once_and_late_events_never_move_a_call_back() {
    let server = TestServer::start().await;
    let completed =
        [("CallSid", "CA5100"), ("CallStatus", "completed"), ("SequenceNumber", "3"), ("CallDuration", "12")];
    let ringing = [("CallSid", "CA5100"), ("CallStatus", "ringing"), ("SequenceNumber", "1")];
    assert_eq!(server.post_signed(STATUS, &completed).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.post_signed(STATUS, &ringing).await.status, StatusCode::NO_CONTENT);
    // Twilio retries: same SequenceNumber, answered again with 2xx, stored once.
    assert_eq!(server.post_signed(STATUS, &completed).await.status, StatusCode::NO_CONTENT);
    assert_eq!(server.post_signed(STATUS, &ringing).await.status, StatusCode::NO_CONTENT);
    let call = server.admin_get("/api/v1/calls/CA5100", true).await.json();
    assert_eq!(call["status"], "completed", "a late ringing does not reopen the call");
    assert_eq!(call["duration_secs"], 12);
    assert_eq!(call["events"].as_array().unwrap().len(), 2);
    assert_eq!(seqs_of(&call), BTreeSet::from([1, 3]));
}

/// Fires status callbacks from several connections, SIGKILLs the server while they are in
/// flight, restarts it, and checks every callback that got a 2xx. (The longer version with
/// many rounds is the crash-safety soak; this one runs in every test run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    for round in 0..3u64 {
        let server = BinServer::spawn_dev(dir.path());
        let mut writers = Vec::new();
        for w in 0..4 {
            let twilio = server.twilio();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let sid = format!("CA6{round}{w}");
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
        // Let the writers get going, then kill while requests are in flight.
        while acked.lock().unwrap().len() < 100 * (round as usize + 1) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
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
    assert!(acked.len() >= 300);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}
