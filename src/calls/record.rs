//! One call's record and the rules that keep it right however Twilio delivers events:
//! a retried event is stored once, and a late event never moves a call backwards.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::event::{CallEvent, CallStatus, StreamOutcome};
use super::follow_up::FollowUp;
use super::outcome::{self, Outcome};

/// Everything the box knows about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Twilio's CallSid.
    pub call_sid: String,
    /// Caller.
    pub from: Option<String>,
    /// The shop line that was called.
    pub to: Option<String>,
    /// `inbound`, `outbound-api`, …
    pub direction: Option<String>,
    /// Caller ID name, when Twilio had one.
    pub caller_name: Option<String>,
    /// When the box first heard of the call.
    pub first_seen: Timestamp,
    /// When it was answered (first `in-progress`).
    pub answered_at: Option<Timestamp>,
    /// When it ended (its final status).
    pub ended_at: Option<Timestamp>,
    /// The furthest status the call reached.
    pub status: CallStatus,
    /// Talk time in seconds, from the final callback.
    pub duration_secs: Option<u64>,
    /// Every distinct event, in the order they happened.
    pub events: Vec<CallEvent>,
    /// Events that arrived after the timeline was full ([`MAX_EVENTS`]): counted, not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_dropped: u64,
    /// The call's media stream, once one was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamInfo>,
    /// What the call came to so far ([`outcome::of`]); kept up to date by every change, and
    /// worked out afresh when a record is read, so records older than this field have it too.
    #[serde(default = "live")]
    pub outcome: Outcome,
    /// What the owner did about it (heard, called back, a note), from its owner events.
    #[serde(default, skip_serializing_if = "FollowUp::is_empty")]
    pub follow_up: FollowUp,
}

fn live() -> Outcome {
    Outcome::Live
}

/// What happened on a call's media stream (the WebSocket session).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Twilio's StreamSid.
    pub stream_sid: String,
    /// When the stream's `start` arrived.
    pub started_at: Option<Timestamp>,
    /// When the session ended.
    pub stopped_at: Option<Timestamp>,
    /// The flow that ran last (`voicemail` or `relay`).
    pub flow: String,
    /// Media frames received from Twilio.
    pub frames_in: u64,
    /// Media frames sent to Twilio.
    pub frames_out: u64,
    /// Keys the caller pressed, in order.
    pub dtmf: String,
    /// Marks sent to Twilio.
    pub marks_sent: u64,
    /// Marks Twilio echoed back.
    pub marks_echoed: u64,
    /// Why the relay fell back to voicemail, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// How the stream ended; `None` while it runs.
    pub outcome: Option<StreamOutcome>,
    /// What went wrong, when the outcome is `error` or the socket was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The caller's message, when one was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingInfo>,
}

/// A voicemail recording on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// Path relative to `storage.dir`.
    pub path: String,
    /// Length in milliseconds.
    pub duration_ms: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// How much of it is someone speaking (loud enough to be a voice); unknown for recordings
    /// made before the box measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voiced_ms: Option<u64>,
}

/// Most events kept on one call's timeline. A real call has a dozen or so; the cap keeps a
/// flood of distinct-but-valid callbacks for one call from growing its record (and every
/// rewrite of it) without bound.
pub const MAX_EVENTS: usize = 500;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was new and is now part of the record.
    Added,
    /// The same event was already recorded (a retry); nothing changed.
    Duplicate,
    /// The event was new but the timeline is full: only [`CallRecord::events_dropped`] changed.
    Counted,
}

impl CallRecord {
    /// A record for a call first heard of through `event`.
    pub fn new(event: &CallEvent) -> Self {
        let mut record = Self {
            call_sid: event.call_sid.clone(),
            from: None,
            to: None,
            direction: None,
            caller_name: None,
            first_seen: event.received_at,
            answered_at: None,
            ended_at: None,
            status: CallStatus::Other("unknown".into()),
            duration_secs: None,
            events: Vec::new(),
            events_dropped: 0,
            stream: None,
            outcome: Outcome::Live,
            follow_up: FollowUp::default(),
        };
        record.apply(event.clone());
        record
    }

    /// Adds `event` unless it is a retry of one already recorded, then re-derives the call's
    /// state from all its events, so the result does not depend on arrival order.
    pub fn apply(&mut self, event: CallEvent) -> Applied {
        if self.events.iter().any(|e| e.source == event.source && e.dedupe_key == event.dedupe_key) {
            return Applied::Duplicate;
        }
        if self.events.len() >= MAX_EVENTS {
            self.events_dropped += 1;
            return Applied::Counted;
        }
        let key = |e: &CallEvent| (e.occurred_at(), e.sequence.unwrap_or(0));
        let at = self.events.partition_point(|e| key(e) <= key(&event));
        self.events.insert(at, event);
        self.derive();
        Applied::Added
    }

