//! The storage directory fills up: the box answers Twilio 503 (Twilio retries) instead of
//! acknowledging what it cannot keep, stays up and says why, refuses voicemail recordings
//! before the call log runs out of room, takes callbacks again once space returns (without a
//! restart), and after a restart every acknowledged event is in the call log.
//!
//! The box runs as a real process on a real 16 MiB tmpfs in a private mount namespace (root
//! and util-linux); the test fills that file system through `/proc/<pid>/root`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::twilio_ws::{Caller, FromBox, call_sid, test_audio};
use common::*;
use http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longest any single request may take: a full disk must not turn into a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const CALL_STATUS: &str = "/api/v1/webhooks/call-status";
const INCOMING_CALL: &str = "/api/v1/webhooks/incoming-call";

/// One status callback and whether the box acknowledged it.
struct Sent {
    call_sid: String,
    sequence: u64,
    status: StatusCode,
}

struct Twilio {
    client: TwilioClient,
    next: u64,
    sent: Vec<Sent>,
}

/// A status callback for a new call (every one makes a new record, so the log grows).
async fn send_callback(client: TwilioClient, sequence: u64) -> Sent {
    let call_sid = call_sid(u128::from(sequence));
    let seq = sequence.to_string();
    let p = [("CallSid", call_sid.as_str()), ("CallStatus", "completed"), ("SequenceNumber", seq.as_str())];
    let reply = tokio::time::timeout(ANSWER_WITHIN, client.post_signed(CALL_STATUS, &p))
        .await
        .expect("a status callback got no answer within 10 s");
    assert!(
        reply.status.is_success() || reply.status == StatusCode::SERVICE_UNAVAILABLE,
        "a status callback got {} ({}): only 2xx or 503 are acceptable",
        reply.status,
        reply.text()
    );
    if reply.status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(reply.headers.contains_key("retry-after"), "a 503 without Retry-After");
    }
    Sent { call_sid, sequence, status: reply.status }
}

impl Twilio {
    async fn callback(&mut self) -> StatusCode {
        self.next += 1;
        let sent = send_callback(self.client.clone(), self.next).await;
        let status = sent.status;
        self.sent.push(sent);
        status
    }

    /// `n` callbacks at once (concurrent writers meeting the failure and the reopen).
    async fn burst(&mut self, n: u64) -> Vec<StatusCode> {
        let tasks: Vec<_> =
            (self.next + 1..=self.next + n).map(|seq| tokio::spawn(send_callback(self.client.clone(), seq))).collect();
        self.next += n;
        let mut statuses = Vec::new();
        for t in tasks {
            let sent = t.await.unwrap();
            statuses.push(sent.status);
            self.sent.push(sent);
        }
        statuses
    }

    fn acked(&self) -> impl Iterator<Item = &Sent> {
        self.sent.iter().filter(|s| s.status.is_success())
    }
}

/// Grows the filler until at most `leave` bytes are free, or (`leave` 0) until the file
/// system refuses more.
fn fill(dir: &Path, leave: u64) {
    let mut filler = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("filler")).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        let stat = rustix::fs::statvfs(dir).unwrap();
        let free = stat.f_bavail * stat.f_frsize;
        let n = if leave == 0 { chunk.len() as u64 } else { free.saturating_sub(leave).min(chunk.len() as u64) };
        if n == 0 {
            return;
        }
        match filler.write(&chunk[..n as usize]) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return,
            Err(e) => panic!("writing the filler: {e}"),
        }
    }
}

async fn admin_json(server: &BinServer, target: &str) -> serde_json::Value {
    let reply = tokio::time::timeout(ANSWER_WITHIN, server.admin_get(target))
        .await
        .unwrap_or_else(|_| panic!("admin API hung on {target}"));
    assert_eq!(reply.status, StatusCode::OK, "{target}: {}", reply.text());
    reply.json()
}

