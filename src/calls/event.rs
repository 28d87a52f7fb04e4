//! What happened to a call: the typed events the call log is made of.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Twilio's `CallStatus`, plus any value Twilio may add later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// Waiting before going out.
    Queued,
    /// Twilio started dialing.
    Initiated,
    /// Ringing.
    Ringing,
    /// Answered and active.
    InProgress,
    /// Answered and ended normally.
    Completed,
    /// Busy signal.
    Busy,
    /// Could not be completed.
    Failed,
    /// Ended without answer.
    NoAnswer,
    /// Canceled while queued or ringing.
    Canceled,
    /// A value this version does not know; kept, but it never changes a call's status.
    Other(String),
}

impl CallStatus {
    /// Every status Twilio documents, in life-cycle order.
    pub const KNOWN: [CallStatus; 9] = [
        Self::Queued,
        Self::Initiated,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::Failed,
        Self::NoAnswer,
        Self::Canceled,
    ];

    /// Twilio's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::NoAnswer => "no-answer",
            Self::Canceled => "canceled",
            Self::Other(s) => s,
        }
    }

    /// Position in a call's life; a call never moves to a lower rank. `None` for unknown values.
    pub fn rank(&self) -> Option<u8> {
        Some(match self {
            Self::Queued => 0,
            Self::Initiated => 1,
            Self::Ringing => 2,
            Self::InProgress => 3,
            Self::Completed | Self::Busy | Self::Failed | Self::NoAnswer | Self::Canceled => 4,
            Self::Other(_) => return None,
        })
    }

    /// True once the call is over.
    pub fn is_final(&self) -> bool {
        self.rank() == Some(4)
    }

    /// True for a call nobody talked to (busy, no answer, failed, canceled).
    pub fn is_missed(&self) -> bool {
        matches!(self, Self::Busy | Self::NoAnswer | Self::Failed | Self::Canceled)
    }
}

impl FromStr for CallStatus {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::KNOWN.iter().find(|k| k.as_str() == s).cloned().unwrap_or_else(|| Self::Other(s.to_owned())))
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CallStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSource {
    /// The incoming-call webhook (the call arrived).
    IncomingCall,
    /// A call status callback.
    StatusCallback,
    /// A `<Stream>` status callback (stream-started / stream-stopped / stream-error).
    StreamStatus,
    /// The media stream itself (the WebSocket session).
    MediaStream,
    /// The `<Dial action>` of the front desk: whether somebody picked up.
    DialResult,
    /// The owner dealt with the call on the dashboard (heard it, called back, a note; see
    /// [`crate::calls::follow_up`]).
    Owner,
}

/// The names of the details a media-stream event carries (the stored and exported form is
/// this string map, so records written by any version read the same).
pub mod detail {
    /// The session's step, a [`super::MediaEvent`].
    pub const MEDIA_EVENT: &str = "MediaEvent";
    /// How the stream ended, a [`super::StreamOutcome`] (on `stopped`).
    pub const OUTCOME: &str = "Outcome";
    /// The flow that ran (`voicemail` or `relay`).
    pub const FLOW: &str = "Flow";
    /// Twilio's StreamSid.
    pub const STREAM_SID: &str = "StreamSid";
    /// The voicemail's path under `storage.dir` (on `stopped`).
    pub const RECORDING: &str = "Recording";
    /// Why the relay fell back to voicemail.
    pub const FAILOVER: &str = "Failover";
    /// What went wrong.
    pub const ERROR: &str = "Error";
    /// Where the incoming call was sent: `front-desk` or `box` (with `[hours]`).
    pub const ROUTE: &str = "Route";
    /// Why, in words: `open: thu 08:00-17:30`, `closed: 2026-12-25 is a closed date`.
    pub const ROUTE_REASON: &str = "RouteReason";
    /// Twilio's `DialCallStatus` on a dial result: completed, answered, busy, no-answer, failed, canceled.
    pub const DIAL_STATUS: &str = "DialCallStatus";
    /// What the owner did, on an owner event: a [`crate::calls::follow_up::Action`].
    pub const ACTION: &str = "Action";
    /// The owner's note, on an owner `note` event.
    pub const NOTE: &str = "Note";
}

/// A step of a media session, as its event records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaEvent {
    /// Twilio's `start` arrived and was admitted.
    Started,
    /// The caller is being heard: recording began, or the relay connected.
    Answered,
    /// The relay failed and the call went to voicemail.
    Failover,
    /// The session ended (with an [`StreamOutcome`]).
    Stopped,
}

