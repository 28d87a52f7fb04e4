//! The public listener: what Twilio calls. Every route but `/healthz` requires a valid
//! `X-Twilio-Signature`; call data is never served here.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use jiff::Timestamp;

use crate::app::App;
use crate::calls::{CallEvent, detail};
use crate::config::Open;
use crate::twilio::{form, twiml, webhook};
use crate::web::{self as h, Body};

/// Paths of the Twilio-facing routes.
pub mod paths {
    /// The voice URL of the Twilio number.
    pub const INCOMING_CALL: &str = "/api/v1/webhooks/incoming-call";
    /// The seed's alias of [`INCOMING_CALL`].
    pub const INCOMING_CALL_ALIAS: &str = "/api/v1/voice/incoming";
    /// The status callback URL of the Twilio number.
    pub const CALL_STATUS: &str = "/api/v1/webhooks/call-status";
    /// The seed's alias of [`CALL_STATUS`].
    pub const CALL_STATUS_ALIAS: &str = "/api/v1/webhooks/twilio/status";
    /// The front desk's `<Dial action>` (with `[hours]`).
    pub const DIAL_RESULT: &str = "/api/v1/webhooks/dial-result";
    /// The shop number's messaging webhook: texts customers send.
    pub const INCOMING_SMS: &str = "/api/v1/webhooks/incoming-sms";
    /// The `StatusCallback` of the texts the box sends.
    pub const MESSAGE_STATUS: &str = "/api/v1/webhooks/message-status";
    /// The `<Stream statusCallback>` the TwiML names.
    pub const STREAM_STATUS: &str = "/api/v1/webhooks/stream-status";
    /// The media-stream WebSocket.
    pub const MEDIA_STREAM: &str = "/api/v1/voice/media-stream";
    /// Liveness.
    pub const HEALTHZ: &str = "/healthz";
}

#[derive(Clone, Copy)]
enum Webhook {
    IncomingCall,
    CallStatus,
    StreamStatus,
    MessageStatus,
    DialResult,
    IncomingSms,
}

/// Routes one request on the public listener.
pub(super) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let webhook = match req.uri().path() {
        paths::HEALTHZ => return health(&app, req.method()),
        paths::INCOMING_CALL | paths::INCOMING_CALL_ALIAS => Webhook::IncomingCall,
        paths::CALL_STATUS | paths::CALL_STATUS_ALIAS => Webhook::CallStatus,
        paths::STREAM_STATUS => Webhook::StreamStatus,
        paths::MESSAGE_STATUS => Webhook::MessageStatus,
        paths::DIAL_RESULT => Webhook::DialResult,
        paths::INCOMING_SMS => Webhook::IncomingSms,
        paths::MEDIA_STREAM => return super::upgrade::media_stream(&app, req).await,
        _ => return h::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if req.method() != Method::POST {
        let mut r = h::text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return r;
    }
    let start = std::time::Instant::now();
    let response = webhook_request(&app, webhook, req).await;
    let route = match webhook {
        Webhook::IncomingCall => "incoming-call",
        Webhook::CallStatus => "call-status",
        Webhook::StreamStatus => "stream-status",
        Webhook::MessageStatus => "message-status",
        Webhook::DialResult => "dial-result",
        Webhook::IncomingSms => "incoming-sms",
    };
    app.metrics
        .webhook_seconds
        .get_or_create(&crate::metrics::RouteLabels { route: route.to_owned() })
        .observe(start.elapsed().as_secs_f64());
    response
}

fn health(app: &App, method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return h::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    // An expired certificate is an outage too: Twilio's handshakes fail.
    let ok = !app.calls.write_failed() && !app.tls.status().borrow().expired(jiff::Timestamp::now());
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    h::json(status, &serde_json::json!({ "status": if ok { "ok" } else { "degraded" } }))
}

