//! The byte format of one stored row, both ways.
//!
//! A row is `agency,first_name,last_name,document,birthdate,number\r\n`: the
//! reference `store_bets` layout, CSV with minimal quoting. Only the names can need
//! quotes (they may hold commas or double quotes; a `ValidBet` holds no control
//! character, so no row spans lines). The agency, the document (ASCII digits),
//! the birthdate (`YYYY-MM-DD`) and the number never hold a comma or a quote.
//!
//! So `parse_row` takes the agency up to the first comma and the document,
//! birthdate and number after the last three, borrowing them from the caller's
//! buffer, and leaves the names as raw CSV: the draw needs nothing more, and
//! allocates nothing per row. `StoredRow::check_names` reads the names' CSV
//! without copying them, for a restart that must trust every row.

use crate::bet::{MAX_DOCUMENT_LEN, MAX_NAME_LEN, ValidBet};
use crate::text::{all_words, byte_mask, copy_short, parse_digits};

/// One stored row, borrowed from the buffer it was read into. The agency,
/// number and document are checked by `parse_row`; the names by `check_names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredRow<'a> {
    pub agency: u32,
    pub number: u16,
    /// ASCII digits.
    document: &'a [u8],
    /// `first_name,last_name` as written: CSV, possibly quoted.
    names: &'a [u8],
    birthdate: &'a [u8],
}

impl<'a> StoredRow<'a> {
    /// The bettor's document: 1 to 10 ASCII digits.
    pub fn document(&self) -> &'a [u8] {
        self.document
    }

    /// Checks that the names are two CSV fields of UTF-8 text and the birthdate
    /// is UTF-8, without copying anything.
    pub fn check_names(&self) -> Result<(), &'static str> {
        let (first, rest) = split_field(self.names)?;
        let rest = rest.ok_or("5 columns, expected 6")?;
        let (last, rest) = split_field(rest)?;
        if rest.is_some() {
            return Err("more than 6 columns");
        }
        if std::str::from_utf8(first).is_err() || std::str::from_utf8(last).is_err() {
            return Err("a name is not UTF-8");
        }
        if std::str::from_utf8(self.birthdate).is_err() {
            return Err("the birthdate is not UTF-8");
        }
        Ok(())
    }

    /// Appends the bet's wire encoding, as inside a BETS body (names unquoted,
    /// the number as its value): the bytes its agency's digest is made of.
    pub fn encode_wire(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let (first, rest) = split_field(self.names)?;
        let (last, rest) = split_field(rest.ok_or("5 columns, expected 6")?)?;
        if rest.is_some() {
            return Err("more than 6 columns".into());
        }
        put_unquoted(out, first)?;
        put_unquoted(out, last)?;
        put_unquoted(out, self.document)?;
        put_unquoted(out, self.birthdate)?;
        out.extend_from_slice(&self.number.to_be_bytes());
        Ok(())
    }

    /// The stored bet, checked with the same rules as a live bet (`today` is the
    /// day it is judged against). `encoded` is a scratch buffer: the names,
    /// unquoted, are borrowed from it.
    pub fn check_bet<'b>(
        &self,
        encoded: &'b mut Vec<u8>,
        today: crate::bet::calendar::Date,
    ) -> Result<(), String>
    where
        'a: 'b,
    {
        encoded.clear();
        self.encode_wire(encoded)?;
        // `encode_wire` wrote each name as a u16 length and its bytes.
        let first_len = usize::from(u16::from_be_bytes([encoded[0], encoded[1]]));
        let last_at = 2 + first_len;
        let last_len = usize::from(u16::from_be_bytes([encoded[last_at], encoded[last_at + 1]]));
        let bet = crate::bet::BetRef {
            first_name: &encoded[2..last_at],
            last_name: &encoded[last_at + 2..last_at + 2 + last_len],
            document: self.document,
            birthdate: self.birthdate,
            number: self.number,
        };
        bet.validate(today).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The whole bet, names unquoted (tests compare stored bets with sent ones).
    #[cfg(test)]
    pub fn to_bet(self) -> Result<crate::bet::Bet, &'static str> {
        self.check_names()?;
        let (first, rest) = split_field(self.names)?;
        let (last, _) = split_field(rest.unwrap_or_default())?;
        let text = |raw: &[u8]| String::from_utf8(unquote(raw)).map_err(|_| "not UTF-8");
        Ok(crate::bet::Bet {
            first_name: text(first)?,
            last_name: text(last)?,
            document: text(self.document)?,
            birthdate: text(self.birthdate)?,
            number: self.number,
        })
    }
}

