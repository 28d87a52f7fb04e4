//! The certificate state the rest of the box may watch: admin health shows it, the `fault`
//! indicator lights from it. Let's Encrypt no longer e-mails expiry warnings, so this is how
//! anyone learns that renewal is failing.

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::TlsMode;

/// Receiving end of the certificate state; cheap to clone, `changed()` wakes on every update.
pub type TlsStatusRx = watch::Receiver<TlsStatus>;

/// What the public listener serves and how renewal is going.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TlsStatus {
    /// The configured mode; serialises as `"off"`, `"files"` or `"acme"`, which the admin
    /// health JSON and the dashboard show.
    pub mode: TlsMode,
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

/// ACME failures in a row before the state counts as a fault: one failed attempt is routine
/// (a CA hiccup, retried a minute later); three in a row (about 7 minutes at the default
/// backoff, longer later) means something needs a look (DNS, port forwarding, the CA).
pub const FAULT_AFTER_FAILURES: u32 = 3;

impl TlsStatus {
    /// True when the owner should look, the `fault` LED's input. TLS is on and: there is no
    /// certificate, or it has expired, or (`files`) the last reload failed, or (`acme`)
    /// [`FAULT_AFTER_FAILURES`] orders failed in a row.
    pub fn fault(&self, now: Timestamp) -> bool {
        if self.expired(now) {
            return true;
        }
        let failing = match self.mode {
            TlsMode::Files => self.last_error.is_some(),
            TlsMode::Acme => self.failures >= FAULT_AFTER_FAILURES,
            TlsMode::Off => return false,
        };
        match &self.certificate {
            None => true,
            Some(c) => c.not_after <= now || failing,
        }
    }
}

impl TlsStatus {
    /// True while the certificate served has expired: every client, Twilio included, refuses
    /// the handshake, so the box is not doing its job even though it runs.
    pub fn expired(&self, now: Timestamp) -> bool {
        !self.mode.is_off() && self.certificate.as_ref().is_some_and(|c| c.not_after <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_means_no_certificate_expired_or_persistent_failure() {
        let now = Timestamp::now();
        let cert = CertSummary {
            domains: vec!["shop.example.com".into()],
            serial: "01".into(),
            not_before: now - jiff::SignedDuration::from_hours(1),
            not_after: now + jiff::SignedDuration::from_hours(24 * 30),
        };
        let ok = TlsStatus { mode: TlsMode::Acme, certificate: Some(cert.clone()), ..TlsStatus::default() };
        assert!(!ok.fault(now));
        assert!(!TlsStatus { mode: TlsMode::Off, ..TlsStatus::default() }.fault(now));
        assert!(TlsStatus { mode: TlsMode::Acme, ..TlsStatus::default() }.fault(now), "no certificate yet");
        let once = TlsStatus { failures: 1, last_error: Some("x".into()), ..ok.clone() };
        assert!(!once.fault(now), "a single failure is retried, not a fault");
        assert!(TlsStatus { failures: FAULT_AFTER_FAILURES, ..once.clone() }.fault(now));
        assert!(ok.fault(cert.not_after), "expired");
        let files = TlsStatus {
            mode: TlsMode::Files,
            certificate: Some(cert),
            last_error: Some("bad".into()),
            ..TlsStatus::default()
        };
        assert!(files.fault(now), "a failed reload needs the installer");
    }
}
