//! Which media streams the box takes. A stream's `start` names its call, and the upgrade's
//! signature covers only the fixed URL, so anyone holding one captured handshake could name
//! any call. A stream is taken only for a call the box itself answered with TwiML a short
//! while ago, that has had no stream yet and has none open now; anything else is refused
//! before it touches the call log.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::calls::{CallRecord, EventSource, Store, StoreError};
use crate::twilio::media::Start;
use crate::twilio::sid;

/// How long after the incoming-call webhook the call's stream may still open. Twilio opens it
/// within seconds of fetching the TwiML (after the optional `<Say>` greeting), so this is
/// generous for a long greeting on a slow line; yet a captured handshake with the CallSid of
/// a call whose stream never opened (the caller hung up during the greeting) is useless soon
/// after.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Characters of a refused SID shown in the log: enough to recognise it, never a flood.
const SHOWN_CHARS: usize = 40;

/// Why a stream was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The `start` names something that is not a CallSid.
    #[error("CallSid {0} is not a Twilio CallSid (CA and 32 hex digits)")]
    BadCallSid(String),
    /// The `start` names something that is not a StreamSid.
    #[error("StreamSid {0} is not a Twilio StreamSid (MZ and 32 hex digits)")]
    BadStreamSid(String),
    /// The box never answered this call.
    #[error("the box did not answer call {0} (no incoming-call webhook for it)")]
    UnknownCall(String),
    /// The box answered the call too long ago for its stream to open only now.
    #[error("call {call_sid} was answered {} s ago, more than the {} s a stream may take to open", age.as_secs(), ANSWER_WINDOW.as_secs())]
    Stale {
        /// The call.
        call_sid: String,
        /// Since the incoming-call webhook.
        age: Duration,
    },
    /// The call is over.
    #[error("call {0} has already ended")]
    Ended(String),
    /// The call had its stream; Twilio opens one per call.
    #[error("call {call_sid} already had media stream {stream_sid}")]
    AlreadyStreamed {
        /// The call.
        call_sid: String,
        /// Its stream.
        stream_sid: String,
    },
    /// Another socket is streaming this call right now.
    #[error("call {0} has a media stream open already")]
    Live(String),
    /// The call log could not be read, so the call cannot be checked.
    #[error("cannot look call {0} up in the call log: {1}")]
    Store(String, #[source] StoreError),
}

impl Refusal {
    /// The close code the socket is closed with: policy for a stream the box will not take,
    /// internal error when the box could not tell.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Store(..) => CloseCode::Error,
            _ => CloseCode::Policy,
        }
    }
}

/// The calls that have a session open now (in memory: two sockets for one call may race
/// before either has written to the call log).
#[derive(Debug, Default)]
pub(super) struct LiveCalls(Arc<Mutex<HashSet<String>>>);

/// A session's hold on its call; dropping it lets the call go.
#[derive(Debug)]
pub(super) struct Claim {
    calls: Arc<Mutex<HashSet<String>>>,
    call_sid: String,
}

impl LiveCalls {
    fn claim(&self, call_sid: &str) -> Option<Claim> {
        // A set of strings: a panic elsewhere cannot leave it inconsistent.
        let mut calls = crate::sync::lock(&self.0);
        calls.insert(call_sid.to_owned()).then(|| Claim { calls: self.0.clone(), call_sid: call_sid.to_owned() })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        crate::sync::lock(&self.calls).remove(&self.call_sid);
    }
}

/// Checks a stream's `start`; on success the session holds the returned claim for its life.
pub(super) fn admit(live: &LiveCalls, store: &Store, start: &Start, now: Timestamp) -> Result<Claim, Refusal> {
    if !sid::is_call_sid(&start.call_sid) {
        return Err(Refusal::BadCallSid(shown(&start.call_sid)));
    }
    if !sid::is_stream_sid(&start.stream_sid) {
        return Err(Refusal::BadStreamSid(shown(&start.stream_sid)));
    }
    // Claimed before the call log is read: of two sockets racing for one call, the second
    // finds the claim instead of a log the first has not written to yet.
    let claim = live.claim(&start.call_sid).ok_or_else(|| Refusal::Live(start.call_sid.clone()))?;
    let record = store.get(&start.call_sid).map_err(|e| Refusal::Store(start.call_sid.clone(), e))?;
    check(record.as_ref(), &start.call_sid, now)?;
    Ok(claim)
}

