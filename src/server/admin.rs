//! The admin listener on the shop LAN: the owner's API. Everything but `/healthz` requires
//! `Authorization: Bearer <admin token>`.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::App;
use super::http::{self as h, Body};

/// Largest page of calls one request returns.
pub const MAX_PAGE: usize = 1000;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// Routes one request on the admin listener.
pub(super) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return h::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    }
    if !authorized(&app, &req) {
        let mut r = h::text(StatusCode::UNAUTHORIZED, "admin token required\n");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"callbox\""));
        return r;
    }
    if path == "/api/v1/indicators/ack" {
        return indicators_ack(&app, req.method()).await;
    }
    if req.method() != Method::GET {
        return h::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match path.as_str() {
        "/api/v1/indicators" => h::json(StatusCode::OK, &app.indicators.snapshot()),
        "/api/v1/calls" => list_calls(&app, req.uri()),
        "/api/v1/health" => health(&app),
        p => match p.strip_prefix("/api/v1/calls/") {
            Some(sid) if !sid.is_empty() && !sid.contains('/') => get_call(&app, sid),
            _ => h::text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

fn authorized(app: &App, req: &Request<Incoming>) -> bool {
    let expected = app.config.admin.token.expose().as_bytes();
    let Some(given) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(token) = given.strip_prefix("Bearer ").map(str::trim) else {
        return false;
    };
    !expected.is_empty() && bool::from(token.as_bytes().ct_eq(expected))
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
    match app.store.list(limit, before.as_deref()) {
        Ok(calls) => {
            let next_before = if calls.len() == limit { calls.last().map(|c| c.call_sid.clone()) } else { None };
            h::json(StatusCode::OK, &serde_json::json!({ "calls": calls, "next_before": next_before }))
        }
        Err(e) => store_error(e),
    }
}

fn get_call(app: &App, sid: &str) -> Response<Body> {
    match app.store.get(sid) {
        Ok(Some(call)) => h::json(StatusCode::OK, &call),
        Ok(None) => h::text(StatusCode::NOT_FOUND, "no such call\n"),
        Err(e) => store_error(e),
    }
}

fn health(app: &App) -> Response<Body> {
    let size = app.store.size_on_disk().ok();
    h::json(
        StatusCode::OK,
        &serde_json::json!({
            "status": if app.store_failed.load(std::sync::atomic::Ordering::Relaxed) { "degraded" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": app.started.elapsed().as_secs(),
            "calls": app.store.count(),
            "store_bytes": size,
            "public_url": app.config.public_url.origin(),
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
    let n = app.indicators.acknowledge();
    let snapshot = app.indicators.wait_acknowledged(n, std::time::Duration::from_secs(2)).await;
    h::json(StatusCode::OK, &snapshot)
}

fn store_error(e: crate::calls::StoreError) -> Response<Body> {
    log::error!("admin API: call log read failed: {e}");
    h::text(StatusCode::SERVICE_UNAVAILABLE, "call log unavailable\n")
}
