//! A bet and the rules it must satisfy.
//!
//! `BetRef` is a bet whose fields are bytes borrowed from a received message or
//! an agency CSV row: millions of bets are checked and passed through, and none
//! needs an allocation of its own. `BetRef::validate` applies every rule of the
//! protocol and returns a `ValidBet`, the only kind of bet the bets file accepts,
//! so "no control character (and so no line end) in a stored name" is a fact of
//! the type, not a convention of its callers. Both programs call the same rules.

pub(crate) mod calendar;
pub(crate) mod names;

use crate::text;
use calendar::Date;
use names::NameProblem;
use std::fmt;
use std::ops::Deref;

/// Longest first or last name, in bytes of UTF-8.
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Longest document (DNI), in ASCII digits.
pub(crate) const MAX_DOCUMENT_LEN: usize = 10;
/// Highest number a bet may play.
pub(crate) const MAX_NUMBER: u16 = 9999;
/// Earliest birth year accepted.
pub(crate) const MIN_BIRTH_YEAR: u32 = 1900;
/// Columns of an agency CSV row: first_name, last_name, document, birthdate, number.
pub(crate) const AGENCY_CSV_COLUMNS: usize = 5;
/// The number that wins the draw.
pub(crate) const WINNING_NUMBER: u16 = 7574;

/// Whether a bet on `number` wins the draw.
pub(crate) fn has_won(number: u16) -> bool {
    number == WINNING_NUMBER
}

/// A bet whose text fields are borrowed bytes, not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BetRef<'a> {
    pub first_name: &'a [u8],
    pub last_name: &'a [u8],
    pub document: &'a [u8],
    pub birthdate: &'a [u8],
    pub number: u16,
}

/// A bet that passed `BetRef::validate`: UTF-8 names without control
/// characters, an ASCII document and birthdate, a number up to 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValidBet<'a>(BetRef<'a>);

impl<'a> Deref for ValidBet<'a> {
    type Target = BetRef<'a>;

    fn deref(&self) -> &BetRef<'a> {
        &self.0
    }
}

/// One agency CSV row as the file reader split it: how many columns it has and
/// the first `AGENCY_CSV_COLUMNS` of them (missing ones are empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AgencyRow<'a> {
    pub columns: usize,
    pub fields: [&'a [u8]; AGENCY_CSV_COLUMNS],
}

