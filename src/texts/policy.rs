//! Who gets a text about a call, and when: pure rules over the call, the config and what was
//! sent before, so every edge is tested with a fixed clock.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use super::message::{Kind, Message, State};
use crate::calls::{CallRecord, Outcome};
use crate::config::{MissedCallsConfig, QuietHoursConfig, is_e164};

/// Caller IDs Twilio uses for callers who withheld theirs (they spell ANONYMOUS, RESTRICTED,
/// BLOCKED and UNKNOWN on a keypad): E.164-shaped, but nobody's phone.
const WITHHELD: [&str; 4] = ["+266696687", "+7378742833", "+2562533", "+8656696"];

/// What the rules need besides the call.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// `[missed_calls]`.
    pub config: &'a MissedCallsConfig,
    /// `twilio.sms_from`: the sender when set; else the number that was called.
    pub sms_from: Option<&'a str>,
    /// The shop's time zone (quiet hours, the time in owner alerts).
    pub time_zone: TimeZone,
    /// The dashboard's address, for owner alerts.
    pub dashboard_url: &'a str,
}

/// What the box knows of earlier texts.
pub trait History {
    /// Every text to `number` so far.
    fn texts_to(&self, number: &str) -> Vec<Message>;
    /// Whether `number` replied STOP.
    fn opted_out(&self, number: &str) -> bool;
}

/// True for a caller the box can text back: a real E.164 number, not a withheld caller ID nor
/// a short code.
pub fn textable(number: &str) -> bool {
    is_e164(number) && !WITHHELD.contains(&number)
}

/// The texts `call` asks for at `now`. Each has an id made from the call (and recipient), so
/// asking again for the same call gives the same ids and the outbox keeps only the first.
pub fn decide(call: &CallRecord, policy: &Policy<'_>, history: &dyn History, now: Timestamp) -> Vec<Message> {
    let outcome = call.outcome;
    if !matches!(outcome, Outcome::Missed | Outcome::Voicemail) || !inbound(call) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let sender = policy.sms_from.or(call.to.as_deref());
    let wants_text_back = outcome == Outcome::Missed || policy.config.text_back_voicemail;
    if let (Some(body), true) = (&policy.config.text_back, wants_text_back) {
        out.push(text_back(call, body, sender, policy, history, now));
    }
    for owner in &policy.config.notify {
        let id = format!("{}:{}:{owner}", Kind::OwnerAlert.as_str(), call.call_sid);
        let body = owner_alert(call, policy);
        let m = Message::new(id, Kind::OwnerAlert, Some(&call.call_sid), owner, sender, body, now);
        out.push(match () {
            () if sender.is_none() => m.skip("no number to send from: set twilio.sms_from"),
            () if history.opted_out(owner) => m.skip("this number replied STOP; text START to it to opt in again"),
            () => m,
        });
    }
    out
}

fn inbound(call: &CallRecord) -> bool {
    call.direction.as_deref().is_none_or(|d| d.starts_with("inbound"))
}

fn text_back(
    call: &CallRecord,
    body: &str,
    sender: Option<&str>,
    policy: &Policy<'_>,
    history: &dyn History,
    now: Timestamp,
) -> Message {
    let id = format!("{}:{}", Kind::TextBack.as_str(), call.call_sid);
    let to = call.from.as_deref().unwrap_or("");
    let mut m = Message::new(id, Kind::TextBack, Some(&call.call_sid), to, sender, body.to_owned(), now);
    if !textable(to) {
        return m.skip("caller ID withheld, or not a number that takes texts");
    }
    if sender.is_none() {
        return m.skip("no number to send from: set twilio.sms_from");
    }
    if history.opted_out(to) {
        return m.skip("the caller replied STOP to an earlier text");
    }
    let window = SignedDuration::from_hours(i64::from(policy.config.window_hours));
    let recent = history.texts_to(to).into_iter().filter(|t| {
        t.kind == Kind::TextBack
            && t.state != State::Skipped
            && t.id != m.id
            && now.duration_since(t.created_at) < window
    });
    if let Some(earlier) = recent.max_by_key(|t| t.created_at) {
        let at = earlier.created_at.to_zoned(policy.time_zone.clone()).strftime("%H:%M");
        return m.skip(format!("already texted at {at}, less than {} h ago", policy.config.window_hours));
    }
    if let Some(quiet) = &policy.config.quiet_hours
        && !policy.config.text_in_quiet_hours
    {
        m.not_before = quiet_until(quiet, &policy.time_zone, now);
    }
    m
}

