//! Twilio webhooks over real HTTP against the real server.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;

#[tokio::test]
async fn incoming_call_answers_with_stream_twiml() {
    let server = TestServer::start().await;
    let params = incoming_params("CA0001");
    let reply = server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let doc = reply.text();
    let parsed = roxmltree::Document::parse(&doc).unwrap();
    let stream = parsed.descendants().find(|n| n.has_tag_name("Stream")).unwrap();
    assert_eq!(stream.parent().unwrap().tag_name().name(), "Connect");
    assert!(stream.attribute("url").unwrap().starts_with("wss://127.0.0.1:"));
}
