//! ACME end to end against Debian's Pebble on loopback: a real certificate through each
//! challenge type, checked by a real TLS client trusting only Pebble's issuing root; restart
//! reuse; renewal with hot swap; a CA outage. The tests that need Pebble (Debian package
//! `pebble`) are ignored by a plain `cargo test`; `.ci/run` installs it and runs them.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use callbox::config::{AcmeChallenge, Config, TlsMode};
use common::pebble::{DOMAIN, Pebble, PebbleOpts};
use common::*;
use http::StatusCode;
use tokio::net::TcpListener;

fn acme_config(pebble: &Pebble, challenge: AcmeChallenge, http_port: u16) -> impl Fn(&mut Config) + Clone + use<> {
    let directory = pebble.directory();
    let roots = pebble.directory_roots();
    move |c: &mut Config| {
        c.tls.mode = TlsMode::Acme;
        c.tls.acme.directory = directory.clone();
        c.tls.acme.directory_roots = Some(roots.clone());
        c.tls.acme.contact = Some("owner@shop.example.test".into());
        c.tls.acme.challenge = challenge;
        c.tls.acme.http_listen = ([127, 0, 0, 1], http_port).into();
        c.tls.acme.retry_initial_secs = 1;
        c.tls.acme.retry_max_secs = 8;
    }
}

