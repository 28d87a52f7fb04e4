//! Is the clock plausible? A Raspberry Pi without RTC boots in the past until NTP answers;
//! ordering or judging certificates then would either fail ("not yet valid") or throw away a
//! good certificate. The binary's build time is a safe lower bound for "now".

use jiff::Timestamp;

/// When this binary was built (seconds since the epoch, embedded by build.rs).
pub fn build_time() -> Timestamp {
    let secs = env!("CALLBOX_BUILD_UNIX_SECS").parse::<i64>().unwrap_or(0);
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `None` when `now` can be trusted, otherwise why not.
pub fn implausible(now: Timestamp) -> Option<String> {
    let built = build_time();
    (now < built).then(|| {
        format!("the system clock ({now}) is before this program was built ({built}); waiting for time sync (NTP)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_before_the_build_is_implausible_and_says_why() {
        let before = build_time() - jiff::SignedDuration::from_hours(24 * 400);
        let why = implausible(before).unwrap();
        assert!(why.contains("before this program was built"), "{why}");
        assert!(implausible(Timestamp::now()).is_none());
    }
}
