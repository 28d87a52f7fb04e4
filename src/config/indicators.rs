//! `[indicators]`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[indicators]`: the LEDs and the ring tone in the shop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndicatorsConfig {
    /// `auto` (GPIO when the box is a Raspberry Pi, simulated otherwise), `gpio`, `gpiomem`,
    /// `cdev` or `sim`.
    pub leds: LedBackendChoice,
    /// The GPIO chip for the character device backend: its label (e.g. `pinctrl-bcm2711`),
    /// name (`gpiochip0`) or path. Unset: the Pi SoC's own controller.
    pub gpio_chip: Option<String>,
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
            gpio_chip: None,
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

/// Which LED backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedBackendChoice {
    /// GPIO when available, else simulated with one log line saying why.
    #[default]
    Auto,
    /// GPIO (rppal where `/dev/gpiomem` exists, else the character device); when it is
    /// unavailable that is logged as an error (and `selftest` fails).
    Gpio,
    /// GPIO through rppal and `/dev/gpiomem` only (Raspberry Pi OS).
    Gpiomem,
    /// GPIO through the character device (`/dev/gpiochipN`) only.
    Cdev,
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

impl QuietHoursConfig {
    /// True when the local time `t` falls in these hours (`end` is not in them).
    pub fn contains(&self, t: jiff::civil::Time) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Less => self.start <= t && t < self.end,
            std::cmp::Ordering::Greater => t >= self.start || t < self.end,
            std::cmp::Ordering::Equal => false,
        }
    }
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

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        let leds = [
            ("indicators.ready.pins", &self.ready),
            ("indicators.incoming.pins", &self.incoming),
            ("indicators.active.pins", &self.active),
            ("indicators.message_waiting.pins", &self.message_waiting),
            ("indicators.fault.pins", &self.fault),
        ];
        if let Some(chip) = &self.gpio_chip
            && chip.trim().is_empty()
        {
            errs.push(ConfigError::invalid(
                "indicators.gpio_chip",
                "is empty; remove it or set a chip label such as \"pinctrl-bcm2711\"",
            ));
        }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::LedPatternKind;
    use crate::config::{Config, EnvSecrets};

    #[test]
    fn indicators_section_parses_and_bad_values_name_their_key() {
        let env = EnvSecrets::for_tests();
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
}
