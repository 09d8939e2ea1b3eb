//! The io_uring transport of ringmq, on glommio. It knows nothing of MQTT.
//!
//! Layout:
//! - [`probe`]: can this process use io_uring, and if not, why and how to fix it;
//! - [`listener`]: `SO_REUSEPORT` listeners, one per shard on the same address, and
//!   the resolution of port 0 to one port all shards share;
//! - [`stream`]: a connection split into a reading and a writing half (two
//!   descriptors of one socket, so a pending read never blocks a write), and its
//!   hand-over to another shard as a plain socket.
//!
//! glommio stays behind this crate and `shard`, so the runtime could be replaced.

pub mod listener;
pub mod probe;
pub mod stream;

pub use listener::{Listener, PortReservation};
pub use stream::{ReadHalf, Stream, WriteHalf};
