//! Calendar dates: the birthdate rule's arithmetic and the log stamp's date.
//!
//! Proleptic Gregorian dates, today's date in UTC from the system clock, and the
//! conversion to and from days since 1970-01-01 (the "days from civil"
//! algorithm, counted in 400-year eras so that every step is exact).

use crate::text::bytes_below;
#[cfg(test)]
use crate::text::parse_digits;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar date, compared field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date {
    pub year: u32,
    pub month: u32,
    pub day: u32,
}

/// Days from 0000-03-01 to 1970-01-01 in the era count below.
const EPOCH_SHIFT_DAYS: u64 = 719_468;
/// Days in 400 Gregorian years.
const DAYS_PER_ERA: u64 = 146_097;

impl Date {
    /// Today's date in UTC. A clock set before 1970 reads as 1970-01-01.
    pub fn today_utc() -> Date {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Date::from_days_since_epoch(secs / 86_400)
    }

    /// The date `days` days after 1970-01-01.
    pub fn from_days_since_epoch(days: u64) -> Date {
        let z = days + EPOCH_SHIFT_DAYS;
        let era = z / DAYS_PER_ERA;
        let day_of_era = z - era * DAYS_PER_ERA;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        // Months counted from March, so that the leap day ends the year.
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        // Month and day are below 32 by construction; only the year can be large.
        Date {
            year: u32::try_from(year).unwrap_or(u32::MAX),
            month: u32::try_from(month).unwrap_or(12),
            day: u32::try_from(day).unwrap_or(31),
        }
    }

    /// Days from 1970-01-01 to this date; 0 for a date before 1970.
    pub fn days_since_epoch(self) -> u64 {
        let (year, month) = (u64::from(self.year), u64::from(self.month));
        let (year, shifted_month) = if month <= 2 {
            (year.saturating_sub(1), month + 9)
        } else {
            (year, month.saturating_sub(3))
        };
        let era = year / 400;
        let year_of_era = year - era * 400;
        let day_of_year = (153 * shifted_month + 2) / 5 + u64::from(self.day).saturating_sub(1);
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        (era * DAYS_PER_ERA + day_of_era).saturating_sub(EPOCH_SHIFT_DAYS)
    }

    /// Parses `YYYY-MM-DD` into a real date; `None` for any other shape or for a
    /// day that does not exist (2023-02-29, 2024-04-31, month 13...).
    ///
    /// The first eight bytes (`YYYY-MM-`) are checked as one word: `parse_plain`
    /// beside it reads them digit by digit, and a seeded differential test keeps
    /// the two in agreement. The word saves each side 10 instructions per bet.
    pub fn parse(bytes: &[u8]) -> Option<Date> {
        const HIGH: u64 = 0x8080_8080_8080_8080;
        const SHAPE: u64 = u64::from_le_bytes(*b"0000-00-");
        // The bytes of the two dashes (the word's fifth and eighth).
        const DASHES: u64 = 0xFF00_00FF_0000_0000;
        let [y1, y2, y3, y4, dash1, m1, m2, dash2, d1, d2] = *bytes else {
            return None;
        };
        // A digit becomes its value and a dash 0; any other byte, something else.
        let values = u64::from_le_bytes([y1, y2, y3, y4, dash1, m1, m2, dash2]) ^ SHAPE;
        let below_ten = bytes_below(values, 10);
        let (d1, d2) = (d1.wrapping_sub(b'0'), d2.wrapping_sub(b'0'));
        if below_ten != HIGH || values & DASHES != 0 || d1 > 9 || d2 > 9 {
            return None;
        }
        // Each byte is now below ten: the casts keep all of it.
        let digit = |i: u32| (values >> (8 * i)) as u8 as u32;
        let year = digit(0) * 1000 + digit(1) * 100 + digit(2) * 10 + digit(3);
        let month = digit(5) * 10 + digit(6);
        let day = u32::from(d1) * 10 + u32::from(d2);
        Date::real(year, month, day)
    }

