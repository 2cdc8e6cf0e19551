//! The settings table both programs read from environment variables: each
//! variable's name, help, default and accepted values written once, as a
//! `Setting`, from which `--help` is printed and the value is read.
//!
//! `ConfigError` names the variable, the value it got and what it accepts.
//! Reading goes through a lookup function so tests can pass their own
//! environment. An empty variable counts as unset; a default is written as the
//! text a user would set, and read by the same parser.

use super::startup::Lookup;
use log::LevelFilter;
use std::fmt;
use std::fmt::Write;

/// Where a setting's value comes from when the variable is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// This text, read like a value the user set.
    Text(&'static str),
    /// A value the program works out (shown as this description).
    Derived(&'static str),
    /// None: unset means the feature is off (shown as this description).
    Off(&'static str),
    /// None: the variable must be set.
    Required,
}

/// One environment variable of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setting {
    pub name: &'static str,
    /// What the variable does, for `--help` (lines of at most ~50 characters).
    pub help: &'static str,
    /// What a valid value is, for errors.
    pub expected: &'static str,
    pub fallback: Fallback,
}

impl Setting {
    /// Reads the setting with `parse` (`None` for a value it refuses): the
    /// variable's value, else its default text; `Ok(None)` when it has neither.
    pub fn read<T>(
        &'static self,
        env: Lookup<'_>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let invalid = |value: String| ConfigError::Invalid {
            variable: self.name,
            value,
            expected: self.expected,
            has_default: !matches!(self.fallback, Fallback::Required),
        };
        let text = match env(self.name) {
            Some(raw) => raw
                .into_string()
                .map_err(|raw| invalid(raw.to_string_lossy().into_owned()))?,
            None => String::new(),
        };
        if !text.is_empty() {
            return parse(text.trim()).map(Some).ok_or_else(|| invalid(text));
        }
        match self.fallback {
            Fallback::Text(default) => Ok(parse(default)),
            Fallback::Derived(_) | Fallback::Off(_) => Ok(None),
            Fallback::Required => Err(ConfigError::Missing {
                variable: self.name,
                expected: self.expected,
            }),
        }
    }
}

impl Setting {
    /// Reads a setting that always has a value: set, or its default text (a
    /// unit test checks that every default text parses).
    pub fn value<T>(
        &'static self,
        env: Lookup<'_>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        self.read(env, parse)?.ok_or(ConfigError::Missing {
            variable: self.name,
            expected: self.expected,
        })
    }
}

/// The settings section of a `--help`: one entry per variable, its help, and
/// its default.
pub(crate) fn help_table(settings: &[&Setting]) -> String {
    let mut out = String::new();
    for setting in settings {
        let default = match setting.fallback {
            Fallback::Text(text) => format!("[default: {text}]"),
            Fallback::Derived(text) => format!("[default: {text}]"),
            Fallback::Off(text) => format!("[unset: {text}]"),
            Fallback::Required => "[required]".to_string(),
        };
        let mut lines = setting.help.lines();
        let first = lines.next().unwrap_or_default();
        let _ = writeln!(out, "  {:<24}{first}", setting.name);
        for line in lines {
            let _ = writeln!(out, "  {:<24}{line}", "");
        }
        let _ = writeln!(out, "  {:<24}{default}", "");
    }
    out
}

/// A variable with a value the program cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    Missing {
        variable: &'static str,
        expected: &'static str,
    },
    /// A variable's value is not valid.
    Invalid {
        variable: &'static str,
        value: String,
        expected: &'static str,
        /// Whether unsetting the variable would give a default.
        has_default: bool,
    },
    /// A secret's value is not valid; the value is never shown.
    InvalidSecret {
        variable: &'static str,
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { variable, expected } => {
                write!(f, "{variable} is not set; set it to {expected}")
            }
            ConfigError::Invalid {
                variable,
                value,
                expected,
                has_default,
            } => {
                let value = crate::text::escape(value);
                write!(
                    f,
                    "{variable}=\"{value}\" is not valid; set it to {expected}"
                )?;
                if *has_default {
                    write!(f, " (or unset it for the default)")?;
                }
                Ok(())
            }
            ConfigError::InvalidSecret { variable, expected } => {
                write!(
                    f,
                    "{variable} is not valid (its value is not shown); set it to {expected}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A whole number from `low` to `high`.
pub(crate) fn parse_in_range<T: std::str::FromStr + PartialOrd>(
    low: T,
    high: T,
) -> impl Fn(&str) -> Option<T> {
    move |text| text.parse::<T>().ok().filter(|v| *v >= low && *v <= high)
}

/// A log level's name.
pub(crate) fn parse_log_level(text: &str) -> Option<LevelFilter> {
    text.parse::<LevelFilter>().ok()
}

/// What a log level setting accepts.
pub(crate) const LOG_LEVELS: &str = "one of OFF, ERROR, WARN, INFO, DEBUG, TRACE";

/// `LOG_PREFIX`, read by both programs' logging before their settings.
pub(crate) const LOG_PREFIX: Setting = Setting {
    name: "LOG_PREFIX",
    help: "text that starts every log line (printable ASCII,\nat most 32 characters)",
    expected: "at most 32 printable ASCII characters",
    fallback: Fallback::Off("no prefix"),
};
