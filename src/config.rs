//! The box's configuration: one TOML file plus secrets from the environment.
//!
//! Everything an installer can get wrong is checked here, at start-up, with a message that
//! names the key and says how to fix it. The rest of the program only ever sees a validated
//! [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where `callbox` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/callbox/callbox.toml";
/// Environment variable that overrides `twilio.auth_token`.
pub const ENV_TWILIO_AUTH_TOKEN: &str = "CALLBOX_TWILIO_AUTH_TOKEN";
/// Environment variable that overrides `admin.token`.
pub const ENV_ADMIN_TOKEN: &str = "CALLBOX_ADMIN_TOKEN";

/// Host names that only ever appear in examples; a box configured with one of them would
/// hand Twilio a stream URL nobody can reach.
const PLACEHOLDER_HOSTS: &[&str] = &["your-domain", "example.invalid", "changeme", "localhost.localdomain"];

/// A configuration problem, phrased for the installer who has to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has keys of the wrong type.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it names the line and key).
        message: String,
    },
    /// A key has a value the box cannot use.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The dotted key, e.g. `public_url`.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Several keys have problems; all are reported so that one round of edits fixes them.
    #[error("{} problems: {}", .0.len(), join_problems(.0))]
    Several(Vec<ConfigError>),
}

fn join_problems(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ConfigError {
    fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid { key, problem: problem.into() }
    }

    /// `Ok` for no problem, the problem itself for one, [`ConfigError::Several`] for more.
    fn from_problems(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Several(errors)),
        }
    }

    /// Each problem on its own, for printing one line per key.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            Self::Several(errors) => errors.iter().collect(),
            other => vec![other],
        }
    }
}

/// What an account Auth Token looks like: 32 hexadecimal characters.
fn is_auth_token(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()) && !looks_like_placeholder(token)
}

/// True for values copied from a template or an example rather than made up: markers such
/// as CHANGE-ME, your-…, example, xxxx, <…>, or one character repeated.
fn looks_like_placeholder(value: &str) -> bool {
    const MARKERS: &[&str] = &[
        "change-me",
        "changeme",
        "change_me",
        "change me",
        "your-",
        "your_",
        "your ",
        "example",
        "xxxx",
        "placeholder",
        "replace",
        "<",
        ">",
        "…",
        "...",
        "todo",
        "fixme",
    ];
    let v = value.trim().to_ascii_lowercase();
    let mut chars = v.chars();
    let repeated = chars.next().is_some_and(|first| chars.all(|c| c == first));
    repeated || MARKERS.iter().any(|m| v.contains(m))
}

/// A secret string that never shows up in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used (HMAC key, token compare).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

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
    /// True for `serve --dev`.
    pub dev: bool,
}

/// `[server]`: the public listener Twilio talks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to bind.
    pub listen: SocketAddr,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64 counts as one) may hold at once; more are
    /// closed on arrival. Twilio's media streams for many simultaneous calls may come from one
    /// address, so keep it well above the busiest hour's concurrent calls.
    pub max_connections_per_address: usize,
    /// Seconds a client may take to send a request's headers.
    pub header_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            max_connections: 512,
            max_connections_per_address: 128,
            header_timeout_secs: 10,
        }
    }
}

impl ServerConfig {
    /// The header read timeout as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
}

/// `[admin]`: the owner's listener on the shop LAN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address and port to bind.
    pub listen: SocketAddr,
    /// Bearer token for the admin API (or `CALLBOX_ADMIN_TOKEN`).
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([0, 0, 0, 0], 8080)), token: Secret::default() }
    }
}

/// `[twilio]`: the account and what callers hear around the media stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// The account's primary auth token (or `CALLBOX_TWILIO_AUTH_TOKEN`).
    pub auth_token: Secret,
    /// Optional `<Say>` before the stream connects.
    pub greeting: Option<String>,
    /// Front-desk number dialled when the stream ends (the caller pressed 0, or the flow ended).
    pub front_desk: Option<String>,
    /// Said before hanging up when no `front_desk` is set.
    pub goodbye: Option<String>,
}

