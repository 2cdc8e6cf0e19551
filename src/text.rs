//! Text from outside, for both programs: escaped before it is logged, cut on a
//! character boundary, read as a number of ASCII digits, and searched eight
//! bytes at a time (`byte_mask`) where fields are short and a vectorised
//! search costs more to set up than it saves.

use std::fmt::Write;

/// Whether `c` must not reach a log as it is: a control character (a line end,
/// the start of a terminal escape sequence), a character that changes how the
/// text around it shows (bidirectional overrides, zero-width ones), the
/// backslash that starts our escapes, or the `|` that separates a log line's fields.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\\' | '|' | '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
        )
}

/// `text` as it may be logged: every character of `needs_escape` written as
/// `\n`, `\r`, `\t` or `\u{...}`, so that text from outside can never forge a
/// log line, split one, or reach the terminal as an escape sequence.
pub(crate) fn escape(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A path as messages and logs show it: escaped (`escape`), so that a name
/// from outside can neither end its line nor forge a field of it.
pub(crate) struct Shown<'a>(&'a std::path::Path);

/// `path`, to be shown in a message or a log line.
pub(crate) fn shown(path: &std::path::Path) -> Shown<'_> {
    Shown(path)
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape(&self.0.display().to_string()))
    }
}

/// A whole log line's message as it may be written: every character that could
/// end the line, start another, or reach the terminal as an escape sequence
/// (`breaks_a_line`) written as `\u{...}`. Values from outside are escaped
/// where they are put in a line (`escape`); this is the net under all of them,
/// applied where every line is written.
pub(crate) fn escape_line(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(breaks_a_line) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        if breaks_a_line(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `c` could break a log line or act on a terminal: a control
/// character, a line or paragraph separator, or one that changes how the text
/// around it shows.
fn breaks_a_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
        )
}

/// `text` cut to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Whether `bytes` are UTF-8: ASCII is checked first, word by word, and only
/// other text goes through the general decoder (most fields are ASCII, and the
/// decoder's setup costs more than the check itself on a short field).
pub(crate) fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// Eight bytes of `bytes` from `at` as one little-endian word (the first byte
/// lowest); `at + 8` must be within `bytes`.
pub(crate) fn word_at(bytes: &[u8], at: usize) -> u64 {
    let w = &bytes[at..at + 8];
    u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
}

/// Whether `test` holds for every word of eight-byte words that together
/// cover `bytes`: from the start, the last one overlapping the one before
/// (under eight bytes, one word of two overlapping four-byte halves), so no
/// tail is left to read byte by byte. `None` under four bytes.
#[inline]
pub(crate) fn all_words(bytes: &[u8], mut test: impl FnMut(u64) -> bool) -> Option<bool> {
    let len = bytes.len();
    if len < 8 {
        let half = |at: usize| bytes.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
        let (low, high) = (half(0)?, half(len.checked_sub(4)?)?);
        return Some(test(
            u64::from(u32::from_le_bytes(low)) | u64::from(u32::from_le_bytes(high)) << 32,
        ));
    }
    let mut at = 0;
    while at + 8 < len {
        if !test(word_at(bytes, at)) {
            return Some(false);
        }
        at += 8;
    }
    Some(test(word_at(bytes, len - 8)))
}

/// Copies `src` into `dst`, of the same length: up to sixteen bytes as two
/// overlapping halves (two words, two four-byte or two two-byte pieces),
/// which is cheaper than a call to copy a short field; longer ones by that call.
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let len = src.len();
    if dst.len() != len || len > 16 {
        dst.copy_from_slice(src);
    } else if len >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[len - 8..].copy_from_slice(&src[len - 8..]);
    } else if len >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[len - 4..].copy_from_slice(&src[len - 4..]);
    } else if len >= 2 {
        dst[..2].copy_from_slice(&src[..2]);
        dst[len - 2..].copy_from_slice(&src[len - 2..]);
    } else if len == 1 {
        dst[0] = src[0];
    }
}

/// The high bit of every byte of `word` below `limit` (at most 0x80), and no
/// other bit. Each byte is lifted to 0x80 or more first, so no subtraction
/// borrows from the next byte.
pub(crate) fn bytes_below(word: u64, limit: u8) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    !((word | HIGH) - ONES * u64::from(limit)) & !word & HIGH
}

/// The high bit of every byte of `word` that is `byte`, and no other bit: the
/// zero-byte test on `word ^ byte`, exact (no carry crosses a byte).
pub(crate) fn byte_mask(word: u64, byte: u8) -> u64 {
    const LOWS: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let x = word ^ (0x0101_0101_0101_0101 * u64::from(byte));
    !(((x & LOWS) + LOWS) | x) & !LOWS
}

/// Whether all eight bytes of `word` are ASCII digits: each is 0x30..=0x3F,
/// and stays below 0x40 with 6 added (which, below 0x40, carries into no
/// other byte).
pub(crate) fn ascii_digits(word: u64) -> bool {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    word & HIGH_NIBBLES == THREES && (word + 0x0606_0606_0606_0606) & HIGH_NIBBLES == THREES
}

