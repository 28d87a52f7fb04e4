//! The command line as an installer and an owner use it: `check` and `calls`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use http::StatusCode;

fn callbox() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callbox"));
    c.env_remove("CALLBOX_TWILIO_AUTH_TOKEN").env_remove("CALLBOX_ADMIN_TOKEN").env_remove("RUST_LOG");
    c
}

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbox.toml");
    std::fs::write(&path, config).unwrap();
    let out = callbox().arg("check").arg("--config").arg(&path).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

const GOOD: &str = r#"
public_url = "https://shop.example.com"
[admin]
token = "owner-secret-0123456789"
[twilio]
auth_token = "9f86d081884c7d659a2feaa0c55ad015"
[storage]
dir = "/var/lib/callbox"
"#;

#[test]
fn check_accepts_a_good_config_and_redacts_secrets() {
    let (code, out, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("public_url = \"https://shop.example.com\""), "{out}");
    assert!(!out.contains("9f86d081884c7d659a2feaa0c55ad015") && !out.contains("owner-secret-0123456789"), "{out}");
    assert!(out.contains("<redacted>"));
}

#[test]
fn check_names_each_problem_in_one_line_and_exits_1() {
    let placeholder = GOOD.replace("https://shop.example.com", "https://your-domain.ngrok.io");
    let no_token = GOOD.replace("auth_token = \"9f86d081884c7d659a2feaa0c55ad015\"", "");
    let malformed = GOOD.replace("[storage]", "[storage");
    let no_url = GOOD.replace("public_url = \"https://shop.example.com\"", "");
    for (config, must_name) in [
        (placeholder.as_str(), "public_url"),
        (no_token.as_str(), "twilio.auth_token"),
        (malformed.as_str(), "callbox.toml"),
        (no_url.as_str(), "public_url"),
    ] {
        let (code, out, err) = check(config);
        assert_eq!(code, 1, "{must_name}: {out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.starts_with("error: ") && err.contains(must_name), "{must_name}: {err}");
        if must_name != "callbox.toml" {
            assert_eq!(err.trim_end().lines().count(), 1, "one clear line: {err}");
        }
    }
    // The environment supplies the token just as well.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &no_token).unwrap();
    let out = callbox()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("CALLBOX_TWILIO_AUTH_TOKEN", "3c59dc048e8850243be8079a5c74d079")
        .output()
        .unwrap();
    assert!(out.status.success());
    // A missing file names the file.
    let out = callbox().args(["check", "--config", "/nonexistent/callbox.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/callbox.toml"));
}

/// The `error:` lines of a failed check, and the keys they name.
fn error_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn check_reports_every_problem_at_once_each_naming_its_key() {
    // A fresh card with three different mistakes: one round of edits must be enough.
    let three = GOOD
        .replace("https://shop.example.com", "https://your-domain.example")
        .replace("9f86d081884c7d659a2feaa0c55ad015", "abc")
        .replace("[storage]", "[log]\nlevel = \"loud\"\n[storage]");
    let (code, out, err) = check(&three);
    assert_eq!(code, 1, "{out}{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 3, "one line per problem: {err}");
    for (line, key) in lines.iter().zip(["public_url", "twilio.auth_token", "log.level"]) {
        assert!(line.starts_with("error: config key `") && line.contains(key), "{key}: {err}");
    }
    // `serve` refuses with the same list (and the config exit status).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbox.toml");
    std::fs::write(&path, &three).unwrap();
    let out = callbox().arg("serve").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["public_url", "twilio.auth_token", "log.level"] {
        assert!(err.lines().any(|l| l.starts_with("error: ") && l.contains(key)), "{key}: {err}");
    }
}

#[test]
fn check_refuses_template_and_malformed_secrets() {
    for (from, to, key, says) in [
        ("9f86d081884c7d659a2feaa0c55ad015", "abc", "twilio.auth_token", "32 hexadecimal"),
        ("9f86d081884c7d659a2feaa0c55ad015", "your-twilio-auth-token", "twilio.auth_token", "32 hexadecimal"),
        ("9f86d081884c7d659a2feaa0c55ad015", "00000000000000000000000000000000", "twilio.auth_token", "32 hexadecimal"),
        ("owner-secret-0123456789", "CHANGE-ME-CHANGE-ME", "admin.token", "template"),
        ("owner-secret-0123456789", "your-admin-token-here", "admin.token", "template"),
        ("owner-secret-0123456789", "xxxxxxxxxxxxxxxxxxxx", "admin.token", "template"),
        ("owner-secret-0123456789", "…", "admin.token", "16 characters"),
    ] {
        let (code, out, err) = check(&GOOD.replace(from, to));
        assert_eq!(code, 1, "{to}: {out}{err}");
        assert!(err.contains(key) && err.contains(says), "{to}: {err}");
    }
    // The shipped template, unedited, is refused for each value still to fill in, and so is
    // the README's example contact.
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/image/callbox.toml.template")).unwrap();
    let (code, _, err) = check(&template);
    assert_eq!(code, 1);
    for key in ["public_url", "admin.token", "twilio.auth_token"] {
        assert!(error_lines(&err).iter().any(|l| l.contains(key)), "{key}: {err}");
    }
    let readme_contact =
        GOOD.replace("[storage]", "[tls]\nmode = \"acme\"\n[tls.acme]\ncontact = \"owner@your-shop.com\"\n[storage]");
    let (code, _, err) = check(&readme_contact);
    assert_eq!(code, 1);
    assert!(err.contains("tls.acme.contact"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_shows_the_same_log_with_the_service_running_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinServer::spawn_dev(dir.path());
    for (sid, from) in
        [("CA00000000000000000000000038303030", "+15035550111"), ("CA00000000000000000000000038303031", "+15035550122")]
    {
        let p = [("CallSid", sid), ("From", from), ("To", "+15035550100"), ("CallStatus", "ringing")];
        assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &p).await.status, StatusCode::OK);
    }
    let p = [
        ("CallSid", "CA00000000000000000000000038303030"),
        ("CallStatus", "completed"),
        ("SequenceNumber", "3"),
        ("CallDuration", "42"),
    ];
    assert_eq!(server.post_signed("/api/v1/webhooks/call-status", &p).await.status, StatusCode::NO_CONTENT);

    let admin_url = format!("http://{}", server.admin);
    let run = |json: bool| {
        let mut c = callbox();
        c.args(["calls", "--dev", "--data-dir"]).arg(dir.path()).args(["--admin-url", &admin_url]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let live_json = run(true);
    let live_table = run(false);
    // While the service runs, the store is locked: the answer came through the admin API.
    assert!(
        live_table.contains("CA00000000000000000000000038303030")
            && live_table.contains("completed")
            && live_table.contains("42"),
        "{live_table}"
    );
    let lines: Vec<&str> = live_table.lines().collect();
    assert!(lines[1].contains("CA00000000000000000000000038303031"), "newest first: {live_table}");

    assert!(server.terminate().success(), "clean exit on SIGTERM");
    let stopped_json = run(true);
    let stopped_table = run(false);
    assert_eq!(live_json, stopped_json);
    assert_eq!(live_table, stopped_table);
    let parsed: serde_json::Value = serde_json::from_str(&stopped_json).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
}

#[test]
fn calls_with_a_wrong_admin_token_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinServer::spawn_dev(dir.path());
    let out = callbox()
        .args(["calls", "--dev", "--data-dir"])
        .arg(dir.path())
        .args(["--admin-url", &format!("http://{}", server.admin)])
        .env("CALLBOX_ADMIN_TOKEN", "not-the-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("admin.token"), "{err}");
}

#[test]
fn serve_with_a_bad_config_exits_78_so_systemd_does_not_restart_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbox.toml");
    std::fs::write(&path, GOOD.replace("https://shop.example.com", "https://your-domain.example")).unwrap();
    let out = callbox().arg("serve").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_url"));
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/callbox.service")).unwrap();
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=78"));
}

#[test]
fn indicate_fault_uses_the_pins_of_a_broken_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbox.toml");
    // The rest of the file is unusable, the [indicators] table is fine.
    std::fs::write(&path, "public_url = \"https://your-domain.example\"\n[indicators]\nleds = \"sim\"\nfault = { pins = [5], pattern = \"blink\", period_ms = 200 }\n").unwrap();
    let mut child = callbox()
        .args(["indicate", "fault", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says when the pattern shows; until then there is nothing to stop.
    let mut err = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    while !err.contains("showing the fault pattern (simulated)") {
        let read = std::io::BufRead::read_line(&mut stderr, &mut err).unwrap();
        assert!(read > 0, "it ended without showing the fault: {err}");
    }
    assert!(child.try_wait().unwrap().is_none(), "it keeps showing the fault until stopped");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {err}");
}

/// `callbox serve --config FILE` on loopback port 0, killed on drop.
struct ConfiguredBox {
    child: std::process::Child,
    public: std::net::SocketAddr,
}

impl ConfiguredBox {
    fn start(config: &std::path::Path) -> Self {
        use std::io::BufRead as _;
        let mut child = callbox()
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let public = common::Banner::read(&mut lines, false).public();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, public }
    }
}

impl Drop for ConfiguredBox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn simulate_call_rehearses_against_the_boxs_own_config() {
    // The box as installed behind a TLS-terminating tunnel: it checks signatures against
    // https://shop.example.com while the installer reaches it on loopback.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callbox.toml");
    let config = GOOD.replace("/var/lib/callbox", &dir.path().join("data").display().to_string())
        + "[indicators]\nleds = \"sim\"\nspeaker = \"sim\"\n";
    std::fs::write(&path, config).unwrap();
    let server = ConfiguredBox::start(&path);
    let url = format!("http://{}", server.public);

    let out = callbox()
        .args(["simulate-call", "--fast", "--seconds", "0.5", "--dtmf", "#@0.4", "--url", &url, "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let transcript = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("wss://shop.example.com/api/v1/voice/media-stream"), "{transcript}");
    assert!(transcript.contains("completed"), "{transcript}");

    // The same token signed over the loopback URL is what Twilio would never send: refused.
    let out = callbox()
        .args(["simulate-call", "--fast", "--seconds", "0.5", "--url", &url, "--auth-token"])
        .arg("9f86d081884c7d659a2feaa0c55ad015")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
}
