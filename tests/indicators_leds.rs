//! The indicators through the real server: Twilio webhooks in over HTTP, simulated GPIO pin
//! levels out, checked over time; the admin API shows and acknowledges.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use callbox::config::{LedConfig, LedPatternKind, LineToneConfig};
use callbox::indicators::IndicatorState;
use common::*;
use http::{Method, StatusCode};
use tokio::time::Instant;

const READY: u8 = 17;
const INCOMING: u8 = 27;
const ACTIVE: u8 = 22;
const WAITING: u8 = 23;
const BLINK_MS: u64 = 400;
const DOUBLE_BLINK_MS: u64 = 800;
/// Scheduling slack allowed on each edge (the server runs on a real clock, on a shared machine).
const TOLERANCE_MS: i64 = 80;

async fn server() -> TestServer {
    let led = |pin, pattern, period_ms| LedConfig { pins: vec![pin], pattern, period_ms, many_pattern: None };
    let server = TestServer::start_with(|c| {
        c.indicators.ready = led(READY, LedPatternKind::Solid, 1000);
        c.indicators.incoming = led(INCOMING, LedPatternKind::Blink, BLINK_MS);
        c.indicators.active = led(ACTIVE, LedPatternKind::Solid, 1000);
        c.indicators.message_waiting = led(WAITING, LedPatternKind::DoubleBlink, DOUBLE_BLINK_MS);
        c.indicators.active_low = true;
        // The number `incoming_params` calls gets its own ring.
        c.indicators.line_tones.push(LineToneConfig {
            to: "+15035550100".into(),
            name: "service".into(),
            frequencies: vec![480.0, 620.0],
            cadence_ms: vec![1000, 1000],
            volume: 0.4,
        });
    })
    .await;
    let mut rx = server.app.indicators.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.running)).await.unwrap().unwrap();
    server
}

/// Waits (bounded) until the indicators publish a snapshot that `done` accepts.
async fn wait_snapshot(server: &TestServer, what: &str, done: impl Fn(&callbox::indicators::Snapshot) -> bool) {
    let mut rx = server.app.indicators.subscribe();
    let seen = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| done(s))).await;
    assert!(
        seen.is_ok_and(|r| r.is_ok()),
        "the indicators never showed {what}: {:?}",
        server.app.indicators.snapshot()
    );
}

/// Changes of `pin` since `from`, as (ms after `from`, electrical level).
fn changes(server: &TestServer, pin: u8, from: Instant) -> Vec<(i64, bool)> {
    server
        .app
        .indicators
        .pin_log()
        .changes()
        .into_iter()
        .filter(|c| c.pin == pin && c.at >= from)
        .map(|c| (c.at.duration_since(from).as_millis() as i64, c.high))
        .collect()
}

async fn status(server: &TestServer, sid: &str, status: &str, seq: &str) {
    let params = [
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("CallSid", sid),
        ("CallStatus", status),
        ("SequenceNumber", seq),
    ];
    let reply = server.post_signed("/api/v1/webhooks/call-status", &params).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
}