/// `[storage]`: the call log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the call log and other state.
    pub dir: PathBuf,
    /// Calls older than this many days are pruned (0 keeps them forever).
    pub retention_days: u32,
    /// At most this many calls are kept, oldest pruned first (0 for no limit).
    pub max_calls: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("/var/lib/callbox"), retention_days: 365, max_calls: 100_000 }
    }
}

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

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// `[media]`: what the box does with a call's media stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// WAV file played to callers before the beep (any rate, mono or stereo; resampled to
    /// 8 kHz mono). Without one, a short built-in prompt tone is played.
    pub greeting_wav: Option<PathBuf>,
    /// Longest voicemail kept, in seconds; the stream ends when it is reached.
    pub max_recording_secs: u32,
    /// The flow for calls to numbers not listed in `flows`.
    pub default_flow: FlowKind,
    /// Flow per called number (`To`, E.164), e.g. `"+15035550100" = "relay"`.
    pub flows: std::collections::BTreeMap<String, FlowKind>,
    /// The voice agent's WebSocket (`ws://host:port/path`) for the `relay` flow.
    pub relay_url: Option<String>,
    /// Milliseconds the relay waits for the agent to connect before falling back to voicemail.
    pub relay_connect_timeout_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            greeting_wav: None,
            max_recording_secs: 120,
            default_flow: FlowKind::Voicemail,
            flows: Default::default(),
            relay_url: None,
            relay_connect_timeout_ms: 2000,
        }
    }
}

/// `[indicators]`: the LEDs and the ring tone in the shop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndicatorsConfig {
    /// `auto` (GPIO when the box is a Raspberry Pi, simulated otherwise), `gpio` or `sim`.
    pub leds: LedBackendChoice,
    /// `auto` (the default ALSA output when one opens, simulated otherwise) or `sim`.
    pub speaker: SpeakerBackendChoice,
    /// True when the LEDs are wired so that a low pin lights them.
    pub active_low: bool,
    /// LED of `ready`: healthy, no call.
    pub ready: LedConfig,
    /// LED of `incoming`: a call arrived and is being greeted.
    pub incoming: LedConfig,
    /// LED of `active`: at least one call in progress.
    pub active: LedConfig,
    /// LED of `message-waiting`: an unheard voicemail or a missed call.
    pub message_waiting: LedConfig,
    /// LED of `fault`: no or expiring certificate, call log error, disk nearly full.
    pub fault: LedConfig,
    /// The ring tone of calls to a number without a `line_tones` entry.
    pub tone: ToneConfig,
    /// A different ring per called number (`To`), e.g. the parts line.
    pub line_tones: Vec<LineToneConfig>,
    /// The ring stops after this many seconds even if the flow has not answered.
    pub max_ring_secs: u64,
    /// A call with no event for this long is taken as ended (its final callback was lost).
    pub call_timeout_secs: u64,
    /// Hours without ring tone (LEDs still work), in the box's local time.
    pub quiet_hours: Option<QuietHoursConfig>,
    /// IANA time zone of the shop (e.g. `America/Chicago`); the system's when unset.
    pub time_zone: Option<String>,
    /// Below this many MiB free in `storage.dir`, the box shows `fault`.
    pub disk_min_free_mb: u64,
}

impl Default for IndicatorsConfig {
    fn default() -> Self {
        use LedPatternKind::{Blink, DoubleBlink, Solid};
        let led = |pin: u8, pattern, period_ms| LedConfig { pins: vec![pin], pattern, period_ms, many_pattern: None };
        Self {
            leds: LedBackendChoice::Auto,
            speaker: SpeakerBackendChoice::Auto,
            active_low: false,
            ready: led(17, Solid, 1000),
            incoming: led(27, Blink, 250),
            active: LedConfig { many_pattern: Some(DoubleBlink), ..led(22, Solid, 1000) },
            message_waiting: led(23, Blink, 1000),
            fault: led(24, DoubleBlink, 1000),
            tone: ToneConfig::default(),
            line_tones: Vec::new(),
            max_ring_secs: 30,
            call_timeout_secs: 4 * 3600,
            quiet_hours: None,
            time_zone: None,
            disk_min_free_mb: 100,
        }
    }
}

/// A call flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    /// Greeting, then record a message; `0` goes to the front desk.
    #[default]
    Voicemail,
    /// Relay the stream to the voice agent, falling back to voicemail.
    Relay,
}

impl FlowKind {
    /// The name used in config, logs and the call record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voicemail => "voicemail",
            Self::Relay => "relay",
        }
    }
}

