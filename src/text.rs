//! Text rules shared by both programs: a name a person can read, text from
//! outside made safe to log, and cutting text on a character boundary.

use std::fmt::Write;

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
    crate::bet::fastpath::check_name(bytes).unwrap_or_else(|| check_name_plain(bytes))
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
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("ñ", 0), "");
    }
}
