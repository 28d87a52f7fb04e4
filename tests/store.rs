//! The call log's own API: retention, time ranges, concurrency.

#![allow(clippy::unwrap_used)]

use callbox::calls::{CallEvent, EventSource, Store};
use jiff::{SignedDuration, Timestamp};

fn event(sid: &str, at: Timestamp, seq: u64) -> CallEvent {
    CallEvent {
        call_sid: sid.into(),
        source: EventSource::StatusCallback,
        status: Some("ringing".parse().unwrap()),
        sequence: Some(seq),
        twilio_timestamp: None,
        received_at: at,
        from: Some("+15035550123".into()),
        to: Some("+15035550100".into()),
        direction: None,
        duration_secs: None,
        dedupe_key: format!("status:{seq}"),
        details: Default::default(),
    }
}

#[tokio::test]
async fn retention_prunes_by_age_then_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = Timestamp::now();
    for day in 0..10i64 {
        let at = now - SignedDuration::from_hours(24 * day);
        store.record(event(&format!("CA{day:02}"), at, 0)).await.unwrap();
    }
    assert_eq!(store.count(), 10);
    // Older than 7.5 days: CA08 and CA09 go.
    let cutoff = now - SignedDuration::from_hours(24 * 7 + 12);
    assert_eq!(store.prune(Some(cutoff), 0).await.unwrap(), 2);
    assert!(store.get("CA08").unwrap().is_none() && store.get("CA07").unwrap().is_some());
    // At most 5: the three oldest of the rest go.
    assert_eq!(store.prune(None, 5).await.unwrap(), 3);
    let left: Vec<String> = store.list(100, None).unwrap().into_iter().map(|c| c.call_sid).collect();
    assert_eq!(left, ["CA00", "CA01", "CA02", "CA03", "CA04"]);
    assert_eq!(store.prune(None, 5).await.unwrap(), 0);
    store.close().unwrap();
    drop(store);
    // Pruning is durable.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.count(), 5);
}

#[tokio::test]
async fn between_returns_a_time_range_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    for i in 0..5i64 {
        store.record(event(&format!("CB{i}"), t0 + SignedDuration::from_mins(i), 0)).await.unwrap();
    }
    let got: Vec<String> = store
        .between(t0 + SignedDuration::from_mins(1), t0 + SignedDuration::from_mins(4))
        .unwrap()
        .into_iter()
        .map(|c| c.call_sid)
        .collect();
    assert_eq!(got, ["CB1", "CB2", "CB3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_to_one_call_lose_nothing() {
    // sled's flush_async hangs with this many concurrent callers (shared/reference/sled.md);
    // the group-commit flusher must not.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = Timestamp::now();
    let mut tasks = Vec::new();
    for seq in 0..200u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.record(event("CASAME", now, seq)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.get("CASAME").unwrap().unwrap().events.len(), 200);
    assert!(store.flush().await.is_ok());
}

#[test]
fn a_second_process_gets_a_clear_locked_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    // sled locks per process with flock: emulate the second process with a child.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["calls", "--dev", "--admin-url", "http://127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") || err.contains("holds"), "{err}");
}

#[tokio::test]
async fn documents_survive_a_crash_and_a_compaction_like_calls() {
    // The texts' outbox lives in the call log's documents: what was acknowledged is there after
    // a crash (the index is rebuilt from the journal) and after the journal is compacted.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.record(event("CA01", Timestamp::now(), 0)).await.unwrap();
        for n in 0..50u32 {
            let stored = store
                .update_doc::<serde_json::Value, _>(&format!("msg/{n:03}"), |d| {
                    *d = Some(serde_json::json!({ "n": n }))
                })
                .await;
            assert_eq!(stored.unwrap(), Some(serde_json::json!({ "n": n })));
        }
        store.update_doc::<serde_json::Value, _>("msg/007", |d| *d = None).await.unwrap();
        // Dropped without close: a crash. Nothing tells the next start the index is whole.
    }
    let store = Store::open(dir.path()).unwrap();
    let docs = store.docs::<serde_json::Value>("msg/").unwrap();
    assert_eq!(docs.len(), 49, "every acknowledged write, and the removal");
    assert!(store.doc::<serde_json::Value>("msg/007").unwrap().is_none());
    assert_eq!(store.doc::<serde_json::Value>("msg/049").unwrap(), Some(serde_json::json!({ "n": 49 })));
    store.compact().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.docs::<serde_json::Value>("msg/").unwrap().len(), 49, "the compacted journal keeps them");
    assert!(store.get("CA01").unwrap().is_some());
    // Unchanged writes are not journaled again.
    let before = store.size_on_disk().unwrap();
    for _ in 0..20 {
        store.update_doc::<serde_json::Value, _>("msg/001", |_| {}).await.unwrap();
    }
    assert!(store.size_on_disk().unwrap() <= before + 4096);
}