/// A signed incoming call over the TLS connection is answered with TwiML.
async fn incoming_call_over(server: &TestServer, conn: &mut TlsConn, sid: &str) {
    let params = incoming_params(sid);
    let reply = server.post_signed_on(conn, "/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.text().contains("<Stream"), "{}", reply.text());
}

// Long on purpose: one certificate's life: issued, served, kept across a restart.
#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn tls_alpn_01_certificate_is_served_and_reused_after_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble =
        Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 7_776_000, eab: false })
            .await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server =
        TestServer::start_tls(dir.clone(), listener, acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0)).await.unwrap();
    let status = server.wait_tls("first certificate", |s| s.certificate.is_some()).await;
    assert_eq!(status.failures, 0);
    assert!(status.last_error.is_none(), "{status:?}");

    let root = pebble.issuing_root().await;
    let mut conn = server.tls_conn(std::slice::from_ref(&root)).await.unwrap();
    assert!(conn.peer_chain.len() >= 2, "leaf plus Pebble's intermediate");
    assert_eq!(conn.leaf_dns_names(), vec![DOMAIN.to_string()]);
    let serial = conn.leaf_serial();
    assert_eq!(Some(serial.clone()), status.certificate.as_ref().map(|c| c.serial.clone()));
    incoming_call_over(&server, &mut conn, "CA00000000000000000000000000007001").await;

    // The media stream over the same listener, as wss:// with the same certificate: the box
    // greets the caller.
    let mut caller = twilio_ws::Caller::new(
        server.wss_connect(std::slice::from_ref(&root)).await,
        "CA00000000000000000000000000007001",
    );
    caller.start("+15035550100").await;
    let (greeting, _mark) = caller.greeting().await;
    assert!(!greeting.is_empty());
    caller.stop().await;

    // Admin health shows the certificate state.
    let health = server.admin_get("/api/v1/health", true).await.json();
    assert_eq!(health["tls"]["mode"], "acme");
    assert_eq!(health["tls"]["certificate"]["serial"], serial.as_str());
    assert_eq!(health["tls_fault"], false);

    // Files: 0600 in a 0700 directory.
    let tls_dir = dir.path().join("tls");
    assert_eq!(std::fs::metadata(&tls_dir).unwrap().permissions().mode() & 0o777, 0o700);
    for f in ["account.json", "cert.pem", "key.pem", "state.json"] {
        let mode = std::fs::metadata(tls_dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    drop(conn);
    let issued = pebble.issued();
    assert_eq!(issued, 1, "{}", pebble.log());
    let dir = server.stop().await;

    // Restart on the same data: the stored certificate and account are used, no new order.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server =
        TestServer::start_tls(dir.clone(), listener, acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0)).await.unwrap();
    let status = server.wait_tls("stored certificate", |s| s.certificate.is_some() && s.next_attempt.is_some()).await;
    assert_eq!(status.certificate.unwrap().serial, serial);
    let mut conn = server.tls_conn(&[root]).await.unwrap();
    assert_eq!(conn.leaf_serial(), serial);
    incoming_call_over(&server, &mut conn, "CA00000000000000000000000037303032").await;
    assert_eq!(pebble.issued(), issued, "no new certificate after restart:\n{}", pebble.log());
    assert_eq!(pebble.orders(), 1, "no new order after restart:\n{}", pebble.log());
    assert_eq!(pebble.accounts(), 1, "the stored account is reused:\n{}", pebble.log());
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn http_01_certificate_is_served_and_port_80_redirects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let http_port = free_port();
    let pebble =
        Pebble::start(PebbleOpts { tls_port: free_port(), http_port, validity_secs: 7_776_000, eab: false }).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server =
        TestServer::start_tls(dir, listener, acme_config(&pebble, AcmeChallenge::Http01, http_port)).await.unwrap();
    let status = server.wait_tls("first certificate", |s| s.certificate.is_some()).await;
    assert!(status.last_error.is_none(), "{status:?}");
    assert!(pebble.log().contains("Starting 3 validations"), "{}", pebble.log());

    let root = pebble.issuing_root().await;
    let mut conn = server.tls_conn(&[root]).await.unwrap();
    assert_eq!(conn.leaf_dns_names(), vec![DOMAIN.to_string()]);
    incoming_call_over(&server, &mut conn, "CA00000000000000000000000037313031").await;

    // Port 80 answers only challenges; everything else goes to https.
    let http_addr = ([127, 0, 0, 1], http_port).into();
    let reply =
        request(http_addr, http::Method::GET, "/api/v1/webhooks/incoming-call?x=1", &[], Default::default()).await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("https://{DOMAIN}:{port}/api/v1/webhooks/incoming-call?x=1")
    );
    let reply =
        request(http_addr, http::Method::GET, "/.well-known/acme-challenge/nope", &[], Default::default()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn renewal_serves_new_certificate_to_new_connections_and_keeps_open_ones() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // 12-second certificates renewed with 70% of the lifetime left: a renewal every few seconds.
    let pebble =
        Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 12, eab: false }).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let base = acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0);
    let server = TestServer::start_tls(dir, listener, |c| {
        base(c);
        c.tls.acme.renew_remaining = 0.7;
    })
    .await
    .unwrap();
    let first = server.wait_tls("first certificate", |s| s.certificate.is_some()).await.certificate.unwrap();
    let root = pebble.issuing_root().await;
    let mut open = server.tls_conn(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!(open.leaf_serial(), first.serial);
    incoming_call_over(&server, &mut open, "CA00000000000000000000000000007201").await;
    // A media stream open across the renewal.
    let mut caller = twilio_ws::Caller::new(
        server.wss_connect(std::slice::from_ref(&root)).await,
        "CA00000000000000000000000000007201",
    );
    caller.start("+15035550100").await;
    caller.through_greeting().await;

    let renewed = server
        .wait_tls("a renewal", |s| s.certificate.as_ref().is_some_and(|c| c.serial != first.serial))
        .await
        .certificate
        .unwrap();
    assert!(renewed.not_after > first.not_after);
    let fresh = server.tls_conn(&[root]).await.unwrap();
    assert_ne!(fresh.leaf_serial(), first.serial, "new connections get the renewed certificate");
    // The connection opened before the renewal is still up and still served, and so is the
    // WebSocket: it still takes audio, and `#` still ends the message as usual.
    incoming_call_over(&server, &mut open, "CA00000000000000000000000037323032").await;
    assert_eq!(open.leaf_serial(), first.serial);
    caller.media(&twilio_ws::test_audio(10)).await;
    caller.dtmf("#").await;
    assert_eq!(caller.closed().await, Some(tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal));
    assert!(pebble.issued() >= 2);
    server.stop().await;
}

