//! The shards of ringmq: one glommio executor per core, each owning its connections,
//! the sessions of the client ids it owns, and their subscriptions.
//!
//! Layout:
//! - [`config`]: what a broker is started with, every limit included;
//! - `runtime`: executors, the ring mesh, accept loops, timers, `$SYS`;
//! - `connection`: CONNECT handshake, hand-over to the owning shard, reader and
//!   writer tasks;
//! - `state`: a shard's sessions, tries and retained partition, and routing;
//! - `routes`: a memo of what the tries answered for recent topics;
//! - `ring`: what travels between shards, and which shard owns a client id;
//! - [`security`]: the password file, ACL and failed-login limiter in force, and
//!   the login decision of a CONNECT;
//! - [`stats`]: per-shard counters;
//! - [`control`]: questions from outside (the admin endpoint) and the handle that
//!   asks them;
//! - `notify`: wake-ups between the tasks of one shard.
//!
//! Data path: a PUBLISH is matched once against the local trie (this shard's
//! subscribers) and once against the interest table (which other shards have
//! subscribers, and the members of share groups); one `Arc` of the message goes to
//! each interested shard over its ring, which fans out to its own subscribers. Both
//! answers are memoized per topic while their trie is unchanged.

pub mod config;
mod connection;
pub mod control;
mod notify;
mod ring;
mod routes;
mod runtime;
pub mod security;
mod state;
pub mod stats;

pub use config::{
    AclScope, BrokerConfig, Limits, ListenerAuth, ListenerConfig, ListenerKind, QueueFullPolicy,
    TlsConfigCell, UsernameSource,
};
pub use control::BrokerHandle;
pub use ring::owner_of;
pub use runtime::{start, Running, StartError, Stopper};
pub use security::{Security, SecurityRules};
