//! The one test helper: starts the real server in-process on loopback port 0 and talks to it
//! over real sockets.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod banner;
pub mod needs;
pub mod pebble;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub mod twilio_ws;

pub use banner::Banner;
pub use needs::{Need, require};

use callbox::app::App;
use callbox::calls::Store;
use callbox::config::{Config, PublicUrl, Secret};
use callbox::server::Server;
use callbox::twilio::signature;

/// The dev-style auth token every test server uses.
pub const AUTH_TOKEN: &str = "e3b0c44298fc1c149afbf4c8996fb924";
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
        let shutdown = CancellationToken::new();
        let app = App::new(config, store, callbox::tls::Tls::off(), shutdown.clone());
        let server = Server::new(app, public_listener, admin_listener);
        let app = server.app();
        let task = tokio::spawn(server.run());
        Self { public, admin, app, dir, shutdown, task: Some(task) }
    }

    /// A server whose public listener is already bound (the test needs its port first, e.g.
    /// to tell Pebble where to validate) and which starts TLS as `tweak` configures it.
    pub async fn start_tls(
        dir: Arc<tempfile::TempDir>,
        public_listener: TcpListener,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Self, callbox::tls::TlsError> {
        // The box's log goes to the test's captured output (shown when a test fails).
        let _ = env_logger::builder().is_test(true).filter_module("callbox", log::LevelFilter::Info).try_init();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = public_listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let mut config = Config::dev(dir.path().to_owned(), Secret::new(AUTH_TOKEN), Secret::new(ADMIN_TOKEN))
            .with_public_url(PublicUrl::parse(&format!("https://{}:{}", pebble::DOMAIN, public.port())).unwrap());
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let tls = callbox::tls::Tls::start(&config, shutdown.clone(), None).await?;
        let store = Store::open(dir.path()).unwrap();
        let server = Server::new(App::new(config, store, tls, shutdown.clone()), public_listener, admin_listener);
        let app = server.app();
        let task = tokio::spawn(server.run());
        Ok(Self { public, admin, app, dir, shutdown, task: Some(task) })
    }

    /// A TLS connection to the public listener as `shop.example.test`, trusting only `roots`.
    pub async fn tls_conn(&self, roots: &[CertificateDer<'static>]) -> std::io::Result<TlsConn> {
        TlsConn::connect(self.public, pebble::DOMAIN, roots).await
    }

    /// A correctly signed Twilio form POST on an open TLS connection.
    pub async fn post_signed_on(&self, conn: &mut TlsConn, target: &str, params: &[(&str, &str)]) -> Reply {
        let sig = self.sign(target, params);
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("x-twilio-signature", sig.as_str())];
        conn.request(Method::POST, target, &headers, Bytes::from(encode_form(params))).await.unwrap()
    }

    /// Waits (bounded) until the TLS status satisfies `pred`; panics with the status otherwise.
    pub async fn wait_tls(
        &self,
        what: &str,
        pred: impl Fn(&callbox::tls::TlsStatus) -> bool,
    ) -> callbox::tls::TlsStatus {
        let mut rx = self.app.tls.status();
        let result = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return s.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match result {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}; TLS status: {:#?}", *rx.borrow()),
        }
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

/// A real rustls client connection to `addr` with SNI `server_name`, trusting only `roots`.
pub async fn tls_stream(
    addr: SocketAddr,
    server_name: &str,
    roots: &[CertificateDer<'static>],
    alpn: Option<&[u8]>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).map_err(std::io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// A kept-alive HTTPS/1.1 client connection with a real rustls client.
pub struct TlsConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The chain the server presented, leaf first.
    pub peer_chain: Vec<CertificateDer<'static>>,
    host: String,
}

impl TlsConn {
    /// Connects to `addr` with SNI `server_name`, trusting only `roots`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        roots: &[CertificateDer<'static>],
    ) -> std::io::Result<Self> {
        let stream = tls_stream(addr, server_name, roots, Some(b"http/1.1")).await?;
        let peer_chain = stream.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Self { sender, peer_chain, host: format!("{server_name}:{}", addr.port()) })
    }

    /// One request on this connection.
    pub async fn request(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, hyper::Error> {
        let mut req = Request::builder().method(method).uri(target).header("host", self.host.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.sender.send_request(req.body(Full::new(body)).unwrap()).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, headers, body })
    }

    /// A GET on this connection.
    pub async fn get(mut self, target: &str) -> Result<Reply, hyper::Error> {
        self.request(Method::GET, target, &[], Bytes::new()).await
    }

    /// The serial (hex, as the box reports it) of the leaf the server presented.
    pub fn leaf_serial(&self) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(self.peer_chain[0].as_ref()).unwrap();
        cert.tbs_certificate.raw_serial_as_string()
    }

    /// The DNS names of the leaf the server presented.
    pub fn leaf_dns_names(&self) -> Vec<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.peer_chain[0].as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect()
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

/// Signs and sends webhooks like Twilio does, to a box in dev mode (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct TwilioClient {
    pub public: SocketAddr,
    pub auth_token: String,
}