// Long on purpose: one outage in order: CA up, down, back, and what the box does at each step.
#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn ca_outage_keeps_serving_backs_off_and_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut pebble =
        Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 3600, eab: false }).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let base = acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0);
    let server = TestServer::start_tls(dir.clone(), listener, |c| {
        base(c);
        // Renewal due about two seconds after issuance.
        c.tls.acme.renew_remaining = 0.9995;
        c.tls.acme.retry_max_secs = 4;
    })
    .await
    .unwrap();
    let first = server.wait_tls("first certificate", |s| s.certificate.is_some()).await.certificate.unwrap();
    let old_root = pebble.issuing_root().await;
    pebble.stop_pebble();

    // Each failure schedules the next try further out; the certificate stays in service.
    let mut delays = Vec::new();
    for n in 1..=3u32 {
        let s = server.wait_tls("a failed renewal", |s| s.failures == n).await;
        let delay = s.next_attempt.unwrap().duration_since(s.last_attempt.unwrap());
        delays.push(delay);
        assert!(s.last_error.as_deref().unwrap().contains("ACME"), "{s:?}");
        assert_eq!(s.certificate.as_ref().unwrap().serial, first.serial);
        let conn = server.tls_conn(std::slice::from_ref(&old_root)).await.unwrap();
        assert_eq!(conn.leaf_serial(), first.serial);
    }
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "growing delays: {delays:?}");
    let health = server.admin_get("/api/v1/health", true).await.json();
    assert_eq!(health["tls_fault"], true, "{health}");
    assert!(health["tls"]["failures"].as_u64().unwrap() >= 3, "{health}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("tls/state.json")).unwrap()).unwrap();
    assert!(state["failures"].as_u64().unwrap() >= 3, "backoff state is on disk: {state}");

    // A restart during the outage keeps the backoff: the schedule comes from disk.
    let on_disk_next = state["next_attempt"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let dir = server.stop().await;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("tls/state.json")).unwrap()).unwrap();
    let failures = state["failures"].as_u64().unwrap();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = TestServer::start_tls(dir.clone(), listener, |c| {
        base(c);
        c.tls.acme.renew_remaining = 0.9995;
        c.tls.acme.retry_max_secs = 4;
    })
    .await
    .unwrap();
    let s = server.app.tls.status().borrow().clone();
    assert_eq!(u64::from(s.failures), failures, "failures survive the restart");
    assert!(s.next_attempt.unwrap() >= on_disk_next, "no attempt before the stored backoff ends");
    assert_eq!(s.certificate.as_ref().unwrap().serial, first.serial, "stored certificate served at once");

    // The CA comes back (with new roots and no memory of the account): the box recovers.
    pebble.start_pebble().await;
    let s = server
        .wait_tls("recovery", |s| s.failures == 0 && s.certificate.as_ref().is_some_and(|c| c.serial != first.serial))
        .await;
    assert!(s.last_error.is_none());
    let new_root = pebble.issuing_root().await;
    let mut conn = server.tls_conn(&[new_root]).await.unwrap();
    incoming_call_over(&server, &mut conn, "CA00000000000000000000000037333031").await;
    assert_eq!(server.admin_get("/api/v1/health", true).await.json()["tls_fault"], false);
    server.stop().await;
}

/// Debian's Pebble has no ARI (RFC 9773), so this stands in front of its directory: `/dir` is
/// Pebble's directory plus a `renewalInfo` URL served here. The first certificate asked about
/// gets a window in the past (renew now), every other one a window 10–11 days ahead.
struct FakeAri {
    url: String,
    ca_pem: String,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    window_ahead: (jiff::Timestamp, jiff::Timestamp),
}

// Long on purpose: the whole stand-in CA directory with its ARI endpoint in one place.
async fn fake_ari(mut directory: serde_json::Value) -> FakeAri {
    use hyper::service::service_fn;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fake ARI test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap().signed_by(&key, &ca).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    directory["renewalInfo"] = serde_json::Value::String(format!("{url}/renewal-info"));
    let directory = Arc::new(directory.to_string());
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let now = jiff::Timestamp::now();
    let ahead = (now + jiff::SignedDuration::from_hours(240), now + jiff::SignedDuration::from_hours(264));
    let past = (now - jiff::SignedDuration::from_hours(2), now - jiff::SignedDuration::from_hours(1));
    let asked_srv = asked.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, directory, asked) = (acceptor.clone(), directory.clone(), asked_srv.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    let mut builder = http::Response::builder();
                    let body = if path == "/dir" {
                        directory.to_string()
                    } else if let Some(id) = path.strip_prefix("/renewal-info/") {
                        let mut asked = asked.lock().unwrap();
                        if !asked.contains(&id.to_owned()) {
                            asked.push(id.to_owned());
                        }
                        let (start, end) = if asked[0] == id { past } else { ahead };
                        builder = builder.header("retry-after", "3600");
                        serde_json::json!({"suggestedWindow": {"start": start.to_string(), "end": end.to_string()}})
                            .to_string()
                    } else {
                        builder = builder.status(404);
                        String::new()
                    };
                    let resp = builder
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    FakeAri { url, ca_pem: ca.pem(), asked, window_ahead: ahead }
}

