//! K concurrent real-time media streams (20 ms frames) into `callbox serve --dev`, every one
//! recording a voicemail, and what the server spends on them: CPU time per frame and memory
//! per stream, read from /proc for the server process alone.
//!
//! `cargo bench --bench media_streams -- [STREAMS] [SECONDS]` (default 200 streams, 10 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const BIN: &str = env!("CARGO_BIN_EXE_callbox");

struct Server {
    child: Child,
    public: String,
    _dir: tempfile::TempDir,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    // CALLBOX_BENCH_BIN: another build of the box (e.g. a symbolized one to profile).
    let bin = std::env::var("CALLBOX_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
    let mut child = Command::new(bin)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut public = None;
    let mut token = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let last = line.split_whitespace().last().unwrap_or("").to_owned();
        if line.contains("public_url:") {
            public = Some(last);
        } else if line.contains("dev Twilio auth token:") {
            token = Some(last);
        }
        if public.is_some() && token.is_some() {
            break;
        }
    }
    Server { child, public: public.unwrap(), _dir: dir, token: token.unwrap() }
}

/// (CPU seconds, resident bytes) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let clk_tck = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    (ticks as f64 / clk_tck, rss_kib * 1024)
}

async fn stream(server: Arc<(String, String)>, n: usize, seconds: u64, frames: Arc<AtomicU64>, ready: Arc<AtomicU64>) {
    let (public, token) = &*server;
    let host = public.trim_start_matches("http://");
    let signed = format!("wss://{host}/api/v1/voice/media-stream");
    let sig = callbox::twilio::signature::compute(token, &signed, &[]);
    let mut req = format!("ws://{host}/api/v1/voice/media-stream").into_client_request().unwrap();
    req.headers_mut().insert("x-twilio-signature", sig.parse().unwrap());
    // From eight loopback addresses, like Twilio's several media servers: the box allows one
    // address `server.max_connections_per_address` (128) connections at most.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1 + (n % 8) as u8], 0))).unwrap();
    let tcp = socket.connect(host.parse().unwrap()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let call = format!("CA{n:032x}");
    let sid = format!("MZ{n:032x}");
    let start = serde_json::json!({"event":"start","sequenceNumber":"1","streamSid":sid,"start":{"streamSid":sid,
        "accountSid":"AC1","callSid":call,"tracks":["inbound"],"customParameters":{},
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    ws.send(Message::text(start.to_string())).await.unwrap();
    let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut chunk = 0u64;
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if t.contains("\"mark\"") => {
                    let name = serde_json::from_str::<serde_json::Value>(&t).unwrap()["mark"]["name"].clone();
                    let echo = serde_json::json!({"event":"mark","streamSid":sid,"mark":{"name":name}});
                    ws.send(Message::text(echo.to_string())).await.unwrap();
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = tick.tick() => {
                if tokio::time::Instant::now() >= end {
                    let stop = serde_json::json!({"event":"stop","streamSid":sid,"stop":{"callSid":call}});
                    let _ = ws.send(Message::text(stop.to_string())).await;
                    let _ = ws.close(None).await;
                    return;
                }
                chunk += 1;
                let m = format!(r#"{{"event":"media","sequenceNumber":"{}","streamSid":"{sid}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}}}}"#, chunk + 1, (chunk - 1) * 20);
                if ws.send(Message::text(m)).await.is_err() { return; }
                frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let k: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let server = start_server();
    let pid = server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, idle_rss) = usage(pid);
    let frames = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let shared = Arc::new((server.public.clone(), server.token.clone()));
    let tasks: Vec<_> =
        (0..k).map(|n| runtime.spawn(stream(shared.clone(), n, seconds + 3, frames.clone(), ready.clone()))).collect();
    // Steady state: every stream past its greeting and recording.
    let wait_start = Instant::now();
    while ready.load(Ordering::Relaxed) < k as u64 && wait_start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, _) = usage(pid);
    let f0 = frames.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, rss) = usage(pid);
    let f1 = frames.load(Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    for t in tasks {
        let _ = runtime.block_on(t);
    }
    let cpu = cpu1 - cpu0;
    let n = (f1 - f0) as f64;
    println!("media_streams: {k} concurrent real-time streams recording, {wall:.1} s measured");
    println!("  frames received by the server: {n:.0} ({:.0}/s; real time would be {}/s)", n / wall, k * 50);
    println!("  server CPU: {cpu:.2} s = {:.1}% of one core; {:.2} µs per frame", 100.0 * cpu / wall, 1e6 * cpu / n);
    println!(
        "  server memory: {:.1} MiB idle, {:.1} MiB with the streams: {:.1} KiB per stream (incl. the 8 KiB WAV write buffer)",
        idle_rss as f64 / 1048576.0,
        rss as f64 / 1048576.0,
        (rss.saturating_sub(idle_rss)) as f64 / 1024.0 / k as f64
    );
}
