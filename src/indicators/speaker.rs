//! The shop speaker: a small [`Speaker`] trait, a registry of real backends (cpal, behind the
//! `speaker` feature) and a simulated backend that is always there.

use tokio::time::Instant;

use super::tone::ToneSpec;
use crate::config::{IndicatorsConfig, SpeakerBackendChoice};

/// Tone changes the simulated backend keeps.
const TONE_LOG_CAPACITY: usize = 4096;

/// Something that plays ring tones.
pub trait Speaker: Send {
    /// Starts tone `index` (of the tones it was opened with) at the start of its cadence.
    fn play(&mut self, index: usize);
    /// Plays tone `index`'s cadence once, then silence (the self-test: one cycle, exactly,
    /// however late the caller's stop would come).
    fn play_once(&mut self, index: usize) {
        self.play(index);
    }
    /// Stops any tone.
    fn stop(&mut self);
    /// `cpal` or `simulated`.
    fn backend(&self) -> &'static str;
}

/// Why a real audio backend could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    /// The system has no default output device.
    #[error("no default audio output device")]
    NoDevice,
    /// The device exists but would not play.
    #[error("cannot open audio output {device}: {source}")]
    Open {
        /// The device's name.
        device: String,
        /// The audio library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The device uses a sample format the box does not generate.
    #[error("audio output {device} wants sample format {format}, which is not supported")]
    Format {
        /// The device's name.
        device: String,
        /// The format it asked for.
        format: String,
    },
    /// The audio thread could not be started or did not answer.
    #[error("audio thread failed: {0}")]
    Thread(String),
}

/// A real backend's constructor: opens the device for these tones or says why not.
type Opener = fn(&[ToneSpec]) -> Result<Box<dyn Speaker>, SpeakerError>;

/// Real backends, tried in order when `speaker = "auto"`.
const BACKENDS: &[(&str, Opener)] = &[
    #[cfg(feature = "speaker")]
    ("cpal", super::cpal_speaker::open),
];

/// One recorded tone change of the simulated speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToneChange {
    /// When.
    pub at: Instant,
    /// The tone started, or `None` when it stopped.
    pub tone: Option<usize>,
}

/// The simulated speaker's record, shared with whoever inspects it.
pub type ToneLog = super::change_log::ChangeLog<ToneChange, TONE_LOG_CAPACITY>;

/// A speaker that only records what it would play.
#[derive(Debug)]
pub struct SimSpeaker {
    playing: Option<usize>,
    log: ToneLog,
}

impl SimSpeaker {
    /// A simulated speaker recording into `log`.
    pub fn new(log: ToneLog) -> Self {
        Self { playing: None, log }
    }
}

impl Speaker for SimSpeaker {
    fn play(&mut self, index: usize) {
        self.playing = Some(index);
        self.log.push(ToneChange { at: Instant::now(), tone: Some(index) });
    }
    fn stop(&mut self) {
        if self.playing.take().is_some() {
            self.log.push(ToneChange { at: Instant::now(), tone: None });
        }
    }
    fn backend(&self) -> &'static str {
        "simulated"
    }
}

/// Opens the configured speaker. Blocks while a device opens (call it off the async
/// threads). With no usable device it warns once and returns the simulated speaker, which
/// looks for a device again when a ring starts (see [`LateDevice`]).
pub fn open(config: &IndicatorsConfig, tones: &[ToneSpec], log: ToneLog) -> Box<dyn Speaker> {
    if config.speaker == SpeakerBackendChoice::Sim {
        return Box::new(SimSpeaker::new(log));
    }
    let reasons = match open_real(tones) {
        Ok(speaker) => return speaker,
        Err(reasons) => reasons,
    };
    if BACKENDS.is_empty() {
        log::warn!("no audio output: built without the `speaker` feature; the ring tone is simulated");
        return Box::new(SimSpeaker::new(log));
    }
    log::warn!("no audio output device ({reasons}); the ring tone is simulated until one appears");
    Box::new(LateDevice { tones: tones.to_vec(), sim: SimSpeaker::new(log), real: None, last_try: Instant::now() })
}

fn open_real(tones: &[ToneSpec]) -> Result<Box<dyn Speaker>, String> {
    let mut reasons = Vec::new();
    for (name, opener) in BACKENDS {
        match opener(tones) {
            Ok(speaker) => return Ok(speaker),
            Err(e) => reasons.push(format!("{name}: {e}")),
        }
    }
    Err(reasons.join("; "))
}

/// How often a ring may look for an audio device that was missing.
const LATE_DEVICE_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// `speaker = "auto"` with no device at start: a USB speaker plugged in later, or one that
/// the kernel had not enumerated yet when the service started (as seen on the SD image),
/// is taken at the next ring instead of only at the next restart.
struct LateDevice {
    tones: Vec<ToneSpec>,
    sim: SimSpeaker,
    real: Option<Box<dyn Speaker>>,
    last_try: Instant,
}

impl Speaker for LateDevice {
    fn play(&mut self, index: usize) {
        if self.real.is_none() && self.last_try.elapsed() >= LATE_DEVICE_RETRY {
            self.last_try = Instant::now();
            // Opening takes milliseconds when there is nothing to open, and this runs only at
            // the start of a ring, at most every LATE_DEVICE_RETRY.
            if let Ok(speaker) = open_real(&self.tones) {
                log::info!("audio output found ({}); the ring tone plays on it from now on", speaker.backend());
                self.real = Some(speaker);
            }
        }
        match &mut self.real {
            Some(real) => real.play(index),
            None => self.sim.play(index),
        }
    }
    fn play_once(&mut self, index: usize) {
        match &mut self.real {
            Some(real) => real.play_once(index),
            None => self.play(index),
        }
    }
    fn stop(&mut self) {
        if let Some(real) = &mut self.real {
            real.stop();
        }
        self.sim.stop();
    }
    fn backend(&self) -> &'static str {
        self.real.as_ref().map_or("simulated", |r| r.backend())
    }
}