impl TwilioClient {
    /// A correctly signed form POST; `Err` when the connection fails (server gone).
    pub async fn try_post_signed(&self, target: &str, params: &[(&str, &str)]) -> Result<Reply, hyper::Error> {
        let url = format!("http://127.0.0.1:{}{target}", self.public.port());
        let sig = signature::compute(&self.auth_token, &url, &owned(params));
        let Ok(stream) = TcpStream::connect(self.public).await else {
            return Err(hyper_closed().await);
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::post(target)
            .header("host", self.public.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(Full::new(Bytes::from(encode_form(params))))
            .unwrap();
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, headers, body })
    }

    /// A correctly signed form POST that must get an answer.
    pub async fn post_signed(&self, target: &str, params: &[(&str, &str)]) -> Reply {
        self.try_post_signed(target, params).await.unwrap()
    }

    /// Opens the media stream as Twilio does (the upgrade signed over the `wss://` URL).
    pub async fn ws_connect(&self) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let signed = format!("wss://127.0.0.1:{}{MEDIA_PATH}", self.public.port());
        let mut req = format!("ws://{}{MEDIA_PATH}", self.public).into_client_request().unwrap();
        let sig = signature::compute(&self.auth_token, &signed, &[]);
        req.headers_mut().insert("x-twilio-signature", sig.parse().unwrap());
        let tcp: Box<dyn Io> = Box::new(TcpStream::connect(self.public).await.unwrap());
        tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws).unwrap()
    }
}

/// A `hyper::Error` for "connection refused" (hyper has no public constructor).
async fn hyper_closed() -> hyper::Error {
    let (a, b) = tokio::io::duplex(64);
    drop(b);
    match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(a)).await {
        Err(e) => e,
        Ok((mut sender, conn)) => {
            tokio::spawn(conn);
            sender.send_request(Request::new(Full::new(Bytes::new()))).await.unwrap_err()
        }
    }
}

/// The box under test, as a program and its leading arguments: the host build, or (CI) the
/// aarch64 build under qemu-user with `CALLBOX_TEST_BIN=… CALLBOX_TEST_RUNNER=qemu-aarch64-static`.
/// Twilio's side (`simulate-call`, `calls`) always uses the host build.
pub fn box_program() -> Vec<String> {
    let bin = std::env::var("CALLBOX_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_callbox").to_owned());
    let runner = std::env::var("CALLBOX_TEST_RUNNER").ok().filter(|r| !r.is_empty());
    runner.into_iter().chain([bin]).collect()
}

/// The `callbox` binary running `serve --dev` as a child process, on loopback port 0.
pub struct BinServer {
    child: std::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub auth_token: String,
    pub admin_token: String,
    pub data_dir: std::path::PathBuf,
}

impl BinServer {
    /// Starts `callbox serve --dev` on `data_dir` and waits until it prints its addresses.
    pub fn spawn_dev(data_dir: &std::path::Path) -> Self {
        let program = box_program();
        let mut command = std::process::Command::new(&program[0]);
        command.args(&program[1..]);
        Self::spawn_dev_with(command, data_dir)
    }

