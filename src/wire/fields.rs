//! The field codecs both directions use: a cursor over one whole message
//! (`Fields`), peeks into a header that may be incomplete, and the `str16` writer.

use super::digest::{DIGEST_LEN, Digest};
use super::error::{ProtocolError, malformed};

/// What a decoder returns: `Ok(None)` while more bytes are needed, else the
/// message and how many bytes it used.
pub(crate) type Decoded<T> = Result<Option<(T, usize)>, ProtocolError>;

/// A cursor over the bytes of one whole message. Running past the end is
/// `Malformed`, because the caller has already checked that the message is complete.
pub(super) struct Fields<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, pos: 0 }
    }

    pub(super) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        match self.bytes.get(self.pos..self.pos.saturating_add(len)) {
            Some(slice) => {
                self.pos += len;
                Ok(slice)
            }
            None => Err(self.short(len, what)),
        }
    }

    #[cold]
    pub(super) fn short(&self, len: usize, what: &str) -> ProtocolError {
        malformed(format!(
            "{what} needs {len} bytes but only {} remain",
            self.bytes.len() - self.pos
        ))
    }

    pub(super) fn u16(&mut self, what: &str) -> Result<u16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A str16 field's bytes; with `check_text`, they must be UTF-8.
    pub(super) fn text16(
        &mut self,
        what: &str,
        check_text: bool,
    ) -> Result<&'a [u8], ProtocolError> {
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        if check_text && !crate::text::is_utf8(bytes) {
            return Err(malformed(format!("{what} is not valid UTF-8")));
        }
        Ok(bytes)
    }

    pub(super) fn str16(&mut self, what: &str) -> Result<&'a str, ProtocolError> {
        let bytes = self.text16(what, false)?;
        std::str::from_utf8(bytes).map_err(|_| malformed(format!("{what} is not valid UTF-8")))
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn digest(&mut self, what: &str) -> Result<Digest, ProtocolError> {
        let mut out = [0u8; DIGEST_LEN];
        out.copy_from_slice(self.take(DIGEST_LEN, what)?);
        Ok(Digest(out))
    }
}

pub(super) fn peek_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

pub(super) fn peek_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

#[inline]
pub(super) fn put_str16(out: &mut Vec<u8>, text: &[u8], what: &str) -> Result<(), ProtocolError> {
    let Ok(len) = u16::try_from(text.len()) else {
        return Err(too_long_for_str16(what, text.len()));
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text);
    Ok(())
}

#[cold]
fn too_long_for_str16(what: &str, len: usize) -> ProtocolError {
    malformed(format!("{what} of {len} bytes does not fit a str16"))
}
