//! Missed-call texts end to end: a missed call arrives as Twilio's signed webhooks, the box
//! decides its texts and sends them over real HTTP, to Stoplight Prism serving Twilio's own
//! OpenAPI description (every request must pass its validator) or to a small Twilio of the
//! test's own that answers as told (21610, 429, 500, silence).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use callbox::config::Config;
use callbox::texts::{Kind, Message, State};

const INCOMING: &str = "/api/v1/webhooks/incoming-call";
const STATUS: &str = "/api/v1/webhooks/call-status";
const MESSAGE_STATUS: &str = "/api/v1/webhooks/message-status";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const OWNER: &str = "+15035550199";
const TEXT_BACK: &str = "Sorry we missed your call at Joe's Auto. We'll call you right back!";

fn texts_config(c: &mut Config, api: &str) {
    c.twilio.account_sid = Some(ACCOUNT.into());
    c.twilio.api_base_url = api.into();
    c.twilio.api_timeout_secs = 2;
    c.missed_calls.text_back = Some(TEXT_BACK.into());
    c.missed_calls.notify = vec![OWNER.into()];
}

/// Twilio's webhooks for a call nobody answered: it arrives, then ends with `no-answer`.
async fn missed_call(server: &TestServer, call_sid: &str, from: &str) {
    let mut params = incoming_params(call_sid);
    params.iter_mut().filter(|(k, _)| *k == "From").for_each(|(_, v)| *v = from.into());
    assert_eq!(server.post_signed(INCOMING, &refs(&params)).await.status, StatusCode::OK);
    let end = [
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("CallSid", call_sid),
        ("CallStatus", "no-answer"),
        ("From", from),
        ("To", "+15035550100"),
        ("Direction", "inbound"),
        ("SequenceNumber", "1"),
    ];
    assert_eq!(server.post_signed(STATUS, &end).await.status, StatusCode::NO_CONTENT);
}

/// Waits until `done` holds for the box's texts (or fails after `within`).
async fn texts_until(server: &TestServer, within: Duration, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let texts = server.app.texts.messages();
        if done(&texts) {
            return texts;
        }
        assert!(tokio::time::Instant::now() < deadline, "texts never got there: {texts:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_in(state: State, n: usize) -> impl Fn(&[Message]) -> bool {
    move |t| t.len() == n && t.iter().all(|m| m.state == state)
}

// --- Prism: Twilio's published contract ---------------------------------------------------

/// Twilio's OpenAPI description, from the shared reference (absent in a user's clone).
fn twilio_spec() -> Option<PathBuf> {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/twilio-oai/twilio_api_v2010.json");
    spec.exists().then_some(spec)
}

/// The Prism CLI: `CALLBOX_PRISM`, else where `.ci/run` installs it.
fn prism_program() -> PathBuf {
    std::env::var_os("CALLBOX_PRISM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/prism/node_modules/.bin/prism"))
}

