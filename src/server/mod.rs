//! The two listeners (public for Twilio, admin for the LAN), their accept loops with a
//! connection cap and timeouts, and graceful shutdown.

pub mod admin;
mod admission;
pub mod http;
pub mod public;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::{Applied, Bus, BusMessage, CallEvent, Recorded, Store, StoreError};
use crate::config::Config;
use crate::dashboard::auth::Sessions;
use crate::metrics::Metrics;
use crate::tls::Tls;
use crate::twilio::signature::Validator;

/// How long in-flight requests get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Authenticated (kept-alive) connections the LAN listener holds at once; half of them at most
/// from one address. Connections without credentials have their own small share
/// ([`admission::MAX_PENDING`]).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line + headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How often old calls are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Shared state of a running box.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The call log.
    pub store: Store,
    /// Call changes, for indicators and the dashboard.
    pub bus: Bus,
    /// Twilio signature checks.
    pub validator: Validator,
    /// Set while the last store write failed; health reports it.
    pub store_failed: AtomicBool,
    /// When the box started.
    pub started: Instant,
    /// Cancelled when the box shuts down; long-lived sessions (WebSockets) watch it.
    pub shutdown: CancellationToken,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Logged-in dashboard sessions.
    pub sessions: Sessions,
    /// TLS of the public listener and the certificate state.
    pub tls: Tls,
    /// Media-stream sessions and their shared greeting.
    pub media: crate::media::Media,
    /// LEDs and ring tone: fault reports, acknowledgements, current state.
    pub indicators: crate::indicators::Indicators,
}

/// The client address of a connection, attached to each of its requests.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl App {
    /// Builds the shared state around an open store.
    pub fn new(config: Config, store: Store) -> Self {
        let validator = Validator::new(config.twilio.auth_token.expose(), config.public_url.clone());
        let serves_tls = config.tls.mode != crate::config::TlsMode::Off;
        Self {
            config,
            store,
            bus: Bus::new(),
            validator,
            store_failed: AtomicBool::new(false),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            metrics: Metrics::new(serves_tls),
            sessions: Sessions::default(),
            tls: Tls::off(),
            media: crate::media::Media::new(),
            indicators: crate::indicators::Indicators::new(),
        }
    }

    /// Serves the public listener with `tls` (from [`Tls::start`]) instead of plain HTTP.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The one way events enter the call log: stored durably, then announced on the bus
    /// (a retried event is not announced twice). Logs the outcome with the call's fields.
    pub async fn record_event(&self, event: CallEvent) -> Result<Recorded, StoreError> {
        let status = event.status.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_else(|| "-".into());
        let sid = event.call_sid.clone();
        match self.store.record(event.clone()).await {
            Ok(recorded) => {
                self.store_failed.store(false, Ordering::Relaxed);
                if recorded.applied == Applied::Duplicate {
                    log::info!(call_sid = sid.as_str(), call_status = status.as_str(); "duplicate {:?} event for {sid} ignored", event.source);
                } else {
                    log::info!(
                        call_sid = sid.as_str(), call_status = status.as_str(), call_from = event.from.as_deref().unwrap_or("");
                        "call {sid} {:?}: {status} (now {})", event.source, recorded.record.status
                    );
                    self.bus.publish(BusMessage { event, record: recorded.record.clone() });
                }
                Ok(recorded)
            }
            Err(e) => {
                self.store_failed.store(true, Ordering::Relaxed);
                log::error!(call_sid = sid.as_str(); "could not store event for {sid}: {e}");
                Err(e)
            }
        }
    }
}

/// A bound, ready-to-run box: both listeners and the shared state.
pub struct Server {
    app: Arc<App>,
    public: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// A server on already-bound listeners (the caller binds, so tests can use port 0).
    pub fn new(app: App, public: TcpListener, admin: TcpListener) -> Self {
        Self { app: Arc::new(app), public, admin }
    }

    /// The public listener's address.
    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The shared state.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish (up to [`DRAIN_TIMEOUT`]) and flushes the call log.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { app, public, admin } = self;
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(app.config.server.max_connections));
        let per_address = app.config.server.max_connections_per_address;
        let header_timeout = app.config.server.header_timeout();
        crate::media::recover_recordings(&app).await;

        let public_app = app.clone();
        let public_tls = app.tls.acceptor().map(|a| (a, app.tls.handshake_timeout()));
        tracker.spawn(accept_loop(
            "public",
            public,
            public_tls,
            (limit.clone(), per_address),
            header_timeout,
            shutdown.clone(),
            tracker.clone(),
            move |req| public::handle(public_app.clone(), req),
        ));
        tracker.spawn(admin_accept_loop(app.clone(), admin, header_timeout, shutdown.clone(), tracker.clone()));
        tracker.spawn(prune_loop(app.clone(), shutdown.clone()));
        tracker.spawn(crate::dashboard::live::run(app.clone()));
        tracker.spawn(report_certificate(app.clone()));
        tracker.spawn(crate::indicators::run(app.clone(), shutdown.clone()));

        shutdown.cancelled().await;
        log::info!("shutting down: finishing in-flight requests");
        app.shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, async { tokio::join!(tracker.wait(), app.tls.stopped()) }).await.is_err()
        {
            log::warn!("shutdown: some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
        }
        app.media.drain().await;
        match app.store.close() {
            Ok(()) => log::info!("call log flushed; stopped"),
            Err(e) => log::error!("final call log flush failed: {e}"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    (limit, per_address): (Arc<Semaphore>, usize),
    header_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handler: F,
) where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<http::Body>> + Send + 'static,
{
    let mut listener = crate::net::CappedListener::new(name, listener, limit, per_address);
    while let Some((slot, stream, peer)) = listener.accept(&shutdown).await {
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let share = slot.address_share();
        tracker.spawn(async move {
            let conn = Conn { name, peer, share };
            match tls {
                None => serve_http(conn, TokioIo::new(stream), header_timeout, shutdown, handler).await,
                // The handshake runs in the connection's task, under its permit and a deadline,
                // so slow or silent clients cannot stall the accept loop.
                Some((acceptor, timeout)) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(mut stream)) => {
                        if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
                            // A TLS-ALPN-01 validator: the handshake was the whole answer.
                            log::debug!("{name}: answered TLS-ALPN-01 validation from {peer}");
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                        } else {
                            serve_http(conn, TokioIo::new(stream), header_timeout, shutdown, handler).await;
                        }
                    }
                    Ok(Err(e)) => log::debug!("{name} connection from {peer}: TLS handshake failed: {e}"),
                    Err(_) => log::debug!("{name} connection from {peer}: TLS handshake not done within {timeout:?}"),
                },
            }
            drop(slot);
        });
    }
}

