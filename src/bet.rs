//! A bet and the rules it must satisfy.
//!
//! This module owns the `Bet` value and its validation (`BetRef::validate`), the
//! calendar arithmetic the birthdate rule needs (leap years, today's UTC date),
//! and the parsing of one agency CSV row into a bet. It knows nothing of sockets
//! or files: the server and the client both call it, so both apply the same rules.
//!
//! `BetRef` is a bet whose fields are bytes borrowed from a received message or
//! a CSV row: the server and the client check and copy millions of bets, and a
//! bet that is only passed through needs no allocation and no UTF-8 decoding of
//! its own. Only a name that is not plain ASCII letters is decoded, to check it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest first or last name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// Longest document (DNI), in ASCII digits.
pub const MAX_DOCUMENT_LEN: usize = 10;
/// Highest number a bet may play.
pub const MAX_NUMBER: u16 = 9999;
/// Earliest birth year accepted.
pub const MIN_BIRTH_YEAR: u32 = 1900;
/// Columns of an agency CSV row: first_name, last_name, document, birthdate, number.
pub const AGENCY_CSV_COLUMNS: usize = 5;

/// One bet as it travels on the wire and is stored, before or after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bet {
    pub first_name: String,
    pub last_name: String,
    pub document: String,
    pub birthdate: String,
    pub number: u16,
}

/// A bet whose text fields are borrowed bytes (from a message body, a CSV row or
/// a `Bet`). They are text once `validate` has passed: UTF-8 names, ASCII
/// document and birthdate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BetRef<'a> {
    pub first_name: &'a [u8],
    pub last_name: &'a [u8],
    pub document: &'a [u8],
    pub birthdate: &'a [u8],
    pub number: u16,
}

/// One agency CSV row as the file reader split it: how many columns it has and
/// the first `AGENCY_CSV_COLUMNS` of them (missing ones are empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgencyRow<'a> {
    pub columns: usize,
    pub fields: [&'a [u8]; AGENCY_CSV_COLUMNS],
}

