//! Business hours over real HTTP: while open a call rings the front desk first and comes to
//! the box only when nobody picks up; while closed it goes straight to the after-hours flow.
//! Which branch each call took, and why, is on the call. (The open/closed rules themselves,
//! with a fixed clock and the edges, are unit tests in `src/config/hours.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;

use callbox::config::Config;

const INCOMING: &str = "/api/v1/webhooks/incoming-call";
const DIAL_RESULT: &str = "/api/v1/webhooks/dial-result";
const STATUS: &str = "/api/v1/webhooks/call-status";
const FRONT_DESK: &str = "+15035550142";

fn every_day(c: &mut Config, hours: &str) {
    c.twilio.front_desk = Some(FRONT_DESK.into());
    c.twilio.goodbye = Some("We are closed now. Goodbye.".into());
    for day in [
        &mut c.hours.mon,
        &mut c.hours.tue,
        &mut c.hours.wed,
        &mut c.hours.thu,
        &mut c.hours.fri,
        &mut c.hours.sat,
        &mut c.hours.sun,
    ] {
        *day = Some(hours.into());
    }
    c.hours.front_desk_ring_secs = 25;
}

/// The top-level verbs of a TwiML answer, and the document.
fn verbs(xml: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.root_element().children().filter(|n| n.is_element()).map(|n| n.tag_name().name().to_owned()).collect()
}

fn stream_params(xml: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let stream = doc.descendants().find(|n| n.has_tag_name("Stream")).unwrap();
    stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| (n.attribute("name").unwrap().to_owned(), n.attribute("value").unwrap().to_owned()))
        .collect()
}

fn dial_result(call_sid: &str, status: &str) -> Vec<(&'static str, String)> {
    let mut p = incoming_params(call_sid);
    p.retain(|(k, _)| *k != "CallStatus");
    p.push(("CallStatus", "in-progress".into()));
    p.push(("DialCallStatus", status.into()));
    p.push(("DialCallSid", "CA99999999999999999999999999999999".into()));
    p
}

