//! The round's digests (protocol version 3): SHA-256 over an agency's bets in
//! their wire encoding, and the round's seal over every agency's total and digest.
//!
//! Both sides compute an agency's digest the same way: the concatenation of its
//! bets, in bet-number order, each as inside a BETS body. A BETS body is already
//! such a concatenation, so the digest does not depend on batching, and the
//! server hashes each stored body as it is (no second encoding). SHA-256 comes
//! from `ring`, which rustls already builds; nothing here is cryptography of our own.

use ring::digest::{Context, SHA256};
use std::fmt;

/// Bytes of a SHA-256 digest.
pub(crate) const DIGEST_LEN: usize = 32;

/// A SHA-256 digest: an agency's bets, a receipt, or a round's seal.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// The digest of no bets: SHA-256 of nothing.
    pub fn of_nothing() -> Digest {
        Hasher::new().digest()
    }

    /// The first 8 hex digits, as error messages show a digest.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }

    /// Reads 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Digest> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 * DIGEST_LEN {
            return None;
        }
        let mut out = [0u8; DIGEST_LEN];
        for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            // Two hex digits make a value below 256.
            *byte = u8::try_from(high * 16 + low).ok()?;
        }
        Some(Digest(out))
    }
}

/// 64 lowercase hex digits.
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A running SHA-256 over the bytes given so far. Cloning it is cheap (the
/// state is about a hundred bytes), so a digest can be read at any point.
#[derive(Clone)]
pub(crate) struct Hasher(Context);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Context::new(&SHA256))
    }

    /// Adds bytes: encoded bets, or a seal's entry.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added so far; the hasher goes on.
    pub fn digest(&self) -> Digest {
        let mut out = [0u8; DIGEST_LEN];
        out.copy_from_slice(self.0.clone().finish().as_ref());
        Digest(out)
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.digest())
    }
}

/// The seal of a round: SHA-256 over `u32 agency · u32 total · digest` for each
/// agency 1..N in order, as recorded with its FINISH.
pub(crate) fn seal(finishes: impl IntoIterator<Item = (u32, u32, Digest)>) -> Digest {
    let mut hasher = Hasher::new();
    for (agency, total, digest) in finishes {
        hasher.update(&agency.to_be_bytes());
        hasher.update(&total.to_be_bytes());
        hasher.update(&digest.0);
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_nothing_is_sha256_of_nothing() {
        assert_eq!(
            Digest::of_nothing().to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::of_nothing().short(), "e3b0c442");
    }

    #[test]
    fn the_digest_does_not_depend_on_how_the_bytes_were_split() {
        let mut whole = Hasher::new();
        whole.update(b"abcdef");
        let mut parts = Hasher::new();
        parts.update(b"ab");
        let halfway = parts.digest();
        parts.update(b"cdef");
        assert_eq!(whole.digest(), parts.digest());
        assert_ne!(halfway, parts.digest());
        // "abc" is FIPS 180-2's first example.
        let mut abc = Hasher::new();
        abc.update(b"abc");
        assert_eq!(
            abc.digest().to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_reads_back_what_display_writes_and_nothing_else() {
        let mut hasher = Hasher::new();
        hasher.update(b"x");
        let digest = hasher.digest();
        assert_eq!(Digest::from_hex(&digest.to_string()), Some(digest));
        assert_eq!(
            Digest::from_hex(&digest.to_string().to_uppercase()),
            Some(digest)
        );
        assert_eq!(Digest::from_hex("abc"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
        assert_eq!(Digest::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn the_seal_covers_every_agency_its_total_and_its_digest_in_order() {
        let a = Digest::of_nothing();
        let mut hasher = Hasher::new();
        hasher.update(b"bets");
        let b = hasher.digest();
        let base = seal([(1, 0, a), (2, 4, b)]);
        assert_ne!(base, seal([(2, 4, b), (1, 0, a)]));
        assert_ne!(base, seal([(1, 0, a), (2, 5, b)]));
        assert_ne!(base, seal([(1, 0, b), (2, 4, b)]));
        let mut by_hand = Hasher::new();
        by_hand.update(&[0, 0, 0, 1, 0, 0, 0, 0]);
        by_hand.update(&a.0);
        by_hand.update(&[0, 0, 0, 2, 0, 0, 0, 4]);
        by_hand.update(&b.0);
        assert_eq!(base, by_hand.digest());
    }
}