    /// `parse`, digit by digit.
    #[cfg(test)]
    fn parse_plain(bytes: &[u8]) -> Option<Date> {
        let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = *bytes else {
            return None;
        };
        let digits =
            |bytes: &[u8]| parse_digits(bytes, bytes.len()).and_then(|n| u32::try_from(n).ok());
        let year = digits(&[y1, y2, y3, y4])?;
        let month = digits(&[m1, m2])?;
        let day = digits(&[d1, d2])?;
        Date::real(year, month, day)
    }

    /// The date, if it exists.
    fn real(year: u32, month: u32, day: u32) -> Option<Date> {
        let real = (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day);
        real.then_some(Date { year, month, day })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether `year` has a 29 February.
pub fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: u32, month: u32, day: u32) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn february_29_exists_only_in_leap_years() {
        assert!(Date::parse(b"2000-02-29").is_some());
        assert!(Date::parse(b"2024-02-29").is_some());
        for not_leap in ["1900-02-29", "2023-02-29", "2100-02-29"] {
            assert_eq!(Date::parse(not_leap.as_bytes()), None, "{not_leap}");
        }
    }

    #[test]
    fn impossible_and_malformed_dates_do_not_parse() {
        for bad in [
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "24-01-01",
            "2024/01/01",
            "2024-1-01",
            "abcd-ef-gh",
            "",
            "2024-01-011",
            "+024-01-01",
            "2024-0:-01",
            "2024-01-/1",
            "2:24-01-01",
            "2024-01-0\u{0}",
        ] {
            assert_eq!(Date::parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(Date::parse(b"1999-12-31"), Some(date(1999, 12, 31)));
        assert_eq!(Date::parse(b"2000-02-29"), Some(date(2000, 2, 29)));
        assert_eq!(Date::parse(b"1900-02-29"), None);
        assert_eq!(Date::parse(b"9999-09-09"), Some(date(9999, 9, 9)));
    }

    #[test]
    fn dates_read_as_a_word_agree_with_dates_read_digit_by_digit() {
        let mut rng = fastrand::Rng::with_seed(0x00DA_7E00_0000_0001);
        // Digits, the bytes beside them and beside the dash, and others.
        let odd = b"/:-,.+ \x00\xb0\xff";
        let mut parsed = 0;
        for _ in 0..200_000 {
            let mut text = format!(
                "{:04}-{:02}-{:02}",
                rng.u32(..10_000),
                rng.u32(..14),
                rng.u32(..33)
            )
            .into_bytes();
            for _ in 0..rng.usize(..3) {
                let at = rng.usize(..text.len());
                text[at] = odd[rng.usize(..odd.len())];
            }
            if rng.u8(..20) == 0 {
                text.truncate(rng.usize(..10));
            }
            let word = Date::parse(&text);
            assert_eq!(word, Date::parse_plain(&text), "{text:?}");
            parsed += usize::from(word.is_some());
        }
        assert!(parsed > 50_000, "{parsed} real dates");
    }

    #[test]
    fn days_since_epoch_convert_to_civil_dates_and_back() {
        assert_eq!(Date::from_days_since_epoch(0), date(1970, 1, 1));
        assert_eq!(Date::from_days_since_epoch(11_016), date(2000, 2, 29));
        assert_eq!(Date::from_days_since_epoch(20_786), date(2026, 11, 29));
        assert_eq!(Date::from_days_since_epoch(47_541), date(2100, 3, 1));
        for days in (0..200_000).step_by(7).chain([11_016, 47_540, 47_541]) {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        assert_eq!(date(1969, 12, 31).days_since_epoch(), 0);
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // From 1970 to 2400, against a plain day-by-day count.
        let mut expected = date(1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(Date::from_days_since_epoch(days), expected, "day {days}");
            let Date { year, month, day } = expected;
            expected = if day < days_in_month(year, month) {
                date(year, month, day + 1)
            } else if month < 12 {
                date(year, month + 1, 1)
            } else {
                date(year + 1, 1, 1)
            };
        }
    }
}
