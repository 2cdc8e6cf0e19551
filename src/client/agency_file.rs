//! An agency's CSV file, read row by row for the client, in bounded memory.
//!
//! Rows are `first_name,last_name,document,birthdate,number`, no header, ending
//! in `\r\n`, `\n` or `\r`; empty lines are skipped and a leading UTF-8 byte-order
//! mark is ignored. Quoting follows the `csv` crate's rules, through its own
//! parser (`csv_core`), which writes each row into a buffer we own: a row longer
//! than `MAX_ROW_LEN` is reported and skipped instead of held, so the reader's
//! memory is the same whatever the file holds (a line of 50 MiB, a quote that is
//! never closed, a device that never ends).
//!
//! Most rows are plain: a whole line in the buffer, no quote, no lone `\r`.
//! Those are found and split at their commas where they lie, in one pass
//! (`plain_row`), beside the CSV parser, which reads every other row; the two
//! agree on every plain row (a seeded differential test), and the one pass saved
//! the clients 136 instructions per bet over two searches and a split.
//!
//! Every row comes with the line it starts on and the number of lines it takes:
//! a valid bet never spans lines (no name holds a line end), so a row that takes
//! several means a quote was left open, and the user is told where.

use crate::bet::{AGENCY_CSV_COLUMNS, AgencyRow};
use crate::files::not_a_file;
use crate::net::buffer::{ReadBuffer, Refill};
use crate::text::{bytes_below, word_at};
use csv_core::{ReadRecordResult, Reader};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Longest row kept, in bytes of its fields: a valid row is under 1.1 KiB (two
/// names of 255 bytes, a document, a date and a number).
pub(crate) const MAX_ROW_LEN: usize = 4096;
/// Bytes read from the file at a time.
const READ_LEN: usize = 64 * 1024;

/// The plain row at the front of `unread`, split at its commas, and the length
/// of its whole line: when the line is in the buffer, holds no quote and no `\r`
/// but one before its `\n`, and its text is shorter than `MAX_ROW_LEN` (so the
/// CSV parser would read it as its commas split it). `None` for any other row.
///
/// One pass, eight bytes at a time: every byte up to `,` (which takes in `\n`,
/// `\r` and `"`, and little else a row holds but spaces) is looked at, the rest
/// are skipped by the word.
fn plain_row(unread: &[u8]) -> Option<(PlainSplit, usize)> {
    // A line end further on would leave too long a text.
    let scanned = &unread[..unread.len().min(MAX_ROW_LEN + 1)];
    let mut split = PlainSplit::default();
    let mut at = 0;
    // The first `\n`, `\r` or `"`: where the line ends, if the row is plain.
    let stop = 'scan: {
        while at + 8 <= scanned.len() {
            let mut hits = bytes_below(word_at(scanned, at), b',' + 1);
            while hits != 0 {
                let pos = at + hits.trailing_zeros() as usize / 8;
                if split.stops_at(scanned[pos], pos) {
                    break 'scan pos;
                }
                hits &= hits - 1;
            }
            at += 8;
        }
        for (pos, &b) in scanned.iter().enumerate().skip(at) {
            if split.stops_at(b, pos) {
                break 'scan pos;
            }
        }
        return None;
    };
    let taken = match unread[stop] {
        b'\n' => stop + 1,
        b'\r' if unread.get(stop + 1) == Some(&b'\n') => stop + 2,
        _ => return None,
    };
    if stop >= MAX_ROW_LEN {
        return None;
    }
    split.field_ends(stop);
    Some((split, taken))
}

/// Where a plain row's fields end in the unread input, as `plain_row` finds
/// them (positions, not slices, so the input may be consumed before the row
/// is lent out).
#[derive(Clone, Copy, Default)]
struct PlainSplit {
    columns: usize,
    /// The end of each of the first `AGENCY_CSV_COLUMNS` fields; each starts
    /// one byte (a comma) after the one before.
    ends: [usize; AGENCY_CSV_COLUMNS],
}

