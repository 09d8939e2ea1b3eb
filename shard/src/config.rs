//! What a broker is started with. The binary fills it from flags and environment;
//! every limit has a default a production broker can run with.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::security::Security;

pub use ringmq_core::session::QueueFullPolicy;

/// The broker's configuration, shared read-only by every shard.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// What every shard listens on (ports already resolved, never 0).
    pub listeners: Vec<ListenerConfig>,
    /// Passwords, ACL and failed-login limits, replaced at a reload.
    pub security: Arc<Security>,
    pub shards: usize,
    /// The CPU each shard is pinned to, by shard index; empty means not pinned.
    pub cpus: Vec<usize>,
    pub limits: Limits,
    /// Period of the `$SYS/broker/...` publications; `None` disables them.
    pub sys_interval: Option<Duration>,
    /// How long shutdown waits for queued messages to reach connected clients.
    pub shutdown_timeout: Duration,
    /// How long an idle shard polls for work before it sleeps in the kernel: a
    /// message that arrives meanwhile skips the wake-up (lower latency at low and
    /// moderate rates), at the price of that CPU time. Zero: sleep at once.
    pub idle_spin: Duration,
}

/// Every run-time limit, each with a defined behaviour when reached.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Client connections across all shards; past it CONNECT is refused with
    /// "Server unavailable" (3.1.1) / "Quota exceeded" (5).
    pub connections_max: usize,
    /// Largest inbound packet; larger ones end the connection (5: 0x95).
    pub packet_size_max: u32,
    /// Outbound QoS 1/2 messages awaiting acknowledgement per client, and the
    /// receive maximum announced to MQTT 5 clients.
    pub inflight_max: u16,
    /// Messages queued per session (offline or window full); past it QoS 1/2
    /// messages for that session are dropped and counted.
    pub queued_messages_max: usize,
    pub topic_levels_max: usize,
    /// Subscriptions one client may hold; past it SUBACK says "Quota exceeded".
    pub subscriptions_per_client_max: usize,
    /// Inbound topic aliases an MQTT 5 client may use.
    pub topic_alias_max: u16,
    /// Longest keep alive a client may use; 0 accepts the client's (even none).
    pub keep_alive_max_s: u16,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Cap on the session expiry a client asks for; also the lifetime of MQTT 3.1.1
    /// persistent sessions while offline.
    pub session_expiry_max_s: u32,
    /// Bytes buffered for one connection's socket; past it QoS 0 messages to it are
    /// dropped and QoS 1/2 wait in the session queue.
    pub outbound_bytes_max: usize,
    /// A write that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// Messages one shard-to-shard ring holds before senders wait.
    pub ring_capacity: usize,
    /// Sessions, connected or not, across all shards (split evenly); a CONNECT that
    /// needs a new session past it is refused (3.1.1: 0x03, 5: 0x97).
    pub sessions_max: usize,
    /// Retained topics across all shards (split by topic owner); past it a retained
    /// PUBLISH to a new topic is delivered but not kept, and counted.
    pub retained_max: usize,
    /// What a connected subscriber's full queue does to QoS 1/2 messages for it:
    /// drop them, or hold their publishers back until it drains.
    pub queue_full: QueueFullPolicy,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections_max: 100_000,
            packet_size_max: ringmq_core::limits::PACKET_SIZE_DEFAULT,
            inflight_max: 64,
            queued_messages_max: 1000,
            topic_levels_max: ringmq_core::limits::TOPIC_LEVELS_DEFAULT,
            subscriptions_per_client_max: 1000,
            topic_alias_max: 64,
            keep_alive_max_s: 0,
            connect_timeout: Duration::from_secs(10),
            session_expiry_max_s: 24 * 3600,
            outbound_bytes_max: 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            ring_capacity: 4096,
            sessions_max: 1_000_000,
            retained_max: 1_000_000,
            queue_full: QueueFullPolicy::Drop,
        }
    }
}

/// One address the shards accept connections on, and how.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub kind: ListenerKind,
    /// The TLS server configuration (`Tls`, `Wss`); a reload replaces it, new
    /// connections take the one in force when they are accepted.
    pub tls: Option<TlsConfigCell>,
    /// The HTTP path WebSocket upgrades are accepted on (`Ws`, `Wss`).
    pub ws_path: String,
    pub auth: ListenerAuth,
    /// Connections open on this listener across all shards (its own limit).
    pub connections: Arc<AtomicUsize>,
}

impl ListenerConfig {
    /// A plain MQTT listener with the broker-wide auth rules.
    pub fn tcp(addr: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            addr,
            kind: ListenerKind::Tcp,
            tls: None,
            ws_path: String::new(),
            auth: ListenerAuth::default(),
            connections: Arc::default(),
        }
    }

    /// How the listener is shown: `HOST:PORT` for plain MQTT, else with a scheme
    /// (`mqtts://`, `ws://…/mqtt`, `wss://…/mqtt`).
    pub fn url(&self) -> String {
        match self.kind {
            ListenerKind::Tcp => self.addr.to_string(),
            ListenerKind::Tls => format!("mqtts://{}", self.addr),
            ListenerKind::Ws => format!("ws://{}{}", self.addr, self.ws_path),
            ListenerKind::Wss => format!("wss://{}{}", self.addr, self.ws_path),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

/// A TLS configuration shared by the shards and replaceable at run time.
#[derive(Clone, Debug)]
pub struct TlsConfigCell(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsConfigCell {
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsConfigCell {
        TlsConfigCell(Arc::new(RwLock::new(config)))
    }

    pub fn get(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

/// What a listener asks of its clients beyond the broker-wide rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerAuth {
    /// Clients without credentials: as the broker-wide rule says (`None`), or
    /// allowed / refused here.
    pub anonymous: Option<bool>,
    /// Whether the broker's ACL applies to this listener's clients.
    pub acl: AclScope,
    pub username_from: UsernameSource,
    /// Connections this listener holds at once; 0: no limit of its own.
    pub connections_max: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AclScope {
    #[default]
    Applies,
    /// Trusted listener: its clients publish and subscribe anywhere.
    Exempt,
}

/// Where a client's user name comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsernameSource {
    /// The CONNECT's user name, checked against the password file.
    #[default]
    Connect,
    /// The verified client certificate's subject common name: the certificate is
    /// the credential.
    CommonName,
    /// The first subject alternative name of the verified certificate.
    SubjectAltName,
}
