//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real server. Screenshots at phone and desktop widths go to
//! `target/screenshots/` for a person to look at; the layout check fails on text that
//! overflows the page or overlaps other text.
//!
//! Needs Debian's `chromium` and `chromium-driver`, so it is ignored by a plain `cargo test`;
//! `.ci/run` installs them and runs it (`--include-ignored`).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;
use serde_json::json;

struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver's browser runs in chromedriver's process group: end them all, also
        // when a failed assertion skipped closing the session.
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

async fn browser() -> (Driver, Client) {
    require(&[Need::Program("chromedriver", "chromium-driver"), Need::File("/usr/bin/chromium", "chromium")]);
    // The WebDriver client builds its (unused, plain-HTTP here) TLS config from the process's
    // default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Port 0: chromedriver binds a free one and says which once it listens.
    let mut child = Command::new("chromedriver")
        .arg("--port=0")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let port = tokio::task::spawn_blocking(move || {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("started successfully on port ").map(|(_, p)| p.trim_end_matches('.').to_owned())
            })
            .and_then(|p| p.parse::<u16>().ok());
        // Keep draining so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        port
    })
    .await
    .unwrap()
    .expect("chromedriver ended without saying it was listening");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver { child, port, _profile: profile };
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let caps = match caps {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    };
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("cannot start a browser session: {e}"));
    (driver, client)
}

/// Polls a JavaScript expression until it is truthy (WebDriver's way to wait: the page's own
/// events do not reach the test).
async fn wait_js(c: &Client, expr: &str, what: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = c.execute(&format!("return ({expr});"), vec![]).await.unwrap();
        if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Text that spills out of the page or sits on top of other text, as (element, problem) lines.
const LAYOUT_CHECK: &str = r#"
const problems = [];
const vw = document.documentElement.clientWidth;
if (document.documentElement.scrollWidth > vw + 1) problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
const leaves = [...document.querySelectorAll('body *')].filter(e => {
  // Text for screen readers only is clipped on purpose.
  if (e.closest('.visually-hidden')) return false;
  if (!e.offsetParent && getComputedStyle(e).position !== 'fixed') return false;
  return [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
});
const boxes = leaves.map(e => ({ e, r: e.getBoundingClientRect() })).filter(b => b.r.width > 0 && b.r.height > 0);
for (const b of boxes) {
  if (b.r.right > vw + 1 || b.r.left < -1) problems.push(`off-screen: ${b.e.tagName}.${b.e.className} "${b.e.textContent.trim().slice(0, 30)}"`);
  if (b.e.scrollWidth > b.e.clientWidth + 1 && getComputedStyle(b.e).overflowX !== 'visible') problems.push(`cut off: ${b.e.tagName}.${b.e.className}`);
}
for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
  const a = boxes[i], b = boxes[j];
  if (a.e.contains(b.e) || b.e.contains(a.e)) continue;
  const ox = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
  const oy = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
  if (ox > 2 && oy > 2) problems.push(`overlap: "${a.e.textContent.trim().slice(0, 20)}" and "${b.e.textContent.trim().slice(0, 20)}"`);
}
return problems;
"#;

async fn check_layout_and_screenshot(c: &Client, name: &str, width: u32, height: u32) {
    c.set_window_size(width, height).await.unwrap();
    // Scrolled to the top, and two animation frames later the new width is laid out and painted.
    let settled = "const done = arguments[arguments.length - 1]; window.scrollTo(0, 0); \
                   requestAnimationFrame(() => requestAnimationFrame(() => done(true)));";
    c.execute_async(settled, vec![]).await.unwrap();
    let png = c.screenshot().await.unwrap();
    let path = screenshot_dir().join(format!("{name}-{width}.png"));
    std::fs::write(&path, png).unwrap();
    let problems = c.execute(LAYOUT_CHECK, vec![]).await.unwrap();
    assert_eq!(problems, json!([]), "layout problems at {width}px ({}):", path.display());
}

/// axe-core, as `.ci/run` installs it (npm `axe-core`): `CALLBOX_AXE`, else `target/axe`.
fn axe_source() -> String {
    let path = std::env::var_os("CALLBOX_AXE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/axe/node_modules/axe-core/axe.min.js")
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is missing at {} ({e}): npm install --prefix target/axe axe-core@4.14.1 (.ci/run does), or set CALLBOX_AXE",
            path.display()
        )
    })
}