/// A calendar date (proleptic Gregorian), compared field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: u32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Today's date in UTC, from the system clock.
    pub fn today_utc() -> Date {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Date::from_days_since_epoch(secs / 86_400)
    }

    /// The civil date `days` days after 1970-01-01 (the "days from civil" inverse,
    /// counted in 400-year eras so every step is exact integer arithmetic).
    pub fn from_days_since_epoch(days: u64) -> Date {
        let z = days + 719_468;
        let era = z / 146_097;
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        Date {
            year: u32::try_from(year).unwrap_or(u32::MAX),
            month: month as u32,
            day: day as u32,
        }
    }

    /// Days from 1970-01-01 to this date (the "days from civil" count, inverse of
    /// `from_days_since_epoch`); 0 for a date before 1970.
    pub fn days_since_epoch(self) -> u64 {
        let (year, month) = (u64::from(self.year), u64::from(self.month));
        // Counted from March, so that the leap day ends a year.
        let (year, shifted_month) = if month <= 2 {
            (year.saturating_sub(1), month + 9)
        } else {
            (year, month.saturating_sub(3))
        };
        let era = year / 400;
        let year_of_era = year - era * 400;
        let day_of_year = (153 * shifted_month + 2) / 5 + u64::from(self.day).saturating_sub(1);
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        (era * 146_097 + day_of_era).saturating_sub(719_468)
    }

    /// Parses `YYYY-MM-DD` into a real calendar date; `None` for any other shape
    /// or for a day that does not exist (2023-02-29, 2024-04-31, month 13...).
    pub fn parse(bytes: &[u8]) -> Option<Date> {
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let year = parse_digits(&bytes[0..4])?;
        let month = parse_digits(&bytes[5..7])?;
        let day = parse_digits(&bytes[8..10])?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn parse_digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Whether `year` has a 29 February in the Gregorian calendar.
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

/// Why a bet (or an agency CSV row) was refused. `Display` names the field, the
/// offending value where it is safe to show, and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BetError {
    /// A name is empty.
    EmptyName { field: &'static str },
    /// A name is longer than `MAX_NAME_LEN` bytes.
    NameTooLong { field: &'static str, len: usize },
    /// A name holds a control character (tab, newline, NUL...).
    ControlCharacter { field: &'static str },
    /// A name is made only of whitespace.
    BlankName { field: &'static str },
    /// The document is not 1 to 10 ASCII digits.
    BadDocument { document: String },
    /// The birthdate is not a real `YYYY-MM-DD` date.
    BadBirthdate { birthdate: String },
    /// The birthdate is before `MIN_BIRTH_YEAR`.
    BirthdateTooEarly { birthdate: String },
    /// The birthdate is after today's date.
    BirthdateInFuture { birthdate: String, today: Date },
    /// The number is above `MAX_NUMBER`.
    NumberOutOfRange { number: u32 },
    /// A CSV number is not 1 to 4 ASCII digits.
    BadNumberText { text: String },
    /// A CSV row does not have the five columns.
    WrongColumnCount { found: usize },
    /// A CSV field is not valid UTF-8.
    NotUtf8 { field: &'static str },
}

impl fmt::Display for BetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BetError::EmptyName { field } => write!(f, "{field} is empty"),
            BetError::NameTooLong { field, len } => write!(
                f,
                "{field} is {len} bytes long, the limit is {MAX_NAME_LEN} bytes"
            ),
            BetError::ControlCharacter { field } => {
                write!(f, "{field} contains a control character")
            }
            BetError::BlankName { field } => write!(f, "{field} is only whitespace"),
            BetError::BadDocument { document } => write!(
                f,
                "document {:?} is not 1 to {MAX_DOCUMENT_LEN} ASCII digits",
                shorten(document)
            ),
            BetError::BadBirthdate { birthdate } => write!(
                f,
                "birthdate {:?} is not a real date in the form YYYY-MM-DD",
                shorten(birthdate)
            ),
            BetError::BirthdateTooEarly { birthdate } => write!(
                f,
                "birthdate {birthdate} is before the year {MIN_BIRTH_YEAR}"
            ),
            BetError::BirthdateInFuture { birthdate, today } => {
                write!(f, "birthdate {birthdate} is after today ({today}, UTC)")
            }
            BetError::NumberOutOfRange { number } => {
                write!(f, "number {number} is outside 0..={MAX_NUMBER}")
            }
            BetError::BadNumberText { text } => {
                write!(f, "number {:?} is not 1 to 4 ASCII digits", shorten(text))
            }
            BetError::WrongColumnCount { found } => write!(
                f,
                "the row has {found} columns, expected {AGENCY_CSV_COLUMNS} \
                 (first_name,last_name,document,birthdate,number)"
            ),
            BetError::NotUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
        }
    }
}

impl std::error::Error for BetError {}

/// Keeps error messages short when a field is huge: its first 32 characters.
fn shorten(text: &str) -> String {
    const SHOWN_CHARS: usize = 32;
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

fn validate_name(field: &'static str, name: &[u8]) -> Result<(), BetError> {
    if name.is_empty() {
        return Err(BetError::EmptyName { field });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BetError::NameTooLong {
            field,
            len: name.len(),
        });
    }
    // One pass over the bytes settles the common case, a name of ASCII and
    // Latin-1 letters ("Nicolás Ñandú"): it is UTF-8, its control characters are
    // the bytes below 0x20 and 0x7F, and it is blank unless a character is
    // visible. Anything else is decoded and checked character by character.
    let mut visible = false;
    let mut at = 0;
    while let Some(&b) = name.get(at) {
        match b {
            0x21..=0x7E => visible = true,
            b' ' => {}
            0x00..=0x1F | 0x7F => return Err(BetError::ControlCharacter { field }),
            _ if is_latin1_letter(name, at) => {
                visible = true;
                at += 1;
            }
            _ => return validate_unicode_name(field, name),
        }
        at += 1;
    }
    if visible {
        Ok(())
    } else {
        Err(BetError::BlankName { field })
    }
}

/// Whether `text[at..]` starts with U+00C0..=U+00FF (À to ÿ: accented letters,
/// `×` and `÷`), encoded as 0xC3 then 0x80..=0xBF. None of them is a control
/// character or whitespace, and the pair is valid UTF-8 on its own.
fn is_latin1_letter(text: &[u8], at: usize) -> bool {
    text.get(at) == Some(&0xC3) && matches!(text.get(at + 1), Some(0x80..=0xBF))
}

/// Whether `bytes` are UTF-8: one pass for the usual ASCII and Latin-1 letters,
/// the full decoder for anything else.
pub fn is_utf8(bytes: &[u8]) -> bool {
    // Plain ASCII (documents, dates, most names) is checked a word at a time.
    if bytes.is_ascii() {
        return true;
    }
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        if b < 0x80 {
            at += 1;
        } else if is_latin1_letter(bytes, at) {
            at += 2;
        } else {
            return std::str::from_utf8(&bytes[at..]).is_ok();
        }
    }
    true
}

/// The rules for a name with characters beyond ASCII and Latin-1 letters.
fn validate_unicode_name(field: &'static str, name: &[u8]) -> Result<(), BetError> {
    let name = std::str::from_utf8(name).map_err(|_| BetError::NotUtf8 { field })?;
    if name.chars().any(char::is_control) {
        return Err(BetError::ControlCharacter { field });
    }
    if name.chars().all(char::is_whitespace) {
        return Err(BetError::BlankName { field });
    }
    Ok(())
}

/// A field's bytes for an error message (they may not be UTF-8).
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn validate_document(document: &[u8]) -> Result<(), BetError> {
    let ok =
        (1..=MAX_DOCUMENT_LEN).contains(&document.len()) && document.iter().all(u8::is_ascii_digit);
    if ok {
        Ok(())
    } else {
        Err(BetError::BadDocument {
            document: shown(document),
        })
    }
}

fn validate_birthdate(birthdate: &[u8], today: Date) -> Result<(), BetError> {
    let date = Date::parse(birthdate).ok_or_else(|| BetError::BadBirthdate {
        birthdate: shown(birthdate),
    })?;
    if date.year < MIN_BIRTH_YEAR {
        return Err(BetError::BirthdateTooEarly {
            birthdate: shown(birthdate),
        });
    }
    if date > today {
        return Err(BetError::BirthdateInFuture {
            birthdate: shown(birthdate),
            today,
        });
    }
    Ok(())
}

impl Bet {
    /// The bet, borrowed.
    pub fn as_ref(&self) -> BetRef<'_> {
        BetRef {
            first_name: self.first_name.as_bytes(),
            last_name: self.last_name.as_bytes(),
            document: self.document.as_bytes(),
            birthdate: self.birthdate.as_bytes(),
            number: self.number,
        }
    }

    /// Checks every rule of the protocol: see `BetRef::validate`.
    pub fn validate(&self, today: Date) -> Result<(), BetError> {
        self.as_ref().validate(today)
    }
}