/// Longest row of a valid bet: a ten-digit agency, both names quoted with
/// every byte a doubled quote, the document, the birthdate, five digits (a
/// `u16`), five commas and the line end.
const MAX_ROW_LEN: usize = 10 + 2 * (2 + 2 * MAX_NAME_LEN) + MAX_DOCUMENT_LEN + 10 + 5 + 5 + 2;
/// Room added at a time to the rows being written.
const ROOM_STEP: usize = 4 * 1024;

/// Room for rows, kept from one batch to the next: it is made (zeroed) once
/// for a connection, not for every batch.
#[derive(Default)]
pub(crate) struct RowBuffer {
    room: Vec<u8>,
}

impl RowBuffer {
    /// The rows of several bets of one agency, in place of the last ones.
    ///
    /// Each row is written in place, in room made ahead for the longest row,
    /// its short fields copied as words (`copy_short`) rather than pushed one by
    /// one through calls: `write_rows_plain` beside it pushes them, a seeded
    /// differential test keeps the two in agreement, and with the room kept
    /// between batches it saves the server 55 instructions per bet.
    pub fn write<'a>(
        &mut self,
        agency: u32,
        bets: impl IntoIterator<Item = &'a ValidBet<'a>>,
    ) -> &[u8] {
        // The agency and its comma, copied as one sixteen-byte word per row.
        let (digits, start) = decimal_digits(u64::from(agency));
        let mut prefix = [b','; 16];
        let prefix_len = digits.len() - start + 1;
        prefix[..prefix_len - 1].copy_from_slice(&digits[start..]);
        let mut end = 0;
        for bet in bets {
            if self.room.len() < end + MAX_ROW_LEN {
                self.room.resize(end + ROOM_STEP.max(MAX_ROW_LEN), 0);
            }
            end += write_row(&mut self.room[end..], &prefix, prefix_len, bet);
        }
        &self.room[..end]
    }
}

/// Writes a bet's row at the start of `row`, which has room for `MAX_ROW_LEN`
/// bytes; returns its length. A field may be written past its end with bytes
/// the next field overwrites.
fn write_row(row: &mut [u8], prefix: &[u8; 16], prefix_len: usize, bet: &ValidBet<'_>) -> usize {
    row[..16].copy_from_slice(prefix);
    let mut at = put_name(row, prefix_len, bet.first_name);
    row[at] = b',';
    at = put_name(row, at + 1, bet.last_name);
    row[at] = b',';
    at += 1;
    copy_short(&mut row[at..at + bet.document.len()], bet.document);
    at += bet.document.len();
    row[at] = b',';
    at += 1;
    // A valid birthdate is ten bytes: copied as such.
    match <&[u8; 10]>::try_from(bet.birthdate) {
        Ok(date) => row[at..at + 10].copy_from_slice(date),
        Err(_) => copy_short(&mut row[at..at + bet.birthdate.len()], bet.birthdate),
    }
    at += bet.birthdate.len();
    row[at] = b',';
    at += 1;
    at += put_number(&mut row[at..], bet.number);
    row[at..at + 2].copy_from_slice(b"\r\n");
    at + 2
}

/// Writes a name at `row[at..]`, quoted only if it holds a comma or a quote;
/// returns where it ends.
fn put_name(row: &mut [u8], mut at: usize, name: &[u8]) -> usize {
    if !needs_quotes(name) {
        copy_short(&mut row[at..at + name.len()], name);
        return at + name.len();
    }
    row[at] = b'"';
    at += 1;
    for &b in name {
        if b == b'"' {
            row[at] = b'"';
            at += 1;
        }
        row[at] = b;
        at += 1;
    }
    row[at] = b'"';
    at + 1
}

/// Writes a bet's number in decimal at the start of `row`, a digit at a time
/// (at most five: a call to copy them would cost more than the digits);
/// returns how many.
fn put_number(row: &mut [u8], number: u16) -> usize {
    let len = match number {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let mut value = number;
    for digit in row[..len].iter_mut().rev() {
        // `value % 10` is below 10, so the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    len
}

/// `write_rows`, field by field onto the end of `out`.
#[cfg(test)]
pub(crate) fn write_rows_plain<'a>(
    out: &mut Vec<u8>,
    agency: u32,
    bets: impl IntoIterator<Item = &'a ValidBet<'a>>,
) {
    let (digits, start) = decimal_digits(u64::from(agency));
    let mut prefix = digits[start..].to_vec();
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
        let (digits, start) = decimal_digits(u64::from(bet.number));
        out.extend_from_slice(&digits[start..]);
        out.extend_from_slice(b"\r\n");
    }
}

