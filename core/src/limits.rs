//! Every protocol-level `*_max` in one place, with the relations between them checked at
//! compile time. Run-time limits (configured per broker) are clamped to these.

/// Largest remaining length a variable byte integer can express (MQTT 1.5.5).
pub const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// Largest whole packet: fixed header byte + 4 length bytes + remaining length.
pub const PACKET_SIZE_MAX: usize = 1 + 4 + REMAINING_LENGTH_MAX;

/// Bytes a variable byte integer may occupy.
pub const VARINT_BYTES_MAX: usize = 4;

/// Largest UTF-8 string or binary field (two-byte length prefix).
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

/// Largest subscription identifier (MQTT 5, 3.8.2.1.2).
pub const SUBSCRIPTION_IDENTIFIER_MAX: u32 = 268_435_455;

/// Default broker-side limit on the size of one inbound packet.
pub const PACKET_SIZE_DEFAULT: u32 = 1024 * 1024;

/// Default broker-side limit on the number of levels in a topic name or filter.
pub const TOPIC_LEVELS_DEFAULT: usize = 32;

/// Hard cap on the configurable level limit: trie matching recurses once per level.
pub const TOPIC_LEVELS_MAX: usize = 128;

const _: () = assert!(PACKET_SIZE_DEFAULT as usize <= PACKET_SIZE_MAX);
const _: () = assert!(STRING_BYTES_MAX < REMAINING_LENGTH_MAX);
const _: () = assert!(TOPIC_LEVELS_DEFAULT <= TOPIC_LEVELS_MAX);
const _: () = assert!(SUBSCRIPTION_IDENTIFIER_MAX as usize == REMAINING_LENGTH_MAX);
