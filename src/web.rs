//! Small HTTP helpers shared by everything that answers HTTP (both listeners, the dashboard,
//! the media-stream upgrade): response builders and bounded body reading.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

/// Largest request body accepted; Twilio's webhook forms are a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time allowed for a request body to arrive once the headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than [`MAX_BODY_BYTES`].
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The client stopped sending before the body was complete.
    #[error("request body not received within {BODY_TIMEOUT:?}")]
    Timeout,
    /// The connection broke mid-body.
    #[error("request body could not be read: {0}")]
    Broken(Box<dyn std::error::Error + Send + Sync>),
}

impl BodyError {
    /// The answer to send for this error.
    pub fn response(&self) -> Response<Body> {
        match self {
            Self::TooLarge => text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
            Self::Timeout => text(StatusCode::REQUEST_TIMEOUT, "request body timed out\n"),
            Self::Broken(_) => text(StatusCode::BAD_REQUEST, "request body could not be read\n"),
        }
    }
}

/// Reads a whole request body, refusing more than [`MAX_BODY_BYTES`] and slow senders.
pub async fn read_body(headers: &http::HeaderMap, body: Incoming) -> Result<Bytes, BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Broken(e)),
    }
}

/// A response with a plain-text body.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

/// A plain-text answer made at run time (a message naming what was wrong with a request).
pub fn text_owned(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", Bytes::from(body))
}

/// A response with a JSON body.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, "application/json", Bytes::from(bytes)),
        Err(e) => {
            log::error!("cannot encode JSON response: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// A TwiML document.
pub fn twiml(doc: String) -> Response<Body> {
    with_type(StatusCode::OK, "text/xml; charset=utf-8", Bytes::from(doc))
}

/// The answer while the call log cannot be read or written (logged with `context`): the
/// client (Twilio, the dashboard) may retry shortly; nothing was acknowledged.
pub fn call_log_unavailable(context: &str, error: &dyn std::fmt::Display) -> Response<Body> {
    log::error!("{context}: call log unavailable: {error}");
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "call log unavailable\n");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().boxed());
    *r.status_mut() = status;
    r
}

/// A response with a body of the given media type.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The path and query exactly as the client sent them.
pub fn raw_target(uri: &http::Uri) -> &str {
    uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
}

/// The value of a query parameter, percent-decoded.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    crate::twilio::form::parse(query.as_bytes()).ok()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}