impl MediaConfig {
    /// The flow for a call to `to`.
    pub fn flow_for(&self, to: Option<&str>) -> FlowKind {
        to.and_then(|t| self.flows.get(t.trim())).copied().unwrap_or(self.default_flow)
    }

    /// The relay connect timeout as a duration.
    pub fn relay_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.relay_connect_timeout_ms)
    }

    fn validate(&self, errs: &mut Vec<ConfigError>) {
        if self.max_recording_secs == 0 {
            errs.push(ConfigError::invalid("media.max_recording_secs", "must be at least 1"));
        }
        if self.relay_connect_timeout_ms == 0 {
            errs.push(ConfigError::invalid("media.relay_connect_timeout_ms", "must be at least 1"));
        }
        if let Some(path) = &self.greeting_wav
            && !path.is_absolute()
        {
            errs.push(ConfigError::invalid("media.greeting_wav", format!("must be an absolute path (got {path:?})")));
        }
        let relay_used = self.default_flow == FlowKind::Relay || self.flows.values().any(|f| *f == FlowKind::Relay);
        let relay = match &self.relay_url {
            None if relay_used => Err(ConfigError::invalid(
                "media.relay_url",
                "is missing but a flow is \"relay\"; set it to the voice agent's ws://host:port/path",
            )),
            None => Ok(()),
            Some(u) => match url::Url::parse(u) {
                Ok(parsed) if parsed.scheme() == "ws" && parsed.host_str().is_some() => Ok(()),
                Ok(parsed) if parsed.scheme() == "wss" => Err(ConfigError::invalid(
                    "media.relay_url",
                    "wss:// is not supported for the upstream agent in this build; use ws:// on the LAN or loopback",
                )),
                _ => Err(ConfigError::invalid("media.relay_url", format!("{u:?} is not a ws://host[:port]/path URL"))),
            },
        };
        errs.extend(relay.err());
    }
}

/// Which LED backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedBackendChoice {
    /// GPIO when available, else simulated with one log line saying why.
    #[default]
    Auto,
    /// GPIO; when it is unavailable that is logged as an error (and `selftest` fails).
    Gpio,
    /// Simulated (no pins are touched).
    Sim,
}

/// Which speaker backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeakerBackendChoice {
    /// The default audio output when it opens, else simulated with a warning.
    #[default]
    Auto,
    /// Simulated (no sound).
    Sim,
}

/// How an LED shows its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedPatternKind {
    /// On all the time.
    Solid,
    /// On for half the period, off for the other half.
    Blink,
    /// Two short flashes at the start of each period.
    DoubleBlink,
}

/// One state's LED: which BCM pins, how they light.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedConfig {
    /// BCM pin numbers (0–27); several states may share a pin, the more important state wins.
    pub pins: Vec<u8>,
    /// `solid`, `blink` or `double-blink`.
    pub pattern: LedPatternKind,
    /// Period of `blink` / `double-blink` in milliseconds.
    #[serde(default = "default_period_ms")]
    pub period_ms: u64,
    /// `active` only: the pattern while two or more calls are in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub many_pattern: Option<LedPatternKind>,
}

fn default_period_ms() -> u64 {
    1000
}

/// A ring tone: a sum of sines switched on and off by a cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToneConfig {
    /// Frequencies in Hz, summed (1 to 4 of them).
    pub frequencies: Vec<f64>,
    /// Alternating on/off durations in milliseconds, starting with on (2 to 8 entries).
    pub cadence_ms: Vec<u64>,
    /// Loudness from 0.0 to 1.0 of full scale.
    pub volume: f32,
}

impl Default for ToneConfig {
    fn default() -> Self {
        // The North American ringback: 440 + 480 Hz, 2 s on, 4 s off.
        Self { frequencies: vec![440.0, 480.0], cadence_ms: vec![2000, 4000], volume: 0.5 }
    }
}

/// A ring tone for calls to one number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineToneConfig {
    /// The called number (`To`), as Twilio sends it (E.164, e.g. `+15035550101`).
    pub to: String,
    /// A name for logs and the admin API, e.g. `parts`.
    #[serde(default)]
    pub name: String,
    /// Frequencies in Hz (1 to 4).
    pub frequencies: Vec<f64>,
    /// Alternating on/off milliseconds, starting with on.
    #[serde(default = "default_cadence_ms")]
    pub cadence_ms: Vec<u64>,
    /// Loudness from 0.0 to 1.0.
    #[serde(default = "default_volume")]
    pub volume: f32,
}

