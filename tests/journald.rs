//! Under systemd the box logs to journald with structured fields. This runs the real
//! systemd-journald in a private mount namespace (so the host's journal is untouched), hands
//! the server a stderr that looks like the journal stream, and reads the entries back.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use common::*;
use http::StatusCode;

const SCRIPT: &str = r#"
set -euo pipefail
dir="$1"; bin="$2"
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
/lib/systemd/systemd-journald &
jpid=$!
for _ in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
exec 2>"$dir/stderr.txt"
# What systemd sets for a service whose stderr is the journal stream.
JOURNAL_STREAM=$(stat -L -c '%d:%i' /proc/$$/fd/2)
export JOURNAL_STREAM
"$bin" serve --dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$dir/data" &
spid=$!
while [ ! -e "$dir/stop" ]; do sleep 0.05; done
kill -TERM "$spid"; wait "$spid" || true
journalctl -D /run/log/journal --no-pager -o json SYSLOG_IDENTIFIER=callbox > "$dir/journal.json"
kill "$jpid"
"#;

#[tokio::test]
#[ignore = "needs root, unshare and systemd-journald"]
async fn call_events_reach_journald_with_call_fields() {
    require(&[
        Need::Root,
        needs::UNSHARE,
        Need::File("/lib/systemd/systemd-journald", "systemd"),
        Need::Program("journalctl", "systemd"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut child = Command::new("unshare")
        .args(["-m", "bash"])
        .arg(&script)
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_callbox"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The server's stdout is this script's: its start banner says where it listens.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = Banner::read(&mut lines, true);
    std::thread::spawn(move || for _ in lines {});
    let twilio = TwilioClient { public: banner.public(), auth_token: banner.auth_token() };
    let p = [
        ("CallSid", "CA000000000000006a6f75726e616c3031"),
        ("From", "+15035550123"),
        ("To", "+15035550100"),
        ("CallStatus", "ringing"),
    ];
    assert_eq!(twilio.post_signed("/api/v1/webhooks/incoming-call", &p).await.status, StatusCode::OK);
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");

    let journal = std::fs::read_to_string(dir.path().join("journal.json")).unwrap();
    let entries: Vec<serde_json::Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let call = entries
        .iter()
        .find(|e| e["CALL_SID"] == "CA000000000000006a6f75726e616c3031")
        .unwrap_or_else(|| panic!("no entry with CALL_SID in the journal: {journal}"));
    assert_eq!(call["CALL_STATUS"], "ringing");
    assert_eq!(call["CALL_FROM"], "+15035550123");
    // And nothing went to stderr: the journal got it all, natively.
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(!stderr.contains("CA000000000000006a6f75726e616c3031"), "{stderr}");
}