/// Runs axe-core on the page as it is now: no serious or critical violation of WCAG 2.1 A/AA.
async fn check_accessibility(c: &Client, axe: &str, what: &str) {
    c.execute(&format!("{axe}\nreturn true;"), vec![]).await.unwrap();
    let run = "const done = arguments[arguments.length - 1]; \
               axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }) \
                 .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical') \
                   .map(v => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`))) \
                 .catch(e => done(['axe failed: ' + e]));";
    let violations = c.execute_async(run, vec![]).await.unwrap();
    assert_eq!(violations, json!([]), "accessibility of {what}");
}

// Long on purpose: one owner's visit, step by step, in one browser session (a session is seconds to start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn owner_logs_in_watches_a_call_arrive_plays_it_and_logs_out() {
    let server = TestServer::start().await;
    let axe = axe_source();
    let (_driver, c) = browser().await;
    let base = format!("http://{}", server.admin);

    // Not logged in: the login form. A wrong token is refused.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    check_layout_and_screenshot(&c, "login", 1280, 800).await;
    check_layout_and_screenshot(&c, "login", 390, 844).await;
    check_accessibility(&c, &axe, "the login page").await;
    c.find(Locator::Css("#token")).await.unwrap().send_keys("wrong-token").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_js(&c, "document.querySelector('.error') && document.querySelector('.error').textContent.includes('not the admin token')", "the refusal").await;

    // The right token, on a device to remember (a wall tablet): the board.
    c.find(Locator::Css("#token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
    c.find(Locator::Css("input[name=remember]")).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_js(&c, "document.querySelector('#live-empty') && !document.querySelector('#live-empty').hidden", "the board")
        .await;

    // A call placed by `callbox simulate-call` (Twilio's role, as a real process) shows up
    // live while it is in progress, then with its voicemail, all without a reload.
    let marker = c.execute("window.__sameDocument = 'yes'; return true;", vec![]).await.unwrap();
    assert_eq!(marker, json!(true));
    let public_url = server.app.config.public_url.origin();
    let stream_url = format!("ws://{}/api/v1/voice/media-stream", server.public);
    let caller = tokio::process::Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["simulate-call", "--url", &public_url, "--stream-url", &stream_url, "--seconds", "3", "--quiet"])
        .args(["--auth-token", AUTH_TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_js(&c, "document.querySelectorAll('#live .call').length === 1", "the call on the live board").await;
    wait_js(
        &c,
        "/leaving a message 0:0[0-9]/.test(document.querySelector('#live .badge.live').textContent)",
        "the caller leaving a message, with its clock",
    )
    .await;
    let done = caller.wait_with_output().await.unwrap();
    assert!(
        done.status.success(),
        "simulate-call: {}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    let sid = server.app.calls.store().list(1, None).unwrap()[0].call_sid.clone();
    wait_js(
        &c,
        &format!("document.querySelector('#calls [data-sid={sid}] .badge.voicemail')"),
        "the call with its voicemail",
    )
    .await;
    wait_js(&c, "document.querySelectorAll('#live .call').length === 0", "the live board empty again").await;
    assert_eq!(c.execute("return window.__sameDocument;", vec![]).await.unwrap(), json!("yes"), "the page reloaded");

    // Its detail, with a playable recording.
    c.find(Locator::Css(&format!("#calls [data-sid={sid}]"))).await.unwrap().click().await.unwrap();
    wait_js(&c, "!document.querySelector('#detail').hidden", "the call's detail").await;
    let duration = wait_js(
        &c,
        "document.querySelector('#audio').duration > 0 && document.querySelector('#audio').duration",
        "the recording's duration",
    )
    .await;
    let secs = duration.as_f64().unwrap();
    assert!((2.5..=3.5).contains(&secs), "the caller spoke for 3 s, the player says {secs}");
    let timeline = c.find(Locator::Css("#timeline")).await.unwrap().text().await.unwrap();
    // The steps in words, to the second.
    for step in ["Call came in", "Greeting played", "Caller spoke", "Message saved 0:0", "Call ended"] {
        assert!(timeline.contains(step), "{step:?} missing from the timeline:\n{timeline}");
    }
    assert!(
        timeline.lines().any(|l| l.len() >= 8 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':'),
        "times with seconds:\n{timeline}"
    );
    assert!(!timeline.contains("media-stream") && !timeline.contains("status-callback"), "{timeline}");

    // The caller's texts beside the call; answering needs a Twilio account, and the page says so.
    wait_js(&c, "!document.querySelector('#thread').hidden", "the caller's texts").await;
    c.find(Locator::Css("#reply-body")).await.unwrap().send_keys("Your car is ready.").await.unwrap();
    c.find(Locator::Css("#reply button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_js(
        &c,
        "document.querySelector('#reply-status').textContent.includes('twilio.account_sid')",
        "why the text was not sent",
    )
    .await;

    check_layout_and_screenshot(&c, "detail", 1280, 800).await;
    // On a phone the detail has the screen to itself; closing it goes back to the list,
    // with focus on the call's row.
    check_layout_and_screenshot(&c, "detail", 390, 844).await;
    let hidden = "getComputedStyle(document.querySelectorAll('main > .card')[1]).display === 'none'";
    assert_eq!(
        c.execute(&format!("return {hidden};"), vec![]).await.unwrap(),
        json!(true),
        "the list under the detail"
    );
    c.find(Locator::Css("#detail-close")).await.unwrap().click().await.unwrap();
    wait_js(
        &c,
        &format!("document.activeElement && document.activeElement.dataset.sid === '{sid}'"),
        "focus back on the row",
    )
    .await;

    // The message is waiting: the banner shows it, and the owner marks it as heard.
    wait_js(&c, "!document.querySelector('#message-banner').hidden", "the message-waiting banner").await;
    check_accessibility(&c, &axe, "the dashboard with a voicemail waiting").await;
    c.find(Locator::Css("#ack")).await.unwrap().click().await.unwrap();
    wait_js(&c, "document.querySelector('#message-banner').hidden", "the banner gone after acknowledging").await;
    assert_eq!(server.app.indicators.snapshot().output.messages_waiting, 0);

    // Heard is not called back: the voicemail is still on the call-back list, with a way to
    // call; "Called back" in its detail takes it off, on disk.
    let on_list = format!("document.querySelector('#callbacks li:has([data-sid={sid}]) a[href^=\"tel:+1\"]')");
    wait_js(&c, &on_list, "the voicemail on the call-back list, tap to call").await;
    c.find(Locator::Css(&format!("#callbacks [data-sid={sid}]"))).await.unwrap().click().await.unwrap();
    wait_js(
        &c,
        "!document.querySelector('#detail').hidden && !document.querySelector('#mark-called').hidden",
        "the detail",
    )
    .await;
    c.find(Locator::Css("#note")).await.unwrap().send_keys("Wants brakes checked Friday").await.unwrap();
    c.find(Locator::Css("#note-form button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_js(&c, "document.querySelector('#follow-status').textContent === 'Note saved.'", "the note saved").await;
    check_accessibility(&c, &axe, "a call's detail").await;
    check_layout_and_screenshot(&c, "detail-follow-up", 1280, 800).await;
    c.find(Locator::Css("#mark-called")).await.unwrap().click().await.unwrap();
    wait_js(&c, &format!("!document.querySelector('#callbacks [data-sid={sid}]')"), "off the call-back list").await;
    let stored = server.app.calls.store().get(&sid).unwrap().unwrap();
    assert!(
        stored.follow_up.called_back_at.is_some()
            && stored.follow_up.note.as_deref() == Some("Wants brakes checked Friday")
    );
    c.find(Locator::Css("#detail-close")).await.unwrap().click().await.unwrap();

    // A second call, still ringing, is live and shows in words; the outcome filter and the
    // search find what they should.
    let ringing = [
        ("CallSid", "CA00000000000000000000006230303031"),
        ("From", "+15035550199"),
        ("To", "+15035550100"),
        ("CallStatus", "ringing"),
    ];
    assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &ringing).await.status, StatusCode::OK);
    wait_js(
        &c,
        "document.querySelector('#live [data-sid=CA00000000000000000000006230303031] .badge.live')",
        "a second, ringing call",
    )
    .await;
    c.find(Locator::Css("#outcome option[value=voicemail]")).await.unwrap().click().await.unwrap();
    let only_voicemail = format!(
        "!document.querySelector('#calls [data-sid=CA00000000000000000000006230303031]') && document.querySelector('#calls [data-sid={sid}]')"
    );
    wait_js(&c, &only_voicemail, "the voicemail filter").await;
    c.find(Locator::Css("#outcome option[value='']")).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("#q")).await.unwrap().send_keys("(503) 555-0199\n").await.unwrap();
    let only_second = format!(
        "document.querySelector('#calls [data-sid=CA00000000000000000000006230303031]') && !document.querySelector('#calls [data-sid={sid}]')"
    );
    wait_js(&c, &only_second, "the search by number").await;
    c.execute("document.querySelector('#q').value = ''; return true;", vec![]).await.unwrap();
    c.find(Locator::Css("#search button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_js(&c, &format!("document.querySelector('#calls [data-sid={sid}]')"), "every call again").await;
    // The chart counts today's two calls, and this device is listed as signed in.
    wait_js(&c, "document.querySelector('#chart-summary').textContent.startsWith('2 calls')", "the 30-day chart").await;
    wait_js(&c, "document.querySelector('#devices').textContent.includes('this device')", "the device list").await;
    check_accessibility(&c, &axe, "the dashboard").await;

    // Two callers nobody answered: the call-back list an owner opens in the morning.
    for (sid, from, name) in [
        ("CA00000000000000000000006230303032", "+15035550142", "RIVERA MARIA"),
        ("CA00000000000000000000006230303033", "+15035550177", ""),
    ] {
        let arrive =
            [("CallSid", sid), ("From", from), ("To", "+15035550100"), ("CallStatus", "ringing"), ("CallerName", name)];
        assert_eq!(server.post_signed("/api/v1/webhooks/incoming-call", &arrive).await.status, StatusCode::OK);
        let end = [("CallSid", sid), ("From", from), ("CallStatus", "no-answer"), ("SequenceNumber", "1")];
        assert_eq!(server.post_signed("/api/v1/webhooks/call-status", &end).await.status, StatusCode::NO_CONTENT);
    }
    wait_js(&c, "document.querySelectorAll('#callbacks .call').length === 2", "two calls to return").await;
    wait_js(
        &c,
        "document.querySelector('#chart-summary').textContent.includes('2 missed')",
        "the missed calls charted",
    )
    .await;
    check_layout_and_screenshot(&c, "call-backs", 1280, 800).await;
    check_layout_and_screenshot(&c, "call-backs", 390, 844).await;
    check_accessibility(&c, &axe, "the call-back list").await;

    check_layout_and_screenshot(&c, "dashboard", 390, 844).await;
    check_layout_and_screenshot(&c, "dashboard", 1280, 800).await;
    let icon = c
        .execute_async(
            "fetch('/assets/favicon.svg').then(r => arguments[0](r.status + ' ' + r.headers.get('content-type')));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(icon, json!("200 image/svg+xml"), "the favicon");
    // The Export CSV button downloads the range the list shows, the call in it.
    let export = c
        .execute_async(
            "fetch(document.querySelector('#export').href).then(r => r.text()).then(t => arguments[0](t));",
            vec![],
        )
        .await
        .unwrap();
    let export = export.as_str().unwrap();
    assert!(export.starts_with("call_sid,local_time,") && export.contains(&sid), "{export}");

    // Sign out: back to the login form, and the API no longer answers this browser.
    c.find(Locator::Css("#logout")).await.unwrap().click().await.unwrap();
    wait_js(&c, "location.pathname === '/login'", "the login page after signing out").await;
    let status = c.execute_async("fetch('/api/v1/calls').then(r => arguments[0](r.status));", vec![]).await.unwrap();
    assert_eq!(status, json!(401));
    c.close().await.unwrap();
}