struct Prism {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prism {
    fn start(spec: &Path) -> Self {
        let program = prism_program();
        assert!(
            program.exists(),
            "Prism is missing at {}: npm install --prefix target/prism @stoplight/prism-cli@5.16.0 (.ci/run does), or set CALLBOX_PRISM",
            program.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("prism.log");
        let port = free_port();
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(&program)
            .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string(), "--errors"])
            .arg(spec)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, port, log, _dir: dir }
    }

    async fn wait_ready(&self) {
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Prism did not listen within 60 s: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs Prism (npm @stoplight/prism-cli, installed by .ci/run)"]
async fn every_text_the_box_sends_passes_twilios_own_api_description() {
    let Some(spec) = twilio_spec() else {
        eprintln!("SKIPPED: ../shared/reference/twilio-oai/twilio_api_v2010.json is absent (a user's clone)");
        return;
    };
    let prism = Prism::start(&spec);
    prism.wait_ready().await;
    let api = format!("http://127.0.0.1:{}", prism.port);
    // The Auth Token, and in a second box an API key: both are Basic auth to Twilio.
    for api_key in [false, true] {
        let server = TestServer::start_with(|c| {
            texts_config(c, &api);
            c.twilio.api_timeout_secs = 20;
            if api_key {
                c.twilio.api_key_sid = Some("SK0123456789abcdef0123456789abcdef".into());
                c.twilio.api_key_secret = callbox::config::Secret::new("an-api-key-secret");
                c.twilio.sms_from = Some("MG0123456789abcdef0123456789abcdef".into());
            }
        })
        .await;
        missed_call(&server, "CA00000000000000000000000000005001", "+15035550123").await;
        let texts =
            texts_until(&server, Duration::from_secs(30), |t| t.len() == 2 && t.iter().all(|m| !m.state.is_open()))
                .await;
        for m in &texts {
            assert_eq!(m.state, State::Sent, "Prism refused a request: {m:#?}\n{}", prism.log());
            assert!(m.sid.as_deref().is_some_and(|s| s.starts_with("SM")), "{m:#?}");
        }
        server.stop().await;
    }
    let log = prism.log();
    assert!(!log.contains('✖'), "Prism's validator found a request that breaks Twilio's contract:\n{log}");
    let passed = log.lines().filter(|l| l.contains("[VALIDATOR]") && l.contains("passed the validation")).count();
    assert_eq!(passed, 4, "four requests reached Prism and passed its validator:\n{log}");
}

#[tokio::test]
#[ignore = "needs Prism (npm @stoplight/prism-cli, installed by .ci/run)"]
async fn prism_refuses_what_breaks_the_contract() {
    // The check above is only worth something if Prism does refuse: a text without a
    // recipient and a request without credentials are answered 422 and 401.
    let Some(spec) = twilio_spec() else {
        eprintln!("SKIPPED: ../shared/reference/twilio-oai/twilio_api_v2010.json is absent (a user's clone)");
        return;
    };
    let prism = Prism::start(&spec);
    prism.wait_ready().await;
    let addr = format!("127.0.0.1:{}", prism.port).parse().unwrap();
    let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json");
    let form = [("content-type", "application/x-www-form-urlencoded"), ("authorization", "Basic QUM6c2VjcmV0")];
    let no_to = request(addr, http::Method::POST, &path, &form, Bytes::from("From=%2B15035550100&Body=hi")).await;
    assert_eq!(no_to.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", no_to.text());
    let no_auth = request(
        addr,
        http::Method::POST,
        &path,
        &form[..1],
        Bytes::from("To=%2B15035550123&From=%2B15035550100&Body=hi"),
    )
    .await;
    assert_eq!(no_auth.status, StatusCode::UNAUTHORIZED, "{}", no_auth.text());
}

// --- A Twilio of the test's own, for the answers Prism does not give -----------------------

/// What the fake does with the next request.
#[derive(Clone, Debug)]
enum Then {
    /// Answer with this status and JSON body.
    Answer(u16, &'static str),
    /// Never answer.
    Hang,
}

fn created(n: u32) -> Then {
    let body = format!(r#"{{"sid":"SM{n:032x}","status":"queued"}}"#);
    Then::Answer(201, Box::leak(body.into_boxed_str()))
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    form: Vec<(String, String)>,
}

impl Seen {
    fn get(&self, name: &str) -> &str {
        self.form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct FakeTwilio {
    url: String,
    script: Arc<Mutex<VecDeque<Then>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeTwilio {
    /// Answers as `script` says, then with 201s.
    async fn start(script: Vec<Then>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self { url, script: Arc::new(Mutex::new(script.into())), seen: Arc::default() };
        let serving = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let fake = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| fake.clone().answer(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    async fn answer(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let path = req.uri().path().to_owned();
        let authorization =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form = url::form_urlencoded::parse(&body).into_owned().collect();
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen { path, authorization, form });
            seen.len() as u32
        };
        let then = self.script.lock().unwrap().pop_front().unwrap_or_else(|| created(n));
        match then {
            Then::Answer(status, body) => Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()),
            Then::Hang => std::future::pending().await,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_missed_call_texts_the_caller_and_alerts_the_owner_once() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| texts_config(c, &twilio.url)).await;
    let call = "CA00000000000000000000000000005101";
    missed_call(&server, call, "+15035550123").await;
    texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 2)).await;
    let seen = twilio.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let auth = format!("Basic {}", base64_of(&format!("{ACCOUNT}:{AUTH_TOKEN}")));
    for s in &seen {
        assert_eq!(s.path, format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json"));
        assert_eq!(s.authorization, auth, "the account's SID and Auth Token");
        assert_eq!(s.get("From"), "+15035550100", "from the number that was called");
        assert_eq!(s.get("StatusCallback"), server.signed_url(MESSAGE_STATUS));
    }
    let to_caller = seen.iter().find(|s| s.get("To") == "+15035550123").unwrap();
    assert_eq!(to_caller.get("Body"), TEXT_BACK);
    let to_owner = seen.iter().find(|s| s.get("To") == OWNER).unwrap();
    assert!(to_owner.get("Body").starts_with("Missed call from (503) 555-0123 at "), "{:?}", to_owner.get("Body"));
    assert!(to_owner.get("Body").ends_with(&format!("#call={call}")), "{:?}", to_owner.get("Body"));

    // Twilio retries the final callback, and the next call from the same caller is within 12 h:
    // the caller gets no second text, the owner hears of the second call.
    let end = [("CallSid", call), ("CallStatus", "no-answer"), ("SequenceNumber", "1")];
    assert_eq!(server.post_signed(STATUS, &end).await.status, StatusCode::NO_CONTENT);
    missed_call(&server, "CA00000000000000000000000000005102", "+15035550123").await;
    let texts =
        texts_until(&server, Duration::from_secs(10), |t| t.len() == 4 && t.iter().all(|m| !m.state.is_open())).await;
    assert_eq!(twilio.seen().len(), 3, "{texts:#?}");
    let skipped: Vec<&Message> = texts.iter().filter(|m| m.state == State::Skipped).collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].kind, Kind::TextBack);
    assert!(skipped[0].skipped.as_deref().unwrap().contains("already texted"), "{:?}", skipped[0]);

    // The call's texts are on the call in the admin API, and health counts them.
    let detail = server.admin_get(&format!("/api/v1/calls/{call}"), true).await.json();
    assert_eq!(detail["outcome"], "missed");
    assert_eq!(detail["texts"].as_array().unwrap().len(), 2, "{detail:#}");
    let health = server.admin_get("/api/v1/health", true).await.json();
    assert_eq!(health["texts"]["sent"], 3, "{health:#}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn status_callbacks_are_signed_and_update_the_text() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| texts_config(c, &twilio.url)).await;
    missed_call(&server, "CA00000000000000000000000000005201", "+15035550123").await;
    let texts = texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 2)).await;
    let to_caller = texts.iter().find(|m| m.kind == Kind::TextBack).unwrap();
    let sid = to_caller.sid.clone().unwrap();
    let update = [("MessageSid", sid.as_str()), ("MessageStatus", "undelivered"), ("ErrorCode", "30034")];
    let unsigned = server.post_form(MESSAGE_STATUS, &update, None).await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert_eq!(server.post_form(MESSAGE_STATUS, &update, Some("Zm9yZ2Vk")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.post_signed(MESSAGE_STATUS, &update).await.status, StatusCode::NO_CONTENT);
    let m = server.app.texts.messages().into_iter().find(|m| m.sid.as_deref() == Some(&sid)).unwrap();
    assert_eq!((m.state, m.error_code), (State::Undelivered, Some(30034)));
    let health = server.admin_get("/api/v1/health", true).await.json();
    assert_eq!(health["texts"]["failed"], 1);
    assert!(health["texts"]["last_failure"].as_str().unwrap().contains("A2P 10DLC"), "{health:#}");

    // Another app's message on the same account, and a malformed one.
    let other = [("MessageSid", "SMffffffffffffffffffffffffffffffff"), ("MessageStatus", "delivered")];
    assert_eq!(server.post_signed(MESSAGE_STATUS, &other).await.status, StatusCode::NO_CONTENT);
    let bad = [("MessageSid", "../../etc"), ("MessageStatus", "delivered")];
    assert_eq!(server.post_signed(MESSAGE_STATUS, &bad).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rate_limits_and_twilio_outages_are_retried_with_backoff() {
    let twilio = FakeTwilio::start(vec![
        Then::Answer(429, r#"{"code":20429,"message":"Too Many Requests","status":429}"#),
        Then::Answer(500, r#"{"code":20500,"message":"Internal Server Error","status":500}"#),
    ])
    .await;
    let server = TestServer::start_with(|c| {
        texts_config(c, &twilio.url);
        c.missed_calls.notify.clear();
    })
    .await;
    missed_call(&server, "CA00000000000000000000000000005301", "+15035550123").await;
    let texts = texts_until(&server, Duration::from_secs(30), all_in(State::Sent, 1)).await;
    assert_eq!(texts[0].attempts, 3, "{texts:#?}");
    assert_eq!(twilio.seen().len(), 3, "sent once it got through, and only then");
}

#[tokio::test]
async fn a_stop_is_remembered_and_permanent_errors_are_not_retried() {
    let twilio = FakeTwilio::start(vec![Then::Answer(
        400,
        r#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","more_info":"https://www.twilio.com/docs/errors/21610","status":400}"#,
    )])
    .await;
    let server = TestServer::start_with(|c| {
        texts_config(c, &twilio.url);
        c.missed_calls.notify.clear();
        c.missed_calls.window_hours = 0;
    })
    .await;
    missed_call(&server, "CA00000000000000000000000000005401", "+15035550123").await;
    let texts = texts_until(&server, Duration::from_secs(10), all_in(State::Failed, 1)).await;
    assert_eq!(texts[0].error_code, Some(21610));
    assert!(texts[0].error.as_deref().unwrap().contains("replied STOP"), "{texts:#?}");
    // Restarted, the box still knows: the next missed call from that number sends nothing.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |c| {
        texts_config(c, &twilio.url);
        c.missed_calls.notify.clear();
        c.missed_calls.window_hours = 0;
    })
    .await;
    missed_call(&server, "CA00000000000000000000000000005402", "+15035550123").await;
    let texts = texts_until(&server, Duration::from_secs(10), |t| t.len() == 2).await;
    assert_eq!(texts[0].state, State::Skipped, "{texts:#?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(twilio.seen().len(), 1, "never retried, never sent again");
}

#[tokio::test]
async fn no_text_to_a_withheld_number_but_the_owner_hears() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| texts_config(c, &twilio.url)).await;
    missed_call(&server, "CA00000000000000000000000000005501", "+266696687").await;
    texts_until(&server, Duration::from_secs(10), |t| t.len() == 2 && t.iter().all(|m| !m.state.is_open())).await;
    let seen = twilio.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].get("To"), OWNER);
    assert!(seen[0].get("Body").contains("a withheld number"), "{:?}", seen[0].get("Body"));
}

#[tokio::test]
async fn a_text_out_when_the_box_stopped_goes_again_once_and_one_answered_never() {
    // One owner's alert is answered; the other's request fails, then the box stops while its
    // retry hangs. The hang outlasts the test (a minute's timeout), so the stop, not a timeout,
    // is what interrupts it however slow the machine.
    let failed = Then::Answer(500, r#"{"code":20500,"message":"Internal Server Error","status":500}"#);
    let twilio = FakeTwilio::start(vec![created(1), failed, Then::Hang]).await;
    let tweak = |c: &mut Config| {
        texts_config(c, &twilio.url);
        c.twilio.api_timeout_secs = 60;
        c.missed_calls.text_back = None;
        c.missed_calls.notify = vec![OWNER.into(), "+15035550198".into()];
    };
    let server = TestServer::start_with(tweak).await;
    missed_call(&server, "CA00000000000000000000000000005601", "+15035550123").await;
    texts_until(&server, Duration::from_secs(30), |t| {
        // The retry is marked `sending` before its request goes out: wait for Twilio to have it.
        twilio.seen().len() == 3
            && t.iter().any(|m| m.state == State::Sent)
            && t.iter().any(|m| m.state == State::Sending && m.attempts == 2)
    })
    .await;
    let dir = server.stop().await;
    assert_eq!(twilio.seen().len(), 3);

    let server = TestServer::start_in(dir, tweak).await;
    let texts = texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 2)).await;
    let resent = texts.iter().find(|m| m.interrupted == 1).unwrap();
    assert_eq!(resent.attempts, 3, "{texts:#?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = twilio.seen();
    assert_eq!(seen.len(), 4, "the answered one was not sent again: {seen:#?}");
    assert_eq!(seen.iter().filter(|s| s.get("To") == texts[0].to || s.get("To") == texts[1].to).count(), 4);
}

#[tokio::test]
async fn nothing_is_sent_when_texts_are_off() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| {
        c.twilio.api_base_url = twilio.url.clone();
    })
    .await;
    missed_call(&server, "CA00000000000000000000000000005701", "+15035550123").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.app.texts.messages().is_empty());
    assert!(twilio.seen().is_empty());
    let calls = server.admin_get("/api/v1/calls", true).await.json();
    assert_eq!(calls["calls"][0]["outcome"], "missed");
}

