//! The admin listener on the shop LAN: the owner's dashboard and API. Everything but
//! `/healthz` and the login form requires the admin token, as `Authorization: Bearer` (scripts,
//! the CLI) or as a session cookie from the login form (the browser); state-changing requests
//! from a browser must also carry the session's CSRF token and come from this origin.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::PeerAddr;
use super::admission::Ticket;
use crate::app::App;
use crate::calls::search;
use crate::dashboard::{self, auth};
use crate::web::{self as h, Body};

/// Largest page of calls one request returns.
pub const MAX_PAGE: usize = 1000;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// Routes one request on the admin listener.
pub(super) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    // HEAD is GET without the body (RFC 9110): routed as GET; hyper leaves the body out and
    // keeps the headers, Content-Length included.
    let route = if method == Method::HEAD { Method::GET } else { method.clone() };
    match (&route, path.as_str()) {
        (&Method::GET, "/healthz") => return h::json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/login") => return dashboard::login_page(StatusCode::OK, ""),
        (&Method::POST, "/login") => return login(&app, req).await,
        // Stylesheet and script hold no data; the login page needs the stylesheet.
        (&Method::GET, p) if p.starts_with("/assets/") => {
            return dashboard::asset(p).unwrap_or_else(|| h::text(StatusCode::NOT_FOUND, "not found\n"));
        }
        _ => {}
    }
    let caller = match caller(&app, &req) {
        Ok(caller) => caller,
        Err(Denied::TooMany(wait)) => {
            let mut r = h::text(StatusCode::TOO_MANY_REQUESTS, "too many wrong admin tokens from this address; wait\n");
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(Denied::Anonymous) => {
            // A browser asking for a page goes to the login form; everything else gets a 401.
            if route == Method::GET && (path == "/" || path == "/index.html") {
                return redirect("/login");
            }
            let mut r = h::text(StatusCode::UNAUTHORIZED, "admin token required\n");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"callbox\""));
            return r;
        }
    };
    // Before the work, so that a slow answer cannot lose the connection to eviction meanwhile.
    if let Some(ticket) = req.extensions().get::<Arc<Ticket>>() {
        ticket.authenticate();
    }
    route_authenticated(&app, req, &route, &path, &caller).await
}

