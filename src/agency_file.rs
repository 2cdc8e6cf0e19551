//! An agency's CSV file, read row by row for the client.
//!
//! Rows are `first_name,last_name,document,birthdate,number`, no header. Almost
//! every row is plain: no double quote anywhere. Such a row is split here, in one
//! pass over bytes borrowed from a 256 KiB buffer, exactly as the `csv` crate
//! splits it: the fields are the bytes between commas, `\r`, `\n` or `\r\n` ends
//! a row, and empty lines are skipped. The first row that holds a double quote
//! hands the rest of the file, from that row on, to the `csv` crate, which knows
//! quoting; so a file reads the same either way, and the common case runs
//! several times faster than through the general CSV state machine.

use crate::bet::{AGENCY_CSV_COLUMNS, AgencyRow};
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;

/// Bytes read from the file at a time.
const READ_LEN: usize = 256 * 1024;

/// What a byte means to the plain-row scanner.
const ORDINARY: u8 = 0;
const COMMA: u8 = 1;
const ROW_END: u8 = 2;
const QUOTE: u8 = 3;

/// `BYTE_CLASS[b]`: one table lookup per byte instead of four comparisons.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [ORDINARY; 256];
    table[b',' as usize] = COMMA;
    table[b'\r' as usize] = ROW_END;
    table[b'\n' as usize] = ROW_END;
    table[b'"' as usize] = QUOTE;
    table
};

type QuotedReader = csv::Reader<io::Chain<Cursor<Vec<u8>>, File>>;

/// Rows of one agency file. `next_row` lends each row without allocating.
pub struct AgencyFile {
    /// `None` once the rest of the file went to `quoted`.
    file: Option<File>,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    /// The `csv` reader that takes over at the first quoted row.
    quoted: Option<(QuotedReader, csv::ByteRecord)>,
}

impl AgencyFile {
    /// Opens the file.
    pub fn open(path: &Path) -> io::Result<AgencyFile> {
        Ok(AgencyFile {
            file: Some(File::open(path)?),
            buf: vec![0; READ_LEN],
            start: 0,
            end: 0,
            eof: false,
            quoted: None,
        })
    }

    /// The next row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> io::Result<Option<AgencyRow<'_>>> {
        if self.quoted.is_none() {
            match self.next_plain_row()? {
                PlainRow::Row { start, end, commas } => {
                    return Ok(Some(split_row(&self.buf[start..end], &commas)));
                }
                PlainRow::End => return Ok(None),
                PlainRow::Quoted => self.hand_over_to_csv()?,
            }
        }
        let Some((reader, record)) = self.quoted.as_mut() else {
            return Ok(None);
        };
        if !reader.read_byte_record(record)? {
            return Ok(None);
        }
        let mut row = AgencyRow {
            columns: record.len(),
            ..AgencyRow::default()
        };
        for (slot, field) in row.fields.iter_mut().zip(record.iter()) {
            *slot = field;
        }
        Ok(Some(row))
    }

    /// Finds the next non-empty row in the buffer, refilling it as needed.
    fn next_plain_row(&mut self) -> io::Result<PlainRow> {
        loop {
            let scan = scan_row(&self.buf[self.start..self.end]);
            let row_start = self.start;
            let row_end = match scan.stop {
                Some(len) => {
                    if self.buf[row_start + len] == b'"' {
                        return Ok(PlainRow::Quoted);
                    }
                    self.start += len + 1;
                    row_start + len
                }
                // No row end in the buffer: the file's last row, or read more.
                None if self.eof => {
                    self.start = self.end;
                    self.end
                }
                None => {
                    self.refill()?;
                    continue;
                }
            };
            if row_end == row_start {
                if self.eof && self.start == self.end {
                    return Ok(PlainRow::End);
                }
                continue; // an empty line, or the `\n` of a `\r\n`
            }
            return Ok(PlainRow::Row {
                start: row_start,
                end: row_end,
                commas: scan.commas,
            });
        }
    }

    /// Moves the unread bytes to the front and reads more after them (growing
    /// the buffer if one row fills it).
    fn refill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let Some(file) = self.file.as_mut() else {
            self.eof = true;
            return Ok(());
        };
        let n = loop {
            match file.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => break result?,
            }
        };
        self.end += n;
        self.eof = n == 0;
        Ok(())
    }

    /// From the row at `start` on, the `csv` crate reads the file.
    fn hand_over_to_csv(&mut self) -> io::Result<()> {
        let rest = self.buf[self.start..self.end].to_vec();
        self.start = self.end;
        let Some(file) = self.file.take() else {
            return Err(io::Error::other("the agency file was already handed over"));
        };
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(READ_LEN)
            .from_reader(Cursor::new(rest).chain(file));
        self.quoted = Some((reader, csv::ByteRecord::new()));
        Ok(())
    }
}

enum PlainRow {
    Row {
        start: usize,
        end: usize,
        commas: Commas,
    },
    End,
    /// The next row holds a double quote.
    Quoted,
}

/// The commas of a row: how many, and where the first `AGENCY_CSV_COLUMNS` are.
#[derive(Default)]
struct Commas {
    count: usize,
    at: [usize; AGENCY_CSV_COLUMNS],
}

impl Commas {
    fn push(&mut self, at: usize) {
        if let Some(slot) = self.at.get_mut(self.count) {
            *slot = at;
        }
        self.count += 1;
    }
}

struct Scan {
    /// Where the row ends (a `\r` or `\n`) or a quote is, if anywhere.
    stop: Option<usize>,
    commas: Commas,
}