#[tokio::test]
async fn simulate_call_plays_missed_calls_an_installer_can_watch() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| {
        texts_config(c, &twilio.url);
        c.missed_calls.window_hours = 0;
    })
    .await;
    // The caller stays silent after the beep and hangs up 4.5 s in: nobody, no message.
    let silent = callbox::simulate::run(&rehearsal(&server, Duration::from_secs(3), Some(4.5), false, false), false)
        .await
        .unwrap();
    assert_eq!(silent.marks.len(), 1, "the greeting's mark was echoed before the caller gave up");
    let call = server.app.calls.store().get(&silent.call_sid).unwrap().unwrap();
    assert_eq!(call.outcome, callbox::calls::Outcome::Missed, "{call:#?}");
    // Twilio could not reach anyone: no stream at all.
    let unanswered =
        callbox::simulate::run(&rehearsal(&server, Duration::from_secs(3), None, true, false), false).await.unwrap();
    let call = server.app.calls.store().get(&unanswered.call_sid).unwrap().unwrap();
    assert_eq!((call.outcome, call.stream.is_none()), (callbox::calls::Outcome::Missed, true));
    let texts = texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 4)).await;
    for sid in [&silent.call_sid, &unanswered.call_sid] {
        let kinds: Vec<Kind> = texts.iter().filter(|m| m.call_sid.as_ref() == Some(sid)).map(|m| m.kind).collect();
        assert!(kinds.contains(&Kind::TextBack) && kinds.contains(&Kind::OwnerAlert), "{sid}: {texts:#?}");
    }
    // A caller who talks for 3 s leaves a voicemail: the owner hears, the caller gets no text.
    let message =
        callbox::simulate::run(&rehearsal(&server, Duration::from_secs(3), None, false, false), false).await.unwrap();
    let call = server.app.calls.store().get(&message.call_sid).unwrap().unwrap();
    assert_eq!(call.outcome, callbox::calls::Outcome::Voicemail, "{call:#?}");
    let texts = texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 5)).await;
    let alert = texts.iter().find(|m| m.call_sid.as_ref() == Some(&message.call_sid)).unwrap();
    assert!(alert.body.starts_with("New voicemail (0:0"), "{}", alert.body);
}

