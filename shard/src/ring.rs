//! What travels on the shard-to-shard rings (glommio's channel mesh: one bounded SPSC
//! queue per ordered pair of shards, wired at start). Each ring is FIFO, which the
//! protocol relies on: an interest update sent before a query is applied before the
//! query is answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use ringmq_core::packet::Connect;
use ringmq_core::session::{Message, SessionKey};
use ringmq_net::transport::Transport;

use crate::security::Login;

/// Who holds interest in a filter, as the interest table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum InterestKey {
    /// A shard with at least one plain subscriber of the filter.
    Shard(u16),
    /// One member of a share group, on its shard.
    Member(u16, SessionKey),
}

pub(crate) enum ShardMsg {
    /// A connection whose client id this shard owns, handed over after CONNECT.
    Adopt(Box<Adoption>),
    /// Deliver to this shard's plain subscribers.
    Publish(Arc<Message>),
    /// Deliver to one member of a share group.
    SharedPublish {
        message: Arc<Message>,
        member: SessionKey,
        filter: ByteString,
    },
    /// A filter's interest appeared (`add`) or went away on the sending shard.
    Interest {
        filter: ByteString,
        key: InterestKey,
        add: bool,
    },
    /// Store (or, with an empty payload, delete) a retained message whose topic this
    /// shard owns.
    Retain(Arc<Message>),
    /// Answer with the retained messages of this shard matching `filters`. Also a
    /// barrier: everything the sender sent before is applied when it is answered.
    Query {
        token: u64,
        from: u16,
        filters: Vec<ByteString>,
    },
    QueryReply {
        token: u64,
        retained: Vec<Arc<Message>>,
    },
}

/// A connection in transit between shards.
pub(crate) struct Adoption {
    pub socket: socket2::Socket,
    pub accepted: Accepted,
}

/// A connection whose CONNECT was accepted, on its way to being served.
pub(crate) struct Accepted {
    pub peer: SocketAddr,
    pub connect: Box<Connect>,
    /// The client sent no id and the broker assigned one (CONNACK says which).
    pub assigned_id: bool,
    /// Bytes read after the CONNECT (a client may pipeline), already out of the
    /// transport.
    pub leftover: Bytes,
    pub permit: ConnectionPermit,
    /// The slot of the listener's own limit, if it has one.
    pub listener_permit: Option<ConnectionPermit>,
    /// TLS and/or WebSocket state; `None` for plain MQTT.
    pub transport: Option<Box<Transport>>,
    pub login: Login,
}

/// One slot of the broker-wide connection limit, released when dropped, on whichever
/// shard the connection ends.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    count: Arc<AtomicUsize>,
}

impl ConnectionPermit {
    /// A slot, or `None` when `max` connections are open.
    pub(crate) fn acquire(count: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionPermit> {
        let previous = count.fetch_add(1, Ordering::Relaxed);
        if previous >= max {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionPermit {
            count: Arc::clone(count),
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The shard that owns a client id: FNV-1a 64 of its bytes, modulo the shard count.
/// Stable and documented, so operators and tests can tell where a client lives.
pub fn owner_of(client_id: &[u8], shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in client_id {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // FNV-1a 64 of "" and "a" (from the algorithm's reference test vectors).
        assert_eq!(
            owner_of(b"", usize::MAX),
            (0xcbf2_9ce4_8422_2325u64 % usize::MAX as u64) as usize
        );
        assert_eq!(
            owner_of(b"a", usize::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % usize::MAX as u64) as usize
        );
        assert!(owner_of(b"client-1", 4) < 4);
        assert_eq!(owner_of(b"x", 0), 0);
    }

    #[test]
    fn permits_are_limited_and_released() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = ConnectionPermit::acquire(&count, 2);
        let b = ConnectionPermit::acquire(&count, 2);
        assert!(a.is_some() && b.is_some());
        assert!(ConnectionPermit::acquire(&count, 2).is_none());
        drop(a);
        assert!(ConnectionPermit::acquire(&count, 2).is_some());
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}
