//! The hand-written fast paths that pay for themselves, each beside the plain
//! code it stands in for and tested to agree with it.
//!
//! There is one: a name of ASCII and Latin-1 letters checked in one pass over
//! its bytes. Both programs check both names of every bet, most of them such
//! names ("Nicolás Ñandú"), and without it the 10M-bet workload of `make bench`
//! takes about a tenth longer (docs/benchmarks.md). A name it does not
//! recognise goes to the plain rules.

use crate::text::NameProblem;

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

/// A name's character rules (`text::check_name`) for a name of ASCII and
/// Latin-1 characters, in one pass over its bytes; `None` for any other name,
/// which the plain rules check.
pub(crate) fn check_name(name: &[u8]) -> Option<Result<(), NameProblem>> {
    let (mut letter, mut control) = (false, false);
    let mut at = 0;
    while let Some(&b) = name.get(at) {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => letter = true,
            0x20..=0x7E => {}
            // Not settled yet: bad UTF-8 further on is reported first.
            0x00..=0x1F | 0x7F => control = true,
            _ if is_latin1_upper_half(name, at) => {
                letter |= is_latin1_letter(name, at);
                at += 1;
            }
            _ => return None,
        }
        at += 1;
    }
    Some(if control {
        Err(NameProblem::Control)
    } else if letter {
        Ok(())
    } else {
        Err(NameProblem::NoLetter)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text;

    /// Seeded random byte strings biased toward what names hold: ASCII letters,
    /// spaces, control bytes, and pieces of multi-byte characters.
    fn samples() -> Vec<Vec<u8>> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
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

    #[test]
    fn the_name_check_agrees_with_the_plain_rules_wherever_it_answers() {
        let mut answered = 0;
        for bytes in samples() {
            if let Some(fast) = check_name(&bytes) {
                answered += 1;
                assert_eq!(fast, text::check_name_plain(&bytes), "{bytes:?}");
            }
        }
        assert!(answered > 1000, "the fast path is exercised: {answered}");
    }
}
