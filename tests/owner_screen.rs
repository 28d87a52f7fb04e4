//! What the owner's screen relies on, over real HTTP against the real server: the follow-up of
//! each call (heard, called back, a note) kept through a restart, the call-back list, search
//! and paging through the whole log, the chart's numbers, the live feed resuming where a
//! dropped page left it, and sessions that survive a restart, listed and revocable.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

const INCOMING: &str = "/api/v1/webhooks/incoming-call";
const STATUS: &str = "/api/v1/webhooks/call-status";

async fn bearer(server: &TestServer, method: Method, path: &str, json: Option<serde_json::Value>) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![("authorization", auth.as_str())];
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    request(server.admin, method, path, &headers, Bytes::from(body)).await
}

/// A call from `from` (with a caller name) to `line` that nobody answered.
async fn missed(server: &TestServer, sid: &str, from: &str, name: &str, line: &str) {
    let mut params = incoming_params(sid);
    for (k, v) in params.iter_mut() {
        match *k {
            "From" => *v = from.into(),
            "To" => *v = line.into(),
            _ => {}
        }
    }
    params.push(("CallerName", name.into()));
    assert_eq!(server.post_signed(INCOMING, &refs(&params)).await.status, StatusCode::OK);
    let end = [("CallSid", sid), ("CallStatus", "no-answer"), ("From", from), ("To", line), ("SequenceNumber", "1")];
    assert_eq!(server.post_signed(STATUS, &end).await.status, StatusCode::NO_CONTENT);
}

fn sids(reply: &Reply) -> Vec<String> {
    let json = reply.json();
    json["calls"].as_array().unwrap().iter().map(|c| c["call_sid"].as_str().unwrap().to_owned()).collect()
}

async fn waiting(server: &TestServer, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.admin_get("/api/v1/indicators", true).await.json()["messages_waiting"].as_u64();
        if got == Some(n) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "messages_waiting stayed {got:?}, expected {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn step(action: &str) -> serde_json::Value {
    serde_json::json!({ "action": action })
}

