//! `[hours]`: when the shop is open. While it is, a call rings the front desk first; while it
//! is closed, it goes straight to the box's after-hours flow.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[hours]`, e.g. `mon = "08:00-17:30"`, `sat = "09:00-12:00"`, `closed_dates = ["2026-12-25"]`.
/// A day without a key is closed; a day may have several ranges (`"08:00-12:00, 13:00-17:30"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoursConfig {
    /// IANA time zone the hours are in (e.g. `America/Chicago`); `indicators.time_zone`, else
    /// the system's, when unset.
    pub time_zone: Option<String>,
    /// Monday's opening hours.
    pub mon: Option<String>,
    /// Tuesday's.
    pub tue: Option<String>,
    /// Wednesday's.
    pub wed: Option<String>,
    /// Thursday's.
    pub thu: Option<String>,
    /// Friday's.
    pub fri: Option<String>,
    /// Saturday's.
    pub sat: Option<String>,
    /// Sunday's.
    pub sun: Option<String>,
    /// Days the shop is closed whatever the weekday says (holidays), `YYYY-MM-DD`.
    pub closed_dates: Vec<Date>,
    /// How long the front desk rings before the box takes the call.
    pub front_desk_ring_secs: u32,
}

impl Default for HoursConfig {
    fn default() -> Self {
        Self {
            time_zone: None,
            mon: None,
            tue: None,
            wed: None,
            thu: None,
            fri: None,
            sat: None,
            sun: None,
            closed_dates: Vec::new(),
            front_desk_ring_secs: 20,
        }
    }
}

/// One opening range, in minutes since local midnight: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Opens at.
    pub start: u16,
    /// Closes at (1440 for midnight).
    pub end: u16,
}

/// Whether the shop is open at a moment, and why, in words for the call log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Open {
    /// Open: the front desk rings first.
    Yes(String),
    /// Closed: the box takes the call.
    No(String),
}

const DAYS: [(Weekday, &str); 7] = [
    (Weekday::Monday, "mon"),
    (Weekday::Tuesday, "tue"),
    (Weekday::Wednesday, "wed"),
    (Weekday::Thursday, "thu"),
    (Weekday::Friday, "fri"),
    (Weekday::Saturday, "sat"),
    (Weekday::Sunday, "sun"),
];

impl HoursConfig {
    fn day(&self, day: Weekday) -> Option<&str> {
        match day {
            Weekday::Monday => self.mon.as_deref(),
            Weekday::Tuesday => self.tue.as_deref(),
            Weekday::Wednesday => self.wed.as_deref(),
            Weekday::Thursday => self.thu.as_deref(),
            Weekday::Friday => self.fri.as_deref(),
            Weekday::Saturday => self.sat.as_deref(),
            Weekday::Sunday => self.sun.as_deref(),
        }
    }

    /// Whether any opening hours are set (else every call goes to the box, as before).
    pub fn is_set(&self) -> bool {
        DAYS.iter().any(|(d, _)| self.day(*d).is_some())
    }

    /// The ranges of `day`; empty when closed (or unreadable: validation refused that).
    pub fn ranges(&self, day: Weekday) -> Vec<Range> {
        self.day(day).map(|text| parse_ranges(text).unwrap_or_default()).unwrap_or_default()
    }

    /// Whether the shop is open at `now` in `tz`.
    pub fn open_at(&self, now: Timestamp, tz: &TimeZone) -> Open {
        let local = now.to_zoned(tz.clone());
        let (date, time) = (local.date(), local.time());
        let minute = u16::try_from(i32::from(time.hour()) * 60 + i32::from(time.minute())).unwrap_or(0);
        let day = short_name(date.weekday());
        if self.closed_dates.contains(&date) {
            return Open::No(format!("closed: {date} is a closed date"));
        }
        match self.ranges(date.weekday()).into_iter().find(|r| r.start <= minute && minute < r.end) {
            Some(r) => Open::Yes(format!("open: {day} {}-{}", hhmm(r.start), hhmm(r.end))),
            None => Open::No(format!("closed: {day} {}", hhmm(minute))),
        }
    }

    /// The zone the hours are in: `hours.time_zone`, else `fallback` (the shop's).
    pub fn zone(&self, fallback: TimeZone) -> TimeZone {
        self.time_zone.as_deref().and_then(|name| TimeZone::get(name).ok()).unwrap_or(fallback)
    }

    pub(super) fn validate(&self, front_desk: Option<&str>, errs: &mut Vec<ConfigError>) {
        if let Some(name) = &self.time_zone
            && TimeZone::get(name).is_err()
        {
            errs.push(ConfigError::invalid(
                "hours.time_zone",
                format!("{name:?} is not a known IANA time zone; use e.g. \"America/Chicago\""),
            ));
        }
        for (day, key) in DAYS {
            if let Some(text) = self.day(day)
                && let Err(why) = parse_ranges(text)
            {
                errs.push(ConfigError::invalid(key_name(key), format!("{text:?}: {why}")));
            }
        }
        if self.is_set() && front_desk.is_none() {
            errs.push(ConfigError::invalid(
                "twilio.front_desk",
                "is missing; [hours] rings the front desk while the shop is open, so it needs its number",
            ));
        }
        if !(5..=120).contains(&self.front_desk_ring_secs) {
            errs.push(ConfigError::invalid("hours.front_desk_ring_secs", "must be from 5 to 120"));
        }
    }
}