async fn route_authenticated(
    app: &App,
    req: Request<Incoming>,
    route: &Method,
    path: &str,
    caller: &auth::Caller,
) -> Response<Body> {
    if !matches!(*route, Method::GET) && !same_site(&req, caller) {
        log::warn!("admin: refused a cross-site {route} {path}");
        return h::text(StatusCode::FORBIDDEN, "cross-site request refused\n");
    }
    if let Some(asset) = (*route == Method::GET).then(|| dashboard::asset(path)).flatten() {
        return asset;
    }
    match (route, path) {
        (&Method::GET, "/api/v1/calls") => list_calls(app, req.uri()),
        (&Method::GET, "/api/v1/calls.csv") => app.dashboard.csv(req.uri()),
        (&Method::GET, "/api/v1/health") => health(app),
        (&Method::GET, "/api/v1/texts") => {
            h::json(StatusCode::OK, &serde_json::json!({ "texts": app.texts.messages() }))
        }
        (&Method::POST, "/api/v1/texts") => send_text(app, req).await,
        (&Method::GET, "/api/v1/texts/templates") => {
            h::json(StatusCode::OK, &serde_json::json!({ "templates": app.config.texts.templates }))
        }
        (&Method::GET, "/api/v1/events") => app.dashboard.events(req.headers(), req.uri()),
        (&Method::GET, "/api/v1/session") => session(caller),
        (&Method::GET, "/metrics") => app.dashboard.metrics(),
        (&Method::POST, "/logout") => logout(app, caller).await,
        (&Method::GET, "/api/v1/sessions") => list_sessions(app, caller),
        (&Method::DELETE, p) if p.starts_with("/api/v1/sessions/") => {
            revoke_session(app, &p["/api/v1/sessions/".len()..]).await
        }
        (&Method::GET, "/api/v1/indicators") => h::json(StatusCode::OK, &app.indicators.snapshot()),
        (_, "/api/v1/indicators/ack") => indicators_ack(app, req.method()).await,
        (&Method::GET, "/api/v1/call-backs") => call_backs(app),
        (&Method::GET, "/api/v1/stats/daily") => daily_stats(app, req.uri()),
        (&Method::POST, p) if p.starts_with("/api/v1/calls/") && p.ends_with("/follow-up") => {
            let sid = &p["/api/v1/calls/".len()..p.len() - "/follow-up".len()];
            follow_up(app, sid, req).await
        }
        (&Method::GET, p) if p.starts_with("/api/v1/threads/") => thread(app, &p["/api/v1/threads/".len()..]),
        (&Method::GET, p) => match p.strip_prefix("/api/v1/calls/") {
            Some(rest) => match rest.split_once('/') {
                None if !rest.is_empty() => get_call(app, rest),
                Some((sid, "recording")) if !sid.is_empty() => app.dashboard.recording(sid, req.headers()).await,
                _ => h::text(StatusCode::NOT_FOUND, "not found\n"),
            },
            None => h::text(StatusCode::NOT_FOUND, "not found\n"),
        },
        _ => h::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Why a request gets no access.
enum Denied {
    /// No credentials, or wrong ones.
    Anonymous,
    /// Too many wrong admin tokens from this address lately; wait this long.
    TooMany(std::time::Duration),
}

/// Who sent `req`. An `Authorization` header is the admin token or a failed guess, counted
/// against the client's address like a failed login; a stale session cookie is not (it is
/// what every browser sends after a restart, and 256 random bits are not guessed).
fn caller(app: &App, req: &Request<Incoming>) -> Result<auth::Caller, Denied> {
    if let Some(given) = req.headers().get(header::AUTHORIZATION) {
        let token = given.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map_or("", str::trim);
        let ip = peer_ip(req);
        return match app.sessions.check_token(ip, token, app.config.admin.token.expose()) {
            auth::TokenCheck::Valid => Ok(auth::Caller::Bearer),
            auth::TokenCheck::Wrong => {
                log::warn!("admin: wrong Bearer token from {ip}");
                Err(Denied::Anonymous)
            }
            auth::TokenCheck::TooMany(wait) => {
                log::debug!("admin: Bearer token from {ip} refused unchecked: too many wrong ones");
                Err(Denied::TooMany(wait))
            }
        };
    }
    let cookies = req.headers().get(header::COOKIE).and_then(|v| v.to_str().ok()).ok_or(Denied::Anonymous)?;
    auth::cookie(cookies, auth::COOKIE).and_then(|id| app.sessions.caller(id)).ok_or(Denied::Anonymous)
}

fn peer_ip(req: &Request<Incoming>) -> IpAddr {
    req.extensions().get::<PeerAddr>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip())
}

/// A browser's state-changing request must echo the session's CSRF token and, when the
/// browser says where it comes from, come from this very origin. Bearer callers carry no
/// ambient credential, so another site cannot forge their requests.
fn same_site(req: &Request<Incoming>, caller: &auth::Caller) -> bool {
    let auth::Caller::Session { csrf, .. } = caller else {
        return true;
    };
    let token_ok = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(csrf.as_bytes())));
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_ok = match req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin.split_once("://").is_some_and(|(_, authority)| authority == host),
    };
    let fetch_site_ok = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|s| s == "same-origin" || s == "none");
    token_ok && origin_ok && fetch_site_ok
}

