//! A damaged data directory is never silent: a flipped byte, a zeroed block or a truncated
//! file is repaired from what is intact when nothing is lost, and otherwise reported; no store
//! content makes the box panic.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use callbox::calls::{CallEvent, EventSource, Store};
use jiff::Timestamp;

const CALLS: usize = 300;

fn event(sid: &str, seq: u64) -> CallEvent {
    CallEvent {
        call_sid: sid.into(),
        source: EventSource::StatusCallback,
        status: Some("ringing".parse().unwrap()),
        sequence: Some(seq),
        twilio_timestamp: None,
        received_at: Timestamp::now(),
        from: Some("+15035550123".into()),
        to: Some("+15035550100".into()),
        direction: None,
        duration_secs: None,
        dedupe_key: format!("status:{seq}"),
        details: [("CallerName".to_owned(), "A".repeat(200))].into(),
    }
}

fn sid(i: usize) -> String {
    format!("CA{i:032x}")
}

/// A data directory holding `CALLS` calls (two events each), stopped cleanly or not.
async fn written(clean: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..CALLS {
        store.record(event(&sid(i), 0)).await.unwrap();
        store.record(event(&sid(i), 1)).await.unwrap();
    }
    if clean {
        store.close().unwrap();
    }
    drop(store);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipByte(f64),
    ZeroBlock(f64),
    Truncate(f64),
}

fn damage(file: &Path, how: Damage) {
    let mut bytes = fs::read(file).unwrap();
    let at = |frac: f64| ((bytes.len() as f64 * frac) as usize).min(bytes.len().saturating_sub(1));
    match how {
        Damage::FlipByte(f) => {
            let i = at(f);
            bytes[i] ^= 0x5a;
        }
        Damage::ZeroBlock(f) => {
            let start = at(f) & !4095;
            let end = (start + 4096).min(bytes.len());
            bytes[start..end].fill(0);
        }
        Damage::Truncate(f) => bytes.truncate(at(f)),
    }
    fs::write(file, bytes).unwrap();
}

fn journal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cbj"))
        .collect();
    v.sort();
    v
}

/// Opens the damaged copy and counts the calls that are whole (both events).
fn whole_calls(store: &Store) -> usize {
    (0..CALLS).filter(|i| store.get(&sid(*i)).unwrap().is_some_and(|r| r.events.len() == 2)).count()
}

const DAMAGES: [Damage; 9] = [
    Damage::FlipByte(0.01),
    Damage::FlipByte(0.3),
    Damage::FlipByte(0.6),
    Damage::FlipByte(0.99),
    Damage::ZeroBlock(0.0),
    Damage::ZeroBlock(0.5),
    Damage::Truncate(0.0),
    Damage::Truncate(0.5),
    Damage::Truncate(0.97),
];

#[tokio::test]
async fn a_damaged_index_is_rebuilt_from_the_journal_and_loses_nothing() {
    let original = written(true).await;
    for how in DAMAGES {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        damage(&copy.path().join("calls.sled").join("db"), how);
        let store = Store::open(copy.path()).unwrap_or_else(|e| panic!("{how:?}: {e}"));
        assert_eq!(whole_calls(&store), CALLS, "{how:?}: calls lost");
        assert_eq!(store.fault(), None, "{how:?}: repaired without loss, so healthy");
    }
}

#[tokio::test]
async fn a_damaged_journal_is_rewritten_from_an_intact_index_and_loses_nothing() {
    let original = written(true).await;
    for how in DAMAGES {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let segment = journal_segments(copy.path()).remove(0);
        damage(&segment, how);
        {
            let store = Store::open(copy.path()).unwrap_or_else(|e| panic!("{how:?}: {e}"));
            assert_eq!(whole_calls(&store), CALLS, "{how:?}: calls lost");
            assert_eq!(store.fault(), None, "{how:?}");
            // The journal is whole again: without the index, it alone gives every call back.
            store.close().unwrap();
        }
        fs::remove_dir_all(copy.path().join("calls.sled")).unwrap();
        let store = Store::open(copy.path()).unwrap();
        assert_eq!(whole_calls(&store), CALLS, "{how:?}: the rewritten journal is not whole");
        assert!(
            fs::read_dir(copy.path().join("journal")).unwrap().any(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "damaged")),
            "{how:?}: the damaged segment is kept aside for inspection"
        );
    }
}

#[tokio::test]
async fn damage_that_loses_calls_is_reported_with_the_file_and_the_rest_is_kept() {
    // Not stopped cleanly: the index cannot vouch for itself, so the journal is all there is.
    let original = written(false).await;
    for how in [Damage::FlipByte(0.5), Damage::ZeroBlock(0.5), Damage::Truncate(0.5)] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let segment = journal_segments(copy.path()).remove(0);
        damage(&segment, how);
        let store = Store::open(copy.path()).unwrap_or_else(|e| panic!("{how:?}: {e}"));
        let whole = whole_calls(&store);
        let fault = store.fault();
        match how {
            // The end of the only segment is where a crash cuts a write short: indistinguishable
            // from a torn write, so it is dropped quietly; what comes before is all there.
            Damage::Truncate(_) => assert!(whole >= CALLS / 2 - 2, "{how:?}: only {whole} whole calls"),
            _ => {
                assert!(whole >= CALLS - 20, "{how:?}: only {whole} of {CALLS} calls kept");
                let fault = fault.unwrap_or_else(|| panic!("{how:?}: lost calls but reports no fault"));
                assert!(fault.contains(&segment.display().to_string()), "{how:?}: {fault}");
                let log = fs::read_to_string(copy.path().join("store-damage.txt")).unwrap();
                assert!(log.contains("damaged"), "{log}");
            }
        }
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_read_is_refused_with_a_clear_error() {
    let dir = written(true).await;
    fs::remove_dir_all(dir.path().join("journal")).unwrap();
    fs::write(dir.path().join("journal"), b"not a directory").unwrap();
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("journal"), "{err}");
}

#[tokio::test]
async fn a_second_process_is_refused_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["calls", "--dev", "--data-dir"])
        .arg(dir.path())
        .args(["--admin-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&child.stderr);
    assert_ne!(child.status.code(), Some(101), "panicked: {text}");
    assert!(text.contains("holds"), "{text}");
}
