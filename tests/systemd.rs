//! The systemd side: the unit's hardening score, `systemd-analyze verify`, and socket
//! activation with sd_notify READY/WATCHDOG/STOPPING (via `systemd-socket-activate`, which
//! does what PID 1 does for a socket unit, without needing systemd as init).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn service_unit_exposure_is_at_most_1_5() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=15"])
        .arg(repo("systemd/callbox.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for callbox.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 1.5, "exposure {score} > 1.5");
    assert!(out.status.success(), "--threshold=15 failed: {text}");
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo("systemd/callbox.service")).unwrap();
    let unit = unit.replace("/usr/bin/callbox", env!("CARGO_BIN_EXE_callbox"));
    std::fs::write(dir.path().join("callbox.service"), unit).unwrap();
    std::fs::copy(repo("systemd/callbox.socket"), dir.path().join("callbox.socket")).unwrap();
    for name in ["callbox.service", "callbox.socket"] {
        let out =
            Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(dir.path().join(name)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Lines about other units on this machine are not ours to fix.
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("callbox")).collect();
        assert!(out.status.success() && ours.is_empty(), "{name}: {err}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Collects sd_notify datagrams until `want` has been seen (or 20 s pass).
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if seen.iter().any(|m| m.lines().any(|l| l == want)) {
            return true;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_with_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let program = box_program();
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .args(["-E", "WATCHDOG_USEC=400000", "-E", "RUST_LOG=info"])
        .args(&program)
        .args([
            "serve",
            "--dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");

    // systemd-socket-activate starts the service on the first connection, which the service
    // then accepts on the socket it was handed: the request is answered.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut connected = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            connected = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connected.expect("systemd-socket-activate never listened");

    let health = request(addr, http::Method::GET, "/healthz", &[], bytes::Bytes::new()).await;
    assert_eq!(health.status, StatusCode::OK);

    let mut seen = Vec::new();
    assert!(wait_for(&notify, &mut seen, "READY=1"), "no READY=1: {seen:?}");

    assert!(wait_for(&notify, &mut seen, "WATCHDOG=1"), "no WATCHDOG=1: {seen:?}");
    let pings_before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    // Listen for a while (the pings keep coming, so bound it by time, not by silence).
    let listen_until = Instant::now() + Duration::from_millis(900);
    let mut buf = [0u8; 4096];
    while Instant::now() < listen_until {
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() > pings_before, "watchdog pings are periodic");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(wait_for(&notify, &mut seen, "STOPPING=1"), "no STOPPING=1: {seen:?}");

    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("using the socket systemd passed"), "{stderr}");
}