fn key_name(day: &str) -> &'static str {
    match day {
        "mon" => "hours.mon",
        "tue" => "hours.tue",
        "wed" => "hours.wed",
        "thu" => "hours.thu",
        "fri" => "hours.fri",
        "sat" => "hours.sat",
        _ => "hours.sun",
    }
}

fn short_name(day: Weekday) -> &'static str {
    DAYS.iter().find(|(d, _)| *d == day).map_or("?", |(_, n)| n)
}

fn hhmm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// `"08:00-12:00, 13:00-17:30"` → its ranges; `"closed"` or `""` → none.
fn parse_ranges(text: &str) -> Result<Vec<Range>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("closed") {
        return Ok(Vec::new());
    }
    let mut ranges: Vec<Range> = Vec::new();
    for part in text.split(',') {
        let (start, end) = part.trim().split_once('-').ok_or("write opening hours like \"08:00-17:30\"")?;
        let (start, end) = (minute_of(start)?, minute_of(end)?);
        if start >= end {
            return Err(format!("{} is not before {} (hours across midnight are two days)", hhmm(start), hhmm(end)));
        }
        if ranges.iter().any(|r| start < r.end && r.start < end) {
            return Err("two ranges overlap".into());
        }
        ranges.push(Range { start, end });
    }
    Ok(ranges)
}

fn minute_of(hhmm: &str) -> Result<u16, String> {
    let hhmm = hhmm.trim();
    let bad = || format!("{hhmm:?} is not a time like 08:00 (00:00 to 24:00)");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) || hhmm.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> HoursConfig {
        HoursConfig {
            mon: Some("08:00-17:30".into()),
            tue: Some("08:00-17:30".into()),
            wed: Some("08:00-12:00, 13:00-17:30".into()),
            thu: Some("08:00-17:30".into()),
            fri: Some("08:00-17:30".into()),
            sat: Some("09:00-12:00".into()),
            closed_dates: vec![jiff::civil::date(2026, 12, 25)],
            ..HoursConfig::default()
        }
    }

    /// `y-m-d h:m` in Chicago.
    fn at(y: i16, mo: i8, d: i8, h: i8, m: i8) -> Timestamp {
        jiff::civil::date(y, mo, d).at(h, m, 0, 0).in_tz("America/Chicago").unwrap().timestamp()
    }

    fn open(h: &HoursConfig, t: Timestamp) -> bool {
        matches!(h.open_at(t, &TimeZone::get("America/Chicago").unwrap()), Open::Yes(_))
    }

    #[test]
    fn open_closed_and_the_edges() {
        let h = shop();
        // Thursday 2026-12-03.
        assert!(!open(&h, at(2026, 12, 3, 7, 59)));
        assert!(open(&h, at(2026, 12, 3, 8, 0)), "opening minute is open");
        assert!(open(&h, at(2026, 12, 3, 17, 29)));
        assert!(!open(&h, at(2026, 12, 3, 17, 30)), "closing minute is closed");
        // Wednesday's lunch break.
        assert!(open(&h, at(2026, 12, 2, 11, 59)));
        assert!(!open(&h, at(2026, 12, 2, 12, 30)));
        assert!(open(&h, at(2026, 12, 2, 13, 0)));
        // Saturday morning, Sunday never.
        assert!(open(&h, at(2026, 12, 5, 10, 0)));
        assert!(!open(&h, at(2026, 12, 6, 10, 0)));
        // Christmas is a Friday, and closed.
        let tz = TimeZone::get("America/Chicago").unwrap();
        assert_eq!(h.open_at(at(2026, 12, 25, 10, 0), &tz), Open::No("closed: 2026-12-25 is a closed date".into()));
        assert_eq!(h.open_at(at(2026, 12, 3, 9, 0), &tz), Open::Yes("open: thu 08:00-17:30".into()));
        assert_eq!(h.open_at(at(2026, 12, 3, 18, 5), &tz), Open::No("closed: thu 18:05".into()));
        // The shop's zone decides, not UTC: 16:00 in Chicago is 22:00 UTC.
        assert!(open(&h, at(2026, 12, 3, 16, 0)));
    }

    #[test]
    fn a_whole_day_and_bad_ranges() {
        assert_eq!(parse_ranges("00:00-24:00").unwrap(), vec![Range { start: 0, end: 1440 }]);
        assert_eq!(parse_ranges("closed").unwrap(), vec![]);
        for bad in ["8-17", "08:00", "17:00-08:00", "08:00-12:00,11:00-13:00", "08:00-24:30", "8:00-17:00"] {
            assert!(parse_ranges(bad).is_err(), "{bad}");
        }
        let c = HoursConfig { tue: Some("9 to 5".into()), ..HoursConfig::default() };
        let mut errs = Vec::new();
        c.validate(None, &mut errs);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|e| e.contains("hours.tue")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("twilio.front_desk")), "{text:?}");
    }
}