impl<'a> BetRef<'a> {
    /// Checks every rule of the protocol against `today` (the caller's UTC date,
    /// passed in so that a whole batch is judged against one date and tests can
    /// pin it). Returns the first rule broken, in field order.
    pub fn validate(&self, today: Date) -> Result<(), BetError> {
        validate_name("first_name", self.first_name)?;
        validate_name("last_name", self.last_name)?;
        validate_document(self.document)?;
        validate_birthdate(self.birthdate, today)?;
        if self.number > MAX_NUMBER {
            return Err(BetError::NumberOutOfRange {
                number: u32::from(self.number),
            });
        }
        Ok(())
    }

    /// Reads one agency CSV row (`first_name,last_name,document,birthdate,number`)
    /// as a bet borrowed from the row, and validates it. Checks, in order: the
    /// column count, the number's text, then `validate` (whose name checks
    /// include UTF-8).
    pub fn from_agency_row(row: &AgencyRow<'a>, today: Date) -> Result<Self, BetError> {
        if row.columns != AGENCY_CSV_COLUMNS {
            return Err(BetError::WrongColumnCount { found: row.columns });
        }
        let [first_name, last_name, document, birthdate, number] = row.fields;
        let bet = BetRef {
            first_name,
            last_name,
            document,
            birthdate,
            number: parse_number(number)?,
        };
        bet.validate(today)?;
        Ok(bet)
    }
}

