//! The Raspberry Pi GPIO backend of [`Leds`] (the only module that names rppal).

use std::collections::{BTreeMap, BTreeSet};

use rppal::gpio::{Gpio, OutputPin};

use super::leds::Leds;

/// Why GPIO cannot drive the LEDs here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpioError {
    /// The machine is not a Raspberry Pi rppal knows.
    #[error("not a Raspberry Pi: {0}")]
    NotAPi(#[source] rppal::gpio::Error),
    /// The GPIO device exists but this user may not open it.
    #[error("no permission on {path} (/dev/gpiomem needs group gpio; /dev/mem needs root)")]
    Permission {
        /// The device node refused.
        path: String,
        /// rppal's error.
        #[source]
        source: rppal::gpio::Error,
    },
    /// `/dev/gpiomem` (or `/dev/mem`) is missing or unusable.
    #[error("/dev/gpiomem missing or unusable: {0}")]
    Device(#[source] rppal::gpio::Error),
    /// A configured pin cannot be taken.
    #[error("BCM pin {pin} cannot be used: {source}")]
    Pin {
        /// The pin.
        pin: u8,
        /// rppal's error.
        #[source]
        source: rppal::gpio::Error,
    },
}

impl From<rppal::gpio::Error> for GpioError {
    fn from(e: rppal::gpio::Error) -> Self {
        match e {
            rppal::gpio::Error::UnknownModel => Self::NotAPi(e),
            rppal::gpio::Error::PermissionDenied(ref path) => Self::Permission { path: path.clone(), source: e },
            other => Self::Device(other),
        }
    }
}

/// LEDs on GPIO output pins.
pub struct GpioLeds {
    pins: BTreeMap<u8, OutputPin>,
}

impl GpioLeds {
    /// Takes every pin as an output, LED off.
    pub fn open(pins: &BTreeSet<u8>, active_low: bool) -> Result<Self, GpioError> {
        let gpio = Gpio::new()?;
        let mut outputs = BTreeMap::new();
        for pin in pins {
            let p = gpio.get(*pin).map_err(|source| GpioError::Pin { pin: *pin, source })?;
            let out = if active_low { p.into_output_high() } else { p.into_output_low() };
            outputs.insert(*pin, out);
        }
        Ok(Self { pins: outputs })
    }
}

impl Leds for GpioLeds {
    fn write(&mut self, pin: u8, high: bool) {
        if let Some(out) = self.pins.get_mut(&pin) {
            if high { out.set_high() } else { out.set_low() }
        }
    }
    fn backend(&self) -> &'static str {
        "gpio"
    }
}