/// The LAN listener's accept loop: its own cap, separate from Internet load, and admission
/// rules so that connections without credentials cannot crowd out the owner's (see
/// [`admission`]).
async fn admin_accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    header_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let admission = admission::Admission::new(ADMIN_MAX_CONNECTIONS, ADMIN_MAX_CONNECTIONS / 2);
    let mut backoff = crate::net::MIN_ACCEPT_BACKOFF;
    loop {
        let (stream, peer) = tokio::select! {
            c = crate::net::accept_retrying("admin", &listener, &mut backoff) => c,
            () = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let ticket = admission.admit(peer.ip());
        let handler = {
            let (app, ticket) = (app.clone(), ticket.clone());
            move |mut req: hyper::Request<Incoming>| {
                // The handler moves the connection to the authenticated group on valid credentials.
                req.extensions_mut().insert(ticket.clone());
                let (app, ticket) = (app.clone(), ticket.clone());
                async move {
                    let mut response = admin::handle(app, req).await;
                    if !ticket.is_authenticated() {
                        response
                            .headers_mut()
                            .insert(::http::header::CONNECTION, ::http::HeaderValue::from_static("close"));
                    }
                    response
                }
            }
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = serve_http(
                    Conn { name: "admin", peer, share: crate::net::AddressShareCell::empty() },
                    TokioIo::new(stream),
                    header_timeout,
                    shutdown,
                    handler,
                ) => {}
                // Only connections without credentials are evicted; a request in flight on one
                // (a login form post) is cut off, and its client may retry.
                () = ticket.evicted().cancelled() => log::debug!("admin connection from {peer} closed to make room"),
            }
        });
    }
}

/// Who a connection is: its listener's name, its client and its place in that client's share.
struct Conn {
    name: &'static str,
    peer: SocketAddr,
    share: crate::net::AddressShareCell,
}

/// Serves HTTP/1.1 (with upgrades, for WebSockets) on one plain or TLS connection. Each
/// request carries the client's address and the connection's address share (an upgrade
/// takes the share along, see [`crate::media`]).
async fn serve_http<I, F, Fut>(
    Conn { name, peer, share }: Conn,
    io: TokioIo<I>,
    header_timeout: Duration,
    shutdown: CancellationToken,
    handler: F,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<http::Body>> + Send + 'static,
{
    let service = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req.extensions_mut().insert(share.clone());
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log::debug!("{name} connection from {peer}: {e}");
    }
}

/// Feeds the certificate state from the TLS side to the indicators (the `fault` LED) and
/// the metrics, whenever it changes.
async fn report_certificate(app: Arc<App>) {
    use crate::indicators::{CertStatus, FaultSource};
    let mut status = app.tls.status();
    loop {
        {
            let s = status.borrow_and_update();
            if s.mode.is_off() {
                app.indicators.set_certificate(None);
                app.indicators.set_fault(FaultSource::Certificate, None);
            } else {
                let cert = match &s.certificate {
                    Some(c) => CertStatus::Valid { not_after: c.not_after },
                    None => CertStatus::Missing,
                };
                app.indicators.set_certificate(Some(cert));
                // The TLS side's own rule adds what the indicators cannot see: ACME failing
                // again and again, or certificate files that no longer load.
                let reason = s
                    .fault(jiff::Timestamp::now())
                    .then(|| s.last_error.clone().unwrap_or_else(|| "no valid certificate".to_owned()));
                app.indicators.set_fault(FaultSource::Certificate, reason);
            }
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            () = app.shutdown.cancelled() => return,
        }
    }
}

async fn prune_loop(app: Arc<App>, shutdown: CancellationToken) {
    let storage = &app.config.storage;
    loop {
        let cutoff = (storage.retention_days > 0)
            .then(|| {
                jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(storage.retention_days)))
                    .ok()
            })
            .flatten();
        match app.store.prune(cutoff, storage.max_calls).await {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} old calls from the call log"),
            Err(e) => log::warn!("pruning the call log failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
