//! Who may speak for an agency: its token, or, without tokens, only this machine.
//!
//! With `SERVER_TOKENS_FILE`, every agency has a token and a HELLO is accepted
//! only with it, compared in constant time. Without it the server accepts any
//! token but serves only peers on loopback addresses, as Redis's protected mode
//! does: nothing is exposed to the network by default.

use crate::files::{not_a_file, open_to_others};
use crate::wire::MAX_TOKEN_LEN;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Shortest token: enough that guessing it is hopeless.
pub(crate) const MIN_TOKEN_LEN: usize = 16;
/// A tokens file longer than this is not one (a line per agency is ~270 bytes).
const MAX_TOKENS_FILE_LEN: u64 = 512 << 20;

/// How the server decides who may open a session.
pub(crate) enum Access {
    /// One token per agency.
    Tokens(Tokens),
    /// No tokens: any token, loopback peers only.
    LoopbackOnly,
}

/// Each agency's token, padded to a fixed size so that comparing two takes the
/// same time whatever their lengths.
pub(crate) struct Tokens {
    by_agency: HashMap<u32, [u8; MAX_TOKEN_LEN + 1]>,
}

/// What is wrong with the tokens file.
#[derive(Debug)]
pub enum TokensError {
    Read {
        path: PathBuf,
        reason: String,
    },
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    Missing {
        path: PathBuf,
        agency: u32,
    },
}

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokensError::Read { path, reason } => {
                write!(
                    f,
                    "could not read SERVER_TOKENS_FILE={}: {reason}",
                    crate::text::shown(path)
                )
            }
            TokensError::BadLine { path, line, reason } => write!(
                f,
                "line {line} of SERVER_TOKENS_FILE={}: {reason}; each line is `AGENCY TOKEN` \
                 (blank lines and # comments are ignored)",
                crate::text::shown(path)
            ),
            TokensError::Missing { path, agency } => write!(
                f,
                "SERVER_TOKENS_FILE={} has no token for agency {agency}; every agency 1 to \
                 SERVER_AGENCIES needs one",
                crate::text::shown(path)
            ),
        }
    }
}

impl std::error::Error for TokensError {}

/// `token` padded: its length, then its bytes, then zeros.
fn padded(token: &[u8]) -> [u8; MAX_TOKEN_LEN + 1] {
    let mut out = [0u8; MAX_TOKEN_LEN + 1];
    let len = token.len().min(MAX_TOKEN_LEN);
    // `len` is at most 255, so it fits the byte.
    out[0] = len as u8;
    out[1..=len].copy_from_slice(&token[..len]);
    out
}

