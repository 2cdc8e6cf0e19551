//! A name's character rules: UTF-8, no control character, at least one letter,
//! so a name is never blank or invisible.
//!
//! `check_name_plain` is the rule, character by character. `check_name_fast`
//! stands beside it for names of ASCII and Latin-1 characters (most names,
//! "Nicolás Ñandú"), checked in one pass over the bytes instead of through the
//! UTF-8 decoder and `char` methods, and a name of ASCII letters and spaces
//! only (most of them) eight bytes at a time; it answers `None` for any other
//! name, which the plain rule checks. A seeded differential test keeps the two
//! in agreement. The word check saves each side about 35 instructions per bet.

use crate::text::{all_words, byte_mask};

/// What is wrong with a name's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameProblem {
    NotUtf8,
    /// A control character (Unicode category Cc: tab, newline, NUL, ...).
    Control,
    /// No letter (`char::is_alphabetic`): blank, or made only of invisible,
    /// punctuation or digit characters.
    NoLetter,
}

/// Checks a name's characters: UTF-8, no control character, at least one letter.
pub(crate) fn check_name(bytes: &[u8]) -> Result<(), NameProblem> {
    check_name_fast(bytes).unwrap_or_else(|| check_name_plain(bytes))
}

/// `check_name` for any text, character by character.
pub(crate) fn check_name_plain(bytes: &[u8]) -> Result<(), NameProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| NameProblem::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(NameProblem::Control);
    }
    if !text.chars().any(char::is_alphabetic) {
        return Err(NameProblem::NoLetter);
    }
    Ok(())
}

/// Whether `text[at..]` starts with U+00C0..=U+00FF (À to ÿ: accented letters,
/// `×` and `÷`), encoded as 0xC3 then 0x80..=0xBF: valid UTF-8 on its own, and
/// neither a control character nor whitespace.
fn is_latin1_upper_half(text: &[u8], at: usize) -> bool {
    text.get(at) == Some(&0xC3) && matches!(text.get(at + 1), Some(0x80..=0xBF))
}

/// Whether the Latin-1 character at `text[at..]` (see `is_latin1_upper_half`)
/// is a letter: all of them but `×` (0xC3 0x97) and `÷` (0xC3 0xB7).
fn is_latin1_letter(text: &[u8], at: usize) -> bool {
    !matches!(text.get(at + 1), Some(0x97 | 0xB7))
}

/// The name rules (`check_name_plain`) for a name of ASCII and
/// Latin-1 characters, in one pass over its bytes; `None` for any other name,
/// which the plain rules check.
fn check_name_fast(name: &[u8]) -> Option<Result<(), NameProblem>> {
    // Most names are ASCII letters and spaces only: settled a word at a time.
    if let Some(has_letter) = only_letters_and_spaces(name) {
        return Some(if has_letter {
            Ok(())
        } else {
            Err(NameProblem::NoLetter)
        });
    }
    let mut seen = 0;
    let mut at = 0;
    while let Some(&b) = name.get(at) {
        let class = BYTE_CLASSES[usize::from(b)];
        if class & UPPER_HALF == 0 {
            // Not settled at a control byte: bad UTF-8 further on is reported first.
            seen |= class;
            at += 1;
            continue;
        }
        if !is_latin1_upper_half(name, at) {
            return None;
        }
        if is_latin1_letter(name, at) {
            seen |= LETTER;
        }
        at += 2;
    }
    Some(if seen & CONTROL != 0 {
        Err(NameProblem::Control)
    } else if seen & LETTER != 0 {
        Ok(())
    } else {
        Err(NameProblem::NoLetter)
    })
}

/// Whether a name of at least four bytes is only ASCII letters and spaces:
/// `Some` with whether it has a letter, `None` when it has another byte or is
/// shorter. Read as overlapping words (`all_words`), which only read some
/// bytes twice.
fn only_letters_and_spaces(name: &[u8]) -> Option<bool> {
    let mut has_letter = false;
    let plain = all_words(name, |word| {
        letters_and_spaces(word)
            .map(|letter| has_letter |= letter)
            .is_some()
    })?;
    plain.then_some(has_letter)
}

/// Whether all eight bytes of `word` are ASCII letters or spaces: `Some`
/// with whether one is a letter, `None` when any byte is something else.
fn letters_and_spaces(word: u64) -> Option<bool> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const ONES: u64 = 0x0101_0101_0101_0101;
    if word & HIGH != 0 {
        return None;
    }
    // Folded to lower case: only A-Z and a-z land in a-z.
    let lower = word | (ONES * 0x20);
    // Each byte is below 0x80, so no sum carries into the next byte: the high
    // bit of a byte says it reached 'a', or went past 'z'.
    let from_a = (lower + ONES * u64::from(0x80 - b'a')) & HIGH;
    let past_z = (lower + ONES * u64::from(0x80 - b'z' - 1)) & HIGH;
    let letters = from_a & !past_z;
    ((letters | byte_mask(word, b' ')) == HIGH).then_some(letters != 0)
}

/// What a byte is to the fast name check: an ASCII letter, a control byte,
/// or a byte of the upper half (the start of a character of more than one
/// byte); printable ASCII other than letters is none of them.
const LETTER: u8 = 1;
const CONTROL: u8 = 2;
const UPPER_HALF: u8 = 4;

