//! The composition root: builds the parts of a running box from its configuration, hands each
//! the narrow handle it needs, runs their background tasks and closes them in order.
//!
//! The parts do not know each other: `calls` owns the log and its feed, `media` gets a
//! [`MediaContext`], the indicators their [`Inputs`], the dashboard its [`Dashboard`]. Only
//! the edge ([`crate::server`]) sees the whole [`App`], because it routes to every part.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::{CallLog, Store};
use crate::config::Config;
use crate::dashboard::Dashboard;
use crate::dashboard::auth::Sessions;
use crate::indicators::{self, CertStatus, FaultSource, Indicators};
use crate::media::{Media, MediaContext};
use crate::metrics::Metrics;
use crate::texts::Texts;
use crate::tls::Tls;
use crate::twilio::signature::Validator;

/// How often old calls are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// The parts of a running box.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The call log: durable events, their feed, its health.
    pub calls: CallLog,
    /// Twilio signature checks.
    pub validator: Validator,
    /// Media-stream sessions.
    pub media: Media,
    /// The owner's pages and feeds.
    pub dashboard: Dashboard,
    /// Texts to missed callers and the owner, and their outbox.
    pub texts: Arc<Texts>,
    /// LEDs and ring tone: fault reports, acknowledgements, current state.
    pub indicators: Arc<Indicators>,
    /// Logged-in dashboard sessions.
    pub sessions: Sessions,
    /// TLS of the public listener and the certificate state.
    pub tls: Tls,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// When the box started.
    pub started: Instant,
    /// The one shutdown signal: cancelling it stops the listeners, the sessions and every task.
    pub shutdown: CancellationToken,
}

impl App {
    /// Builds the parts around an open store. `tls` is [`Tls::off`] or what [`Tls::start`]
    /// made (with the same `shutdown`).
    pub fn new(config: Config, store: Store, tls: Tls, shutdown: CancellationToken) -> Self {
        // The config checked what the client needs; only the platform's certificate store can
        // still be missing, and then texts are kept but not sent (health shows them waiting).
        let rest = Texts::client_for(&config).unwrap_or_else(|e| {
            log::error!("{e}; texts will not be sent");
            None
        });
        let texts = Arc::new(Texts::new(config.clone(), store.clone(), rest));
        let calls = CallLog::new(store);
        let validator = Validator::new(config.twilio.auth_token.expose(), config.public_url.clone());
        let metrics = Arc::new(Metrics::new(!config.tls.mode.is_off()));
        let media = Media::new(MediaContext {
            calls: calls.clone(),
            config: config.media.clone(),
            storage_dir: config.storage.dir.clone(),
            max_sessions: config.server.max_connections,
            shutdown: shutdown.clone(),
        });
        let dashboard = Dashboard::new(
            calls.clone(),
            config.storage.dir.clone(),
            metrics.clone(),
            tls.status(),
            shutdown.clone(),
            config.indicators.time_zone(),
        );
        let sessions = Sessions::new(calls.store().clone());
        Self {
            config,
            calls,
            validator,
            media,
            dashboard,
            texts,
            indicators: Arc::new(Indicators::new()),
            sessions,
            tls,
            metrics,
            started: Instant::now(),
            shutdown,
        }
    }

    /// Starts the box's own tasks on `tracker`: recovering recordings, pruning, the live
    /// board, the indicators and the certificate's report to them. Each stops on shutdown.
    pub async fn start_tasks(self: &Arc<Self>, tracker: &TaskTracker) {
        self.media.recover_recordings().await;
        tracker.spawn(prune_loop(self.clone()));
        tracker.spawn(self.dashboard.clone().run_live_board());
        tracker.spawn(report_certificate(self.clone()));
        tracker.spawn(self.texts.clone().run(self.calls.clone(), self.shutdown.clone()));
        let inputs = indicators::Inputs {
            calls: self.calls.clone(),
            config: self.config.indicators.clone(),
            storage_dir: self.config.storage.dir.clone(),
            handle: self.indicators.clone(),
        };
        tracker.spawn(indicators::run(inputs, self.shutdown.clone()));
    }

    /// After the listeners stopped: lets the media sessions finish their recordings, then
    /// flushes and closes the call log.
    pub async fn close(&self) {
        self.media.drain().await;
        match self.calls.store().close() {
            Ok(()) => log::info!("call log flushed; stopped"),
            Err(e) => log::error!("final call log flush failed: {e}"),
        }
    }
}

/// Feeds the certificate state from the TLS side to the indicators (the `fault` LED),
/// whenever it changes.
async fn report_certificate(app: Arc<App>) {
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

/// Applies `storage.retention_days` and `storage.max_calls` now and every hour.
async fn prune_loop(app: Arc<App>) {
    let storage = &app.config.storage;
    loop {
        let cutoff = (storage.retention_days > 0)
            .then(|| {
                jiff::Timestamp::now()
                    .checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(storage.retention_days)))
                    .ok()
            })
            .flatten();
        match app.calls.store().prune(cutoff, storage.max_calls).await {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} old calls from the call log"),
            Err(e) => log::warn!("pruning the call log failed: {e}"),
        }
        if let Some(cutoff) = cutoff {
            match app.texts.prune(cutoff).await {
                Ok(0) => {}
                Ok(n) => log::info!("pruned {n} old texts from the call log"),
                Err(e) => log::warn!("pruning old texts failed: {e}"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
            () = app.shutdown.cancelled() => return,
        }
    }
}
