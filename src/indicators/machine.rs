//! The indicator state machine: call events, faults and acknowledgements in, what the shop
//! should see and hear out. Pure: time is passed in, nothing here sleeps or touches hardware.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::Serialize;
use tokio::time::Instant;

use crate::calls::{CallEvent, EventSource, MediaEvent, StreamOutcome};
use crate::config::IndicatorsConfig;

/// A certificate this close to expiry is a fault, so someone looks before calls fail.
pub const CERT_WARN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Ended calls remembered so that late or replayed events do not bring them back.
const ENDED_MEMORY: usize = 256;

/// What the indicators show, in order of precedence: when several apply, the first wins the
/// summary and any LED pin the states share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndicatorState {
    /// Something needs the owner: certificate, call log or disk.
    Fault,
    /// A call arrived and is in its first seconds (greeting, ringing in the shop).
    Incoming,
    /// At least one call is in progress.
    Active,
    /// An unheard voicemail or a missed call, until acknowledged.
    MessageWaiting,
    /// Healthy, no call.
    Ready,
}

impl IndicatorState {
    /// Every state, in precedence order.
    pub const ALL: [IndicatorState; 5] = [Self::Fault, Self::Incoming, Self::Active, Self::MessageWaiting, Self::Ready];

    /// The name used in logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fault => "fault",
            Self::Incoming => "incoming",
            Self::Active => "active",
            Self::MessageWaiting => "message-waiting",
            Self::Ready => "ready",
        }
    }
}

/// Where a fault comes from; each source holds at most one reason at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FaultSource {
    /// The TLS certificate (missing or expiring).
    Certificate,
    /// The call log could not be written.
    Store,
    /// The storage directory's file system is nearly full.
    Disk,
}

/// What the TLS side knows about the box's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// No usable certificate.
    Missing,
    /// A certificate valid until `not_after`.
    Valid {
        /// End of validity.
        not_after: Timestamp,
    },
}

/// "Now" on both clocks: monotonic for call timing, wall for quiet hours and certificates.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time (tokio's, so tests can pause it).
    pub mono: Instant,
    /// Wall-clock time.
    pub wall: Timestamp,
}

impl Now {
    /// The current time on both clocks.
    pub fn current() -> Self {
        Self { mono: Instant::now(), wall: Timestamp::now() }
    }
}

/// The ring the speaker should play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ring {
    /// The called number of the call that rings (it picks the tone).
    pub to: Option<String>,
}

/// What the indicators should show right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The most important state that applies.
    pub state: IndicatorState,
    /// Every state that applies, most important first.
    pub lit: Vec<IndicatorState>,
    /// Calls in their first seconds.
    pub incoming_calls: usize,
    /// Calls past their first seconds and not ended.
    pub active_calls: usize,
    /// Voicemails and missed calls since the last acknowledgement.
    pub messages_waiting: u32,
    /// Current faults and why.
    pub faults: BTreeMap<FaultSource, String>,
    /// True during quiet hours (no ring tone).
    pub quiet_hours: bool,
    /// The ring to play, if any.
    pub ring: Option<Ring>,
}

/// Timing and calendar settings of the machine.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a call counts as incoming (and rings) unless answered first.
    pub max_ring: Duration,
    /// A call with no event for this long is taken as ended.
    pub call_timeout: Duration,
    /// Quiet hours (start, end) in local time.
    pub quiet_hours: Option<(Time, Time)>,
    /// The shop's time zone.
    pub time_zone: TimeZone,
}

