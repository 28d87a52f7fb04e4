//! Indicators in the shop: LEDs on GPIO and a ring tone on the speaker, driven by live call
//! state.
//!
//! [`machine`] is the pure state machine (calls, messages, faults → what to show). [`run`]
//! is the one task that feeds it from the call bus and the health checks and drives the
//! backends: [`leds`] ([`gpio`] on a Pi, simulated elsewhere) and [`speaker`] (cpal behind
//! the `speaker` feature, simulated elsewhere), each chosen at start-up. Other code talks to
//! the task only through the [`Indicators`] handle; the task reads the call log's feed
//! through its [`Inputs`].

mod task;

pub mod change_log;
#[cfg(feature = "speaker")]
mod cpal_speaker;
pub mod gpio;
pub mod gpio_cdev;
pub mod health;
pub mod leds;
pub mod machine;
pub mod pattern;
pub mod selftest;
pub mod speaker;
pub mod tone;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

pub use machine::{CertStatus, FaultSource, IndicatorState, Output};
pub use task::{Inputs, run};

use leds::{PinLevel, PinLog};
use speaker::ToneLog;

/// The indicators as the admin API shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// False until the indicator task has started, and again after shutdown.
    pub running: bool,
    /// State, call counts, faults, quiet hours and the ring.
    #[serde(flatten)]
    pub output: Output,
    /// LED backend and pin levels.
    pub leds: LedsView,
    /// Speaker backend and tone.
    pub tone: ToneView,
    /// Acknowledgements processed so far.
    pub acknowledgements: u64,
}

/// The LEDs in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedsView {
    /// `gpio`, `simulated` or `none` before start.
    pub backend: &'static str,
    /// Every configured pin.
    pub pins: Vec<PinLevel>,
}

/// The speaker in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToneView {
    /// `cpal`, `simulated` or `none` before start.
    pub backend: &'static str,
    /// True while a ring tone plays.
    pub playing: bool,
    /// The tone's name (`default` or the line's).
    pub name: Option<String>,
}

impl Snapshot {
    fn idle() -> Self {
        Self {
            running: false,
            output: Output {
                state: IndicatorState::Ready,
                lit: vec![],
                incoming_calls: 0,
                active_calls: 0,
                messages_waiting: 0,
                faults: BTreeMap::new(),
                quiet_hours: false,
                ring: None,
            },
            leds: LedsView { backend: "none", pins: vec![] },
            tone: ToneView { backend: "none", playing: false, name: None },
            acknowledgements: 0,
        }
    }
}

/// The handle other parts of the box use: report faults, acknowledge messages, read state.
/// Every input is a watch channel, so reporting never blocks and the latest value wins.
#[derive(Debug)]
pub struct Indicators {
    faults: watch::Sender<BTreeMap<FaultSource, String>>,
    certificate: watch::Sender<Option<CertStatus>>,
    acks: watch::Sender<u64>,
    snapshot: watch::Sender<Snapshot>,
    pins: PinLog,
    tones: ToneLog,
}

impl Default for Indicators {
    fn default() -> Self {
        Self::new()
    }
}

impl Indicators {
    /// A handle whose task has not started yet.
    pub fn new() -> Self {
        Self {
            faults: watch::Sender::new(BTreeMap::new()),
            certificate: watch::Sender::new(None),
            acks: watch::Sender::new(0),
            snapshot: watch::Sender::new(Snapshot::idle()),
            pins: PinLog::default(),
            tones: ToneLog::default(),
        }
    }

    /// Sets (`Some(reason)`) or clears (`None`) a fault found outside the indicator task.
    pub fn set_fault(&self, source: FaultSource, reason: Option<String>) {
        self.faults.send_modify(|faults| {
            match reason {
                Some(r) => faults.insert(source, r),
                None => faults.remove(&source),
            };
        });
    }

    /// Reports the certificate the box serves (`None` when it terminates no TLS itself).
    /// Expiry within 7 days is judged against the clock from then on, with no new report.
    pub fn set_certificate(&self, status: Option<CertStatus>) {
        self.certificate.send_replace(status);
    }

    /// Clears message-waiting; returns the acknowledgement's number.
    pub fn acknowledge(&self) -> u64 {
        let mut n = 0;
        self.acks.send_modify(|acks| {
            *acks += 1;
            n = *acks;
        });
        n
    }

    /// Waits (up to `timeout`) until the task has processed acknowledgement `n`; the
    /// snapshot then, either way.
    pub async fn wait_acknowledged(&self, n: u64, timeout: Duration) -> Snapshot {
        let mut rx = self.snapshot.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| !s.running || s.acknowledgements >= n)).await;
        self.snapshot()
    }

    /// The current state.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// State changes as they happen.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    /// Pin levels over time, recorded by the simulated LED backend.
    pub fn pin_log(&self) -> &PinLog {
        &self.pins
    }

    /// Tone starts and stops, recorded by the simulated speaker.
    pub fn tone_log(&self) -> &ToneLog {
        &self.tones
    }
}