impl MediaEvent {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Answered => "answered",
            Self::Failover => "failover",
            Self::Stopped => "stopped",
        }
    }

    /// The step a stored name means; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Started, Self::Answered, Self::Failover, Self::Stopped].into_iter().find(|e| e.as_str() == name)
    }
}

/// How a media stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamOutcome {
    /// The caller left a voicemail.
    Message,
    /// The caller hung up without leaving one.
    Hangup,
    /// The caller pressed 0: Twilio goes on to the front desk.
    FrontDesk,
    /// The upstream agent had the call.
    Relayed,
    /// The stream failed (protocol error, lost socket, disk, shutdown).
    Error,
    /// The stream was not one the box takes.
    Refused,
}

impl StreamOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Hangup => "hangup",
            Self::FrontDesk => "front-desk",
            Self::Relayed => "relayed",
            Self::Error => "error",
            Self::Refused => "refused",
        }
    }

    /// The outcome a stored name means; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Message, Self::Hangup, Self::FrontDesk, Self::Relayed, Self::Error, Self::Refused]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for StreamOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened to a call, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    /// The call.
    pub call_sid: String,
    /// Which webhook or session produced it.
    pub source: EventSource,
    /// The call status it reports, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CallStatus>,
    /// Twilio's `SequenceNumber` (status callbacks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Twilio's `Timestamp`, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_timestamp: Option<String>,
    /// When the box received it.
    pub received_at: Timestamp,
    /// Caller (`From`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Called number (`To`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `Direction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// `CallDuration` in seconds (final callbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// What makes a retried delivery of the same event recognisable.
    pub dedupe_key: String,
    /// Other fields worth keeping (CallerName, SipResponseCode, StreamSid, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl CallEvent {
    /// A detail's value (see [`detail`] for a media stream's).
    pub fn detail(&self, name: &str) -> Option<&str> {
        self.details.get(name).map(String::as_str)
    }

    /// The media session's step, on a media-stream event.
    pub fn media_event(&self) -> Option<MediaEvent> {
        self.detail(detail::MEDIA_EVENT).and_then(MediaEvent::parse)
    }

    /// How the stream ended, on a media session's `stopped` event.
    pub fn stream_outcome(&self) -> Option<StreamOutcome> {
        self.detail(detail::OUTCOME).and_then(StreamOutcome::parse)
    }

    /// The moment the event happened: Twilio's timestamp when it sent a readable one, else
    /// the box's receipt time.
    pub fn occurred_at(&self) -> Timestamp {
        self.twilio_timestamp.as_deref().and_then(parse_twilio_time).unwrap_or(self.received_at)
    }
}

/// Parses Twilio's timestamps: RFC 2822 on call callbacks, ISO 8601 on stream callbacks.
pub fn parse_twilio_time(s: &str) -> Option<Timestamp> {
    if let Ok(z) = jiff::fmt::rfc2822::parse(s) {
        return Some(z.timestamp());
    }
    s.parse::<Timestamp>().ok()
}

/// A call event for unit tests elsewhere in the crate: an inbound call from +15035550123 to
/// +15035550100, received now, with a dedupe key that differs by source and details.
#[cfg(test)]
pub(crate) fn test_event(
    sid: &str,
    source: EventSource,
    status: Option<CallStatus>,
    details: &[(&str, &str)],
) -> CallEvent {
    CallEvent {
        call_sid: sid.into(),
        source,
        status,
        sequence: None,
        twilio_timestamp: None,
        received_at: Timestamp::now(),
        from: Some("+15035550123".into()),
        to: Some("+15035550100".into()),
        direction: Some("inbound".into()),
        duration_secs: None,
        dedupe_key: format!("{source:?}{details:?}"),
        details: details.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_and_rank() {
        for s in CallStatus::KNOWN {
            assert_eq!(s.as_str().parse::<CallStatus>().unwrap(), s);
            assert!(s.rank().is_some());
        }
        assert_eq!("answered".parse::<CallStatus>().unwrap(), CallStatus::Other("answered".into()));
        assert!(CallStatus::Completed.rank() > CallStatus::Ringing.rank());
    }

    #[test]
    fn twilio_times_parse() {
        let t = parse_twilio_time("Tue, 01 Sep 2026 17:04:05 +0000").unwrap();
        assert_eq!(t.to_string(), "2026-09-01T17:04:05Z");
        assert!(parse_twilio_time("2026-09-01T17:04:05.123Z").is_some());
        assert!(parse_twilio_time("yesterday").is_none());
    }
}
