//! Ring tones: which tone a call gets, and the synthesiser the audio callback runs. The
//! synthesiser is precomputed for the device's sample rate; per sample it only does
//! arithmetic, and it learns what to play from two atomics, so the callback never allocates,
//! locks or blocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::{IndicatorsConfig, MAX_CADENCE_ENTRIES, MAX_TONE_FREQUENCIES};

/// Fade in and out at each on/off edge, so the speaker does not click.
const RAMP: Duration = Duration::from_millis(5);

/// One configured ring tone.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneSpec {
    /// `default` or the line's name.
    pub name: String,
    /// Summed sine frequencies in Hz.
    pub frequencies: Vec<f64>,
    /// Alternating on/off durations, starting with on.
    pub cadence: Vec<Duration>,
    /// 0.0 to 1.0 of full scale.
    pub volume: f32,
}

impl ToneSpec {
    /// Length of one on/off cycle.
    pub fn cycle(&self) -> Duration {
        self.cadence.iter().sum()
    }
}

/// Every configured tone: index 0 is the default, then one per `line_tones` entry.
pub fn tones(config: &IndicatorsConfig) -> Vec<ToneSpec> {
    let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect();
    let default = ToneSpec {
        name: "default".into(),
        frequencies: config.tone.frequencies.clone(),
        cadence: ms(&config.tone.cadence_ms),
        volume: config.tone.volume,
    };
    std::iter::once(default)
        .chain(config.line_tones.iter().map(|l| ToneSpec {
            name: if l.name.is_empty() { l.to.clone() } else { l.name.clone() },
            frequencies: l.frequencies.clone(),
            cadence: ms(&l.cadence_ms),
            volume: l.volume,
        }))
        .collect()
}

/// The tone (index into [`tones`]) for a call to `to`.
pub fn tone_for(config: &IndicatorsConfig, to: Option<&str>) -> usize {
    to.and_then(|to| config.line_tones.iter().position(|l| l.to.trim() == to.trim())).map_or(0, |i| i + 1)
}

/// What the synthesiser should play; written by the speaker handle, read by the callback.
#[derive(Debug, Default)]
pub struct ToneControl {
    /// 0 for silence, else 1 + the tone's index.
    selected: AtomicUsize,
    /// Bumped on every play, so replaying the same tone restarts its cadence.
    generation: AtomicU64,
    /// The tone plays one cycle of its cadence, then stops by itself.
    once: AtomicBool,
}

