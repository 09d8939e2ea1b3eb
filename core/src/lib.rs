//! The sans-IO protocol core of ringmq.
//!
//! Layout:
//! - [`packet`]: the MQTT 3.1.1 / 5.0 packet model (owned, `Bytes`-backed, zero-copy).
//! - [`reason`]: every MQTT 5 reason code and which packet may carry which.
//! - [`codec`]: check-then-parse decoding from a growing buffer, and encoding.
//! - [`topic`]: topic name / filter validation, the subscription trie and the
//!   retained-topic index.
//! - [`limits`]: every protocol-level `*_max`.
//!
//! Nothing here reads a clock, touches a socket or spawns a task: time is a parameter
//! and I/O belongs to the caller. That keeps the protocol deterministic and testable on
//! one thread.
#![forbid(unsafe_code)]

pub mod codec;
pub mod limits;
pub mod packet;
pub mod reason;
pub mod session;
pub mod topic;