impl Tokens {
    /// Reads `AGENCY TOKEN` lines for agencies 1..=`agencies`. Returns the
    /// tokens and whether the file can be read by other users.
    pub fn load(path: &Path, agencies: u32) -> Result<(Tokens, bool), TokensError> {
        let read_error = |reason: String| TokensError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_error(e.to_string()))?;
        if let Some(kind) = not_a_file(meta.file_type()) {
            return Err(read_error(format!("a {kind}, not a regular file")));
        }
        if meta.len() > MAX_TOKENS_FILE_LEN {
            return Err(read_error(format!(
                "{} bytes is too long for a tokens file",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
        let tokens =
            Tokens::parse(&text, agencies).map_err(|(line, reason)| TokensError::BadLine {
                path: path.to_path_buf(),
                line,
                reason,
            })?;
        if let Some(agency) = (1..=agencies).find(|a| !tokens.by_agency.contains_key(a)) {
            return Err(TokensError::Missing {
                path: path.to_path_buf(),
                agency,
            });
        }
        Ok((tokens, open_to_others(&meta)))
    }

    /// The tokens of `text`; the error is a line number and what is wrong there.
    fn parse(text: &str, agencies: u32) -> Result<Tokens, (usize, String)> {
        let mut by_agency = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
            let (Some(agency), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err((number, "expected an agency and a token".into()));
            };
            let agency: u32 = agency
                .parse()
                .ok()
                .filter(|a| (1..=agencies).contains(a))
                .ok_or_else(|| {
                    (
                        number,
                        format!("{agency:?} is not an agency from 1 to {agencies}"),
                    )
                })?;
            let bytes = token.as_bytes();
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&bytes.len()) {
                return Err((
                    number,
                    format!(
                        "agency {agency}'s token is {} bytes; a token is {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}",
                        bytes.len()
                    ),
                ));
            }
            if !bytes.iter().all(|b| (0x21..=0x7E).contains(b)) {
                return Err((
                    number,
                    format!("agency {agency}'s token is not printable ASCII without spaces"),
                ));
            }
            let token = padded(bytes);
            // One token opens one agency's sessions: a token given twice would
            // let one agency speak as the other.
            if let Some((&other, _)) = by_agency.iter().find(|(_, known)| **known == token) {
                return Err((
                    number,
                    format!(
                        "agency {agency} has the same token as agency {other}; give each agency its own"
                    ),
                ));
            }
            if by_agency.insert(agency, token).is_some() {
                return Err((number, format!("a second token for agency {agency}")));
            }
        }
        Ok(Tokens { by_agency })
    }

    /// Whether `token` is `agency`'s, compared in constant time.
    fn accepts(&self, agency: u32, token: &[u8]) -> bool {
        let Some(expected) = self.by_agency.get(&agency) else {
            return false;
        };
        let fits = token.len() <= MAX_TOKEN_LEN;
        bool::from(expected.ct_eq(&padded(token))) && fits
    }
}

impl Access {
    /// Whether a peer at `ip` may be served at all.
    pub fn serves(&self, ip: IpAddr) -> bool {
        match self {
            Access::Tokens(_) => true,
            Access::LoopbackOnly => is_loopback(ip),
        }
    }

    /// Whether `token` lets the peer speak for `agency`.
    pub fn accepts(&self, agency: u32, token: &[u8]) -> bool {
        match self {
            Access::Tokens(tokens) => tokens.accepts(agency, token),
            Access::LoopbackOnly => true,
        }
    }
}

/// Loopback addresses: 127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "token-of-agency-1";
    const B: &str = "token-of-agency-2";

    #[test]
    fn each_agency_is_accepted_with_its_own_token_only() {
        let tokens = Tokens::parse(&format!("# tokens\n1 {A}\n\n2\t{B}\n"), 2).unwrap();
        assert!(tokens.accepts(1, A.as_bytes()));
        assert!(tokens.accepts(2, B.as_bytes()));
        assert!(!tokens.accepts(1, B.as_bytes()));
        assert!(!tokens.accepts(1, b""));
        assert!(!tokens.accepts(1, &A.as_bytes()[..A.len() - 1]));
        assert!(!tokens.accepts(1, format!("{A}x").as_bytes()));
        assert!(!tokens.accepts(3, A.as_bytes()));
        assert!(!tokens.accepts(1, &[b'x'; 300]));
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, line, wanted) in [
            (format!("1 {A}\n2 short\n"), 2, "bytes"),
            (format!("1 {A}\n1 {B}\n"), 2, "second token"),
            (
                format!("1 {A}\n2 {A}\n"),
                2,
                "agency 2 has the same token as agency 1",
            ),
            (format!("9 {A}\n"), 1, "not an agency"),
            (format!("x {A}\n"), 1, "not an agency"),
            (format!("1 {A} extra\n"), 1, "an agency and a token"),
            ("1\n".to_string(), 1, "an agency and a token"),
            (format!("1 {A}é\n"), 1, "printable"),
        ] {
            let Err((at, reason)) = Tokens::parse(&text, 2) else {
                panic!("{text:?} was accepted");
            };
            assert_eq!(at, line, "{text:?}");
            assert!(reason.contains(wanted), "{text:?}: {reason}");
        }
    }

    #[test]
    fn without_tokens_only_loopback_peers_are_served() {
        let access = Access::LoopbackOnly;
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(access.serves(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.2", "192.168.1.1", "::ffff:10.0.0.2", "fe80::1"] {
            assert!(!access.serves(ip.parse().unwrap()), "{ip}");
        }
        assert!(access.accepts(1, b"anything"));
    }
}
