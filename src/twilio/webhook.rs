//! Twilio's webhook forms turned into typed [`CallEvent`]s.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::calls::{CallEvent, EventSource};
use crate::twilio::{form, sid};

/// Params kept on an event besides the ones with their own field.
const KEPT_DETAILS: &[&str] = &[
    "CallerName",
    "ForwardedFrom",
    "FromCity",
    "FromState",
    "FromCountry",
    "ParentCallSid",
    "SipResponseCode",
    "AnsweredBy",
    "StirVerstat",
    "StreamSid",
    "StreamName",
    "StreamEvent",
    "StreamError",
    "Duration",
    "DialCallStatus",
    "DialCallDuration",
    "DialCallSid",
];

/// Longest value kept from any param; Twilio's are far shorter.
const MAX_VALUE_LEN: usize = 1024;

/// Why a webhook form is not a usable event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookError {
    /// A required param is absent or empty.
    #[error("missing required param {0}")]
    Missing(&'static str),
    /// A param is named twice; Twilio never does that.
    #[error("param {0} appears more than once")]
    Duplicate(String),
    /// A param has a value that cannot be Twilio's.
    #[error("param {name} is invalid: {why}")]
    Invalid {
        /// The param.
        name: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The incoming-call webhook: the call has arrived and needs TwiML.
pub fn incoming_call(fields: &[(String, String)], now: Timestamp) -> Result<CallEvent, WebhookError> {
    let mut event = base_event(fields, EventSource::IncomingCall, now)?;
    // Twilio may retry the voice URL after a connect failure; the call arrives once.
    event.dedupe_key = "incoming".into();
    Ok(event)
}

/// A call status callback.
pub fn status_callback(fields: &[(String, String)], now: Timestamp) -> Result<CallEvent, WebhookError> {
    let mut event = base_event(fields, EventSource::StatusCallback, now)?;
    if event.status.is_none() {
        return Err(WebhookError::Missing("CallStatus"));
    }
    // A retried callback carries the same SequenceNumber. Without one, the event is known by
    // everything Twilio signed: a replay of the same request is the same event whatever its
    // `I-Twilio-Idempotency-Token` header says (the signature does not cover headers, so a
    // fresh token per replay would otherwise add the event again and again).
    event.dedupe_key = match event.sequence {
        Some(seq) => format!("status:{seq}"),
        None => format!("status:form:{}", form_digest(fields)),
    };
    Ok(event)
}

/// A digest of a form's fields, independent of their order.
fn form_digest(fields: &[(String, String)]) -> String {
    use sha1::Digest;
    let mut sorted: Vec<&(String, String)> = fields.iter().collect();
    sorted.sort();
    let mut hasher = sha1::Sha1::new();
    for (name, value) in sorted {
        // Length-prefixed, so that moving bytes between a name and a value changes the digest.
        for part in [name, value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(&hasher.finalize()[..10])
}

/// The front desk's `<Dial action>`: Twilio says whether anybody picked up.
pub fn dial_result(fields: &[(String, String)], now: Timestamp) -> Result<CallEvent, WebhookError> {
    let mut event = base_event(fields, EventSource::DialResult, now)?;
    let status =
        form::get(fields, "DialCallStatus").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("DialCallStatus"))?;
    if !matches!(status, "completed" | "answered" | "busy" | "no-answer" | "failed" | "canceled") {
        return Err(WebhookError::Invalid { name: "DialCallStatus", why: "not one of Twilio's dial statuses" });
    }
    // The action is requested once per <Dial>; a retry of it is the same event.
    event.dedupe_key = "dial".into();
    Ok(event)
}

/// A `<Stream statusCallback>` request.
pub fn stream_status(fields: &[(String, String)], now: Timestamp) -> Result<CallEvent, WebhookError> {
    let mut event = base_event(fields, EventSource::StreamStatus, now)?;
    // Stream callbacks carry no CallStatus; their own kind of event is StreamEvent.
    event.status = None;
    let stream_sid =
        form::get(fields, "StreamSid").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("StreamSid"))?;
    let what =
        form::get(fields, "StreamEvent").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("StreamEvent"))?;
    event.dedupe_key = format!("stream:{stream_sid}:{what}");
    Ok(event)
}

/// A text's delivery news, from its `StatusCallback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatus {
    /// `SM…`.
    pub message_sid: String,
    /// `queued`, `sent`, `delivered`, `undelivered`, `failed`, …
    pub status: String,
    /// Twilio's `ErrorCode`, on failures.
    pub error_code: Option<u32>,
}