/// When the quiet hours around `now` end; `None` when `now` is not in them.
pub fn quiet_until(quiet: &QuietHoursConfig, tz: &TimeZone, now: Timestamp) -> Option<Timestamp> {
    let local = now.to_zoned(tz.clone());
    if !quiet.contains(local.time()) {
        return None;
    }
    let end_today = local.with().time(quiet.end).build().ok()?;
    let end = if end_today.timestamp() > now { end_today } else { end_today.checked_add(1.day()).ok()? };
    Some(end.timestamp())
}

/// The owner's alert: who called, when, what happened, and where to look.
fn owner_alert(call: &CallRecord, policy: &Policy<'_>) -> String {
    let caller = match (call.from.as_deref(), call.caller_name.as_deref()) {
        (Some(n), Some(name)) if textable(n) => format!("{} ({name})", pretty_number(n)),
        (Some(n), None) if textable(n) => pretty_number(n),
        _ => "a withheld number".to_owned(),
    };
    let when = call.first_seen.to_zoned(policy.time_zone.clone()).strftime("%-I:%M %p %a %b %-d");
    let what = match call.stream.as_ref().and_then(|s| s.recording.as_ref()) {
        Some(r) if call.outcome == Outcome::Voicemail => {
            let secs = r.duration_ms / 1000;
            format!("New voicemail ({}:{:02})", secs / 60, secs % 60)
        }
        _ => "Missed call".to_owned(),
    };
    let link = format!("{}#call={}", policy.dashboard_url, call.call_sid);
    format!("{what} from {caller} at {when}. {link}")
}