fn default_cadence_ms() -> Vec<u64> {
    ToneConfig::default().cadence_ms
}

fn default_volume() -> f32 {
    ToneConfig::default().volume
}

/// `quiet_hours = { start = "19:00", end = "07:00" }`: no ring tone from start to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Local time the quiet starts, `HH:MM`.
    pub start: jiff::civil::Time,
    /// Local time it ends, `HH:MM` (may be earlier than start: across midnight).
    pub end: jiff::civil::Time,
}

/// Most partials a tone may have; the audio callback keeps them in a fixed array.
pub const MAX_TONE_FREQUENCIES: usize = 4;
/// Most cadence entries; the audio callback keeps them in a fixed array.
pub const MAX_CADENCE_ENTRIES: usize = 8;

impl IndicatorsConfig {
    /// The configured time zone, or the system's.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.time_zone
            .as_deref()
            .and_then(|name| jiff::tz::TimeZone::get(name).ok())
            .unwrap_or_else(jiff::tz::TimeZone::system)
    }

    fn validate(&self, errs: &mut Vec<ConfigError>) {
        let leds = [
            ("indicators.ready.pins", &self.ready),
            ("indicators.incoming.pins", &self.incoming),
            ("indicators.active.pins", &self.active),
            ("indicators.message_waiting.pins", &self.message_waiting),
            ("indicators.fault.pins", &self.fault),
        ];
        for (key, led) in leds {
            if let Some(pin) = led.pins.iter().find(|pin| **pin > 27) {
                errs.push(ConfigError::invalid(key, format!("BCM pin {pin} does not exist; use 0 to 27")));
            }
            if !(50..=60_000).contains(&led.period_ms) {
                errs.push(ConfigError::invalid(key, "period_ms must be from 50 to 60000"));
            }
        }
        errs.extend(
            validate_tone("indicators.tone", &self.tone.frequencies, &self.tone.cadence_ms, self.tone.volume).err(),
        );
        for line in &self.line_tones {
            if line.to.trim().is_empty() {
                errs.push(ConfigError::invalid("indicators.line_tones.to", "is empty; set the called number"));
            }
            errs.extend(validate_tone("indicators.line_tones", &line.frequencies, &line.cadence_ms, line.volume).err());
        }
        if self.max_ring_secs == 0 {
            errs.push(ConfigError::invalid("indicators.max_ring_secs", "must be at least 1"));
        }
        if self.call_timeout_secs < 60 {
            errs.push(ConfigError::invalid("indicators.call_timeout_secs", "must be at least 60"));
        }
        if let Some(name) = &self.time_zone
            && jiff::tz::TimeZone::get(name).is_err()
        {
            errs.push(ConfigError::invalid(
                "indicators.time_zone",
                format!("{name:?} is not a known IANA time zone; use e.g. \"America/Chicago\""),
            ));
        }
    }
}

fn validate_tone(key: &'static str, frequencies: &[f64], cadence_ms: &[u64], volume: f32) -> Result<(), ConfigError> {
    if frequencies.is_empty() || frequencies.len() > MAX_TONE_FREQUENCIES {
        return Err(ConfigError::invalid(key, "frequencies needs 1 to 4 values in Hz, e.g. [440, 480]"));
    }
    if let Some(f) = frequencies.iter().find(|f| !(20.0..=12_000.0).contains(*f)) {
        return Err(ConfigError::invalid(key, format!("frequency {f} Hz is outside 20 to 12000 Hz")));
    }
    if cadence_ms.len() < 2 || cadence_ms.len() > MAX_CADENCE_ENTRIES || !cadence_ms.len().is_multiple_of(2) {
        return Err(ConfigError::invalid(
            key,
            "cadence_ms needs an even number (2 to 8) of on/off durations, e.g. [2000, 4000]",
        ));
    }
    if cadence_ms.iter().any(|ms| !(10..=60_000).contains(ms)) {
        return Err(ConfigError::invalid(key, "each cadence_ms entry must be from 10 to 60000"));
    }
    if !(0.0..=1.0).contains(&volume) {
        return Err(ConfigError::invalid(key, "volume must be from 0.0 to 1.0"));
    }
    Ok(())
}

