//! The box's configuration: one TOML file plus secrets from the environment.
//!
//! Everything an installer can get wrong is checked here, at start-up, with a message that
//! names the key and says how to fix it. The rest of the program only ever sees a validated
//! [`Config`].

mod admin;
mod error;
mod hours;
mod indicators;
mod log;
mod media;
mod missed_calls;
mod network;
mod public_url;
mod secret;
mod server;
mod storage;
mod texts;
mod tls;
mod twilio;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use error::ConfigError;
pub use hours::{HoursConfig, Open};
pub use indicators::{
    IndicatorsConfig, LedBackendChoice, LedConfig, LedPatternKind, LineToneConfig, MAX_CADENCE_ENTRIES,
    MAX_TONE_FREQUENCIES, QuietHoursConfig, SpeakerBackendChoice, ToneConfig,
};
pub use log::LogConfig;
pub use media::{FlowKind, MediaConfig};
pub use missed_calls::{MAX_BODY_CHARS, MissedCallsConfig, is_e164};
pub use network::{NetworkConfig, is_hex_key as network_is_hex_key};
pub use public_url::{PublicUrl, Scheme};
pub use secret::Secret;
pub use server::ServerConfig;
pub use storage::StorageConfig;
pub use texts::TextsConfig;
pub use tls::{AcmeChallenge, AcmeConfig, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING, TlsConfig, TlsMode};
pub use twilio::{DEFAULT_API_BASE_URL, TwilioConfig};

/// Where `callbox` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/callbox/callbox.toml";
/// Environment variable that overrides `twilio.auth_token`.
pub const ENV_TWILIO_AUTH_TOKEN: &str = "CALLBOX_TWILIO_AUTH_TOKEN";
/// Environment variable that overrides `admin.token`.
pub const ENV_ADMIN_TOKEN: &str = "CALLBOX_ADMIN_TOKEN";
/// Environment variable that overrides `twilio.api_key_secret`.
pub const ENV_TWILIO_API_KEY_SECRET: &str = "CALLBOX_TWILIO_API_KEY_SECRET";

/// The file as written by the installer; every section is optional and has defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    public_url: Option<String>,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    twilio: TwilioConfig,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    tls: TlsConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    media: MediaConfig,
    #[serde(default)]
    indicators: IndicatorsConfig,
    #[serde(default)]
    network: NetworkConfig,
    #[serde(default)]
    missed_calls: MissedCallsConfig,
    #[serde(default)]
    hours: HoursConfig,
    #[serde(default)]
    texts: TextsConfig,
}

/// The validated configuration the box runs with.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Config {
    /// What Twilio calls, normalised to `scheme://host[:port]` with no trailing slash.
    pub public_url: PublicUrl,
    /// The public listener (Twilio).
    pub server: ServerConfig,
    /// The LAN listener (owner).
    pub admin: AdminConfig,
    /// Twilio account and call-handling settings.
    pub twilio: TwilioConfig,
    /// Where the call log lives and how long it is kept.
    pub storage: StorageConfig,
    /// TLS mode.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Media streams: call flows, greeting, recordings, relay.
    pub media: MediaConfig,
    /// LEDs and ring tone in the shop.
    pub indicators: IndicatorsConfig,
    /// Wi-Fi on the SD image.
    pub network: NetworkConfig,
    /// Text-back to callers nobody answered, alerts to the owner.
    pub missed_calls: MissedCallsConfig,
    /// Opening hours: the front desk first while open.
    pub hours: HoursConfig,
    /// The owner's saved texts.
    pub texts: TextsConfig,
    /// True for `serve --dev`.
    pub dev: bool,
}

/// Secrets found in the environment, passed in so that loading stays testable.
#[derive(Debug, Default, Clone)]
pub struct EnvSecrets {
    /// `CALLBOX_TWILIO_AUTH_TOKEN`.
    pub twilio_auth_token: Option<String>,
    /// `CALLBOX_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `CALLBOX_TWILIO_API_KEY_SECRET`.
    pub twilio_api_key_secret: Option<String>,
}

#[cfg(test)]
impl EnvSecrets {
    /// Valid secrets for unit tests that parse a config.
    pub(crate) fn for_tests() -> Self {
        Self {
            twilio_auth_token: Some("0cc175b9c0f1b6a831c399e269772661".into()),
            admin_token: Some("admin-token-0123456789".into()),
            twilio_api_key_secret: None,
        }
    }
}