async fn login(app: &App, req: Request<Incoming>) -> Response<Body> {
    let ip = peer_ip(&req);
    let (parts, body) = req.into_parts();
    let body = match h::read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let form = crate::twilio::form::parse(&body).unwrap_or_default();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let token = field("token").unwrap_or_default();
    let remember = field("remember").is_some_and(|v| !v.is_empty());
    let device = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("a browser");
    let device = describe_device(device);
    match app.sessions.login(ip, token.trim(), app.config.admin.token.expose(), remember, &device).await {
        auth::Login::Ok { id, max_age } => {
            log::info!("admin: login from {ip}{}", if remember { " (remembered)" } else { "" });
            let mut r = redirect("/");
            let lifetime = max_age.map(|a| format!("; Max-Age={}", a.as_secs())).unwrap_or_default();
            let cookie = format!("{}={id}; HttpOnly; SameSite=Strict; Path=/{lifetime}", auth::COOKIE);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        auth::Login::Unavailable(e) => h::call_log_unavailable("signing in", &e),
        auth::Login::Refused => {
            log::warn!("admin: wrong token from {ip}");
            dashboard::login_page(StatusCode::UNAUTHORIZED, "That is not the admin token.")
        }
        auth::Login::TooMany(wait) => {
            log::warn!("admin: too many failed logins from {ip}");
            let mut r = dashboard::login_page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts. Wait a minute.");
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

async fn logout(app: &App, caller: &auth::Caller) -> Response<Body> {
    if let auth::Caller::Session { key, .. } = caller
        && let Err(e) = app.sessions.revoke(key).await
    {
        return h::call_log_unavailable("signing out", &e);
    }
    let mut r = h::empty(StatusCode::NO_CONTENT);
    let expired = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&expired) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A short name for the browser a session signed in from ("Chrome on Android"), from its
/// User-Agent: enough for the owner to tell the tablet from the phone.
fn describe_device(user_agent: &str) -> String {
    let browser = [("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari")]
        .into_iter()
        .find(|(mark, _)| user_agent.contains(mark))
        .map_or("A browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "a Mac"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(mark, _)| user_agent.contains(mark))
    .map(|(_, name)| name);
    match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser.to_owned(),
    }
}

/// `GET /api/v1/sessions`: the signed-in devices, the caller's own marked `current`.
fn list_sessions(app: &App, caller: &auth::Caller) -> Response<Body> {
    let own = match caller {
        auth::Caller::Session { key, .. } => Some(key.as_str()),
        auth::Caller::Bearer => None,
    };
    match app.sessions.list() {
        Ok(list) => {
            let now = jiff::Timestamp::now();
            let sessions: Vec<serde_json::Value> = list
                .iter()
                .filter(|s| s.expires_at > now)
                .map(|s| {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    if let Some(fields) = v.as_object_mut() {
                        fields.insert("current".into(), (own == Some(s.id.as_str())).into());
                    }
                    v
                })
                .collect();
            h::json(StatusCode::OK, &serde_json::json!({ "sessions": sessions }))
        }
        Err(e) => h::call_log_unavailable("sessions", &e),
    }
}

/// `DELETE /api/v1/sessions/{id}`: signs that device out.
async fn revoke_session(app: &App, key: &str) -> Response<Body> {
    match app.sessions.revoke(key).await {
        Ok(true) => h::empty(StatusCode::NO_CONTENT),
        Ok(false) => h::text(StatusCode::NOT_FOUND, "no such session\n"),
        Err(e) => h::call_log_unavailable("signing a device out", &e),
    }
}

fn session(caller: &auth::Caller) -> Response<Body> {
    let csrf = match caller {
        auth::Caller::Session { csrf, .. } => Some(csrf.as_str()),
        auth::Caller::Bearer => None,
    };
    h::json(StatusCode::OK, &serde_json::json!({ "csrf_token": csrf }))
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut r = h::empty(StatusCode::SEE_OTHER);
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn list_calls(app: &App, uri: &http::Uri) -> Response<Body> {
    let limit = match h::query_param(uri, "limit") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return h::text(StatusCode::BAD_REQUEST, "limit must be a number from 1 to 1000\n"),
        },
    };
    let before = h::query_param(uri, "before").filter(|b| !b.is_empty());
    let query = match dashboard::search_query(uri, &app.config.indicators.time_zone(), search::WHOLE_LOG) {
        Ok(q) => q,
        Err(msg) => return h::text_owned(StatusCode::BAD_REQUEST, msg),
    };
    // Read before the calls: the live feed from here on misses nothing the list does not have.
    let live_from = app.calls.bus().now();
    match app.calls.store().search(query.from, query.to, before.as_deref(), limit, |c| query.matches(c)) {
        Ok(calls) => {
            let next_before = if calls.len() == limit { calls.last().map(|c| c.call_sid.clone()) } else { None };
            let body = serde_json::json!({ "calls": calls, "next_before": next_before, "live_from": live_from });
            h::json(StatusCode::OK, &body)
        }
        Err(e) => h::call_log_unavailable("admin API", &e),
    }
}

fn get_call(app: &App, sid: &str) -> Response<Body> {
    match app.calls.store().get(sid) {
        Ok(Some(call)) => {
            let mut body = serde_json::to_value(&call).unwrap_or_default();
            if let Some(fields) = body.as_object_mut() {
                fields.insert("texts".into(), serde_json::to_value(app.texts.for_call(sid)).unwrap_or_default());
            }
            h::json(StatusCode::OK, &body)
        }
        Ok(None) => h::text(StatusCode::NOT_FOUND, "no such call\n"),
        Err(e) => h::call_log_unavailable("admin API", &e),
    }
}

/// `GET /api/v1/call-backs`: missed calls and voicemails not yet called back or done, newest
/// first.
fn call_backs(app: &App) -> Response<Body> {
    match crate::calls::follow_up::call_back_list(app.calls.store()) {
        Ok(calls) => h::json(StatusCode::OK, &serde_json::json!({ "calls": calls })),
        Err(e) => h::call_log_unavailable("call-back list", &e),
    }
}

/// `GET /api/v1/stats/daily?days=30`: calls, missed calls and voicemails per day, for the
/// chart (days in the shop's time zone, today last).
fn daily_stats(app: &App, uri: &http::Uri) -> Response<Body> {
    use crate::calls::stats;
    let days = match h::query_param(uri, "days").map(|d| d.parse::<u32>()) {
        None => 30,
        Some(Ok(n)) if (1..=stats::MAX_DAYS).contains(&n) => n,
        Some(_) => return h::text(StatusCode::BAD_REQUEST, "days must be a number from 1 to 366\n"),
    };
    let tz = app.config.indicators.time_zone();
    let now = jiff::Timestamp::now();
    let today = now.to_zoned(tz.clone()).date();
    let start = today
        .checked_sub(jiff::Span::new().days(i64::from(days)))
        .ok()
        .and_then(|d| d.to_zoned(tz.clone()).ok())
        .map_or(jiff::Timestamp::MIN, |z| z.timestamp());
    match app.calls.store().between(start, now.saturating_add(jiff::SignedDuration::from_hours(1)).unwrap_or(now)) {
        Ok(calls) => h::json(StatusCode::OK, &serde_json::json!({ "days": stats::daily(&calls, &tz, today, days) })),
        Err(e) => h::call_log_unavailable("daily stats", &e),
    }
}

/// `POST /api/v1/calls/{sid}/follow-up` with `{"action": "heard" | "called-back" | "done" |
/// "reopen" | "note", "note": "…"}`: the owner's step, on disk before the answer (the call's
/// record after it).
async fn follow_up(app: &App, sid: &str, req: Request<Incoming>) -> Response<Body> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Step {
        action: String,
        #[serde(default)]
        note: Option<String>,
    }
    let step: Step =
        match read_json(req, "{\"action\": \"called-back\"} or {\"action\": \"note\", \"note\": \"…\"}").await {
            Ok(s) => s,
            Err(r) => return r,
        };
    use crate::calls::follow_up::{Action, event};
    let now = jiff::Timestamp::now();
    let event = match Action::named(&step.action).and_then(|a| event(sid, a, step.note.as_deref(), now)) {
        Ok(e) => e,
        Err(e) => return h::json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e.to_string() })),
    };
    match app.calls.follow_up(event).await {
        Ok(Some(call)) => h::json(StatusCode::OK, &call),
        Ok(None) => h::text(StatusCode::NOT_FOUND, "no such call\n"),
        Err(e) => h::call_log_unavailable("admin API", &e),
    }
}