impl PlainSplit {
    /// Takes the byte `b` at `pos`: a comma ends a field; `true` for a byte
    /// that ends the scan (`\n`, `\r` or `"`).
    #[inline]
    fn stops_at(&mut self, b: u8, pos: usize) -> bool {
        match b {
            b',' => self.field_ends(pos),
            b'\n' | b'\r' | b'"' => return true,
            _ => {}
        }
        false
    }

    fn field_ends(&mut self, end: usize) {
        if let Some(slot) = self.ends.get_mut(self.columns) {
            *slot = end;
        }
        self.columns += 1;
    }

    /// The row's fields in `unread`, the input `plain_row` split.
    fn fields(self, unread: &[u8]) -> AgencyRow<'_> {
        let mut row = AgencyRow {
            columns: self.columns,
            ..AgencyRow::default()
        };
        // Each field lies between its comma and the next: split off in turn.
        let mut rest = unread;
        let mut start = 0;
        for (field, &end) in row.fields.iter_mut().zip(&self.ends).take(self.columns) {
            // Ends only grow, so this never wraps (and if it did, the split
            // would find no such length).
            let Some((text, after)) = rest.split_at_checked(end.wrapping_sub(start)) else {
                break;
            };
            *field = text;
            rest = after.get(1..).unwrap_or_default();
            start = end + 1;
        }
        row
    }
}

/// Where one record of the CSV parser ended.
struct RecordRead {
    /// Bytes of its fields kept in the buffer.
    kept: usize,
    columns: usize,
    /// Longer than the buffer: its fields were dropped.
    too_long: bool,
    /// The line of its last byte.
    last_line: u64,
}

/// Why the agency file cannot be read at all.
#[derive(Debug)]
pub enum AgencyFileError {
    /// The path is not a regular file (a directory, a FIFO, a device...).
    NotAFile {
        kind: &'static str,
    },
    Io(io::Error),
}

impl fmt::Display for AgencyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgencyFileError::NotAFile { kind } => {
                write!(f, "it is a {kind}, not a regular file")
            }
            AgencyFileError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AgencyFileError {}

impl From<io::Error> for AgencyFileError {
    fn from(e: io::Error) -> Self {
        AgencyFileError::Io(e)
    }
}

/// One row of the file: where it is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row<'a> {
    /// The line the row starts on, counting from 1.
    pub line: u64,
    /// How many lines the row takes (1 for every well-formed row).
    pub lines: u64,
    pub content: Result<AgencyRow<'a>, RowProblem>,
}

/// Why a row could not even be split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowProblem {
    /// Its fields hold more than `MAX_ROW_LEN` bytes.
    TooLong,
    /// It runs over several lines: a quote opened on its first line is not
    /// closed there (or at all).
    SpansLines,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowProblem::TooLong => write!(
                f,
                "the row is longer than {MAX_ROW_LEN} bytes (a valid row is much shorter)"
            ),
            RowProblem::SpansLines => write!(
                f,
                "a quote opened on this line is not closed on it, so the row runs over \
                 several lines; close the quote"
            ),
        }
    }
}

/// Rows of one agency file. `next_row` lends each row without allocating.
pub(crate) struct AgencyFile {
    file: File,
    input: ReadBuffer,
    parser: Reader,
    /// The current row's fields, unquoted, one after another.
    fields: Vec<u8>,
    /// Where each field of the current row ends in `fields`.
    ends: [usize; AGENCY_CSV_COLUMNS + 1],
    lines: LineCounter,
    /// Nothing was read yet: a byte-order mark may come first.
    at_start: bool,
    at_end_of_file: bool,
    done: bool,
    /// Bytes at the input's front that the last plain row lent out.
    lent: usize,
    /// Plain rows are split where they lie (off in tests, to compare).
    split_plain_rows: bool,
}

/// The UTF-8 byte-order mark some editors write at the start of a file.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Counts line ends (`\n`, `\r\n` or a lone `\r`) in the bytes given to the parser.
#[derive(Debug, Default)]
struct LineCounter {
    /// Lines ended so far.
    ended: u64,
    /// The last byte counted was a `\r`: a line ended, and a `\n` right after
    /// it belongs to the same line end.
    after_cr: bool,
}

