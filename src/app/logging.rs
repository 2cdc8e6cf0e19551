//! Log output shared by both programs.
//!
//! Every line is `TIMESTAMP LEVEL action: NAME | result: success|fail|in_progress | key: value ...`
//! on standard error; the message part is written at each call site as a plain
//! format string, so `grep` finds it in the code and in the logs alike.
//!
//! Nothing from outside reaches a log raw: values are escaped where a line puts
//! them (`text::escape`), and every line is escaped again as it is written
//! (`text::escape_line`), so no text can end a line, forge another or reach the
//! terminal as an escape sequence, whatever place forgot.
//!
//! `LOG_PREFIX`, when set, starts every line (`make run` names each program's
//! lines with it). Each line goes out in one write, so programs that share one
//! terminal or one log file appended to interleave whole lines, in the order
//! they were written: the order of the events.
//!
//! The timestamp is UTC with milliseconds (`2026-11-29T08:20:21.908Z`), written
//! here: the date library env_logger would use for it was the largest part of
//! a clean build. `stamp_ms` reads it back, for whoever times the programs by
//! their logs (the tests and the bench).

use super::settings::LOG_PREFIX;
use crate::bet::calendar::Date;
use crate::text::{escape_line, parse_digits};
use log::LevelFilter;
use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest `LOG_PREFIX` kept.
const MAX_PREFIX_LEN: usize = 32;

/// The line prefix `LOG_PREFIX` asks for: printable ASCII of at most
/// `MAX_PREFIX_LEN` bytes, so it can never forge a line or reach the terminal
/// raw; `Err` with the reason for anything else.
fn line_prefix(value: Option<std::ffi::OsString>) -> Result<String, &'static str> {
    let Some(value) = value else {
        return Ok(String::new());
    };
    match value.into_string() {
        Ok(text)
            if text.len() <= MAX_PREFIX_LEN && text.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
        {
            Ok(text)
        }
        _ => Err("LOG_PREFIX must be at most 32 printable ASCII characters; it was ignored"),
    }
}

/// Starts logging at `level`; `set_level` changes it later (a program logs its
/// configuration errors before it knows the level it is configured for). Call
/// it once per process.
pub fn init(level: LevelFilter) {
    let prefix = line_prefix(std::env::var_os(LOG_PREFIX.name));
    let shown = prefix.clone().unwrap_or_default();
    env_logger::Builder::new()
        .filter_level(LevelFilter::Trace)
        // env_logger formats the whole line, then writes it with one call.
        .format(move |buf, record| {
            let message = record.args().to_string();
            writeln!(
                buf,
                "{shown}{} {:<5} {}",
                UtcMillis::of(SystemTime::now()),
                record.level(),
                escape_line(&message)
            )
        })
        .init();
    set_level(level);
    if let Err(reason) = prefix {
        log::warn!("action: config | result: in_progress | detail: {reason}");
    }
}

/// Logs only lines at `level` or more severe from now on.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

const MS_PER_DAY: u64 = 86_400_000;

/// Milliseconds since 1970 of the `YYYY-MM-DDTHH:MM:SS.mmmZ` stamp that starts a
/// log line written by `init`'s format; `None` if the line does not start with
/// one. The tests and the bench time the programs by these stamps.
pub fn stamp_ms(line: &str) -> Option<u64> {
    let bytes = line.as_bytes();
    let date = Date::parse(bytes.get(..10)?)?;
    let time: [u8; 14] = bytes.get(10..24)?.try_into().ok()?;
    let [
        b'T',
        h1,
        h2,
        b':',
        m1,
        m2,
        b':',
        s1,
        s2,
        b'.',
        f1,
        f2,
        f3,
        b'Z',
    ] = time
    else {
        return None;
    };
    let number = |digits: &[u8]| parse_digits(digits, digits.len());
    let (hour, minute, second) = (number(&[h1, h2])?, number(&[m1, m2])?, number(&[s1, s2])?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let milli = number(&[f1, f2, f3])?;
    Some(date.days_since_epoch() * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + milli)
}

/// A point in time shown as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Debug, Clone, Copy)]
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
        let Date { year, month, day } = Date::from_days_since_epoch(self.since_epoch / MS_PER_DAY);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_prefix_is_short_printable_ascii_or_ignored() {
        assert_eq!(line_prefix(None), Ok(String::new()));
        assert_eq!(
            line_prefix(Some("client3 | ".into())),
            Ok("client3 | ".to_string())
        );
        for bad in ["a\nb", "\x1b[31m", "ñ", &"x".repeat(33)] {
            assert!(line_prefix(Some(bad.into())).is_err(), "{bad:?}");
        }
    }
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
    fn stamps_read_back_as_milliseconds_since_1970() {
        for ms in [
            0,
            951_782_400_123,
            951_868_800_000,
            1_709_164_800_999,
            1_709_208_000_500,
            1_796_034_021_908,
            253_402_300_799_999,
        ] {
            let line = format!("{} INFO  action: x | result: success", shown(ms));
            assert_eq!(stamp_ms(&line), Some(ms), "{line}");
        }
        assert_eq!(stamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(stamp_ms("2000-03-01T00:00:00.000Z"), Some(951_868_800_000));
        assert_eq!(
            stamp_ms("2024-02-29T12:00:00.500Z"),
            Some(1_709_208_000_500)
        );
        // Across midnight (and a year's end) the difference stays right.
        let before = stamp_ms("2026-12-31T23:59:59.999Z").unwrap();
        let after = stamp_ms("2027-01-01T00:00:00.001Z").unwrap();
        assert_eq!(after - before, 2);
        for bad in [
            "not a stamp",
            "2026-02-30T00:00:00.000Z",
            "2026-11-29T24:00:00.000Z",
            "2026-11-29 10:00:00.000Z",
            "2026-11-29T10:00:00.00Z",
        ] {
            assert_eq!(stamp_ms(bad), None, "{bad}");
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
