//! `acme` mode: gets, stores and renews the certificate with instant-acme.
//!
//! One task owns the schedule. On start it serves the stored certificate at once and never
//! orders while that one is good. It renews when a third of the lifetime (configurable) is
//! left, or earlier inside the CA's ARI window (RFC 9773). A failure keeps the current
//! certificate in service and retries with exponential backoff and jitter; the schedule is on
//! disk, written *before* each attempt, so a crash or restart loop cannot hammer the CA.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountBuilder, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use jiff::{SignedDuration, Timestamp};
use rand::Rng as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::TlsError;
use super::clock;
use super::http01::Http01Tokens;
use super::resolver::{CertResolver, LoadedCert, challenge_cert, load_pem};
use super::status::TlsStatus;
use super::storage::{ACCOUNT_FILE, AcmeState, AttemptKey, CERT_FILE, KEY_FILE, StoredAccount, TlsDir};
use crate::config::{AcmeChallenge, Config};

/// How often a too-early clock is looked at again.
const CLOCK_RECHECK: Duration = Duration::from_secs(5);
/// An attempt that takes longer than this is abandoned (a CA that accepts but never answers).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds on the CA's "ask again" hint for renewal info, so a bad hint can neither hammer
/// the CA nor leave a revocation unnoticed for days.
const ARI_RECHECK_MIN: Duration = Duration::from_secs(60);
const ARI_RECHECK_MAX: Duration = Duration::from_secs(12 * 3600);

/// Polling of orders: quick first looks (validation takes well under a second at Let's
/// Encrypt), then doubling, for up to two minutes.
fn poll_policy() -> RetryPolicy {
    RetryPolicy::new().initial_delay(Duration::from_millis(100)).backoff(2.0).timeout(Duration::from_secs(120))
}

/// The `[tls.acme]` settings the manager needs, resolved.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    directory: String,
    contact: Option<String>,
    domains: Vec<String>,
    roots: Option<PathBuf>,
    eab: Option<(String, Vec<u8>)>,
    challenge: AcmeChallenge,
    renew_remaining: f64,
    retry_initial: Duration,
    retry_max: Duration,
    check_interval: Duration,
    retry_now: bool,
}

impl AcmeSettings {
    /// From the validated configuration.
    pub fn from_config(config: &Config) -> Result<Self, TlsError> {
        let a = &config.tls.acme;
        let eab = match &a.eab_kid {
            Some(kid) => {
                use base64::Engine as _;
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(a.eab_hmac_key.expose().trim_end_matches('='))
                    .map_err(|e| TlsError::Internal(format!("tls.acme.eab_hmac_key: {e}")))?;
                Some((kid.clone(), key))
            }
            None => None,
        };
        Ok(Self {
            directory: a.directory_url().to_owned(),
            contact: a.contact.as_ref().map(|c| c.trim().trim_start_matches("mailto:").to_owned()),
            domains: config.acme_domains(),
            roots: a.directory_roots.clone(),
            eab,
            challenge: a.challenge,
            renew_remaining: a.renew_remaining,
            retry_initial: Duration::from_secs(a.retry_initial_secs),
            retry_max: Duration::from_secs(a.retry_max_secs),
            check_interval: Duration::from_secs(a.check_interval_secs),
            retry_now: a.retry_now,
        })
    }

    /// What an order with these settings asks the CA for.
    fn attempt_key(&self) -> AttemptKey {
        AttemptKey {
            directory: self.directory.clone(),
            domains: self.domains.clone(),
            challenge: challenge_name(self.challenge).to_owned(),
        }
    }
}

/// The renewal moment ARI suggested for one certificate.
#[derive(Debug, Clone)]
struct AriPlan {
    serial: String,
    window: (Timestamp, Timestamp),
    chosen: Timestamp,
    recheck: Timestamp,
}

/// What the schedule decided.
struct Plan {
    due: Timestamp,
    /// Wake up then at the latest to look again.
    recheck: Timestamp,
    reason: String,
    replaces: Option<CertificateIdentifier<'static>>,
}

