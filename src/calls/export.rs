//! The call log as CSV, for the owner's spreadsheet.
//!
//! Callers control some cells (their caller ID name, a spoofed From), and spreadsheets run a
//! cell that starts with `=`, `+`, `-` or `@` as a formula (`=HYPERLINK(...)` leaks other
//! cells, DDE formulas run programs). Every such cell is written with a leading `'`, as
//! OWASP's CSV-injection guidance says: Excel, LibreOffice and Google Sheets read the cell as
//! text. That includes E.164 numbers: `'+15035550123` is also what keeps Excel from turning a
//! phone number into `1.50356E+10`. Scripts reading the export drop one leading `'` before
//! such a character to get the raw value back.

use std::borrow::Cow;

use super::event::{MediaEvent, detail};
use super::record::CallRecord;

/// CSV columns, in order. Times are whole seconds: `local_time` in the shop's zone as a
/// spreadsheet reads it, the others RFC 3339 UTC. No internal paths: the voicemail is its
/// length, and plays from the dashboard.
pub const COLUMNS: [&str; 13] = [
    "call_sid",
    "local_time",
    "first_seen",
    "from",
    "to",
    "caller_name",
    "direction",
    "status",
    "outcome",
    "answered_at",
    "ended_at",
    "duration_secs",
    "voicemail_secs",
];

/// Writes `calls` as CSV (RFC 4180 quoting, UTF-8) with a header row; `tz` is the shop's.
pub fn write_csv<W: std::io::Write>(calls: &[CallRecord], tz: &jiff::tz::TimeZone, out: W) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for c in calls {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let utc = |t: jiff::Timestamp| t.round(jiff::Unit::Second).map_or_else(|_| t.to_string(), |t| t.to_string());
        let time = |t: Option<jiff::Timestamp>| t.map(utc).unwrap_or_default();
        let voicemail = c
            .stream
            .as_ref()
            .and_then(|s| s.recording.as_ref())
            .filter(|_| c.outcome == super::Outcome::Voicemail)
            .map(|r| format!("{:.1}", r.duration_ms as f64 / 1000.0))
            .unwrap_or_default();
        let row = [
            c.call_sid.clone(),
            c.first_seen.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
            utc(c.first_seen),
            opt(&c.from),
            opt(&c.to),
            opt(&c.caller_name),
            opt(&c.direction),
            c.status.as_str().to_owned(),
            c.outcome.as_str().to_owned(),
            time(c.answered_at),
            time(c.ended_at),
            c.duration_secs.map(|d| d.to_string()).unwrap_or_default(),
            voicemail,
        ];
        w.write_record(row.iter().map(|cell| neutralise(cell).into_owned()))?;
    }
    w.flush()?;
    Ok(())
}

