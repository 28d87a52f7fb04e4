//! Twilio webhooks over real HTTP against the real server.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};

const INCOMING: &str = "/api/v1/webhooks/incoming-call";
const STATUS: &str = "/api/v1/webhooks/call-status";

fn stream_of(doc: &roxmltree::Document<'_>) -> (String, Vec<(String, String)>) {
    let stream = doc.descendants().find(|n| n.has_tag_name("Stream")).expect("a <Stream>");
    let params = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| (n.attribute("name").unwrap().to_owned(), n.attribute("value").unwrap().to_owned()))
        .collect();
    (stream.attribute("url").unwrap().to_owned(), params)
}

#[tokio::test]
async fn incoming_call_twiml_structure_and_exact_parameter_round_trip() {
    let server = TestServer::start_with(|c| c.twilio.front_desk = Some("+15035550100".into())).await;
    let from = "Tom & Jerry's \"Auto\" <Repair> é";
    let to = "+1 (503) <555> & 'x'";
    let params =
        [("CallSid", "CA00000000000000000000000030303031"), ("From", from), ("To", to), ("CallStatus", "ringing")];
    for path in [INCOMING, "/api/v1/voice/incoming"] {
        let reply = server.post_signed(path, &params).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/xml"));
        let text = reply.text();
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"), "{text}");
        let doc = roxmltree::Document::parse(&text).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "Response");
        let verbs: Vec<&str> = root.children().filter(|n| n.is_element()).map(|n| n.tag_name().name()).collect();
        assert_eq!(verbs, ["Connect", "Dial"], "the front desk is dialled after the stream ends");
        let (url, got) = stream_of(&doc);
        assert_eq!(url, format!("wss://127.0.0.1:{}/api/v1/voice/media-stream", server.public.port()));
        let expected: Vec<(String, String)> =
            [("From", from), ("To", to), ("CallSid", "CA00000000000000000000000030303031")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(got, expected);
    }
}

#[tokio::test]
async fn control_characters_never_break_the_xml() {
    let server = TestServer::start().await;
    let params =
        [("CallSid", "CA00000000000000000000000030303032"), ("From", "a\u{1}b\u{0}c\u{1b}[31m"), ("To", "+1\u{7f}5")];
    let reply = server.post_signed(INCOMING, &params).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.text();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let (_, got) = stream_of(&doc);
    assert_eq!(got[0].1, "abc[31m", "characters XML cannot carry are dropped, the rest kept");
    assert_eq!(got[1].1, "+1\u{7f}5");
}

#[tokio::test]
async fn wss_url_follows_every_public_url_form() {
    let cases = [
        ("https://shop.example.com", "wss://shop.example.com/api/v1/voice/media-stream"),
        ("https://shop.example.com/", "wss://shop.example.com/api/v1/voice/media-stream"),
        ("http://shop.example.com", "wss://shop.example.com/api/v1/voice/media-stream"),
        ("shop.example.com", "wss://shop.example.com/api/v1/voice/media-stream"),
        ("shop.example.com/", "wss://shop.example.com/api/v1/voice/media-stream"),
        ("https://shop.example.com:443", "wss://shop.example.com/api/v1/voice/media-stream"),
        ("https://shop.example.com:8443/", "wss://shop.example.com:8443/api/v1/voice/media-stream"),
        ("shop.example.com:8443", "wss://shop.example.com:8443/api/v1/voice/media-stream"),
    ];
    for (public_url, expected) in cases {
        let server = TestServer::start_with(|c| {
            *c = c.clone().with_public_url(callbox::config::PublicUrl::parse(public_url).unwrap());
        })
        .await;
        let reply = server
            .post_signed(INCOMING, &[("CallSid", "CA00000000000000000000000030303033"), ("From", "+1"), ("To", "+2")])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{public_url}: {}", reply.text());
        let text = reply.text();
        let (url, _) = stream_of(&roxmltree::Document::parse(&text).unwrap());
        assert_eq!(url, expected, "{public_url}");
        server.stop().await;
    }
}

