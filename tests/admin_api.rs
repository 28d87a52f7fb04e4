//! The owner's admin API: token required, newest first, paging.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

#[tokio::test]
async fn call_data_needs_the_admin_token() {
    let server = TestServer::start().await;
    let params = incoming_params("CA00000000000000000000000037303030");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);

    for path in ["/api/v1/calls", "/api/v1/calls/CA00000000000000000000000037303030", "/api/v1/health"] {
        let reply = server.admin_get(path, false).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(reply.headers.contains_key("www-authenticate"));
        for (i, bad) in
            ["Bearer wrong-token", "Basic dGVzdA==", "Bearer ", &format!("bearer{ADMIN_TOKEN}")].iter().enumerate()
        {
            // Each from its own address: wrong tokens are rate-limited per address (admin_limits.rs).
            let from = [127, 0, 1, 10 + i as u8];
            let r = request_from_ip(from, server.admin, Method::GET, path, &[("authorization", bad)]).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} with {bad:?}");
        }
        // The public listener never serves it, token or not.
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let r = request(server.public, Method::GET, path, &[("authorization", &auth)], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path} on the public listener");
    }
    let call = server.admin_get("/api/v1/calls/CA00000000000000000000000037303030", true).await;
    assert_eq!(call.status, StatusCode::OK);
    assert_eq!(call.json()["from"], "+15035550123");
    assert_eq!(
        server.admin_get("/api/v1/calls/CA00000000000000000000000039393939", true).await.status,
        StatusCode::NOT_FOUND
    );
    let health = server.admin_get("/api/v1/health", true).await.json();
    assert_eq!(health["calls"], 1);
}

#[tokio::test]
async fn calls_are_listed_newest_first_with_paging() {
    let server = TestServer::start().await;
    for i in 0..7 {
        let sid = format!("CA71{i:030}");
        let params = incoming_params(&sid);
        assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
    }
    let page = server.admin_get("/api/v1/calls?limit=3", true).await.json();
    let sids: Vec<&str> = page["calls"].as_array().unwrap().iter().map(|c| c["call_sid"].as_str().unwrap()).collect();
    assert_eq!(
        sids,
        [
            "CA71000000000000000000000000000006",
            "CA71000000000000000000000000000005",
            "CA71000000000000000000000000000004"
        ]
    );
    assert_eq!(page["next_before"], "CA71000000000000000000000000000004");
    let page = server.admin_get("/api/v1/calls?limit=3&before=CA71000000000000000000000000000004", true).await.json();
    let sids: Vec<&str> = page["calls"].as_array().unwrap().iter().map(|c| c["call_sid"].as_str().unwrap()).collect();
    assert_eq!(
        sids,
        [
            "CA71000000000000000000000000000003",
            "CA71000000000000000000000000000002",
            "CA71000000000000000000000000000001"
        ]
    );
    let page = server.admin_get("/api/v1/calls?limit=3&before=CA71000000000000000000000000000001", true).await.json();
    assert_eq!(page["calls"].as_array().unwrap().len(), 1);
    assert!(page["next_before"].is_null());
    for bad in ["limit=0", "limit=abc", "limit=100000"] {
        assert_eq!(
            server.admin_get(&format!("/api/v1/calls?{bad}"), true).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}
