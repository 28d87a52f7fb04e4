//! Finding calls in the log the way an owner asks: a number or a name, what the call came to,
//! which line, which days. One query serves the dashboard's list, its paging and its CSV
//! export, so what is exported is what was shown.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::export;
use super::outcome::Outcome;
use super::record::CallRecord;

/// A search over the call log. The default matches every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Lowercased words every one of which must appear in the caller's number (digits
    /// compared as digits, so "503 555" finds +15035550123), the caller's name or the note.
    words: Vec<String>,
    /// The outcomes to keep; empty keeps all.
    outcomes: Vec<Outcome>,
    /// The shop line called (`To`), exactly.
    line: Option<String>,
    /// First seen in `[from, to)`.
    pub from: Timestamp,
    /// See `from`.
    pub to: Timestamp,
}

impl Default for Query {
    fn default() -> Self {
        Self { words: Vec::new(), outcomes: Vec::new(), line: None, from: WHOLE_LOG.0, to: WHOLE_LOG.1 }
    }
}

/// Every call, for a search without dates.
pub const WHOLE_LOG: (Timestamp, Timestamp) = (Timestamp::MIN, Timestamp::MAX);

/// Longest search text taken (a name or a number; more is a mistake or an attack).
pub const MAX_TEXT: usize = 100;

/// The raw parameters of a search, as the owner's page sends them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Params<'a> {
    /// Search text (`q`).
    pub text: Option<&'a str>,
    /// Comma-separated outcome names (`outcome`).
    pub outcome: Option<&'a str>,
    /// The line (`line`).
    pub line: Option<&'a str>,
    /// First day or time (`from`): a date like 2026-11-25 (the shop's time zone) or RFC 3339.
    pub from: Option<&'a str>,
    /// Last day (inclusive) or time (exclusive) (`to`).
    pub to: Option<&'a str>,
}

impl Query {
    /// The query `params` ask for; a missing `from` or `to` is taken from `undated` (the whole
    /// log for the list, the last 30 days for the CSV). The error names what is wrong, for a 400.
    pub fn parse(params: Params<'_>, tz: &TimeZone, undated: (Timestamp, Timestamp)) -> Result<Self, String> {
        let text = params.text.unwrap_or("").trim();
        if text.chars().count() > MAX_TEXT {
            return Err(format!("the search text is longer than {MAX_TEXT} characters\n"));
        }
        let mut outcomes = Vec::new();
        for name in params.outcome.unwrap_or("").split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some(o) = Outcome::parse(name) else {
                let known: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                return Err(format!("unknown outcome {name:?}: expected one of {}\n", known.join(", ")));
            };
            outcomes.push(o);
        }
        let (from, to) = match (given(params.from), given(params.to)) {
            (None, None) => undated,
            (from, to) => {
                let (start, end) = export::date_range(from, to, tz).map_err(str::to_owned)?;
                (if from.is_some() { start } else { undated.0 }, if to.is_some() { end } else { undated.1 })
            }
        };
        Ok(Self {
            words: text.split_whitespace().map(str::to_lowercase).collect(),
            outcomes,
            line: given(params.line).map(|l| l.trim().to_owned()),
            from,
            to,
        })
    }

    /// Whether `call` is one the owner asked for (the date range is the store's to apply).
    pub fn matches(&self, call: &CallRecord) -> bool {
        if !self.outcomes.is_empty() && !self.outcomes.contains(&call.outcome) {
            return false;
        }
        if self.line.as_ref().is_some_and(|l| call.to.as_ref() != Some(l)) {
            return false;
        }
        if self.words.is_empty() {
            return true;
        }
        let number = call.from.as_deref().unwrap_or("");
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let text = [number, call.caller_name.as_deref().unwrap_or(""), call.follow_up.note.as_deref().unwrap_or("")]
            .join(" ")
            .to_lowercase();
        // A number typed with spaces or dashes is one number.
        let all_digits: String = self.words.concat().chars().filter(char::is_ascii_digit).collect();
        let looks_like_number = self.words.iter().all(|w| w.chars().all(|c| c.is_ascii_digit() || "+-().".contains(c)));
        if looks_like_number && !all_digits.is_empty() {
            return digits.contains(&all_digits);
        }
        self.words.iter().all(|w| text.contains(w.as_str()))
    }
}

/// A parameter, unless it is missing or blank.
fn given(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::{CallStatus, EventSource, test_event};

    fn call(from: &str, name: Option<&str>, to: &str, status: &str) -> CallRecord {
        let mut e = test_event("CA1", EventSource::StatusCallback, Some(status.parse().unwrap()), &[]);
        e.from = Some(from.into());
        e.to = Some(to.into());
        if let Some(n) = name {
            e.details.insert("CallerName".into(), n.into());
        }
        let mut r = CallRecord::new(&test_event("CA1", EventSource::IncomingCall, Some(CallStatus::Ringing), &[]));
        r.events.clear();
        r.apply(e);
        r
    }

    fn query(text: &str, outcome: &str, line: &str) -> Query {
        let params = Params { text: Some(text), outcome: Some(outcome), line: Some(line), ..Params::default() };
        Query::parse(params, &TimeZone::UTC, WHOLE_LOG).unwrap()
    }

    #[test]
    fn numbers_names_outcomes_and_lines() {
        let c = call("+15035550123", Some("JANE DOE"), "+15035550100", "no-answer");
        assert_eq!(c.outcome, Outcome::Missed);
        for yes in ["", "503 555", "(503) 555-0123", "jane", "doe jane", "+1503"] {
            assert!(query(yes, "", "").matches(&c), "{yes:?}");
        }
        for no in ["503 556", "john", "jane smith"] {
            assert!(!query(no, "", "").matches(&c), "{no:?}");
        }
        assert!(query("", "missed,voicemail", "+15035550100").matches(&c));
        assert!(!query("", "voicemail", "").matches(&c));
        assert!(!query("", "", "+15035550111").matches(&c));
    }

    #[test]
    fn bad_parameters_are_named() {
        let tz = TimeZone::UTC;
        let err =
            Query::parse(Params { outcome: Some("missed,lost"), ..Params::default() }, &tz, WHOLE_LOG).unwrap_err();
        assert!(err.contains("\"lost\"") && err.contains("voicemail"), "{err}");
        let long = "x".repeat(MAX_TEXT + 1);
        assert!(Query::parse(Params { text: Some(&long), ..Params::default() }, &tz, WHOLE_LOG).is_err());
        assert!(Query::parse(Params { from: Some("last week"), ..Params::default() }, &tz, WHOLE_LOG).is_err());
        let q = Query::parse(Params { to: Some("2026-11-30"), ..Params::default() }, &tz, WHOLE_LOG).unwrap();
        assert_eq!(
            (q.from, q.to),
            (Timestamp::MIN, "2026-12-01T00:00:00Z".parse().unwrap()),
            "the whole day, from the start"
        );
        assert_eq!(Query::parse(Params::default(), &tz, WHOLE_LOG).unwrap(), Query::default());
    }
}