    /// Starts `callbox serve --dev` inside `ns` (its tmpfs is mounted only there); `data_dir`
    /// is the path as the box sees it.
    pub fn spawn_dev_in(ns: &TmpfsNamespace, data_dir: &std::path::Path) -> Self {
        Self::spawn_dev_with(ns.command(&box_program()), data_dir)
    }

    /// Runs `command` (the box program) with `serve --dev` arguments on `data_dir`.
    fn spawn_dev_with(mut command: std::process::Command, data_dir: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = command
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("CALLBOX_TWILIO_AUTH_TOKEN")
            .env_remove("CALLBOX_ADMIN_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = Banner::read(&mut lines, true);
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            public: banner.public(),
            admin: banner.admin(),
            auth_token: banner.auth_token(),
            admin_token: banner.admin_token(),
            data_dir: data_dir.to_owned(),
        }
    }

    /// A Twilio stand-in that signs requests for this child; cheap to clone into tasks.
    pub fn twilio(&self) -> TwilioClient {
        TwilioClient { public: self.public, auth_token: self.auth_token.clone() }
    }

    /// A correctly signed form POST to the child.
    pub async fn post_signed(&self, target: &str, params: &[(&str, &str)]) -> Reply {
        self.twilio().post_signed(target, params).await
    }

    /// A GET on the admin listener with the admin token.
    pub async fn admin_get(&self, target: &str) -> Reply {
        let auth = format!("Bearer {}", self.admin_token);
        request(self.admin, Method::GET, target, &[("authorization", auth.as_str())], Bytes::new()).await
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private mount namespace with a small tmpfs, kept alive by a holder process so that a box
/// can be stopped and started again on the same (small) file system. Needs root and
/// util-linux (`unshare`, `nsenter`). The host never sees the mount: the test reaches it
/// through the holder's `/proc/<pid>/root`.
pub struct TmpfsNamespace {
    holder: std::process::Child,
    mount: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TmpfsNamespace {
    /// Mounts a tmpfs of `size` (e.g. `16m`) in a new mount namespace.
    pub fn new(size: &str) -> Self {
        use std::io::BufRead;
        require(&[Need::Root, needs::UNSHARE, needs::NSENTER]);
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let script = r#"mount -t tmpfs -o size="$1",mode=0700 tmpfs "$2" && echo mounted && exec sleep 100000"#;
        let mut holder = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh", size])
            .arg(&mount)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "mounted", "mounting the tmpfs failed");
        Self { holder, mount, _dir: dir }
    }

    /// The tmpfs as processes in the namespace see it.
    pub fn inside(&self) -> &std::path::Path {
        &self.mount
    }

    /// The tmpfs as this process reaches it (through the holder's root).
    pub fn outside(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/proc/{}/root{}", self.holder.id(), self.mount.display()))
    }

    /// `program` run inside the namespace (nsenter execs it: the child's pid is the program's).
    pub fn command(&self, program: &[String]) -> std::process::Command {
        let mut command = std::process::Command::new("nsenter");
        command.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id())).arg("--").args(program);
        command
    }
}

impl Drop for TmpfsNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The media-stream WebSocket path.
pub const MEDIA_PATH: &str = "/api/v1/voice/media-stream";

/// A WebSocket client connection to the box.
pub type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// A byte stream a WebSocket can run on: plain TCP (`ws://`) or TLS (`wss://`).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

impl TestServer {
    /// The signature Twilio puts on the media-stream upgrade: over the `wss://` URL, no params.
    pub fn media_signature(&self) -> String {
        let url = format!("{}{MEDIA_PATH}", self.app.config.public_url.wss_origin());
        signature::compute(AUTH_TOKEN, &url, &[])
    }

    /// Opens the media stream as Twilio does (signed upgrade).
    pub async fn ws_connect(&self) -> Ws {
        self.ws_connect_with(Some(&self.media_signature())).await.unwrap()
    }

