//! The indicator task: feeds the state machine from the call bus, the fault inputs and the
//! clock, and drives the LEDs and the speaker. It owns both backends; on shutdown it turns
//! every LED off and stops the tone before it returns.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leds::{self, LedDriver, SimLeds};
use super::machine::{FaultSource, Machine, Now, Output, Settings};
use super::speaker::{self, SimSpeaker, Speaker, ToneLog};
use super::tone::{self, ToneSpec};
use super::{Indicators, LedsView, Snapshot, ToneView, health};
use crate::calls::{BusMessage, CallLog, Outcome, follow_up};
use crate::config::{IndicatorsConfig, SpeakerBackendChoice};

/// How often the call-log error flag is read.
const STORE_CHECK: Duration = Duration::from_secs(1);
/// How often free disk space is checked.
const DISK_CHECK: Duration = Duration::from_secs(60);
/// The state is re-evaluated at least this often, so quiet hours and certificate expiry
/// take effect on time without an event.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Calls re-read from the call log after the bus dropped events for this task.
const RESYNC_CALLS: usize = 200;

/// What the indicator task reads and where it reports: the call log (its feed, its health,
/// and the recent calls to re-read after falling behind), the data dir whose free space it
/// watches, its settings, and the handle the rest of the box sees it through.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The call log.
    pub calls: CallLog,
    /// `[indicators]`.
    pub config: IndicatorsConfig,
    /// `storage.dir`, for the disk-space fault.
    pub storage_dir: PathBuf,
    /// Faults and acknowledgements in, snapshots out.
    pub handle: Arc<Indicators>,
}

/// Runs the indicators until `shutdown`, then leaves LEDs off and the speaker silent.
pub async fn run(inputs: Inputs, shutdown: CancellationToken) {
    // Subscribe before opening devices, so no call is missed while a device opens.
    let bus = inputs.calls.subscribe();
    let config = inputs.config.clone();
    let tones = tone::tones(&config);
    let pin_log = inputs.handle.pin_log().clone();
    let leds = leds::open(&config, pin_log.clone()).unwrap_or_else(|e| {
        log::error!("indicators.leds = \"gpio\" but GPIO is unavailable ({e}); LEDs are simulated");
        Box::new(SimLeds::new(pin_log))
    });
    let speaker = open_speaker(&config, &tones, inputs.handle.tone_log().clone()).await;
    let now = Instant::now();
    let led = LedDriver::new(leds, &config, now);
    let mut machine = Machine::new(Settings::from_config(&config));
    // Waiting messages survive a restart: the call log knows what the owner has not heard.
    match follow_up::waiting(inputs.calls.store()) {
        Ok(waiting) => waiting.iter().for_each(|c| machine.set_waiting(&c.call_sid, true)),
        Err(e) => log::warn!("indicators could not read the waiting messages: {e}"),
    }
    let driver = Driver {
        inputs,
        tones,
        machine,
        led,
        speaker,
        ringing: None,
        acks: 0,
        last_event: Timestamp::now(),
        next_store_check: now,
        next_disk_check: now,
        external: BTreeMap::new(),
    };
    driver.run(bus, shutdown).await;
}

/// The configured speaker, or the simulated one when it cannot be opened (logged).
async fn open_speaker(config: &IndicatorsConfig, tones: &[ToneSpec], log: ToneLog) -> Box<dyn Speaker> {
    if config.speaker == SpeakerBackendChoice::Sim {
        return Box::new(SimSpeaker::new(log));
    }
    let (c, t, l) = (config.clone(), tones.to_vec(), log.clone());
    // Opening an audio device blocks; keep it off the async threads.
    match tokio::task::spawn_blocking(move || speaker::open(&c, &t, l)).await {
        Ok(s) => s,
        Err(e) => {
            log::error!("opening the speaker failed ({e}); the ring tone is simulated");
            Box::new(SimSpeaker::new(log))
        }
    }
}

struct Driver {
    inputs: Inputs,
    tones: Vec<ToneSpec>,
    machine: Machine,
    led: LedDriver,
    speaker: Box<dyn Speaker>,
    ringing: Option<usize>,
    acks: u64,
    /// The newest event seen: a resync replays what came after it.
    last_event: Timestamp,
    next_store_check: Instant,
    next_disk_check: Instant,
    /// Faults reported through the handle, as last seen.
    external: BTreeMap<FaultSource, String>,
}

