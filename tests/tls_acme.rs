//! ACME end to end against Debian's Pebble on loopback: a real certificate through each
//! challenge type, checked by a real TLS client trusting only Pebble's issuing root; restart
//! reuse; renewal with hot swap; a CA outage.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use callbox::config::{AcmeChallenge, Config, TlsMode};
use common::pebble::{DOMAIN, Pebble, PebbleOpts, free_port};
use common::*;
use http::StatusCode;
use tokio::net::TcpListener;

fn acme_config(pebble: &Pebble, challenge: AcmeChallenge, http_port: u16) -> impl FnOnce(&mut Config) + use<> {
    let directory = pebble.directory();
    let roots = pebble.directory_roots();
    move |c: &mut Config| {
        c.tls.mode = TlsMode::Acme;
        c.tls.acme.directory = directory;
        c.tls.acme.directory_roots = Some(roots);
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

#[tokio::test]
async fn tls_alpn_01_certificate_is_served_and_reused_after_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble = Pebble::start(PebbleOpts { tls_port: port, http_port: free_port(), validity_secs: 7_776_000 }).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server =
        TestServer::start_tls(dir.clone(), listener, acme_config(&pebble, AcmeChallenge::TlsAlpn01, 0)).await.unwrap();
    let status = server.wait_tls("first certificate", |s| s.certificate.is_some()).await;
    assert_eq!(status.failures, 0);
    assert!(status.last_error.is_none(), "{status:?}");

    let root = pebble.issuing_root().await;
    let mut conn = server.tls_conn(&[root.clone()]).await.unwrap();
    assert!(conn.peer_chain.len() >= 2, "leaf plus Pebble's intermediate");
    assert_eq!(conn.leaf_dns_names(), vec![DOMAIN.to_string()]);
    let serial = conn.leaf_serial();
    assert_eq!(Some(serial.clone()), status.certificate.as_ref().map(|c| c.serial.clone()));
    incoming_call_over(&server, &mut conn, "CA7001").await;

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
    incoming_call_over(&server, &mut conn, "CA7002").await;
    assert_eq!(pebble.issued(), issued, "no new certificate after restart:\n{}", pebble.log());
    assert_eq!(pebble.orders(), 1, "no new order after restart:\n{}", pebble.log());
    assert_eq!(pebble.accounts(), 1, "the stored account is reused:\n{}", pebble.log());
    server.stop().await;
}
