//! The call log as CSV, for the owner's spreadsheet.

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
        w.write_record([
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
        ])?;
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
