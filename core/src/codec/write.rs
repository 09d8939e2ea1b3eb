//! Where encoders write. Each packet's encoding is written once, generic over [`Sink`],
//! and run twice: into a [`Counter`] to learn the lengths MQTT puts in front of the
//! data (remaining length, property length), then into the buffer. One code path
//! means the announced length and the written bytes cannot disagree.

use bytes::{BufMut, BytesMut};

use super::{varint_len, EncodeError};
use crate::limits::{REMAINING_LENGTH_MAX, STRING_BYTES_MAX};
use crate::packet::ProtocolVersion;

/// A destination for encoded bytes.
pub trait Sink {
    fn put_u8(&mut self, value: u8);
    fn put_u16(&mut self, value: u16);
    fn put_u32(&mut self, value: u32);
    fn put_slice(&mut self, bytes: &[u8]);

    /// A variable byte integer; callers keep `value` within 268,435,455.
    fn put_varint(&mut self, value: usize) {
        let mut value = value;
        loop {
            let byte = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                self.put_u8(byte);
                return;
            }
            self.put_u8(byte | 0x80);
        }
    }

    /// Binary data or a string: a two-byte length, then the bytes. Lengths over
    /// 65,535 are refused by the counting pass before anything is written.
    fn put_prefixed(&mut self, bytes: &[u8]) {
        self.note_field_len(bytes.len());
        self.put_u16(bytes.len() as u16);
        self.put_slice(bytes);
    }

    /// Lets the counting pass see field lengths; writers ignore it.
    fn note_field_len(&mut self, _len: usize) {}
}

impl Sink for BytesMut {
    fn put_u8(&mut self, value: u8) {
        BufMut::put_u8(self, value);
    }

    fn put_u16(&mut self, value: u16) {
        BufMut::put_u16(self, value);
    }

    fn put_u32(&mut self, value: u32) {
        BufMut::put_u32(self, value);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that only counts, and remembers a field that would not fit its prefix.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    len: usize,
    field_too_long: bool,
}

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.len += 1;
    }

    fn put_u16(&mut self, _: u16) {
        self.len += 2;
    }

    fn put_u32(&mut self, _: u32) {
        self.len += 4;
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
    }

    fn put_varint(&mut self, value: usize) {
        self.len += varint_len(value);
    }

    fn note_field_len(&mut self, len: usize) {
        if len > STRING_BYTES_MAX {
            self.field_too_long = true;
        }
    }
}

/// The variable header and payload of a packet: everything after the fixed header.
pub(crate) trait Body {
    fn emit_body<S: Sink>(&self, version: ProtocolVersion, sink: &mut S);
}

/// The remaining length of `body`, after checking every field fits its length prefix
/// and the whole fits the largest remaining length.
pub(crate) fn body_len<B: Body>(body: &B, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    body.emit_body(version, &mut counter);
    if counter.field_too_long {
        return Err(EncodeError::FieldTooLong);
    }
    if counter.len > REMAINING_LENGTH_MAX {
        return Err(EncodeError::TooLarge(counter.len));
    }
    Ok(counter.len)
}

/// Bytes of a whole frame whose remaining length is `body_len`.
pub(crate) const fn frame_len(body_len: usize) -> usize {
    1 + varint_len(body_len) + body_len
}

/// Writes a fixed header and the body it announces; `body_len` comes from [`body_len`].
pub(crate) fn put_frame<S: Sink, B: Body>(
    sink: &mut S,
    first: u8,
    body_len: usize,
    body: &B,
    version: ProtocolVersion,
) {
    sink.put_u8(first);
    sink.put_varint(body_len);
    body.emit_body(version, sink);
}

/// A set of MQTT 5 properties.
pub(crate) trait PropertySet {
    fn emit_properties<S: Sink>(&self, sink: &mut S);
}

/// MQTT 5 properties: a variable byte integer length, then the properties.
pub(crate) fn put_properties<S: Sink, P: PropertySet>(sink: &mut S, properties: &P) {
    let mut counter = Counter::default();
    properties.emit_properties(&mut counter);
    sink.put_varint(counter.len);
    if counter.field_too_long {
        sink.note_field_len(usize::MAX);
    }
    properties.emit_properties(sink);
}
