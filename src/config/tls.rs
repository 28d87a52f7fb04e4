//! `[tls]` and `[tls.acme]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, PublicUrl, Scheme, Secret};

/// `[tls]`: how the public listener is secured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `off`, `files` or `acme`.
    pub mode: TlsMode,
    /// Seconds a client may take to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// `files` mode: the certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// `files` mode: the private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `files` mode: how often the files are checked for changes (SIGHUP reloads at once).
    pub reload_interval_secs: u64,
    /// `[tls.acme]`: automatic certificates.
    pub acme: AcmeConfig,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Off,
            handshake_timeout_secs: 10,
            cert_file: None,
            key_file: None,
            reload_interval_secs: 10,
            acme: AcmeConfig::default(),
        }
    }
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `[tls.acme]`: where and how the box gets its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// `production` (Let's Encrypt), `staging` (Let's Encrypt staging) or a directory URL.
    pub directory: String,
    /// Contact e-mail given to the CA (optional).
    pub contact: Option<String>,
    /// Names on the certificate; empty means the host of `public_url`.
    pub domains: Vec<String>,
    /// PEM file of extra roots trusted for the directory's HTTPS (a private or test CA).
    pub directory_roots: Option<PathBuf>,
    /// External account binding key id, for CAs that require one.
    pub eab_kid: Option<String>,
    /// External account binding HMAC key, base64url as the CA shows it.
    pub eab_hmac_key: Secret,
    /// `tls-alpn-01` (on the public listener, port 443) or `http-01` (on `http_listen`, port 80).
    pub challenge: AcmeChallenge,
    /// Address of the small HTTP listener for `http-01` (it redirects everything else to https).
    pub http_listen: SocketAddr,
    /// Renew when this fraction of the certificate's lifetime remains (ARI may say earlier).
    pub renew_remaining: f64,
    /// First wait after a failed attempt, in seconds; it doubles with each failure.
    pub retry_initial_secs: u64,
    /// Longest wait between failed attempts, in seconds.
    pub retry_max_secs: u64,
    /// Longest sleep between two looks at the certificate and the CA's renewal info, in seconds.
    pub check_interval_secs: u64,
    /// Set by `serve --acme-retry-now`, never from the file: forget the stored retry backoff
    /// and order at once if an order is due.
    #[serde(skip)]
    pub retry_now: bool,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: "production".into(),
            contact: None,
            domains: Vec::new(),
            directory_roots: None,
            eab_kid: None,
            eab_hmac_key: Secret::default(),
            challenge: AcmeChallenge::TlsAlpn01,
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            renew_remaining: 1.0 / 3.0,
            retry_initial_secs: 60,
            retry_max_secs: 6 * 3600,
            check_interval_secs: 6 * 3600,
            retry_now: false,
        }
    }
}

impl AcmeConfig {
    /// The directory URL, with the named ones resolved.
    pub fn directory_url(&self) -> &str {
        match self.directory.trim() {
            "production" | "" => LETS_ENCRYPT_PRODUCTION,
            "staging" => LETS_ENCRYPT_STAGING,
            url => url,
        }
    }
}

/// The ACME challenge the box answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 on the public listener (needs port 443 reachable).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01 on `http_listen` (needs port 80 reachable).
    #[serde(rename = "http-01")]
    Http01,
}

/// TLS mode of the public listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain HTTP, for a box behind a TLS-terminating tunnel or proxy.
    #[default]
    Off,
    /// Certificate and key from PEM files.
    Files,
    /// Certificate from an ACME CA (Let's Encrypt).
    Acme,
}

impl TlsMode {
    /// True for plain HTTP: no certificate to serve, so none can be missing or expire.
    pub fn is_off(self) -> bool {
        self == Self::Off
    }
}

/// What the TLS checks need from outside `[tls]`.
pub(super) struct TlsContext<'a> {
    /// `None` when `public_url` is itself invalid: that is reported already, and the checks
    /// against it are skipped rather than reported twice.
    pub(super) public_url: Option<&'a PublicUrl>,
    /// `serve --dev`, which runs plain HTTP on loopback.
    pub(super) dev: bool,
    /// `server.listen`.
    pub(super) server_listen: SocketAddr,
    /// `admin.listen`.
    pub(super) admin_listen: SocketAddr,
}