/// `value`'s decimal digits: the buffer and where they start in it.
fn decimal_digits(mut value: u64) -> ([u8; 20], usize) {
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
    (digits, start)
}

/// Whether a name holds a comma or a quote, eight bytes at a time in words
/// that cover it (`all_words`; names are short: a vectorised search costs more
/// to set up, a byte loop more to run). Covering the tail with a word, not a
/// byte loop, saved the server 51 instructions per bet.
fn needs_quotes(name: &[u8]) -> bool {
    let clean = all_words(name, |word| {
        byte_mask(word, b',') | byte_mask(word, b'"') == 0
    });
    match clean {
        Some(clean) => !clean,
        None => name.iter().any(|&b| b == b',' || b == b'"'),
    }
}

/// Writes a name, quoted only if it holds a comma or a quote (a `"` inside doubled).
#[cfg(test)]
fn write_name(out: &mut Vec<u8>, name: &[u8]) {
    if !needs_quotes(name) {
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
pub(crate) fn parse_row(line: &[u8]) -> Result<StoredRow<'_>, &'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (agency, rest) = split_leading_number(line).ok_or("the agency is not a number")?;
    let (rest, number) = split_trailing_number(rest).ok_or("the bet number is not a number")?;
    let comma = rest
        .iter()
        .rposition(|&b| b == b',')
        .ok_or("too few columns, expected 6")?;
    let (rest, birthdate) = (&rest[..comma], &rest[comma + 1..]);
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

/// The agency and the number of a row, all the draw needs of a row that does
/// not win: the digits before its first comma and after its last. `None` where
/// they are not such numbers (then `parse_row` says what is wrong). It stands
/// beside `parse_row`, which splits the whole row, and agrees with it on every
/// row that one accepts (a seeded differential test); it saves the draw most
/// of the work of a row.
pub(crate) fn agency_and_number(line: &[u8]) -> Option<(u32, u16)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Both numbers are short: each is valued as it is scanned, from its end of
    // the row, with no search set up and no second pass over its digits.
    let mut first = 0;
    let mut agency = 0u64;
    while let Some(&byte) = line.get(first) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if first == MAX_DIGITS {
            return None;
        }
        agency = agency * 10 + u64::from(digit);
        first += 1;
    }
    if first == 0 || line.get(first) != Some(&b',') {
        return None;
    }
    let mut last = line.len();
    let (mut number, mut place) = (0u64, 1u64);
    while last > first + 1 {
        let digit = line[last - 1].wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if line.len() - last == MAX_DIGITS {
            return None;
        }
        number += u64::from(digit) * place;
        place *= 10;
        last -= 1;
    }
    if last == line.len() || last <= first + 1 || line[last - 1] != b',' {
        return None;
    }
    Some((u32::try_from(agency).ok()?, u16::try_from(number).ok()?))
}

/// Digits a stored number can have: the agency is a `u32`, the number a `u16`.
const MAX_DIGITS: usize = 10;

/// `bytes` split at the comma after its leading number: (number, rest).
fn split_leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let comma = bytes.iter().take(MAX_DIGITS + 1).position(|&b| b == b',')?;
    let value = number(&bytes[..comma])?;
    Some((value, &bytes[comma + 1..]))
}

/// `bytes` split at the comma before its trailing number: (rest, number).
fn split_trailing_number(bytes: &[u8]) -> Option<(&[u8], u64)> {
    let (rest, digits) = split_trailing_digits(bytes)?;
    (digits.len() <= MAX_DIGITS).then_some(())?;
    Some((rest, number(digits)?))
}

/// The value of 1 to `MAX_DIGITS` ASCII digits.
fn number(digits: &[u8]) -> Option<u64> {
    parse_digits(digits, MAX_DIGITS)
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

/// Splits the first CSV field off `input`: the field as written (quotes
/// included), and what follows the comma after it (`None` if the field ends
/// the input).
fn split_field(input: &[u8]) -> Result<(&[u8], Option<&[u8]>), &'static str> {
    if !input.starts_with(b"\"") {
        let end = input.iter().position(|&b| b == b',');
        let field = &input[..end.unwrap_or(input.len())];
        if field.contains(&b'"') {
            return Err("a quote inside an unquoted name");
        }
        return Ok((field, end.map(|at| &input[at + 1..])));
    }
    let mut at = 1;
    while at < input.len() {
        if input[at] != b'"' {
            at += 1;
            continue;
        }
        match input.get(at + 1) {
            // A doubled quote is one quote of the name.
            Some(b'"') => at += 2,
            None => return Ok((input, None)),
            Some(b',') => return Ok((&input[..=at], Some(&input[at + 2..]))),
            Some(_) => return Err("text after a closing quote"),
        }
    }
    Err("a quoted name is not closed")
}