/// Every byte's class (`LETTER`, `CONTROL`, `UPPER_HALF`), looked up in one step.
static BYTE_CLASSES: [u8; 256] = {
    let mut classes = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        classes[b] = match b {
            0x41..=0x5A | 0x61..=0x7A => LETTER,
            0x00..=0x1F | 0x7F => CONTROL,
            0x80..=0xFF => UPPER_HALF,
            _ => 0,
        };
        b += 1;
    }
    classes
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_bad_utf8_control_characters_and_names_without_a_letter() {
        assert_eq!(check_name(b"\xc3"), Err(NameProblem::NotUtf8));
        assert_eq!(check_name(b"ab\xc3\x28"), Err(NameProblem::NotUtf8));
        assert_eq!(check_name(b"Ana\tMar"), Err(NameProblem::Control));
        assert_eq!(
            check_name("Pérez\u{85}".as_bytes()),
            Err(NameProblem::Control)
        );
        for blank in [
            "   ",
            " \u{3000}\u{a0}",
            "\u{200B}",
            "\u{FEFF}",
            "\u{00AD}",
            "\u{2800}",
            "123",
            "-- '.",
            "×÷",
        ] {
            assert_eq!(
                check_name(blank.as_bytes()),
                Err(NameProblem::NoLetter),
                "{blank:?}"
            );
        }
    }

    #[test]
    fn real_names_of_every_script_are_accepted() {
        for name in [
            "José María Ñandú",
            "O'Connor",
            "Jean-Luc",
            "D'Alessandro-Pérez",
            "Zoë",
            "Øyvind",
            "Łukasz",
            "Ἀλέξανδρος",
            "Владимир",
            "李小龍",
            "محمد",
            "אברהם",
            "Nguyễn",
            "ʻOkina",
        ] {
            assert_eq!(check_name(name.as_bytes()), Ok(()), "{name}");
        }
    }

    /// Seeded random byte strings biased toward what names hold: ASCII letters,
    /// spaces, control bytes, and pieces of multi-byte characters.
    fn samples() -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.u64(..);
        let pieces: [&[u8]; 17] = [
            b"1",
            b".",
            b"\xc3\xb7",
            b"a",
            b"Z",
            b" ",
            b"'",
            b"\t",
            b"\x7f",
            b"\xc3\xa1",
            b"\xc3\x97",
            b"\xc3",
            b"\xc2\xa0",
            b"\xe2\x80\x8b",
            b"\xe6\x97\xa5",
            b"\xed\xa0\x80",
            b"\xff",
        ];
        (0..20_000)
            .map(|_| {
                let len = next() % 12;
                (0..len)
                    .flat_map(|_| pieces[(next() % pieces.len() as u64) as usize].to_vec())
                    .collect()
            })
            .collect()
    }

    /// Long runs of ASCII letters and spaces, with now and then a byte just
    /// outside the letter ranges or of another class: the eight-byte path.
    fn long_samples() -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(0x00C0_FFEE_1E77_E250);
        let odd: &[u8] = b"@[`{AZaz \t\x7f\x00-'.9\xc3\xa9\xff";
        (0..20_000)
            .map(|_| {
                let len = rng.usize(..40);
                (0..len)
                    .map(|_| match rng.u8(..) {
                        0..=7 => odd[rng.usize(..odd.len())],
                        8..=40 => b' ',
                        _ if rng.bool() => b'A' + rng.u8(..26),
                        _ => b'a' + rng.u8(..26),
                    })
                    .collect()
            })
            .collect()
    }

    /// Checks the fast path against the plain rules on every sample; returns
    /// how many it answered.
    fn assert_agrees_with_the_plain_rules(samples: &[Vec<u8>]) -> usize {
        let mut answered = 0;
        for bytes in samples {
            if let Some(fast) = check_name_fast(bytes) {
                answered += 1;
                assert_eq!(fast, check_name_plain(bytes), "{bytes:?}");
            }
        }
        answered
    }

    #[test]
    fn the_word_path_agrees_with_the_plain_rules() {
        let samples = long_samples();
        let answered = assert_agrees_with_the_plain_rules(&samples);
        assert!(answered > 1000, "the fast path is exercised: {answered}");
        // Names settled by words, of eight bytes or more and of four to seven.
        let by_words = |lens: std::ops::Range<usize>| {
            samples
                .iter()
                .filter(|b| lens.contains(&b.len()) && only_letters_and_spaces(b).is_some())
                .count()
        };
        let (long, short) = (by_words(8..usize::MAX), by_words(4..8));
        assert!(
            long > 1000 && short > 500,
            "the word path is exercised: {long} long, {short} short"
        );
        for word in [
            *b"AbCdEfGh",
            *b"        ",
            *b"Ana Gil ",
            *b"abcdefg@",
            *b"[abcdefg",
            *b"`abcdefg",
            *b"abcdefg{",
        ] {
            let plain = word.iter().all(|b| b.is_ascii_alphabetic() || *b == b' ');
            let letter = word.iter().any(u8::is_ascii_alphabetic);
            assert_eq!(
                letters_and_spaces(u64::from_le_bytes(word)),
                plain.then_some(letter),
                "{word:?}"
            );
        }
    }

    #[test]
    fn the_name_check_agrees_with_the_plain_rules_wherever_it_answers() {
        let answered = assert_agrees_with_the_plain_rules(&samples());
        assert!(answered > 1000, "the fast path is exercised: {answered}");
    }
}
