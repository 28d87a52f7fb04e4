//! A call log written by an older build still opens and reads the same.
//!
//! `tests/fixtures/store-v1/` was made with the build before media events, stream outcomes
//! and the TLS mode became enums (commit 8bd0b8b): `callbox serve --dev`, three
//! `callbox simulate-call`s (a message ended with `#`, a `0` to the front desk, a message
//! ended by hanging up), then a clean stop. `journal.jsonl` holds the payloads of the frames
//! of its journal segment, one per line, as the old code wrote them; `calls.json` is what its
//! admin API (`GET /api/v1/calls`) answered before the stop. Kept as text so a change to the
//! stored shape shows up in review; the frames are rebuilt here with the journal's documented
//! layout (magic "CBJ1", length, CRC-32 of length and payload, payload; all little-endian).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use callbox::calls::{MediaEvent, Outcome, Store, StreamOutcome};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v1");

/// Writes the fixture's journal into `data/journal/` as the one segment the old box left.
fn old_data_dir(data: &Path) {
    let payloads = std::fs::read_to_string(Path::new(FIXTURE).join("journal.jsonl")).unwrap();
    let mut segment = Vec::new();
    for payload in payloads.lines().filter(|l| !l.is_empty()) {
        let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(payload.as_bytes());
        segment.extend_from_slice(b"CBJ1");
        segment.extend_from_slice(&len);
        segment.extend_from_slice(&crc.finalize().to_le_bytes());
        segment.extend_from_slice(payload.as_bytes());
    }
    std::fs::create_dir_all(data.join("journal")).unwrap();
    std::fs::write(data.join("journal/0000000000000001.cbj"), segment).unwrap();
}

fn old_answer() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("calls.json")).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    answer["calls"].as_array().unwrap().clone()
}

#[test]
fn a_call_log_written_by_the_old_build_opens_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    old_data_dir(dir.path());
    let store = Store::open(dir.path()).unwrap();

    let old = old_answer();
    assert_eq!(old.len(), 3);
    for call in &old {
        let sid = call["call_sid"].as_str().unwrap();
        let record = store.get(sid).unwrap().unwrap_or_else(|| panic!("call {sid} missing"));
        // The same JSON the old admin API sent: every stored string still reads as its enum
        // and serialises back to the same string. `outcome` is new: worked out when read.
        let mut now = serde_json::to_value(&record).unwrap();
        let outcome = now.as_object_mut().unwrap().remove("outcome").unwrap();
        assert_ne!(outcome, "live", "call {sid}: an old call that ended has ended");
        assert_eq!(&now, call, "call {sid}");
    }

    let outcome = |from: &str| {
        let call = old.iter().find(|c| c["from"] == from).unwrap();
        store.get(call["call_sid"].as_str().unwrap()).unwrap().unwrap().stream.unwrap().outcome
    };
    assert_eq!(outcome("+15035550123"), Some(StreamOutcome::Message));
    assert_eq!(outcome("+15035550124"), Some(StreamOutcome::FrontDesk));
    assert_eq!(outcome("+15035550125"), Some(StreamOutcome::Message));
    let call_outcome = |from: &str| {
        let call = old.iter().find(|c| c["from"] == from).unwrap();
        store.get(call["call_sid"].as_str().unwrap()).unwrap().unwrap().outcome
    };
    assert_eq!(call_outcome("+15035550124"), Outcome::FrontDesk);
    // Its simulated messages were 1.5 s and 1 s long: hang-ups at the beep, not voicemails.
    assert!(!matches!(call_outcome("+15035550123"), Outcome::Voicemail | Outcome::Live));
    assert!(!matches!(call_outcome("+15035550125"), Outcome::Voicemail | Outcome::Live));

    for call in &old {
        let record = store.get(call["call_sid"].as_str().unwrap()).unwrap().unwrap();
        let media: Vec<_> = record.events.iter().filter_map(|e| e.media_event()).collect();
        assert_eq!(media.first(), Some(&MediaEvent::Started), "{media:?}");
        assert_eq!(media.last(), Some(&MediaEvent::Stopped), "{media:?}");
    }
}
