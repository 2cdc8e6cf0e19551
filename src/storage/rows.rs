//! The byte format of one stored row, both ways.
//!
//! A row is `agency,first_name,last_name,document,birthdate,number\r\n`: the
//! reference `store_bets` layout, CSV with minimal quoting. Only the names can need
//! quotes (they may hold commas or double quotes; validation refuses control
//! characters, so no row spans lines). The agency, the document (ASCII digits),
//! the birthdate (`YYYY-MM-DD`) and the number never hold a comma or a quote.
//!
//! That last fact is what makes reading fast: `parse_row` takes the agency up to
//! the first comma and the document, birthdate and number after the last three,
//! borrowing them from the caller's buffer, and leaves the names as raw CSV. The
//! draw needs nothing more, so it allocates nothing per row; the names are only
//! unquoted when a caller asks for an owned bet (`StoredRow::to_bet`).

use crate::bet::{Bet, BetRef};

/// One stored row, borrowed from the buffer it was read into. The agency,
/// number and document are checked; the names and birthdate are only checked
/// by `to_bet`, which the draw does not need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRow<'a> {
    pub agency: u32,
    pub number: u16,
    /// ASCII digits, checked by `parse_row`.
    document: &'a [u8],
    /// `first_name,last_name` as written: CSV, possibly quoted.
    names: &'a [u8],
    birthdate: &'a [u8],
}

impl StoredRow<'_> {
    /// The bettor's document.
    pub fn document(&self) -> &str {
        std::str::from_utf8(self.document).expect("parse_row let only ASCII digits through")
    }

    /// The whole bet, names unquoted. Fails if the names are not two CSV fields
    /// of UTF-8 text or the birthdate is not UTF-8.
    pub fn to_bet(&self) -> Result<Bet, &'static str> {
        let (first_name, rest) = split_field(self.names)?;
        let rest = rest.ok_or("5 columns, expected 6")?;
        let (last_name, rest) = split_field(rest)?;
        if rest.is_some() {
            return Err("more than 6 columns");
        }
        let birthdate =
            std::str::from_utf8(self.birthdate).map_err(|_| "the birthdate is not UTF-8")?;
        Ok(Bet {
            first_name,
            last_name,
            document: self.document().to_string(),
            birthdate: birthdate.to_string(),
            number: self.number,
        })
    }
}