// Long on purpose: one voicemail and one missed call followed from arrival to dealt with,
// with a restart in the middle.
#[tokio::test]
async fn every_call_is_followed_up_and_nothing_is_forgotten_across_a_restart() {
    let server = TestServer::start().await;
    missed(&server, "CA00000000000000000000000000007001", "+15035550111", "JANE DOE", "+15035550100").await;
    let vm =
        callbox::simulate::run(&rehearsal(&server, Duration::from_secs(3), None, false, false), false).await.unwrap();
    let voicemail = vm.call_sid.clone();
    let missed_sid = "CA00000000000000000000000000007001";
    let list = bearer(&server, Method::GET, "/api/v1/call-backs", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(sids(&list), [voicemail.as_str(), missed_sid], "newest first");
    waiting(&server, 2).await;

    // Played on the dashboard: the light goes out for it, but the caller still wants a call.
    let path = format!("/api/v1/calls/{voicemail}/follow-up");
    let heard = bearer(&server, Method::POST, &path, Some(step("heard"))).await;
    assert_eq!(heard.status, StatusCode::OK, "{}", heard.text());
    assert!(heard.json()["follow_up"]["heard_at"].is_string());
    waiting(&server, 1).await;
    assert_eq!(sids(&bearer(&server, Method::GET, "/api/v1/call-backs", None).await).len(), 2);
    let note = serde_json::json!({ "action": "note", "note": "Brakes squeal; wants a quote Friday" });
    assert_eq!(bearer(&server, Method::POST, &path, Some(note)).await.status, StatusCode::OK);
    let path_missed = format!("/api/v1/calls/{missed_sid}/follow-up");
    assert_eq!(bearer(&server, Method::POST, &path_missed, Some(step("called-back"))).await.status, StatusCode::OK);
    waiting(&server, 0).await;

    // What the owner typed wrong is named, and nothing is stored for it.
    for (body, status, says) in [
        (step("deleted"), StatusCode::BAD_REQUEST, "unknown action"),
        (serde_json::json!({ "action": "note", "note": "x".repeat(501) }), StatusCode::BAD_REQUEST, "501 characters"),
        (serde_json::json!({ "action": "done", "extra": 1 }), StatusCode::BAD_REQUEST, "unknown field"),
    ] {
        let r = bearer(&server, Method::POST, &path, Some(body)).await;
        assert_eq!(r.status, status);
        assert!(r.text().contains(says), "{}", r.text());
    }
    let unknown = bearer(&server, Method::POST, "/api/v1/calls/CA404/follow-up", Some(step("done"))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(server.admin_get("/api/v1/calls/CA404", true).await.status, StatusCode::NOT_FOUND, "no stub call made");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let form =
        request(server.admin, Method::POST, &path, &[("authorization", &auth)], Bytes::from("action=done")).await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A restart (or a power cut: every answer came after the disk had it) forgets nothing.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    waiting(&server, 0).await;
    let list = bearer(&server, Method::GET, "/api/v1/call-backs", None).await;
    assert_eq!(sids(&list), [voicemail.as_str()], "the called-back one is off the list");
    let call = list.json()["calls"][0].clone();
    assert_eq!(call["follow_up"]["note"], "Brakes squeal; wants a quote Friday");
    let steps: Vec<&str> = call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "owner")
        .map(|e| e["details"]["Action"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["heard", "note"], "the owner's steps are on the call's timeline");
    assert_eq!(bearer(&server, Method::POST, &path, Some(step("done"))).await.status, StatusCode::OK);
    assert!(sids(&bearer(&server, Method::GET, "/api/v1/call-backs", None).await).is_empty());
    // Reopened (the caller never picked up): back on the list, still heard.
    assert_eq!(bearer(&server, Method::POST, &path, Some(step("reopen"))).await.status, StatusCode::OK);
    assert_eq!(sids(&bearer(&server, Method::GET, "/api/v1/call-backs", None).await), [voicemail.as_str()]);
    waiting(&server, 0).await;
}

#[tokio::test]
async fn the_banner_button_marks_every_waiting_call_heard_on_disk() {
    let server = TestServer::start().await;
    for (i, from) in ["+15035550111", "+15035550112", "+15035550113"].iter().enumerate() {
        missed(&server, &format!("CA0000000000000000000000000000710{i}"), from, "", "+15035550100").await;
    }
    waiting(&server, 3).await;
    let r = request(
        server.admin,
        Method::POST,
        "/api/v1/indicators/ack",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["messages_waiting"], 0);
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    waiting(&server, 0).await;
    assert_eq!(
        sids(&bearer(&server, Method::GET, "/api/v1/call-backs", None).await).len(),
        3,
        "heard is not called back"
    );
}

#[tokio::test]
async fn search_filters_and_pages_through_the_whole_log() {
    let server = TestServer::start().await;
    let lines = ["+15035550100", "+15035550200"];
    for i in 0..12u32 {
        let from = format!("+1503555{:04}", 1000 + i);
        let name = if i == 7 { "MIKES TOWING" } else { "" };
        missed(&server, &format!("CA{:032}", 7200 + i), &from, name, lines[(i % 2) as usize]).await;
    }
    // A hang-up among them (ended within a second).
    let params = incoming_params("CA00000000000000000000000000007299");
    assert_eq!(server.post_signed(INCOMING, &refs(&params)).await.status, StatusCode::OK);
    let end = [("CallSid", "CA00000000000000000000000000007299"), ("CallStatus", "completed"), ("SequenceNumber", "1")];
    assert_eq!(server.post_signed(STATUS, &end).await.status, StatusCode::NO_CONTENT);

    let get = |q: &str| {
        let q = q.to_owned();
        let server = &server;
        async move { server.admin_get(&format!("/api/v1/calls?{q}"), true).await }
    };
    assert_eq!(sids(&get("q=503%20555-1007").await), [format!("CA{:032}", 7207)], "digits as digits");
    assert_eq!(sids(&get("q=mikes").await), [format!("CA{:032}", 7207)], "by caller name");
    assert_eq!(sids(&get("outcome=hung-up").await), ["CA00000000000000000000000000007299"]);
    assert_eq!(sids(&get("outcome=missed&line=%2B15035550200").await).len(), 6);
    let today = jiff::Zoned::now().date();
    let range = format!("from={today}&to={today}&outcome=missed");
    assert_eq!(sids(&get(&range).await).len(), 12);
    let before = today.yesterday().unwrap();
    assert!(sids(&get(&format!("from={before}&to={before}")).await).is_empty());

    // Paging: five at a time, newest first, through every missed call, none twice.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(&format!("outcome=missed&limit=5&before={cursor}")).await;
        let json = page.json();
        seen.extend(sids(&page));
        match json["next_before"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..12).rev().map(|i| format!("CA{:032}", 7200 + i)).collect();
    assert_eq!(seen, expected);

    // The export holds what the search shows.
    let csv = server.admin_get("/api/v1/calls.csv?outcome=missed&line=%2B15035550100", true).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.text().lines().count(), 1 + 6, "{}", csv.text());

    for (q, says) in [("outcome=lost", "unknown outcome \"lost\""), ("from=soon", "from/to must be dates")] {
        let r = get(q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.text().contains(says), "{q}: {}", r.text());
    }
    let stats = server.admin_get("/api/v1/stats/daily?days=7", true).await.json();
    let days = stats["days"].as_array().unwrap();
    assert_eq!(days.len(), 7);
    assert_eq!(days[6]["date"], today.to_string());
    assert_eq!((days[6]["calls"].as_u64(), days[6]["missed"].as_u64()), (Some(13), Some(12)));
    assert_eq!(server.admin_get("/api/v1/stats/daily?days=0", true).await.status, StatusCode::BAD_REQUEST);
}

/// An open `GET /api/v1/events`, read as it streams.
struct Feed {
    body: hyper::body::Incoming,
    buffer: String,
    _sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
}

impl Feed {
    async fn open(server: &TestServer, last_event_id: Option<&str>) -> Self {
        let stream = tokio::net::TcpStream::connect(server.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::get("/api/v1/events")
            .header("host", server.admin.to_string())
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = sender.send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Self { body: resp.into_body(), buffer: String::new(), _sender: sender }
    }

    /// The next event, as (id, event name, call SID); comments and `retry:` skipped.
    async fn next(&mut self) -> (Option<String>, String, Option<String>) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned));
                let Some(event) = field("event") else { continue };
                let sid = field("data")
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                    .and_then(|v| v["call_sid"].as_str().map(str::to_owned));
                return (field("id"), event, sid);
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("no event within 10 s")
                .expect("the feed ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn a_dropped_live_feed_resumes_without_losing_a_call() {
    let server = TestServer::start().await;
    let mut feed = Feed::open(&server, None).await;
    missed(&server, "CA00000000000000000000000000007301", "+15035550111", "", "+15035550100").await;
    let (last_id, event, _) = feed.next().await;
    assert_eq!(event, "call");
    let last_id = last_id.expect("every call event has an id");
    // The first call's second event (no-answer) may come before the drop; read past it.
    let (id, _, _) = feed.next().await;
    let last_id = id.unwrap_or(last_id);
    drop(feed);

    // While the page is away (Wi-Fi blip), two more calls come in.
    missed(&server, "CA00000000000000000000000000007302", "+15035550112", "", "+15035550100").await;
    missed(&server, "CA00000000000000000000000000007303", "+15035550113", "", "+15035550100").await;
    let mut feed = Feed::open(&server, Some(&last_id)).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let (_, event, sid) = feed.next().await;
        assert_eq!(event, "call");
        got.push(sid.unwrap());
    }
    got.dedup();
    assert_eq!(got, ["CA00000000000000000000000000007302", "CA00000000000000000000000000007303"]);

    // A position from another run, or made up: the page is told to reload instead.
    for stale in ["0123456789ab-3", "garbage"] {
        let mut feed = Feed::open(&server, Some(stale)).await;
        assert_eq!(feed.next().await.1, "resync", "{stale}");
    }
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut feed = Feed::open(&server, Some(&last_id)).await;
    assert_eq!(feed.next().await.1, "resync", "the box restarted: what it sent before is gone");
}