/// `public_url` after normalisation: the origin Twilio uses to reach the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct PublicUrl {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
}

/// Scheme of the public URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://` (a tunnel or a test).
    Http,
    /// `https://` (the normal case).
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl PublicUrl {
    /// Parses `public_url` in any form the seed accepted: `https://host`, `http://host`, a
    /// bare host (taken as https), each with or without a port and a trailing slash.
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let key = "public_url";
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "is empty; set it to the address Twilio calls, e.g. public_url = \"https://shop.example.com\"",
            ));
        }
        let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("https://{trimmed}") };
        let url = url::Url::parse(&with_scheme).map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{trimmed:?} is not a valid URL ({e}); use e.g. \"https://shop.example.com\""),
            )
        })?;
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => {
                return Err(ConfigError::invalid(
                    key,
                    format!("scheme {other:?} is not supported; use https:// (Twilio reaches the box only over TLS)"),
                ));
            }
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => return Err(ConfigError::invalid(key, format!("{trimmed:?} has no host name"))),
        };
        if PLACEHOLDER_HOSTS.iter().any(|p| host.contains(p)) || host.ends_with(".example") {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{trimmed:?} is a placeholder; set it to the shop's real domain, the one entered in the Twilio console"
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(
                key,
                "must not contain user:password@; Twilio signs URLs without credentials",
            ));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(ConfigError::invalid(
                key,
                format!("must be just scheme://host[:port], without a path (found {:?})", url.path()),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid(key, "must not contain a query string or #fragment"));
        }
        // `url` already drops a port equal to the scheme's default.
        Ok(Self { scheme, host, port: url.port() })
    }

    /// `scheme://host[:port]` with no trailing slash: the prefix of every URL Twilio signs.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme.as_str(), self.host),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }

    /// The same origin with the port spelled out (`:443`/`:80` added when it was implicit).
    pub fn origin_with_port(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port.unwrap_or(self.scheme.default_port()))
    }

    /// The same origin with no port at all (what Twilio signs for voice over HTTPS).
    pub fn origin_without_port(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.host)
    }

    /// The secure WebSocket origin Twilio's media stream connects to. Twilio accepts only
    /// `wss://`, so the scheme is always `wss`; an explicit non-default port is kept.
    pub fn wss_origin(&self) -> String {
        match self.port {
            Some(p) if p != 443 && p != 80 => format!("wss://{}:{p}", self.host),
            _ => format!("wss://{}", self.host),
        }
    }

    /// The public host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL's scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
}