/// The call-log side of [`admit`].
fn check(record: Option<&CallRecord>, call_sid: &str, now: Timestamp) -> Result<(), Refusal> {
    let Some(record) = record else { return Err(Refusal::UnknownCall(call_sid.to_owned())) };
    let answered = record.events.iter().filter(|e| e.source == EventSource::IncomingCall).map(|e| e.received_at).max();
    let Some(answered) = answered else { return Err(Refusal::UnknownCall(call_sid.to_owned())) };
    // A clock stepped back makes the age negative: that is recent, not stale.
    let age = Duration::try_from(now.duration_since(answered)).unwrap_or_default();
    if age > ANSWER_WINDOW {
        return Err(Refusal::Stale { call_sid: call_sid.to_owned(), age });
    }
    if let Some(stream) = &record.stream {
        return Err(Refusal::AlreadyStreamed { call_sid: call_sid.to_owned(), stream_sid: stream.stream_sid.clone() });
    }
    if record.is_over() {
        return Err(Refusal::Ended(call_sid.to_owned()));
    }
    Ok(())
}

/// A SID from the network as the log may show it: quoted, escaped and cut short.
fn shown(s: &str) -> String {
    let quoted = format!("{s:?}");
    if quoted.chars().count() <= SHOWN_CHARS {
        return quoted;
    }
    let cut: String = quoted.chars().take(SHOWN_CHARS).collect();
    format!("{cut}… ({} bytes)", s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::test_event;
    use crate::calls::{CallStatus, StreamInfo};

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn answered(ago: Duration) -> CallRecord {
        let mut event = test_event(SID, EventSource::IncomingCall, Some(CallStatus::Ringing), &[]);
        event.received_at = Timestamp::now() - ago;
        CallRecord::new(&event)
    }

    #[test]
    fn a_recent_call_without_a_stream_is_taken() {
        assert!(check(Some(&answered(Duration::from_secs(3))), SID, Timestamp::now()).is_ok());
        let just_inside = ANSWER_WINDOW - Duration::from_secs(5);
        assert!(check(Some(&answered(just_inside)), SID, Timestamp::now()).is_ok());
    }

    #[test]
    fn unknown_stale_streamed_or_ended_calls_are_refused() {
        let now = Timestamp::now();
        assert!(matches!(check(None, SID, now), Err(Refusal::UnknownCall(_))));
        let status_only = CallRecord::new(&test_event(SID, EventSource::StatusCallback, None, &[]));
        assert!(matches!(check(Some(&status_only), SID, now), Err(Refusal::UnknownCall(_))));
        let stale = answered(ANSWER_WINDOW + Duration::from_secs(5));
        assert!(matches!(check(Some(&stale), SID, now), Err(Refusal::Stale { .. })));
        let mut streamed = answered(Duration::from_secs(3));
        streamed.stream = Some(StreamInfo { stream_sid: "MZ1".into(), ..StreamInfo::default() });
        assert!(matches!(check(Some(&streamed), SID, now), Err(Refusal::AlreadyStreamed { .. })));
        let mut ended = answered(Duration::from_secs(3));
        ended.apply(test_event(SID, EventSource::StatusCallback, Some(CallStatus::Completed), &[]));
        assert!(matches!(check(Some(&ended), SID, now), Err(Refusal::Ended(_))));
    }

    #[test]
    fn one_claim_per_call_until_it_is_dropped() {
        let live = LiveCalls::default();
        let first = live.claim(SID).unwrap();
        assert!(live.claim(SID).is_none());
        assert!(live.claim("CAffffffffffffffffffffffffffffffff").is_some());
        drop(first);
        assert!(live.claim(SID).is_some());
        assert!(live.0.lock().unwrap().is_empty(), "dropped claims leave nothing behind");
    }

    #[test]
    fn refused_sids_are_shown_escaped_and_short() {
        assert_eq!(shown("CA1/"), r#""CA1/""#);
        assert_eq!(shown("a\0b"), r#""a\0b""#);
        let long = shown(&"x".repeat(5000));
        assert!(long.len() < 70 && long.ends_with("(5000 bytes)"), "{long}");
    }
}
