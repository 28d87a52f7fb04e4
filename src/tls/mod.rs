//! Built-in TLS for the public listener: rustls through tokio-rustls, with the certificate
//! from PEM files (`files`) or from an ACME CA such as Let's Encrypt (`acme`).
//!
//! [`Tls::start`] loads what there is to serve, starts the background work (file watcher,
//! ACME schedule, port-80 listener for HTTP-01) and hands the server an acceptor. The
//! acceptor's configuration never changes; the [`resolver::CertResolver`] inside swaps the
//! certificate, so new connections get a renewed one while open ones keep theirs.
//! [`TlsStatus`] is the certificate state others watch (admin health, the `fault` LED).

pub mod acme;
pub mod clock;
pub mod files;
pub mod http01;
pub mod resolver;
pub mod status;
pub mod storage;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use resolver::ACME_TLS_ALPN;
pub use status::{CertSummary, TlsStatus, TlsStatusRx};

use crate::config::{AcmeChallenge, Config, TlsMode};

/// Why TLS could not be set up or a certificate could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file (certificate, key or extra roots) is unusable.
    #[error("{}: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Storage {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP-01 listener could not be bound.
    #[error("cannot listen on {addr} (tls.acme.http_listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ACME CA refused or could not be reached.
    #[error("ACME {context}: {source}")]
    Acme {
        /// The step that failed.
        context: &'static str,
        /// instant-acme's error (the CA's problem document, or the transport error).
        source: instant_acme::Error,
    },
    /// An ACME order did not come through (validation failed, unexpected state).
    #[error("ACME {context}: {message}")]
    Order {
        /// The step that failed.
        context: &'static str,
        /// What happened.
        message: String,
    },
    /// The TLS-ALPN-01 challenge certificate could not be made.
    #[error("cannot make the TLS-ALPN-01 certificate: {0}")]
    ChallengeCert(#[source] rcgen::Error),
    /// rustls refused a configuration this module built (a bug, reported rather than panicking).
    #[error("TLS setup: {0}")]
    Internal(String),
}

impl TlsError {
    /// True when the CA says the stored account does not exist (e.g. a test CA restarted).
    pub fn is_account_gone(&self) -> bool {
        matches!(self, Self::Acme { source: instant_acme::Error::Api(p), .. }
            if p.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")))
    }
}

/// The error and its causes on one line ("connect failed: connection refused").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// TLS for the public listener: the acceptor (none when `tls.mode = "off"`) and the state.
pub struct Tls {
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    status: TlsStatusRx,
    tracker: TaskTracker,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("enabled", &self.acceptor.is_some())
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Tls {
    /// Plain HTTP (`tls.mode = "off"`).
    pub fn off() -> Self {
        let (_, rx) = watch::channel(TlsStatus { mode: TlsMode::Off, ..TlsStatus::default() });
        Self { acceptor: None, handshake_timeout: Duration::from_secs(10), status: rx, tracker: TaskTracker::new() }
    }

    /// Sets up TLS as configured and starts its background tasks, which stop on `shutdown`.
    /// Fails when there is nothing sensible to serve: unreadable files in `files` mode, an
    /// unusable storage dir or port-80 address in `acme` mode. A CA that cannot be reached
    /// is no error here: the box serves what it has and keeps trying.
    ///
    /// `http_listener` is a port-80 socket handed over by systemd, if any. In `acme` mode it
    /// serves HTTP-01 and redirects to https (with `tls-alpn-01` only the redirects); without
    /// it, `tls.acme.http_listen` is bound here when the challenge is `http-01`.
    pub async fn start(
        config: &Config,
        shutdown: CancellationToken,
        http_listener: Option<tokio::net::TcpListener>,
    ) -> Result<Self, TlsError> {
        let tls = &config.tls;
        if tls.mode.is_off() {
            return Ok(Self::off());
        }
        let (tx, rx) = watch::channel(TlsStatus { mode: tls.mode, ..TlsStatus::default() });
        let resolver = Arc::new(resolver::CertResolver::default());
        let tracker = TaskTracker::new();
        let mut alpn = vec![b"http/1.1".to_vec()];
        match tls.mode {
            TlsMode::Off => {}
            TlsMode::Files => start_files(tls, &resolver, tx, &tracker, &shutdown)?,
            TlsMode::Acme => {
                if tls.acme.challenge == AcmeChallenge::TlsAlpn01 {
                    alpn.push(ACME_TLS_ALPN.to_vec());
                }
                start_acme(config, &resolver, tx, &tracker, &shutdown, http_listener).await?;
            }
        }
        Ok(Self {
            acceptor: Some(acceptor(resolver, alpn)?),
            handshake_timeout: Duration::from_secs(tls.handshake_timeout_secs),
            status: rx,
            tracker,
        })
    }

    /// The acceptor wrapping public connections, or `None` for plain HTTP.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor.clone()
    }