    fn derive(&mut self) {
        let first_known = |f: fn(&CallEvent) -> &Option<String>| self.events.iter().find_map(|e| f(e).clone());
        self.from = first_known(|e| &e.from);
        self.to = first_known(|e| &e.to);
        self.direction = first_known(|e| &e.direction);
        self.caller_name = self.events.iter().find_map(|e| e.details.get("CallerName").cloned());
        self.first_seen = self.events.iter().map(|e| e.received_at).min().unwrap_or(self.first_seen);

        // The furthest status wins; among final statuses, the one Twilio sent last.
        let furthest = self
            .events
            .iter()
            .filter_map(|e| Some((e.status.as_ref()?.rank()?, e.sequence.unwrap_or(0), e)))
            .max_by_key(|(rank, seq, _)| (*rank, *seq))
            .map(|(_, _, e)| e);
        if let Some(e) = furthest {
            self.status = e.status.clone().unwrap_or(CallStatus::Other("unknown".into()));
            if self.status.is_final() {
                self.ended_at = Some(e.occurred_at());
                self.duration_secs = e.duration_secs;
            } else {
                self.ended_at = None;
                self.duration_secs = None;
            }
        }
        self.answered_at =
            self.events.iter().filter(|e| e.status == Some(CallStatus::InProgress)).map(CallEvent::occurred_at).min();
        self.follow_up = FollowUp::of(&self.events);
        self.refresh_outcome();
    }

    /// Works [`Self::outcome`] out again, after a change made outside [`Self::apply`].
    pub fn refresh_outcome(&mut self) {
        self.outcome = outcome::of(self);
    }

    /// True once the call has ended.
    pub fn is_over(&self) -> bool {
        self.status.is_final()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::EventSource;

    fn ev(status: &str, seq: Option<u64>, secs: i64) -> CallEvent {
        CallEvent {
            call_sid: "CA1".into(),
            source: EventSource::StatusCallback,
            status: Some(status.parse().unwrap()),
            sequence: seq,
            twilio_timestamp: None,
            received_at: Timestamp::from_second(1_700_000_000 + secs).unwrap(),
            from: Some("+15035550123".into()),
            to: None,
            direction: None,
            duration_secs: (status == "completed").then_some(42),
            dedupe_key: format!("status:{}", seq.unwrap_or(0)),
            details: Default::default(),
        }
    }

    #[test]
    fn late_ringing_never_moves_back() {
        let mut r = CallRecord::new(&ev("initiated", Some(0), 0));
        r.apply(ev("completed", Some(3), 30));
        assert_eq!(r.apply(ev("ringing", Some(1), 31)), Applied::Added);
        assert_eq!(r.status, CallStatus::Completed);
        assert_eq!(r.duration_secs, Some(42));
        assert_eq!(r.events.len(), 3);
        // The timeline is ordered by when things happened, not by arrival.
        let seqs: Vec<_> = r.events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, vec![Some(0), Some(3), Some(1)]);
    }

    #[test]
    fn a_full_timeline_counts_what_it_cannot_keep() {
        let mut r = CallRecord::new(&ev("ringing", Some(0), 0));
        for seq in 1..MAX_EVENTS as u64 + 10 {
            r.apply(ev("ringing", Some(seq), 0));
        }
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert_eq!(r.events_dropped, 10);
        assert_eq!(r.apply(ev("ringing", Some(3), 0)), Applied::Duplicate, "a retry of a kept event is still one");
    }

    #[test]
    fn retries_are_stored_once() {
        let mut r = CallRecord::new(&ev("ringing", Some(1), 0));
        assert_eq!(r.apply(ev("ringing", Some(1), 5)), Applied::Duplicate);
        assert_eq!(r.events.len(), 1);
    }

    #[test]
    fn any_order_gives_the_same_state() {
        let events = [
            ev("initiated", Some(0), 0),
            ev("ringing", Some(1), 1),
            ev("in-progress", Some(2), 2),
            ev("completed", Some(3), 40),
        ];
        let mut forward = CallRecord::new(&events[0]);
        for e in &events[1..] {
            forward.apply(e.clone());
        }
        let mut backward = CallRecord::new(&events[3]);
        for e in events[..3].iter().rev() {
            backward.apply(e.clone());
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.answered_at, Some(Timestamp::from_second(1_700_000_002).unwrap()));
    }
}