/// The task that keeps a certificate in service.
pub struct AcmeManager {
    settings: AcmeSettings,
    dir: TlsDir,
    resolver: Arc<CertResolver>,
    http01: Option<Arc<Http01Tokens>>,
    status: watch::Sender<TlsStatus>,
    current: Option<LoadedCert>,
    state: AcmeState,
    account: Option<Account>,
    ari: Option<AriPlan>,
    ari_unsupported: bool,
    last_logged_plan: Option<Timestamp>,
    expiry_logged: bool,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl AcmeManager {
    /// Opens the store and serves the stored certificate, if there is a usable one.
    pub fn new(
        settings: AcmeSettings,
        dir: TlsDir,
        resolver: Arc<CertResolver>,
        http01: Option<Arc<Http01Tokens>>,
        status: watch::Sender<TlsStatus>,
    ) -> Self {
        let state = dir.load_state();
        let mut me = Self {
            settings,
            dir,
            resolver,
            http01,
            status,
            current: None,
            state,
            account: None,
            ari: None,
            ari_unsupported: false,
            last_logged_plan: None,
            expiry_logged: false,
            hangup: None,
        };
        // A backoff earned by another request (the owner fixed the directory, the names or
        // the challenge and restarted) must not delay the corrected one for hours.
        let wanted = me.settings.attempt_key();
        if let Some(old) = me.state.attempted.clone()
            && old != wanted
        {
            me.reset_backoff(&format!(
                "[tls.acme] changed since the last attempt (was {} for {} by {})",
                old.directory,
                old.domains.join(", "),
                old.challenge
            ));
        } else if me.settings.retry_now {
            me.reset_backoff("--acme-retry-now");
        }
        match me.load_stored() {
            Ok(Some(loaded)) => {
                log::info!(
                    "tls: serving stored certificate for {} (serial {}, valid until {})",
                    loaded.summary.domains.join(", "),
                    loaded.summary.serial,
                    loaded.summary.not_after
                );
                me.resolver.set_current(loaded.key.clone());
                me.current = Some(loaded);
            }
            Ok(None) => log::info!(
                "tls: no certificate stored yet; ordering one for {} from {} ({} challenge)",
                me.settings.domains.join(", "),
                me.settings.directory,
                challenge_name(me.settings.challenge)
            ),
            Err(e) => log::warn!("tls: stored certificate unusable ({e}); ordering a new one"),
        }
        me.publish();
        me
    }

    /// Lets SIGHUP cut a retry backoff short (`systemctl kill -s HUP callbox` after fixing DNS
    /// or port forwarding); registered by the caller so an early signal cannot kill the box.
    pub fn with_hangup(mut self, hangup: Option<tokio::signal::unix::Signal>) -> Self {
        self.hangup = hangup;
        self
    }

    /// Forgets failures in a row and the wait they earned; the next order is due at once.
    fn reset_backoff(&mut self, why: &str) {
        if self.state.failures == 0 && self.state.next_attempt.is_none() {
            log::info!("tls: {why}; no retry backoff to reset");
            return;
        }
        log::info!(
            "tls: {why}; resetting the retry backoff ({} failure(s) in a row, next attempt was {})",
            self.state.failures,
            self.state.next_attempt.map(|t| t.to_string()).unwrap_or_else(|| "not set".into())
        );
        self.state.failures = 0;
        self.state.next_attempt = None;
        if let Err(e) = self.dir.save_state(&self.state) {
            log::warn!("tls: {e}");
        }
        self.last_logged_plan = None;
        self.publish();
    }

    /// Says loudly, once per certificate, that the one being served has expired.
    fn check_expiry(&mut self, now: Timestamp) {
        let Some(c) = &self.current else { return };
        if c.summary.not_after > now || self.expiry_logged {
            return;
        }
        self.expiry_logged = true;
        log::error!(
            "tls: the certificate for {} expired at {}; Twilio refuses it until a new one is issued ({} order(s) failed in a row{})",
            c.summary.domains.join(", "),
            c.summary.not_after,
            self.state.failures,
            self.state.last_error.as_deref().map(|e| format!(", last: {e}")).unwrap_or_default()
        );
    }

    fn load_stored(&self) -> Result<Option<LoadedCert>, TlsError> {
        let (Some(cert), Some(key)) = (self.dir.read(CERT_FILE)?, self.dir.read(KEY_FILE)?) else {
            return Ok(None);
        };
        load_pem(&cert, &key, &self.dir.path(CERT_FILE), &self.dir.path(KEY_FILE)).map(Some)
    }

    fn publish(&self) {
        let summary = self.current.as_ref().map(|c| c.summary.clone());
        let st = &self.state;
        self.status.send_modify(|s| {
            s.certificate = summary;
            s.last_attempt = st.last_attempt;
            s.last_success = st.last_success;
            s.last_error = st.last_error.clone();
            s.failures = st.failures;
            s.next_attempt = st.next_attempt;
        });
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut waiting_for_clock = false;
        loop {
            let now = Timestamp::now();
            if let Some(why) = clock::implausible(now) {
                self.wait_for_clock(why, &mut waiting_for_clock);
                if sleep_or_cancel(CLOCK_RECHECK, &shutdown).await {
                    return;
                }
                continue;
            }
            if std::mem::take(&mut waiting_for_clock) {
                log::info!("tls: the clock is plausible now; certificate work resumes");
                self.status.send_modify(|s| s.waiting_for = None);
            }

            self.check_expiry(now);
            let plan = tokio::select! {
                p = self.plan(now) => p,
                () = shutdown.cancelled() => return,
            };
            let at = self.attempt_at(&plan);
            let now = Timestamp::now();
            let cancelled = if at > now {
                self.sleep_until(at, &plan, now, &shutdown).await
            } else {
                self.attempt(plan, now, &shutdown).await
            };
            if cancelled {
                return;
            }
        }
    }

    /// A certificate cannot be judged or ordered with a clock before the build: say so once.
    fn wait_for_clock(&mut self, why: String, logged: &mut bool) {
        if !std::mem::replace(logged, true) {
            log::warn!("tls: not ordering or judging certificates yet: {why}");
        }
        self.status.send_modify(|s| s.waiting_for = Some(why));
    }

    /// When the plan's order may go out: its due time, or after the backoff of failed ones.
    fn attempt_at(&self, plan: &Plan) -> Timestamp {
        match self.state.next_attempt {
            Some(backoff_until) if self.state.failures > 0 => plan.due.max(backoff_until),
            _ => plan.due,
        }
    }

    /// Waits for the order's time (or the plan's next look, or SIGHUP); whether the box is
    /// shutting down.
    async fn sleep_until(&mut self, at: Timestamp, plan: &Plan, now: Timestamp, shutdown: &CancellationToken) -> bool {
        self.status.send_modify(|s| s.next_attempt = Some(at));
        if self.last_logged_plan != Some(at) {
            log::info!("tls: next certificate order at {at} ({})", plan.reason);
            self.last_logged_plan = Some(at);
        }
        let wake = at.min(plan.recheck).min(add(now, self.settings.check_interval));
        let wait = now.duration_until(wake).unsigned_abs().max(Duration::from_millis(10));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return true,
            Some(()) = next_hangup(&mut self.hangup) => self.reset_backoff("SIGHUP received"),
        }
        false
    }

