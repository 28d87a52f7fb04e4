//! The port-80 listener for HTTP-01: answers `/.well-known/acme-challenge/<token>` while an
//! order runs and redirects everything else to the https origin.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PREFIX: &str = "/.well-known/acme-challenge/";
/// Few validators and browsers ever come here; a small cap keeps port 80 cheap.
const MAX_CONNECTIONS: usize = 32;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Tokens currently being validated and their key authorizations.
#[derive(Debug, Default)]
pub struct Http01Tokens(Mutex<HashMap<String, String>>);

impl Http01Tokens {
    /// Answers `token` with `key_authorization` until removed.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        crate::sync::lock(&self.0).insert(token.to_owned(), key_authorization.to_owned());
    }
    /// Stops answering `token`.
    pub fn remove(&self, token: &str) {
        crate::sync::lock(&self.0).remove(token);
    }
    /// Forgets every token (the order is over).
    pub fn clear(&self) {
        crate::sync::lock(&self.0).clear();
    }
    fn get(&self, token: &str) -> Option<String> {
        crate::sync::lock(&self.0).get(token).cloned()
    }
}

fn answer(
    tokens: &Http01Tokens,
    https_origin: &str,
    req: &http::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(PREFIX) {
        return match tokens.get(token) {
            Some(ka) => {
                log::info!("tls: answered HTTP-01 challenge for token {token}");
                let mut r = Response::new(Full::new(Bytes::from(ka)));
                r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
                r
            }
            None => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"no such challenge\n")));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        };
    }
    let target = format!("{https_origin}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut r = Response::new(Full::new(Bytes::from_static(b"this box speaks https\n")));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    match header::HeaderValue::from_str(&target) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::BAD_REQUEST,
    }
    r
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tokens: Arc<Http01Tokens>,
    https_origin: String,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let origin: Arc<str> = https_origin.into();
    // A CA validates from a handful of addresses, a few connections each.
    let mut listener = crate::net::CappedListener::new("tls: http-01", listener, limit, MAX_CONNECTIONS / 4);
    while let Some((slot, stream, peer)) = listener.accept(&shutdown).await {
        let tokens = tokens.clone();
        let origin = origin.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let r = answer(&tokens, &origin, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("tls: http-01 connection from {peer}: {e}");
            }
            drop(slot);
        });
    }
}