/// The media flow's outcome and recording path, from the stream's `stopped` event.
pub fn media_outcome(c: &CallRecord) -> (String, String) {
    c.events
        .iter()
        .rev()
        .find(|e| e.media_event() == Some(MediaEvent::Stopped))
        .map(|e| {
            (
                e.detail(detail::OUTCOME).unwrap_or_default().to_owned(),
                e.detail(detail::RECORDING).unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_default()
}

/// `cell` as a spreadsheet will take it as text: prefixed with `'` when it starts with a
/// character that makes a formula (also after leading spaces, which some importers trim), or
/// with a tab or carriage return (which importers may strip to reveal one).
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    let formula = matches!(cell.trim_start_matches(' ').chars().next(), Some('=' | '+' | '-' | '@' | '\t' | '\r'));
    if formula { Cow::Owned(format!("'{cell}")) } else { Cow::Borrowed(cell) }
}

/// Parses the CSV export's `from`/`to` parameters (days in the shop's time zone `tz`). A day or time beyond what the box can
/// represent (jiff's range, about ±9999 years) is clamped to that range's end: "everything up
/// to 9999-12-31" is a fair question whose answer is "everything".
pub fn date_range(
    from: Option<&str>,
    to: Option<&str>,
    tz: &jiff::tz::TimeZone,
) -> Result<(jiff::Timestamp, jiff::Timestamp), &'static str> {
    use jiff::Timestamp;
    let now = Timestamp::now();
    let parse = |s: &str, end: bool| -> Result<Timestamp, &'static str> {
        if let Ok(t) = s.parse::<Timestamp>() {
            return Ok(t);
        }
        let clamp = |date: jiff::civil::Date| if date.year() > 0 { Timestamp::MAX } else { Timestamp::MIN };
        let date: jiff::civil::Date = match s.parse() {
            Ok(date) => date,
            Err(_) => {
                // A well-formed RFC 3339 time that is no `Timestamp` is one out of range.
                return match jiff::fmt::temporal::Pieces::parse(s) {
                    Ok(pieces) if pieces.time().is_some() && pieces.offset().is_some() => Ok(clamp(pieces.date())),
                    _ => Err("from/to must be dates like 2026-11-25 or RFC 3339 timestamps\n"),
                };
            }
        };
        let clamped = clamp(date);
        let Ok(date) = (if end { date.tomorrow() } else { Ok(date) }) else {
            return Ok(clamped);
        };
        Ok(date.to_zoned(tz.clone()).map(|z| z.timestamp()).unwrap_or(clamped))
    };
    let from = match from {
        Some(s) if !s.is_empty() => parse(s, false)?,
        _ => now.checked_sub(jiff::SignedDuration::from_hours(24 * 30)).unwrap_or(Timestamp::MIN),
    };
    let to = match to {
        Some(s) if !s.is_empty() => parse(s, true)?,
        _ => now.checked_add(jiff::SignedDuration::from_hours(24)).unwrap_or(Timestamp::MAX),
    };
    // Both ends clamped to the same edge is an empty range past that edge, not a mistake.
    let past_an_edge = from == Timestamp::MAX || to == Timestamp::MIN;
    if to < from || (to == from && !past_an_edge) {
        return Err("`to` must be after `from`\n");
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_neutralised_and_other_text_is_left_alone() {
        for (cell, expected) in [
            ("=1+2", "'=1+2"),
            ("+15035550123", "'+15035550123"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("  =1", "'  =1"),
            ("Bob's Garage", "Bob's Garage"),
            ("2+2=4", "2+2=4"),
            ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z"),
            ("", ""),
        ] {
            assert_eq!(neutralise(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn far_dates_are_clamped_and_survive_the_cli_round_trip() {
        let (from, to) = date_range(Some("-009999-01-01"), Some("9999-12-31"), &jiff::tz::TimeZone::UTC).unwrap();
        assert_eq!((from, to), (jiff::Timestamp::MIN, jiff::Timestamp::MAX));
        // `callbox calls --csv` sends the range on as RFC 3339: the clamped ends must parse back.
        assert_eq!(
            date_range(Some(&from.to_string()), Some(&to.to_string()), &jiff::tz::TimeZone::UTC),
            Ok((from, to))
        );
        assert_eq!(date_range(Some("9999-12-31"), Some("9999-12-31"), &jiff::tz::TimeZone::UTC), Ok((to, to)));
        assert!(date_range(Some("2026-02-01"), Some("2026-01-01"), &jiff::tz::TimeZone::UTC).is_err());
        assert!(
            date_range(Some("2026-01-01T00:00:00Z"), Some("2026-01-01T00:00:00Z"), &jiff::tz::TimeZone::UTC).is_err()
        );
        assert!(date_range(Some("yesterday"), None, &jiff::tz::TimeZone::UTC).is_err());
        assert!(
            date_range(Some("2026-13-01T00:00:00Z"), None, &jiff::tz::TimeZone::UTC).is_err(),
            "malformed, not out of range"
        );
        assert_eq!(
            date_range(None, Some("9999-12-31T23:59:59+01:00"), &jiff::tz::TimeZone::UTC).map(|r| r.1),
            Ok(jiff::Timestamp::MAX)
        );
    }
}