#[tokio::test]
async fn every_call_status_is_accepted_and_stored() {
    let server = TestServer::start().await;
    let statuses =
        ["queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"];
    for (i, status) in statuses.iter().enumerate() {
        let sid = format!("CA1{i:031}");
        let seq = "0";
        let reply =
            server.post_signed(STATUS, &[("CallSid", &sid), ("CallStatus", status), ("SequenceNumber", seq)]).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{status}: {}", reply.text());
        let call = server.admin_get(&format!("/api/v1/calls/{sid}"), true).await.json();
        assert_eq!(call["status"], *status);
    }
    // Both the path and the seed's alias.
    let reply = server
        .post_signed(
            "/api/v1/webhooks/twilio/status",
            &[("CallSid", "CA00000000000000000000000032303030"), ("CallStatus", "completed")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn forged_requests_are_refused_with_403() {
    let server = TestServer::start().await;
    let params =
        [("CallSid", "CA00000000000000000000000033303030"), ("CallStatus", "ringing"), ("From", "+15035550123")];
    // Unsigned.
    assert_eq!(server.post_form(STATUS, &params, None).await.status, StatusCode::FORBIDDEN);
    // Garbage signature, and a base64 one of the right length but wrong.
    assert_eq!(server.post_form(STATUS, &params, Some("nope")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.post_form(STATUS, &params, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=")).await.status,
        StatusCode::FORBIDDEN
    );
    // Signed with another token.
    let other = callbox::twilio::signature::compute("another-token", &server.signed_url(STATUS), &owned(&params));
    assert_eq!(server.post_form(STATUS, &params, Some(&other)).await.status, StatusCode::FORBIDDEN);
    // A valid signature re-used with other params (a replayed signature on a forged body).
    let sig = server.sign(STATUS, &params);
    let forged =
        [("CallSid", "CA00000000000000000000000033303030"), ("CallStatus", "completed"), ("From", "+15035550123")];
    assert_eq!(server.post_form(STATUS, &forged, Some(&sig)).await.status, StatusCode::FORBIDDEN);
    // A valid signature for another path or query.
    assert_eq!(server.post_form(INCOMING, &params, Some(&sig)).await.status, StatusCode::FORBIDDEN);
    let sig_q = server.sign(&format!("{STATUS}?x=1"), &params);
    assert_eq!(server.post_form(STATUS, &params, Some(&sig_q)).await.status, StatusCode::FORBIDDEN);
    // Nothing was stored.
    assert_eq!(
        server.admin_get("/api/v1/calls/CA00000000000000000000000033303030", true).await.status,
        StatusCode::NOT_FOUND
    );
    // And the genuine request still works.
    assert_eq!(server.post_form(STATUS, &params, Some(&sig)).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn query_strings_are_signed_as_received() {
    // Twilio hashes the URL exactly as configured in its console, query included (twilio.md §4.8 V3).
    let server = TestServer::start().await;
    let target = format!("{STATUS}?shop=42&leg=a%20b&note=it%27s+ok");
    let params =
        [("CallSid", "CA00000000000000000000000033313030"), ("CallStatus", "completed"), ("CallDuration", "37")];
    let reply = server.post_signed(&target, &params).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    // The same signature over a decoded query does not match.
    let decoded_sig = server.sign(&format!("{STATUS}?shop=42&leg=a b&note=it's ok"), &params);
    assert_eq!(server.post_form(&target, &params, Some(&decoded_sig)).await.status, StatusCode::FORBIDDEN);
}

// Long on purpose: a table of bad requests and the answer each gets, on one server.
#[tokio::test]
async fn bad_requests_get_clear_4xx_and_the_server_carries_on() {
    let server = TestServer::start().await;
    let form = |body: &'static [u8]| async move {
        request(
            server.public,
            Method::POST,
            STATUS,
            &[("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", "x")],
            Bytes::from_static(body),
        )
        .await
    };
    // Missing CallSid, correctly signed.
    let reply = server.post_signed(STATUS, &[("CallStatus", "ringing")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = server.post_signed(INCOMING, &[("From", "+1")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // A CallSid that cannot be one.
    assert_eq!(
        server.post_signed(STATUS, &[("CallSid", "../../etc"), ("CallStatus", "ringing")]).await.status,
        StatusCode::BAD_REQUEST
    );
    // Garbage bytes and bad percent-encoding.
    assert_eq!(form(b"\xff\xfe\x00garbage").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        form(b"CallSid=CA00000000000000000000000000000031&CallStatus=%zz").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(form(b"CallSid=%E2%28%A1").await.status, StatusCode::BAD_REQUEST);
    // 1 MiB body.
    let big = vec![b'a'; 1 << 20];
    let reply = request(
        server.public,
        Method::POST,
        STATUS,
        &[("content-type", "application/x-www-form-urlencoded")],
        Bytes::from(big),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Not a form at all.
    let reply = request(
        server.public,
        Method::POST,
        STATUS,
        &[("content-type", "application/json")],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Wrong method, unknown path.
    assert_eq!(
        request(server.public, Method::GET, STATUS, &[], Bytes::new()).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(request(server.public, Method::GET, "/nope", &[], Bytes::new()).await.status, StatusCode::NOT_FOUND);
    // Call data is never on the public listener.
    assert_eq!(
        request(server.public, Method::GET, "/api/v1/calls", &[], Bytes::new()).await.status,
        StatusCode::NOT_FOUND
    );

    // After all that, a real call is answered normally.
    let params = incoming_params("CA00000000000000000000000034303030");
    assert_eq!(server.post_signed(INCOMING, &refs(&params)).await.status, StatusCode::OK);
    let health = request(server.public, Method::GET, "/healthz", &[], Bytes::new()).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm() {
    let server = TestServer::start().await;
    let huge = "x".repeat(64 * 1024);
    let stream = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(STATUS).header("x-big", huge).body(http_body_util::Full::new(Bytes::new())).unwrap();
    // The server answers 431, or closes the connection: both are refusals.
    if let Ok(resp) = tx.send_request(req).await {
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let params = incoming_params("CA00000000000000000000000034313030");
    assert_eq!(server.post_signed(INCOMING, &refs(&params)).await.status, StatusCode::OK);
}
