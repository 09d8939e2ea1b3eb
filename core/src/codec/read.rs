//! A bounds-checked reader over one frame's body. Every read checks what is left first,
//! so no input can make it panic or read past the frame; strings and binary fields are
//! `Bytes` slices of the frame.

use bytes::{Buf, Bytes};
use bytestring::ByteString;

use super::DecodeError;
use crate::limits::VARINT_BYTES_MAX;

pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Every byte of a frame must be accounted for.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("bytes left over after the packet"))
        }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() >= n {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1, "packet ends inside a byte field")?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2, "packet ends inside a two-byte integer")?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4, "packet ends inside a four-byte integer")?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer (1.5.5): at most 4 bytes, in its shortest form.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for index in 0..VARINT_BYTES_MAX {
            let byte = self.u8().map_err(|_| {
                DecodeError::Malformed("packet ends inside a variable byte integer")
            })?;
            value |= u32::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                if byte == 0 && index > 0 {
                    return Err(DecodeError::Malformed(
                        "variable byte integer not in its shortest form",
                    ));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// Binary data (1.5.6): a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.take(len, "binary field longer than the packet")
    }

    /// A UTF-8 encoded string (1.5.4): well-formed UTF-8 without U+0000.
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len, "string longer than the packet")?;
        if bytes.contains(&0) {
            return Err(DecodeError::Malformed("string contains U+0000"));
        }
        ByteString::try_from(bytes).map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))
    }

    /// A PUBLISH or will topic name: a UTF-8 string (1.5.4) that is empty (a topic
    /// alias stands in) or holds no wildcard (3.3.2.1). One pass over the bytes finds
    /// U+0000, `+` and `#` (none of them occurs inside a multi-byte UTF-8 sequence),
    /// then the UTF-8 check.
    pub(crate) fn topic_name(&mut self) -> Result<ByteString, DecodeError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len, "string longer than the packet")?;
        if has_nul_or_wildcard(&bytes) {
            if bytes.contains(&0) {
                return Err(DecodeError::Malformed("string contains U+0000"));
            }
            return Err(DecodeError::TopicNameInvalid("wildcard in a topic name"));
        }
        ByteString::try_from(bytes).map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))
    }

    /// Takes a zero property length, the common case of a PUBLISH: true when the next
    /// byte is 0 (and consumes it), false otherwise (and consumes nothing).
    pub(crate) fn skip_empty_properties(&mut self) -> bool {
        if self.buf.first() == Some(&0) {
            self.buf.advance(1);
            true
        } else {
            false
        }
    }

    /// The next `n` bytes, as a slice of the frame.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything that is left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }
}

/// Whether `bytes` holds a 0, `+` or `#` byte: eight bytes per step with the classic
/// "has a zero byte" test (`(x - 0x01..) & !x & 0x80..` is non-zero exactly when some
/// byte of `x` is 0) applied to `x`, `x ^ '+'..` and `x ^ '#'..`. Topics are short, and
/// a library search pays more to set up than this loop takes.
fn has_nul_or_wildcard(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const PLUS: u64 = u64::from_ne_bytes([b'+'; 8]);
    const HASH: u64 = u64::from_ne_bytes([b'#'; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut words = bytes.chunks_exact(8);
    let mut found = 0;
    for word in words.by_ref() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        found |= has_zero(x) | has_zero(x ^ PLUS) | has_zero(x ^ HASH);
    }
    found != 0
        || words
            .remainder()
            .iter()
            .any(|&b| b == 0 || b == b'+' || b == b'#')
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    #[test]
    fn nul_and_wildcards_are_found_at_every_position() {
        for len in 0..40 {
            let clean: Vec<u8> = (0..len).map(|i| b"az/09$"[i % 6]).collect();
            assert!(!super::has_nul_or_wildcard(&clean), "{len}");
            for at in 0..len {
                for special in [0u8, b'+', b'#'] {
                    let mut bytes = clean.clone();
                    bytes[at] = special;
                    assert!(super::has_nul_or_wildcard(&bytes), "{len} {at} {special}");
                }
                // Neighbours of the special bytes are not mistaken for them.
                for near in [1u8, 0x80, 0xFF, b'*', b',', b'"', b'$'] {
                    let mut bytes = clean.clone();
                    bytes[at] = near;
                    assert!(!super::has_nul_or_wildcard(&bytes), "{len} {at} {near}");
                }
            }
        }
    }

    use super::*;

    fn reader(bytes: &'static [u8]) -> Reader {
        Reader::new(Bytes::from_static(bytes))
    }

    #[test]
    fn varint_spec_boundaries() {
        let cases: [(&'static [u8], u32); 8] = [
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            assert_eq!(reader(bytes).varint(), Ok(value), "{bytes:02X?}");
        }
    }

    #[test]
    fn varint_rejects_five_bytes_truncation_and_padding() {
        assert!(reader(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).varint().is_err());
        assert!(reader(&[0x80]).varint().is_err());
        assert!(reader(&[0x80, 0x00]).varint().is_err());
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8_and_overrun() {
        assert_eq!(
            reader(&[0, 3, b'a', 0, b'b']).string(),
            Err(DecodeError::Malformed("string contains U+0000"))
        );
        assert_eq!(
            reader(&[0, 2, 0xC3, 0x28]).string(),
            Err(DecodeError::Malformed("string is not valid UTF-8"))
        );
        // A UTF-16 surrogate half encoded as UTF-8 (MQTT-1.5.4-1).
        assert!(reader(&[0, 3, 0xED, 0xA0, 0x80]).string().is_err());
        assert!(reader(&[0, 5, b'a']).string().is_err());
        assert_eq!(
            reader(&[0, 4, b'M', b'Q', b'T', b'T'])
                .string()
                .map(|s| s.to_string()),
            Ok("MQTT".to_string())
        );
    }

    #[test]
    fn fixed_width_reads_fail_at_the_end() {
        let mut r = reader(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert!(r.u16().is_err());
        assert_eq!(r.u8(), Ok(3));
        assert!(r.u8().is_err());
        assert!(r.u32().is_err());
        assert!(r.finish().is_ok());
    }
}
