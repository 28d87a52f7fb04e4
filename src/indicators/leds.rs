//! The LEDs: a small [`Leds`] trait with a GPIO backend ([`super::gpio`]) and a simulated one
//! that records every pin level with its time, and the driver that turns the machine's output
//! into pin levels over time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::machine::{IndicatorState, Output};
use super::pattern::Pattern;
use crate::config::{IndicatorsConfig, LedBackendChoice};

/// Pin changes the simulated backend keeps (about an hour of a fast blink).
const PIN_LOG_CAPACITY: usize = 16 * 1024;

/// LED outputs by BCM pin number.
pub trait Leds: Send {
    /// Drives `pin` to an electrical level (high = 3.3 V).
    fn write(&mut self, pin: u8, high: bool);
    /// `gpio` (rppal), `gpio-cdev` or `simulated`.
    fn backend(&self) -> &'static str;
}

/// One recorded pin change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinChange {
    /// When the pin was driven.
    pub at: Instant,
    /// BCM pin.
    pub pin: u8,
    /// Electrical level after the change.
    pub high: bool,
}

/// The simulated backend's record of pin levels, shared with whoever inspects it.
pub type PinLog = super::change_log::ChangeLog<PinChange, PIN_LOG_CAPACITY>;

/// LEDs that exist only in memory: for machines without GPIO, and for tests.
#[derive(Debug)]
pub struct SimLeds {
    levels: BTreeMap<u8, bool>,
    log: PinLog,
}

impl SimLeds {
    /// A simulated bank recording into `log`.
    pub fn new(log: PinLog) -> Self {
        Self { levels: BTreeMap::new(), log }
    }
}

impl Leds for SimLeds {
    fn write(&mut self, pin: u8, high: bool) {
        if self.levels.insert(pin, high) != Some(high) {
            self.log.push(PinChange { at: Instant::now(), pin, high });
        }
    }
    fn backend(&self) -> &'static str {
        "simulated"
    }
}