impl LineCounter {
    fn count(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => {
                    self.ended += u64::from(!self.after_cr);
                    self.after_cr = false;
                }
                b'\r' => {
                    self.ended += 1;
                    self.after_cr = true;
                }
                _ => self.after_cr = false,
            }
        }
    }

    /// A whole line was read past the counter, line end included.
    fn end_line(&mut self) {
        self.ended += 1;
        self.after_cr = false;
    }

    /// The line the next byte is on, counting from 1.
    fn next_line(&self) -> u64 {
        self.ended + 1
    }
}

impl AgencyFile {
    /// Opens the agency file; only a regular file is read.
    pub fn open(path: &Path) -> Result<AgencyFile, AgencyFileError> {
        // Looked at before opening: opening a FIFO would wait for a writer.
        if let Some(kind) = not_a_file(std::fs::metadata(path)?.file_type()) {
            return Err(AgencyFileError::NotAFile { kind });
        }
        let file = File::open(path)?;
        if let Some(kind) = not_a_file(file.metadata()?.file_type()) {
            return Err(AgencyFileError::NotAFile { kind });
        }
        // The file's byte-order mark is skipped here (`skip_empty_lines`); the
        // parser would strip one from the first bytes it reads, which may be a
        // row far into the file (after plain rows), so it reads an empty line first.
        let mut parser = Reader::new();
        let _ = parser.read_record(b"\n", &mut [], &mut []);
        Ok(AgencyFile {
            file,
            input: ReadBuffer::new(READ_LEN),
            parser,
            fields: vec![0; MAX_ROW_LEN],
            ends: [0; AGENCY_CSV_COLUMNS + 1],
            lines: LineCounter::default(),
            at_start: true,
            at_end_of_file: false,
            done: false,
            lent: 0,
            split_plain_rows: true,
        })
    }

