//! One outgoing text, as the outbox keeps it in the call log, and the rules of its life.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Key prefix of outgoing texts in the call log's documents.
pub const KEY_PREFIX: &str = "msg/";
/// Key prefix of opted-out numbers.
const OPT_OUT_PREFIX: &str = "optout/";
/// Key prefix of texts customers sent to the shop.
pub const INBOUND_PREFIX: &str = "sms-in/";

/// Why a text is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// To the caller of a missed call (or of a voicemail, when configured).
    TextBack,
    /// To the owner: a missed call or a new voicemail.
    OwnerAlert,
    /// Written by the owner on the dashboard (an answer, "your car is ready").
    Reply,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TextBack => "text-back",
            Self::OwnerAlert => "owner-alert",
            Self::Reply => "reply",
        }
    }
}

/// Where a text is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting to be sent (first time, or again after a failure that may pass).
    Pending,
    /// The request is out; if the box stops now, nobody knows whether Twilio got it.
    Sending,
    /// Twilio took it (it has a `SM…` SID); delivery updates follow.
    Sent,
    /// The handset got it.
    Delivered,
    /// Twilio or the carrier could not deliver it (see the error code).
    Undelivered,
    /// Refused for good (Twilio's permanent error, or retried until [`GIVE_UP_AFTER`]).
    Failed,
    /// Decided not to send it (see `skipped`).
    Skipped,
}

impl State {
    /// True while the outbox still has work with it.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Sending)
    }

    /// True for a text the owner should hear about.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Undelivered | Self::Failed)
    }
}

/// A text that fails again and again is given up on after this long.
pub const GIVE_UP_AFTER: SignedDuration = SignedDuration::from_hours(24);
/// First wait before a retry; doubled each attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: SignedDuration = SignedDuration::from_secs(5);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: SignedDuration = SignedDuration::from_mins(15);

/// One outgoing text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its key in the call log, without [`KEY_PREFIX`]: the same decision always gets the same id,
    /// so deciding twice never sends twice.
    pub id: String,
    /// Why it is sent.
    pub kind: Kind,
    /// The call it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    /// The recipient.
    pub to: String,
    /// The sender: a number of the account or a Messaging Service SID; `None` when there was
    /// none to send from (then it is skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The text.
    pub body: String,
    /// When it was decided.
    pub created_at: Timestamp,
    /// Not sent before this (quiet hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Where it is.
    pub state: State,
    /// Requests made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due, after a failure that may pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Times the box stopped while a request was out (each may have sent it once more).
    #[serde(default)]
    pub interrupted: u32,
    /// Twilio's `SM…` SID, once it took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Twilio's last `MessageStatus` (queued, sent, delivered, undelivered, failed, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_status: Option<String>,
    /// Twilio's error code, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// The last error, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was not sent, for [`State::Skipped`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Message {
    /// A new text, to be sent at once (or at `not_before`).
    pub fn new(
        id: String,
        kind: Kind,
        call_sid: Option<&str>,
        to: &str,
        from: Option<&str>,
        body: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            kind,
            call_sid: call_sid.map(str::to_owned),
            to: to.to_owned(),
            from: from.map(str::to_owned),
            body,
            created_at: now,
            not_before: None,
            state: State::Pending,
            attempts: 0,
            retry_at: None,
            interrupted: 0,
            sid: None,
            twilio_status: None,
            error_code: None,
            error: None,
            skipped: None,
            updated_at: now,
        }
    }

    /// The same text, recorded as not sent, and why.
    pub fn skip(mut self, why: impl Into<String>) -> Self {
        self.state = State::Skipped;
        self.skipped = Some(why.into());
        self
    }

    /// Its key in the call log.
    pub fn key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.id)
    }

    /// When the outbox should next try it; `None` when there is nothing to do.
    pub fn due_at(&self) -> Option<Timestamp> {
        if self.state != State::Pending {
            return None;
        }
        Some(self.retry_at.into_iter().chain(self.not_before).max().unwrap_or(self.created_at))
    }

    /// Marks the request as going out now.
    pub fn sending(&mut self, now: Timestamp) {
        self.state = State::Sending;
        self.attempts += 1;
        self.updated_at = now;
    }

    /// After a restart: a request that was out may or may not have reached Twilio. It is sent
    /// again (at most once more per interruption), since a missed text costs the shop a
    /// customer and a second one costs a few cents.
    pub fn interrupted(&mut self, now: Timestamp) {
        if self.state == State::Sending {
            self.state = State::Pending;
            self.interrupted += 1;
            self.error = Some("the box stopped while sending; sent again, so the caller may get it twice".into());
            self.updated_at = now;
        }
    }

    /// Twilio took it.
    pub fn accepted(&mut self, sid: String, status: Option<String>, now: Timestamp) {
        self.state = State::Sent;
        self.sid = Some(sid);
        self.twilio_status = status;
        self.retry_at = None;
        self.error = None;
        self.error_code = None;
        self.updated_at = now;
    }

    /// A failure that may pass: retried with backoff, until [`GIVE_UP_AFTER`].
    pub fn retry_later(&mut self, code: Option<u32>, why: String, now: Timestamp) {
        self.error_code = code;
        self.updated_at = now;
        if now.duration_since(self.created_at) >= GIVE_UP_AFTER {
            self.state = State::Failed;
            self.error = Some(format!("gave up after {} attempts: {why}", self.attempts));
            return;
        }
        let doublings = self.attempts.saturating_sub(1).min(16);
        let backoff = FIRST_BACKOFF.checked_mul(1 << doublings).unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF);
        self.state = State::Pending;
        self.retry_at = Some(now.saturating_add(backoff).unwrap_or(now));
        self.error = Some(why);
    }

    /// A failure that will not pass.
    pub fn failed(&mut self, code: Option<u32>, why: String, now: Timestamp) {
        self.state = State::Failed;
        self.error_code = code;
        self.error = Some(why);
        self.retry_at = None;
        self.updated_at = now;
    }

    /// A signed status callback from Twilio. Delivery updates can arrive out of order; a
    /// message that was delivered stays delivered.
    pub fn status_update(&mut self, status: &str, code: Option<u32>, now: Timestamp) {
        if self.state == State::Delivered {
            return;
        }
        self.twilio_status = Some(status.to_owned());
        self.updated_at = now;
        match status {
            "delivered" | "read" => {
                self.state = State::Delivered;
                self.error = None;
            }
            "undelivered" | "failed" => {
                self.state = State::Undelivered;
                self.error_code = code;
                self.error = Some(match code {
                    Some(c) => crate::twilio::rest::explain(c)
                        .map_or_else(|| format!("Twilio error {c}"), |w| format!("{w} (Twilio error {c})")),
                    None => format!("{status}, no error code"),
                });
            }
            _ => {
                if matches!(self.state, State::Pending | State::Sending) {
                    self.state = State::Sent;
                }
            }
        }
    }
}