impl TlsConfig {
    pub(super) fn validate(&self, ctx: &TlsContext<'_>, errs: &mut Vec<ConfigError>) {
        if let Some(public_url) = ctx.public_url
            && !ctx.dev
            && public_url.scheme() != Scheme::Https
        {
            let problem = match self.mode {
                TlsMode::Off => {
                    "must be https:// even with tls.mode = \"off\": Twilio only streams media to wss://, so the tunnel in front of the box must speak TLS"
                }
                _ => "must be https:// when the box serves TLS itself",
            };
            errs.push(ConfigError::invalid("public_url", problem));
        }
        if self.handshake_timeout_secs == 0 {
            errs.push(ConfigError::invalid("tls.handshake_timeout_secs", "must be at least 1"));
        }
        match self.mode {
            TlsMode::Off => {}
            TlsMode::Files => self.validate_files(errs),
            TlsMode::Acme => self.acme.validate(ctx, errs),
        }
    }

    fn validate_files(&self, errs: &mut Vec<ConfigError>) {
        if self.cert_file.is_none() {
            errs.push(ConfigError::invalid(
                "tls.cert_file",
                "is missing; tls.mode = \"files\" needs the certificate chain PEM (e.g. fullchain.pem)",
            ));
        }
        if self.key_file.is_none() {
            errs.push(ConfigError::invalid(
                "tls.key_file",
                "is missing; tls.mode = \"files\" needs the private key PEM (e.g. privkey.pem)",
            ));
        }
        if self.reload_interval_secs == 0 {
            errs.push(ConfigError::invalid("tls.reload_interval_secs", "must be at least 1"));
        }
    }
}

impl AcmeConfig {
    fn validate(&self, ctx: &TlsContext<'_>, errs: &mut Vec<ConfigError>) {
        self.validate_directory(errs);
        self.validate_contact(errs);
        self.validate_domains(ctx.public_url, errs);
        self.validate_eab(errs);
        self.validate_schedule(errs);
        if self.challenge == AcmeChallenge::Http01
            && (self.http_listen == ctx.server_listen || self.http_listen == ctx.admin_listen)
        {
            errs.push(ConfigError::invalid("tls.acme.http_listen", "must differ from server.listen and admin.listen"));
        }
    }

    fn validate_directory(&self, errs: &mut Vec<ConfigError>) {
        let url = self.directory_url();
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
            _ => {
                errs.push(ConfigError::invalid(
                    "tls.acme.directory",
                    format!("{url:?} is neither \"production\", \"staging\" nor an https:// directory URL"),
                ));
            }
        }
    }

    fn validate_contact(&self, errs: &mut Vec<ConfigError>) {
        if let Some(c) = &self.contact {
            let c = c.trim().trim_start_matches("mailto:");
            let valid = c.split_once('@').is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
                && !c.contains(char::is_whitespace)
                && !c.contains(',');
            let template =
                ["your-", "your_", "changeme", "change-me"].iter().any(|m| c.to_ascii_lowercase().contains(m));
            if template {
                errs.push(ConfigError::invalid(
                    "tls.acme.contact",
                    format!("{c:?} is the template's example; put the owner's e-mail address there or remove the key"),
                ));
            } else if !valid {
                errs.push(ConfigError::invalid(
                    "tls.acme.contact",
                    format!("{c:?} is not an e-mail address; use e.g. \"owner@shop.example.com\" or remove the key"),
                ));
            }
        }
    }

    /// Each name must be one the CA can validate, and together they must cover the host
    /// Twilio connects to (checked only when `public_url` is valid).
    fn validate_domains(&self, public_url: Option<&PublicUrl>, errs: &mut Vec<ConfigError>) {
        for d in &self.domains {
            if !is_provable_dns_name(d) {
                errs.push(ConfigError::invalid(
                    "tls.acme.domains",
                    format!("{d:?} is not a DNS name the box can prove (no wildcards, IPs or ports)"),
                ));
            }
        }
        let Some(public_url) = public_url else { return };
        if self.domains.is_empty() && public_url.host().parse::<std::net::IpAddr>().is_ok() {
            errs.push(ConfigError::invalid(
                "tls.acme.domains",
                "is empty and public_url is an IP address; ACME needs a DNS name pointing at the shop",
            ));
        }
        // Twilio connects to the host of public_url: a certificate without it fails every
        // call's TLS handshake even though the order itself succeeds.
        let host = public_url.host();
        if !self.domains.is_empty() && !self.domains.iter().any(|d| d.trim().eq_ignore_ascii_case(host)) {
            errs.push(ConfigError::invalid(
                "tls.acme.domains",
                format!(
                    "does not include {host:?}, the host of public_url, so Twilio would reject the certificate; add it or remove the key (the default is the host of public_url)"
                ),
            ));
        }
    }

    fn validate_eab(&self, errs: &mut Vec<ConfigError>) {
        if self.eab_kid.is_some() == self.eab_hmac_key.is_empty() {
            errs.push(ConfigError::invalid(
                "tls.acme.eab_kid",
                "eab_kid and eab_hmac_key go together; set both (from the CA's account page) or neither",
            ));
        }
        if !self.eab_hmac_key.is_empty()
            && base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                self.eab_hmac_key.expose().trim_end_matches('='),
            )
            .is_err()
        {
            errs.push(ConfigError::invalid("tls.acme.eab_hmac_key", "is not base64url (as the CA shows it)"));
        }
    }

    /// When to renew and how to back off.
    fn validate_schedule(&self, errs: &mut Vec<ConfigError>) {
        if !(self.renew_remaining > 0.0 && self.renew_remaining < 1.0) {
            errs.push(ConfigError::invalid(
                "tls.acme.renew_remaining",
                "must be a fraction between 0 and 1 (default 0.333: renew with a third of the lifetime left)",
            ));
        }
        if self.retry_initial_secs == 0 || self.retry_max_secs < self.retry_initial_secs {
            errs.push(ConfigError::invalid(
                "tls.acme.retry_initial_secs",
                "must be at least 1 and not above tls.acme.retry_max_secs",
            ));
        }
        if self.check_interval_secs == 0 {
            errs.push(ConfigError::invalid("tls.acme.check_interval_secs", "must be at least 1"));
        }
    }
}

