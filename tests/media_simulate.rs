//! `callbox simulate-call` against `callbox serve --dev`, both as real processes, and the
//! calls it places as `callbox calls` shows them.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::BinServer;

const BIN: &str = env!("CARGO_BIN_EXE_callbox");

/// `callbox serve --dev` on ephemeral ports (the box under test, see `common::box_program`),
/// killed on drop.
struct DevBox {
    _server: BinServer,
    dir: tempfile::TempDir,
    public_url: String,
    admin_url: String,
}

impl DevBox {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = BinServer::spawn_dev(&dir.path().join("data"));
        // The dev box's public_url is its bound loopback port.
        let public_url = format!("http://127.0.0.1:{}", server.public.port());
        let admin_url = format!("http://{}", server.admin);
        Self { _server: server, dir, public_url, admin_url }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn simulate(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["simulate-call", "--dev", "--data-dir"])
            .arg(self.data_dir())
            .args(["--url", &self.public_url, "--stream-url"])
            .arg(format!("{}/api/v1/voice/media-stream", self.public_url.replacen("http://", "ws://", 1)))
            .args(extra)
            .env_remove("CALLBOX_TWILIO_AUTH_TOKEN");
        cmd
    }

    fn calls_json(&self) -> Vec<serde_json::Value> {
        let out = Command::new(BIN)
            .args(["calls", "--dev", "--json", "--limit", "100", "--data-dir"])
            .arg(self.data_dir())
            .args(["--admin-url", &self.admin_url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn recording_of(data: &Path, call: &serde_json::Value) -> PathBuf {
    let stream = &call["stream"];
    assert_eq!(stream["outcome"], "message", "{call:#}");
    data.join(stream["recording"]["path"].as_str().unwrap())
}

#[test]
fn a_simulated_call_completes_and_shows_in_the_call_log_with_its_recording() {
    let dev = DevBox::start();
    let saved = dev.dir.path().join("box.wav");
    let out = dev.simulate(&["--seconds", "1", "--dtmf", "#@0.8", "--save"]).arg(&saved).output().unwrap();
    let transcript = text(&out);
    assert!(out.status.success(), "{transcript}");
    for step in ["incoming call", "greeting", "dtmf #", "box closed the stream: 1000", "completed"] {
        assert!(transcript.contains(step), "missing {step:?} in:\n{transcript}");
    }
    // What the box played was saved: its built-in prompt.
    assert!(hound::WavReader::open(&saved).unwrap().len() > 0);

    let calls = dev.calls_json();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["status"], "completed");
    assert_eq!(calls[0]["stream"]["dtmf"], "#");
    let wav = recording_of(&dev.data_dir(), &calls[0]);
    let len = hound::WavReader::open(&wav).unwrap().len();
    assert!((6_000..=8_000).contains(&len), "about 0.8 s recorded before #: {len}");

    // The table an installer reads names the recording too.
    let table = Command::new(BIN)
        .args(["calls", "--dev", "--data-dir"])
        .arg(dev.data_dir())
        .args(["--admin-url", &dev.admin_url])
        .output()
        .unwrap();
    let table = text(&table);
    assert!(table.contains("voicemail flow: message, recording recordings/"), "{table}");
}

#[test]
fn simulate_call_fails_on_a_wrong_token_or_an_unreachable_box() {
    let dev = DevBox::start();
    let out = dev.simulate(&["--fast", "--auth-token", "not-the-token"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("403"), "{}", text(&out));
    let out = Command::new(BIN)
        .args(["simulate-call", "--url", "http://127.0.0.1:9", "--auth-token", "x", "--fast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("cannot reach"), "{}", text(&out));
}

#[test]
fn fifty_concurrent_fast_calls_all_complete_with_recordings() {
    let dev = DevBox::start();
    let children: Vec<Child> = (0..50)
        .map(|_| {
            dev.simulate(&["--fast", "--quiet", "--seconds", "1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let calls = dev.calls_json();
    assert_eq!(calls.len(), 50);
    for call in &calls {
        assert_eq!(call["status"], "completed", "{call:#}");
        let wav = recording_of(&dev.data_dir(), call);
        assert_eq!(hound::WavReader::open(&wav).unwrap().len(), 8000, "{}", wav.display());
    }
}