    /// Orders a certificate now and records the outcome; whether the box is shutting down.
    async fn attempt(&mut self, plan: Plan, now: Timestamp, shutdown: &CancellationToken) -> bool {
        log::info!("tls: ordering a certificate for {}: {}", self.settings.domains.join(", "), plan.reason);
        self.begin_attempt(now);
        let outcome = tokio::select! {
            r = tokio::time::timeout(ATTEMPT_TIMEOUT, self.order(plan.replaces)) => match r {
                Ok(r) => r,
                Err(_) => Err(TlsError::Order { context: "the order", message: format!("no answer within {ATTEMPT_TIMEOUT:?}") }),
            },
            () = shutdown.cancelled() => {
                self.clear_challenges();
                return true;
            }
        };
        self.clear_challenges();
        match outcome {
            Ok(loaded) => self.succeeded(loaded),
            Err(e) => self.failed(&e),
        }
        false
    }

    /// Records the attempt and its would-be backoff on disk *before* talking to the CA.
    fn begin_attempt(&mut self, now: Timestamp) {
        self.state.last_attempt = Some(now);
        self.state.attempted = Some(self.settings.attempt_key());
        self.state.next_attempt = Some(add(now, self.backoff(self.state.failures + 1)));
        self.state.failures += 1;
        if let Err(e) = self.dir.save_state(&self.state) {
            log::warn!("tls: {e}");
        }
        self.state.failures -= 1;
        self.status.send_modify(|s| s.last_attempt = Some(now));
    }