async fn log_in(server: &TestServer, remember: bool, agent: &str) -> (String, String) {
    let form = format!("token={ADMIN_TOKEN}{}", if remember { "&remember=1" } else { "" });
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("user-agent", agent)];
    let r = request(server.admin, Method::POST, "/login", &headers, Bytes::from(form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = request(server.admin, Method::GET, "/api/v1/session", &[("cookie", &cookie)], Bytes::new()).await.json()
        ["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (set, csrf)
}

#[tokio::test]
async fn a_remembered_device_stays_signed_in_across_a_restart_until_revoked() {
    let server = TestServer::start().await;
    let tablet_ua = "Mozilla/5.0 (Linux; Android 14; SM-X200) AppleWebKit/537.36 Chrome/156.0 Safari/537.36";
    let (tablet, _) = log_in(&server, true, tablet_ua).await;
    assert!(tablet.contains("Max-Age=7776000"), "90 days: {tablet}");
    let (laptop, _) = log_in(&server, false, "Mozilla/5.0 (Windows NT 10.0; Win64) Firefox/140.0").await;
    assert!(!laptop.contains("Max-Age"), "until the browser closes: {laptop}");
    let cookie = |set: &str| set.split(';').next().unwrap().to_owned();
    let (tablet, laptop) = (cookie(&tablet), cookie(&laptop));

    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let addr = server.admin;
    let get = move |c: String| async move {
        request(addr, Method::GET, "/api/v1/sessions", &[("cookie", c.as_str())], Bytes::new()).await
    };
    let listed = get(tablet.clone()).await;
    assert_eq!(listed.status, StatusCode::OK, "the tablet is still signed in after the restart");
    let sessions = listed.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    let tablet_entry = sessions.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(tablet_entry["device"], "Chrome on Android from 127.0.0.1");
    let laptop_entry = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(laptop_entry["device"], "Firefox on Windows from 127.0.0.1");
    let secret = laptop.split_once('=').unwrap().1;
    assert!(!listed.text().contains(secret), "the list never shows a usable session id");

    // Signing the laptop out from the tablet takes the tablet's CSRF token, like any change.
    let target = format!("/api/v1/sessions/{}", laptop_entry["id"].as_str().unwrap());
    let r = request(server.admin, Method::DELETE, &target, &[("cookie", &tablet)], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let csrf = request(server.admin, Method::GET, "/api/v1/session", &[("cookie", &tablet)], Bytes::new()).await.json()
        ["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let headers = [("cookie", tablet.as_str()), ("x-csrf-token", csrf.as_str())];
    assert_eq!(
        request(server.admin, Method::DELETE, &target, &headers, Bytes::new()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get(laptop.clone()).await.status, StatusCode::UNAUTHORIZED, "the laptop is signed out");
    assert_eq!(
        request(server.admin, Method::DELETE, &target, &headers, Bytes::new()).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(tablet.clone()).await.status, StatusCode::OK);
}
