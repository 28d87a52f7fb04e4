//! Attacks from the shop LAN on the admin listener: guessing the admin token as a Bearer
//! token, and crowding the owner out with connections that never authenticate.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const ATTACKER_2: [u8; 4] = [127, 0, 0, 3];
const OWNER: [u8; 4] = [127, 0, 0, 4];

#[tokio::test]
async fn wrong_bearer_tokens_are_rate_limited_per_address() {
    let server = TestServer::start().await;
    let get = |from, token: &str| {
        let auth = format!("Bearer {token}");
        let admin = server.admin;
        async move { request_from_ip(from, admin, Method::GET, "/api/v1/health", &[("authorization", &auth)]).await }
    };
    // A guesser gets a handful of tries, then only 429s, however fast it asks.
    let mut statuses = Vec::new();
    for i in 0..50 {
        statuses.push(get(ATTACKER, &format!("guess-{i:04}-0123456789")).await.status);
    }
    assert!(statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // While limited, even the right token waits (a guess that happens to be right teaches
    // nothing), and the answer says for how long.
    let limited = get(ATTACKER, ADMIN_TOKEN).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    // One budget for the token, whichever way it is guessed: the login form waits too.
    let form = format!("token={ADMIN_TOKEN}");
    let stream = connect_from_ip(ATTACKER, server.admin).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let login = Request::post("/login")
        .header("host", server.admin.to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    assert_eq!(sender.send_request(login).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);

    // The owner on another address is not affected, and neither is its own budget.
    assert_eq!(get(OWNER, ADMIN_TOKEN).await.status, StatusCode::OK);
    assert_eq!(get(OWNER, "typo-0123456789abcdef").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(OWNER, ADMIN_TOKEN).await.status, StatusCode::OK);
}

/// A kept-alive HTTP/1.1 client connection from `from`.
async fn keep_alive_conn(
    from: [u8; 4],
    server: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = connect_from_ip(from, server).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn authed_health(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    server: std::net::SocketAddr,
) -> StatusCode {
    let req = Request::get("/api/v1/health")
        .header("host", server.to_string())
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

/// Opens up to `n` connections from `from` that say nothing, and keeps them.
async fn hold_idle(from: [u8; 4], server: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        // Beyond the accept queue the kernel stops answering SYNs: that is as many as it gets.
        match tokio::time::timeout(Duration::from_secs(1), connect_from_ip(from, server)).await {
            Ok(Ok(conn)) => held.push(conn),
            _ => break,
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_without_credentials_cannot_starve_the_owner() {
    // A header timeout this long means only the admission rules can free the owner a slot.
    let server = TestServer::start_with(|c| c.server.header_timeout_secs = 600).await;
    let mut attackers = hold_idle(ATTACKER, server.admin, 300).await;
    attackers.extend(hold_idle(ATTACKER_2, server.admin, 300).await);
    assert!(attackers.len() > 64, "the attack opened only {} connections", attackers.len());

    // The owner's authenticated request from a third host is answered, and quickly.
    let mut owner = tokio::time::timeout(Duration::from_secs(10), async {
        let mut sender = keep_alive_conn(OWNER, server.admin).await;
        assert_eq!(authed_health(&mut sender, server.admin).await, StatusCode::OK);
        sender
    })
    .await
    .expect("the owner's request was not answered while two hosts held idle connections");

    // Once authenticated, the owner's connection stays (keep-alive) however many more idle
    // connections arrive.
    attackers.extend(hold_idle(ATTACKER, server.admin, 100).await);
    let again = tokio::time::timeout(Duration::from_secs(10), authed_health(&mut owner, server.admin))
        .await
        .expect("the owner's kept-alive connection stopped answering");
    assert_eq!(again, StatusCode::OK);

    // A browser on the login page is served too, one request per connection until it signs in.
    let login =
        tokio::time::timeout(Duration::from_secs(10), request_from_ip(OWNER, server.admin, Method::GET, "/login", &[]))
            .await
            .expect("the login page was not served during the attack");
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.headers["connection"], "close");

    // What the attackers hold is bounded: all but the small share for connections without
    // credentials were closed to make room.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut open = attackers.len();
    while tokio::time::Instant::now() < deadline {
        open = attackers.iter().filter(|c| still_open(c)).count();
        if open <= 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open <= 32, "{open} of {} idle connections still held by the server", attackers.len());
}

/// Whether the server still holds `conn` open (it has sent neither data nor a close).
fn still_open(conn: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(conn.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