/// A number as people write it: `(503) 555-0123` in North America, E.164 elsewhere.
pub fn pretty_number(number: &str) -> String {
    match number.strip_prefix("+1") {
        Some(d) if d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..])
        }
        _ => number.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use jiff::civil::time;

    use super::*;
    use crate::calls::event::{CallStatus, EventSource, test_event};

    #[derive(Default)]
    struct Seen {
        texts: RefCell<Vec<Message>>,
        stop: Vec<String>,
    }

    impl History for Seen {
        fn texts_to(&self, number: &str) -> Vec<Message> {
            self.texts.borrow().iter().filter(|m| m.to == number).cloned().collect()
        }
        fn opted_out(&self, number: &str) -> bool {
            self.stop.iter().any(|n| n == number)
        }
    }

    fn config() -> MissedCallsConfig {
        MissedCallsConfig {
            text_back: Some("Sorry we missed you! We'll call back.".into()),
            notify: vec!["+15035550199".into()],
            ..MissedCallsConfig::default()
        }
    }

    fn policy(config: &MissedCallsConfig) -> Policy<'_> {
        Policy {
            config,
            sms_from: None,
            time_zone: TimeZone::get("America/Los_Angeles").unwrap(),
            dashboard_url: "http://callbox.local:8080/",
        }
    }

    /// A missed call from `from` at `at` (no stream; Twilio: no-answer).
    fn missed(sid: &str, from: &str, at: Timestamp) -> CallRecord {
        let mut e =
            test_event(sid, EventSource::StatusCallback, Some(CallStatus::NoAnswer), &[("CallerName", "JANE ROE")]);
        e.from = Some(from.into());
        e.received_at = at;
        CallRecord::new(&e)
    }

    /// 2026-12-03 at `h:m` in Los Angeles.
    fn at(h: i8, m: i8) -> Timestamp {
        jiff::civil::date(2026, 12, 3).at(h, m, 0, 0).in_tz("America/Los_Angeles").unwrap().timestamp()
    }

    #[test]
    fn a_missed_call_gets_a_text_back_and_an_alert() {
        let c = config();
        let call = missed("CA1", "+15035550123", at(15, 4));
        assert_eq!(call.outcome, Outcome::Missed);
        let out = decide(&call, &policy(&c), &Seen::default(), at(15, 4));
        assert_eq!(out.len(), 2, "{out:#?}");
        let (back, alert) = (&out[0], &out[1]);
        assert_eq!((back.kind, back.state, back.to.as_str()), (Kind::TextBack, State::Pending, "+15035550123"));
        assert_eq!(back.from.as_deref(), Some("+15035550100"), "from the number that was called");
        assert_eq!(back.due_at(), Some(at(15, 4)));
        assert_eq!(alert.to, "+15035550199");
        assert_eq!(
            alert.body,
            "Missed call from (503) 555-0123 (JANE ROE) at 3:04 PM Thu Dec 3. http://callbox.local:8080/#call=CA1"
        );
        let again = decide(&call, &policy(&c), &Seen::default(), at(15, 9));
        assert_eq!(again.iter().map(|m| &m.id).collect::<Vec<_>>(), out.iter().map(|m| &m.id).collect::<Vec<_>>());
    }

    #[test]
    fn never_to_withheld_short_codes_or_stop() {
        let c = config();
        for from in ["anonymous", "+266696687", "+7378742833", "55555", "client:alice"] {
            let out = decide(&missed("CA2", from, at(10, 0)), &policy(&c), &Seen::default(), at(10, 0));
            assert_eq!(out[0].state, State::Skipped, "{from}");
            assert!(out[1].body.contains("a withheld number"), "{}", out[1].body);
        }
        let seen = Seen { stop: vec!["+15035550123".into()], ..Seen::default() };
        let out = decide(&missed("CA3", "+15035550123", at(10, 0)), &policy(&c), &seen, at(10, 0));
        assert_eq!(out[0].state, State::Skipped);
        assert!(out[0].skipped.as_deref().unwrap().contains("STOP"));
    }

    #[test]
    fn one_text_back_per_caller_per_window() {
        let c = config();
        let seen = Seen::default();
        let first = decide(&missed("CA4", "+15035550123", at(9, 0)), &policy(&c), &seen, at(9, 0));
        seen.texts.borrow_mut().push(first[0].clone());
        let second = decide(&missed("CA5", "+15035550123", at(20, 59)), &policy(&c), &seen, at(20, 59));
        assert_eq!(second[0].state, State::Skipped, "11 h 59 min later");
        assert_eq!(second[0].skipped.as_deref(), Some("already texted at 09:00, less than 12 h ago"));
        assert_eq!(second[1].state, State::Pending, "the owner hears of every missed call");
        let third = decide(&missed("CA6", "+15035550123", at(21, 0)), &policy(&c), &seen, at(21, 0));
        assert_eq!(third[0].state, State::Pending, "12 h later");
    }

    #[test]
    fn quiet_hours_queue_text_backs_until_they_end() {
        let c = MissedCallsConfig {
            quiet_hours: Some(QuietHoursConfig { start: time(21, 0, 0, 0), end: time(8, 0, 0, 0) }),
            ..config()
        };
        let evening = decide(&missed("CA7", "+15035550123", at(22, 30)), &policy(&c), &Seen::default(), at(22, 30));
        let next_morning = jiff::civil::date(2026, 12, 4).at(8, 0, 0, 0).in_tz("America/Los_Angeles").unwrap();
        assert_eq!(evening[0].due_at(), Some(next_morning.timestamp()));
        assert_eq!(evening[1].due_at(), Some(at(22, 30)), "the owner's alert is not held");
        let early = decide(&missed("CA8", "+15035550123", at(7, 59)), &policy(&c), &Seen::default(), at(7, 59));
        assert_eq!(early[0].due_at(), Some(at(8, 0)));
        let open = decide(&missed("CA9", "+15035550123", at(8, 0)), &policy(&c), &Seen::default(), at(8, 0));
        assert_eq!(open[0].due_at(), Some(at(8, 0)), "the end of quiet hours is not quiet");
        let anyway = MissedCallsConfig { text_in_quiet_hours: true, ..c.clone() };
        let out = decide(&missed("CA10", "+15035550123", at(23, 0)), &policy(&anyway), &Seen::default(), at(23, 0));
        assert_eq!(out[0].due_at(), Some(at(23, 0)));
    }

    #[test]
    fn voicemails_alert_and_text_back_only_when_asked() {
        let c = config();
        let mut call = missed("CA11", "+15035550123", at(12, 0));
        call.status = CallStatus::Completed;
        call.stream = Some(crate::calls::StreamInfo {
            outcome: Some(crate::calls::StreamOutcome::Message),
            stopped_at: Some(at(12, 1)),
            recording: Some(crate::calls::RecordingInfo {
                path: "r.wav".into(),
                duration_ms: 65_000,
                bytes: 1,
                voiced_ms: Some(40_000),
            }),
            ..Default::default()
        });
        call.refresh_outcome();
        assert_eq!(call.outcome, Outcome::Voicemail);
        let out = decide(&call, &policy(&c), &Seen::default(), at(12, 1));
        assert_eq!(out.len(), 1, "only the owner: {out:#?}");
        assert!(out[0].body.starts_with("New voicemail (1:05) from (503) 555-0123"), "{}", out[0].body);
        let both = MissedCallsConfig { text_back_voicemail: true, ..c };
        assert_eq!(decide(&call, &policy(&both), &Seen::default(), at(12, 1)).len(), 2);
    }

    #[test]
    fn live_answered_and_outbound_calls_get_nothing() {
        let c = config();
        let mut live = missed("CA12", "+15035550123", at(12, 0));
        live.status = CallStatus::InProgress;
        live.refresh_outcome();
        assert!(decide(&live, &policy(&c), &Seen::default(), at(12, 0)).is_empty());
        let mut outbound = missed("CA13", "+15035550123", at(12, 0));
        outbound.direction = Some("outbound-api".into());
        assert!(decide(&outbound, &policy(&c), &Seen::default(), at(12, 0)).is_empty());
    }
}