impl Settings {
    /// The settings from `[indicators]`.
    pub fn from_config(config: &IndicatorsConfig) -> Self {
        Self {
            max_ring: Duration::from_secs(config.max_ring_secs),
            call_timeout: Duration::from_secs(config.call_timeout_secs),
            quiet_hours: config.quiet_hours.as_ref().map(|q| (q.start, q.end)),
            time_zone: config.time_zone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Call {
    to: Option<String>,
    arrived: Instant,
    last_event: Instant,
}

/// The state machine. Each event and each recomputation costs O(log n) in the calls tracked,
/// not O(n): a burst of calls must not slow down the webhooks that announce it.
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    calls: HashMap<String, Call>,
    /// Calls neither answered nor past their ring time, by arrival. Entries whose ring time
    /// has passed are dropped by [`Machine::expire`] and skipped until then.
    ringing: BTreeSet<(Instant, String)>,
    /// Every tracked call by its last event, for the lost-callback timeout.
    by_last_event: BTreeSet<(Instant, String)>,
    ended: VecDeque<String>,
    /// Calls with an unheard voicemail or missed, by CallSid (a call counts once, so a replayed
    /// event cannot count it twice).
    messages: BTreeSet<String>,
    faults: BTreeMap<FaultSource, String>,
    cert: Option<CertStatus>,
}

impl Machine {
    /// A machine with no calls, no faults and nothing waiting.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            calls: HashMap::new(),
            ringing: BTreeSet::new(),
            by_last_event: BTreeSet::new(),
            ended: VecDeque::new(),
            messages: BTreeSet::new(),
            faults: BTreeMap::new(),
            cert: None,
        }
    }

    /// Takes in one call event received at `now`.
    pub fn on_event(&mut self, event: &CallEvent, now: Instant) {
        let sid = event.call_sid.as_str();
        match event.source {
            EventSource::IncomingCall => {
                if let Some(call) = self.track(sid, now, false)
                    && call.to.is_none()
                {
                    call.to.clone_from(&event.to);
                }
            }
            EventSource::StatusCallback => match &event.status {
                Some(status) if status.is_final() => {
                    if status.is_missed() {
                        self.messages.insert(sid.to_owned());
                    }
                    self.end(sid);
                }
                // A call first heard of through its status (after a restart or a lag) is
                // past ringing: tracking it as active, not incoming, avoids a late ring.
                _ => {
                    self.track(sid, now, true);
                }
            },
            EventSource::StreamStatus => self.touch(sid, now),
            // The owner's steps come after the call; what they change is message-waiting,
            // which the call log works out (see `set_waiting`).
            EventSource::Owner => {}
            // The front desk picked up: the bay need not hear it ring any more.
            EventSource::DialResult => match event.detail(crate::calls::detail::DIAL_STATUS) {
                Some("completed" | "answered") => {
                    if self.track(sid, now, true).is_some() {
                        self.answer(sid);
                    }
                }
                _ => self.touch(sid, now),
            },
            EventSource::MediaStream => {
                match event.media_event() {
                    Some(MediaEvent::Started) => {
                        self.track(sid, now, true);
                    }
                    Some(MediaEvent::Answered) => {
                        if self.track(sid, now, true).is_some() {
                            self.answer(sid);
                        }
                    }
                    Some(MediaEvent::Stopped) => {
                        // Counted even when the call already ended: the final callback and
                        // the end of the stream race.
                        let outcome = event.stream_outcome();
                        if outcome == Some(StreamOutcome::Message) {
                            self.messages.insert(sid.to_owned());
                        }
                        if outcome == Some(StreamOutcome::Hangup) {
                            self.end(sid);
                        } else {
                            self.answer(sid);
                            self.touch(sid, now);
                        }
                    }
                    _ => self.touch(sid, now),
                }
            }
        }
    }

    /// Starts tracking a call (or refreshes it); `None` for a call that already ended.
    /// `answered` is used only when the call is new.
    fn track(&mut self, sid: &str, now: Instant, answered: bool) -> Option<&mut Call> {
        if self.ended.iter().any(|s| s == sid) {
            return None;
        }
        if self.calls.contains_key(sid) {
            self.touch(sid, now);
        } else {
            self.calls.insert(sid.to_owned(), Call { to: None, arrived: now, last_event: now });
            self.by_last_event.insert((now, sid.to_owned()));
            if !answered {
                self.ringing.insert((now, sid.to_owned()));
            }
        }
        self.calls.get_mut(sid)
    }

