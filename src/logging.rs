//! Log output shared by both programs.
//!
//! Every line is `TIMESTAMP LEVEL action: NAME | result: success|fail|in_progress | key: value ...`
//! on standard error; the message part is written at each call site as a plain
//! format string, so `grep` finds it in the code and in the logs alike.
//!
//! The timestamp is UTC with milliseconds (`2026-11-29T08:20:21.908Z`), written
//! here: the date library env_logger would use for it was the largest part of
//! a clean build.

use log::LevelFilter;
use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Starts logging at `level`. Safe to call once per process.
pub fn init(level: LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                UtcMillis::of(SystemTime::now()),
                record.level(),
                record.args()
            )
        })
        .init();
}

/// A point in time shown as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UtcMillis {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    since_epoch: u64,
}

impl UtcMillis {
    /// A clock set before 1970 shows as the epoch rather than failing the log line.
    fn of(time: SystemTime) -> UtcMillis {
        let since_epoch = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        UtcMillis { since_epoch }
    }
}

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MS_PER_DAY: u64 = 86_400_000;
        let (year, month, day) = civil_date(self.since_epoch / MS_PER_DAY);
        let ms = self.since_epoch % MS_PER_DAY;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// The Gregorian (year, month, day) of the day `days` after 1970-01-01.
///
/// Counts in 400-year eras (146,097 days each, the Gregorian cycle) of years
/// that start on March 1st, so the leap day is the last day of its year and
/// month lengths follow a fixed pattern from March on.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719,468 counted from 0000-03-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    // Years of 365 days, less the leap days of every 4th, 100th and 400th year.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: lengths 31 30 31 30 31 31 30 31 30 31 31 29|28 repeat
    // in the pattern (153 days per 5 months) that this line and the next invert.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shown(ms: u64) -> String {
        UtcMillis { since_epoch: ms }.to_string()
    }

    #[test]
    fn timestamps_read_as_utc_with_milliseconds() {
        assert_eq!(shown(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(shown(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(shown(1_709_164_800_999), "2024-02-29T00:00:00.999Z");
        assert_eq!(shown(1_796_034_021_908), "2026-11-30T10:20:21.908Z");
        assert_eq!(shown(4_102_444_799_001), "2099-12-31T23:59:59.001Z");
        assert_eq!(shown(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // From 1970 to 2400: each day is the previous one plus a day, months have
        // their Gregorian lengths, and 1970-01-01 starts the count.
        let days_in = |year: u64, month: u64| match month {
            2 if year.is_multiple_of(4)
                && (!year.is_multiple_of(100) || year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_date(days), expected, "day {days}");
            let (year, month, day) = expected;
            expected = if day < days_in(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
    }

    #[test]
    fn a_clock_before_1970_shows_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            UtcMillis::of(before).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