#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn ari_window_triggers_early_renewal_and_schedules_inside_the_window() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble =
        Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 7_776_000, eab: false })
            .await;
    let (status, body) = pebble.get(pebble.acme_port, "/dir").await.unwrap();
    assert_eq!(status, 200);
    let ari = fake_ari(serde_json::from_slice(&body).unwrap()).await;
    // Extra roots for the directory: Pebble's HTTPS CA and the fake's, in one PEM file.
    let roots = pebble.work.path().join("roots-with-fake.pem");
    let mut pem = std::fs::read_to_string(pebble.directory_roots()).unwrap();
    pem.push_str(&ari.ca_pem);
    std::fs::write(&roots, pem).unwrap();

    let dir = Arc::new(tempfile::tempdir().unwrap());
    let base = acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0);
    let directory = format!("{}/dir", ari.url);
    let server = TestServer::start_tls(dir, listener, |c| {
        base(c);
        c.tls.acme.directory = directory;
        c.tls.acme.directory_roots = Some(roots);
    })
    .await
    .unwrap();
    let first = server.wait_tls("first certificate", |s| s.certificate.is_some()).await.certificate.unwrap();
    // A 90-day certificate is nowhere near 1/3 of its lifetime, yet the CA's window says now.
    let renewed = server
        .wait_tls("an ARI-driven renewal", |s| s.certificate.as_ref().is_some_and(|c| c.serial != first.serial))
        .await
        .certificate
        .unwrap();
    // Issued within a second of the first one: same or later end of validity.
    assert!(renewed.not_after >= first.not_after);

    // The CA was asked about the first certificate by its RFC 9773 id (AKI "." serial).
    let asked = ari.asked.lock().unwrap().clone();
    use base64::Engine as _;
    let serial_part = asked[0].split_once('.').unwrap().1;
    let serial_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(serial_part).unwrap();
    let hex: Vec<String> = serial_bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex.join(":"), first.serial.to_ascii_lowercase());

    // The renewed certificate's window lies ahead: the next order is planned inside it.
    let s = server
        .wait_tls("renewal planned from ARI", |s| {
            s.next_attempt.is_some_and(|t| t > ari.window_ahead.0 - jiff::SignedDuration::from_secs(1))
        })
        .await;
    let at = s.next_attempt.unwrap();
    assert!(at >= ari.window_ahead.0 && at <= ari.window_ahead.1, "{at} not in {:?}", ari.window_ahead);
    assert_eq!(ari.asked.lock().unwrap().len(), 2, "both certificates were looked up");
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn external_account_binding_is_sent_when_the_ca_requires_it() {
    use callbox::config::Secret;
    use common::pebble::{EAB_HMAC_KEY, EAB_KID};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble =
        Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 7_776_000, eab: true }).await;
    let base = acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0);

    // Without the binding the CA refuses the account, and the box says so.
    let server = TestServer::start_tls(Arc::new(tempfile::tempdir().unwrap()), listener, |c| base(c)).await.unwrap();
    let s = server.wait_tls("the refusal", |s| s.failures >= 1).await;
    assert!(s.last_error.as_deref().unwrap().contains("externalAccountRequired"), "{s:?}");
    assert!(s.certificate.is_none());
    server.stop().await;

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = TestServer::start_tls(Arc::new(tempfile::tempdir().unwrap()), listener, |c| {
        base(c);
        c.tls.acme.eab_kid = Some(EAB_KID.into());
        c.tls.acme.eab_hmac_key = Secret::new(EAB_HMAC_KEY);
    })
    .await
    .unwrap();
    server.wait_tls("a certificate with EAB", |s| s.certificate.is_some()).await;
    let root = pebble.issuing_root().await;
    let mut conn = server.tls_conn(&[root]).await.unwrap();
    incoming_call_over(&server, &mut conn, "CA00000000000000000000000037343031").await;
    server.stop().await;
}

