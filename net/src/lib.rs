//! The io_uring transport of ringmq, on glommio. It knows nothing of MQTT.
//!
//! Layout:
//! - [`probe`]: can this process use io_uring, and if not, why and how to fix it;
//! - [`listener`]: `SO_REUSEPORT` listeners, one per shard on the same address, and
//!   the resolution of port 0 to one port all shards share;
//! - [`stream`]: a connection split into a reading and a writing half (two
//!   descriptors of one socket, so a pending read never blocks a write), and its
//!   hand-over to another shard as a plain socket;
//! - [`transport`]: TLS and WebSocket as a sans-IO layer between the socket's
//!   bytes and the application's (rustls, tungstenite), with the TLS settings of
//!   a listener and the identity of a client certificate.
//!
//! glommio stays behind this crate and `shard`, so the runtime could be replaced.

pub mod listener;
pub mod probe;
pub mod stream;
pub mod transport;

pub use listener::{Listener, PortReservation};
pub use stream::{ReadHalf, Stream, WriteHalf};
pub use transport::{
    load_tls, ClientCertMode, PeerIdentity, TlsSettings, Transport, TransportError,
    TransportLimits, WsSettings,
};