/// Appends the rows of several bets of one agency to `out` (the agency's digits
/// are formatted once).
pub fn write_rows<'a>(out: &mut Vec<u8>, agency: u32, bets: impl IntoIterator<Item = BetRef<'a>>) {
    let mut prefix = Vec::with_capacity(11);
    write_decimal(&mut prefix, u64::from(agency));
    prefix.push(b',');
    for bet in bets {
        out.extend_from_slice(&prefix);
        write_name(out, bet.first_name);
        out.push(b',');
        write_name(out, bet.last_name);
        out.push(b',');
        out.extend_from_slice(bet.document);
        out.push(b',');
        out.extend_from_slice(bet.birthdate);
        out.push(b',');
        write_decimal(out, u64::from(bet.number));
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `value` in decimal without going through a `String`.
fn write_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `value % 10` is below 10, so the cast cannot truncate.
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes a name, quoted only if it holds a comma or a quote (`"` doubled inside).
fn write_name(out: &mut Vec<u8>, name: &[u8]) {
    if !name.iter().any(|b| matches!(b, b',' | b'"')) {
        out.extend_from_slice(name);
        return;
    }
    out.push(b'"');
    for &b in name {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Parses one row, without its line end (`\n`, optionally preceded by `\r`).
/// The error says what is wrong with it, for the caller to name the row.
///
/// This is the draw's inner loop, so each field is found and checked in one
/// pass over its bytes: the agency from the left, then the number, birthdate
/// and document from the right.
pub fn parse_row(line: &[u8]) -> Result<StoredRow<'_>, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (agency, rest) = split_leading_number(line).ok_or("the agency is not a number")?;
    let (rest, number) = split_trailing_number(rest).ok_or("the bet number is not a number")?;
    let (rest, birthdate) = split_birthdate(rest).ok_or("too few columns, expected 6")?;
    let (names, document) =
        split_trailing_digits(rest).ok_or("the document is not ASCII digits")?;
    // Two names hold at least the comma between them, quoted or not.
    if !names.contains(&b',') {
        return Err("5 columns, expected 6");
    }
    Ok(StoredRow {
        agency: u32::try_from(agency).map_err(|_| "the agency is not a number")?,
        number: u16::try_from(number).map_err(|_| "the bet number is not a number")?,
        document,
        names,
        birthdate,
    })
}

/// Digits a stored number can have: the agency is a `u32`, the number a `u16`.
const MAX_DIGITS: usize = 10;

/// `bytes` split at the comma after its leading number: (number, rest).
/// `None` unless 1 to `MAX_DIGITS` digits and then a comma start `bytes`.
fn split_leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (at, &b) in bytes.iter().enumerate().take(MAX_DIGITS + 1) {
        match b {
            b'0'..=b'9' => value = value * 10 + u64::from(b - b'0'),
            b',' if at > 0 => return Some((value, &bytes[at + 1..])),
            _ => return None,
        }
    }
    None
}

/// `bytes` split at the comma before its trailing number: (rest, number).
/// `None` unless a comma and then 1 to `MAX_DIGITS` digits end `bytes`.
fn split_trailing_number(bytes: &[u8]) -> Option<(&[u8], u64)> {
    let mut value = 0u64;
    let mut place = 1u64;
    for (digits, &b) in bytes.iter().rev().enumerate().take(MAX_DIGITS + 1) {
        match b {
            b'0'..=b'9' => {
                value += place * u64::from(b - b'0');
                place *= 10;
            }
            b',' if digits > 0 => return Some((&bytes[..bytes.len() - digits - 1], value)),
            _ => return None,
        }
    }
    None
}

/// `bytes` split at the comma before its trailing ASCII digits: (rest, digits).
/// `None` unless there is at least one digit and a comma before them.
fn split_trailing_digits(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let comma = bytes.len().checked_sub(digits + 1)?;
    (digits > 0 && bytes[comma] == b',').then(|| (&bytes[..comma], &bytes[comma + 1..]))
}

/// `bytes` split at its last comma: (rest, birthdate). A stored birthdate is
/// `YYYY-MM-DD`, which holds no comma, so that shape is recognised without a
/// search; anything else falls back to looking for the comma.
fn split_birthdate(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let comma = match bytes.len().checked_sub(11) {
        Some(at) if is_comma_and_date(&bytes[at..]) => at,
        _ => bytes.iter().rposition(|&b| b == b',')?,
    };
    Some((&bytes[..comma], &bytes[comma + 1..]))
}

/// Whether `tail` is exactly `,YYYY-MM-DD` (digits and dashes in place).
fn is_comma_and_date(tail: &[u8]) -> bool {
    let Ok(tail) = <&[u8; 11]>::try_from(tail) else {
        return false;
    };
    let digit = |at: usize| tail[at].is_ascii_digit();
    tail[0] == b','
        && tail[5] == b'-'
        && tail[8] == b'-'
        && digit(1)
        && digit(2)
        && digit(3)
        && digit(4)
        && digit(6)
        && digit(7)
        && digit(9)
        && digit(10)
}

/// Splits the first CSV field off `input`: the field's text, and what follows
/// the comma after it (`None` if the field ends the input).
fn split_field(input: &[u8]) -> Result<(String, Option<&[u8]>), &'static str> {
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| "a name is not UTF-8");
    let Some(quoted) = input.strip_prefix(b"\"") else {
        let end = input.iter().position(|&b| b == b',');
        let field = &input[..end.unwrap_or(input.len())];
        if field.contains(&b'"') {
            return Err("a quote inside an unquoted name");
        }
        return Ok((text(field.to_vec())?, end.map(|at| &input[at + 1..])));
    };
    let mut field = Vec::new();
    let mut bytes = quoted.iter().enumerate();
    while let Some((at, &b)) = bytes.next() {
        if b != b'"' {
            field.push(b);
            continue;
        }
        match quoted.get(at + 1) {
            // A doubled quote is one quote of the name.
            Some(b'"') => {
                field.push(b'"');
                bytes.next();
            }
            None => return Ok((text(field)?, None)),
            Some(b',') => return Ok((text(field)?, Some(&quoted[at + 2..]))),
            Some(_) => return Err("text after a closing quote"),
        }
    }
    Err("a quoted name is not closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bet(first: &str, last: &str, number: u16) -> Bet {
        Bet {
            first_name: first.into(),
            last_name: last.into(),
            document: "30904465".into(),
            birthdate: "1999-03-17".into(),
            number,
        }
    }

    #[test]
    fn rows_are_written_as_the_reference_writes_them() {
        let mut out = Vec::new();
        write_rows(&mut out, 3, [bet("Ana", "Gómez", 42).as_ref()]);
        write_rows(
            &mut out,
            1000,
            [bet("O\"Brien, Jr", "Pérez", 7574).as_ref()],
        );
        write_rows(&mut out, 0, [bet("A", "B", 0).as_ref()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "3,Ana,Gómez,30904465,1999-03-17,42\r\n\
             1000,\"O\"\"Brien, Jr\",Pérez,30904465,1999-03-17,7574\r\n\
             0,A,B,30904465,1999-03-17,0\r\n"
        );
    }

    #[test]
    fn every_written_row_parses_back_to_the_same_bet() {
        let names = [
            "Ana",
            "Gómez",
            "a,b",
            "\"",
            "\"\"",
            ",",
            "x\"y,z\"",
            "José María",
            "\"a\",",
        ];
        for first in names {
            for last in names {
                let bet = bet(first, last, 7574);
                let mut line = Vec::new();
                write_rows(&mut line, 4_000_000_000, [bet.as_ref()]);
                let row = parse_row(line.strip_suffix(b"\n").unwrap()).unwrap();
                assert_eq!(row.agency, 4_000_000_000);
                assert_eq!((row.document(), row.number), ("30904465", 7574));
                assert_eq!(row.to_bet(), Ok(bet), "{}", String::from_utf8_lossy(&line));
            }
        }
    }

    #[test]
    fn broken_rows_say_what_is_wrong() {
        let cases: [(&[u8], &str); 11] = [
            (b"", "agency"),
            (b"1,2000-01-01,5", "too few columns"),
            (b"x,A,B,1,2000-01-01,1", "agency"),
            (b"99999999999,A,B,1,2000-01-01,1", "agency"),
            (b"1,A,B", "number"),
            (b"1,AB,1,2000-01-01,1", "5 columns"),
            (b"1,A,B,1,2000-01-01,", "number"),
            (b"1,A,B,1,2000-01-01,70000", "number"),
            (b"1,A,B,,2000-01-01,1", "document"),
            (b"1,A,B,\"1\",2000-01-01,1", "document"),
            (b"1,A,B,1,2000-01-01,1\r\r", "number"),
        ];
        for (line, reason) in cases {
            let error = parse_row(line).unwrap_err();
            assert!(error.contains(reason), "{line:?}: {error}");
        }
    }

    #[test]
    fn broken_names_are_found_when_the_bet_is_built() {
        let cases: [(&[u8], &str); 6] = [
            (b"1,A,B,C,1,2000-01-01,1", "more than 6"),
            (b"1,\"A,B,1,2000-01-01,1", "not closed"),
            (b"1,\"A\"x,B,1,2000-01-01,1", "after a closing quote"),
            (b"1,A\",B,1,2000-01-01,1", "quote inside"),
            (b"1,\xff,B,1,2000-01-01,1", "name is not UTF-8"),
            (b"1,A,B,1,\xff,1", "birthdate"),
        ];
        for (line, reason) in cases {
            let error = parse_row(line).unwrap().to_bet().unwrap_err();
            assert!(error.contains(reason), "{line:?}: {error}");
        }
    }
}