/// A text a customer sent to the shop's number (the number's messaging webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingSms {
    /// `SM…`/`MM…`.
    pub message_sid: String,
    /// The customer.
    pub from: String,
    /// The shop's number.
    pub to: String,
    /// The text (clipped to 1,600 characters, Twilio's own limit).
    pub body: String,
    /// Media attached (MMS).
    pub num_media: u32,
}

/// A messaging form's `MessageSid`, once the form is one Twilio could have sent.
fn message_sid(fields: &[(String, String)]) -> Result<&str, WebhookError> {
    no_duplicates(fields)?;
    let message_sid =
        form::get(fields, "MessageSid").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("MessageSid"))?;
    if !sid::is_message_sid(message_sid) {
        return Err(WebhookError::Invalid {
            name: "MessageSid",
            why: "not SM or MM followed by 32 lowercase hex digits",
        });
    }
    Ok(message_sid)
}

/// A form that names a field twice is refused rather than read one way or the other.
fn no_duplicates(fields: &[(String, String)]) -> Result<(), WebhookError> {
    let mut names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(WebhookError::Duplicate(w[0].to_owned())),
        None => Ok(()),
    }
}

/// The messaging webhook.
pub fn incoming_sms(fields: &[(String, String)]) -> Result<IncomingSms, WebhookError> {
    let message_sid = message_sid(fields)?;
    if let Some(account) = form::get(fields, "AccountSid").filter(|s| !s.is_empty())
        && !sid::is_account_sid(account)
    {
        return Err(WebhookError::Invalid { name: "AccountSid", why: "not AC followed by 32 lowercase hex digits" });
    }
    let from = form::get(fields, "From").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("From"))?;
    let to = form::get(fields, "To").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("To"))?;
    let num_media = match form::get(fields, "NumMedia").filter(|v| !v.is_empty()) {
        Some(v) => v.parse::<u32>().map_err(|_| WebhookError::Invalid { name: "NumMedia", why: "not a number" })?,
        None => 0,
    };
    let body: String = form::get(fields, "Body").unwrap_or("").chars().take(1600).collect();
    Ok(IncomingSms { message_sid: message_sid.to_owned(), from: clip(from), to: clip(to), body, num_media })
}

/// A message status callback.
pub fn message_status(fields: &[(String, String)]) -> Result<MessageStatus, WebhookError> {
    let message_sid = message_sid(fields)?;
    let status = form::get(fields, "MessageStatus")
        .or_else(|| form::get(fields, "SmsStatus"))
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::Missing("MessageStatus"))?;
    if status.len() > 32 || !status.bytes().all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_') {
        return Err(WebhookError::Invalid { name: "MessageStatus", why: "not a status word" });
    }
    let error_code = match form::get(fields, "ErrorCode").filter(|v| !v.is_empty()) {
        Some(v) => {
            Some(v.parse::<u32>().map_err(|_| WebhookError::Invalid { name: "ErrorCode", why: "not a number" })?)
        }
        None => None,
    };
    Ok(MessageStatus { message_sid: message_sid.to_owned(), status: status.to_owned(), error_code })
}

fn base_event(fields: &[(String, String)], source: EventSource, now: Timestamp) -> Result<CallEvent, WebhookError> {
    let call_sid = form::get(fields, "CallSid").filter(|s| !s.is_empty()).ok_or(WebhookError::Missing("CallSid"))?;
    validate_ids(fields, call_sid)?;
    let text = |name: &str| form::get(fields, name).filter(|v| !v.is_empty()).map(clip);
    let sequence = match form::get(fields, "SequenceNumber").filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| WebhookError::Invalid { name: "SequenceNumber", why: "not a whole number" })?,
        ),
        None => None,
    };
    let duration_secs = match form::get(fields, "CallDuration").filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| WebhookError::Invalid { name: "CallDuration", why: "not a whole number of seconds" })?,
        ),
        None => None,
    };
    let details: BTreeMap<String, String> =
        KEPT_DETAILS.iter().filter_map(|k| text(k).map(|v| ((*k).to_owned(), v))).collect();
    Ok(CallEvent {
        call_sid: call_sid.to_owned(),
        source,
        status: text("CallStatus").map(|s| s.parse().unwrap_or_else(|never| match never {})),
        sequence,
        twilio_timestamp: text("Timestamp"),
        received_at: now,
        from: text("From"),
        to: text("To"),
        direction: text("Direction"),
        duration_secs,
        dedupe_key: String::new(),
        details,
    })
}