    fn succeeded(&mut self, loaded: LoadedCert) {
        log::info!(
            "tls: new certificate for {} (serial {}, valid {} to {}); serving it to new connections",
            loaded.summary.domains.join(", "),
            loaded.summary.serial,
            loaded.summary.not_before,
            loaded.summary.not_after
        );
        self.resolver.set_current(loaded.key.clone());
        self.current = Some(loaded);
        self.expiry_logged = false;
        self.ari = None;
        self.state.failures = 0;
        self.state.next_attempt = None;
        self.state.last_success = Some(Timestamp::now());
        self.state.last_error = None;
        self.state.directory = Some(self.settings.directory.clone());
        if let Err(e) = self.dir.save_state(&self.state) {
            log::warn!("tls: {e}");
        }
        self.publish();
    }

    fn failed(&mut self, e: &TlsError) {
        // A fresh account object next time: cheap, and it drops any broken connection state.
        self.account = None;
        if e.is_account_gone() {
            let _ = std::fs::remove_file(self.dir.path(ACCOUNT_FILE));
        }
        self.state.failures += 1;
        let delay = self.backoff(self.state.failures);
        let now = Timestamp::now();
        let at = add(now, delay);
        self.state.next_attempt = Some(at);
        self.state.last_error = Some(super::error_chain(e));
        if let Err(e) = self.dir.save_state(&self.state) {
            log::warn!("tls: {e}");
        }
        let serving = match &self.current {
            Some(c) => format!("still serving the certificate valid until {}", c.summary.not_after),
            None => "no certificate to serve yet".to_owned(),
        };
        log::warn!(
            "tls: certificate order failed (attempt {} in a row): {}; {serving}; retrying in {:.1}s at {at}",
            self.state.failures,
            super::error_chain(e),
            delay.as_secs_f64()
        );
        self.publish();
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff_delay(self.settings.retry_initial, self.settings.retry_max, failures)
    }

    fn clear_challenges(&self) {
        // Names and tokens are only added for the order in flight; dropping all is exact.
        for d in &self.settings.domains {
            self.resolver.remove_challenge(d);
        }
        if let Some(t) = &self.http01 {
            t.clear();
        }
    }

    async fn plan(&mut self, now: Timestamp) -> Plan {
        let far = add(now, self.settings.check_interval);
        let Some(current) = &self.current else {
            return Plan { due: now, recheck: far, reason: "no certificate yet".into(), replaces: None };
        };
        let missing: Vec<&String> =
            self.settings.domains.iter().filter(|d| !current.summary.domains.contains(d)).collect();
        if !missing.is_empty() {
            let reason = format!("the certificate does not cover {missing:?}");
            return Plan { due: now, recheck: far, reason, replaces: None };
        }
        if self.state.directory.as_deref().is_some_and(|d| d != self.settings.directory) {
            let reason = format!("the certificate came from another CA directory than {}", self.settings.directory);
            return Plan { due: now, recheck: far, reason, replaces: None };
        }
        let summary = current.summary.clone();
        let leaf = current.leaf.clone();
        let lifetime = summary.not_after.as_second() - summary.not_before.as_second();
        let backstop = summary
            .not_after
            .checked_sub(SignedDuration::from_secs((lifetime as f64 * self.settings.renew_remaining) as i64))
            .unwrap_or(now);
        let mut plan = Plan {
            due: backstop,
            recheck: far,
            reason: format!(
                "renewal point: {:.2}% of the lifetime left on the certificate valid until {}",
                self.settings.renew_remaining * 100.0,
                summary.not_after
            ),
            replaces: None,
        };
        if let Some(ari) = self.renewal_info(now, &summary.serial, &leaf).await {
            plan.recheck = ari.recheck;
            plan.replaces = CertificateIdentifier::try_from(&leaf).ok().map(CertificateIdentifier::into_owned);
            if ari.chosen < plan.due {
                plan.due = ari.chosen;
                plan.reason = format!("inside the CA's renewal window {} to {}", ari.window.0, ari.window.1);
            }
        }
        plan
    }

