//! `files` mode: certificate and key from PEM files, reloaded without a restart when either
//! file changes (polled) or on SIGHUP. A bad file is reported by name and the certificate
//! already in use stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::TlsError;
use super::resolver::{CertResolver, LoadedCert, load_pem};
use super::status::TlsStatus;

/// Lets a writer finish the second file after the first changed before we read them.
const SETTLE: Duration = Duration::from_millis(200);

/// Reads and checks the pair of files.
pub fn load(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Storage { path: p.to_owned(), source });
    load_pem(&read(cert)?, &read(key)?, cert, key)
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// SIGHUP as a stream, or `None` (logged) when it cannot be watched.
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("tls: cannot watch SIGHUP ({e}); certificate files are still polled");
            None
        }
    }
}

/// Watches the files and swaps the certificate when they change.
pub struct FileWatcher {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Poll period.
    pub interval: Duration,
    /// Where the certificate is served from.
    pub resolver: Arc<CertResolver>,
    /// Published state.
    pub status: watch::Sender<TlsStatus>,
    /// SIGHUP, registered before the watcher runs so an early signal cannot kill the process.
    pub hangup: Option<tokio::signal::unix::Signal>,
}

impl FileWatcher {
    /// Loads the files at start; an error here stops start-up (there is nothing to serve).
    pub fn initial(&self) -> Result<(), TlsError> {
        let loaded = load(&self.cert, &self.key)?;
        self.install(loaded);
        Ok(())
    }

    fn install(&self, loaded: LoadedCert) {
        log::info!(
            "tls: serving certificate for {} (serial {}, valid until {}) from {}",
            loaded.summary.domains.join(", "),
            loaded.summary.serial,
            loaded.summary.not_after,
            self.cert.display()
        );
        self.resolver.set_current(loaded.key);
        let now = Timestamp::now();
        self.status.send_modify(|s| {
            s.certificate = Some(loaded.summary);
            s.last_attempt = Some(now);
            s.last_success = Some(now);
            s.last_error = None;
        });
    }

    fn reload(&self, why: &str) {
        match load(&self.cert, &self.key) {
            Ok(loaded) => {
                log::info!("tls: reloading certificate files ({why})");
                self.install(loaded);
            }
            Err(e) => {
                log::error!("tls: {e}; still serving the previous certificate");
                let now = Timestamp::now();
                self.status.send_modify(|s| {
                    s.last_attempt = Some(now);
                    s.last_error = Some(e.to_string());
                });
            }
        }
    }

    /// Polls until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut hup = self.hangup.take();
        let mut seen = (stamp(&self.cert), stamp(&self.key));
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hangup => { self.reload("SIGHUP"); seen = (stamp(&self.cert), stamp(&self.key)); }
                _ = tick.tick() => {
                    let now = (stamp(&self.cert), stamp(&self.key));
                    if now != seen {
                        tokio::time::sleep(SETTLE).await;
                        seen = (stamp(&self.cert), stamp(&self.key));
                        self.reload("files changed");
                    }
                }
            }
        }
    }
}
