//! Wall-clock time as RFC 3339 text, without a calendar crate, and the [`Clock`] that code with
//! side effects reads time through (the system's, or a fixed one in tests). A leaf: it uses no
//! other module of the crate.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC, by the system clock (0 if it is set before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-11-22T23:04:05Z` for a count of seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3_600, (rem % 3_600) / 60, rem % 60)
}

/// The system clock as RFC 3339 text (`2026-11-22T23:04:05Z`).
pub fn now_rfc3339() -> String {
    rfc3339(now_unix())
}

/// Where time is read: the wall clock (for what is recorded, such as a state's `appliedAt`) and a
/// monotonic clock (for durations: how long a step took, what is left of a health timeout).
/// [`SystemClock`] is the machine's; [`FixedClock`] never moves, so tests see the same times on
/// every run.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch, UTC.
    fn now_unix(&self) -> u64;

    /// A point of the monotonic clock; durations are differences of two of them.
    fn instant(&self) -> Instant;

    /// The wall clock as RFC 3339 text (`2026-11-22T23:04:05Z`).
    fn now_rfc3339(&self) -> String {
        rfc3339(self.now_unix())
    }

    /// The time from `earlier` (a value of [`Clock::instant`]) to now; zero if `earlier` is later.
    fn since(&self, earlier: Instant) -> std::time::Duration {
        self.instant().saturating_duration_since(earlier)
    }
}

/// The machine's clocks ([`SystemTime`] and [`Instant`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        now_unix()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still: the wall clock at the seconds it was made with, the monotonic
/// clock at the instant it was made (every duration measured with it is zero). For tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock {
    unix: u64,
    instant: Instant,
}

impl FixedClock {
    /// A clock that always says `unix` (seconds since the Unix epoch, UTC).
    pub fn at(unix: u64) -> Self {
        FixedClock { unix, instant: Instant::now() }
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.unix
    }

    fn instant(&self) -> Instant {
        self.instant
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_388_645), "2026-11-22T23:04:05Z");
    }

    #[test]
    fn a_fixed_clock_stands_still() {
        use super::Clock;
        let clock = super::FixedClock::at(1_795_388_645);
        let start = clock.instant();
        assert_eq!(clock.now_rfc3339(), "2026-11-22T23:04:05Z");
        assert_eq!(clock.since(start), std::time::Duration::ZERO);
    }
}