/// A text a customer sent to one of the shop's numbers (the number's messaging webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// Twilio's `MessageSid`.
    pub sid: String,
    /// The customer.
    pub from: String,
    /// The shop's number it was sent to.
    pub to: String,
    /// The text.
    pub body: String,
    /// Pictures and other media attached (MMS); not downloaded.
    #[serde(default)]
    pub num_media: u32,
    /// When the box got it.
    pub received_at: Timestamp,
}

impl Inbound {
    /// Its key in the call log.
    pub fn key(&self) -> String {
        format!("{INBOUND_PREFIX}{}", self.sid)
    }
}

/// What a customer's text asks of the box's list of opted-out numbers. Twilio itself stops
/// delivering after STOP and answers the keywords; the box follows so it does not try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP, UNSUBSCRIBE, CANCEL, END, QUIT, STOPALL, REVOKE, OPTOUT.
    OptOut,
    /// START, UNSTOP, YES.
    OptIn,
}

impl Keyword {
    /// The keyword a text is, if it is only one (Twilio's rule: the whole body, any case).
    pub fn of(body: &str) -> Option<Self> {
        let word = body.trim().to_ascii_uppercase();
        match word.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE" | "OPTOUT" => Some(Self::OptOut),
            "START" | "UNSTOP" | "YES" => Some(Self::OptIn),
            _ => None,
        }
    }
}

/// The key of `number`'s opt-out in the call log.
pub fn opt_out_key(number: &str) -> String {
    format!("{OPT_OUT_PREFIX}{number}")
}

/// A number that replied STOP (Twilio's 21610), kept so the box stops trying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// The number.
    pub number: String,
    /// When the box learnt it.
    pub since: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn msg() -> Message {
        Message::new(
            "text-back:CA1".into(),
            Kind::TextBack,
            Some("CA1"),
            "+15035550123",
            Some("+15035550100"),
            "hi".into(),
            t(0),
        )
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let mut m = msg();
        assert_eq!(m.due_at(), Some(t(0)));
        let mut waits = Vec::new();
        let mut now = t(0);
        while m.state != State::Failed {
            m.sending(now);
            m.retry_later(Some(20429), "busy".into(), now);
            if let Some(at) = m.retry_at.filter(|_| m.state == State::Pending) {
                waits.push(at.duration_since(now).as_secs());
                now = at;
            }
        }
        assert_eq!(&waits[..5], &[5, 10, 20, 40, 80]);
        assert!(waits.iter().all(|w| *w <= 900), "{waits:?}");
        assert!(now.duration_since(t(0)) >= GIVE_UP_AFTER);
        assert!(m.error.as_deref().is_some_and(|e| e.starts_with("gave up after")), "{:?}", m.error);
    }

    #[test]
    fn an_interrupted_send_goes_again_once() {
        let mut m = msg();
        m.sending(t(1));
        m.interrupted(t(2));
        assert_eq!((m.state, m.interrupted, m.attempts), (State::Pending, 1, 1));
        m.interrupted(t(3));
        assert_eq!(m.interrupted, 1, "only a request that was out counts");
    }

    #[test]
    fn delivery_updates_never_go_back() {
        let mut m = msg();
        m.sending(t(1));
        m.accepted("SM1".into(), Some("queued".into()), t(2));
        m.status_update("delivered", None, t(5));
        m.status_update("sent", None, t(6));
        assert_eq!(m.state, State::Delivered);
        let mut m = msg();
        m.accepted("SM2".into(), None, t(2));
        m.status_update("undelivered", Some(30034), t(4));
        assert_eq!((m.state, m.error_code), (State::Undelivered, Some(30034)));
        assert!(m.error.as_deref().unwrap().contains("A2P 10DLC"), "{:?}", m.error);
    }

    #[test]
    fn keywords_are_whole_bodies() {
        assert_eq!(Keyword::of(" stop "), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("Unsubscribe"), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("START"), Some(Keyword::OptIn));
        assert_eq!(Keyword::of("please stop calling"), None);
        assert_eq!(Keyword::of("yes, 3pm works"), None);
    }

    #[test]
    fn quiet_hours_hold_it() {
        let mut m = msg();
        m.not_before = Some(t(3600));
        assert_eq!(m.due_at(), Some(t(3600)));
        assert_eq!(msg().skip("withheld number").due_at(), None);
    }
}
