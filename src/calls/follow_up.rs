//! What the owner did about a call: heard its voicemail, called the caller back, marked it
//! done, wrote a note. Each step is an owner event in the call's own log, stored, replayed and
//! announced like Twilio's, so the message light, the banner's count and the call-back list
//! are worked out from the log and mean the same after a restart or a power cut.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::event::{CallEvent, EventSource, detail};
use super::record::CallRecord;
use super::store::{Store, StoreError};

/// Longest note kept, in characters (a line or two on a phone).
pub const MAX_NOTE_CHARS: usize = 500;
/// Calls looked at, newest first, for what still waits for the owner.
const RECENT_CALLS: usize = 2000;

/// One thing the owner did about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Listened to the voicemail, or saw the missed call (the message light goes out for it).
    Heard,
    /// Called the caller back: off the call-back list.
    CalledBack,
    /// Nothing more to do (dealt with some other way): off the call-back list.
    Done,
    /// Back on the call-back list (pressed by mistake, or the caller did not pick up).
    Reopen,
    /// Set the call's note (empty clears it).
    Note,
}

impl Action {
    const ALL: [Action; 5] = [Self::Heard, Self::CalledBack, Self::Done, Self::Reopen, Self::Note];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Heard => "heard",
            Self::CalledBack => "called-back",
            Self::Done => "done",
            Self::Reopen => "reopen",
            Self::Note => "note",
        }
    }

    /// The action a name means.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The action the owner's request names, or why it names none.
    pub fn named(name: &str) -> Result<Self, FollowUpError> {
        Self::parse(name).ok_or_else(|| FollowUpError::UnknownAction(name.to_owned()))
    }
}

/// Where the owner is with a call, as its owner events say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// When the owner first heard the voicemail (or saw the missed call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_at: Option<Timestamp>,
    /// When the owner called back (the latest time, unless reopened since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_back_at: Option<Timestamp>,
    /// When the owner marked it done (unless reopened since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<Timestamp>,
    /// The owner's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FollowUp {
    /// Nothing done yet.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Called back or marked done.
    pub fn dealt_with(&self) -> bool {
        self.called_back_at.is_some() || self.done_at.is_some()
    }

    /// The state a call's owner events (in timeline order) leave it in.
    pub fn of(events: &[CallEvent]) -> Self {
        let mut f = Self::default();
        for e in events.iter().filter(|e| e.source == EventSource::Owner) {
            let at = e.received_at;
            match e.detail(detail::ACTION).and_then(Action::parse) {
                Some(Action::Heard) => {
                    f.heard_at.get_or_insert(at);
                }
                Some(Action::CalledBack) => {
                    f.called_back_at = Some(at);
                    // Talking to the caller is hearing about the call.
                    f.heard_at.get_or_insert(at);
                }
                Some(Action::Done) => {
                    f.done_at = Some(at);
                    f.heard_at.get_or_insert(at);
                }
                Some(Action::Reopen) => {
                    f.called_back_at = None;
                    f.done_at = None;
                }
                Some(Action::Note) => f.note = e.detail(detail::NOTE).filter(|n| !n.is_empty()).map(str::to_owned),
                None => {}
            }
        }
        f
    }
}

/// Why an owner's step was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FollowUpError {
    /// Not one of the actions.
    #[error("unknown action {0:?}: expected heard, called-back, done, reopen or note")]
    UnknownAction(String),
    /// A note over [`MAX_NOTE_CHARS`].
    #[error("the note has {0} characters; at most {MAX_NOTE_CHARS} are kept")]
    NoteTooLong(usize),
    /// A note on an action other than `note`.
    #[error("only the note action takes a note")]
    UnexpectedNote,
}

