//! The one test helper: starts the real server in-process on loopback port 0 and talks to it
//! over real sockets.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use callbox::calls::Store;
use callbox::config::{Config, PublicUrl, Secret};
use callbox::server::{App, Server};
use callbox::twilio::signature;

/// The dev-style auth token every test server uses.
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A running server with its data dir.
pub struct TestServer {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    pub dir: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// A server with the default test configuration and a fresh data dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tweak` may change (public_url is set afterwards to the
    /// bound port unless `tweak` set a non-loopback one).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), tweak).await
    }

    /// A server on an existing data dir (to test restarts).
    pub async fn start_in(dir: Arc<tempfile::TempDir>, tweak: impl FnOnce(&mut Config)) -> Self {
        let public_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = public_listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let mut config = Config::dev(dir.path().to_owned(), Secret::new(AUTH_TOKEN), Secret::new(ADMIN_TOKEN))
            .with_public_url(PublicUrl::parse(&format!("http://127.0.0.1:{}", public.port())).unwrap());
        // Tests never drive a real speaker or real pins, even on a Pi or a laptop.
        config.indicators.leds = callbox::config::LedBackendChoice::Sim;
        config.indicators.speaker = callbox::config::SpeakerBackendChoice::Sim;
        tweak(&mut config);
        let store = Store::open(dir.path()).unwrap();
        let server = Server::new(App::new(config, store), public_listener, admin_listener);
        let app = server.app();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self { public, admin, app, dir, shutdown, task: Some(task) }
    }

    /// Stops the server gracefully and waits until the store is closed.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.dir.clone()
    }

    /// The URL Twilio would sign for `target` (path and query).
    pub fn signed_url(&self, target: &str) -> String {
        format!("{}{target}", self.app.config.public_url.origin())
    }

    /// Twilio's signature of a form POST to `target`.
    pub fn sign(&self, target: &str, params: &[(&str, &str)]) -> String {
        signature::compute(AUTH_TOKEN, &self.signed_url(target), &owned(params))
    }

    /// A correctly signed Twilio form POST.
    pub async fn post_signed(&self, target: &str, params: &[(&str, &str)]) -> Reply {
        let sig = self.sign(target, params);
        self.post_form(target, params, Some(&sig)).await
    }

    /// A form POST with the given signature header (or none).
    pub async fn post_form(&self, target: &str, params: &[(&str, &str)], signature: Option<&str>) -> Reply {
        let body = encode_form(params);
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(s) = signature {
            headers.push(("x-twilio-signature", s));
        }
        request(self.public, Method::POST, target, &headers, Bytes::from(body)).await
    }

    /// A GET on the admin listener, with the admin token when `token` is true.
    pub async fn admin_get(&self, target: &str, token: bool) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers: Vec<(&str, &str)> = if token { vec![("authorization", auth.as_str())] } else { vec![] };
        request(self.admin, Method::GET, target, &headers, Bytes::new()).await
    }

    /// A request with the admin token and an empty body on the admin listener.
    pub async fn admin_request(&self, method: Method, target: &str) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        request(self.admin, method, target, &[("authorization", auth.as_str())], Bytes::new()).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Form-encodes params as Twilio does (UTF-8, `+` for space).
pub fn encode_form(params: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

pub fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(addr: SocketAddr, method: Method, target: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(target).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

/// Twilio's usual incoming-call params for a call.
pub fn incoming_params(call_sid: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", "AC00000000000000000000000000000001".into()),
        ("ApiVersion", "2010-04-01".into()),
        ("CallSid", call_sid.into()),
        ("CallStatus", "ringing".into()),
        ("Direction", "inbound".into()),
        ("From", "+15035550123".into()),
        ("To", "+15035550100".into()),
    ]
}

/// Borrows a list of owned params.
pub fn refs<'a>(params: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