async fn route_of(server: &TestServer, call_sid: &str) -> (String, String) {
    let call = server.admin_get(&format!("/api/v1/calls/{call_sid}"), true).await.json();
    let incoming = call["events"].as_array().unwrap().iter().find(|e| e["source"] == "incoming-call").unwrap().clone();
    (
        incoming["details"]["Route"].as_str().unwrap_or_default().to_owned(),
        incoming["details"]["RouteReason"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn open_rings_the_front_desk_then_the_box_takes_what_nobody_answers() {
    let server = TestServer::start_with(|c| every_day(c, "00:00-24:00")).await;
    let call = "CA00000000000000000000000000006001";
    let reply = server.post_signed(INCOMING, &refs(&incoming_params(call))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let xml = reply.text();
    assert_eq!(verbs(&xml), ["Dial"], "{xml}");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let dial = doc.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
    assert_eq!(dial.text(), Some(FRONT_DESK));
    assert_eq!(dial.attribute("timeout"), Some("25"));
    assert_eq!(dial.attribute("action"), Some(server.signed_url(DIAL_RESULT).as_str()));
    assert_eq!(dial.attribute("callerId"), None, "the front desk sees the caller's own number");
    let (route, reason) = route_of(&server, call).await;
    assert_eq!(route, "front-desk");
    assert!(reason.starts_with("open: "), "{reason}");

    // Nobody picks up: the box's own flow, told the shop is open, with no second <Dial>.
    let reply = server.post_signed(DIAL_RESULT, &refs(&dial_result(call, "no-answer"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let xml = reply.text();
    assert_eq!(verbs(&xml), ["Connect", "Say", "Hangup"], "{xml}");
    assert!(stream_params(&xml).contains(&("Hours".into(), "open".into())), "{xml}");
    let record = server.admin_get(&format!("/api/v1/calls/{call}"), true).await.json();
    let dial = record["events"].as_array().unwrap().iter().find(|e| e["source"] == "dial-result").unwrap().clone();
    assert_eq!(dial["details"]["DialCallStatus"], "no-answer");

    // Unsigned or unreadable dial results are refused like every webhook.
    let forged = server.post_form(DIAL_RESULT, &refs(&dial_result(call, "completed")), None).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let mut odd = dial_result(call, "completed");
    odd.retain(|(k, _)| *k != "DialCallStatus");
    odd.push(("DialCallStatus", "picked-up-maybe".into()));
    assert_eq!(server.post_signed(DIAL_RESULT, &refs(&odd)).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_call_the_front_desk_answered_is_theirs() {
    let server = TestServer::start_with(|c| every_day(c, "00:00-24:00")).await;
    let call = "CA00000000000000000000000000006002";
    server.post_signed(INCOMING, &refs(&incoming_params(call))).await;
    let reply = server.post_signed(DIAL_RESULT, &refs(&dial_result(call, "completed"))).await;
    assert_eq!(verbs(&reply.text()), ["Hangup"]);
    let end = [("CallSid", call), ("CallStatus", "completed"), ("CallDuration", "95"), ("SequenceNumber", "3")];
    assert_eq!(server.post_signed(STATUS, &end).await.status, StatusCode::NO_CONTENT);
    let record = server.admin_get(&format!("/api/v1/calls/{call}"), true).await.json();
    assert_eq!(record["outcome"], "front-desk", "{record:#}");
}

#[tokio::test]
async fn closed_goes_straight_to_the_after_hours_flow_and_says_why() {
    let server = TestServer::start_with(|c| every_day(c, "closed")).await;
    let call = "CA00000000000000000000000000006003";
    let xml = server.post_signed(INCOMING, &refs(&incoming_params(call))).await.text();
    assert_eq!(verbs(&xml), ["Connect", "Say", "Hangup"], "no front desk after hours: {xml}");
    assert!(stream_params(&xml).contains(&("Hours".into(), "closed".into())), "{xml}");
    let (route, reason) = route_of(&server, call).await;
    assert_eq!(route, "box");
    assert!(reason.starts_with("closed: "), "{reason}");

    // A closed date wins over opening hours.
    let today = jiff::Zoned::now().date();
    let server = TestServer::start_with(|c| {
        every_day(c, "00:00-24:00");
        c.hours.closed_dates = vec![today, today.tomorrow().unwrap()];
    })
    .await;
    let call = "CA00000000000000000000000000006004";
    let xml = server.post_signed(INCOMING, &refs(&incoming_params(call))).await.text();
    assert_eq!(verbs(&xml)[0], "Connect", "{xml}");
    let (_, reason) = route_of(&server, call).await;
    assert!(reason.ends_with("is a closed date"), "{reason}");
}

#[tokio::test]
async fn without_hours_every_call_comes_to_the_box_as_before() {
    let server = TestServer::start_with(|c| c.twilio.front_desk = Some(FRONT_DESK.into())).await;
    let call = "CA00000000000000000000000000006005";
    let xml = server.post_signed(INCOMING, &refs(&incoming_params(call))).await.text();
    assert_eq!(verbs(&xml), ["Connect", "Dial"], "{xml}");
    assert!(!stream_params(&xml).iter().any(|(k, _)| k == "Hours"));
    assert_eq!(route_of(&server, call).await, (String::new(), String::new()));
}

#[tokio::test]
async fn after_hours_callers_hear_the_after_hours_greeting_and_flow() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("closed.wav");
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for i in 0..8000u32 {
        w.write_sample(((i as f32 * 0.3).sin() * 6000.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    for (hours, greeting_secs) in [("closed", 1.0), ("00:00-24:00", 0.0)] {
        let server = TestServer::start_with(|c| {
            every_day(c, hours);
            c.media.after_hours_greeting_wav = Some(wav.clone());
        })
        .await;
        let opts = rehearsal(&server, std::time::Duration::from_millis(500), None, false, false);
        // While open the front desk rings first; nobody picks up, and the box's open-hours
        // greeting (the built-in prompt) plays.
        let summary = callbox::simulate::run(&opts, false).await.unwrap();
        let call = server.app.calls.store().get(&summary.call_sid).unwrap().unwrap();
        if greeting_secs > 0.0 {
            assert_eq!(summary.box_audio_bytes, 8000, "{hours}: the after-hours greeting, 1 s");
        } else {
            assert_ne!(summary.box_audio_bytes, 8000, "{hours}: the usual greeting");
            assert!(call.events.iter().any(|e| e.detail("DialCallStatus") == Some("no-answer")), "{call:#?}");
        }
        assert_eq!(call.outcome, callbox::calls::Outcome::HungUp, "a 0.5 s message, over in seconds");
    }
}

#[tokio::test]
async fn simulate_call_follows_the_front_desk() {
    let server = TestServer::start_with(|c| every_day(c, "00:00-24:00")).await;
    let opts = rehearsal(&server, std::time::Duration::from_secs(1), None, false, true);
    let summary = callbox::simulate::run(&opts, false).await.unwrap();
    assert!(summary.stream_sid.is_empty(), "no stream: the front desk had it");
    let call = server.app.calls.store().get(&summary.call_sid).unwrap().unwrap();
    assert_eq!(call.outcome, callbox::calls::Outcome::FrontDesk, "{call:#?}");
}
