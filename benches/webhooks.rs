//! Webhook throughput and latency: signed incoming-call requests over keep-alive HTTP/1.1,
//! every one a distinct call that must be on disk before its TwiML answer.
//!
//!   cargo bench --bench webhooks -- [--connections 50] [--seconds 10] [--server-cpu 0] [--tls]
//!
//! The release `callbox serve` runs as a child pinned to one core (`taskset`), this load
//! generator on one thread of its own; figures are printed with the command line. Plain HTTP
//! uses `serve --dev`; `--tls` a TLS `files` box with an existing certificate, over which every
//! connection does one full handshake and then keeps alive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

mod support;
use support::rss_kib;

struct Args {
    connections: usize,
    seconds: u64,
    server_cpu: Option<String>,
    tls: bool,
}

fn args() -> Args {
    let mut a = Args { connections: 50, seconds: 10, server_cpu: Some("0".into()), tls: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--connections" => a.connections = it.next().and_then(|v| v.parse().ok()).expect("--connections N"),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--server-cpu" => a.server_cpu = it.next().filter(|v| v != "none"),
            "--tls" => a.tls = true,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

struct Child {
    child: std::process::Child,
    public: SocketAddr,
    admin: SocketAddr,
    auth: String,
    admin_token: String,
    /// What Twilio signs: the public_url's origin.
    origin: String,
    /// The client side of TLS, when the box serves it.
    tls: Option<tokio_rustls::TlsConnector>,
}

fn spawn_server(dir: &std::path::Path, cpu: Option<&str>, tls: bool) -> Child {
    // CALLBOX_BENCH_BIN: another build of the box (a profiling build, or a wrapper that runs
    // one under a profiler) behind the same load.
    let bin = std::env::var("CALLBOX_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_callbox").to_owned());
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, &bin]);
            c
        }
        None => Command::new(&bin),
    };
    let mut connector = None;
    if tls {
        let (config, cert) = support::tls_box(dir);
        cmd.args(["serve", "--config"]).arg(config);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.into()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        connector = Some(tokio_rustls::TlsConnector::from(Arc::new(client)));
    } else {
        cmd.args(["serve", "--dev", "--data-dir"]).arg(dir);
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .env_remove("CALLBOX_TWILIO_AUTH_TOKEN")
        .env_remove("CALLBOX_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start callbox");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut public, mut admin, mut auth, mut admin_token) = (None, None, None, None);
    if tls {
        (auth, admin_token) = (Some(support::AUTH_TOKEN.to_owned()), Some(support::ADMIN_TOKEN.to_owned()));
    }
    while public.is_none() || admin.is_none() || admin_token.is_none() {
        let line = lines.next().unwrap().unwrap();
        let last =
            line.rsplit(' ').next().unwrap().trim_start_matches("http://").trim_start_matches("https://").to_owned();
        if line.contains("public listener") {
            public = Some(last.parse().unwrap());
        } else if line.contains("admin listener") {
            admin = Some(last.parse().unwrap());
        } else if line.contains("dev Twilio auth token") {
            auth = Some(last);
        } else if line.contains("dev admin token") {
            admin_token = Some(last);
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let public: SocketAddr = public.unwrap();
    let origin =
        if tls { format!("https://{}", support::DOMAIN) } else { format!("http://127.0.0.1:{}", public.port()) };
    Child {
        child,
        public,
        admin: admin.unwrap(),
        auth: auth.unwrap(),
        admin_token: admin_token.unwrap(),
        origin,
        tls: connector,
    }
}

/// Pre-signs `n` distinct incoming calls so the load loop does no HMAC of its own.
fn signed_requests(server: &Child, conn: usize, n: usize) -> Vec<(String, Bytes)> {
    let url = format!("{}/api/v1/webhooks/incoming-call", server.origin);
    (0..n)
        .map(|i| {
            let sid = format!("CA{conn:04}{i:028}");
            let params: Vec<(String, String)> = [
                ("AccountSid", "AC00000000000000000000000000000001"),
                ("ApiVersion", "2010-04-01"),
                ("CallSid", sid.as_str()),
                ("CallStatus", "ringing"),
                ("Direction", "inbound"),
                ("From", "+15035550123"),
                ("To", "+15035550100"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let sig = callbox::twilio::signature::compute(&server.auth, &url, &params);
            let mut body = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &params {
                body.append_pair(k, v);
            }
            (sig, Bytes::from(body.finish()))
        })
        .collect()
}

async fn connection(
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    requests: Vec<(String, Bytes)>,
    until: Instant,
) -> (Vec<Duration>, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut tx = match tls {
        None => {
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            tx
        }
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(support::DOMAIN).unwrap();
            let stream = connector.connect(name, stream).await.unwrap();
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            tx
        }
    };
    let mut latencies = Vec::with_capacity(requests.len());
    let mut errors = 0;
    for (sig, body) in requests {
        if Instant::now() >= until {
            break;
        }
        let req = http::Request::post("/api/v1/webhooks/incoming-call")
            .header("host", support::DOMAIN)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(Full::new(body))
            .unwrap();
        let start = Instant::now();
        let resp = tx.send_request(req).await.unwrap();
        let ok = resp.status() == http::StatusCode::OK;
        resp.into_body().collect().await.unwrap();
        latencies.push(start.elapsed());
        if !ok {
            errors += 1;
        }
    }
    (latencies, errors)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), a.server_cpu.as_deref(), a.tls);
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(server.child.id());
    // Generous headroom: at most 60,000 requests/s per run.
    let per_conn = (60_000 * a.seconds as usize) / a.connections + 1;
    let batches: Vec<Vec<(String, Bytes)>> =
        (0..a.connections).map(|c| signed_requests(&server, c, per_conn)).collect();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (latencies, errors, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let until = start + Duration::from_secs(a.seconds);
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|b| tokio::spawn(connection(server.public, server.tls.clone(), b, until)))
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        (all, errors, start.elapsed())
    });
    let mut sorted = latencies.clone();
    sorted.sort();
    let n = sorted.len();

    // Every answered call must be in the call log.
    let stored = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(server.admin).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/api/v1/health")
            .header("host", server.admin.to_string())
            .header("authorization", format!("Bearer {}", server.admin_token))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let body = tx.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["calls"].as_u64().unwrap()
    });
    let loaded_rss = rss_kib(server.child.id());
    let mut child = server.child;
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "command: cargo bench --bench webhooks -- --connections {} --seconds {} --server-cpu {}{}",
        a.connections,
        a.seconds,
        a.server_cpu.as_deref().unwrap_or("none"),
        if a.tls { " --tls" } else { "" }
    );
    println!(
        "signed incoming-call requests: {n} in {:.2} s = {:.0} req/s ({} non-200)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        errors
    );
    println!(
        "latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&sorted, 0.50).as_secs_f64() * 1e3,
        percentile(&sorted, 0.99).as_secs_f64() * 1e3,
        sorted.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    println!("calls in the log after the run: {stored} (answered: {})", n - errors);
    println!(
        "server RSS: {idle_rss} KiB idle, {loaded_rss} KiB after the run ({:.2} KiB per stored call, sled's cache included)",
        (loaded_rss.saturating_sub(idle_rss)) as f64 / (stored.max(1)) as f64
    );
    assert_eq!(stored as usize, n - errors, "every answered call must be stored");
}