async fn indicators(server: &TestServer) -> serde_json::Value {
    let reply = server.admin_get("/api/v1/indicators", true).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

fn pin_json(snapshot: &serde_json::Value, pin: u8) -> serde_json::Value {
    snapshot["leds"]["pins"].as_array().unwrap().iter().find(|p| p["pin"] == pin).unwrap().clone()
}

#[tokio::test]
async fn an_incoming_call_blinks_its_pin_then_the_call_ends_and_ready_returns() {
    let server = server().await;
    // Active-low wiring: a lit LED is a low pin.
    let idle = indicators(&server).await;
    assert_eq!(idle["state"], "ready");
    assert_eq!(pin_json(&idle, READY)["level"], "low");
    assert_eq!(pin_json(&idle, INCOMING)["level"], "high");

    let start = Instant::now();
    let params = incoming_params("CA00000000000000000000000000000001");
    let reply = server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_snapshot(&server, "the incoming call", |s| s.output.state == IndicatorState::Incoming).await;
    // Not a synchronising sleep: the blink is what is measured, over five of its periods.
    tokio::time::sleep(Duration::from_millis(5 * BLINK_MS + BLINK_MS / 4)).await;

    let during = indicators(&server).await;
    assert_eq!(during["state"], "incoming");
    assert_eq!(during["incoming_calls"], 1);
    assert_eq!(during["tone"]["playing"], true);
    assert_eq!(during["tone"]["name"], "service", "the called line picks the tone");
    assert_eq!(pin_json(&during, INCOMING)["pattern"], format!("blink {BLINK_MS} ms"));

    // The blink: low (lit) first, then a level change every half period.
    let blink = changes(&server, INCOMING, start);
    assert!(blink.len() >= 9, "{blink:?}");
    let first = blink[0].0;
    for (i, (at, high)) in blink.iter().enumerate() {
        assert_eq!(*high, i % 2 == 1, "levels alternate, lit first: {blink:?}");
        let expected = first + i as i64 * (BLINK_MS as i64 / 2);
        assert!((at - expected).abs() <= TOLERANCE_MS, "edge {i} at {at} ms, expected {expected} ms: {blink:?}");
    }
    assert_eq!(changes(&server, READY, start), [(first, true)], "ready goes dark as the call arrives");

    let end = Instant::now();
    status(&server, "CA00000000000000000000000000000001", "completed", "5").await;
    wait_snapshot(&server, "ready and silent after the call", |s| {
        s.output.state == IndicatorState::Ready && !s.tone.playing
    })
    .await;
    let after = indicators(&server).await;
    assert_eq!((after["state"].as_str(), after["tone"]["playing"].as_bool()), (Some("ready"), Some(false)));
    let tail = changes(&server, INCOMING, end);
    assert!(tail.len() <= 1 && tail.iter().all(|(_, high)| *high), "incoming pin dark after the call: {tail:?}");
    assert_eq!(changes(&server, READY, end).last().map(|c| c.1), Some(false), "ready lit again");
}

#[tokio::test]
async fn a_missed_call_waits_until_acknowledged_through_the_admin_api() {
    let server = server().await;
    let sid = "CA00000000000000000000000000000002";
    let params = incoming_params(sid);
    server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await;
    status(&server, sid, "no-answer", "3").await;
    wait_snapshot(&server, "the message waiting", |s| s.output.state == IndicatorState::MessageWaiting).await;
    // The double blink is what is measured, over two of its periods.
    let watched = Duration::from_millis(2 * DOUBLE_BLINK_MS + DOUBLE_BLINK_MS / 4);
    tokio::time::sleep(watched).await;
    let snapshot = indicators(&server).await;
    assert_eq!(snapshot["state"], "message-waiting");
    assert_eq!(snapshot["messages_waiting"], 1);
    // Double-blink 800 ms on an active-low pin: low 100, high 100, low 100, high 500.
    let log = changes(&server, WAITING, Instant::now() - watched);
    let lows: Vec<i64> = log.iter().filter(|c| !c.1).map(|c| c.0).collect();
    assert!(lows.len() >= 3, "{log:?}");
    // Flashes start a quarter period apart within a pair, three quarters between pairs.
    let (quarter, three_quarters) = (DOUBLE_BLINK_MS as i64 / 4, 3 * DOUBLE_BLINK_MS as i64 / 4);
    let short: Vec<bool> = lows
        .windows(2)
        .map(|w| {
            let gap = w[1] - w[0];
            let near = |expected: i64| (gap - expected).abs() <= TOLERANCE_MS;
            assert!(near(quarter) || near(three_quarters), "gap {gap} ms: {log:?}");
            gap < DOUBLE_BLINK_MS as i64 / 2
        })
        .collect();
    assert!(short.windows(2).all(|w| w[0] != w[1]), "pairs of flashes: {log:?}");

    let refused = server.admin_request(Method::GET, "/api/v1/indicators/ack").await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    let unauthorised = request(server.admin, Method::POST, "/api/v1/indicators/ack", &[], bytes::Bytes::new()).await;
    assert_eq!(unauthorised.status, StatusCode::UNAUTHORIZED);
    let acked = server.admin_request(Method::POST, "/api/v1/indicators/ack").await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.text());
    let acked = acked.json();
    assert_eq!((acked["state"].as_str(), acked["messages_waiting"].as_u64()), (Some("ready"), Some(0)));
    assert_eq!(server.app.indicators.snapshot().output.state, IndicatorState::Ready);
    assert_eq!(pin_json(&acked, WAITING)["lit"], false);
}
