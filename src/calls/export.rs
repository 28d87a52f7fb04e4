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

use super::record::CallRecord;

/// CSV columns, in order.
pub const COLUMNS: [&str; 12] = [
    "call_sid",
    "first_seen",
    "from",
    "to",
    "caller_name",
    "direction",
    "status",
    "answered_at",
    "ended_at",
    "duration_secs",
    "outcome",
    "recording",
];

/// Writes `calls` as CSV (RFC 4180 quoting, UTF-8) with a header row.
pub fn write_csv<W: std::io::Write>(calls: &[CallRecord], out: W) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for c in calls {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let time = |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        let (outcome, recording) = media_outcome(c);
        let row = [
            c.call_sid.clone(),
            c.first_seen.to_string(),
            opt(&c.from),
            opt(&c.to),
            opt(&c.caller_name),
            opt(&c.direction),
            c.status.as_str().to_owned(),
            time(c.answered_at),
            time(c.ended_at),
            c.duration_secs.map(|d| d.to_string()).unwrap_or_default(),
            outcome,
            recording,
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
        .find(|e| e.details.get("MediaEvent").map(String::as_str) == Some("stopped"))
        .map(|e| {
            (
                e.details.get("Outcome").cloned().unwrap_or_default(),
                e.details.get("Recording").cloned().unwrap_or_default(),
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
}