/// The JSON body of an owner's request, or the 4xx that says what is wrong with it.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    expected: &str,
) -> Result<T, Response<Body>> {
    let (parts, body) = req.into_parts();
    let json = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !json.to_ascii_lowercase().starts_with("application/json") {
        return Err(h::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/json\n"));
    }
    let body = h::read_body(&parts.headers, body).await.map_err(|e| e.response())?;
    serde_json::from_slice(&body).map_err(|e| {
        let why = format!("expected {expected}: {e}");
        h::json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": why }))
    })
}

/// `GET /api/v1/threads/{number}`: the texts with one customer, both ways.
fn thread(app: &App, number: &str) -> Response<Body> {
    let number = percent_encoding::percent_decode_str(number).decode_utf8_lossy();
    if !crate::config::is_e164(&number) {
        return h::text(StatusCode::BAD_REQUEST, "the thread's number must be E.164, e.g. %2B15035550123\n");
    }
    h::json(StatusCode::OK, &app.texts.thread(&number))
}

/// `POST /api/v1/texts` with `{"to": "+1…", "body": "…"}`: the owner's text, through the outbox.
async fn send_text(app: &App, req: Request<Incoming>) -> Response<Body> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewText {
        to: String,
        body: String,
    }
    use crate::texts::ReplyError as E;
    let text: NewText = match read_json(req, "{\"to\": \"+1…\", \"body\": \"…\"}").await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match app.texts.reply(text.to.trim(), &text.body, jiff::Timestamp::now()).await {
        Ok(m) => h::json(StatusCode::ACCEPTED, &m),
        Err(E::Store(e)) => h::call_log_unavailable("admin API", &e),
        Err(e) => {
            let status = match e {
                E::NotTextable(_) | E::Empty | E::TooLong(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            h::json(status, &serde_json::json!({ "error": e.to_string() }))
        }
    }
}

fn health(app: &App) -> Response<Body> {
    let size = app.calls.store().size_on_disk().ok();
    let store_error = app.calls.store().fault();
    // Degraded: the call log refuses writes or lost something at start, or the certificate
    // Twilio is shown has expired.
    let degraded =
        app.calls.write_failed() || store_error.is_some() || app.tls.status().borrow().expired(jiff::Timestamp::now());
    h::json(
        StatusCode::OK,
        &serde_json::json!({
            "status": if degraded { "degraded" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": app.started.elapsed().as_secs(),
            "calls": app.calls.store().count(),
            "store_bytes": size,
            "store_error": store_error,
            "public_url": app.config.public_url.origin(),
            "tls": &*app.tls.status().borrow(),
            "tls_fault": app.tls.status().borrow().fault(jiff::Timestamp::now()),
            "texts": app.texts.summary(),
        }),
    )
}

/// `POST /api/v1/indicators/ack`: the owner heard the messages; answers with the new state.
async fn indicators_ack(app: &App, method: &Method) -> Response<Body> {
    if method != Method::POST {
        let mut r = h::text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    // On disk first: after a restart the message light must still say what the owner heard.
    if let Err(e) = app.calls.mark_all_heard(jiff::Timestamp::now()).await {
        return h::call_log_unavailable("marking the messages as heard", &e);
    }
    let n = app.indicators.acknowledge();
    let snapshot = app.indicators.wait_acknowledged(n, std::time::Duration::from_secs(2)).await;
    h::json(StatusCode::OK, &snapshot)
}
