//! `tls.mode = "files"`: the certificate comes from PEM files, is swapped when they change
//! (polled, or at once on SIGHUP), and a bad file is reported by name while the old
//! certificate stays in service.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use callbox::config::TlsMode;
use common::pebble::DOMAIN;
use common::*;
use http::StatusCode;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;

/// A test CA that issues leaf certificates for the shop's name.
struct TestCa {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "files-mode test CA");
        Self { ca: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }
    fn root(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }
    /// (chain PEM, key PEM, serial as the box reports it)
    fn leaf(&self) -> (String, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![DOMAIN.to_string()]).unwrap().signed_by(&key, &self.ca).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        (cert.pem(), key.serialize_pem(), parsed.tbs_certificate.raw_serial_as_string())
    }
}

/// Writes a file the way an installer or certbot hook would: new file, then rename.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn files(chain: &str, key: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("fullchain.pem"), dir.path().join("privkey.pem"));
    replace(&cert_path, chain);
    replace(&key_path, key);
    Files { _dir: dir, cert: cert_path, key: key_path }
}

async fn start(f: &Files, reload_secs: u64) -> Result<TestServer, callbox::tls::TlsError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (cert, key) = (f.cert.clone(), f.key.clone());
    TestServer::start_tls(Arc::new(tempfile::tempdir().unwrap()), listener, move |c| {
        c.tls.mode = TlsMode::Files;
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.tls.reload_interval_secs = reload_secs;
    })
    .await
}

async fn served_serial(server: &TestServer, ca: &TestCa) -> String {
    server.tls_conn(&[ca.root()]).await.unwrap().leaf_serial()
}

// Long on purpose: one certificate's replacements in order, each checked by a new connection.
#[tokio::test]
async fn replaced_files_switch_the_certificate_and_bad_files_keep_the_old_one() {
    let ca = TestCa::new();
    let (chain_a, key_a, serial_a) = ca.leaf();
    let f = files(&chain_a, &key_a);
    let server = start(&f, 1).await.unwrap();
    let mut conn = server.tls_conn(&[ca.root()]).await.unwrap();
    assert_eq!(conn.leaf_serial(), serial_a);
    assert_eq!(conn.leaf_dns_names(), vec![DOMAIN.to_string()]);
    let params = incoming_params("CA00000000000000000000000038303031");
    let reply = server.post_signed_on(&mut conn, "/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // New files on disk: served without a restart.
    let (chain_b, key_b, serial_b) = ca.leaf();
    replace(&f.key, &key_b);
    replace(&f.cert, &chain_b);
    server.wait_tls("the new certificate", |s| s.certificate.as_ref().is_some_and(|c| c.serial == serial_b)).await;
    assert_eq!(served_serial(&server, &ca).await, serial_b);

    // A broken certificate file: the error names it, the good certificate stays.
    replace(&f.cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n");
    let s = server.wait_tls("the reload error", |s| s.last_error.is_some()).await;
    let err = s.last_error.unwrap();
    assert!(err.contains(f.cert.to_str().unwrap()), "{err}");
    assert_eq!(s.certificate.unwrap().serial, serial_b);
    assert_eq!(served_serial(&server, &ca).await, serial_b);
    let health = server.admin_get("/api/v1/health", true).await.json();
    assert_eq!(health["tls_fault"], true, "{health}");
    assert!(health["tls"]["last_error"].as_str().unwrap().contains("fullchain.pem"), "{health}");
    // The bay sees it too: the fault LED state, with the reason.
    let mut lit = None;
    for _ in 0..100 {
        let snap = server.app.indicators.snapshot();
        if snap.output.faults.contains_key(&callbox::indicators::FaultSource::Certificate) {
            lit = Some(snap);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let snap = lit.expect("the certificate fault never reached the indicators");
    assert_eq!(snap.output.state, callbox::indicators::IndicatorState::Fault);

    // A certificate with someone else's key: the key file is named, nothing changes.
    let (chain_c, _, serial_c) = ca.leaf();
    replace(&f.cert, &chain_c);
    let s = server
        .wait_tls("the key mismatch", |s| s.last_error.as_deref().is_some_and(|e| e.contains("privkey.pem")))
        .await;
    assert!(s.last_error.unwrap().contains("does not belong"));
    assert_eq!(served_serial(&server, &ca).await, serial_b);
    assert_ne!(serial_b, serial_c);

    // Fixed: served, and the error is gone.
    replace(&f.cert, &chain_b);
    let (chain_d, key_d, serial_d) = ca.leaf();
    replace(&f.key, &key_d);
    replace(&f.cert, &chain_d);
    let s = server
        .wait_tls("recovery", |s| {
            s.last_error.is_none() && s.certificate.as_ref().is_some_and(|c| c.serial == serial_d)
        })
        .await;
    assert!(!s.fault(jiff::Timestamp::now()));
    assert_eq!(served_serial(&server, &ca).await, serial_d);
    for _ in 0..100 {
        if !server.app.indicators.snapshot().output.faults.contains_key(&callbox::indicators::FaultSource::Certificate)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !server.app.indicators.snapshot().output.faults.contains_key(&callbox::indicators::FaultSource::Certificate),
        "the fault clears once the certificate loads again"
    );
    server.stop().await;
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let ca = TestCa::new();
    let (chain_a, key_a, serial_a) = ca.leaf();
    let f = files(&chain_a, &key_a);
    // Polling effectively off: only the signal can cause the reload.
    let server = start(&f, 3600).await.unwrap();
    assert_eq!(served_serial(&server, &ca).await, serial_a);
    let (chain_b, key_b, serial_b) = ca.leaf();
    replace(&f.key, &key_b);
    replace(&f.cert, &chain_b);
    let status = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
    server.wait_tls("reload on SIGHUP", |s| s.certificate.as_ref().is_some_and(|c| c.serial == serial_b)).await;
    assert_eq!(served_serial(&server, &ca).await, serial_b);
    server.stop().await;
}

#[tokio::test]
async fn bad_pem_at_start_is_refused_naming_the_file() {
    let ca = TestCa::new();
    let (chain, _, _) = ca.leaf();
    let f = files(&chain, "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n");
    let err = start(&f, 1).await.err().unwrap().to_string();
    assert!(err.contains(f.key.to_str().unwrap()), "{err}");
    let f = files("just text\n", "also text\n");
    let err = start(&f, 1).await.err().unwrap().to_string();
    assert!(err.contains(f.cert.to_str().unwrap()) && err.contains("no CERTIFICATE"), "{err}");
}

#[tokio::test]
async fn silent_and_plain_http_clients_are_dropped_without_harm() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = TestCa::new();
    let (chain, key, serial) = ca.leaf();
    let f = files(&chain, &key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (cert, key) = (f.cert.clone(), f.key.clone());
    let server = TestServer::start_tls(Arc::new(tempfile::tempdir().unwrap()), listener, move |c| {
        c.tls.mode = TlsMode::Files;
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.tls.handshake_timeout_secs = 1;
    })
    .await
    .unwrap();
    // A client that connects and never starts the handshake is closed by the server.
    let mut silent = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed, got {n:?}");
    // Plain HTTP on the TLS port gets no HTTP answer, and the listener keeps serving.
    let mut plain = tokio::net::TcpStream::connect(server.public).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), plain.read_to_end(&mut got)).await.unwrap();
    assert!(!got.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(served_serial(&server, &ca).await, serial);
    server.stop().await;
}