impl ToneControl {
    /// Starts tone `index` from the beginning of its cadence.
    pub fn play(&self, index: usize) {
        self.once.store(false, Ordering::Release);
        self.selected.store(index + 1, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Plays tone `index`'s cadence once, to the frame, then silence.
    pub fn play_once(&self, index: usize) {
        self.once.store(true, Ordering::Release);
        self.selected.store(index + 1, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Silence.
    pub fn stop(&self) {
        self.selected.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// One tone, precomputed for a sample rate.
#[derive(Debug, Clone, Copy)]
struct Table {
    /// Phase advance per frame of each partial, in cycles.
    steps: [f64; MAX_TONE_FREQUENCIES],
    partials: usize,
    /// Peak amplitude of each partial.
    gain: f64,
    /// Cumulative end of each cadence segment, in frames.
    ends: [u64; MAX_CADENCE_ENTRIES],
    segments: usize,
    ramp: u64,
}

impl Table {
    fn new(spec: &ToneSpec, rate: u32) -> Self {
        let rate_f = f64::from(rate.max(1));
        let mut steps = [0.0; MAX_TONE_FREQUENCIES];
        let partials = spec.frequencies.len().min(MAX_TONE_FREQUENCIES);
        for (s, f) in steps.iter_mut().zip(&spec.frequencies) {
            *s = f / rate_f;
        }
        let frames = |d: Duration| ((d.as_secs_f64() * rate_f).round() as u64).max(1);
        let mut ends = [0u64; MAX_CADENCE_ENTRIES];
        let segments = spec.cadence.len().min(MAX_CADENCE_ENTRIES);
        let mut total = 0;
        for (e, d) in ends.iter_mut().zip(&spec.cadence) {
            total += frames(*d);
            *e = total;
        }
        Self {
            steps,
            partials,
            gain: f64::from(spec.volume.clamp(0.0, 1.0)) / partials.max(1) as f64,
            ends,
            segments,
            ramp: frames(RAMP),
        }
    }

    /// Frames in one cycle of the cadence.
    fn cycle(&self) -> u64 {
        self.ends[self.segments.saturating_sub(1)].max(1)
    }

    /// Envelope of frame `pos` (0 in off segments, ramps at on edges).
    fn envelope(&self, pos: u64) -> f64 {
        let cycle = self.cycle();
        let p = pos % cycle;
        let mut start = 0;
        for (i, end) in self.ends[..self.segments].iter().enumerate() {
            if p < *end {
                if i % 2 == 1 {
                    return 0.0;
                }
                let from_start = (p - start) as f64 / self.ramp as f64;
                let to_end = (end - p) as f64 / self.ramp as f64;
                return from_start.min(to_end).min(1.0);
            }
            start = *end;
        }
        0.0
    }
}

/// The audio callback's tone generator.
#[derive(Debug)]
pub struct Synth {
    tables: Box<[Table]>,
    control: Arc<ToneControl>,
    current: usize,
    generation: u64,
    pos: u64,
    once: bool,
    phases: [f64; MAX_TONE_FREQUENCIES],
}

impl Synth {
    /// A generator of `tones` at `rate` frames per second, steered by `control`.
    pub fn new(tones: &[ToneSpec], rate: u32, control: Arc<ToneControl>) -> Self {
        Self {
            tables: tones.iter().map(|t| Table::new(t, rate)).collect(),
            control,
            current: 0,
            generation: u64::MAX,
            pos: 0,
            once: false,
            phases: [0.0; MAX_TONE_FREQUENCIES],
        }
    }

    /// Picks up a play or stop; call once per buffer.
    pub fn sync(&mut self) {
        let generation = self.control.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            self.current = self.control.selected.load(Ordering::Acquire);
            self.once = self.control.once.load(Ordering::Acquire);
            self.pos = 0;
            self.phases = [0.0; MAX_TONE_FREQUENCIES];
        }
    }

    /// The next mono sample, from -1.0 to 1.0.
    pub fn next_sample(&mut self) -> f32 {
        let Some(table) = self.current.checked_sub(1).and_then(|i| self.tables.get(i)) else { return 0.0 };
        if self.once && self.pos >= table.cycle() {
            return 0.0;
        }
        let envelope = table.envelope(self.pos);
        let mut value = 0.0;
        for (phase, step) in self.phases.iter_mut().zip(&table.steps).take(table.partials) {
            value += (std::f64::consts::TAU * *phase).sin();
            *phase += step;
            if *phase >= 1.0 {
                *phase -= 1.0;
            }
        }
        self.pos += 1;
        (value * table.gain * envelope) as f32
    }
}

/// The power of `freq` in `samples` taken at `rate` (Goertzel), normalised by length: how
/// the tone tests, in-process and through ALSA, tell which frequencies were played.
pub fn power_at(samples: &[f32], rate: f64, freq: f64) -> f64 {
    let coeff = 2.0 * (std::f64::consts::TAU * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s0 = f64::from(*x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if samples.is_empty() { 0.0 } else { (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len() as f64).powi(2) }
}

/// The strongest frequencies from 200 to 1500 Hz in 10 Hz steps, strongest first, each at
/// least 30 Hz from a stronger one: `count` of them and the next one (to compare against).
pub fn dominant(samples: &[f32], rate: f64, count: usize) -> Vec<(f64, f64)> {
    let mut scan: Vec<(f64, f64)> =
        (20..=150).map(|f| f64::from(f) * 10.0).map(|f| (f, power_at(samples, rate, f))).collect();
    scan.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut peaks: Vec<(f64, f64)> = Vec::new();
    for (f, p) in scan {
        if peaks.iter().all(|(pf, _)| (pf - f).abs() >= 30.0) {
            peaks.push((f, p));
        }
        if peaks.len() == count + 1 {
            break;
        }
    }
    peaks
}

/// (start, length) in samples of each run of sound: windows of `window` samples whose RMS
/// is above `threshold` (of full scale 1.0).
pub fn bursts(samples: &[f32], window: usize, threshold: f32) -> Vec<(usize, usize)> {
    let window = window.max(1);
    let loud: Vec<bool> = samples
        .chunks(window)
        .map(|w| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt() > threshold)
        .collect();
    let mut runs = Vec::new();
    let mut start = None;
    for (i, on) in loud.iter().chain([&false]).enumerate() {
        match (start, *on) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                runs.push((s * window, (i - s) * window));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec(freqs: &[f64], cadence_ms: &[u64]) -> ToneSpec {
        ToneSpec {
            name: "t".into(),
            frequencies: freqs.to_vec(),
            cadence: cadence_ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            volume: 0.8,
        }
    }

    #[test]
    fn synth_plays_the_sum_of_its_frequencies_in_cadence() {
        let control = Arc::new(ToneControl::default());
        let rate = 8000;
        let mut synth = Synth::new(&[spec(&[440.0, 480.0], &[200, 100])], rate, control.clone());
        synth.sync();
        assert_eq!(synth.next_sample(), 0.0, "silent until played");
        control.play(0);
        synth.sync();
        let samples: Vec<f32> = (0..rate * 3 / 10).map(|_| synth.next_sample()).collect();
        let on = &samples[..1600];
        let off = &samples[1600..2400];
        assert!(off.iter().all(|s| *s == 0.0), "off segment is silent");
        assert!(on.iter().all(|s| s.abs() <= 0.8 + 1e-6), "volume bounds the peak");
        let power = |f| power_at(on, f64::from(rate), f);
        for other in [350.0, 400.0, 460.0, 520.0, 620.0] {
            assert!(power(440.0) > 20.0 * power(other), "440 dominates {other}");
            assert!(power(480.0) > 20.0 * power(other), "480 dominates {other}");
        }
        control.stop();
        synth.sync();
        assert_eq!(synth.next_sample(), 0.0);
    }

    #[test]
    fn played_once_the_cadence_ends_by_itself_to_the_frame() {
        let control = Arc::new(ToneControl::default());
        let rate = 8000;
        let mut synth = Synth::new(&[spec(&[440.0], &[200, 100])], rate, control.clone());
        control.play_once(0);
        synth.sync();
        let two_cycles: Vec<f32> = (0..rate * 6 / 10).map(|_| synth.next_sample()).collect();
        let bursts = bursts(&two_cycles, 80, 0.05);
        assert_eq!(bursts.len(), 1, "one burst, then silence: {bursts:?}");
        assert!(two_cycles[2400..].iter().all(|s| *s == 0.0));
        // A plain play after it rings on.
        control.play(0);
        synth.sync();
        let again: Vec<f32> = (0..rate * 6 / 10).map(|_| synth.next_sample()).collect();
        assert_eq!(super::bursts(&again, 80, 0.05).len(), 2);
    }

    #[test]
    fn tones_are_picked_by_called_number() {
        let mut config = IndicatorsConfig::default();
        config.line_tones.push(crate::config::LineToneConfig {
            to: "+15035550101".into(),
            name: "parts".into(),
            frequencies: vec![620.0],
            cadence_ms: vec![500, 500],
            volume: 0.3,
        });
        let all = tones(&config);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, "parts");
        assert_eq!(all[0].cycle(), Duration::from_secs(6));
        assert_eq!(tone_for(&config, Some("+15035550101")), 1);
        assert_eq!(tone_for(&config, Some("+15035550100")), 0);
        assert_eq!(tone_for(&config, None), 0);
    }
}