    /// Notes an event of a tracked call (it is alive).
    fn touch(&mut self, sid: &str, now: Instant) {
        if let Some(call) = self.calls.get_mut(sid) {
            self.by_last_event.remove(&(call.last_event, sid.to_owned()));
            call.last_event = now;
            self.by_last_event.insert((now, sid.to_owned()));
        }
    }

    /// The flow took a tracked call: it stops ringing.
    fn answer(&mut self, sid: &str) {
        if let Some(call) = self.calls.get(sid) {
            self.ringing.remove(&(call.arrived, sid.to_owned()));
        }
    }

    fn end(&mut self, sid: &str) {
        if let Some(call) = self.calls.remove(sid) {
            self.ringing.remove(&(call.arrived, sid.to_owned()));
            self.by_last_event.remove(&(call.last_event, sid.to_owned()));
        }
        if !self.ended.iter().any(|s| s == sid) {
            if self.ended.len() == ENDED_MEMORY {
                self.ended.pop_front();
            }
            self.ended.push_back(sid.to_owned());
        }
    }

    /// Sets (`Some(reason)`) or clears (`None`) the fault of one source.
    pub fn set_fault(&mut self, source: FaultSource, reason: Option<String>) {
        match reason {
            Some(r) => self.faults.insert(source, r),
            None => self.faults.remove(&source),
        };
    }

    /// What the TLS side reports; `None` when the box runs without TLS of its own.
    pub fn set_certificate(&mut self, status: Option<CertStatus>) {
        self.cert = status;
    }

    /// The owner has heard the messages: clears message-waiting.
    pub fn acknowledge(&mut self) {
        self.messages.clear();
    }

    /// What the call log says a call came to: a voicemail or a missed call waits for the
    /// owner; a hang-up, or a call the front desk or the agent had, does not (a 0.2 s
    /// "message" at the beep lights nothing).
    pub fn set_waiting(&mut self, call_sid: &str, waiting: bool) {
        if waiting {
            self.messages.insert(call_sid.to_owned());
        } else {
            self.messages.remove(call_sid);
        }
    }

