//! What a call came to, in the owner's terms: the one answer the call log, the admin API, the
//! CSV, the CLI and the missed-call texts all use.
//!
//! A call is *missed* when the caller reached nobody and left no message: Twilio could not
//! connect it (busy, no answer, failed, canceled), the caller hung up before the stream
//! opened or during the greeting, or what they left is too short (or too silent) to be a
//! message. A call that
//! ended within [`HANG_UP_SECS`] is a *hang-up* instead (a misdial, a pocket call): nobody is
//! texted or alerted for it.

use serde::{Deserialize, Serialize};

use super::event::{EventSource, StreamOutcome, detail};
use super::record::CallRecord;

/// Shortest recording that counts as a voicemail. Below it the caller hung up at the beep:
/// nothing worth a listen, so nothing to light an LED for.
pub const MIN_MESSAGE_MS: u64 = 2_000;

/// Least speech in a voicemail: a caller who stayed on the line in silence left no message.
pub const MIN_VOICED_MS: u64 = 500;

/// A call over within this many seconds of arriving, with nobody reached and no message, is a
/// hang-up, not a missed call.
pub const HANG_UP_SECS: i64 = 4;

/// What a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The call is still going on.
    Live,
    /// The caller left a message of at least [`MIN_MESSAGE_MS`].
    Voicemail,
    /// The caller reached nobody and left no message.
    Missed,
    /// The caller hung up within [`HANG_UP_SECS`].
    HungUp,
    /// The call went on to the front desk.
    FrontDesk,
    /// The upstream voice agent had the call.
    Relayed,
}

impl Outcome {
    /// Every outcome, in the order the owner's screens list them.
    pub const ALL: [Outcome; 6] =
        [Self::Live, Self::Voicemail, Self::Missed, Self::HungUp, Self::FrontDesk, Self::Relayed];

    /// The stored and exported name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Voicemail => "voicemail",
            Self::Missed => "missed",
            Self::HungUp => "hung-up",
            Self::FrontDesk => "front-desk",
            Self::Relayed => "relayed",
        }
    }

    /// The outcome a name means.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Whether the shop owes the caller a call back.
    pub fn wants_call_back(self) -> bool {
        matches!(self, Self::Voicemail | Self::Missed)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `record` came to so far.
pub fn of(record: &CallRecord) -> Outcome {
    let stream = record.stream.as_ref();
    let stream_end = stream.and_then(|s| s.outcome);
    // The caller is gone once Twilio says the call ended, or once the stream ended in a way
    // that ends the call (after front-desk the call goes on, to the `<Dial>`).
    let over = record.is_over() || matches!(stream_end, Some(o) if o != StreamOutcome::FrontDesk);
    if !over {
        return Outcome::Live;
    }
    match stream_end {
        Some(StreamOutcome::Message)
            if stream
                .and_then(|s| s.recording.as_ref())
                .is_some_and(|r| r.duration_ms >= MIN_MESSAGE_MS && r.voiced_ms.is_none_or(|v| v >= MIN_VOICED_MS)) =>
        {
            return Outcome::Voicemail;
        }
        Some(StreamOutcome::Relayed) => return Outcome::Relayed,
        Some(StreamOutcome::FrontDesk) => return Outcome::FrontDesk,
        _ => {}
    }
    // With [hours], the front desk rang first: somebody picked up, or the call came to the box.
    let front_desk_answered = record.events.iter().any(|e| {
        e.source == EventSource::DialResult && matches!(e.detail(detail::DIAL_STATUS), Some("completed" | "answered"))
    });
    if stream_end.is_none() && front_desk_answered {
        return Outcome::FrontDesk;
    }
    // Twilio never connected it: the caller did wait, whatever the clock says.
    if stream_end.is_none() && record.status.is_missed() {
        return Outcome::Missed;
    }
    let ended = stream.and_then(|s| s.stopped_at).or(record.ended_at);
    match ended {
        Some(end) if end.duration_since(record.first_seen).as_secs() < HANG_UP_SECS => Outcome::HungUp,
        _ => Outcome::Missed,
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::calls::event::{CallStatus, EventSource, test_event};
    use crate::calls::record::{RecordingInfo, StreamInfo};

    fn call(status: &str, secs: i64) -> CallRecord {
        let mut r = CallRecord::new(&test_event("CA1", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]));
        let mut end = test_event("CA1", EventSource::StatusCallback, Some(status.parse().unwrap()), &[]);
        end.received_at = r.first_seen + SignedDuration::from_secs(secs);
        r.apply(end);
        r
    }

    fn with_stream(mut r: CallRecord, outcome: StreamOutcome, message_ms: Option<u64>, secs: i64) -> CallRecord {
        r.stream = Some(StreamInfo {
            outcome: Some(outcome),
            stopped_at: Some(r.first_seen + SignedDuration::from_secs(secs)),
            recording: message_ms.map(|duration_ms| RecordingInfo {
                path: "r.wav".into(),
                duration_ms,
                bytes: 1,
                voiced_ms: None,
            }),
            ..StreamInfo::default()
        });
        r
    }

    #[test]
    fn outcomes_in_owner_terms() {
        assert_eq!(of(&call("ringing", 0)), Outcome::Live);
        assert_eq!(of(&call("in-progress", 0)), Outcome::Live);
        assert_eq!(of(&call("no-answer", 1)), Outcome::Missed, "Twilio could not connect it");
        assert_eq!(of(&call("busy", 30)), Outcome::Missed);
        assert_eq!(of(&call("completed", 12)), Outcome::Missed, "hung up before the stream opened");
        assert_eq!(of(&call("completed", 2)), Outcome::HungUp);
        let live = call("in-progress", 0);
        assert_eq!(of(&with_stream(live.clone(), StreamOutcome::Message, Some(5_000), 20)), Outcome::Voicemail);
        assert_eq!(of(&with_stream(live.clone(), StreamOutcome::Message, Some(200), 9)), Outcome::Missed);
        assert_eq!(of(&with_stream(live.clone(), StreamOutcome::Message, Some(200), 1)), Outcome::HungUp);
        assert_eq!(of(&with_stream(live.clone(), StreamOutcome::Hangup, None, 8)), Outcome::Missed);
        let mut silent = with_stream(live.clone(), StreamOutcome::Message, Some(9_000), 20);
        if let Some(r) = silent.stream.as_mut().and_then(|s| s.recording.as_mut()) {
            r.voiced_ms = Some(120);
        }
        assert_eq!(of(&silent), Outcome::Missed, "9 s of silence after the beep is no message");
        assert_eq!(of(&with_stream(live.clone(), StreamOutcome::Error, None, 8)), Outcome::Missed);
        assert_eq!(of(&with_stream(live.clone(), StreamOutcome::Relayed, None, 60)), Outcome::Relayed);
        assert_eq!(
            of(&with_stream(live.clone(), StreamOutcome::FrontDesk, Some(1_000), 6)),
            Outcome::Live,
            "the call goes on to the front desk"
        );
        let after_dial = with_stream(call("completed", 70), StreamOutcome::FrontDesk, Some(1_000), 6);
        assert_eq!(of(&after_dial), Outcome::FrontDesk, "a 1 s recording before 0 is not a voicemail");
    }

    #[test]
    fn names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