impl Driver {
    async fn run(mut self, mut bus: broadcast::Receiver<BusMessage>, shutdown: CancellationToken) {
        let handle = self.inputs.handle.clone();
        let mut faults = handle.faults.subscribe();
        let mut certificate = handle.certificate.subscribe();
        let mut acks = handle.acks.subscribe();
        self.acks = *acks.borrow_and_update();
        log::info!("indicators running (LEDs: {}, speaker: {})", self.led.backend(), self.speaker.backend());
        loop {
            let now = Now::current();
            self.check_health(now.mono);
            self.machine.expire(now.mono);
            let output = self.machine.output(now);
            self.show(&output, now.mono);
            self.publish(output, true);
            let deadline = self.next_wake(now.mono);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = bus.recv() => match received {
                    Ok(message) => self.take_in(&message, &mut bus),
                    Err(RecvError::Lagged(missed)) => self.resync(missed),
                    // The bus lives as long as the call log; nothing more will come.
                    Err(RecvError::Closed) => shutdown.cancelled().await,
                },
                Ok(()) = faults.changed() => {
                    let now_faults = faults.borrow_and_update().clone();
                    self.set_external_faults(now_faults);
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
        self.stop().await;
    }

    /// Reads the call log's health and the free disk space when they are due.
    fn check_health(&mut self, now: Instant) {
        if now >= self.next_store_check {
            self.machine.set_fault(FaultSource::Store, self.inputs.calls.problem());
            self.next_store_check = now + STORE_CHECK;
        }
        if now >= self.next_disk_check {
            let fault = health::disk_fault(&self.inputs.storage_dir, self.inputs.config.disk_min_free_mb);
            self.machine.set_fault(FaultSource::Disk, fault);
            self.next_disk_check = now + DISK_CHECK;
        }
    }

    /// When the loop must next wake up by itself: a machine deadline, an LED edge, a health
    /// check, or housekeeping at the latest.
    fn next_wake(&self, now: Instant) -> Instant {
        [
            self.machine.next_deadline(now),
            self.led.next_edge(now),
            Some(self.next_store_check),
            Some(self.next_disk_check),
            Some(now + HOUSEKEEPING),
        ]
        .into_iter()
        .flatten()
        // A deadline already past would spin the loop; housekeeping bounds the wait.
        .filter(|t| *t > now)
        .min()
        .unwrap_or(now + HOUSEKEEPING)
    }

    /// Feeds `message` and everything already queued behind it to the machine: under a
    /// burst of calls the output is computed once per batch, not once per event.
    fn take_in(&mut self, message: &BusMessage, bus: &mut broadcast::Receiver<BusMessage>) {
        self.on_event(message);
        loop {
            match bus.try_recv() {
                Ok(message) => self.on_event(&message),
                Err(TryRecvError::Lagged(missed)) => return self.resync(missed),
                Err(_) => return,
            }
        }
    }

    fn on_event(&mut self, message: &BusMessage) {
        self.last_event = self.last_event.max(message.event.received_at);
        self.machine.on_event(&message.event, Instant::now());
        let record = &message.record;
        match record.outcome {
            Outcome::Live => {}
            _ => self.machine.set_waiting(&record.call_sid, follow_up::waits(record)),
        }
    }

    /// Takes the faults reported through the handle, clearing those no longer reported.
    fn set_external_faults(&mut self, faults: BTreeMap<FaultSource, String>) {
        for source in self.external.keys().chain(faults.keys()).copied().collect::<Vec<FaultSource>>() {
            self.machine.set_fault(source, faults.get(&source).cloned());
        }
        self.external = faults;
    }

    /// The safe state: nothing lit, nothing ringing.
    async fn stop(mut self) {
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
        let wanted = output.ring.as_ref().map(|r| tone::tone_for(&self.inputs.config, r.to.as_deref()));
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
        self.inputs.handle.snapshot.send_if_modified(|current| {
            let changed = *current != snapshot;
            if changed {
                *current = snapshot;
            }
            changed
        });
    }

    /// Replays, from the call log, the events received after the last one this task saw,
    /// because the bus dropped `missed` of them. The machine ignores what it already knows,
    /// so overlap is harmless.
    fn resync(&mut self, missed: u64) {
        log::warn!("indicators fell {missed} call events behind; re-reading recent calls");
        match self.inputs.calls.store().list(RESYNC_CALLS, None) {
            Ok(records) => {
                let since = self.last_event;
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

    fn app(dir: &std::path::Path) -> Inputs {
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
        Inputs {
            calls: CallLog::new(store),
            config: config.indicators,
            storage_dir: dir.to_owned(),
            handle: Arc::new(Indicators::new()),
        }
    }

    fn publish(app: &Inputs, event: CallEvent) {
        let record = CallRecord::new(&event);
        app.calls.bus().publish(BusMessage::new(event, record));
    }

    /// Levels of `pin` as (ms since `t0`, high) pairs.
    fn levels(app: &Inputs, pin: u8, t0: Instant) -> Vec<(u128, bool)> {
        app.handle
            .pin_log()
            .changes()
            .iter()
            .filter(|c| c.pin == pin && c.at >= t0)
            .map(|c| (c.at.duration_since(t0).as_millis(), c.high))
            .collect()
    }

    async fn started(app: &Inputs) {
        let mut rx = app.handle.subscribe();
        rx.wait_for(|s| s.running).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_blinks_rings_then_shows_active_and_shutdown_leaves_everything_off() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(app.clone(), shutdown.clone()));
        started(&app).await;
        assert_eq!(app.handle.snapshot().output.state, IndicatorState::Ready);
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
        let snap = app.handle.snapshot();
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
        let tones = app.handle.tone_log().changes();
        assert_eq!(tones.iter().map(|c| c.tone).collect::<Vec<_>>(), [Some(0), None]);
        assert_eq!(tones[1].at, t1, "the ring stops the moment the flow answers");

        // A second call at once: active turns double-blink while both last.
        publish(&app, event("CA2", EventSource::StatusCallback, Some(CallStatus::InProgress), &[]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(app.handle.snapshot().output.active_calls, 2);
        let t2 = Instant::now() - Duration::from_millis(10);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Double-blink 400 ms from the second call on (the pin was already lit): 50 on, 50 off,
        // 50 on, 250 off.
        assert_eq!(levels(&app, ACTIVE_PIN, t2), [(50, false), (100, true), (150, false), (400, true)]);

        shutdown.cancel();
        task.await.unwrap();
        let snap = app.handle.snapshot();
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
        let tones = app.handle.tone_log().changes();
        assert_eq!(tones.len(), 2);
        assert_eq!(tones[1].at.duration_since(t0), Duration::from_secs(5), "max_ring_secs");
        assert_eq!(app.handle.snapshot().output.state, IndicatorState::Active);
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(app.handle.snapshot().output.state, IndicatorState::Ready, "call_timeout_secs");
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
        app.handle.set_certificate(Some(super::super::CertStatus::Valid { not_after: soon }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let snap = app.handle.snapshot();
        assert_eq!(snap.output.state, IndicatorState::Fault);
        let ready_pin = snap.leds.pins.iter().find(|p| p.pin == READY_PIN).unwrap();
        assert_eq!(ready_pin.state, Some(IndicatorState::Fault), "the fault owns the shared pin");
        app.handle.set_certificate(None);
        app.calls.set_write_failed(true);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(app.handle.snapshot().output.faults.contains_key(&FaultSource::Store));
        app.calls.set_write_failed(false);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(app.handle.snapshot().output.state, IndicatorState::Ready);

        publish(&app, event("CA1", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]));
        publish(&app, event("CA1", EventSource::StatusCallback, Some(CallStatus::NoAnswer), &[]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(app.handle.snapshot().output.state, IndicatorState::MessageWaiting);
        let n = app.handle.acknowledge();
        let snap = app.handle.wait_acknowledged(n, Duration::from_secs(1)).await;
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
        app.calls
            .store()
            .record(event("CA7", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]))
            .await
            .unwrap();
        // Overflow the bus before the task runs again (this test runs on one thread).
        for i in 0..1100 {
            publish(&app, event(&format!("CAX{i}"), EventSource::StreamStatus, None, &[]));
        }
        let mut rx = app.handle.subscribe();
        let snap = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.output.incoming_calls == 1))
            .await
            .expect("the task resynced")
            .unwrap()
            .clone();
        assert!(snap.tone.playing && snap.running);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn waiting_messages_survive_a_restart_and_a_hang_up_lights_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let waiting = |inputs: &Inputs| inputs.handle.snapshot().output.messages_waiting;
        let start = |inputs: &Inputs| {
            let shutdown = CancellationToken::new();
            (tokio::spawn(run(inputs.clone(), shutdown.clone())), shutdown)
        };
        let (task, shutdown) = start(&app);
        started(&app).await;
        for sid in ["CA1", "CA3"] {
            app.calls.record(event(sid, EventSource::StatusCallback, Some(CallStatus::NoAnswer), &[])).await.unwrap();
        }
        // A caller gone within a second: a hang-up, not a missed call.
        let mut quick = event("CA2", EventSource::StatusCallback, Some(CallStatus::Completed), &[]);
        app.calls.record(event("CA2", EventSource::IncomingCall, Some(CallStatus::Ringing), &[])).await.unwrap();
        quick.received_at = Timestamp::now() + jiff::SignedDuration::from_millis(900);
        app.calls.record(quick).await.unwrap();
        let mut rx = app.handle.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.output.messages_waiting == 2))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(waiting(&app), 2, "the hang-up waits for nobody");
        shutdown.cancel();
        task.await.unwrap();

        // A restart (or a power cut) does not turn the message light off.
        let again = Inputs { handle: Arc::new(Indicators::new()), ..app.clone() };
        let (task, shutdown) = start(&again);
        started(&again).await;
        assert_eq!(waiting(&again), 2);
        assert_eq!(again.handle.snapshot().output.state, IndicatorState::MessageWaiting);
        // One called back from the dashboard: it waits no more, the other still does.
        let step = follow_up::event("CA1", follow_up::Action::CalledBack, None, Timestamp::now()).unwrap();
        assert!(again.calls.follow_up(step).await.unwrap().is_some());
        let mut rx = again.handle.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.output.messages_waiting == 1))
            .await
            .unwrap()
            .unwrap();
        // The rest heard, then restarted: stays off.
        assert_eq!(again.calls.mark_all_heard(Timestamp::now()).await.unwrap(), 1);
        let mut rx = again.handle.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.output.messages_waiting == 0))
            .await
            .unwrap()
            .unwrap();
        shutdown.cancel();
        task.await.unwrap();
        let third = Inputs { handle: Arc::new(Indicators::new()), ..app.clone() };
        let (task, shutdown) = start(&third);
        started(&third).await;
        assert_eq!(waiting(&third), 0);
        shutdown.cancel();
        task.await.unwrap();
    }
}