    /// How long a client may take for the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The certificate state, to watch.
    pub fn status(&self) -> TlsStatusRx {
        self.status.clone()
    }

    /// Waits until the background tasks have stopped (after shutdown was cancelled).
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// `files` mode: loads the PEM files now (failing start-up when they are unusable) and
/// watches them for changes.
fn start_files(
    tls: &crate::config::TlsConfig,
    resolver: &Arc<resolver::CertResolver>,
    status: watch::Sender<TlsStatus>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), TlsError> {
    let (Some(cert), Some(key)) = (tls.cert_file.clone(), tls.key_file.clone()) else {
        return Err(TlsError::Internal("tls.cert_file and tls.key_file must be set".into()));
    };
    let watcher = files::FileWatcher {
        cert,
        key,
        interval: Duration::from_secs(tls.reload_interval_secs),
        resolver: resolver.clone(),
        status,
        hangup: files::hangup_signal(),
    };
    watcher.initial()?;
    tracker.spawn(watcher.run(shutdown.clone()));
    Ok(())
}

/// `acme` mode: opens the certificate store, starts the port-80 listener when there is one
/// and the order-and-renew schedule.
async fn start_acme(
    config: &Config,
    resolver: &Arc<resolver::CertResolver>,
    status: watch::Sender<TlsStatus>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    http_listener: Option<tokio::net::TcpListener>,
) -> Result<(), TlsError> {
    let settings = acme::AcmeSettings::from_config(config)?;
    let dir = storage::TlsDir::open(&config.storage.dir)?;
    let http01 = port_80_listener(&config.tls.acme, http_listener)
        .await?
        .map(|listener| serve_port_80(listener, config, tracker, shutdown));
    let manager =
        acme::AcmeManager::new(settings, dir, resolver.clone(), http01, status).with_hangup(files::hangup_signal());
    tracker.spawn(manager.run(shutdown.clone()));
    Ok(())
}

/// The socket systemd handed over, else `tls.acme.http_listen` bound here when HTTP-01
/// needs it; with TLS-ALPN-01 and no handed-over socket there is no port-80 listener.
async fn port_80_listener(
    acme: &crate::config::AcmeConfig,
    handed_over: Option<tokio::net::TcpListener>,
) -> Result<Option<tokio::net::TcpListener>, TlsError> {
    match (handed_over, acme.challenge) {
        (Some(l), _) => Ok(Some(l)),
        (None, AcmeChallenge::Http01) => {
            let addr = acme.http_listen;
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| TlsError::Bind { addr, source })?;
            Ok(Some(listener))
        }
        (None, AcmeChallenge::TlsAlpn01) => Ok(None),
    }
}

/// Serves HTTP-01 challenges and redirects to https on `listener`; the tokens returned are
/// where the ACME side puts the challenges it is answering.
fn serve_port_80(
    listener: tokio::net::TcpListener,
    config: &Config,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Arc<http01::Http01Tokens> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    log::info!("tls: port-80 listener on {addr} (HTTP-01 challenges, redirects to https)");
    let tokens = Arc::new(http01::Http01Tokens::default());
    tracker.spawn(http01::serve(
        listener,
        tokens.clone(),
        config.public_url.origin(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tokens
}

/// The acceptor of the public listener. Its configuration never changes: the resolver
/// inside swaps the certificate.
fn acceptor(resolver: Arc<resolver::CertResolver>, alpn: Vec<Vec<u8>>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Internal(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    server_config.alpn_protocols = alpn;
    Ok(TlsAcceptor::from(Arc::new(server_config)))
}
