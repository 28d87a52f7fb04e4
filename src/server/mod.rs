//! The two listeners (public for Twilio, admin for the LAN), their accept loops with a
//! connection cap and timeouts, and graceful shutdown.

pub mod admin;
mod admission;
pub mod public;
mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// How long in-flight requests get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Authenticated (kept-alive) connections the LAN listener holds at once; half of them at most
/// from one address. Connections without credentials have their own small share
/// ([`admission::MAX_PENDING`]).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line + headers) accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The client address of a connection, attached to each of its requests.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

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

    /// The box's parts.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until the app's shutdown token is cancelled, then stops accepting, lets
    /// in-flight requests finish (up to [`DRAIN_TIMEOUT`]) and closes the parts.
    pub async fn run(self) {
        let Self { app, public, admin } = self;
        let shutdown = app.shutdown.clone();
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(app.config.server.max_connections));
        let per_address = app.config.server.max_connections_per_address;
        let header_timeout = app.config.server.header_timeout();
        app.start_tasks(&tracker).await;

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

        shutdown.cancelled().await;
        log::info!("shutting down: finishing in-flight requests");
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, async { tokio::join!(tracker.wait(), app.tls.stopped()) }).await.is_err()
        {
            log::warn!("shutdown: some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
        }
        app.close().await;
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
    Fut: Future<Output = hyper::Response<crate::web::Body>> + Send + 'static,
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
    Fut: Future<Output = hyper::Response<crate::web::Body>> + Send + 'static,
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
