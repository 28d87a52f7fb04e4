//! Cold start and idle memory: how long `callbox serve` takes from exec to listening (TLS in
//! `files` mode with an existing certificate, the call log already on disk), and its resident
//! memory once idle; plus the size of the binary measured.
//!
//!   cargo bench --bench startup -- [RUNS]
//!
//! "Listening" is when the box prints its banner, which it does after binding both listeners,
//! loading the certificate and opening the call log (the moment systemd gets READY=1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::rss_kib;

fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let bin = env!("CARGO_BIN_EXE_callbox");
    let dir = tempfile::tempdir().unwrap();

    // An existing certificate, as on every start but the very first.
    let (config, _) = support::tls_box(dir.path());

    let mut starts = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..runs {
        let begun = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env_remove("CALLBOX_TWILIO_AUTH_TOKEN")
            .env_remove("CALLBOX_ADMIN_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start callbox");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("serve exited before listening").unwrap();
            if line.contains("public listener") {
                break;
            }
        }
        starts.push(begun.elapsed());
        std::thread::spawn(move || for _ in lines {});
        std::thread::sleep(Duration::from_secs(1));
        idle.push(rss_kib(child.id()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        child.wait().unwrap();
    }
    starts.sort();
    idle.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("command: cargo bench --bench startup -- {runs}");
    println!(
        "start to listening (TLS files mode, existing certificate and call log): median {:.1} ms, max {:.1} ms over {runs} runs",
        ms(starts[runs / 2]),
        ms(starts[runs - 1])
    );
    println!("idle RSS 1 s after start: median {} KiB, max {} KiB", idle[runs / 2], idle[runs - 1]);
    println!("binary: {} ({} bytes)", bin, std::fs::metadata(bin).unwrap().len());
}
