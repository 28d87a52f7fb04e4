//! LED patterns as pure functions of the time since the pattern started.

use std::fmt;
use std::time::Duration;

use crate::config::{LedConfig, LedPatternKind};

/// A pattern with its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    /// Solid, blink or double-blink.
    pub kind: LedPatternKind,
    /// Length of one cycle (ignored by solid).
    pub period: Duration,
}

impl Pattern {
    /// The pattern of an LED config (its `pattern` and `period_ms`).
    pub fn from_config(led: &LedConfig) -> Self {
        Self { kind: led.pattern, period: Duration::from_millis(led.period_ms) }
    }

    /// On/off segments of one cycle, in eighths of the period, starting with on.
    fn eighths(self) -> Option<&'static [u32]> {
        match self.kind {
            LedPatternKind::Solid => None,
            LedPatternKind::Blink => Some(&[4, 4]),
            LedPatternKind::DoubleBlink => Some(&[1, 1, 1, 5]),
        }
    }

    /// Whether the LED is lit `t` after the pattern started.
    pub fn level(self, t: Duration) -> bool {
        let Some(segments) = self.eighths().filter(|_| !self.period.is_zero()) else { return true };
        let period = self.period.as_nanos();
        let pos = t.as_nanos() % period;
        let mut end = 0u128;
        for (i, eighths) in segments.iter().enumerate() {
            end += u128::from(*eighths);
            if pos < period * end / 8 {
                return i % 2 == 0;
            }
        }
        false
    }

    /// The first moment after `t` at which the level changes; `None` for a steady pattern.
    pub fn next_edge(self, t: Duration) -> Option<Duration> {
        let segments = self.eighths().filter(|_| !self.period.is_zero())?;
        let period = self.period.as_nanos();
        let now = t.as_nanos();
        let cycle_start = now - now % period;
        let mut end = 0u128;
        for eighths in segments {
            end += u128::from(*eighths);
            let edge = cycle_start + period * end / 8;
            if edge > now {
                return Some(nanos(edge));
            }
        }
        Some(nanos(cycle_start + period))
    }
}

fn nanos(n: u128) -> Duration {
    Duration::new(u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX), (n % 1_000_000_000) as u32)
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LedPatternKind::Solid => f.write_str("solid"),
            LedPatternKind::Blink => write!(f, "blink {} ms", self.period.as_millis()),
            LedPatternKind::DoubleBlink => write!(f, "double-blink {} ms", self.period.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn blink_is_half_on_half_off() {
        let p = Pattern { kind: LedPatternKind::Blink, period: ms(400) };
        let levels: Vec<bool> = [0, 199, 200, 399, 400, 650].iter().map(|t| p.level(ms(*t))).collect();
        assert_eq!(levels, [true, true, false, false, true, false]);
        assert_eq!(p.next_edge(ms(0)), Some(ms(200)));
        assert_eq!(p.next_edge(ms(200)), Some(ms(400)));
        assert_eq!(p.next_edge(ms(401)), Some(ms(600)));
    }

    #[test]
    fn double_blink_flashes_twice_per_period() {
        let p = Pattern { kind: LedPatternKind::DoubleBlink, period: ms(800) };
        let on: Vec<u64> = (0..800).step_by(50).filter(|t| p.level(ms(*t))).collect();
        assert_eq!(on, [0, 50, 200, 250]);
        let mut edges = vec![];
        let mut t = ms(0);
        while t < ms(1600) {
            t = p.next_edge(t).unwrap();
            edges.push(t.as_millis());
        }
        assert_eq!(edges, [100, 200, 300, 800, 900, 1000, 1100, 1600]);
    }

    #[test]
    fn solid_never_changes() {
        let p = Pattern { kind: LedPatternKind::Solid, period: ms(1000) };
        assert!(p.level(ms(0)) && p.level(ms(123_456)));
        assert_eq!(p.next_edge(ms(5)), None);
    }
}