async fn webhook_request(app: &App, webhook: Webhook, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return h::text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/x-www-form-urlencoded\n");
    }
    let body = match h::read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => {
            log::warn!("refused webhook {}: {e}", parts.uri.path());
            return e.response();
        }
    };
    let fields = match form::parse(&body) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("refused webhook {}: malformed form body: {e}", parts.uri.path());
            return h::text(StatusCode::BAD_REQUEST, "malformed form body\n");
        }
    };
    let target = h::raw_target(&parts.uri);
    let signature = parts.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if signature.is_empty() {
        log::warn!("refused webhook {target}: no X-Twilio-Signature header (not from Twilio?)");
        return h::text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    match app.validator.validate_form(target, &fields, signature) {
        Some(how) => log::debug!("signature of {target} valid ({how:?})"),
        None => {
            log::warn!(
                "refused webhook {target}: signature mismatch; check that public_url ({}) matches the URL in the Twilio console and that twilio.auth_token is the account's primary Auth Token",
                app.config.public_url
            );
            return h::text(StatusCode::FORBIDDEN, "forbidden\n");
        }
    }

    let now = Timestamp::now();
    let event = match webhook {
        Webhook::IncomingCall => webhook::incoming_call(&fields, now),
        Webhook::CallStatus => webhook::status_callback(&fields, now),
        Webhook::StreamStatus => webhook::stream_status(&fields, now),
        Webhook::MessageStatus => return message_status(app, target, &fields).await,
        Webhook::DialResult => webhook::dial_result(&fields, now),
        Webhook::IncomingSms => return incoming_sms(app, target, &fields, now).await,
    };
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            log::warn!("refused webhook {target}: {e}");
            return h::text(StatusCode::BAD_REQUEST, "missing or invalid Twilio params\n");
        }
    };
    let call_sid = event.call_sid.clone();
    crate::logging::in_call(&call_sid, accept(app, webhook, &fields, event)).await
}

/// Records a checked webhook's event and answers Twilio.
async fn accept(app: &App, webhook: Webhook, fields: &[(String, String)], mut event: CallEvent) -> Response<Body> {
    // Where the call goes is decided once, when it arrives, and kept on the call with the
    // reason: the owner can see why a call rang the front desk or not.
    let open = matches!(webhook, Webhook::IncomingCall).then(|| open_now(app, event.received_at)).flatten();
    if let Some(open) = &open {
        let (kind, reason) = match open {
            Open::Yes(reason) => ("front-desk", reason),
            Open::No(reason) => ("box", reason),
        };
        event.details.insert(detail::ROUTE.into(), kind.into());
        event.details.insert(detail::ROUTE_REASON.into(), reason.clone());
    }
    if let Err(resp) = record(app, event.clone()).await {
        return resp;
    }
    match webhook {
        Webhook::IncomingCall => match open {
            Some(Open::Yes(_)) => h::twiml(dial_front_desk(app)),
            Some(Open::No(_)) => h::twiml(answer_call(app, fields, Hours::Closed)),
            None => h::twiml(answer_call(app, fields, Hours::Unset)),
        },
        Webhook::DialResult => match event.detail(detail::DIAL_STATUS) {
            Some("completed" | "answered") => h::twiml(twiml::hangup()),
            // Nobody picked up: the box takes the call, in its open-hours flow.
            _ => h::twiml(answer_call(app, fields, Hours::Open)),
        },
        Webhook::CallStatus | Webhook::StreamStatus | Webhook::MessageStatus | Webhook::IncomingSms => {
            h::empty(StatusCode::NO_CONTENT)
        }
    }
}

/// Whether `[hours]` has the shop open at `now`; `None` when it decides nothing (no hours set,
/// or no front desk to ring).
fn open_now(app: &App, now: Timestamp) -> Option<Open> {
    let hours = &app.config.hours;
    (hours.is_set() && app.config.twilio.front_desk.is_some())
        .then(|| hours.open_at(now, &hours.zone(app.config.indicators.time_zone())))
}

/// What `[hours]` says to the box's own flow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hours {
    /// No `[hours]`: the flow as it always was, 0 dials the front desk.
    Unset,
    /// Open, and the front desk did not pick up.
    Open,
    /// Closed: the after-hours greeting and flow.
    Closed,
}

fn dial_front_desk(app: &App) -> String {
    let action = format!("{}{}", app.config.public_url.origin(), paths::DIAL_RESULT);
    twiml::DialFrontDesk {
        number: app.config.twilio.front_desk.as_deref().unwrap_or_default(),
        timeout_secs: app.config.hours.front_desk_ring_secs,
        action: &action,
    }
    .to_xml()
}