/// Waits (bounded) until the admin API's `target` satisfies `pred`; returns the last value.
async fn wait_admin(server: &BinServer, target: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = admin_json(server, target).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{target} never showed the expected state: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Long on purpose: one disk's story in order: room, full mid-voicemail, space back, restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and util-linux (a tmpfs in a private mount namespace)"]
async fn a_full_disk_gets_503_and_the_box_recovers_without_losing_acknowledged_events() {
    let ns = TmpfsNamespace::new("16m");
    let outside = ns.outside();
    let data = ns.inside().join("data");
    let server = BinServer::spawn_dev_in(&ns, &data);
    let mut twilio = Twilio { client: server.twilio(), next: 0, sent: Vec::new() };

    // Room to spare: everything is acknowledged.
    assert!(twilio.burst(20).await.iter().all(|s| *s == StatusCode::NO_CONTENT));
    // A voicemail starts while there is room; the disk fills up under it later.
    let recording_sid = "CA0000000000000000000000000000d15c";
    let p = incoming_params(recording_sid);
    assert_eq!(server.post_signed(INCOMING_CALL, &refs(&p)).await.status, StatusCode::OK);
    let mut recording = Caller::new(server.twilio().ws_connect().await, recording_sid);
    recording.start("+15035550100").await;
    recording.dtmf("5").await; // barge-in: recording starts at once
    loop {
        match recording.recv().await {
            FromBox::Clear => break,
            FromBox::Media(_) => {}
            other => panic!("expected the greeting to be cleared, got {other:?}"),
        }
    }
    recording.media(&test_audio(10)).await;

    // Nearly full (2 MiB left): call records are still kept, a new voicemail is refused so it
    // cannot eat the call log's reserve, and the call record says so.
    fill(&outside, 2 * 1024 * 1024);
    let refused_sid = "CA00000000000000000000000000000f11";
    let p = incoming_params(refused_sid);
    assert_eq!(server.post_signed(INCOMING_CALL, &refs(&p)).await.status, StatusCode::OK);
    let mut refused = Caller::new(server.twilio().ws_connect().await, refused_sid);
    refused.start("+15035550100").await;
    refused.dtmf("5").await;
    assert_eq!(refused.closed().await, Some(CloseCode::Error));
    let call = admin_json(&server, &format!("/api/v1/calls/{refused_sid}")).await;
    assert_eq!(call["stream"]["outcome"], "error", "{call}");
    let why = call["stream"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("not recording") && why.contains("disk nearly full"), "{call}");
    for _ in 0..5 {
        assert_eq!(twilio.callback().await, StatusCode::NO_CONTENT);
    }

    // Full. The voicemail in progress cannot be written: its stream ends cleanly (Twilio then
    // runs the fallthrough), and the box stays up.
    fill(&outside, 0);
    for _ in 0..40 {
        recording.media(&test_audio(5)).await;
    }
    assert_eq!(recording.closed().await, Some(CloseCode::Error));
    // The call log may still have room in its last segment; it must start refusing with 503.
    let mut refused_callbacks = 0;
    for _ in 0..3000 {
        if twilio.callback().await == StatusCode::SERVICE_UNAVAILABLE {
            refused_callbacks += 1;
            if refused_callbacks == 5 {
                break;
            }
        }
    }
    assert_eq!(refused_callbacks, 5, "the call log never reported the full disk");
    // Concurrent callbacks meet the failed call log: each gets a 2xx or a 503, none hangs.
    twilio.burst(30).await;
    // Up, and saying why: admin health, public health and the fault indicator.
    let health = admin_json(&server, "/api/v1/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["store_error"].as_str().unwrap_or_default().contains("No space left"), "{health}");
    let public = request(server.public, http::Method::GET, "/healthz", &[], Default::default()).await;
    assert_eq!(public.status, StatusCode::SERVICE_UNAVAILABLE);
    // The call log is closed until it can be reopened: reading it is refused, not stuck.
    let listed = tokio::time::timeout(ANSWER_WITHIN, server.admin_get("/api/v1/calls?limit=5")).await.unwrap();
    assert_eq!(listed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", listed.text());
    let indicators = wait_admin(&server, "/api/v1/indicators", |v| v["faults"]["store"].is_string()).await;
    assert_eq!(indicators["state"], "fault", "{indicators}");

    // Space returns: the box takes callbacks again, without a restart.
    std::fs::remove_file(outside.join("filler")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while twilio.callback().await != StatusCode::NO_CONTENT {
        assert!(Instant::now() < deadline, "callbacks still refused after the disk was freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = twilio.burst(30).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::NO_CONTENT), "{statuses:?}");
    let health = admin_json(&server, "/api/v1/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health["store_error"].is_null(), "{health}");
    wait_admin(&server, "/api/v1/indicators", |v| v["faults"]["store"].is_null()).await;

    // A clean restart on the same file system: it starts and serves.
    assert!(server.terminate().success(), "the box did not stop cleanly");
    let server = BinServer::spawn_dev_in(&ns, &data);
    twilio.client = server.twilio();
    for _ in 0..5 {
        assert_eq!(twilio.callback().await, StatusCode::NO_CONTENT);
    }
    assert!(server.terminate().success(), "the box did not stop cleanly");

    // Every acknowledged event is in the call log, which opens as it is.
    let store = callbox::calls::Store::open(&outside.join("data")).unwrap();
    let mut checked = 0;
    for sent in twilio.acked() {
        let record = store.get(&sent.call_sid).unwrap();
        let record = record.unwrap_or_else(|| panic!("acknowledged call {} is missing", sent.call_sid));
        assert!(
            record.events.iter().any(|e| e.sequence == Some(sent.sequence)),
            "acknowledged event {} of {} is missing",
            sent.sequence,
            sent.call_sid
        );
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} acknowledged events were checked");
    let refused = store.get(refused_sid).unwrap().unwrap();
    assert!(refused.stream.unwrap().error.unwrap().contains("disk nearly full"));
    println!("{:?}", store.get(recording_sid).unwrap().unwrap().stream);
    let total = twilio.sent.len();
    let rejected = total - checked;
    println!("{total} callbacks: {checked} acknowledged and all present, {rejected} answered 503");
}