    /// The ARI suggestion for the current certificate, fetched when the last one is stale.
    async fn renewal_info(&mut self, now: Timestamp, serial: &str, leaf: &CertificateDer<'static>) -> Option<AriPlan> {
        if self.ari_unsupported {
            return None;
        }
        if let Some(a) = &self.ari
            && a.serial == serial
            && a.recheck > now
        {
            return Some(a.clone());
        }
        let id = match CertificateIdentifier::try_from(leaf) {
            Ok(id) => id,
            Err(e) => {
                log::debug!("tls: no ARI for this certificate: {e}");
                return None;
            }
        };
        let account = match self.account().await {
            Ok(a) => a,
            Err(e) => {
                log::debug!("tls: renewal info skipped, no account: {e}");
                return None;
            }
        };
        match account.renewal_info(&id).await {
            Ok((info, retry)) => {
                let start = Timestamp::from_second(info.suggested_window.start.unix_timestamp()).ok()?;
                let end = Timestamp::from_second(info.suggested_window.end.unix_timestamp()).ok()?.max(start);
                let window = (start, end);
                // Keep the moment already drawn while the CA keeps the window.
                let chosen = match &self.ari {
                    Some(a) if a.serial == serial && a.window == window => a.chosen,
                    _ => {
                        let span = end.as_second() - start.as_second();
                        let offset = if span > 0 { rand::rng().random_range(0..=span) } else { 0 };
                        start.checked_add(SignedDuration::from_secs(offset)).unwrap_or(start)
                    }
                };
                let recheck = add(now, retry.clamp(ARI_RECHECK_MIN, ARI_RECHECK_MAX));
                log::info!("tls: CA suggests renewing between {start} and {end}; chose {chosen}");
                let plan = AriPlan { serial: serial.to_owned(), window, chosen, recheck };
                self.ari = Some(plan.clone());
                Some(plan)
            }
            Err(instant_acme::Error::Unsupported(what)) => {
                log::info!("tls: the CA offers no {what}; renewing by lifetime only");
                self.ari_unsupported = true;
                None
            }
            Err(e) => {
                log::info!("tls: renewal info unavailable ({e}); renewing by lifetime for now");
                self.account = None;
                None
            }
        }
    }