/// Appends a field as `split_field` returns it, as a str16 without its quotes
/// (a doubled quote inside is one quote).
fn put_unquoted(out: &mut Vec<u8>, raw: &[u8]) -> Result<(), &'static str> {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    match raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
        Some(inner) => {
            let mut quote = false;
            for &b in inner {
                // `split_field` let through only doubled quotes: keep one of each pair.
                quote = b == b'"' && !quote;
                if !quote {
                    out.push(b);
                }
            }
        }
        None => out.extend_from_slice(raw),
    }
    let len = u16::try_from(out.len() - at - 2).map_err(|_| "a field longer than any bet's")?;
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A field as `split_field` returns it, without its quotes.
#[cfg(test)]
fn unquote(raw: &[u8]) -> Vec<u8> {
    match raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
        Some(inner) => String::from_utf8_lossy(inner)
            .replace("\"\"", "\"")
            .into_bytes(),
        None => raw.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::Bet;

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
    fn rows_written_in_place_agree_with_rows_pushed_field_by_field() {
        let mut rng = fastrand::Rng::with_seed(0x0071_0077_0000_0001);
        let pieces = ["a", "Zo", " ", "ñ", ",", "\"", "O'", "語", "Ana Gil"];
        let name = |rng: &mut fastrand::Rng| {
            let mut s = String::from("N");
            let long = rng.u8(..20) == 0;
            while rng.u8(..6) != 0 || (long && s.len() < 200) {
                s.push_str(pieces[rng.usize(..pieces.len())]);
            }
            s.truncate(s.floor_char_boundary(255));
            s
        };
        let (mut rows, mut buffer) = (0, RowBuffer::default());
        for round in 0..300 {
            let agency = match round % 4 {
                0 => rng.u32(..10),
                1 => u32::MAX - rng.u32(..10),
                _ => rng.u32(..),
            };
            let bets: Vec<Bet> = (0..rng.usize(..400))
                .map(|_| Bet {
                    first_name: name(&mut rng),
                    last_name: name(&mut rng),
                    document: "9876543210"[..1 + rng.usize(..10)].into(),
                    birthdate: "1999-03-17".into(),
                    number: [0, 9, 10, 99, 100, 999, 1000, 9999][rng.usize(..8)]
                        .max(rng.u16(..=9999) * u16::from(rng.bool())),
                })
                .collect();
            let valid: Vec<ValidBet> = bets.iter().map(Bet::valid).collect();
            // One buffer for every round, as a connection writes batch after batch.
            let in_place = buffer.write(agency, &valid);
            let mut pushed = Vec::new();
            write_rows_plain(&mut pushed, agency, &valid);
            assert_eq!(
                String::from_utf8_lossy(in_place),
                String::from_utf8_lossy(&pushed)
            );
            rows += valid.len();
        }
        assert!(rows > 50_000, "{rows} rows");
    }

    fn row_of(agency: u32, bet: &Bet) -> Vec<u8> {
        RowBuffer::default().write(agency, [&bet.valid()]).to_vec()
    }

    #[test]
    fn rows_are_written_as_the_reference_writes_them() {
        let mut out = row_of(3, &bet("Ana", "Gómez", 42));
        out.extend(row_of(1000, &bet("O\"Brien, Jr", "Pérez", 7574)));
        out.extend(row_of(0, &bet("A", "B", 0)));
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
            "\"x",
            "x\"\"",
            ",y",
            "x\"y,z\"",
            "José María",
            "\"a\",",
        ];
        for first in names {
            for last in names {
                let bet = bet(first, last, 7574);
                let line = row_of(4_000_000_000, &bet);
                let row = parse_row(line.strip_suffix(b"\n").unwrap()).unwrap();
                assert_eq!(row.agency, 4_000_000_000);
                assert_eq!((row.document(), row.number), (&b"30904465"[..], 7574));
                assert_eq!(row.check_names(), Ok(()));
                // Read back, the bet hashes as the bytes that were sent.
                let (mut sent, mut read) = (Vec::new(), Vec::new());
                crate::wire::encode_bet(bet.as_ref(), &mut sent).unwrap();
                row.encode_wire(&mut read).unwrap();
                assert_eq!(read, sent, "{}", String::from_utf8_lossy(&line));
                assert_eq!(row.to_bet(), Ok(bet), "{}", String::from_utf8_lossy(&line));
            }
        }
    }

    #[test]
    fn the_word_at_a_time_quote_check_agrees_with_a_byte_loop() {
        let mut rng = fastrand::Rng::with_seed(0x0071_0073_0000);
        let alphabet = b"ab,\"\xc3\xa1 -\x80\xff\x2c\x22\x2d\x21\x23\xac\xa2";
        let mut answers = [0; 2];
        for _ in 0..50_000 {
            // Mostly letters, so that a comma or quote is as often missing as not.
            let name: Vec<u8> = (0..rng.usize(..40))
                .map(|_| match rng.u8(..60) {
                    0..=3 => alphabet[rng.usize(..alphabet.len())],
                    _ => b'a' + rng.u8(..26),
                })
                .collect();
            let plain = name.iter().any(|&b| b == b',' || b == b'"');
            assert_eq!(needs_quotes(&name), plain, "{name:?}");
            answers[usize::from(plain)] += 1;
        }
        assert!(answers.iter().all(|&n| n > 5_000), "{answers:?}");
    }

    #[test]
    fn the_draw_read_refuses_numbers_too_long_or_missing() {
        for line in [
            &b"12345678901,A,B,1,2000-01-01,5"[..],
            b"1,A,B,1,2000-01-01,12345678901",
            b"4294967296,A,B,1,2000-01-01,5",
            b"1,A,B,1,2000-01-01,65536",
            b"1,A,B,1,2000-01-01,",
            b",A,B,1,2000-01-01,5",
            b"1,5",
            b"15",
            b"",
        ] {
            assert_eq!(agency_and_number(line), None, "{line:?}");
        }
        assert_eq!(
            agency_and_number(b"4294967295,A,1,65535\r"),
            Some((u32::MAX, 65535))
        );
        assert_eq!(agency_and_number(b"0000000001,A,0000000007"), Some((1, 7)));
    }

    #[test]
    fn the_draw_read_agrees_with_the_whole_row_on_every_row_it_accepts() {
        let mut rng = fastrand::Rng::with_seed(0x00D4_A3F0_0D00);
        let names = ["Ana", "a,b", "\"x", "José Ñandú", "x\"y,z\""];
        let (mut agreed, mut fell_back) = (0, 0);
        for _ in 0..20_000 {
            let bet = bet(
                names[rng.usize(..names.len())],
                names[rng.usize(..names.len())],
                rng.u16(..10_000),
            );
            let mut line = row_of(rng.u32(..), &bet);
            // Without its `\n`, as the reader hands it over (a `\r` may stay).
            line.truncate(line.len() - 1);
            for _ in 0..rng.usize(..3) {
                let at = rng.usize(..line.len());
                line[at] = *b",0\"\r9a".get(rng.usize(..6)).unwrap_or(&b'x');
            }
            match (parse_row(&line), agency_and_number(&line)) {
                (Ok(row), fast) => {
                    assert_eq!(
                        fast,
                        Some((row.agency, row.number)),
                        "{}",
                        String::from_utf8_lossy(&line)
                    );
                    agreed += 1;
                }
                (Err(_), None) => fell_back += 1,
                // A row the draw reads leniently: its agency and number are whole.
                (Err(_), Some(_)) => {}
            }
        }
        assert!(
            agreed > 10_000 && fell_back > 100,
            "{agreed} agreed, {fell_back} fell back"
        );
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
    fn broken_names_are_found_by_the_check() {
        let cases: [(&[u8], &str); 6] = [
            (b"1,A,B,C,1,2000-01-01,1", "more than 6"),
            (b"1,\"A,B,1,2000-01-01,1", "not closed"),
            (b"1,\"A\"x,B,1,2000-01-01,1", "after a closing quote"),
            (b"1,A\",B,1,2000-01-01,1", "quote inside"),
            (b"1,\xff,B,1,2000-01-01,1", "name is not UTF-8"),
            (b"1,A,B,1,\xff,1", "birthdate"),
        ];
        for (line, reason) in cases {
            let error = parse_row(line).unwrap().check_names().unwrap_err();
            assert!(error.contains(reason), "{line:?}: {error}");
        }
    }
}
