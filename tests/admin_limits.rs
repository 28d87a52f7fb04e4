//! Attacks from the shop LAN on the admin listener: guessing the admin token as a Bearer
//! token.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
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