impl From<PublicUrl> for String {
    fn from(u: PublicUrl) -> Self {
        u.origin()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

/// Secrets found in the environment, passed in so that loading stays testable.
#[derive(Debug, Default, Clone)]
pub struct EnvSecrets {
    /// `CALLBOX_TWILIO_AUTH_TOKEN`.
    pub twilio_auth_token: Option<String>,
    /// `CALLBOX_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
}

impl EnvSecrets {
    /// Reads the secrets from the process environment; empty values count as unset.
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self { twilio_auth_token: get(ENV_TWILIO_AUTH_TOKEN), admin_token: get(ENV_ADMIN_TOKEN) }
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
    }

    /// Checks every key and collects every problem, so an installer fixes them in one round.
    fn validate(&self, url_ok: bool, errs: &mut Vec<ConfigError>) {
        let auth_token = self.twilio.auth_token.expose();
        if !self.dev && auth_token.is_empty() {
            errs.push(ConfigError::invalid(
                "twilio.auth_token",
                format!(
                    "is missing; copy the Auth Token from the Twilio console into [twilio] auth_token, or set {ENV_TWILIO_AUTH_TOKEN}"
                ),
            ));
        } else if !self.dev && !is_auth_token(auth_token) {
            // Anything else makes every webhook a 403 later, with nothing pointing here.
            errs.push(ConfigError::invalid(
                "twilio.auth_token",
                format!(
                    "is not a Twilio Auth Token: those are 32 hexadecimal characters (Twilio console, Account → API keys & tokens → Auth Token); got {} character(s){}",
                    auth_token.chars().count(),
                    if looks_like_placeholder(auth_token) { " that look like a template value" } else { "" }
                ),
            ));
        }
        let admin_token = self.admin.token.expose();
        if !self.dev && admin_token.chars().count() < 16 {
            errs.push(ConfigError::invalid(
                "admin.token",
                format!(
                    "must be at least 16 characters (it guards the call log); set [admin] token or {ENV_ADMIN_TOKEN}"
                ),
            ));
        } else if !self.dev && looks_like_placeholder(admin_token) {
            errs.push(ConfigError::invalid(
                "admin.token",
                "is a template value (like CHANGE-ME, your-…, example, xxxx); set a random one, e.g. from `openssl rand -hex 16`",
            ));
        }
        if self.server.listen == self.admin.listen {
            errs.push(ConfigError::invalid(
                "admin.listen",
                "must differ from server.listen: the admin API is never served on the public listener",
            ));
        }
        if self.server.max_connections == 0 {
            errs.push(ConfigError::invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.max_connections_per_address == 0 {
            errs.push(ConfigError::invalid("server.max_connections_per_address", "must be at least 1"));
        }
        if self.server.header_timeout_secs == 0 {
            errs.push(ConfigError::invalid("server.header_timeout_secs", "must be at least 1"));
        }
        if !self.storage.dir.is_absolute() && !self.dev {
            errs.push(ConfigError::invalid(
                "storage.dir",
                format!(
                    "must be an absolute path (got {:?}); a service has no meaningful working directory",
                    self.storage.dir
                ),
            ));
        }
        self.validate_tls(url_ok, errs);
        if let Some(n) = &self.twilio.front_desk
            && n.trim().is_empty()
        {
            errs.push(ConfigError::invalid(
                "twilio.front_desk",
                "is empty; remove the key or set an E.164 number like \"+15035550100\"",
            ));
        }
        self.media.validate(errs);
        self.indicators.validate(errs);
        match self.log.level.to_ascii_lowercase().as_str() {
            "error" | "warn" | "info" | "debug" | "trace" | "off" => {}
            other => {
                errs.push(ConfigError::invalid(
                    "log.level",
                    format!("{other:?} is not one of error, warn, info, debug, trace"),
                ));
            }
        }
    }

    fn validate_tls(&self, url_ok: bool, errs: &mut Vec<ConfigError>) {
        let tls = &self.tls;
        if url_ok && !self.dev && self.public_url.scheme() != Scheme::Https {
            let problem = match tls.mode {
                TlsMode::Off => {
                    "must be https:// even with tls.mode = \"off\": Twilio only streams media to wss://, so the tunnel in front of the box must speak TLS"
                }
                _ => "must be https:// when the box serves TLS itself",
            };
            errs.push(ConfigError::invalid("public_url", problem));
        }
        if tls.handshake_timeout_secs == 0 {
            errs.push(ConfigError::invalid("tls.handshake_timeout_secs", "must be at least 1"));
        }
        match tls.mode {
            TlsMode::Off => {}
            TlsMode::Files => {
                if tls.cert_file.is_none() {
                    errs.push(ConfigError::invalid(
                        "tls.cert_file",
                        "is missing; tls.mode = \"files\" needs the certificate chain PEM (e.g. fullchain.pem)",
                    ));
                }
                if tls.key_file.is_none() {
                    errs.push(ConfigError::invalid(
                        "tls.key_file",
                        "is missing; tls.mode = \"files\" needs the private key PEM (e.g. privkey.pem)",
                    ));
                }
                if tls.reload_interval_secs == 0 {
                    errs.push(ConfigError::invalid("tls.reload_interval_secs", "must be at least 1"));
                }
            }
            TlsMode::Acme => self.validate_acme(url_ok, errs),
        }
    }

    fn validate_acme(&self, url_ok: bool, errs: &mut Vec<ConfigError>) {
        let acme = &self.tls.acme;
        let url = acme.directory_url();
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
            _ => {
                errs.push(ConfigError::invalid(
                    "tls.acme.directory",
                    format!("{url:?} is neither \"production\", \"staging\" nor an https:// directory URL"),
                ));
            }
        }
        if let Some(c) = &acme.contact {
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
        for d in &acme.domains {
            let valid = !d.is_empty()
                && d.len() <= 253
                && d.split('.').count() >= 2
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                errs.push(ConfigError::invalid(
                    "tls.acme.domains",
                    format!("{d:?} is not a DNS name the box can prove (no wildcards, IPs or ports)"),
                ));
            }
        }
        if url_ok && acme.domains.is_empty() && self.public_url.host().parse::<std::net::IpAddr>().is_ok() {
            errs.push(ConfigError::invalid(
                "tls.acme.domains",
                "is empty and public_url is an IP address; ACME needs a DNS name pointing at the shop",
            ));
        }
        // Twilio connects to the host of public_url: a certificate without it fails every
        // call's TLS handshake even though the order itself succeeds.
        let host = self.public_url.host();
        if url_ok && !acme.domains.is_empty() && !acme.domains.iter().any(|d| d.trim().eq_ignore_ascii_case(host)) {
            errs.push(ConfigError::invalid(
                "tls.acme.domains",
                format!(
                    "does not include {host:?}, the host of public_url, so Twilio would reject the certificate; add it or remove the key (the default is the host of public_url)"
                ),
            ));
        }
        if acme.eab_kid.is_some() == acme.eab_hmac_key.is_empty() {
            errs.push(ConfigError::invalid(
                "tls.acme.eab_kid",
                "eab_kid and eab_hmac_key go together; set both (from the CA's account page) or neither",
            ));
        }
        if !acme.eab_hmac_key.is_empty()
            && base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                acme.eab_hmac_key.expose().trim_end_matches('='),
            )
            .is_err()
        {
            errs.push(ConfigError::invalid("tls.acme.eab_hmac_key", "is not base64url (as the CA shows it)"));
        }
        if !(acme.renew_remaining > 0.0 && acme.renew_remaining < 1.0) {
            errs.push(ConfigError::invalid(
                "tls.acme.renew_remaining",
                "must be a fraction between 0 and 1 (default 0.333: renew with a third of the lifetime left)",
            ));
        }
        if acme.retry_initial_secs == 0 || acme.retry_max_secs < acme.retry_initial_secs {
            errs.push(ConfigError::invalid(
                "tls.acme.retry_initial_secs",
                "must be at least 1 and not above tls.acme.retry_max_secs",
            ));
        }
        if acme.check_interval_secs == 0 {
            errs.push(ConfigError::invalid("tls.acme.check_interval_secs", "must be at least 1"));
        }
        if acme.challenge == AcmeChallenge::Http01
            && (acme.http_listen == self.server.listen || acme.http_listen == self.admin.listen)
        {
            errs.push(ConfigError::invalid("tls.acme.http_listen", "must differ from server.listen and admin.listen"));
        }
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
    fn public_url_forms_normalise_to_one_origin() {
        for input in [
            "https://shop.example.com",
            "https://shop.example.com/",
            "shop.example.com",
            "shop.example.com/",
            "https://shop.example.com:443",
            "HTTPS://Shop.Example.com:443/",
        ] {
            let u = PublicUrl::parse(input).unwrap();
            assert_eq!(u.origin(), "https://shop.example.com", "{input}");
            assert_eq!(u.wss_origin(), "wss://shop.example.com", "{input}");
        }
        let u = PublicUrl::parse("http://shop.example.com:8080/").unwrap();
        assert_eq!(u.origin(), "http://shop.example.com:8080");
        assert_eq!(u.wss_origin(), "wss://shop.example.com:8080");
        let u = PublicUrl::parse("shop.example.com:8443").unwrap();
        assert_eq!(u.origin(), "https://shop.example.com:8443");
        assert_eq!(u.origin_without_port(), "https://shop.example.com");
        assert_eq!(u.wss_origin(), "wss://shop.example.com:8443");
        let u = PublicUrl::parse("http://shop.example.com").unwrap();
        assert_eq!(u.origin_with_port(), "http://shop.example.com:80");
        assert_eq!(u.wss_origin(), "wss://shop.example.com");
    }

    #[test]
    fn public_url_rejects_placeholders_paths_and_garbage() {
        for bad in [
            "https://your-domain.ngrok.io",
            "",
            "ftp://shop.example.com",
            "https://shop.example.com/x",
            "https://a:b@shop.example.com",
            "http://",
        ] {
            let err = PublicUrl::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("config key `public_url`"), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let env = EnvSecrets {
            twilio_auth_token: Some("92eb5ffee6ae2fec3ad71c777531578f".into()),
            admin_token: Some("admin-token-0123456789".into()),
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
    fn indicators_section_parses_and_bad_values_name_their_key() {
        let env = EnvSecrets {
            twilio_auth_token: Some("0cc175b9c0f1b6a831c399e269772661".into()),
            admin_token: Some("admin-token-0123456789".into()),
        };
        let base = "public_url = \"shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n[indicators]\n";
        let good = format!(
            "{base}time_zone = \"America/Chicago\"\nquiet_hours = {{ start = \"19:00\", end = \"07:30\" }}\n\
             incoming = {{ pins = [5, 6], pattern = \"double-blink\", period_ms = 300 }}\n\
             [[indicators.line_tones]]\nto = \"+15035550101\"\nname = \"parts\"\nfrequencies = [620]\n"
        );
        let c = Config::from_toml(&good, Path::new("t"), &env).unwrap();
        let q = c.indicators.quiet_hours.as_ref().unwrap();
        assert_eq!((q.start, q.end), (jiff::civil::time(19, 0, 0, 0), jiff::civil::time(7, 30, 0, 0)));
        assert_eq!(c.indicators.incoming.pattern, LedPatternKind::DoubleBlink);
        assert_eq!(c.indicators.line_tones[0].cadence_ms, vec![2000, 4000], "line tones default the cadence");
        for (bad, key) in [
            ("ready = { pins = [40], pattern = \"solid\" }", "indicators.ready.pins"),
            ("time_zone = \"Mars/Olympus\"", "indicators.time_zone"),
            ("tone = { frequencies = [440], cadence_ms = [100, 200, 300] }", "indicators.tone"),
            ("tone = { frequencies = [440, 480, 620, 700, 900] }", "indicators.tone"),
            ("tone = { volume = 1.5 }", "indicators.tone"),
            ("max_ring_secs = 0", "indicators.max_ring_secs"),
        ] {
            let e = Config::from_toml(&format!("{base}{bad}\n"), Path::new("t"), &env).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        let e = Config::from_toml(&format!("{base}blink = true\n"), Path::new("t"), &env).unwrap_err();
        assert!(e.to_string().contains("blink"), "{e}");
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

    fn tls_config(tls: &str) -> Result<Config, ConfigError> {
        let env = EnvSecrets {
            twilio_auth_token: Some("0cc175b9c0f1b6a831c399e269772661".into()),
            admin_token: Some("admin-token-0123456789".into()),
        };
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
        let env = EnvSecrets {
            twilio_auth_token: Some("0cc175b9c0f1b6a831c399e269772661".into()),
            admin_token: Some("admin-token-0123456789".into()),
        };
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

    #[test]
    fn media_section_picks_flows_and_names_bad_keys() {
        let env = EnvSecrets {
            twilio_auth_token: Some("0cc175b9c0f1b6a831c399e269772661".into()),
            admin_token: Some("admin-token-0123456789".into()),
        };
        let base = "public_url = \"shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n";
        let c = Config::from_toml(
            &format!("{base}[media]\nrelay_url = \"ws://127.0.0.1:9000/agent\"\n[media.flows]\n\"+15035550100\" = \"relay\"\n"),
            Path::new("t"),
            &env,
        )
        .unwrap();
        assert_eq!(c.media.flow_for(Some("+15035550100")), FlowKind::Relay);
        assert_eq!(c.media.flow_for(Some("+15035550199")), FlowKind::Voicemail);
        assert_eq!(c.media.flow_for(None), FlowKind::Voicemail);
        assert_eq!(c.media.relay_connect_timeout(), Duration::from_secs(2));
        for (bad, key) in [
            ("default_flow = \"relay\"\n", "media.relay_url"),
            ("relay_url = \"wss://agent.example.com/x\"\n", "media.relay_url"),
            ("max_recording_secs = 0\n", "media.max_recording_secs"),
            ("greeting_wav = \"greeting.wav\"\n", "media.greeting_wav"),
            ("default_flow = \"ivr\"\n", "ivr"),
        ] {
            let e = Config::from_toml(&format!("{base}[media]\n{bad}"), Path::new("t"), &env).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }
}