/// Why a bet (or an agency CSV row) was refused. `Display` names the field, the
/// offending value where it is safe to show, and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BetError {
    /// A name is empty.
    EmptyName { field: &'static str },
    /// A name is longer than `MAX_NAME_LEN` bytes.
    NameTooLong { field: &'static str, len: usize },
    /// A name holds a control character (tab, newline, NUL...).
    ControlCharacter { field: &'static str },
    /// A name has no letter (blank, or only punctuation, digits or invisible characters).
    NoLetter { field: &'static str },
    /// A name is not valid UTF-8.
    NotUtf8 { field: &'static str },
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
            BetError::NoLetter { field } => write!(
                f,
                "{field} has no letter (a name must have at least one, so it is never blank or invisible)"
            ),
            BetError::NotUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            BetError::BadDocument { document } => write!(
                f,
                "document \"{document}\" is not 1 to {MAX_DOCUMENT_LEN} ASCII digits"
            ),
            BetError::BadBirthdate { birthdate } => write!(
                f,
                "birthdate \"{birthdate}\" is not a real date in the form YYYY-MM-DD"
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
                write!(f, "number \"{text}\" is not 1 to 4 ASCII digits")
            }
            BetError::WrongColumnCount { found } => write!(
                f,
                "the row has {found} columns, expected {AGENCY_CSV_COLUMNS} \
                 (first_name,last_name,document,birthdate,number)"
            ),
        }
    }
}

impl std::error::Error for BetError {}

/// A field's bytes for an error message: lossy UTF-8, at most 32 characters,
/// escaped (it comes from outside and ends up in logs).
fn shown(bytes: &[u8]) -> String {
    const SHOWN_CHARS: usize = 32;
    let text = String::from_utf8_lossy(bytes);
    let cut = match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    };
    text::escape(&cut)
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
    names::check_name(name).map_err(|problem| match problem {
        NameProblem::NotUtf8 => BetError::NotUtf8 { field },
        NameProblem::Control => BetError::ControlCharacter { field },
        NameProblem::NoLetter => BetError::NoLetter { field },
    })
}

/// Whether `document` is 1 to `MAX_DOCUMENT_LEN` ASCII digits. From eight
/// digits on (most documents), as two words, the second overlapping the first:
/// `is_document_plain` beside it reads byte by byte, a seeded differential test
/// keeps the two in agreement, and the words save each side 37 instructions per bet.
fn is_document(document: &[u8]) -> bool {
    let len = document.len();
    if (8..=MAX_DOCUMENT_LEN).contains(&len) {
        return text::ascii_digits(text::word_at(document, 0))
            && text::ascii_digits(text::word_at(document, len - 8));
    }
    is_document_plain(document)
}

fn is_document_plain(document: &[u8]) -> bool {
    (1..=MAX_DOCUMENT_LEN).contains(&document.len()) && document.iter().all(u8::is_ascii_digit)
}

fn validate_document(document: &[u8]) -> Result<(), BetError> {
    if is_document(document) {
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

impl<'a> BetRef<'a> {
    /// Checks every rule of the protocol against `today` (the caller's UTC date,
    /// passed in so that a whole batch is judged against one date and tests can
    /// pin it). Returns the first rule broken, in field order.
    pub fn validate(self, today: Date) -> Result<ValidBet<'a>, BetError> {
        validate_name("first_name", self.first_name)?;
        validate_name("last_name", self.last_name)?;
        validate_document(self.document)?;
        validate_birthdate(self.birthdate, today)?;
        if self.number > MAX_NUMBER {
            return Err(BetError::NumberOutOfRange {
                number: u32::from(self.number),
            });
        }
        Ok(ValidBet(self))
    }

    /// Reads one agency CSV row (`first_name,last_name,document,birthdate,number`)
    /// as a bet borrowed from the row, and validates it. Checks, in order: the
    /// column count, the number's text, then `validate`.
    pub fn from_agency_row(row: &AgencyRow<'a>, today: Date) -> Result<ValidBet<'a>, BetError> {
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
        bet.validate(today)
    }
}

/// Parses a CSV number: 1 to 4 ASCII digits, leading zeros allowed ("0042" is 42).
pub(crate) fn parse_number(bytes: &[u8]) -> Result<u16, BetError> {
    let bad = || BetError::BadNumberText { text: shown(bytes) };
    text::parse_digits(bytes, 4)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(bad)
}

/// An owned bet, for tests that build bets by hand.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bet {
    pub first_name: String,
    pub last_name: String,
    pub document: String,
    pub birthdate: String,
    pub number: u16,
}

#[cfg(test)]
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

    /// The bet, validated against a fixed date; panics if it breaks a rule.
    pub fn valid(&self) -> ValidBet<'_> {
        self.as_ref()
            .validate(tests::TODAY)
            .expect("a test bet follows the rules")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const TODAY: Date = Date {
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
        bet.as_ref().validate(TODAY).map(|_| ())
    }

    #[test]
    fn documents_read_as_words_agree_with_documents_read_byte_by_byte() {
        let mut rng = fastrand::Rng::with_seed(0x0D0C_0000_0000_0001);
        // Digits, and the bytes beside them or beside 0x30 + 6 carried.
        let odd = b"/:;?@ \x00\x7f\xb0\xb9\xff\x2a";
        let mut words = 0;
        for _ in 0..100_000 {
            let len = rng.usize(..13);
            let mut document: Vec<u8> = (0..len).map(|_| b'0' + rng.u8(..10)).collect();
            if rng.bool() && len > 0 {
                let at = rng.usize(..len);
                document[at] = odd[rng.usize(..odd.len())];
            }
            assert_eq!(
                is_document(&document),
                is_document_plain(&document),
                "{document:?}"
            );
            words += usize::from(len >= 8 && is_document(&document));
        }
        assert!(words > 10_000, "{words} documents read as words");
    }

    #[test]
    fn a_good_bet_passes() {
        assert_eq!(with(|_| {}), Ok(()));
        assert_eq!(with(|b| b.first_name = "José María Ñandú".into()), Ok(()));
        assert_eq!(with(|b| b.number = 0), Ok(()));
        assert_eq!(with(|b| b.number = 9999), Ok(()));
        assert_eq!(with(|b| b.birthdate = "2000-02-29".into()), Ok(()));
    }

    #[test]
    fn birthdates_must_be_real_dates_from_1900_to_today() {
        for bad in ["2023-02-29", "2024-04-31", "24-01-01", "2024/01/01", ""] {
            assert!(
                matches!(
                    with(|b| b.birthdate = bad.into()),
                    Err(BetError::BadBirthdate { .. })
                ),
                "{bad}"
            );
        }
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
            Err(BetError::NoLetter { field: "last_name" })
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
    fn long_values_are_shortened_in_messages() {
        let error = with(|b| b.document = "9".repeat(100)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&format!("{}...", "9".repeat(32))), "{text}");
        assert!(!text.contains(&"9".repeat(33)), "{text}");
    }
}
