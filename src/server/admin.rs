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
        (&Method::GET, "/api/v1/events") => app.dashboard.events(),
        (&Method::GET, "/api/v1/session") => session(caller),
        (&Method::GET, "/metrics") => app.dashboard.metrics(),
        (&Method::POST, "/logout") => logout(app, caller),
        (&Method::GET, "/api/v1/indicators") => h::json(StatusCode::OK, &app.indicators.snapshot()),
        (_, "/api/v1/indicators/ack") => indicators_ack(app, req.method()).await,
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
    let token = crate::twilio::form::parse(&body)
        .ok()
        .and_then(|f| f.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v))
        .unwrap_or_default();
    match app.sessions.login(ip, token.trim(), app.config.admin.token.expose()) {
        auth::Login::Ok(id) => {
            log::info!("admin: login from {ip}");
            let mut r = redirect("/");
            let cookie = format!(
                "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                auth::COOKIE,
                auth::SESSION_LIFETIME.as_secs()
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
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

fn logout(app: &App, caller: &auth::Caller) -> Response<Body> {
    if let auth::Caller::Session { id, .. } = caller {
        app.sessions.logout(id);
    }
    let mut r = h::empty(StatusCode::NO_CONTENT);
    let expired = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&expired) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
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
    match app.calls.store().list(limit, before.as_deref()) {
        Ok(calls) => {
            let next_before = if calls.len() == limit { calls.last().map(|c| c.call_sid.clone()) } else { None };
            h::json(StatusCode::OK, &serde_json::json!({ "calls": calls, "next_before": next_before }))
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
    let (parts, body) = req.into_parts();
    let json = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !json.to_ascii_lowercase().starts_with("application/json") {
        return h::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/json\n");
    }
    let body = match h::read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let text: NewText = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("expected {{\"to\": \"+1…\", \"body\": \"…\"}}: {e}");
            return h::json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": why }));
        }
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
    if let Err(e) = crate::calls::heard::mark_all_heard(app.calls.store(), jiff::Timestamp::now()).await {
        return h::call_log_unavailable("marking the messages as heard", &e);
    }
    let n = app.indicators.acknowledge();
    let snapshot = app.indicators.wait_acknowledged(n, std::time::Duration::from_secs(2)).await;
    h::json(StatusCode::OK, &snapshot)
}
