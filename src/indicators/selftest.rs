//! `callbox selftest`: every LED pattern and every ring tone once, for the installer standing
//! next to the box.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use super::leds::{self, LedDriver, PinLog};
use super::machine::{IndicatorState, Output};
use super::speaker::{self, ToneLog};
use super::tone;
use crate::config::IndicatorsConfig;

/// How long each LED pattern is shown at least.
const LED_MIN_SHOW: Duration = Duration::from_millis(1500);
/// Silence between tones and after the last one, so they are told apart (and an output
/// stream has drained the last off segment before it closes).
const TONE_GAP: Duration = Duration::from_millis(500);

/// Why the self-test could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelftestError {
    /// GPIO was required and is unavailable.
    #[error(transparent)]
    Gpio(#[from] super::leds::LedsError),
    /// Writing the progress failed.
    #[error("cannot write progress: {0}")]
    Output(#[from] std::io::Error),
}

/// Cycles every LED pattern, then plays every configured tone once (one full cadence),
/// writing what it does to `out`.
pub async fn run(config: &IndicatorsConfig, out: &mut (dyn Write + Send)) -> Result<(), SelftestError> {
    let pin_log = PinLog::default();
    let backend = leds::open(config, pin_log.clone())?;
    let mut led = LedDriver::new(backend, config, Instant::now());
    writeln!(out, "LEDs ({}):", led.backend())?;
    for state in IndicatorState::ALL {
        for calls in if state == IndicatorState::Active { vec![1, 2] } else { vec![1] } {
            let output = lit_alone(state, calls);
            let start = Instant::now();
            led.show(&output, start);
            let shown = led.levels().into_iter().filter(|p| p.state == Some(state)).collect::<Vec<_>>();
            let pattern = shown.first().and_then(|p| p.pattern.clone()).unwrap_or_else(|| "no pins".into());
            let pins: Vec<u8> = shown.iter().map(|p| p.pin).collect();
            let label = if calls > 1 { format!("{} ({calls} calls)", state.as_str()) } else { state.as_str().into() };
            write!(out, "  {label:<20} BCM {pins:?}: {pattern} ... ")?;
            out.flush()?;
            let end = start + LED_MIN_SHOW;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let next = led.next_edge(now).map_or(end, |e| e.min(end));
                tokio::time::sleep_until(next).await;
                led.tick(Instant::now());
            }
            let changes = pin_log.changes().iter().filter(|c| c.at >= start && pins.contains(&c.pin)).count();
            writeln!(out, "ok ({changes} pin changes)")?;
        }
    }
    led.all_off();

    let tones = tone::tones(config);
    let (c, t) = (config.clone(), tones.clone());
    let speaker = tokio::task::spawn_blocking(move || speaker::open(&c, &t, ToneLog::default())).await;
    let mut speaker = match speaker {
        Ok(s) => s,
        Err(e) => return Err(SelftestError::Output(std::io::Error::other(e))),
    };
    writeln!(out, "ring tones ({}):", speaker.backend())?;
    tokio::time::sleep(TONE_GAP).await;
    for (index, spec) in tones.iter().enumerate() {
        let cadence: Vec<u128> = spec.cadence.iter().map(Duration::as_millis).collect();
        write!(
            out,
            "  {:<12} {:?} Hz, cadence {cadence:?} ms, volume {} ... ",
            spec.name, spec.frequencies, spec.volume
        )?;
        out.flush()?;
        // The cycle ends in the audio callback, to the frame; the stop after the gap only
        // matters for a speaker that cannot play once.
        speaker.play_once(index);
        tokio::time::sleep(spec.cycle() + TONE_GAP).await;
        speaker.stop();
        writeln!(out, "ok")?;
    }
    let _ = tokio::task::spawn_blocking(move || drop(speaker)).await;
    writeln!(out, "selftest done")?;
    Ok(())
}

/// An output in which only `state` applies.
fn lit_alone(state: IndicatorState, calls: usize) -> Output {
    Output {
        state,
        lit: vec![state],
        incoming_calls: usize::from(state == IndicatorState::Incoming),
        active_calls: if state == IndicatorState::Active { calls } else { 0 },
        messages_waiting: 0,
        faults: Default::default(),
        quiet_hours: false,
        ring: None,
    }
}

/// Shows the `fault` pattern until `stop` resolves, then turns the LEDs off: for a box that
/// cannot start (a bad config at first boot), so the bay sees something is wrong.
pub async fn show_fault(
    config: &IndicatorsConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), SelftestError> {
    let backend = leds::open(config, PinLog::default())?;
    let mut led = LedDriver::new(backend, config, Instant::now());
    log::info!("showing the fault pattern ({}) until stopped", led.backend());
    led.show(&lit_alone(IndicatorState::Fault, 0), Instant::now());
    tokio::pin!(stop);
    loop {
        let now = Instant::now();
        let next = led.next_edge(now).unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            () = tokio::time::sleep_until(next) => led.tick(Instant::now()),
            () = &mut stop => break,
        }
    }
    led.all_off();
    Ok(())
}