impl EnvSecrets {
    /// Reads the secrets from the process environment; empty values count as unset.
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            twilio_auth_token: get(ENV_TWILIO_AUTH_TOKEN),
            admin_token: get(ENV_ADMIN_TOKEN),
            twilio_api_key_secret: get(ENV_TWILIO_API_KEY_SECRET),
        }
    }
}

impl Config {
    /// Reads and validates a config file, with secrets from `env` taking precedence.
    pub fn load(path: &Path, env: &EnvSecrets) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path, env)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path, env: &EnvSecrets) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let mut errs = Vec::new();
        // A bad public_url must not hide the problems of every other key: the rest is checked
        // against a stand-in, and only the checks that need the real URL are skipped.
        let public_url = match raw.public_url.as_deref() {
            Some(u) => PublicUrl::parse(u).map_err(|e| errs.push(e)).ok(),
            None => {
                errs.push(ConfigError::invalid(
                    "public_url",
                    "is missing; add public_url = \"https://your.shop.domain\" (the address Twilio calls) at the top of the file",
                ));
                None
            }
        };
        let url_ok = public_url.is_some();
        let mut config = Self {
            public_url: public_url.unwrap_or_else(|| PublicUrl {
                scheme: Scheme::Https,
                host: "public-url.invalid".into(),
                port: None,
            }),
            server: raw.server,
            admin: raw.admin,
            twilio: raw.twilio,
            storage: raw.storage,
            tls: raw.tls,
            log: raw.log,
            media: raw.media,
            indicators: raw.indicators,
            network: raw.network,
            missed_calls: raw.missed_calls,
            hours: raw.hours,
            texts: raw.texts,
            dev: false,
        };
        config.apply_env(env);
        config.validate(url_ok, &mut errs);
        ConfigError::from_problems(errs)?;
        Ok(config)
    }

    /// The configuration of `serve --dev`: plain HTTP on loopback, data in `data_dir`, secrets
    /// given by the caller (generated once and kept in the data dir).
    pub fn dev(data_dir: PathBuf, twilio_auth_token: Secret, admin_token: Secret) -> Self {
        let server = ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), ..ServerConfig::default() };
        Self {
            public_url: PublicUrl { scheme: Scheme::Http, host: "127.0.0.1".into(), port: Some(8080) },
            server,
            admin: AdminConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8081)), token: admin_token },
            twilio: TwilioConfig { auth_token: twilio_auth_token, ..TwilioConfig::default() },
            storage: StorageConfig { dir: data_dir, ..StorageConfig::default() },
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            media: MediaConfig::default(),
            indicators: IndicatorsConfig::default(),
            network: NetworkConfig::default(),
            missed_calls: MissedCallsConfig::default(),
            hours: HoursConfig::default(),
            texts: TextsConfig::default(),
            dev: true,
        }
    }

    /// Replaces the public URL (dev mode uses the port it actually bound).
    pub fn with_public_url(mut self, url: PublicUrl) -> Self {
        self.public_url = url;
        self
    }

    fn apply_env(&mut self, env: &EnvSecrets) {
        if let Some(t) = &env.twilio_auth_token {
            self.twilio.auth_token = Secret::new(t.trim());
        }
        if let Some(t) = &env.admin_token {
            self.admin.token = Secret::new(t.trim());
        }
        if let Some(t) = &env.twilio_api_key_secret {
            self.twilio.api_key_secret = Secret::new(t.trim());
        }
    }

    /// Checks every key and collects every problem, so an installer fixes them in one round.
    /// The sections are asked in the order `callbox check` has always listed problems in,
    /// which is why the two Twilio checks are apart.
    fn validate(&self, url_ok: bool, errs: &mut Vec<ConfigError>) {
        self.twilio.validate_auth_token(self.dev, errs);
        self.admin.validate(self.dev, self.server.listen, errs);
        self.server.validate(errs);
        self.storage.validate(self.dev, errs);
        let tls = tls::TlsContext {
            public_url: url_ok.then_some(&self.public_url),
            dev: self.dev,
            server_listen: self.server.listen,
            admin_listen: self.admin.listen,
        };
        self.tls.validate(&tls, errs);
        self.twilio.validate_call_handling(errs);
        self.media.validate(errs);
        self.indicators.validate(errs);
        self.network.validate(errs);
        self.twilio.validate_rest(self.missed_calls.sends_anything(), errs);
        self.missed_calls.validate(errs);
        self.hours.validate(self.twilio.front_desk.as_deref(), errs);
        self.texts.validate(errs);
        self.log.validate(errs);
    }

    /// The names the certificate must cover: `tls.acme.domains`, or the host of `public_url`.
    pub fn acme_domains(&self) -> Vec<String> {
        if self.tls.acme.domains.is_empty() {
            vec![self.public_url.host().to_owned()]
        } else {
            self.tls.acme.domains.iter().map(|d| d.trim().to_ascii_lowercase()).collect()
        }
    }

    /// The effective configuration as TOML with secrets redacted, for `callbox check`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_everywhere() {
        let env = EnvSecrets {
            twilio_auth_token: Some("92eb5ffee6ae2fec3ad71c777531578f".into()),
            admin_token: Some("admin-token-0123456789".into()),
            twilio_api_key_secret: None,
        };
        let c =
            Config::from_toml("public_url = \"shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n", Path::new("t"), &env)
                .unwrap();
        assert_eq!(c.twilio.auth_token.expose(), "92eb5ffee6ae2fec3ad71c777531578f");
        let shown = format!("{} {:?}", c.to_redacted_toml(), c);
        assert!(
            !shown.contains("92eb5ffee6ae2fec3ad71c777531578f") && !shown.contains("admin-token-0123456789"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
    #[test]
    fn missing_token_and_bad_toml_name_the_problem() {
        let none = EnvSecrets::default();
        let e = Config::from_toml("public_url = \"shop.example.com\"\n", Path::new("t"), &none).unwrap_err();
        assert!(e.to_string().contains("twilio.auth_token"), "{e}");
        let e = Config::from_toml("public_url = \n", Path::new("t.toml"), &none).unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        let e = Config::from_toml("public_urll = \"x\"\n", Path::new("t.toml"), &none).unwrap_err();
        assert!(e.to_string().contains("public_urll"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let env = EnvSecrets::default();
        let text = "public_url = \"https://your-domain.example\"\n[admin]\ntoken = \"CHANGE-ME-CHANGE-ME\"\n\
                    [twilio]\nauth_token = \"abc\"\n[storage]\ndir = \"relative\"\n";
        let e = Config::from_toml(text, Path::new("t"), &env).unwrap_err();
        let keys: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        for key in ["public_url", "admin.token", "twilio.auth_token", "storage.dir"] {
            assert!(keys.iter().any(|k| k.starts_with(&format!("config key `{key}`"))), "{key}: {keys:?}");
        }
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(e.to_string().starts_with("4 problems: "), "{e}");
    }

    #[test]
    fn texts_need_an_account_and_name_each_bad_key() {
        let env = EnvSecrets::for_tests();
        let base = "public_url = \"shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n";
        let e = Config::from_toml(&format!("{base}[missed_calls]\ntext_back = \"Sorry!\"\n"), Path::new("t"), &env)
            .unwrap_err();
        assert!(e.to_string().contains("twilio.account_sid"), "{e}");

        let text = format!(
            "{base}[twilio]\naccount_sid = \"AC0123\"\napi_key_sid = \"SK0123456789abcdef0123456789abcdef\"\n\
             api_base_url = \"http://api.twilio.com\"\nsms_from = \"5035550100\"\n\
             [missed_calls]\ntext_back = \"  \"\nnotify = [\"503-555-0199\"]\nwindow_hours = 9999\n"
        );
        let e = Config::from_toml(&text, Path::new("t"), &env).unwrap_err();
        let keys: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        for key in [
            "twilio.account_sid",
            "twilio.api_key_secret",
            "twilio.api_base_url",
            "twilio.sms_from",
            "missed_calls.text_back",
            "missed_calls.notify",
            "missed_calls.window_hours",
        ] {
            assert!(keys.iter().any(|k| k.starts_with(&format!("config key `{key}`"))), "{key}: {keys:?}");
        }

        let good = format!(
            "{base}[twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
             [missed_calls]\ntext_back = \"Sorry we missed you\"\nnotify = [\"+15035550199\"]\n\
             quiet_hours = {{ start = \"21:00\", end = \"08:00\" }}\n"
        );
        let c = Config::from_toml(&good, Path::new("t"), &env).unwrap();
        let (user, secret) = c.twilio.rest_credentials().unwrap();
        assert_eq!((user, secret.expose()), ("AC0123456789abcdef0123456789abcdef", "0cc175b9c0f1b6a831c399e269772661"));
        assert_eq!(c.twilio.api_base_url, DEFAULT_API_BASE_URL);
        let local = good.replace("[missed_calls]", "api_base_url = \"http://127.0.0.1:4010\"\n[missed_calls]");
        assert!(Config::from_toml(&local, Path::new("t"), &env).is_ok(), "plain http to a fake on this machine");
    }
}