    fn builder(&self) -> Result<AccountBuilder, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = match &self.settings.roots {
            None => rustls_platform_verifier::Verifier::new(provider.clone()),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| TlsError::Storage { path: path.clone(), source })?;
                let roots = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
                    TlsError::Pem { path: path.clone(), problem: format!("not PEM certificates ({e})") }
                })?;
                if roots.is_empty() {
                    return Err(TlsError::Pem { path: path.clone(), problem: "contains no CERTIFICATE block".into() });
                }
                rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
            }
        }
        .map_err(|e| TlsError::Internal(format!("certificate verifier: {e}")))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Internal(format!("TLS client: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_http1().build();
        let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<Bytes>> =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(Account::builder_with_http(Box::new(DirectoryProbe {
            inner: Box::new(client),
            directory: self.settings.directory.clone(),
        })))
    }

    /// The ACME account: from memory, from disk, or newly created (and stored).
    async fn account(&mut self) -> Result<Account, TlsError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        if let Some(bytes) = self.dir.read(ACCOUNT_FILE)? {
            match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored) if stored.directory == self.settings.directory => {
                    let account = self
                        .builder()?
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(|e| acme_err("restoring the stored account", e))?;
                    self.account = Some(account.clone());
                    return Ok(account);
                }
                Ok(stored) => {
                    log::info!(
                        "tls: stored account belongs to {}; creating one on {}",
                        stored.directory,
                        self.settings.directory
                    )
                }
                Err(e) => log::warn!(
                    "tls: {} is damaged ({e}); creating a new account",
                    self.dir.path(ACCOUNT_FILE).display()
                ),
            }
        }
        let contact = self.settings.contact.as_ref().map(|c| format!("mailto:{c}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = self.settings.eab.as_ref().map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false },
                self.settings.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| acme_err("creating the account", e))?;
        let stored = StoredAccount { directory: self.settings.directory.clone(), credentials };
        let bytes =
            serde_json::to_vec_pretty(&stored).map_err(|e| TlsError::Internal(format!("encoding account: {e}")))?;
        self.dir.write(ACCOUNT_FILE, &bytes)?;
        log::info!("tls: created ACME account {} on {}", account.id(), self.settings.directory);
        self.account = Some(account.clone());
        Ok(account)
    }

    async fn order(&mut self, replaces: Option<CertificateIdentifier<'static>>) -> Result<LoadedCert, TlsError> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self.settings.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let mut order = match new_order(&account, &ids, replaces).await {
            Err(e) if e.is_account_gone() => {
                // The CA lost or deleted the account: make a new one and go on at once.
                log::warn!("tls: the CA no longer knows the stored account ({e}); creating a new one");
                let _ = std::fs::remove_file(self.dir.path(ACCOUNT_FILE));
                self.account = None;
                let account = self.account().await?;
                new_order(&account, &ids, None).await?
            }
            other => other?,
        };
        self.prepare_challenges(&mut order).await?;
        let status = order.poll_ready(&poll_policy()).await.map_err(|e| acme_err("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            return Err(TlsError::Order { context: "validation", message: explain_invalid(&mut order, status).await });
        }
        let key_pem = order.finalize().await.map_err(|e| acme_err("finalizing the order", e))?;
        let chain_pem =
            order.poll_certificate(&poll_policy()).await.map_err(|e| acme_err("downloading the certificate", e))?;
        let loaded =
            load_pem(chain_pem.as_bytes(), key_pem.as_bytes(), &self.dir.path(CERT_FILE), &self.dir.path(KEY_FILE))?;
        // Key first: a cut between the two leaves an unusable pair, which means a new order,
        // never a certificate served with the wrong key.
        self.dir.write(KEY_FILE, key_pem.as_bytes())?;
        self.dir.write(CERT_FILE, chain_pem.as_bytes())?;
        Ok(loaded)
    }

    async fn prepare_challenges(&self, order: &mut Order) -> Result<(), TlsError> {
        let kind = match self.settings.challenge {
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Http01 => ChallengeType::Http01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| acme_err("fetching an authorization", e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                // Reused from an earlier order: nothing to prove.
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(TlsError::Order {
                        context: "authorization",
                        message: format!("{} is {other:?}", authz.identifier()),
                    });
                }
            }
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| TlsError::Order {
                context: "authorization",
                message: format!("the CA offers no {} challenge", challenge_name(self.settings.challenge)),
            })?;
            let name = match &challenge.identifier().identifier {
                Identifier::Dns(n) => n.clone(),
                other => {
                    return Err(TlsError::Order {
                        context: "authorization",
                        message: format!("unexpected identifier {other:?}"),
                    });
                }
            };
            let key_authorization = challenge.key_authorization();
            match self.settings.challenge {
                AcmeChallenge::TlsAlpn01 => {
                    self.resolver.add_challenge(&name, challenge_cert(&name, key_authorization.digest().as_ref())?);
                }
                AcmeChallenge::Http01 => match &self.http01 {
                    Some(t) => t.insert(&challenge.token, key_authorization.as_str()),
                    None => return Err(TlsError::Internal("http-01 chosen but no port-80 listener".into())),
                },
            }
            log::info!("tls: {} challenge for {name} ready", challenge_name(self.settings.challenge));
            challenge.set_ready().await.map_err(|e| acme_err("starting validation", e))?;
        }
        Ok(())
    }
}

