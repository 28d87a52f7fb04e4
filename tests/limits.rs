//! Connection-level limits: a client that sends nothing cannot hold a connection slot.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn silent_and_half_sent_requests_are_dropped_after_the_header_timeout() {
    let server = TestServer::start_with(|c| {
        c.server.header_timeout_secs = 1;
        c.server.max_connections = 2;
    })
    .await;
    // Two clients take both slots: one says nothing, one sends half a request head.
    let mut silent = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.public).await.unwrap();
    slow.write_all(b"POST /api/v1/webhooks/call-status HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for conn in [&mut silent, &mut slow] {
        let mut buf = Vec::new();
        // The server closes them (with or without a 408); generous bound, not a timing assertion.
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection still held open after the header timeout");
    }
    // Their slots are free again: a real request is served.
    let params = incoming_params("CA7500");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
}