const INCOMING_SMS: &str = "/api/v1/webhooks/incoming-sms";

fn sms(sid_n: u32, from: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000001".into()),
        ("Body", body.into()),
        ("From", from.into()),
        ("MessageSid", format!("SM{sid_n:032x}")),
        ("NumMedia", "0".into()),
        ("NumSegments", "1".into()),
        ("To", "+15035550100".into()),
    ]
}

async fn admin_post_json(server: &TestServer, target: &str, body: serde_json::Value) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    request(server.admin, http::Method::POST, target, &headers, Bytes::from(body.to_string())).await
}

#[tokio::test]
async fn customers_text_back_and_the_owner_answers_from_the_thread() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| {
        texts_config(c, &twilio.url);
        c.missed_calls.notify.clear();
        c.texts.templates = vec!["Your car is ready for pickup.".into()];
    })
    .await;
    missed_call(&server, "CA00000000000000000000000000005801", "+15035550123").await;
    texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 1)).await;

    // The caller answers the text-back: signed, stored once however often Twilio delivers it.
    let reply = sms(0x5801, "+15035550123", "Can you look at my brakes tomorrow?");
    let unsigned = server.post_form(INCOMING_SMS, &refs(&reply), None).await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    for _ in 0..2 {
        let answer = server.post_signed(INCOMING_SMS, &refs(&reply)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(verbs_of(&answer.text()), Vec::<String>::new(), "<Response/>: nothing sent back");
    }
    let thread = server.admin_get("/api/v1/threads/%2B15035550123", true).await.json();
    let entries = thread["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{thread:#}");
    assert_eq!((entries[0]["incoming"].as_bool(), entries[0]["kind"].as_str()), (Some(false), Some("text-back")));
    assert_eq!(entries[1]["body"], "Can you look at my brakes tomorrow?");

    // The owner answers with a saved text: from the number the customer used.
    let templates = server.admin_get("/api/v1/texts/templates", true).await.json();
    let saved = templates["templates"][0].as_str().unwrap().to_owned();
    let sent =
        admin_post_json(&server, "/api/v1/texts", serde_json::json!({ "to": "+15035550123", "body": saved })).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.text());
    texts_until(&server, Duration::from_secs(10), |t| t.iter().filter(|m| m.state == State::Sent).count() == 2).await;
    let last = twilio.seen().pop().unwrap();
    assert_eq!((last.get("To"), last.get("From"), last.get("Body")), ("+15035550123", "+15035550100", saved.as_str()));
    let thread = server.admin_get("/api/v1/threads/%2B15035550123", true).await.json();
    assert_eq!(thread["entries"].as_array().unwrap().len(), 3, "{thread:#}");

    // Bad requests say what is wrong.
    for (body, status) in [
        (serde_json::json!({ "to": "555-0123", "body": "hi" }), StatusCode::BAD_REQUEST),
        (serde_json::json!({ "to": "+15035550123", "body": "  " }), StatusCode::BAD_REQUEST),
        (serde_json::json!({ "to": "+15035550123" }), StatusCode::BAD_REQUEST),
        (serde_json::json!({ "to": "+15035550177", "body": "who are you" }), StatusCode::CONFLICT),
    ] {
        let r = admin_post_json(&server, "/api/v1/texts", body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}: {}", r.text());
    }
    assert_eq!(server.admin_get("/api/v1/threads/nonsense", true).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.admin_get("/api/v1/threads/%2B15035550123", false).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn stop_and_start_by_text_decide_whether_the_box_may_text() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| {
        texts_config(c, &twilio.url);
        c.missed_calls.notify.clear();
        c.missed_calls.window_hours = 0;
    })
    .await;
    server.post_signed(INCOMING_SMS, &refs(&sms(1, "+15035550123", "STOP"))).await;
    let refused =
        admin_post_json(&server, "/api/v1/texts", serde_json::json!({ "to": "+15035550123", "body": "hi" })).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.json()["error"].as_str().unwrap().contains("STOP"));
    missed_call(&server, "CA00000000000000000000000000005901", "+15035550123").await;
    let texts = texts_until(&server, Duration::from_secs(10), |t| t.len() == 1).await;
    assert_eq!(texts[0].state, State::Skipped, "{texts:#?}");
    assert!(server.admin_get("/api/v1/threads/%2B15035550123", true).await.json()["opted_out"].as_bool().unwrap());

    server.post_signed(INCOMING_SMS, &refs(&sms(2, "+15035550123", "start"))).await;
    missed_call(&server, "CA00000000000000000000000000005902", "+15035550123").await;
    texts_until(&server, Duration::from_secs(10), |t| t.iter().any(|m| m.state == State::Sent)).await;
    assert_eq!(twilio.seen().len(), 1);
}