    /// Forgets calls whose final callback never came.
    /// Forgets calls whose final callback never came, and stops the ring of calls past their
    /// ring time.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.settings.call_timeout;
        while let Some((last_event, sid)) = self.by_last_event.first()
            && now.saturating_duration_since(*last_event) >= timeout
        {
            let sid = sid.clone();
            log::warn!(call_sid = sid.as_str(); "call {sid} had no event for {timeout:?}; taking it as ended (lost final callback)");
            self.end(&sid);
        }
        while self.ringing.first().is_some_and(|(arrived, _)| !self.rings_at(*arrived, now)) {
            self.ringing.pop_first();
        }
    }

    /// The earliest moment after `now` at which the output may change without new input.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let ring_end = self.ringing.iter().map(|(arrived, _)| *arrived + self.settings.max_ring).find(|t| *t > now);
        let lost = self.by_last_event.iter().map(|(last, _)| *last + self.settings.call_timeout).find(|t| *t > now);
        ring_end.into_iter().chain(lost).min()
    }

    /// Whether a call that arrived at `arrived` and is not answered still rings at `now`.
    fn rings_at(&self, arrived: Instant, now: Instant) -> bool {
        now.saturating_duration_since(arrived) < self.settings.max_ring
    }

    /// True when `wall` falls in quiet hours in the shop's time zone.
    pub fn is_quiet(&self, wall: Timestamp) -> bool {
        let Some((start, end)) = self.settings.quiet_hours else { return false };
        crate::config::QuietHoursConfig { start, end }.contains(wall.to_zoned(self.settings.time_zone.clone()).time())
    }

    /// What to show at `now`.
    pub fn output(&self, now: Now) -> Output {
        let mut faults = self.faults.clone();
        match self.cert {
            Some(CertStatus::Missing) => {
                faults.insert(FaultSource::Certificate, "no TLS certificate".into());
            }
            Some(CertStatus::Valid { not_after }) => {
                let left = not_after.duration_since(now.wall);
                if left.is_negative() {
                    faults.insert(FaultSource::Certificate, format!("TLS certificate expired at {not_after}"));
                } else if left.unsigned_abs() < CERT_WARN {
                    faults.insert(
                        FaultSource::Certificate,
                        format!("TLS certificate expires at {not_after} (within 7 days)"),
                    );
                }
            }
            None => {}
        }
        // Entries past their ring time sit at the front until `expire` drops them.
        let stale = self.ringing.iter().take_while(|(arrived, _)| !self.rings_at(*arrived, now.mono)).count();
        let incoming_calls = self.ringing.len() - stale;
        let active_calls = self.calls.len() - incoming_calls;
        let quiet_hours = self.is_quiet(now.wall);
        let ring = if quiet_hours || incoming_calls == 0 {
            None
        } else {
            // The newest arrival picks the tone: it is the call the shop has not heard yet.
            self.ringing.last().and_then(|(_, sid)| self.calls.get(sid)).map(|c| Ring { to: c.to.clone() })
        };
        let mut lit = BTreeSet::new();
        if !faults.is_empty() {
            lit.insert(IndicatorState::Fault);
        }
        if incoming_calls > 0 {
            lit.insert(IndicatorState::Incoming);
        }
        if active_calls > 0 {
            lit.insert(IndicatorState::Active);
        }
        if !self.messages.is_empty() {
            lit.insert(IndicatorState::MessageWaiting);
        }
        if faults.is_empty() && self.calls.is_empty() {
            lit.insert(IndicatorState::Ready);
        }
        let lit: Vec<IndicatorState> = lit.into_iter().collect();
        Output {
            state: lit.first().copied().unwrap_or(IndicatorState::Ready),
            lit,
            incoming_calls,
            active_calls,
            messages_waiting: u32::try_from(self.messages.len()).unwrap_or(u32::MAX),
            faults,
            quiet_hours,
            ring,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallStatus;
    use crate::calls::event::test_event as event;

    fn settings() -> Settings {
        Settings {
            max_ring: Duration::from_secs(20),
            call_timeout: Duration::from_secs(600),
            quiet_hours: None,
            time_zone: TimeZone::UTC,
        }
    }

    fn incoming(sid: &str) -> CallEvent {
        event(sid, EventSource::IncomingCall, Some(CallStatus::Ringing), &[])
    }
    fn status(sid: &str, s: CallStatus) -> CallEvent {
        event(sid, EventSource::StatusCallback, Some(s), &[])
    }
    fn media(sid: &str, details: &[(&str, &str)]) -> CallEvent {
        event(sid, EventSource::MediaStream, None, details)
    }

    fn at(t0: Instant, secs: u64) -> Now {
        Now { mono: t0 + Duration::from_secs(secs), wall: Timestamp::from_second(1_800_000_000).unwrap() }
    }

    #[test]
    fn a_call_rings_then_is_active_then_ends() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        assert_eq!(m.output(at(t0, 0)).state, IndicatorState::Ready);
        m.on_event(&incoming("CA1"), t0);
        let out = m.output(at(t0, 1));
        assert_eq!(out.state, IndicatorState::Incoming);
        assert_eq!(out.ring, Some(Ring { to: Some("+15035550100".into()) }));
        m.on_event(&media("CA1", &[("MediaEvent", "started"), ("Flow", "voicemail")]), t0 + Duration::from_secs(1));
        assert_eq!(m.output(at(t0, 2)).state, IndicatorState::Incoming, "greeting still counts as incoming");
        m.on_event(&media("CA1", &[("MediaEvent", "answered"), ("Flow", "voicemail")]), t0 + Duration::from_secs(3));
        let out = m.output(at(t0, 3));
        assert_eq!((out.state, out.active_calls, out.ring), (IndicatorState::Active, 1, None));
        m.on_event(&status("CA1", CallStatus::Completed), t0 + Duration::from_secs(60));
        let out = m.output(at(t0, 60));
        assert_eq!((out.state, out.messages_waiting), (IndicatorState::Ready, 0));
    }

    #[test]
    fn overlapping_calls_are_counted_and_the_newest_rings() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&incoming("CA1"), t0);
        m.on_event(&media("CA1", &[("MediaEvent", "answered")]), t0 + Duration::from_secs(2));
        let mut second = incoming("CA2");
        second.to = Some("+15035550101".into());
        m.on_event(&second, t0 + Duration::from_secs(5));
        let out = m.output(at(t0, 6));
        assert_eq!(out.state, IndicatorState::Incoming);
        assert_eq!(out.lit, vec![IndicatorState::Incoming, IndicatorState::Active]);
        assert_eq!((out.incoming_calls, out.active_calls), (1, 1));
        assert_eq!(out.ring.unwrap().to.as_deref(), Some("+15035550101"));
        m.on_event(&media("CA2", &[("MediaEvent", "answered")]), t0 + Duration::from_secs(7));
        let out = m.output(at(t0, 8));
        assert_eq!((out.state, out.active_calls), (IndicatorState::Active, 2));
        m.on_event(&status("CA1", CallStatus::Completed), t0 + Duration::from_secs(9));
        assert_eq!(m.output(at(t0, 9)).active_calls, 1);
        m.on_event(&status("CA2", CallStatus::Completed), t0 + Duration::from_secs(10));
        assert_eq!(m.output(at(t0, 10)).state, IndicatorState::Ready);
    }

    #[test]
    fn ringing_stops_after_max_ring_time_even_unanswered() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&incoming("CA1"), t0);
        assert_eq!(m.next_deadline(t0), Some(t0 + Duration::from_secs(20)));
        assert_eq!(m.next_deadline(t0 + Duration::from_secs(20)), Some(t0 + Duration::from_secs(600)));
        assert!(m.output(at(t0, 19)).ring.is_some());
        let out = m.output(at(t0, 20));
        assert_eq!((out.state, out.ring, out.active_calls), (IndicatorState::Active, None, 1));
    }

    #[test]
    fn a_lost_final_callback_times_the_call_out() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&incoming("CA1"), t0);
        m.on_event(&media("CA1", &[("MediaEvent", "answered")]), t0 + Duration::from_secs(5));
        m.expire(t0 + Duration::from_secs(604));
        assert_eq!(m.output(at(t0, 604)).state, IndicatorState::Active, "an event 599 s ago keeps it");
        assert_eq!(m.next_deadline(t0 + Duration::from_secs(604)), Some(t0 + Duration::from_secs(605)));
        m.expire(t0 + Duration::from_secs(605));
        assert_eq!(m.output(at(t0, 605)).state, IndicatorState::Ready);
        // The late callback (or a replay) neither revives the call nor counts it twice.
        m.on_event(&incoming("CA1"), t0 + Duration::from_secs(700));
        m.on_event(&status("CA1", CallStatus::Completed), t0 + Duration::from_secs(700));
        assert_eq!(m.output(at(t0, 700)).state, IndicatorState::Ready);
    }

    #[test]
    fn thousands_of_overlapping_calls_keep_exact_counts_through_ring_ends_answers_and_timeouts() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        // 3,000 calls, one a second; every third answered when it arrives; every fifth ends.
        for i in 0..3_000u64 {
            let sid = format!("CA{i}");
            let now = t0 + Duration::from_secs(i);
            m.on_event(&incoming(&sid), now);
            if i.is_multiple_of(3) {
                m.on_event(&media(&sid, &[("MediaEvent", "answered")]), now);
            }
            if i.is_multiple_of(5) {
                m.on_event(&status(&sid, CallStatus::Completed), now);
            }
        }
        let end = 2_999;
        // A naive model of the same rules, for comparison.
        let model = |now: u64| {
            let alive = |i: u64| !i.is_multiple_of(5) && now - i < 600;
            let ringing = |i: u64| alive(i) && !i.is_multiple_of(3) && now - i < 20;
            let incoming = (0..=end).filter(|i| ringing(*i)).count();
            let tracked = (0..=end).filter(|i| alive(*i)).count();
            (incoming, tracked - incoming)
        };
        for now in [end, end + 10, end + 25, end + 300, end + 601] {
            m.expire(t0 + Duration::from_secs(now));
            let out = m.output(at(t0, now));
            assert_eq!((out.incoming_calls, out.active_calls), model(now), "at {now} s");
            if now == end + 10 {
                // The oldest call alive (2,411) times out at 3,011, a second before the oldest
                // one ringing (2,992: 2,990 ended, 2,991 was answered) stops ringing.
                assert_eq!(m.next_deadline(t0 + Duration::from_secs(now)), Some(t0 + Duration::from_secs(2_411 + 600)));
                assert_eq!(
                    m.next_deadline(t0 + Duration::from_secs(3_011)),
                    Some(t0 + Duration::from_secs(2_992 + 20))
                );
            }
            if now == end + 300 {
                // Nothing rings; the oldest call still alive (2,701) times out next.
                assert_eq!(m.next_deadline(t0 + Duration::from_secs(now)), Some(t0 + Duration::from_secs(2_701 + 600)));
            }
        }
        assert_eq!(m.next_deadline(t0 + Duration::from_secs(end + 601)), None, "every call timed out");
    }

    #[test]
    fn voicemail_and_missed_calls_wait_until_acknowledged() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&incoming("CA1"), t0);
        m.on_event(&media("CA1", &[("MediaEvent", "answered")]), t0);
        m.on_event(
            &media(
                "CA1",
                &[("MediaEvent", "stopped"), ("Flow", "voicemail"), ("Outcome", "message"), ("Recording", "r1")],
            ),
            t0 + Duration::from_secs(30),
        );
        m.on_event(&status("CA1", CallStatus::Completed), t0 + Duration::from_secs(31));
        m.on_event(&incoming("CA2"), t0 + Duration::from_secs(40));
        m.on_event(&status("CA2", CallStatus::Canceled), t0 + Duration::from_secs(42));
        let out = m.output(at(t0, 50));
        assert_eq!((out.state, out.messages_waiting), (IndicatorState::MessageWaiting, 2));
        assert_eq!(out.lit, vec![IndicatorState::MessageWaiting, IndicatorState::Ready], "waiting, and healthy");
        m.acknowledge();
        assert_eq!(m.output(at(t0, 51)).state, IndicatorState::Ready);
        // A relayed call or a hang-up is not a message.
        m.on_event(&incoming("CA3"), t0 + Duration::from_secs(60));
        m.on_event(&media("CA3", &[("MediaEvent", "stopped"), ("Flow", "relay"), ("Outcome", "relayed")]), t0);
        m.on_event(&status("CA3", CallStatus::Completed), t0 + Duration::from_secs(90));
        assert_eq!(m.output(at(t0, 91)).messages_waiting, 0);
    }

    #[test]
    fn a_replayed_message_event_counts_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        let stopped = media("CA1", &[("MediaEvent", "stopped"), ("Outcome", "message"), ("Recording", "r1")]);
        m.on_event(&stopped, t0);
        m.on_event(&stopped, t0);
        m.on_event(&status("CA1", CallStatus::Completed), t0);
        m.on_event(&stopped, t0);
        assert_eq!(m.output(at(t0, 1)).messages_waiting, 1);
    }

    #[test]
    fn a_hangup_outcome_ends_the_call_without_waiting_for_the_callback() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&incoming("CA1"), t0);
        m.on_event(&media("CA1", &[("MediaEvent", "stopped"), ("Outcome", "hangup")]), t0 + Duration::from_secs(3));
        assert_eq!(m.output(at(t0, 3)).state, IndicatorState::Ready);
    }

    #[test]
    fn faults_take_precedence_and_clear_per_source() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&incoming("CA1"), t0);
        m.set_fault(FaultSource::Store, Some("write failed".into()));
        m.set_fault(FaultSource::Disk, Some("12 MiB free".into()));
        let out = m.output(at(t0, 1));
        assert_eq!(out.state, IndicatorState::Fault);
        assert_eq!(out.lit, vec![IndicatorState::Fault, IndicatorState::Incoming]);
        assert!(out.ring.is_some(), "a fault does not silence a caller");
        m.set_fault(FaultSource::Store, None);
        assert_eq!(m.output(at(t0, 1)).faults.keys().copied().collect::<Vec<_>>(), vec![FaultSource::Disk]);
        m.set_fault(FaultSource::Disk, None);
        assert_eq!(m.output(at(t0, 1)).state, IndicatorState::Incoming);
        let mut idle = Machine::new(settings());
        idle.set_fault(FaultSource::Disk, Some("full".into()));
        assert_eq!(idle.output(at(t0, 0)).lit, vec![IndicatorState::Fault], "ready means healthy");
    }

    #[test]
    fn certificate_expiry_within_seven_days_is_a_fault() {
        let t0 = Instant::now();
        let now = at(t0, 0);
        let mut m = Machine::new(settings());
        let days = |d: i64| now.wall.checked_add(jiff::SignedDuration::from_hours(24 * d)).unwrap();
        m.set_certificate(Some(CertStatus::Valid { not_after: days(30) }));
        assert_eq!(m.output(now).state, IndicatorState::Ready);
        m.set_certificate(Some(CertStatus::Valid { not_after: days(6) }));
        let out = m.output(now);
        assert_eq!(out.state, IndicatorState::Fault);
        assert!(out.faults[&FaultSource::Certificate].contains("within 7 days"));
        // The same certificate becomes a fault as time passes, with no new report.
        m.set_certificate(Some(CertStatus::Valid { not_after: days(8) }));
        assert_eq!(m.output(now).state, IndicatorState::Ready);
        let later = Now { wall: days(2), ..now };
        assert_eq!(m.output(later).state, IndicatorState::Fault);
        m.set_certificate(Some(CertStatus::Valid { not_after: days(-1) }));
        assert!(m.output(now).faults[&FaultSource::Certificate].contains("expired"));
        m.set_certificate(Some(CertStatus::Missing));
        assert_eq!(m.output(now).faults[&FaultSource::Certificate], "no TLS certificate");
        m.set_certificate(None);
        assert_eq!(m.output(now).state, IndicatorState::Ready);
    }

    #[test]
    fn quiet_hours_silence_the_ring_but_not_the_leds_in_local_time() {
        let t0 = Instant::now();
        let chicago = TimeZone::get("America/Chicago").unwrap();
        let mut m = Machine::new(Settings {
            quiet_hours: Some((Time::constant(19, 0, 0, 0), Time::constant(7, 0, 0, 0))),
            time_zone: chicago.clone(),
            ..settings()
        });
        m.on_event(&incoming("CA1"), t0);
        let local = |h: i8, min: i8| {
            jiff::civil::date(2026, 11, 25).at(h, min, 0, 0).to_zoned(chicago.clone()).unwrap().timestamp()
        };
        for (h, min, quiet) in
            [(18, 59, false), (19, 0, true), (23, 30, true), (3, 0, true), (6, 59, true), (7, 0, false)]
        {
            let out = m.output(Now { mono: t0, wall: local(h, min) });
            assert_eq!(out.quiet_hours, quiet, "{h}:{min:02}");
            assert_eq!(out.ring.is_none(), quiet, "{h}:{min:02}");
            assert_eq!(out.state, IndicatorState::Incoming, "LEDs still show the call at {h}:{min:02}");
        }
        // 19:30 in Chicago is 01:30 UTC: the zone, not UTC, decides.
        assert!(m.is_quiet(local(19, 30)));
        let same_range_in_utc = Machine::new(Settings {
            quiet_hours: Some((Time::constant(19, 0, 0, 0), Time::constant(7, 0, 0, 0))),
            ..settings()
        });
        assert!(!same_range_in_utc.is_quiet(local(12, 30)), "18:30 UTC");
        assert!(same_range_in_utc.is_quiet(local(13, 30)), "19:30 UTC");
    }

    #[test]
    fn a_call_first_seen_through_its_status_does_not_ring() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings());
        m.on_event(&status("CA9", CallStatus::InProgress), t0);
        let out = m.output(at(t0, 0));
        assert_eq!((out.state, out.ring), (IndicatorState::Active, None));
    }
}