    /// Reads more of the file when the unread input is used up.
    fn refill(&mut self) -> io::Result<()> {
        let file = &mut self.file;
        let refill = self.input.refill(|free| {
            loop {
                match file.read(free) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    result => return result,
                }
            }
        })?;
        if refill == Refill::Read(0) {
            self.at_end_of_file = true;
        }
        Ok(())
    }

    /// Skips the empty lines before a row (the parser would skip them too),
    /// and a byte-order mark at the start of the file, so that the row's first
    /// line is known.
    fn skip_empty_lines(&mut self) -> io::Result<()> {
        loop {
            if self.at_start && (self.input.len() >= UTF8_BOM.len() || self.at_end_of_file) {
                self.at_start = false;
                if self.input.unread().starts_with(UTF8_BOM) {
                    self.input.consume(UTF8_BOM.len());
                }
            }
            if !self.at_start {
                let unread = self.input.unread();
                let blank = unread
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                self.lines.count(&unread[..blank]);
                self.input.consume(blank);
                if !self.input.is_empty() || self.at_end_of_file {
                    return Ok(());
                }
            }
            self.refill()?;
        }
    }

    /// The next row, or `None` at the end of the file. A row whose fields
    /// could not be kept is returned with its problem; reading goes on after it.
    pub fn next_row(&mut self) -> io::Result<Option<Row<'_>>> {
        self.input.consume(std::mem::take(&mut self.lent));
        if self.done {
            return Ok(None);
        }
        // A row that follows a row, the common case, has nothing to skip.
        if self.at_start || matches!(self.input.unread().first(), None | Some(b'\r' | b'\n')) {
            self.skip_empty_lines()?;
        }
        let line = self.lines.next_line();
        if self.split_plain_rows
            && let Some((split, taken)) = plain_row(self.input.unread())
        {
            // One line end (`\n` or `\r\n`), and the line's bytes lent out.
            self.lines.end_line();
            self.lent = taken;
            return Ok(Some(Row {
                line,
                lines: 1,
                content: Ok(split.fields(self.input.unread())),
            }));
        }
        let Some(record) = self.read_record(line)? else {
            self.done = true;
            return Ok(None);
        };
        let lines = record.last_line - line + 1;
        let content = if lines > 1 {
            Err(RowProblem::SpansLines)
        } else if record.too_long {
            Err(RowProblem::TooLong)
        } else {
            Ok(self.split(record.kept, record.columns))
        };
        Ok(Some(Row {
            line,
            lines,
            content,
        }))
    }

    /// Feeds the CSV parser until it ends a record that starts on `line`;
    /// `None` at the end of the file.
    fn read_record(&mut self, line: u64) -> io::Result<Option<RecordRead>> {
        let mut record = RecordRead {
            kept: 0,
            columns: 0,
            too_long: false,
            last_line: line,
        };
        let mut extra_ends = [0; AGENCY_CSV_COLUMNS + 1];
        loop {
            if self.input.is_empty() && !self.at_end_of_file {
                self.refill()?;
            }
            let unread = self.input.unread();
            // Once the row is too long, its bytes are written over the same
            // buffer and dropped; only where it ends still matters.
            let output = if record.too_long {
                &mut self.fields[..]
            } else {
                &mut self.fields[record.kept..]
            };
            // Ends past the columns a bet has are only counted.
            let ends = match self.ends.get_mut(record.columns..) {
                Some(free) if !free.is_empty() => free,
                _ => &mut extra_ends[..],
            };
            let (result, read, written, ended) = self.parser.read_record(unread, output, ends);
            let ends_a_line = matches!(unread[..read].last(), Some(b'\r' | b'\n'));
            self.lines.count(&unread[..read]);
            self.input.consume(read);
            if read > 0 {
                record.last_line = self.lines.next_line() - u64::from(ends_a_line);
            }
            if !record.too_long {
                record.kept += written;
            }
            record.columns += ended;
            match result {
                ReadRecordResult::InputEmpty | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::OutputFull => record.too_long = true,
                ReadRecordResult::Record => return Ok(Some(record)),
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// The current row's first fields, from the parser's output.
    fn split(&self, kept: usize, columns: usize) -> AgencyRow<'_> {
        let mut row = AgencyRow {
            columns,
            ..AgencyRow::default()
        };
        let mut start = 0;
        for (slot, &end) in row.fields.iter_mut().zip(&self.ends).take(columns) {
            let end = end.min(kept);
            *slot = self.fields.get(start..end).unwrap_or_default();
            start = end;
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as a test keeps it: line, lines, and columns with the fields.
    type OwnedRow = (u64, u64, Result<(usize, Vec<Vec<u8>>), RowProblem>);

    /// Every row of `path`, as the reader lends them, owned.
    fn all_rows(path: &Path, split_plain_rows: bool) -> Vec<OwnedRow> {
        let mut file = AgencyFile::open(path).unwrap();
        file.split_plain_rows = split_plain_rows;
        let mut rows = Vec::new();
        while let Some(row) = file.next_row().unwrap() {
            let content = row
                .content
                .map(|r| (r.columns, r.fields.iter().map(|f| f.to_vec()).collect()));
            rows.push((row.line, row.lines, content));
        }
        rows
    }

    #[test]
    fn plain_rows_split_where_they_lie_agree_with_the_csv_parser() {
        let mut rng = fastrand::Rng::with_seed(0x0C54_0000_0001);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency.csv");
        let pieces: [&[u8]; 14] = [
            b"Ana,Gil,1,2000-01-01,7574",
            b"Jos\xc3\xa9,\xc3\x91, 2 ,1999-12-31,1",
            b",,,,",
            b"\"a,b\",c,1,2000-01-01,2",
            b"a\"b,c",
            b"x,y,z,w,v,u,t",
            b"",
            b"\r",
            b"\r\n",
            b"\n",
            b"\xef\xbb\xbf",
            b"\"open",
            b"one",
            b"a,b,c,d,e,",
        ];
        let (mut plain_rows, mut compared) = (0, 0);
        for _ in 0..400 {
            let mut text = Vec::new();
            for _ in 0..rng.usize(..30) {
                if rng.bool() {
                    // A line of random length from the bytes the split looks at
                    // (and the ones beside them), so that they fall at every
                    // place in a word.
                    let alphabet = b"abZ09 ,,,\"\r\n\t+-\x2b\x2d\x7f\x80\xc3\xa9";
                    let len = rng.usize(..40);
                    text.extend((0..len).map(|_| alphabet[rng.usize(..alphabet.len())]));
                } else {
                    text.extend_from_slice(pieces[rng.usize(..pieces.len())]);
                }
                text.extend_from_slice([&b"\n"[..], b"\r\n", b"\r", b""][rng.usize(..4)]);
            }
            if rng.u8(..10) == 0 {
                text.extend(std::iter::repeat_n(b'x', MAX_ROW_LEN + rng.usize(..3)));
                text.push(b'\n');
            }
            std::fs::write(&path, &text).unwrap();
            let fast = all_rows(&path, true);
            let plain = all_rows(&path, false);
            if fast != plain {
                let shown = String::from_utf8_lossy(&text[..text.len().min(300)]);
                panic!(
                    "split and parsed rows differ for {shown:?}...:\n{fast:.300?}\n{plain:.300?}"
                );
            }
            plain_rows += fast.iter().filter(|r| r.2.is_ok()).count();
            compared += 1;
        }
        assert!(compared == 400 && plain_rows > 4_000, "{plain_rows} rows");
    }
    use std::io::Write;

    /// A row as the tests compare it: its line, lines, and fields or problem.
    type Shown = (u64, u64, Result<Vec<Vec<u8>>, RowProblem>);

    fn file_of(text: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text).unwrap();
        file
    }

    fn rows_of(text: &[u8]) -> Vec<Shown> {
        let file = file_of(text);
        let mut reader = AgencyFile::open(file.path()).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            let content = row.content.map(|fields| {
                let mut shown: Vec<Vec<u8>> = fields.fields
                    [..fields.columns.min(AGENCY_CSV_COLUMNS)]
                    .iter()
                    .map(|f| f.to_vec())
                    .collect();
                shown.push(fields.columns.to_string().into_bytes());
                shown
            });
            rows.push((row.line, row.lines, content));
        }
        rows
    }

    /// The same rows as the `csv` crate reads them (first five fields, then the count).
    fn csv_crate_rows(text: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text);
        reader
            .byte_records()
            .map(|record| {
                let record = record.unwrap();
                let mut shown: Vec<Vec<u8>> = record
                    .iter()
                    .take(AGENCY_CSV_COLUMNS)
                    .map(<[u8]>::to_vec)
                    .collect();
                shown.push(record.len().to_string().into_bytes());
                shown
            })
            .collect()
    }

    fn fields_only(rows: Vec<Shown>) -> Vec<Vec<Vec<u8>>> {
        rows.into_iter().map(|(_, _, c)| c.unwrap()).collect()
    }

    #[test]
    fn rows_split_as_the_csv_crate_splits_them() {
        for text in [
            &b"Ana,Gil,1,2000-01-01,7574\r\nJos\xc3\xa9,P,2,1999-12-31,1\r\n"[..],
            b"a,b,c,d,e\nf,g,h,i,j",
            b"\r\n\r\na,b\r\r\n,,,,\n\n",
            b"only one field\n,\n a , b ,c,d,e,f,g\r",
            b"",
            b"\n\n",
            b"x",
            b"\"Gil, Ana\",\"O\"\"Brien\",3,2000-01-01,1\r\nB,C,4,2000-01-01,2\r\n",
            b"a,b\"c,d,e,f\n",
            b"\"a\"x,b,c,d,e\n",
        ] {
            assert_eq!(
                fields_only(rows_of(text)),
                csv_crate_rows(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn rows_across_buffer_refills_are_read_whole() {
        let mut text = Vec::new();
        for i in 0..20_000 {
            write!(
                text,
                "Name{i},\"Last, {i}\",{i},2000-01-01,{}\r\n",
                i % 10_000
            )
            .unwrap();
        }
        assert!(text.len() > 4 * READ_LEN);
        let rows = rows_of(&text);
        assert_eq!(rows.len(), 20_000);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| r.0 == i as u64 + 1 && r.1 == 1)
        );
        assert_eq!(fields_only(rows), csv_crate_rows(&text));
    }

    #[test]
    fn line_numbers_count_every_kind_of_line_end_and_empty_lines() {
        let lines = |text: &[u8]| -> Vec<u64> { rows_of(text).iter().map(|r| r.0).collect() };
        assert_eq!(lines(b"a\nb\nc"), [1, 2, 3]);
        assert_eq!(lines(b"a\r\nb\r\nc\r\n"), [1, 2, 3]);
        assert_eq!(lines(b"a\rb\rc\r"), [1, 2, 3]);
        assert_eq!(lines(b"a\r\n\nb\r\rc\n\r\nd"), [1, 3, 5, 7]);
        assert_eq!(lines(b"\n\n\na"), [4]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let rows = rows_of(b"\xef\xbb\xbfAna,Gil,1,2000-01-01,1\r\nEva,Sol,2,2000-01-01,2\r\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 1);
        assert_eq!(rows[0].2.as_ref().unwrap()[0], b"Ana");
        // Only at the start: elsewhere it is part of a field.
        let rows = rows_of(b"Ana,Gil\n\xef\xbb\xbfEva,Sol\n");
        assert_eq!(rows[1].2.as_ref().unwrap()[0], b"\xef\xbb\xbfEva");
    }

    #[test]
    fn a_row_too_long_is_reported_at_its_line_and_reading_goes_on() {
        let mut text = b"Ana,Gil,1,2000-01-01,1\n".to_vec();
        text.extend(vec![b'x'; 3 * READ_LEN]);
        text.extend(b",y\nEva,Sol,2,2000-01-01,2\n");
        let rows = rows_of(&text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], (2, 1, Err(RowProblem::TooLong)));
        assert_eq!(rows[2].0, 3);
        assert_eq!(rows[2].2.as_ref().unwrap()[0], b"Eva");
        let at_limit = [vec![b'a'; MAX_ROW_LEN - 1], b",\n".to_vec()].concat();
        assert!(rows_of(&at_limit)[0].2.is_ok());
    }

    #[test]
    fn an_unclosed_quote_names_its_line_and_the_lines_it_took() {
        let mut text = b"Ana,Gil,1,2000-01-01,1\n\"Eva,Sol,2,2000-01-01,2\n".to_vec();
        for i in 0..100 {
            writeln!(text, "Row{i},X,{i},2000-01-01,1").unwrap();
        }
        let rows = rows_of(&text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], (2, 101, Err(RowProblem::SpansLines)));
        // A quote closed on a later line: the row spans lines and reading goes on after it.
        let rows = rows_of(b"\"multi\nline\",x,1,2000-01-01,5\nlast,row,2,2000-01-01,6");
        assert_eq!(rows[0], (1, 2, Err(RowProblem::SpansLines)));
        assert_eq!(rows[1].0, 3);
        assert!(rows[1].2.is_ok());
    }

    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let not_files: [(&Path, &str); 2] = [
            (dir.path(), "directory"),
            (Path::new("/dev/null"), "device"),
        ];
        for (path, kind) in not_files {
            match AgencyFile::open(path) {
                Err(AgencyFileError::NotAFile { kind: found }) => assert!(found.contains(kind)),
                other => panic!(
                    "{}: expected NotAFile, got {:?}",
                    path.display(),
                    other.err()
                ),
            }
        }
        assert!(matches!(
            AgencyFile::open(&dir.path().join("missing.csv")),
            Err(AgencyFileError::Io(_))
        ));
    }

    #[test]
    fn seeded_random_files_never_panic_and_rows_stay_bounded() {
        let mut rng = fastrand::Rng::with_seed(0xA5A5_5A5A_1234_5678);
        let mut next = move || rng.u64(..);
        let alphabet: &[u8] = b"ab,\"\r\n\xef\xbb\xbf\xc3\xa1 7\x00";
        for _ in 0..300 {
            let len = (next() % 20_000) as usize;
            let mut text: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 4 == 0 {
                // Now and then a very long field.
                text.extend(std::iter::repeat_n(b'x', (next() % 20_000) as usize));
            }
            let file = file_of(&text);
            let mut reader = AgencyFile::open(file.path()).unwrap();
            let mut last_line = 0;
            while let Some(row) = reader.next_row().unwrap() {
                assert!(row.line > last_line && row.lines >= 1, "{row:?}");
                last_line = row.line + row.lines - 1;
                if let Ok(fields) = row.content {
                    let kept: usize = fields.fields.iter().map(|f| f.len()).sum();
                    assert!(kept <= MAX_ROW_LEN);
                }
            }
        }
    }
}