/// instant-acme parses whatever the directory URL answers as the directory, so a 404 page
/// surfaces as "invalid type: integer 404"; this turns an error status there into words.
struct DirectoryProbe {
    inner: Box<dyn instant_acme::HttpClient>,
    directory: String,
}

/// The directory URL answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("no ACME directory at {url} (HTTP {status})")]
struct NoDirectory {
    url: String,
    status: u16,
}

impl instant_acme::HttpClient for DirectoryProbe {
    fn request(
        &self,
        req: http::Request<instant_acme::BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send>,
    > {
        let is_directory = req.method() == http::Method::GET
            && req.uri().to_string().trim_end_matches('/') == self.directory.trim_end_matches('/');
        let url = self.directory.clone();
        let response = self.inner.request(req);
        Box::pin(async move {
            let response = response.await?;
            let status = response.parts.status;
            if is_directory && !status.is_success() {
                return Err(instant_acme::Error::Other(Box::new(NoDirectory { url, status: status.as_u16() })));
            }
            Ok(response)
        })
    }
}

/// The next SIGHUP, or never when none is watched.
async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

async fn new_order(
    account: &Account,
    ids: &[Identifier],
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Order, TlsError> {
    if let Some(id) = replaces {
        match account.new_order(&NewOrder::new(ids).replaces(id)).await {
            Ok(o) => return Ok(o),
            // Caddy does the same: a renewal must not fail because ARI bookkeeping did.
            Err(e) => log::warn!("tls: renewal order marked `replaces` was not accepted ({e}); ordering without it"),
        }
    }
    account.new_order(&NewOrder::new(ids)).await.map_err(|e| acme_err("creating the order", e))
}

async fn explain_invalid(order: &mut Order, status: OrderStatus) -> String {
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                details.push(format!("{}: {p}", authz.identifier()));
            }
        }
    }
    if details.is_empty() {
        format!("the order ended {status:?}")
    } else {
        format!("the order ended {status:?}: {}", details.join("; "))
    }
}

/// The wait after `failures` failures in a row: exponential from `initial`, capped at `max`,
/// with ±20% jitter so a fleet of boxes does not retry in step.
pub fn backoff_delay(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    let base = (initial.as_secs_f64() * exp).min(max.as_secs_f64());
    let jitter = rand::rng().random_range(0.8..1.2);
    Duration::from_secs_f64((base * jitter).min(max.as_secs_f64()))
}

fn challenge_name(c: AcmeChallenge) -> &'static str {
    match c {
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        AcmeChallenge::Http01 => "http-01",
    }
}

fn acme_err(context: &'static str, source: instant_acme::Error) -> TlsError {
    TlsError::Acme { context, source }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// Sleeps; true when shutdown came first.
async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_a_minute_to_the_cap_and_never_below() {
        let (initial, max) = (Duration::from_secs(60), Duration::from_secs(6 * 3600));
        for _ in 0..50 {
            let d: Vec<Duration> = (1..=12).map(|n| backoff_delay(initial, max, n)).collect();
            assert!(d[0] >= Duration::from_secs(48) && d[0] <= Duration::from_secs(72), "{d:?}");
            for w in d.windows(2).take(7) {
                assert!(w[1] > w[0], "grows while below the cap: {d:?}");
            }
            assert!(d.iter().all(|x| *x <= max));
            assert!(d[11] >= max.mul_f64(0.8), "reaches hours: {d:?}");
        }
        assert!(backoff_delay(initial, max, u32::MAX) <= max);
    }
}