/// The value of 1 to `max_len` ASCII digits (at most 19, so it fits a `u64`);
/// `None` for anything else.
pub(crate) fn parse_digits(bytes: &[u8], max_len: usize) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > max_len.min(19) {
        return None;
    }
    let mut value = 0u64;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_below_a_limit_are_found_exactly() {
        for limit in [0u8, 1, 10, 0x2D, 0x7F, 0x80] {
            for b in 0..=255u8 {
                // The byte in each place, between bytes on either side of the limit.
                for place in 0..8 {
                    let mut bytes = [0x7Fu8, 0x00, 0xFF, 0x80, 0x2C, 0x2D, 0x0A, 0x41];
                    bytes[place] = b;
                    let expected = bytes.iter().enumerate().fold(0u64, |mask, (i, &x)| {
                        mask | (u64::from(x < limit) << (8 * i + 7))
                    });
                    assert_eq!(
                        bytes_below(u64::from_le_bytes(bytes), limit),
                        expected,
                        "{bytes:?} below {limit}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_copies_copy_every_byte_and_no_other() {
        let src: Vec<u8> = (1..=40).collect();
        for len in 0..=40 {
            let mut dst = [0u8; 42];
            copy_short(&mut dst[1..=len], &src[..len]);
            assert_eq!(&dst[1..=len], &src[..len], "{len}");
            assert!(
                dst[0] == 0 && dst[len + 1..].iter().all(|&b| b == 0),
                "{len}"
            );
        }
    }

    #[test]
    fn text_from_outside_is_escaped_before_it_is_logged() {
        assert_eq!(escape("Ana Gil"), "Ana Gil");
        assert_eq!(escape("José Ñandú 李"), "José Ñandú 李");
        assert_eq!(
            escape("x\n2026 INFO  action: sorteo | result: success"),
            "x\\n2026 INFO  action: sorteo \\u{7c} result: success"
        );
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("a\r\tb\\"), "a\\r\\tb\\\\");
        assert_eq!(escape("\u{202E}evil"), "\\u{202e}evil");
        assert_eq!(escape("\u{0}"), "\\u{0}");
        let escaped = escape("\n\r\u{1b}\u{7f}\u{85}|");
        assert!(
            !escaped.chars().any(|c| c.is_control() || c == '|'),
            "{escaped}"
        );
    }

    #[test]
    fn the_ascii_first_utf8_check_agrees_with_the_decoder() {
        let mut rng = fastrand::Rng::with_seed(0x0075_7466_3800);
        let pieces: [&[u8]; 8] = [
            b"a",
            b"Z9 ",
            b"\xc3\xa1",
            b"\xe6\x97\xa5",
            b"\xc3",
            b"\xff",
            b"\x80",
            b"\xf0\x9f\x98\x80",
        ];
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..rng.usize(..12))
                .flat_map(|_| pieces[rng.usize(..pieces.len())].to_vec())
                .collect();
            assert_eq!(
                is_utf8(&bytes),
                std::str::from_utf8(&bytes).is_ok(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn byte_masks_mark_exactly_the_bytes_sought() {
        let mut rng = fastrand::Rng::with_seed(0x0B17_E000_0000);
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..8)
                .map(|_| {
                    *b",\"\r\n\x00\x80\xffa"
                        .get(rng.usize(..9))
                        .unwrap_or(&rng.u8(..))
                })
                .collect();
            let word = word_at(&bytes, 0);
            for sought in [b',', b'"', b'\r', b'\n', 0, 0x80, 0xFF] {
                let plain: u64 = (0..8)
                    .filter(|&i| bytes[i] == sought)
                    .map(|i| 0x80u64 << (8 * i))
                    .sum();
                assert_eq!(byte_mask(word, sought), plain, "{bytes:?} {sought}");
            }
        }
    }

    #[test]
    fn digits_are_read_within_their_length_and_nothing_else() {
        assert_eq!(parse_digits(b"0", 1), Some(0));
        assert_eq!(parse_digits(b"0042", 4), Some(42));
        assert_eq!(parse_digits(b"9999999999", 10), Some(9_999_999_999));
        assert_eq!(parse_digits(b"12345", 4), None);
        assert_eq!(parse_digits(b"", 4), None);
        assert_eq!(parse_digits(b"1a", 4), None);
        assert_eq!(parse_digits(b"-1", 4), None);
        assert_eq!(parse_digits(&[b'9'; 20], 30), None, "never past a u64");
    }

    #[test]
    fn a_line_can_never_be_split_or_reach_the_terminal_raw() {
        assert_eq!(
            escape_line("action: x | result: success"),
            "action: x | result: success"
        );
        let forged = "path: /a\n2026-12-03T00:00:00.000Z INFO  action: sorteo | result: success\u{1b}[31m\r\u{2028}";
        let line = escape_line(forged);
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{line}"
        );
        assert!(
            line.contains("\\u{a}2026") && line.contains("\\u{1b}[31m"),
            "{line}"
        );
        // A value already escaped keeps its escapes as written.
        assert_eq!(escape_line(&escape("a\nb")), "a\\nb");
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("ñ", 0), "");
    }
}