/// One pass over a row's bytes, eight at a time: its commas and where it stops.
/// Fields are short, so most words hold a comma or a row end; still, reading a
/// row this way cut `next_row` from 620 to 423 instructions (callgrind).
fn scan_row(bytes: &[u8]) -> Scan {
    let mut commas = Commas::default();
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let mut special = special_bytes(u64::from_le_bytes(eight));
        while special != 0 {
            // The lowest flagged byte comes first in the row (little-endian load).
            let at = offset + (special.trailing_zeros() / 8) as usize;
            if BYTE_CLASS[usize::from(bytes[at])] != COMMA {
                return Scan {
                    stop: Some(at),
                    commas,
                };
            }
            commas.push(at);
            special &= special - 1;
        }
        offset += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        match BYTE_CLASS[usize::from(b)] {
            ORDINARY => {}
            COMMA => commas.push(offset + i),
            _ => {
                return Scan {
                    stop: Some(offset + i),
                    commas,
                };
            }
        }
    }
    Scan { stop: None, commas }
}

/// The high bit of every byte of `word` that is a comma, a double quote, `\r`
/// or `\n`, and no other bit.
fn special_bytes(word: u64) -> u64 {
    const LOW_SEVEN: u64 = u64::from_ne_bytes([0x7F; 8]);
    // High bit of each zero byte, exactly: adding 0x7F to the low seven bits
    // sets a byte's high bit unless they are zero, and never carries into the
    // next byte.
    let zero_bytes = |x: u64| !(((x & LOW_SEVEN) + LOW_SEVEN) | x) & !LOW_SEVEN;
    let each = |byte: u8| u64::from_ne_bytes([byte; 8]);
    zero_bytes(word ^ each(b','))
        | zero_bytes(word ^ each(b'"'))
        | zero_bytes(word ^ each(b'\r'))
        | zero_bytes(word ^ each(b'\n'))
}

/// A row without quotes, cut at its commas.
fn split_row<'a>(row: &'a [u8], commas: &Commas) -> AgencyRow<'a> {
    let mut parsed = AgencyRow {
        columns: commas.count + 1,
        ..AgencyRow::default()
    };
    let mut from = 0;
    for (column, field) in parsed.fields.iter_mut().enumerate() {
        if column > commas.count {
            break;
        }
        let to = if column < commas.count {
            commas.at[column]
        } else {
            row.len()
        };
        *field = row.get(from..to).unwrap_or_default();
        from = to + 1;
    }
    parsed
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Each row's first fields, then its column count.
    type Rows = Vec<Vec<Vec<u8>>>;

    /// Every row of `text` as this reader gives it and as the `csv` crate does.
    fn both_ways(text: &[u8]) -> (Rows, Rows) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text).unwrap();
        let mut ours = Vec::new();
        let mut rows = AgencyFile::open(file.path()).unwrap();
        while let Some(row) = rows.next_row().unwrap() {
            let shown = row.columns.min(AGENCY_CSV_COLUMNS);
            let mut fields: Vec<Vec<u8>> = row.fields[..shown].iter().map(|f| f.to_vec()).collect();
            fields.push(row.columns.to_string().into_bytes());
            ours.push(fields);
        }
        let mut theirs = Vec::new();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text);
        for record in reader.byte_records() {
            let record = record.unwrap();
            let mut fields: Vec<Vec<u8>> = record
                .iter()
                .take(AGENCY_CSV_COLUMNS)
                .map(<[u8]>::to_vec)
                .collect();
            fields.push(record.len().to_string().into_bytes());
            theirs.push(fields);
        }
        (ours, theirs)
    }

    #[test]
    fn plain_rows_split_as_csv_splits_them() {
        for text in [
            &b"Ana,Gil,1,2000-01-01,7574\r\nJos\xc3\xa9,P,2,1999-12-31,1\r\n"[..],
            b"a,b,c,d,e\nf,g,h,i,j",
            b"\r\n\r\na,b\r\r\n,,,,\n\n",
            b"only one field\n,\n a , b ,c,d,e,f,g\r",
            b"",
            b"\n\n",
            b"x",
        ] {
            let (ours, theirs) = both_ways(text);
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn special_bytes_are_flagged_exactly() {
        for word in [
            *b",,,,,,,,",
            *b"ab\r\n\"c,\x00",
            *b"\x2b\x2d\x0c\x0e\x21\x23\x01\xac",
            [0xFF; 8],
            [0x00; 8],
        ] {
            let flagged = special_bytes(u64::from_le_bytes(word));
            for (i, b) in word.iter().enumerate() {
                let expected = matches!(b, b',' | b'"' | b'\r' | b'\n');
                assert_eq!(
                    flagged >> (8 * i + 7) & 1 == 1,
                    expected,
                    "{word:?} byte {i}"
                );
            }
            assert_eq!(flagged & !u64::from_ne_bytes([0x80; 8]), 0);
        }
    }

    #[test]
    fn quoted_rows_go_through_csv() {
        for text in [
            &b"Ana,Gil,1,2000-01-01,7574\r\n\"Gil, Ana\",\"O\"\"Brien\",3,2000-01-01,1\r\nB,C,4,2000-01-01,2\r\n"[..],
            b"\"multi\nline\",x,1,2000-01-01,5\nlast,row,2,2000-01-01,6",
            b"a,b\"c,d,e,f\n",
        ] {
            let (ours, theirs) = both_ways(text);
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn rows_across_buffer_refills_and_longer_than_the_buffer() {
        let mut text = Vec::new();
        for i in 0..20_000 {
            writeln!(text, "Name{i},Last,{i},2000-01-01,{}", i % 10_000).unwrap();
        }
        text.extend_from_slice(&vec![b'x'; READ_LEN * 2 + 17]);
        text.extend_from_slice(b",y\r\nend,row,1,2000-01-01,1");
        let (ours, theirs) = both_ways(&text);
        assert_eq!(ours.len(), 20_002);
        assert_eq!(ours, theirs);
    }
}