/// Twilio's signature joins names and values with no separator, so one captured request can
/// be re-cut into others with the same signature (`CallSid=CA…CallStatusringing` merges two
/// fields). Only Twilio's exact shapes are taken, and a form that names a field twice is
/// refused rather than read one way or the other.
fn validate_ids(fields: &[(String, String)], call_sid: &str) -> Result<(), WebhookError> {
    no_duplicates(fields)?;
    if !sid::is_call_sid(call_sid) {
        return Err(WebhookError::Invalid { name: "CallSid", why: "not CA followed by 32 lowercase hex digits" });
    }
    if let Some(account) = form::get(fields, "AccountSid").filter(|s| !s.is_empty())
        && !sid::is_account_sid(account)
    {
        return Err(WebhookError::Invalid { name: "AccountSid", why: "not AC followed by 32 lowercase hex digits" });
    }
    if let Some(stream) = form::get(fields, "StreamSid").filter(|s| !s.is_empty())
        && !sid::is_stream_sid(stream)
    {
        return Err(WebhookError::Invalid { name: "StreamSid", why: "not MZ followed by 32 lowercase hex digits" });
    }
    Ok(())
}

fn clip(v: &str) -> String {
    if v.len() <= MAX_VALUE_LEN {
        return v.to_owned();
    }
    let mut end = MAX_VALUE_LEN;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallStatus;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn status_callback_fields() {
        let e = status_callback(
            &f(&[
                ("CallSid", SID),
                ("CallStatus", "completed"),
                ("SequenceNumber", "3"),
                ("CallDuration", "37"),
                ("SipResponseCode", "200"),
            ]),
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(e.status, Some(CallStatus::Completed));
        assert_eq!(e.sequence, Some(3));
        assert_eq!(e.duration_secs, Some(37));
        assert_eq!(e.dedupe_key, "status:3");
        assert_eq!(e.details.get("SipResponseCode").map(String::as_str), Some("200"));
    }

    #[test]
    fn a_replayed_callback_without_sequence_is_the_same_event_in_any_field_order() {
        let now = Timestamp::UNIX_EPOCH;
        let fields = [("CallSid", SID), ("CallStatus", "ringing"), ("Timestamp", "Tue, 01 Sep 2026 17:04:05 +0000")];
        let mut reordered = fields;
        reordered.reverse();
        let a = status_callback(&f(&fields), now).unwrap();
        assert_eq!(a.dedupe_key, status_callback(&f(&reordered), now).unwrap().dedupe_key);
        // Moving text from a value into the next name is a different request.
        let shifted = [("CallSid", "CA1C"), ("allStatus", "ringing"), ("Timestamp", "Tue, 01 Sep 2026 17:04:05 +0000")];
        assert_ne!(form_digest(&f(&fields)), form_digest(&f(&shifted)));
        let later = [("CallSid", SID), ("CallStatus", "ringing"), ("Timestamp", "Tue, 01 Sep 2026 17:04:06 +0000")];
        assert_ne!(a.dedupe_key, status_callback(&f(&later), now).unwrap().dedupe_key);
    }

    #[test]
    fn a_captured_request_cannot_be_recut_into_another() {
        let now = Timestamp::UNIX_EPOCH;
        // The same bytes Twilio signed, cut so that CallSid swallows the next field.
        let merged = format!("{SID}CallStatusringing");
        assert!(matches!(
            status_callback(&f(&[("CallSid", merged.as_str()), ("CallStatus", "completed")]), now),
            Err(WebhookError::Invalid { name: "CallSid", .. })
        ));
        for bad in ["CA1", "CA0123456789ABCDEF0123456789ABCDEF", "CAxyz"] {
            assert!(matches!(incoming_call(&f(&[("CallSid", bad)]), now), Err(WebhookError::Invalid { .. })), "{bad}");
        }
        assert_eq!(
            incoming_call(&f(&[("CallSid", SID), ("From", "+1"), ("From", "+2")]), now).unwrap_err(),
            WebhookError::Duplicate("From".into())
        );
        assert!(matches!(
            incoming_call(&f(&[("CallSid", SID), ("AccountSid", "ACnope")]), now),
            Err(WebhookError::Invalid { name: "AccountSid", .. })
        ));
    }

    #[test]
    fn refusals() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            status_callback(&f(&[("CallStatus", "ringing")]), now).unwrap_err(),
            WebhookError::Missing("CallSid")
        );
        assert_eq!(status_callback(&f(&[("CallSid", SID)]), now).unwrap_err(), WebhookError::Missing("CallStatus"));
        assert!(matches!(incoming_call(&f(&[("CallSid", "CA 1")]), now), Err(WebhookError::Invalid { .. })));
        assert!(matches!(
            status_callback(&f(&[("CallSid", SID), ("CallStatus", "ringing"), ("SequenceNumber", "x")]), now),
            Err(WebhookError::Invalid { name: "SequenceNumber", .. })
        ));
    }
}
