//! The GPIO character device backend of [`Leds`] (the only module that names gpiocdev).
//!
//! Debian's kernel (the SD image's) has no `/dev/gpiomem` and forbids `/dev/mem` for I/O,
//! so rppal cannot drive pins there; every Linux kernel with `GPIO_CDEV` has
//! `/dev/gpiochipN`. On a Pi the SoC's controller is the chip labelled `pinctrl-bcm2835`
//! (Pi 3, Zero 2 W), `pinctrl-bcm2711` (Pi 4) or `pinctrl-rp1` (Pi 5), and its line offsets
//! are the BCM numbers, so the configured pins mean the same on either backend.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gpiocdev::Request;
use gpiocdev::line::Value;

use super::leds::Leds;

/// Labels of the Pi SoCs' own GPIO controllers, the chips found when `indicators.gpio_chip`
/// is not set. The firmware's expander (`raspberrypi-exp-gpio`) is left alone.
pub const PI_CHIP_LABELS: &[&str] = &["pinctrl-bcm2835", "pinctrl-bcm2711", "pinctrl-bcm2712", "pinctrl-rp1"];

/// The consumer name the lines are requested with, as `gpioinfo` shows it.
pub const CONSUMER: &str = "callbox";

/// Why the character device cannot drive the LEDs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdevError {
    /// No `/dev/gpiochip*` can be opened (none exists, or none may be opened by this user).
    #[error("no GPIO chip found ({0}); the kernel needs GPIO_CDEV, the user read-write access to /dev/gpiochip*")]
    NoChips(String),
    /// No chip has the wanted label or name.
    #[error("no GPIO chip labelled or named {wanted} (chips here: {found})")]
    NotFound {
        /// What was looked for.
        wanted: String,
        /// `name (label)` of each chip that exists.
        found: String,
    },
    /// The chip exists but cannot be opened or asked for its lines.
    #[error("{}: {source}", path.display())]
    Chip {
        /// The chip's device node.
        path: PathBuf,
        /// gpiocdev's error.
        #[source]
        source: gpiocdev::Error,
    },
    /// A configured pin is beyond the chip's lines.
    #[error("pin {pin} is not a line of {chip} ({label}), which has lines 0 to {}", lines.saturating_sub(1))]
    NoSuchLine {
        /// The pin.
        pin: u8,
        /// The chip's name.
        chip: String,
        /// The chip's label.
        label: String,
        /// How many lines it has.
        lines: u32,
    },
    /// The kernel refused the request (often: a line is already used by a driver or program).
    #[error("cannot request lines {pins:?} on {chip}: {source}")]
    Request {
        /// The chip's name.
        chip: String,
        /// The pins asked for.
        pins: Vec<u8>,
        /// gpiocdev's error.
        #[source]
        source: gpiocdev::Error,
    },
}

/// LEDs on lines of one GPIO chip, requested together as outputs.
pub struct CdevLeds {
    request: Request,
    pins: BTreeSet<u8>,
    chip: String,
}

impl CdevLeds {
    /// Finds the chip (`wanted`: a label, a name like `gpiochip0` or a `/dev` path; `None`:
    /// the Pi's SoC controller) and takes every pin as an output, LED off.
    pub fn open(wanted: Option<&str>, pins: &BTreeSet<u8>, active_low: bool) -> Result<Self, CdevError> {
        let (path, info) = find_chip(wanted)?;
        if let Some(pin) = pins.iter().find(|p| u32::from(**p) >= info.num_lines) {
            return Err(CdevError::NoSuchLine { pin: *pin, chip: info.name, label: info.label, lines: info.num_lines });
        }
        let offsets: Vec<u32> = pins.iter().map(|p| u32::from(*p)).collect();
        // Levels here are electrical (see `Leds::write`), so no active-low flag on the lines.
        let off = if active_low { Value::Active } else { Value::Inactive };
        let request = Request::builder()
            .on_chip(&path)
            .with_consumer(CONSUMER)
            .with_lines(&offsets)
            .as_output(off)
            .request()
            .map_err(|source| CdevError::Request {
                chip: info.name.clone(),
                pins: pins.iter().copied().collect(),
                source,
            })?;
        Ok(Self { request, pins: pins.clone(), chip: format!("{} ({})", info.name, info.label) })
    }

    /// `gpiochip0 (pinctrl-bcm2835)`: for the log line saying where the LEDs are.
    pub fn chip(&self) -> &str {
        &self.chip
    }
}

impl Leds for CdevLeds {
    fn write(&mut self, pin: u8, high: bool) {
        if !self.pins.contains(&pin) {
            return;
        }
        let value = if high { Value::Active } else { Value::Inactive };
        if let Err(e) = self.request.set_value(u32::from(pin), value) {
            // An LED is not worth stopping calls for; the next change tries again.
            log::warn!("GPIO line {pin} on {}: {e}", self.chip);
        }
    }
    fn backend(&self) -> &'static str {
        "gpio-cdev"
    }
}

fn find_chip(wanted: Option<&str>) -> Result<(PathBuf, gpiocdev::chip::Info), CdevError> {
    if let Some(w) = wanted.filter(|w| w.starts_with('/')) {
        return open_info(Path::new(w));
    }
    let paths = gpiocdev::chip::chips().map_err(|e| CdevError::NoChips(e.to_string()))?;
    if paths.is_empty() {
        return Err(CdevError::NoChips("no /dev/gpiochip* device".into()));
    }
    let mut found = Vec::new();
    let mut first_error = None;
    for path in paths {
        match open_info(&path) {
            Ok((path, info)) => {
                let hit = match wanted {
                    Some(w) => info.label == w || info.name == w,
                    None => PI_CHIP_LABELS.contains(&info.label.as_str()),
                };
                if hit {
                    return Ok((path, info));
                }
                found.push(format!("{} ({})", info.name, info.label));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if found.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    let wanted = wanted.map_or_else(|| format!("any of {}", PI_CHIP_LABELS.join(", ")), str::to_owned);
    Err(CdevError::NotFound { wanted, found: if found.is_empty() { "none".into() } else { found.join(", ") } })
}

fn open_info(path: &Path) -> Result<(PathBuf, gpiocdev::chip::Info), CdevError> {
    let chip_error = |source| CdevError::Chip { path: path.to_path_buf(), source };
    let chip = gpiocdev::chip::Chip::from_path(path).map_err(chip_error)?;
    let info = chip.info().map_err(chip_error)?;
    Ok((chip.path().to_path_buf(), info))
}