/// A customer's text: on disk before Twilio hears back; the answer sends nothing back (the
/// owner answers from the dashboard).
async fn incoming_sms(app: &App, target: &str, fields: &[(String, String)], now: Timestamp) -> Response<Body> {
    let sms = match webhook::incoming_sms(fields) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("refused webhook {target}: {e}");
            return h::text(StatusCode::BAD_REQUEST, "missing or invalid Twilio params\n");
        }
    };
    let inbound = crate::texts::Inbound {
        sid: sms.message_sid,
        from: sms.from,
        to: sms.to,
        body: sms.body,
        num_media: sms.num_media,
        received_at: now,
    };
    let sid = inbound.sid.clone();
    match app.texts.received(inbound).await {
        Ok(_) => h::twiml(twiml::empty_response()),
        Err(e) => h::call_log_unavailable(&format!("could not store text {sid}"), &e),
    }
}

/// Twilio's news of a text the box sent: stored before the answer, like every event.
async fn message_status(app: &App, target: &str, fields: &[(String, String)]) -> Response<Body> {
    let update = match webhook::message_status(fields) {
        Ok(u) => u,
        Err(e) => {
            log::warn!("refused webhook {target}: {e}");
            return h::text(StatusCode::BAD_REQUEST, "missing or invalid Twilio params\n");
        }
    };
    match app.texts.status_callback(&update.message_sid, &update.status, update.error_code).await {
        Ok(true) => h::empty(StatusCode::NO_CONTENT),
        // Not one of the box's texts (another app on the account): acknowledged, so Twilio
        // does not retry it, and ignored.
        Ok(false) => {
            log::info!("status {} of message {} ignored: not a text this box sent", update.status, update.message_sid);
            h::empty(StatusCode::NO_CONTENT)
        }
        Err(e) => h::call_log_unavailable(&format!("could not store status of message {}", update.message_sid), &e),
    }
}

/// Stores the event durably (then announces it); on failure, the 503 to answer Twilio with.
async fn record(app: &App, event: CallEvent) -> Result<(), Response<Body>> {
    let sid = event.call_sid.clone();
    match app.calls.record(event).await {
        Ok(_) => Ok(()),
        Err(e) => Err(h::call_log_unavailable(&format!("could not store event for {sid}"), &e)),
    }
}

/// The box's own flow: the media stream. With `[hours]` the stream is told whether the shop
/// is closed, and pressing 0 no longer dials the front desk (it rang already, or nobody is
/// there).
fn answer_call(app: &App, fields: &[(String, String)], hours: Hours) -> String {
    let stream_url = format!("{}{}", app.config.public_url.wss_origin(), paths::MEDIA_STREAM);
    let status_callback = format!("{}{}", app.config.public_url.origin(), paths::STREAM_STATUS);
    let mut params: Vec<(&str, &str)> =
        ["From", "To", "CallSid"].iter().map(|name| (*name, form::get(fields, name).unwrap_or(""))).collect();
    match hours {
        Hours::Unset => {}
        Hours::Open => params.push((crate::media::AFTER_HOURS_PARAM, "open")),
        Hours::Closed => params.push((crate::media::AFTER_HOURS_PARAM, "closed")),
    }
    let front_desk = app.config.twilio.front_desk.as_ref().filter(|_| hours == Hours::Unset);
    let fallthrough = match (front_desk, &app.config.twilio.goodbye) {
        (Some(number), _) => twiml::Fallthrough::Dial(number.clone()),
        (None, Some(message)) => twiml::Fallthrough::SayAndHangup(message.clone()),
        (None, None) => twiml::Fallthrough::SayAndHangup(DEFAULT_GOODBYE.into()),
    };
    twiml::ConnectStream {
        greeting: app.config.twilio.greeting.as_deref(),
        stream_url: &stream_url,
        status_callback: Some(&status_callback),
        parameters: &params,
        fallthrough: Some(&fallthrough),
    }
    .to_xml()
}

/// Said when the stream ends and no front desk is configured.
const DEFAULT_GOODBYE: &str = "Thank you for calling. Goodbye.";