/// Parses a CSV number: 1 to 4 ASCII digits, leading zeros allowed ("0042" is 42).
pub fn parse_number(bytes: &[u8]) -> Result<u16, BetError> {
    let bad = || BetError::BadNumberText { text: shown(bytes) };
    if bytes.is_empty() || bytes.len() > 4 {
        return Err(bad());
    }
    parse_digits(bytes)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: Date = Date {
        year: 2026,
        month: 11,
        day: 29,
    };

    fn good_bet() -> Bet {
        Bet {
            first_name: "Santiago Lionel".into(),
            last_name: "Lorca".into(),
            document: "30904465".into(),
            birthdate: "1999-03-17".into(),
            number: 7574,
        }
    }

    fn with(change: impl FnOnce(&mut Bet)) -> Result<(), BetError> {
        let mut bet = good_bet();
        change(&mut bet);
        bet.validate(TODAY)
    }

    #[test]
    fn a_good_bet_passes() {
        assert_eq!(good_bet().validate(TODAY), Ok(()));
        assert_eq!(with(|b| b.first_name = "José María Ñandú".into()), Ok(()));
        assert_eq!(with(|b| b.number = 0), Ok(()));
        assert_eq!(with(|b| b.number = 9999), Ok(()));
    }

    #[test]
    fn february_29_exists_only_in_leap_years() {
        assert_eq!(with(|b| b.birthdate = "2000-02-29".into()), Ok(()));
        assert_eq!(with(|b| b.birthdate = "2024-02-29".into()), Ok(()));
        for not_leap in ["1900-02-29", "2023-02-29", "2100-02-29"] {
            assert!(matches!(
                with(|b| b.birthdate = not_leap.into()),
                Err(BetError::BadBirthdate { .. })
            ));
        }
    }

    #[test]
    fn impossible_and_malformed_dates_are_refused() {
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
        ] {
            assert!(
                matches!(
                    with(|b| b.birthdate = bad.into()),
                    Err(BetError::BadBirthdate { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_future_birthdate_is_refused_and_today_is_accepted() {
        assert_eq!(with(|b| b.birthdate = "2026-11-29".into()), Ok(()));
        assert!(matches!(
            with(|b| b.birthdate = "2026-11-30".into()),
            Err(BetError::BirthdateInFuture { .. })
        ));
        assert!(matches!(
            with(|b| b.birthdate = "1899-12-31".into()),
            Err(BetError::BirthdateTooEarly { .. })
        ));
    }

    #[test]
    fn number_10000_is_out_of_range() {
        assert_eq!(
            with(|b| b.number = 10000),
            Err(BetError::NumberOutOfRange { number: 10000 })
        );
    }

    #[test]
    fn documents_are_one_to_ten_digits() {
        assert_eq!(with(|b| b.document = "1".into()), Ok(()));
        assert_eq!(with(|b| b.document = "1234567890".into()), Ok(()));
        for bad in ["12345678901", "", "12a45", "-1234", "１２３"] {
            assert!(
                matches!(
                    with(|b| b.document = bad.into()),
                    Err(BetError::BadDocument { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_refuse_control_characters_empty_blank_and_too_long() {
        assert_eq!(
            with(|b| b.first_name = "Ana\tMaría".into()),
            Err(BetError::ControlCharacter {
                field: "first_name"
            })
        );
        assert_eq!(
            with(|b| b.last_name = "Pérez\u{85}".into()),
            Err(BetError::ControlCharacter { field: "last_name" })
        );
        assert_eq!(
            with(|b| b.first_name = String::new()),
            Err(BetError::EmptyName {
                field: "first_name"
            })
        );
        assert_eq!(
            with(|b| b.last_name = " \u{3000} ".into()),
            Err(BetError::BlankName { field: "last_name" })
        );
        assert_eq!(with(|b| b.last_name = "a".repeat(255)), Ok(()));
        assert_eq!(
            with(|b| b.last_name = "a".repeat(256)),
            Err(BetError::NameTooLong {
                field: "last_name",
                len: 256
            })
        );
        // The limit counts bytes, not characters: 128 two-byte letters are 256 bytes.
        assert!(matches!(
            with(|b| b.last_name = "ñ".repeat(128)),
            Err(BetError::NameTooLong { .. })
        ));
    }

    #[test]
    fn days_since_epoch_convert_to_civil_dates() {
        let d = |y, m, d| Date {
            year: y,
            month: m,
            day: d,
        };
        assert_eq!(Date::from_days_since_epoch(0), d(1970, 1, 1));
        assert_eq!(Date::from_days_since_epoch(11_016), d(2000, 2, 29));
        assert_eq!(Date::from_days_since_epoch(20_786), d(2026, 11, 29));
        assert_eq!(Date::from_days_since_epoch(47_541), d(2100, 3, 1));
        for days in (0..200_000).step_by(7).chain([11_016, 47_540, 47_541]) {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        assert_eq!(d(1969, 12, 31).days_since_epoch(), 0);
    }

    #[test]
    fn every_day_follows_the_one_before() {
        // From 1970 to 2400: each day is the previous one plus a day, months have
        // their Gregorian lengths, and 1970-01-01 starts the count.
        let days_in = |year: u32, month: u32| match month {
            2 if year.is_multiple_of(4)
                && (!year.is_multiple_of(100) || year.is_multiple_of(400)) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected: (u32, u32, u32) = (1970, 1, 1);
        for days in 0..157_000 {
            let (year, month, day) = expected;
            assert_eq!(
                Date::from_days_since_epoch(days),
                Date { year, month, day },
                "day {days}"
            );
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
    fn csv_numbers_are_one_to_four_digits() {
        assert_eq!(parse_number(b"0042"), Ok(42));
        assert_eq!(parse_number(b"7574"), Ok(7574));
        for bad in ["", "10000", "12a", "-1", " 12"] {
            assert!(parse_number(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn agency_rows_need_five_columns_and_utf8_names() {
        let row = |fields: &[&'static [u8]]| {
            let mut row = AgencyRow {
                columns: fields.len(),
                ..AgencyRow::default()
            };
            for (slot, field) in row.fields.iter_mut().zip(fields) {
                *slot = field;
            }
            row
        };
        let good = row(&[b"Ana", b"Gil", b"123", b"2000-01-01", b"0001"]);
        assert_eq!(
            BetRef::from_agency_row(&good, TODAY).map(|b| b.number),
            Ok(1)
        );
        let short = row(&[b"Ana", b"Gil", b"123", b"2000-01-01"]);
        assert_eq!(
            BetRef::from_agency_row(&short, TODAY),
            Err(BetError::WrongColumnCount { found: 4 })
        );
        let long = row(&[b"Ana", b"Gil", b"123", b"2000-01-01", b"1", b"x"]);
        assert_eq!(
            BetRef::from_agency_row(&long, TODAY),
            Err(BetError::WrongColumnCount { found: 6 })
        );
        let bad_utf8 = row(&[b"An\xffa", b"Gil", b"123", b"2000-01-01", b"1"]);
        assert_eq!(
            BetRef::from_agency_row(&bad_utf8, TODAY),
            Err(BetError::NotUtf8 {
                field: "first_name"
            })
        );
        let bad_document = row(&[b"Ana", b"Gil", b"12\xff", b"2000-01-01", b"1"]);
        assert!(matches!(
            BetRef::from_agency_row(&bad_document, TODAY),
            Err(BetError::BadDocument { .. })
        ));
    }

    #[test]
    fn latin1_letters_take_the_short_path_and_agree_with_the_decoder() {
        let samples: [&[u8]; 9] = [
            b"Nicol\xc3\xa1s",
            "Ñandú ×÷ ÿ".as_bytes(),
            b"\xc3",
            b"ab\xc3\x28",
            b"\xc3\xc3\xa1",
            b"\xc2\xa0",
            "José \u{2003}María 日本".as_bytes(),
            b"\xed\xa0\x80",
            b"",
        ];
        for bytes in samples {
            assert_eq!(
                is_utf8(bytes),
                std::str::from_utf8(bytes).is_ok(),
                "{bytes:?}"
            );
        }
        assert_eq!(with(|b| b.first_name = "Ñandú Pérez ×".into()), Ok(()));
        assert_eq!(
            validate_name("first_name", b"\xc3"),
            Err(BetError::NotUtf8 {
                field: "first_name"
            })
        );
        assert_eq!(
            validate_name("first_name", b"Jos\xc3\xa9\x01"),
            Err(BetError::ControlCharacter {
                field: "first_name"
            })
        );
    }

    #[test]
    fn names_of_letters_and_spaces_need_a_letter() {
        assert_eq!(with(|b| b.first_name = "Ana María".into()), Ok(()));
        assert_eq!(
            with(|b| b.first_name = "   ".into()),
            Err(BetError::BlankName {
                field: "first_name"
            })
        );
        assert_eq!(
            with(|b| b.last_name = "\u{a0}\u{2003}".into()),
            Err(BetError::BlankName { field: "last_name" })
        );
        assert_eq!(
            with(|b| b.last_name = "Gil\u{85}".into()),
            Err(BetError::ControlCharacter { field: "last_name" })
        );
    }
}
