//! The indicator task: feeds the state machine from the call bus, the fault inputs and the
//! clock, and drives the LEDs and the speaker. It owns both backends; on shutdown it turns
//! every LED off and stops the tone before it returns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leds::{self, LedDriver, SimLeds};
use super::machine::{FaultSource, Machine, Now, Output, Settings};
use super::speaker::{self, SimSpeaker, Speaker};
use super::tone::{self, ToneSpec};
use super::{LedsView, Snapshot, ToneView, health};
use crate::calls::BusMessage;
use crate::config::{IndicatorsConfig, SpeakerBackendChoice};
use crate::server::App;

/// How often the call-log error flag is read.
const STORE_CHECK: Duration = Duration::from_secs(1);
/// How often free disk space is checked.
const DISK_CHECK: Duration = Duration::from_secs(60);
/// The state is re-evaluated at least this often, so quiet hours and certificate expiry
/// take effect on time without an event.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Calls re-read from the call log after the bus dropped events for this task.
const RESYNC_CALLS: usize = 200;

/// Runs the indicators until `shutdown`, then leaves LEDs off and the speaker silent.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    // Subscribe before opening devices, so no call is missed while a device opens.
    let bus = app.bus.subscribe();
    let config = app.config.indicators.clone();
    let tones = tone::tones(&config);
    let pin_log = app.indicators.pin_log().clone();
    let leds = leds::open(&config, pin_log.clone()).unwrap_or_else(|e| {
        log::error!("indicators.leds = \"gpio\" but GPIO is unavailable ({e}); LEDs are simulated");
        Box::new(SimLeds::new(pin_log))
    });
    let tone_log = app.indicators.tone_log().clone();
    let speaker: Box<dyn Speaker> = if config.speaker == SpeakerBackendChoice::Sim {
        Box::new(SimSpeaker::new(tone_log))
    } else {
        let (c, t, l) = (config.clone(), tones.clone(), tone_log.clone());
        // Opening an audio device blocks; keep it off the async threads.
        match tokio::task::spawn_blocking(move || speaker::open(&c, &t, l)).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("opening the speaker failed ({e}); the ring tone is simulated");
                Box::new(SimSpeaker::new(tone_log))
            }
        }
    };
    let led = LedDriver::new(leds, &config, Instant::now());
    let machine = Machine::new(Settings::from_config(&config));
    let driver = Driver { app, config, tones, machine, led, speaker, ringing: None, acks: 0 };
    driver.run(bus, shutdown).await;
}

struct Driver {
    app: Arc<App>,
    config: IndicatorsConfig,
    tones: Vec<ToneSpec>,
    machine: Machine,
    led: LedDriver,
    speaker: Box<dyn Speaker>,
    ringing: Option<usize>,
    acks: u64,
}

