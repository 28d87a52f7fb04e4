//! The certificate state the rest of the box may watch: admin health shows it, the `fault`
//! indicator lights from it. Let's Encrypt no longer e-mails expiry warnings, so this is how
//! anyone learns that renewal is failing.

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;

/// Receiving end of the certificate state; cheap to clone, `changed()` wakes on every update.
pub type TlsStatusRx = watch::Receiver<TlsStatus>;

/// What the public listener serves and how renewal is going.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TlsStatus {
    /// `off`, `files` or `acme`.
    pub mode: &'static str,
    /// The certificate served to new connections, if any.
    pub certificate: Option<CertSummary>,
    /// When the box last tried to get (ACME) or load (files) a certificate.
    pub last_attempt: Option<Timestamp>,
    /// When that last succeeded.
    pub last_success: Option<Timestamp>,
    /// Why the last attempt failed; cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts in a row (ACME); drives the backoff.
    pub failures: u32,
    /// When the next ACME attempt (or renewal check) is planned.
    pub next_attempt: Option<Timestamp>,
    /// Set while the box waits for something before it may act (e.g. a plausible clock).
    pub waiting_for: Option<String>,
}

/// The served certificate, as read from its leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CertSummary {
    /// DNS names in the subjectAltName.
    pub domains: Vec<String>,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

impl TlsStatus {
    /// True when the owner should look: TLS is on and there is no certificate, it has
    /// expired, or the last attempt to get or load one failed. This is the `fault` LED's input.
    pub fn fault(&self, now: Timestamp) -> bool {
        if self.mode == "off" || self.mode.is_empty() {
            return false;
        }
        match &self.certificate {
            None => true,
            Some(c) => c.not_after <= now || self.last_error.is_some(),
        }
    }
}