/// Why no real GPIO backend could be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedsError {
    /// rppal's `/dev/gpiomem` path (Raspberry Pi OS).
    #[error("GPIO through /dev/gpiomem: {0}")]
    Mem(#[from] super::gpio::GpioError),
    /// The GPIO character device (every other kernel, the SD image's included).
    #[error("GPIO character device: {0}")]
    Cdev(#[from] super::gpio_cdev::CdevError),
}

/// Opens the configured backend. `auto` falls back to the simulated one with one log line
/// saying why; `gpio`, `gpiomem` and `cdev` fail instead.
pub fn open(config: &IndicatorsConfig, log: PinLog) -> Result<Box<dyn Leds>, LedsError> {
    let pins = all_pins(config);
    match config.leds {
        LedBackendChoice::Sim => Ok(Box::new(SimLeds::new(log))),
        LedBackendChoice::Gpio => open_gpio(config, &pins),
        LedBackendChoice::Gpiomem => Ok(open_gpiomem(config, &pins)?),
        LedBackendChoice::Cdev => Ok(open_cdev(config, &pins)?),
        LedBackendChoice::Auto => match open_gpio(config, &pins) {
            Ok(gpio) => Ok(gpio),
            Err(e) => {
                log::warn!("GPIO unavailable ({e}); LEDs are simulated");
                Ok(Box::new(SimLeds::new(log)))
            }
        },
    }
}

/// rppal where Raspberry Pi OS gives it `/dev/gpiomem` (and no chip is named), the
/// character device everywhere else.
fn open_gpio(config: &IndicatorsConfig, pins: &BTreeSet<u8>) -> Result<Box<dyn Leds>, LedsError> {
    let gpiomem = ["/dev/gpiomem", "/dev/gpiomem0"].iter().any(|p| std::path::Path::new(p).exists());
    if config.gpio_chip.is_none() && gpiomem { Ok(open_gpiomem(config, pins)?) } else { Ok(open_cdev(config, pins)?) }
}

fn open_gpiomem(config: &IndicatorsConfig, pins: &BTreeSet<u8>) -> Result<Box<dyn Leds>, super::gpio::GpioError> {
    let leds = super::gpio::GpioLeds::open(pins, config.active_low)?;
    log::info!("LEDs on GPIO through /dev/gpiomem (BCM pins {pins:?})");
    Ok(Box::new(leds))
}

fn open_cdev(config: &IndicatorsConfig, pins: &BTreeSet<u8>) -> Result<Box<dyn Leds>, super::gpio_cdev::CdevError> {
    let leds = super::gpio_cdev::CdevLeds::open(config.gpio_chip.as_deref(), pins, config.active_low)?;
    log::info!("LEDs on GPIO lines {pins:?} of {} (consumer \"{}\")", leds.chip(), super::gpio_cdev::CONSUMER);
    Ok(Box::new(leds))
}

fn all_pins(config: &IndicatorsConfig) -> BTreeSet<u8> {
    rules(config).into_iter().flat_map(|r| r.pins).collect()
}

#[derive(Debug, Clone)]
struct Rule {
    state: IndicatorState,
    pins: Vec<u8>,
    pattern: Pattern,
    many: Option<Pattern>,
}

fn rules(config: &IndicatorsConfig) -> Vec<Rule> {
    IndicatorState::ALL
        .iter()
        .map(|state| {
            let led = match state {
                IndicatorState::Fault => &config.fault,
                IndicatorState::Incoming => &config.incoming,
                IndicatorState::Active => &config.active,
                IndicatorState::MessageWaiting => &config.message_waiting,
                IndicatorState::Ready => &config.ready,
            };
            let pattern = Pattern::from_config(led);
            Rule {
                state: *state,
                pins: led.pins.clone(),
                pattern,
                many: led.many_pattern.map(|kind| Pattern { kind, ..pattern }),
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct PinState {
    owner: Option<(IndicatorState, Pattern)>,
    since: Instant,
    high: bool,
}

/// A pin's current level, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinLevel {
    /// BCM pin.
    pub pin: u8,
    /// `high` or `low`.
    pub level: &'static str,
    /// Whether the LED is lit (accounts for active-low wiring).
    pub lit: bool,
    /// The state that owns the pin now, if any.
    pub state: Option<IndicatorState>,
    /// Its pattern, e.g. `blink 250 ms`.
    pub pattern: Option<String>,
}

/// Drives the LEDs from the machine's output, pattern by pattern.
pub struct LedDriver {
    backend: Box<dyn Leds>,
    rules: Vec<Rule>,
    active_low: bool,
    pins: BTreeMap<u8, PinState>,
}

impl LedDriver {
    /// A driver over `backend`; every configured pin starts off.
    pub fn new(backend: Box<dyn Leds>, config: &IndicatorsConfig, now: Instant) -> Self {
        let mut driver = Self { backend, rules: rules(config), active_low: config.active_low, pins: BTreeMap::new() };
        for pin in all_pins(config) {
            let high = driver.active_low;
            driver.backend.write(pin, high);
            driver.pins.insert(pin, PinState { owner: None, since: now, high });
        }
        driver
    }

    /// `gpio` or `simulated`.
    pub fn backend(&self) -> &'static str {
        self.backend.backend()
    }

    /// Shows `output`: each pin goes to the most important lit state that uses it. A pin
    /// whose state or pattern changes restarts its pattern, lit.
    pub fn show(&mut self, output: &Output, now: Instant) {
        let mut owners: BTreeMap<u8, (IndicatorState, Pattern)> = BTreeMap::new();
        // Rules are in precedence order, so the first claim on a pin wins.
        for rule in self.rules.iter().filter(|r| output.lit.contains(&r.state)) {
            let pattern = match (rule.state, rule.many) {
                (IndicatorState::Active, Some(many)) if output.active_calls >= 2 => many,
                _ => rule.pattern,
            };
            for pin in &rule.pins {
                owners.entry(*pin).or_insert((rule.state, pattern));
            }
        }
        for (pin, state) in &mut self.pins {
            let owner = owners.get(pin).copied();
            if state.owner != owner {
                state.owner = owner;
                state.since = now;
            }
        }
        self.tick(now);
    }

    /// Brings every pin to its pattern's level at `now`.
    pub fn tick(&mut self, now: Instant) {
        for (pin, state) in &mut self.pins {
            let lit = state.owner.is_some_and(|(_, p)| p.level(now.saturating_duration_since(state.since)));
            let high = lit != self.active_low;
            if high != state.high {
                self.backend.write(*pin, high);
                state.high = high;
            }
        }
    }

    /// When the next pattern edge after `now` is due.
    pub fn next_edge(&self, now: Instant) -> Option<Instant> {
        self.pins
            .values()
            .filter_map(|s| {
                let (_, pattern) = s.owner?;
                let edge: Duration = pattern.next_edge(now.saturating_duration_since(s.since))?;
                Some(s.since + edge)
            })
            .min()
    }

    /// Turns every LED off (the safe state at shutdown).
    pub fn all_off(&mut self) {
        for (pin, state) in &mut self.pins {
            state.owner = None;
            let high = self.active_low;
            self.backend.write(*pin, high);
            state.high = high;
        }
    }

    /// Every pin's level now.
    pub fn levels(&self) -> Vec<PinLevel> {
        self.pins
            .iter()
            .map(|(pin, s)| PinLevel {
                pin: *pin,
                level: if s.high { "high" } else { "low" },
                lit: s.high != self.active_low,
                state: s.owner.map(|(state, _)| state),
                pattern: s.owner.map(|(_, p)| p.to_string()),
            })
            .collect()
    }
}