    /// Opens the media stream with the given signature header (or none).
    pub async fn ws_connect_with(&self, signature: Option<&str>) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut req = format!("ws://{}{MEDIA_PATH}", self.public).into_client_request().unwrap();
        if let Some(s) = signature {
            req.headers_mut().insert("x-twilio-signature", s.parse().unwrap());
        }
        let tcp: Box<dyn Io> = Box::new(TcpStream::connect(self.public).await.unwrap());
        tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
    }

    /// Opens the media stream as Twilio does, over TLS (`wss://`), trusting only `roots`.
    pub async fn wss_connect(&self, roots: &[CertificateDer<'static>]) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let stream = tls_stream(self.public, pebble::DOMAIN, roots, None).await.unwrap();
        let url = format!("wss://{}:{}{MEDIA_PATH}", pebble::DOMAIN, self.public.port());
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("x-twilio-signature", self.media_signature().parse().unwrap());
        let io: Box<dyn Io> = Box::new(stream);
        tokio_tungstenite::client_async(req, io).await.map(|(ws, _)| ws).unwrap()
    }

    /// Waits (bounded) until the call's media stream has an outcome, and returns the record.
    /// The outcome is saved just before the session announces its `stopped` event, so the
    /// wait is on the call bus; the store is read once after subscribing (the stream may have
    /// ended already) and again if this subscriber falls behind.
    pub async fn wait_stream_outcome(&self, call_sid: &str) -> callbox::calls::CallRecord {
        use tokio::sync::broadcast::error::RecvError;
        let ended = |r: &callbox::calls::CallRecord| r.stream.as_ref().is_some_and(|s| s.outcome.is_some());
        let stored = || self.app.calls.store().get(call_sid).unwrap().filter(|r| ended(r));
        let mut changes = self.app.calls.subscribe();
        let wait = async {
            if let Some(r) = stored() {
                return r;
            }
            loop {
                match changes.recv().await {
                    Ok(m) if m.record.call_sid == call_sid && ended(&m.record) => return m.record,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if let Some(r) = stored() {
                            return r;
                        }
                    }
                    Err(RecvError::Closed) => panic!("the call bus closed before {call_sid}'s stream ended"),
                }
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), wait).await {
            Ok(record) => record,
            Err(_) => panic!("call {call_sid} never got a stream outcome: {:?}", self.app.calls.store().get(call_sid)),
        }
    }
}

/// A TCP connection to `server` from the loopback address `from` (all of 127/8 is local), so a
/// test can play several LAN hosts.
pub async fn connect_from_ip(from: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(server).await
}

/// One HTTP/1.1 request on a fresh connection from the loopback address `from`.
pub async fn request_from_ip(
    from: [u8; 4],
    addr: SocketAddr,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let stream = connect_from_ip(from, addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(target).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

/// A loopback port free for TCP and UDP right now, for a program outside this process that
/// takes a port number (Pebble, systemd-socket-activate) and cannot be handed port 0 or a
/// bound socket. The port is free when this returns, not reserved: a program that
/// fails to bind it is a clear failure, not a silent one. The box itself always gets port 0.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What `callbox simulate-call` plays, from the library, against `server`: a 3 s tone from
/// +15035550123 to +15035550100 in real time, no ring, the other options as given.
pub fn rehearsal(
    server: &TestServer,
    talk: std::time::Duration,
    hang_up_after: Option<f64>,
    no_answer: bool,
    front_desk_answers: bool,
) -> callbox::simulate::Options {
    callbox::simulate::Options {
        box_url: format!("http://{}", server.public),
        public_url: None,
        stream_url: Some(format!("ws://{}{MEDIA_PATH}", server.public)),
        auth_token: AUTH_TOKEN.into(),
        from: "+15035550123".into(),
        to: "+15035550100".into(),
        call_sid: None,
        audio: callbox::simulate::CallerAudio::Tone { hz: 440.0, duration: talk },
        dtmf: Vec::new(),
        fast: false,
        save_box_audio: None,
        greeting_timeout: std::time::Duration::from_secs(10),
        ring: std::time::Duration::ZERO,
        hang_up_after: hang_up_after.map(std::time::Duration::from_secs_f64),
        no_answer,
        front_desk_answers,
    }
}