fn verbs_of(xml: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "Response");
    doc.root_element().children().filter(|n| n.is_element()).map(|n| n.tag_name().name().to_owned()).collect()
}

#[tokio::test]
async fn a_request_twilio_never_answers_times_out_and_is_tried_again() {
    let twilio = FakeTwilio::start(vec![Then::Hang]).await;
    let server = TestServer::start_with(|c| {
        texts_config(c, &twilio.url);
        c.missed_calls.notify.clear();
    })
    .await;
    missed_call(&server, "CA00000000000000000000000000006101", "+15035550123").await;
    let waiting = texts_until(&server, Duration::from_secs(10), |t| t.iter().any(|m| m.retry_at.is_some())).await;
    assert!(waiting[0].error.as_deref().unwrap().contains("did not answer within 2s"), "{waiting:#?}");
    let texts = texts_until(&server, Duration::from_secs(20), all_in(State::Sent, 1)).await;
    assert_eq!((texts[0].attempts, twilio.seen().len()), (2, 2));
}

#[tokio::test]
async fn retention_prunes_old_texts_but_never_an_opt_out() {
    let twilio = FakeTwilio::start(vec![]).await;
    let server = TestServer::start_with(|c| texts_config(c, &twilio.url)).await;
    missed_call(&server, "CA00000000000000000000000000006201", "+15035550123").await;
    texts_until(&server, Duration::from_secs(10), all_in(State::Sent, 2)).await;
    server.post_signed("/api/v1/webhooks/incoming-sms", &refs(&sms(9, "+15035550124", "STOP"))).await;
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    assert_eq!(server.app.texts.prune(later).await.unwrap(), 3, "two sent, one received");
    assert!(server.app.texts.messages().is_empty());
    assert!(server.admin_get("/api/v1/threads/%2B15035550124", true).await.json()["opted_out"].as_bool().unwrap());
}
