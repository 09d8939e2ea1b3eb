//! Questions and orders from outside the shards (the admin endpoint), and the
//! thread-safe [`BrokerHandle`] that asks them.
//!
//! Each shard polls a bounded channel of [`Control`] requests on a short timer and
//! answers on a one-shot channel that any async runtime can await. Nothing here
//! touches the publish path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::config::Limits;
use crate::ring::owner_of;
use crate::security::{Security, SecurityRules};
use crate::stats::ShardStats;

/// Requests a shard's control channel holds before callers are told it is busy.
pub(crate) const CONTROL_QUEUE_MAX: usize = 64;

/// How often a shard looks for control requests.
pub(crate) const CONTROL_POLL: Duration = Duration::from_millis(20);

/// One client session, connected or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub shard: usize,
    pub connected: bool,
    pub peer: Option<SocketAddr>,
    /// "3.1.1" or "5.0".
    pub protocol: &'static str,
    pub subscriptions: usize,
    /// QoS 1/2 messages inflight or queued for the client.
    pub pending_messages: usize,
    pub session_expiry_s: u32,
}

/// One subscription of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
}

/// A client and its subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDetail {
    pub info: ClientInfo,
    pub subscriptions: Vec<SubscriptionInfo>,
}

pub(crate) enum Control {
    Clients {
        limit: usize,
        reply: oneshot::Sender<Vec<ClientInfo>>,
    },
    Client {
        client_id: String,
        reply: oneshot::Sender<Option<ClientDetail>>,
    },
    Kick {
        client_id: String,
        reply: oneshot::Sender<bool>,
    },
    Subscriptions {
        limit: usize,
        reply: oneshot::Sender<Vec<SubscriptionInfo>>,
    },
    Reload {
        limits: Arc<Limits>,
        reply: oneshot::Sender<()>,
    },
    /// New security rules are in force: recompile every session's ACL.
    ReloadSecurity {
        rules: Arc<SecurityRules>,
        reply: oneshot::Sender<()>,
    },
}

/// A shard could not answer: its control queue is full or it is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the broker is busy or stopping; try again")]
pub struct Unavailable;

/// Asks the running shards questions from any thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct BrokerHandle {
    stats: Arc<Vec<Arc<ShardStats>>>,
    control: Vec<crossbeam_channel::Sender<Control>>,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl BrokerHandle {
    pub(crate) fn new(
        stats: Arc<Vec<Arc<ShardStats>>>,
        control: Vec<crossbeam_channel::Sender<Control>>,
        ready: Arc<AtomicBool>,
        stopping: Arc<AtomicBool>,
    ) -> BrokerHandle {
        BrokerHandle {
            stats,
            control,
            ready,
            stopping,
        }
    }

    /// Every shard's counters, by shard index.
    pub fn shard_stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }

    pub fn shards(&self) -> usize {
        self.control.len()
    }

    /// All shards listen and the broker is not stopping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Relaxed)
    }

    fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<oneshot::Receiver<T>, Unavailable> {
        let (reply, answer) = oneshot::channel();
        let sender = self.control.get(shard).ok_or(Unavailable)?;
        sender.try_send(make(reply)).map_err(|_| Unavailable)?;
        Ok(answer)
    }

    /// Asks every shard the same question and concatenates the answers.
    async fn gather<T>(
        &self,
        make: impl Fn(oneshot::Sender<Vec<T>>) -> Control,
    ) -> Result<Vec<T>, Unavailable> {
        let mut answers = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            answers.push(self.ask(shard, &make)?);
        }
        let mut all = Vec::new();
        for answer in answers {
            all.extend(answer.await.map_err(|_| Unavailable)?);
        }
        Ok(all)
    }

    /// Sessions on every shard, connected or not, sorted by client id; at most
    /// `limit`.
    pub async fn clients(&self, limit: usize) -> Result<Vec<ClientInfo>, Unavailable> {
        let mut all = self
            .gather(|reply| Control::Clients { limit, reply })
            .await?;
        all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        all.truncate(limit);
        Ok(all)
    }

    /// One session and its subscriptions, from the shard that owns the client id.
    pub async fn client(&self, client_id: &str) -> Result<Option<ClientDetail>, Unavailable> {
        let shard = owner_of(client_id.as_bytes(), self.shards());
        let client_id = client_id.to_owned();
        let answer = self.ask(shard, |reply| Control::Client { client_id, reply })?;
        answer.await.map_err(|_| Unavailable)
    }

    /// Disconnects a connected client (MQTT 5: DISCONNECT 0x98 Administrative
    /// action); its session stays for its expiry. False if it was not connected.
    pub async fn kick(&self, client_id: &str) -> Result<bool, Unavailable> {
        let shard = owner_of(client_id.as_bytes(), self.shards());
        let client_id = client_id.to_owned();
        let answer = self.ask(shard, |reply| Control::Kick { client_id, reply })?;
        answer.await.map_err(|_| Unavailable)
    }

    /// Replaces the limits on every shard. New connections and sessions use the new
    /// values; sessions that exist keep their windows and queue sizes, and the ring
    /// capacity, fixed at start, does not change.
    pub async fn reload_limits(&self, limits: Limits) -> Result<(), Unavailable> {
        let limits = Arc::new(limits);
        let mut answers = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            let limits = Arc::clone(&limits);
            answers.push(self.ask(shard, |reply| Control::Reload { limits, reply })?);
        }
        for answer in answers {
            answer.await.map_err(|_| Unavailable)?;
        }
        Ok(())
    }

    /// Puts `rules` in force: new CONNECTs use them at once, and every shard
    /// recompiles the ACL of its sessions (their next publish, subscribe and
    /// delivery obey the new rules). Returns once every shard has.
    pub async fn reload_security(
        &self,
        security: &Security,
        rules: SecurityRules,
    ) -> Result<(), Unavailable> {
        security.replace(rules);
        let rules = security.rules();
        let mut answers = Vec::with_capacity(self.shards());
        for shard in 0..self.shards() {
            let rules = Arc::clone(&rules);
            answers.push(self.ask(shard, |reply| Control::ReloadSecurity { rules, reply })?);
        }
        for answer in answers {
            answer.await.map_err(|_| Unavailable)?;
        }
        Ok(())
    }

    /// Subscriptions on every shard, sorted by client id and filter; at most `limit`.
    pub async fn subscriptions(&self, limit: usize) -> Result<Vec<SubscriptionInfo>, Unavailable> {
        let mut all = self
            .gather(|reply| Control::Subscriptions { limit, reply })
            .await?;
        all.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
        all.truncate(limit);
        Ok(all)
    }
}
