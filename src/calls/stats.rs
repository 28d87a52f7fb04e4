//! Calls per day for the owner's chart: how many came in and how many nobody answered, by
//! day in the shop's time zone.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use super::outcome::Outcome;
use super::record::CallRecord;

/// Most days one chart covers.
pub const MAX_DAYS: u32 = 366;

/// One day's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// The shop's local date.
    pub date: Date,
    /// Calls that arrived that day.
    pub calls: u32,
    /// Of those, missed: the caller reached nobody and left no message.
    pub missed: u32,
    /// Of those, voicemails.
    pub voicemail: u32,
}

/// The `days` days up to and including `today`, oldest first, counting `calls` (any order;
/// calls outside those days are ignored). Every day is there, a quiet one with zeros.
pub fn daily(calls: &[CallRecord], tz: &TimeZone, today: Date, days: u32) -> Vec<Day> {
    let days = days.clamp(1, MAX_DAYS);
    let first = today.checked_sub(jiff::Span::new().days(i64::from(days) - 1)).unwrap_or(today);
    let mut out: Vec<Day> = (0..days)
        .map_while(|i| first.checked_add(jiff::Span::new().days(i64::from(i))).ok())
        .map(|date| Day { date, calls: 0, missed: 0, voicemail: 0 })
        .collect();
    for call in calls {
        let date = call.first_seen.to_zoned(tz.clone()).date();
        let Ok(index) = usize::try_from((date - first).get_days()) else { continue };
        let Some(day) = out.get_mut(index).filter(|d| d.date == date) else { continue };
        day.calls += 1;
        match call.outcome {
            Outcome::Missed => day.missed += 1,
            Outcome::Voicemail => day.voicemail += 1,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::event::{CallStatus, EventSource, test_event};

    #[test]
    fn days_in_the_shops_time_zone_with_quiet_days_as_zero() {
        let tz = TimeZone::get("America/Los_Angeles").unwrap();
        let at = |s: &str, status: &str| {
            let mut e =
                test_event("CA1", EventSource::StatusCallback, Some(status.parse::<CallStatus>().unwrap()), &[]);
            e.received_at = s.parse().unwrap();
            CallRecord::new(&e)
        };
        let calls = [
            // 23:30 on the 1st in Portland, though the 2nd in UTC.
            at("2026-12-02T07:30:00Z", "no-answer"),
            at("2026-12-03T18:00:00Z", "completed"),
            at("2026-12-03T19:00:00Z", "busy"),
            at("2026-11-01T19:00:00Z", "busy"),
        ];
        let days = daily(&calls, &tz, "2026-12-03".parse().unwrap(), 3);
        let got: Vec<(String, u32, u32)> = days.iter().map(|d| (d.date.to_string(), d.calls, d.missed)).collect();
        assert_eq!(
            got,
            [("2026-12-01".into(), 1, 1), ("2026-12-02".into(), 0, 0), ("2026-12-03".into(), 2, 1)],
            "a hang-up is a call, not a missed one"
        );
    }
}