/// The owner event for `action` (with `note` for [`Action::Note`]) on `call_sid` at `now`.
pub fn event(call_sid: &str, action: Action, note: Option<&str>, now: Timestamp) -> Result<CallEvent, FollowUpError> {
    let mut details = std::collections::BTreeMap::from([(detail::ACTION.to_owned(), action.as_str().to_owned())]);
    match (action, note) {
        (Action::Note, note) => {
            let note = note.unwrap_or_default().trim();
            let chars = note.chars().count();
            if chars > MAX_NOTE_CHARS {
                return Err(FollowUpError::NoteTooLong(chars));
            }
            details.insert(detail::NOTE.to_owned(), note.to_owned());
        }
        (_, Some(n)) if !n.trim().is_empty() => return Err(FollowUpError::UnexpectedNote),
        _ => {}
    }
    Ok(CallEvent {
        call_sid: call_sid.to_owned(),
        source: EventSource::Owner,
        status: None,
        sequence: None,
        twilio_timestamp: None,
        received_at: now,
        from: None,
        to: None,
        direction: None,
        duration_secs: None,
        // Every press is its own step (pressing "called back" twice is two calls back).
        dedupe_key: format!("owner:{}:{}", action.as_str(), crate::random::hex::<8>()),
        details,
    })
}

/// Whether the call lights the message light: a voicemail or a missed call the owner has
/// neither heard nor dealt with.
pub fn waits(record: &CallRecord) -> bool {
    record.outcome.wants_call_back() && record.follow_up.heard_at.is_none() && !record.follow_up.dealt_with()
}

/// Whether the call is on the call-back list: a voicemail or a missed call not yet called back
/// or marked done (hearing a voicemail is not calling the caller back).
pub fn to_call_back(record: &CallRecord) -> bool {
    record.outcome.wants_call_back() && !record.follow_up.dealt_with()
}

/// The calls that light the message light, newest first.
pub fn waiting(store: &Store) -> Result<Vec<CallRecord>, StoreError> {
    recent(store, waits)
}

/// The call-back list, newest first.
pub fn call_back_list(store: &Store) -> Result<Vec<CallRecord>, StoreError> {
    recent(store, to_call_back)
}

fn recent(store: &Store, keep: fn(&CallRecord) -> bool) -> Result<Vec<CallRecord>, StoreError> {
    Ok(store.list(RECENT_CALLS, None)?.into_iter().filter(keep).collect())
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::calls::event::test_event;

    fn owner(action: &str, note: Option<&str>, secs: i64) -> CallEvent {
        let at = Timestamp::from_second(1_800_000_000 + secs).unwrap();
        event("CA1", Action::named(action).unwrap(), note, at).unwrap()
    }

    #[test]
    fn steps_add_up_in_order() {
        let mut events = vec![owner("heard", None, 1), owner("heard", None, 5)];
        assert_eq!(FollowUp::of(&events).heard_at, Some(events[0].received_at), "first hearing counts");
        events.push(owner("called-back", None, 10));
        events.push(owner("note", Some("  wants a quote for brakes "), 11));
        let f = FollowUp::of(&events);
        assert!(f.dealt_with());
        assert_eq!(f.note.as_deref(), Some("wants a quote for brakes"));
        events.push(owner("reopen", None, 20));
        events.push(owner("note", Some(""), 21));
        let f = FollowUp::of(&events);
        assert_eq!((f.dealt_with(), f.note, f.heard_at.is_some()), (false, None, true));
        events.push(owner("done", None, 30));
        assert_eq!(FollowUp::of(&events).done_at, Some(events[6].received_at));
        // Twilio's own events leave it alone.
        let twilio = test_event("CA1", EventSource::StatusCallback, None, &[(detail::ACTION, "done")]);
        assert!(FollowUp::of(&[twilio]).is_empty());
    }

    #[test]
    fn bad_steps_are_named() {
        let now = Timestamp::now();
        assert_eq!(Action::named("deleted").unwrap_err(), FollowUpError::UnknownAction("deleted".into()));
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        assert_eq!(event("CA1", Action::Note, Some(&long), now).unwrap_err(), FollowUpError::NoteTooLong(501));
        assert_eq!(event("CA1", Action::Done, Some("hi"), now).unwrap_err(), FollowUpError::UnexpectedNote);
        let e = event("CA1", Action::CalledBack, None, now + SignedDuration::from_secs(1)).unwrap();
        assert_ne!(e.dedupe_key, event("CA1", Action::CalledBack, None, now).unwrap().dedupe_key);
    }
}