/// A name an ACME CA can validate by HTTP-01 or TLS-ALPN-01: at least two labels, no
/// wildcards, IP addresses or ports.
fn is_provable_dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').count() >= 2
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, EnvSecrets};

    fn tls_config(tls: &str) -> Result<Config, ConfigError> {
        let env = EnvSecrets::for_tests();
        let text = format!("public_url = \"https://shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n{tls}");
        Config::from_toml(&text, Path::new("t.toml"), &env)
    }

    #[test]
    fn tls_keys_are_validated_with_the_key_named() {
        for (tls, key) in [
            ("[tls]\nmode = \"files\"\n", "tls.cert_file"),
            ("[tls]\nmode = \"files\"\ncert_file = \"/c.pem\"\n", "tls.key_file"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\ndirectory = \"ftp://ca\"\n", "tls.acme.directory"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\ncontact = \"owner at shop\"\n", "tls.acme.contact"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"*.shop.example.com\"]\n", "tls.acme.domains"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\neab_kid = \"kid-1\"\n", "tls.acme.eab_kid"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\nrenew_remaining = 1.5\n", "tls.acme.renew_remaining"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\nretry_initial_secs = 0\n", "tls.acme.retry_initial_secs"),
            ("[tls]\nmode = \"acme\"\n[tls.acme]\nchallenge = \"dns-01\"\n", "challenge"),
            // A certificate without the host Twilio connects to is useless to the box.
            ("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"www.shop.example.com\"]\n", "tls.acme.domains"),
        ] {
            let err = tls_config(tls).unwrap_err().to_string();
            assert!(err.contains(key), "{tls:?}: {err}");
        }
        let env = EnvSecrets::for_tests();
        let err = Config::from_toml(
            "public_url = \"http://shop.example.com\"\n[storage]\ndir = \"/x\"\n",
            Path::new("t"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("public_url") && err.contains("https"), "{err}");
    }

    #[test]
    fn acme_defaults_and_named_directories() {
        let c = tls_config("[tls]\nmode = \"acme\"\n").unwrap();
        assert_eq!(c.tls.acme.directory_url(), LETS_ENCRYPT_PRODUCTION);
        assert_eq!(c.tls.acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(c.acme_domains(), vec!["shop.example.com".to_string()]);
        let c = tls_config(
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndirectory = \"staging\"\nchallenge = \"http-01\"\ndomains = [\"Shop.Example.com\", \"www.shop.example.com\"]\ncontact = \"owner@shop.example.com\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.acme.directory_url(), LETS_ENCRYPT_STAGING);
        assert_eq!(c.tls.acme.challenge, AcmeChallenge::Http01);
        assert_eq!(c.acme_domains(), vec!["shop.example.com".to_string(), "www.shop.example.com".to_string()]);
        let c = tls_config("[tls]\nmode = \"acme\"\n[tls.acme]\ndirectory = \"https://ca.internal/dir\"\neab_kid = \"k\"\neab_hmac_key = \"zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\"\n").unwrap();
        assert_eq!(c.tls.acme.directory_url(), "https://ca.internal/dir");
        assert!(!c.to_redacted_toml().contains("zWNDZM6e"), "the EAB key is a secret");
    }
}
