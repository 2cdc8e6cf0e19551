//! Text rules shared by both programs: a name's characters, and cutting text on
//! a character boundary.

/// What is wrong with a name's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameProblem {
    NotUtf8,
    /// A control character (Unicode category Cc: tab, newline, NUL, ...).
    Control,
    /// Only whitespace.
    Blank,
}

/// Checks a name's characters: UTF-8, no control character, not only whitespace.
pub(crate) fn check_name(bytes: &[u8]) -> Result<(), NameProblem> {
    crate::fastpath::check_name(bytes).unwrap_or_else(|| check_name_plain(bytes))
}

/// `check_name` for any text, character by character.
pub(crate) fn check_name_plain(bytes: &[u8]) -> Result<(), NameProblem> {
    let text = std::str::from_utf8(bytes).map_err(|_| NameProblem::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(NameProblem::Control);
    }
    if text.chars().all(char::is_whitespace) {
        return Err(NameProblem::Blank);
    }
    Ok(())
}

/// `text` cut to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_bad_utf8_control_characters_and_blanks() {
        assert_eq!(check_name("José María Ñandú".as_bytes()), Ok(()));
        assert_eq!(check_name(b"\xc3"), Err(NameProblem::NotUtf8));
        assert_eq!(check_name(b"ab\xc3\x28"), Err(NameProblem::NotUtf8));
        assert_eq!(check_name(b"Ana\tMar"), Err(NameProblem::Control));
        assert_eq!(
            check_name("Pérez\u{85}".as_bytes()),
            Err(NameProblem::Control)
        );
        assert_eq!(check_name(b"   "), Err(NameProblem::Blank));
        assert_eq!(
            check_name(" \u{3000}\u{a0}".as_bytes()),
            Err(NameProblem::Blank)
        );
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("ñ", 0), "");
    }
}