impl Driver {
    async fn run(mut self, mut bus: tokio::sync::broadcast::Receiver<BusMessage>, shutdown: CancellationToken) {
        let handle = &self.app.indicators;
        let mut faults = handle.faults.subscribe();
        let mut certificate = handle.certificate.subscribe();
        let mut acks = handle.acks.subscribe();
        self.acks = *acks.borrow_and_update();
        let mut external = BTreeMap::new();
        let mut last_event = Timestamp::now();
        let mut next_store_check = Instant::now();
        let mut next_disk_check = Instant::now();
        log::info!("indicators running (LEDs: {}, speaker: {})", self.led.backend(), self.speaker.backend());
        loop {
            let now = Now::current();
            if now.mono >= next_store_check {
                let failed = self.app.store_failed.load(Ordering::Relaxed);
                let fault = self.app.store.fault();
                // Writes failing, or damage found at start that lost something.
                let why = match (failed, fault) {
                    (true, detail) => Some(format!(
                        "the call log could not be written{}",
                        detail.map(|e| format!(": {e}")).unwrap_or_default()
                    )),
                    (false, Some(damage)) => Some(format!("the call log is damaged: {damage}")),
                    (false, None) => None,
                };
                self.machine.set_fault(FaultSource::Store, why);
                next_store_check = now.mono + STORE_CHECK;
            }
            if now.mono >= next_disk_check {
                let fault = health::disk_fault(&self.app.config.storage.dir, self.config.disk_min_free_mb);
                self.machine.set_fault(FaultSource::Disk, fault);
                next_disk_check = now.mono + DISK_CHECK;
            }
            self.machine.expire(now.mono);
            let output = self.machine.output(now);
            self.show(&output, now.mono);
            self.publish(output, true);

            let deadline = [
                self.machine.next_deadline(now.mono),
                self.led.next_edge(now.mono),
                Some(next_store_check),
                Some(next_disk_check),
                Some(now.mono + HOUSEKEEPING),
            ]
            .into_iter()
            .flatten()
            // A deadline already past would spin the loop; housekeeping bounds the wait.
            .filter(|t| *t > now.mono)
            .min()
            .unwrap_or(now.mono + HOUSEKEEPING);

            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = bus.recv() => match received {
                    Ok(message) => {
                        last_event = last_event.max(message.event.received_at);
                        self.machine.on_event(&message.event, Instant::now());
                        // Take in everything already queued before recomputing the output:
                        // under a burst of calls the output is computed once per batch, not
                        // once per event.
                        loop {
                            match bus.try_recv() {
                                Ok(message) => {
                                    last_event = last_event.max(message.event.received_at);
                                    self.machine.on_event(&message.event, Instant::now());
                                }
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(missed)) => {
                                    log::warn!("indicators fell {missed} call events behind; re-reading recent calls");
                                    self.resync(last_event);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        log::warn!("indicators fell {missed} call events behind; re-reading recent calls");
                        self.resync(last_event);
                    }
                    // The bus lives as long as the App; nothing more will come.
                    Err(RecvError::Closed) => shutdown.cancelled().await,
                },
                Ok(()) = faults.changed() => {
                    let now_faults = faults.borrow_and_update().clone();
                    for source in external.keys().chain(now_faults.keys()).copied().collect::<Vec<FaultSource>>() {
                        self.machine.set_fault(source, now_faults.get(&source).cloned());
                    }
                    external = now_faults;
                }
                Ok(()) = certificate.changed() => {
                    let status = *certificate.borrow_and_update();
                    self.machine.set_certificate(status);
                }
                Ok(()) = acks.changed() => {
                    self.acks = *acks.borrow_and_update();
                    self.machine.acknowledge();
                    log::info!("messages acknowledged");
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        // The safe state: nothing lit, nothing ringing.
        self.led.all_off();
        self.speaker.stop();
        self.ringing = None;
        let output = self.machine.output(Now::current());
        self.publish(output, false);
        log::info!("indicators stopped: LEDs off, ring tone stopped");
        let speaker = self.speaker;
        // Dropping a real speaker joins its audio thread.
        let _ = tokio::task::spawn_blocking(move || drop(speaker)).await;
    }

    fn show(&mut self, output: &Output, now: Instant) {
        self.led.show(output, now);
        let wanted = output.ring.as_ref().map(|r| tone::tone_for(&self.config, r.to.as_deref()));
        if wanted != self.ringing {
            match wanted {
                Some(index) => {
                    let to = output.ring.as_ref().and_then(|r| r.to.as_deref()).unwrap_or("?");
                    let name = self.tones.get(index).map_or("?", |t| t.name.as_str());
                    log::info!("ringing ({name} tone) for a call to {to}");
                    self.speaker.play(index);
                }
                None => {
                    log::info!("ring stopped");
                    self.speaker.stop();
                }
            }
            self.ringing = wanted;
        }
    }

    fn publish(&self, output: Output, running: bool) {
        let snapshot = Snapshot {
            running,
            output,
            leds: LedsView { backend: self.led.backend(), pins: self.led.levels() },
            tone: ToneView {
                backend: self.speaker.backend(),
                playing: self.ringing.is_some(),
                name: self.ringing.and_then(|i| self.tones.get(i)).map(|t| t.name.clone()),
            },
            acknowledgements: self.acks,
        };
        self.app.indicators.snapshot.send_if_modified(|current| {
            let changed = *current != snapshot;
            if changed {
                *current = snapshot;
            }
            changed
        });
    }

    /// Replays, from the call log, the events received after `since` (the last one this
    /// task saw). The machine ignores what it already knows, so overlap is harmless.
    fn resync(&mut self, since: Timestamp) {
        match self.app.store.list(RESYNC_CALLS, None) {
            Ok(records) => {
                let mut events: Vec<_> =
                    records.iter().flat_map(|r| &r.events).filter(|e| e.received_at > since).collect();
                events.sort_by_key(|e| e.received_at);
                let now = Instant::now();
                for event in events {
                    self.machine.on_event(event, now);
                }
            }
            Err(e) => log::warn!("indicators could not re-read the call log: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::test_event as event;
    use crate::calls::{CallEvent, CallRecord, CallStatus, EventSource, Store};
    use crate::config::{Config, LedConfig, LedPatternKind, Secret};
    use crate::indicators::machine::IndicatorState;

    const INCOMING_PIN: u8 = 5;
    const ACTIVE_PIN: u8 = 6;
    const READY_PIN: u8 = 7;

    fn app(dir: &std::path::Path) -> Arc<App> {
        let mut config = Config::dev(dir.to_owned(), Secret::new("t"), Secret::new("a"));
        let ind = &mut config.indicators;
        ind.leds = crate::config::LedBackendChoice::Sim;
        ind.speaker = SpeakerBackendChoice::Sim;
        ind.incoming =
            LedConfig { pins: vec![INCOMING_PIN], pattern: LedPatternKind::Blink, period_ms: 200, many_pattern: None };
        ind.active = LedConfig {
            pins: vec![ACTIVE_PIN],
            pattern: LedPatternKind::Solid,
            period_ms: 400,
            many_pattern: Some(LedPatternKind::DoubleBlink),
        };
        ind.ready.pins = vec![READY_PIN];
        ind.message_waiting.pins = vec![READY_PIN];
        ind.fault.pins = vec![READY_PIN];
        ind.max_ring_secs = 5;
        ind.call_timeout_secs = 60;
        ind.disk_min_free_mb = 0;
        let store = Store::open(dir).unwrap();
        Arc::new(App::new(config, store))
    }

    fn publish(app: &App, event: CallEvent) {
        let record = CallRecord::new(&event);
        app.bus.publish(BusMessage { event, record });
    }

    /// Levels of `pin` as (ms since `t0`, high) pairs.
    fn levels(app: &App, pin: u8, t0: Instant) -> Vec<(u128, bool)> {
        app.indicators
            .pin_log()
            .changes()
            .iter()
            .filter(|c| c.pin == pin && c.at >= t0)
            .map(|c| (c.at.duration_since(t0).as_millis(), c.high))
            .collect()
    }

    async fn started(app: &App) {
        let mut rx = app.indicators.subscribe();
        rx.wait_for(|s| s.running).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_blinks_rings_then_shows_active_and_shutdown_leaves_everything_off() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(app.clone(), shutdown.clone()));
        started(&app).await;
        assert_eq!(app.indicators.snapshot().output.state, IndicatorState::Ready);
        tokio::time::sleep(Duration::from_millis(10)).await;

        let t0 = Instant::now();
        publish(&app, event("CA1", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]));
        tokio::time::sleep(Duration::from_millis(650)).await;
        // Blink 200 ms: on at 0, off at 100, on at 200 …, exact on the paused clock.
        assert_eq!(
            levels(&app, INCOMING_PIN, t0),
            [(0, true), (100, false), (200, true), (300, false), (400, true), (500, false), (600, true)]
        );
        assert_eq!(levels(&app, READY_PIN, t0), [(0, false)]);
        let snap = app.indicators.snapshot();
        assert!(snap.tone.playing);
        assert_eq!(snap.tone.name.as_deref(), Some("default"));

        let t1 = Instant::now();
        publish(
            &app,
            event("CA1", EventSource::MediaStream, None, &[("MediaEvent", "answered"), ("Flow", "voicemail")]),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(levels(&app, INCOMING_PIN, t1), [(0, false)]);
        assert_eq!(levels(&app, ACTIVE_PIN, t1), [(0, true)]);
        let tones = app.indicators.tone_log().changes();
        assert_eq!(tones.iter().map(|c| c.tone).collect::<Vec<_>>(), [Some(0), None]);
        assert_eq!(tones[1].at, t1, "the ring stops the moment the flow answers");

        // A second call at once: active turns double-blink while both last.
        publish(&app, event("CA2", EventSource::StatusCallback, Some(CallStatus::InProgress), &[]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(app.indicators.snapshot().output.active_calls, 2);
        let t2 = Instant::now() - Duration::from_millis(10);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Double-blink 400 ms from the second call on (the pin was already lit): 50 on, 50 off,
        // 50 on, 250 off.
        assert_eq!(levels(&app, ACTIVE_PIN, t2), [(50, false), (100, true), (150, false), (400, true)]);

        shutdown.cancel();
        task.await.unwrap();
        let snap = app.indicators.snapshot();
        assert!(!snap.running && !snap.tone.playing);
        assert!(snap.leds.pins.iter().all(|p| !p.lit && p.level == "low"), "{:?}", snap.leds.pins);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_stops_ringing_at_max_ring_and_times_out_without_final_callback() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(app.clone(), shutdown.clone()));
        started(&app).await;
        let t0 = Instant::now();
        publish(&app, event("CA1", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]));
        tokio::time::sleep(Duration::from_secs(6)).await;
        let tones = app.indicators.tone_log().changes();
        assert_eq!(tones.len(), 2);
        assert_eq!(tones[1].at.duration_since(t0), Duration::from_secs(5), "max_ring_secs");
        assert_eq!(app.indicators.snapshot().output.state, IndicatorState::Active);
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(app.indicators.snapshot().output.state, IndicatorState::Ready, "call_timeout_secs");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn faults_and_acknowledgements_reach_the_leds() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(app.clone(), shutdown.clone()));
        started(&app).await;
        let soon = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24 * 3)).unwrap();
        app.indicators.set_certificate(Some(super::super::CertStatus::Valid { not_after: soon }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let snap = app.indicators.snapshot();
        assert_eq!(snap.output.state, IndicatorState::Fault);
        let ready_pin = snap.leds.pins.iter().find(|p| p.pin == READY_PIN).unwrap();
        assert_eq!(ready_pin.state, Some(IndicatorState::Fault), "the fault owns the shared pin");
        app.indicators.set_certificate(None);
        app.store_failed.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(app.indicators.snapshot().output.faults.contains_key(&FaultSource::Store));
        app.store_failed.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(app.indicators.snapshot().output.state, IndicatorState::Ready);

        publish(&app, event("CA1", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]));
        publish(&app, event("CA1", EventSource::StatusCallback, Some(CallStatus::NoAnswer), &[]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(app.indicators.snapshot().output.state, IndicatorState::MessageWaiting);
        let n = app.indicators.acknowledge();
        let snap = app.indicators.wait_acknowledged(n, Duration::from_secs(1)).await;
        assert_eq!((snap.output.state, snap.acknowledgements), (IndicatorState::Ready, n));
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_lagging_task_resyncs_from_the_call_log() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(app.clone(), shutdown.clone()));
        started(&app).await;
        // Stored but never announced: only a resync can find it.
        app.store.record(event("CA7", EventSource::IncomingCall, Some(CallStatus::Ringing), &[])).await.unwrap();
        // Overflow the bus before the task runs again (this test runs on one thread).
        for i in 0..1100 {
            publish(&app, event(&format!("CAX{i}"), EventSource::StreamStatus, None, &[]));
        }
        let mut rx = app.indicators.subscribe();
        let snap = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.output.incoming_calls == 1))
            .await
            .expect("the task resynced")
            .unwrap()
            .clone();
        assert!(snap.tone.playing && snap.running);
        shutdown.cancel();
        task.await.unwrap();
    }
}