// Long on purpose: one installer's sequence: a bad setting, the backoff, the fix, the retry.
#[tokio::test]
#[ignore = "needs pebble (a real ACME CA)"]
async fn a_corrected_config_or_retry_now_is_not_held_back_by_the_old_backoff() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble =
        Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 7_776_000, eab: false })
            .await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let base = acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0);
    let wrong = format!("https://127.0.0.1:{}/nope", pebble.acme_port);
    // A failure earns an hour's wait, kept on disk.
    let failing = |retry_now: bool| {
        let (base, wrong) = (base.clone(), wrong.clone());
        move |c: &mut Config| {
            base(c);
            c.tls.acme.directory = wrong;
            c.tls.acme.retry_initial_secs = 3600;
            c.tls.acme.retry_max_secs = 3600;
            c.tls.acme.retry_now = retry_now;
        }
    };

    // A directory URL that is not one says so, not "invalid type: integer 404".
    let server = TestServer::start_tls(dir.clone(), listener, failing(false)).await.unwrap();
    let s = server.wait_tls("the first failure", |s| s.failures == 1).await;
    let error = s.last_error.unwrap();
    assert!(error.contains(&format!("no ACME directory at {wrong} (HTTP 404)")), "{error}");
    let first_attempt = s.last_attempt.unwrap();
    let dir = server.stop().await;

    // `serve --acme-retry-now`: the stored hour is forgotten, the box tries again at once.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = TestServer::start_tls(dir.clone(), listener, failing(true)).await.unwrap();
    let s = server
        .wait_tls("an immediate retry, failed", |s| {
            s.failures == 1 && s.last_attempt.is_some_and(|t| t > first_attempt)
        })
        .await;
    assert!(s.last_error.is_some(), "{s:?}");
    let dir = server.stop().await;

    // The owner fixes the directory and restarts: the backoff earned by the wrong URL is
    // reset, and the certificate comes now rather than in an hour.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = TestServer::start_tls(dir.clone(), listener, |c| {
        base(c);
        c.tls.acme.retry_initial_secs = 3600;
        c.tls.acme.retry_max_secs = 3600;
    })
    .await
    .unwrap();
    let s = server.wait_tls("a certificate from the corrected directory", |s| s.certificate.is_some()).await;
    assert_eq!(s.failures, 0);
    let dir = server.stop().await;

    // Someone loosened the key while debugging: the next start puts it back to 0600.
    let tls_dir = dir.path().join("tls");
    for f in ["key.pem", "account.json"] {
        std::fs::set_permissions(tls_dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = TestServer::start_tls(dir.clone(), listener, base.clone()).await.unwrap();
    for f in ["key.pem", "account.json"] {
        let mode = std::fs::metadata(tls_dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    server.stop().await;
}

/// Accepts any server certificate: to talk to a box that serves an expired one.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `GET /healthz` on the box's TLS listener, whatever certificate it serves.
async fn public_health(addr: std::net::SocketAddr) -> Reply {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/healthz")
        .header("host", DOMAIN)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    Reply { status, headers, body }
}

#[tokio::test]
async fn an_expired_certificate_still_served_makes_health_degraded() {
    // The stored certificate ran out while the box could not renew (here: no CA at all).
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 4, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(tls_dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(tls_dir.join("key.pem"), key.serialize_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TestServer::start_tls(dir, listener, |c| {
        c.tls.mode = TlsMode::Acme;
        c.tls.acme.directory = format!("https://127.0.0.1:{}/dir", free_port());
        c.tls.acme.retry_initial_secs = 3600;
        c.tls.acme.retry_max_secs = 3600;
    })
    .await
    .unwrap();
    let s = server.wait_tls("the stored certificate", |s| s.certificate.is_some()).await;
    assert!(s.expired(jiff::Timestamp::now()));
    let reply = public_health(server.public).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    assert_eq!(reply.json()["status"], "degraded");
    assert_eq!(server.admin_get("/api/v1/health", true).await.json()["tls_fault"], true);
    server.stop().await;
}
