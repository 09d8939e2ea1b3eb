//! A shard's state and everything done to it synchronously: sessions, the local
//! subscription trie, the replica of the interest table, this shard's partition of the
//! retained messages, routing.
//!
//! Tasks of the shard borrow it for short, non-async sections; messages for other
//! shards collect in `outbox` and are sent by the task once the borrow ends, so no
//! borrow is ever held across an await.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ringmq_core::packet::{
    AckProperties, ConnAck, ConnAckProperties, Connect, Disconnect, Packet, ProtocolVersion,
    Publish, PublishProperties, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
use ringmq_core::reason::ReasonCode;
use ringmq_core::session::{
    write_packet, Delivery, FrameCache, Grant, Inbound, Message, Session, SessionKey,
    SessionLimits, SubscriptionEntry, Timestamp, Violation,
};
use ringmq_core::topic::{self, Filter, Match, RetainedTree, SubscriptionTrie};

use crate::config::Limits;
use crate::control::{ClientDetail, ClientInfo, Control, SubscriptionInfo};
use crate::notify::{Event, Notify, OneShot};
use crate::ring::{owner_of, InterestKey, ShardMsg};
use crate::routes::{RouteCache, Shards};
use crate::security::{Login, SecurityRules};
use crate::stats::ShardStats;
use ringmq_auth::SubscribeDecision;
use tracing::debug;

/// Milliseconds since the process started, on the monotonic clock all shards share,
/// so deadlines (message expiry) mean the same on every shard.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn now() -> Timestamp {
    Timestamp(u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// The monotonic clock of latency samples, in nanoseconds; never 0 (0 marks a
/// message that is not a sample).
pub(crate) fn clock_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One inbound PUBLISH in this many is a latency sample: two clock reads per
/// sample, nothing for the others.
const LATENCY_SAMPLE_EVERY: u32 = 32;

/// A limit on connections or sessions reached, as each version can say it.
pub(crate) fn quota_reason(version: ProtocolVersion) -> ReasonCode {
    match version {
        ProtocolVersion::V5 => ReasonCode::QuotaExceeded,
        ProtocolVersion::V311 => ReasonCode::ServerUnavailable,
    }
}

/// Why the broker closes a connection, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    TakenOver,
    Kicked(ReasonCode),
    /// The socket could not be written (the client is gone or stopped reading).
    WriteFailed,
}

impl CloseReason {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            CloseReason::TakenOver => "session taken over",
            CloseReason::Kicked(ReasonCode::Success) => "closed",
            CloseReason::Kicked(ReasonCode::KeepAliveTimeout) => "keep alive timeout",
            CloseReason::Kicked(ReasonCode::ServerShuttingDown) => "broker shutting down",
            CloseReason::Kicked(ReasonCode::AdministrativeAction) => "kicked by an administrator",
            CloseReason::Kicked(_) => "closed by the broker",
            CloseReason::WriteFailed => "write failed or timed out",
        }
    }
}

/// One live connection as the shard sees it: its output buffer and the writer's bell.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub out: RefCell<BytesMut>,
    pub wake: Notify,
    /// Rung by the writer after each write, for a reader waiting for room.
    pub drained: Notify,
    /// Set when the broker ends the connection: the writer flushes and closes.
    pub close: Cell<Option<CloseReason>>,
    /// The sample time of a latency-sample message in `out` (0: none), for the
    /// writer to record once it has written it.
    pub sample_ns: Cell<u64>,
    pub generation: u64,
    pub peer: SocketAddr,
}

impl ConnHandle {
    pub(crate) fn new(generation: u64, peer: SocketAddr) -> Rc<ConnHandle> {
        Rc::new(ConnHandle {
            out: RefCell::new(BytesMut::new()),
            wake: Notify::default(),
            drained: Notify::default(),
            close: Cell::new(None),
            sample_ns: Cell::new(0),
            generation,
            peer,
        })
    }

    pub(crate) fn write(&self, packet: &Packet, version: ProtocolVersion) {
        write_packet(packet, version, &mut self.out.borrow_mut());
        self.wake.notify();
    }

    pub(crate) fn close_with(&self, reason: CloseReason) {
        self.close.set(Some(reason));
        self.wake.notify();
    }
}

/// A plain subscription in the local trie.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalSub {
    options: SubscriptionOptions,
    id: Option<NonZeroU32>,
}

impl LocalSub {
    #[cfg(test)]
    pub(crate) fn new(options: SubscriptionOptions, id: Option<NonZeroU32>) -> LocalSub {
        LocalSub { options, id }
    }
}

struct Slot {
    session: Session,
    conn: Option<Rc<ConnHandle>>,
    /// Session expiry interval once the connection is gone.
    expiry_s: u32,
    expires_at: Option<Timestamp>,
    will: Option<Will>,
    /// A will waiting for its delay (MQTT 5 will delay interval).
    will_at: Option<Timestamp>,
    /// Who the client logged in as, and its ACL.
    login: Login,
    /// Check each delivery against the ACL: a subscription was granted with a
    /// deny rule inside it, the session was resumed, or the rules were reloaded.
    receive_check: bool,
}

impl Slot {
    /// Whether the ACL lets this client's will go out (checked when it is sent).
    fn may_publish_will(&self, will: &Will) -> bool {
        self.login
            .acl
            .as_ref()
            .is_none_or(|acl| acl.may_publish(&will.topic))
    }

    fn may_receive(&self, topic: &str) -> bool {
        !self.receive_check
            || self
                .login
                .acl
                .as_ref()
                .is_none_or(|acl| acl.may_receive(topic))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    SessionExpiry,
    Will,
}

/// A subscribe waiting for the other shards' answers (a barrier and retained query).
pub(crate) struct Waiter {
    remaining: usize,
    retained: Vec<Arc<Message>>,
    done: Rc<OneShot<Vec<Arc<Message>>>>,
}

/// The retained lookups a SUBSCRIBE asks for once every shard has answered.
#[derive(Debug)]
pub(crate) struct SubscribePlan {
    packet_id: ringmq_core::packet::PacketId,
    reasons: Vec<ReasonCode>,
    retained: Vec<(ByteString, SubscriptionOptions, Option<NonZeroU32>)>,
}

impl SubscribePlan {
    pub(crate) fn retained_filters(&self) -> Vec<ByteString> {
        self.retained
            .iter()
            .map(|(filter, _, _)| filter.clone())
            .collect()
    }
}

/// A connection accepted by [`Shard::attach`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attached {
    pub key: SessionKey,
    pub version: ProtocolVersion,
    /// The keep alive in force (the client's, or the broker's cap).
    pub keep_alive_s: u16,
}

/// How a connection ended, as far as will and expiry care.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    /// DISCONNECT from the client: `with_will` for MQTT 5 reason 0x04; `expiry_s` a
    /// new session expiry interval from its properties.
    Disconnect {
        with_will: bool,
        expiry_s: Option<u32>,
    },
    /// Anything else: network error, keep-alive timeout, protocol error.
    Abnormal,
}

pub(crate) struct Shard {
    pub id: u16,
    pub shards: usize,
    pub limits: Arc<Limits>,
    pub stats: Arc<ShardStats>,
    /// Keyed by ids this shard hands out, never by client input: the fast hash.
    sessions: HashMap<SessionKey, Slot, foldhash::fast::RandomState>,
    by_client: HashMap<ByteString, SessionKey>,
    local: SubscriptionTrie<SessionKey, LocalSub>,
    interest: SubscriptionTrie<InterestKey, ()>,
    retained: RetainedTree<Arc<Message>>,
    cursors: HashMap<ByteString, usize, foldhash::quality::RandomState>,
    next_session: u64,
    next_generation: u64,
    next_token: u64,
    waiters: HashMap<u64, Waiter>,
    timers: BinaryHeap<Reverse<(Timestamp, SessionKey, TimerKind)>>,
    /// Messages for other shards, sent by the running task when its borrow ends.
    pub outbox: Vec<(usize, ShardMsg)>,
    matches: Vec<(SessionKey, LocalSub)>,
    /// What the tries answered for recent topics, while they are unchanged.
    routes: RouteCache,
    offline_out: BytesMut,
    /// Encoded frames of the message being fanned out, shared by its subscribers.
    frames: FrameCache,
    /// Inbound PUBLISHes until the next latency sample.
    sample_countdown: u32,
    /// Sessions the current work left congested (backpressure policy): the task
    /// that did it waits for them before it reads more.
    congested: Vec<SessionKey>,
    /// Rung whenever a session's queue may have drained.
    pub drained: Rc<Event>,
}

impl Shard {
    pub(crate) fn new(
        id: u16,
        shards: usize,
        limits: Arc<Limits>,
        stats: Arc<ShardStats>,
    ) -> Shard {
        Shard {
            id,
            shards,
            limits,
            stats,
            sessions: HashMap::default(),
            by_client: HashMap::new(),
            local: SubscriptionTrie::new(),
            interest: SubscriptionTrie::new(),
            retained: RetainedTree::new(),
            cursors: HashMap::default(),
            next_session: 0,
            next_generation: 0,
            next_token: 0,
            waiters: HashMap::new(),
            timers: BinaryHeap::new(),
            outbox: Vec::new(),
            matches: Vec::new(),
            routes: RouteCache::default(),
            offline_out: BytesMut::new(),
            frames: FrameCache::default(),
            sample_countdown: 1,
            congested: Vec::new(),
            drained: Rc::new(Event::default()),
        }
    }

    fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            inflight_max: self.limits.inflight_max,
            queued_max: self.limits.queued_messages_max,
            receive_maximum: self.limits.inflight_max,
            topic_alias_maximum: self.limits.topic_alias_max,
            topic_levels_max: self.limits.topic_levels_max,
            subscriptions_max: self.limits.subscriptions_per_client_max,
            queue_full: self.limits.queue_full,
        }
    }

    pub(crate) fn next_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Session keys are unique on the node: the shard id in the top bits.
    fn next_key(&mut self) -> SessionKey {
        self.next_session += 1;
        SessionKey((u64::from(self.id) << 48) | self.next_session)
    }

    fn broadcast(&mut self, make: impl Fn() -> ShardMsg) {
        for shard in 0..self.shards {
            if shard != usize::from(self.id) {
                self.outbox.push((shard, make()));
            }
        }
    }

    /// Attaches a connection whose CONNECT was accepted: takes over a live
    /// connection of the same client, resumes or replaces its session, and writes
    /// CONNACK plus anything the session had to resend.
    pub(crate) fn attach(
        &mut self,
        connect: Box<Connect>,
        assigned_id: bool,
        conn: &Rc<ConnHandle>,
        login: Login,
    ) -> Result<Attached, ReasonCode> {
        let keep_alive_s = self.keep_alive_s(connect.keep_alive_s);
        let now = now();
        let connect = *connect;
        let version = connect.protocol;
        let expiry_max = self.limits.session_expiry_max_s;
        let asked_expiry_s = match version {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval_s.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => expiry_max,
        };
        let expiry_s = asked_expiry_s.min(expiry_max);

        let existing = self.by_client.get(&connect.client_id).copied();
        let needs_new = existing.is_none() || connect.clean_start;
        if needs_new && existing.is_none() && self.sessions.len() >= self.sessions_max() {
            self.stats.sessions_refused.inc();
            return Err(quota_reason(version));
        }
        let mut session_present = false;
        if let Some(key) = existing {
            self.take_over(key, connect.clean_start, now);
            if connect.clean_start {
                self.end_session(key);
            } else {
                session_present = true;
            }
        }
        let key = match self.by_client.get(&connect.client_id) {
            Some(&key) if session_present => key,
            _ => {
                let key = self.next_key();
                let session = Session::new(connect.client_id.clone(), key, self.session_limits());
                self.sessions.insert(
                    key,
                    Slot {
                        session,
                        conn: None,
                        expiry_s,
                        expires_at: None,
                        will: None,
                        will_at: None,
                        login: login.clone(),
                        receive_check: false,
                    },
                );
                self.by_client.insert(connect.client_id.clone(), key);
                self.stats.sessions.inc();
                key
            }
        };

        let mut properties = ConnAckProperties::default();
        if version == ProtocolVersion::V5 {
            properties.receive_maximum = std::num::NonZeroU16::new(self.limits.inflight_max);
            properties.maximum_packet_size = NonZeroU32::new(self.limits.packet_size_max);
            properties.topic_alias_maximum = Some(self.limits.topic_alias_max);
            if assigned_id {
                properties.assigned_client_identifier = Some(connect.client_id.clone());
            }
            if asked_expiry_s > expiry_max {
                properties.session_expiry_interval_s = Some(expiry_max);
            }
            if keep_alive_s != connect.keep_alive_s {
                properties.server_keep_alive_s = Some(keep_alive_s);
            }
        }
        let connack = Packet::ConnAck(Box::new(ConnAck {
            session_present,
            reason: ReasonCode::Success,
            properties,
        }));

        let Some(slot) = self.sessions.get_mut(&key) else {
            return Ok(Attached {
                key,
                version,
                keep_alive_s,
            });
        };
        slot.expiry_s = expiry_s;
        slot.expires_at = None;
        // A resumed session's subscriptions were granted to whoever held it
        // before: its deliveries are checked against this client's rules.
        slot.receive_check = session_present && login.acl.is_some();
        slot.login = login;
        slot.will = connect.will;
        // A new connection cancels a delayed will (MQTT 5 3.1.3.2.2).
        slot.will_at = None;
        {
            let mut out = conn.out.borrow_mut();
            write_packet(&connack, version, &mut out);
            slot.session.resume(
                version,
                connect.properties.receive_maximum,
                connect.properties.maximum_packet_size,
                now,
                &mut out,
            );
        }
        slot.conn = Some(Rc::clone(conn));
        conn.wake.notify();
        self.stats.clients_connected.inc();
        self.stats.connections_total.inc();
        Ok(Attached {
            key,
            version,
            keep_alive_s,
        })
    }

    /// This shard's share of the broker-wide session limit.
    fn sessions_max(&self) -> usize {
        self.limits.sessions_max.div_ceil(self.shards.max(1))
    }

    /// This shard's share of the broker-wide retained-message limit.
    fn retained_max(&self) -> usize {
        self.limits.retained_max.div_ceil(self.shards.max(1))
    }

    /// Keeps the timer heap in proportion to the sessions: a client that reconnects
    /// in a loop would otherwise leave a stale entry behind each time.
    fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.sessions.len() + 1024 {
            return;
        }
        let mut live = BinaryHeap::with_capacity(self.sessions.len());
        for (&key, slot) in &self.sessions {
            if slot.conn.is_some() {
                continue;
            }
            if let Some(at) = slot.expires_at {
                live.push(Reverse((at, key, TimerKind::SessionExpiry)));
            }
            if let Some(at) = slot.will_at {
                live.push(Reverse((at, key, TimerKind::Will)));
            }
        }
        self.timers = live;
    }

    /// The keep alive the broker holds a client to: its own, capped by
    /// `keep_alive_max_s` (MQTT 5 clients learn the cap as Server Keep Alive).
    fn keep_alive_s(&self, asked_s: u16) -> u16 {
        match self.limits.keep_alive_max_s {
            0 => asked_s,
            max if asked_s == 0 || asked_s > max => max,
            _ => asked_s,
        }
    }

    /// Closes the live connection of a session a new connection takes over.
    fn take_over(&mut self, key: SessionKey, clean_start: bool, now: Timestamp) {
        let Some(slot) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(old) = slot.conn.take() else {
            return;
        };
        if slot.session.version() == ProtocolVersion::V5 {
            old.write(
                &Packet::Disconnect(Disconnect {
                    reason: ReasonCode::SessionTakenOver,
                    ..Disconnect::default()
                }),
                ProtocolVersion::V5,
            );
        }
        old.close_with(CloseReason::TakenOver);
        slot.session.disconnect();
        self.stats.clients_connected.sub(1);
        // The old connection closed without DISCONNECT: its will goes out, unless it
        // has a delay and the session lives on (the new connection cancels it).
        let delayed = slot
            .will
            .as_ref()
            .and_then(|will| will.properties.will_delay_interval_s)
            .is_some_and(|delay| delay > 0);
        let will = slot.will.take();
        if let Some(will) = will {
            if !delayed || clean_start {
                self.publish_will(will, now);
            }
        }
    }

    /// Detaches a connection that ended; `generation` tells a stale end (the session
    /// was taken over meanwhile) from the current one.
    pub(crate) fn detach(&mut self, key: SessionKey, generation: u64, ending: Ending) {
        let now = now();
        let expiry_max = self.limits.session_expiry_max_s;
        let Some(slot) = self.sessions.get_mut(&key) else {
            return;
        };
        if slot.conn.as_ref().map(|conn| conn.generation) != Some(generation) {
            return;
        }
        slot.conn = None;
        slot.session.disconnect();
        self.stats.clients_connected.sub(1);
        self.drained.notify_all();
        if let Ending::Disconnect {
            with_will,
            expiry_s,
        } = ending
        {
            // A session that was to end with its connection cannot be revived by
            // DISCONNECT (MQTT 5 3.14.2.2.2); the client's mistake costs it nothing.
            if let (Some(expiry_s), true) = (expiry_s, slot.expiry_s > 0) {
                slot.expiry_s = expiry_s.min(expiry_max);
            }
            if !with_will {
                slot.will = None;
            }
        }
        let expiry_s = slot.expiry_s;
        if let Some(will) = slot.will.take().filter(|will| slot.may_publish_will(will)) {
            let delay_s = will.properties.will_delay_interval_s.unwrap_or(0);
            if delay_s == 0 || expiry_s == 0 {
                self.publish_will(will, now);
            } else {
                let at = now.plus_s(delay_s.min(expiry_s));
                if let Some(slot) = self.sessions.get_mut(&key) {
                    slot.will = Some(will);
                    slot.will_at = Some(at);
                }
                self.timers.push(Reverse((at, key, TimerKind::Will)));
            }
        }
        if expiry_s == 0 {
            self.end_session(key);
        } else {
            let at = now.plus_s(expiry_s);
            if let Some(slot) = self.sessions.get_mut(&key) {
                slot.expires_at = Some(at);
            }
            self.timers
                .push(Reverse((at, key, TimerKind::SessionExpiry)));
        }
        self.compact_timers();
    }

    /// Ends a session: its subscriptions go, and a will still waiting goes out now.
    fn end_session(&mut self, key: SessionKey) {
        let Some(mut slot) = self.sessions.remove(&key) else {
            return;
        };
        if self.by_client.get(&slot.session.client_id) == Some(&key) {
            self.by_client.remove(&slot.session.client_id);
        }
        self.stats.sessions.sub(1);
        if let Some(conn) = slot.conn.take() {
            conn.close_with(CloseReason::Kicked(ReasonCode::SessionTakenOver));
            self.stats.clients_connected.sub(1);
        }
        for filter in slot.session.take_subscriptions() {
            self.remove_subscription(key, &filter);
        }
        if slot.will_at.is_some() {
            if let Some(will) = slot.will.take().filter(|will| slot.may_publish_will(will)) {
                self.publish_will(will, now());
            }
        }
    }

    fn publish_will(&mut self, will: Will, now: Timestamp) {
        let properties = PublishProperties {
            payload_format: will.properties.payload_format,
            message_expiry_interval_s: will.properties.message_expiry_interval_s,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            user: will.properties.user,
            content_type: will.properties.content_type,
            ..PublishProperties::default()
        };
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            properties: properties.into(),
            payload: will.payload,
        };
        self.route(Arc::new(Message::from_publish(publish, None, now)));
    }

    fn client_info(&self, slot: &Slot) -> ClientInfo {
        ClientInfo {
            client_id: slot.session.client_id.to_string(),
            shard: usize::from(self.id),
            connected: slot.conn.is_some(),
            peer: slot.conn.as_ref().map(|conn| conn.peer),
            protocol: match slot.session.version() {
                ProtocolVersion::V311 => "3.1.1",
                ProtocolVersion::V5 => "5.0",
            },
            subscriptions: slot.session.subscription_count(),
            pending_messages: slot.session.pending_len(),
            session_expiry_s: slot.expiry_s,
        }
    }

    fn subscriptions_of(slot: &Slot) -> impl Iterator<Item = SubscriptionInfo> + '_ {
        slot.session
            .subscriptions()
            .map(|(filter, entry)| SubscriptionInfo {
                client_id: slot.session.client_id.to_string(),
                filter: filter.to_string(),
                qos: entry.options.qos.as_u8(),
            })
    }

    /// Answers a question from the admin endpoint.
    pub(crate) fn control(&mut self, request: Control) {
        // A caller that gave up waiting dropped its receiver: nothing to do then.
        match request {
            Control::Clients { limit, reply } => {
                let infos = self
                    .sessions
                    .values()
                    .take(limit)
                    .map(|slot| self.client_info(slot))
                    .collect();
                let _ = reply.send(infos);
            }
            Control::Client { client_id, reply } => {
                let detail = self
                    .by_client
                    .get(client_id.as_str())
                    .and_then(|key| self.sessions.get(key))
                    .map(|slot| ClientDetail {
                        info: self.client_info(slot),
                        subscriptions: Self::subscriptions_of(slot).collect(),
                    });
                let _ = reply.send(detail);
            }
            Control::Kick { client_id, reply } => {
                let conn = self
                    .by_client
                    .get(client_id.as_str())
                    .and_then(|key| self.sessions.get(key))
                    .and_then(|slot| slot.conn.clone().map(|conn| (conn, slot.session.version())));
                let kicked = conn.is_some();
                if let Some((conn, version)) = conn {
                    if version == ProtocolVersion::V5 {
                        conn.write(
                            &Packet::Disconnect(Disconnect {
                                reason: ReasonCode::AdministrativeAction,
                                ..Disconnect::default()
                            }),
                            version,
                        );
                    }
                    conn.close_with(CloseReason::Kicked(ReasonCode::AdministrativeAction));
                }
                let _ = reply.send(kicked);
            }
            Control::Subscriptions { limit, reply } => {
                let all = self
                    .sessions
                    .values()
                    .flat_map(Self::subscriptions_of)
                    .take(limit)
                    .collect();
                let _ = reply.send(all);
            }
            // Handled by the control loop, which owns the shard's limits.
            Control::Reload { reply, .. } => {
                let _ = reply.send(());
            }
            Control::ReloadSecurity { rules, reply } => {
                self.recompile_acls(&rules);
                let _ = reply.send(());
            }
        }
    }

    /// Every session's ACL under new rules. The subscriptions stay; from now on
    /// each delivery to a session with an ACL is checked against it.
    fn recompile_acls(&mut self, rules: &SecurityRules) {
        for slot in self.sessions.values_mut() {
            let login = &mut slot.login;
            login.acl = Login::compile(
                rules,
                login.acl_scope,
                login.username.as_deref(),
                &slot.session.client_id,
            );
            slot.receive_check = login.acl.is_some();
        }
    }

    /// Tells every connected client the broker is going away (MQTT 5: DISCONNECT
    /// 0x8B) and closes its connection once what is queued for it is written.
    pub(crate) fn disconnect_all(&mut self) {
        for slot in self.sessions.values() {
            let Some(conn) = &slot.conn else {
                continue;
            };
            if slot.session.version() == ProtocolVersion::V5 {
                conn.write(
                    &Packet::Disconnect(Disconnect {
                        reason: ReasonCode::ServerShuttingDown,
                        ..Disconnect::default()
                    }),
                    ProtocolVersion::V5,
                );
            }
            conn.close_with(CloseReason::Kicked(ReasonCode::ServerShuttingDown));
        }
    }

    /// Sessions whose expiry or will delay has come.
    pub(crate) fn run_timers(&mut self) {
        let now = now();
        while let Some(Reverse((at, key, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.sessions.get_mut(&key) else {
                continue;
            };
            match kind {
                TimerKind::Will if slot.conn.is_none() && slot.will_at == Some(at) => {
                    slot.will_at = None;
                    if let Some(will) = slot.will.take().filter(|will| slot.may_publish_will(will))
                    {
                        self.publish_will(will, now);
                    }
                }
                TimerKind::SessionExpiry if slot.conn.is_none() && slot.expires_at == Some(at) => {
                    self.end_session(key);
                }
                _ => {}
            }
        }
    }

    /// Counts what the sessions hold for the inflight and queued gauges.
    pub(crate) fn refresh_gauges(&self) {
        let (inflight, queued) =
            self.sessions
                .values()
                .fold((0usize, 0usize), |(inflight, queued), slot| {
                    (
                        inflight + slot.session.inflight_len(),
                        queued + slot.session.queued_len(),
                    )
                });
        self.stats.inflight.set(inflight as u64);
        self.stats.queued.set(queued as u64);
    }

    /// An inbound PUBLISH: resolve, route, acknowledge.
    pub(crate) fn inbound_publish(
        &mut self,
        key: SessionKey,
        publish: Publish,
        now: Timestamp,
    ) -> Result<(), Violation> {
        let qos = publish.qos;
        self.stats.received(qos);
        let Some(slot) = self.sessions.get_mut(&key) else {
            return Ok(());
        };
        let (matched, packet_id) = match slot.session.handle_publish(publish, now)? {
            Inbound::Route(message, packet_id)
                if !slot
                    .login
                    .acl
                    .as_ref()
                    .is_none_or(|acl| acl.may_publish(&message.topic)) =>
            {
                self.stats.dropped_not_authorized.inc();
                debug!(client = %slot.session.client_id, topic = %message.topic, "PUBLISH not authorized");
                if let (Some(packet_id), Some(conn)) = (packet_id, &slot.conn) {
                    slot.session.refuse_publish(
                        qos,
                        packet_id,
                        ReasonCode::NotAuthorized,
                        &mut conn.out.borrow_mut(),
                    );
                    conn.wake.notify();
                }
                return Ok(());
            }
            Inbound::Route(mut message, packet_id) => {
                self.sample_countdown = self.sample_countdown.saturating_sub(1);
                if self.sample_countdown == 0 {
                    self.sample_countdown = LATENCY_SAMPLE_EVERY;
                    if let Some(message) = Arc::get_mut(&mut message) {
                        message.sampled_at_ns = clock_ns();
                    }
                }
                // Clients may not write the broker's own topics.
                let matched = if message.topic.starts_with("$SYS") {
                    false
                } else {
                    self.route_at(message, now)
                };
                if !matched {
                    self.stats.dropped_no_subscribers.inc();
                }
                (matched, packet_id)
            }
            Inbound::Duplicate(packet_id) => (true, Some(packet_id)),
        };
        if let (Some(packet_id), Some(slot)) = (packet_id, self.sessions.get(&key)) {
            if let Some(conn) = &slot.conn {
                slot.session
                    .acknowledge(qos, packet_id, matched, &mut conn.out.borrow_mut());
                conn.wake.notify();
            }
        }
        Ok(())
    }

    /// Routes a message from a client or the broker: retained store, local plain
    /// subscribers, other shards by interest, one member per share group. Returns
    /// whether anyone subscribes.
    pub(crate) fn route(&mut self, message: Arc<Message>) -> bool {
        self.route_at(message, now())
    }

    /// [`Shard::route`] with the time already read.
    fn route_at(&mut self, message: Arc<Message>, now: Timestamp) -> bool {
        if message.retain {
            self.retain(&message);
        }
        let slot = self.routes.slot_of(&message.topic);
        let mut matched = self.deliver_local(&message, slot, now);

        let version = self.interest.version();
        let cached = slot.and_then(|slot| self.routes.shards(slot, &message.topic, version));
        let mut picks: Vec<(ByteString, u16, SessionKey)> = Vec::new();
        let shards = match cached {
            Some(shards) if !shards.shared => shards.clone(),
            // A share group's member is picked per message: walked every time, and
            // the memo already says so.
            Some(_) => self.walk_interest(&message.topic, &mut picks),
            None => {
                let shards = self.walk_interest(&message.topic, &mut picks);
                if let Some(slot) = slot {
                    self.routes
                        .set_shards(slot, &message.topic, version, &shards);
                }
                shards
            }
        };
        let id = self.id;
        // The set bits only: a walk over all 128 was a third of a message's cost.
        let mut bits = shards.first_128;
        let first_128 = std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let shard = bits.trailing_zeros() as u16;
                bits &= bits - 1;
                shard
            })
        });
        for shard in first_128.chain(shards.overflow) {
            if shard != id {
                matched = true;
                self.outbox
                    .push((usize::from(shard), ShardMsg::Publish(Arc::clone(&message))));
            }
        }
        for (filter, shard, member) in picks {
            matched = true;
            if shard == id {
                self.deliver_shared(&message, member, &filter, now);
            } else {
                self.outbox.push((
                    usize::from(shard),
                    ShardMsg::SharedPublish {
                        message: Arc::clone(&message),
                        member,
                        filter,
                    },
                ));
            }
        }
        matched
    }

    /// The shards with interest in `topic` from the interest table, and one member
    /// of each matching share group in `picks` (round robin per group).
    fn walk_interest(
        &mut self,
        topic: &str,
        picks: &mut Vec<(ByteString, u16, SessionKey)>,
    ) -> Shards {
        let mut shards = Shards::default();
        let cursors = &mut self.cursors;
        self.interest.for_each_match(topic, |hit| match hit {
            Match::Plain {
                key: InterestKey::Shard(shard),
                ..
            } => {
                if shard < 128 {
                    shards.first_128 |= 1u128 << shard;
                } else {
                    shards.overflow.push(shard);
                }
            }
            Match::Plain { .. } => {}
            Match::Shared {
                filter, members, ..
            } => {
                shards.shared = true;
                let cursor = match cursors.get_mut(filter) {
                    Some(cursor) => cursor,
                    None => cursors.entry(ByteString::from(filter)).or_insert(0),
                };
                let index = *cursor % members.len().max(1);
                *cursor = cursor.wrapping_add(1);
                if let Some((InterestKey::Member(shard, member), _)) = members.get(index) {
                    picks.push((ByteString::from(filter), shard, member));
                }
            }
        });
        shards.overflow.sort_unstable();
        shards.overflow.dedup();
        shards
    }

    /// Delivers to this shard's plain subscribers, one copy per session (the
    /// highest QoS of its matching subscriptions, all their identifiers).
    pub(crate) fn deliver_plain(&mut self, message: &Arc<Message>, now: Timestamp) -> bool {
        let slot = self.routes.slot_of(&message.topic);
        self.deliver_local(message, slot, now)
    }

    /// [`Shard::deliver_plain`] with the topic's memo slot already found.
    fn deliver_local(
        &mut self,
        message: &Arc<Message>,
        slot: Option<usize>,
        now: Timestamp,
    ) -> bool {
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        let version = self.local.version();
        match slot.and_then(|slot| self.routes.local(slot, &message.topic, version)) {
            Some(cached) => matches.extend_from_slice(cached),
            None => {
                self.local.for_each_match(&message.topic, |hit| {
                    if let Match::Plain { key, value } = hit {
                        matches.push((key, *value));
                    }
                });
                if matches.len() > 1 {
                    matches.sort_unstable_by_key(|(key, _)| *key);
                }
                if let Some(slot) = slot {
                    self.routes
                        .set_local(slot, &message.topic, version, &matches);
                }
            }
        }
        if let Some(origin) = message.origin {
            matches.retain(|(key, sub)| !(sub.options.no_local && *key == origin));
        }
        let matched = !matches.is_empty();
        let mut index = 0;
        while let Some((key, first)) = matches.get(index) {
            let key = *key;
            let mut grant = grant_for(message, &first.options, first.id);
            index += 1;
            while let Some((next_key, sub)) = matches.get(index) {
                if *next_key != key {
                    break;
                }
                let other = grant_for(message, &sub.options, sub.id);
                grant.qos = grant.qos.max(other.qos);
                grant.retain |= other.retain;
                grant.subscription_ids.extend(other.subscription_ids);
                index += 1;
            }
            self.deliver_to(key, message, grant, now);
        }
        self.matches = matches;
        // The frames belong to this message: let its buffers go now.
        self.frames.clear();
        matched
    }

    /// Delivers to one member of a share group, chosen by the publishing shard.
    pub(crate) fn deliver_shared(
        &mut self,
        message: &Arc<Message>,
        member: SessionKey,
        filter: &str,
        now: Timestamp,
    ) {
        let entry = self
            .sessions
            .get(&member)
            .and_then(|slot| slot.session.subscription(filter))
            .cloned();
        match entry {
            Some(entry) => {
                let grant = grant_for(message, &entry.options, entry.id);
                self.deliver_to(member, message, grant, now);
            }
            // The member left while the message was on its way.
            None => self.stats.dropped_no_subscribers.inc(),
        }
    }

    fn deliver_to(
        &mut self,
        key: SessionKey,
        message: &Arc<Message>,
        grant: Grant,
        now: Timestamp,
    ) {
        let qos = grant.qos;
        let Some(slot) = self.sessions.get_mut(&key) else {
            return;
        };
        if !slot.may_receive(&message.topic) {
            self.stats.dropped_not_authorized.inc();
            return;
        }
        let delivery = match &slot.conn {
            Some(conn) => {
                let mut out = conn.out.borrow_mut();
                let full = out.len() >= self.limits.outbound_bytes_max;
                let delivery =
                    slot.session
                        .deliver(message, grant, now, &mut out, full, &mut self.frames);
                drop(out);
                if delivery == Delivery::Sent {
                    if message.sampled_at_ns != 0 && conn.sample_ns.get() == 0 {
                        conn.sample_ns.set(message.sampled_at_ns);
                    }
                    conn.wake.notify();
                }
                delivery
            }
            None => slot.session.deliver(
                message,
                grant,
                now,
                &mut self.offline_out,
                true,
                &mut self.frames,
            ),
        };
        if delivery == Delivery::Queued
            && slot.session.is_congested()
            && !self.congested.contains(&key)
        {
            self.congested.push(key);
        }
        match delivery {
            Delivery::Sent => self.stats.sent(qos),
            Delivery::Queued => {}
            Delivery::Dropped(reason) => self.stats.dropped(reason),
        }
    }

    /// Sends a retained message to the shard that owns its topic (one writer per
    /// topic keeps every shard's view in the same order), as a compact copy that does
    /// not pin the publisher's read buffer.
    fn retain(&mut self, message: &Arc<Message>) {
        let stored = Arc::new(Message {
            topic: ByteString::from(&*message.topic),
            payload: Bytes::copy_from_slice(&message.payload),
            // A retained copy is delivered long after; it is no latency sample.
            sampled_at_ns: 0,
            ..Message::clone(message)
        });
        let owner = owner_of(message.topic.as_bytes(), self.shards);
        if owner == usize::from(self.id) {
            self.apply_retain(stored);
        } else {
            self.outbox.push((owner, ShardMsg::Retain(stored)));
        }
    }

    pub(crate) fn apply_retain(&mut self, message: Arc<Message>) {
        if message.payload.is_empty() {
            if self.retained.remove(&message.topic).is_some() {
                self.stats.retained.sub(1);
            }
        } else if self.retained.get(&message.topic).is_some() {
            let topic = message.topic.clone();
            self.retained.insert(&topic, message);
        } else if self.retained.len() >= self.retained_max() {
            // Full: the message was delivered to subscribers but is not kept.
            self.stats.retained_dropped.inc();
        } else {
            let topic = message.topic.clone();
            self.retained.insert(&topic, message);
            self.stats.retained.inc();
        }
    }

    /// Retained messages of this shard's partition matching any of `filters`.
    pub(crate) fn retained_matching(&self, filters: &[ByteString]) -> Vec<Arc<Message>> {
        let now = now();
        let mut found: Vec<Arc<Message>> = Vec::new();
        for filter in filters {
            self.retained.for_each_match(filter, |_, message| {
                if !message.is_expired(now) {
                    found.push(Arc::clone(message));
                }
            });
        }
        found.sort_unstable_by_key(|message| Arc::as_ptr(message) as usize);
        found.dedup_by_key(|message| Arc::as_ptr(message) as usize);
        found
    }

    /// Applies a SUBSCRIBE to the session and the tries; the SUBACK and retained
    /// messages follow in [`Shard::finish_subscribe`] once the other shards have seen
    /// the new interest.
    pub(crate) fn subscribe(
        &mut self,
        key: SessionKey,
        subscribe: Subscribe,
    ) -> Result<SubscribePlan, Violation> {
        let levels_max = self.limits.topic_levels_max;
        let id = self.id;
        let mut plan = SubscribePlan {
            packet_id: subscribe.packet_id,
            reasons: Vec::with_capacity(subscribe.subscriptions.len()),
            retained: Vec::new(),
        };
        let sub_id = subscribe.properties.subscription_identifier;
        for subscription in subscribe.subscriptions {
            let filter_text = subscription.filter;
            let options = subscription.options;
            let parsed = match topic::parse_filter(&filter_text, levels_max) {
                Ok(parsed) => parsed,
                Err(_) => {
                    plan.reasons.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if matches!(parsed, Filter::Shared { .. }) && options.no_local {
                return Err(Violation {
                    reason: ReasonCode::ProtocolError,
                    what: "No Local on a shared subscription",
                });
            }
            let Some(slot) = self.sessions.get_mut(&key) else {
                return Ok(plan);
            };
            if let Some(acl) = &slot.login.acl {
                match acl.subscribe(parsed.topic_filter()) {
                    SubscribeDecision::Deny => {
                        self.stats.subscriptions_refused.inc();
                        debug!(client = %slot.session.client_id, filter = %filter_text, "SUBSCRIBE not authorized");
                        plan.reasons.push(ReasonCode::NotAuthorized);
                        continue;
                    }
                    SubscribeDecision::AllowFiltered => slot.receive_check = true,
                    SubscribeDecision::Allow => {}
                }
            }
            let entry = SubscriptionEntry {
                options,
                id: sub_id,
            };
            let previous = match slot.session.subscribe(filter_text.clone(), entry) {
                Ok(previous) => previous,
                Err(_) => {
                    plan.reasons.push(ReasonCode::QuotaExceeded);
                    continue;
                }
            };
            let is_new = previous.is_none();
            if is_new {
                self.stats.subscriptions.inc();
            }
            match parsed {
                Filter::Plain(plain) => {
                    let outcome = self.local.insert(
                        plain,
                        key,
                        LocalSub {
                            options,
                            id: sub_id,
                        },
                    );
                    if outcome.first_subscriber {
                        let filter = ByteString::from(plain);
                        self.broadcast(|| ShardMsg::Interest {
                            filter: filter.clone(),
                            key: InterestKey::Shard(id),
                            add: true,
                        });
                    }
                    let send_retained = match options.retain_handling {
                        RetainHandling::OnSubscribe => true,
                        RetainHandling::OnNewSubscribe => is_new,
                        RetainHandling::Never => false,
                    };
                    if send_retained {
                        plan.retained
                            .push((ByteString::from(plain), options, sub_id));
                    }
                }
                Filter::Shared { .. } => {
                    let member = InterestKey::Member(id, key);
                    let _ = self.interest.insert(&filter_text, member, ());
                    let filter = filter_text.clone();
                    self.broadcast(|| ShardMsg::Interest {
                        filter: filter.clone(),
                        key: member,
                        add: true,
                    });
                }
            }
            plan.reasons.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
        }
        Ok(plan)
    }

    /// Writes the SUBACK, then the retained messages the subscriptions asked for:
    /// this shard's partition plus `remote`, what the other shards answered.
    ///
    /// `generation` is the connection that sent the SUBSCRIBE: if the session was
    /// taken over while the shards answered, the new connection gets nothing of it
    /// (the subscriptions themselves stay, as part of the session).
    pub(crate) fn finish_subscribe(
        &mut self,
        key: SessionKey,
        generation: u64,
        plan: SubscribePlan,
        remote: Vec<Arc<Message>>,
    ) {
        let now = now();
        let Some(slot) = self.sessions.get(&key) else {
            return;
        };
        let Some(conn) = slot
            .conn
            .clone()
            .filter(|conn| conn.generation == generation)
        else {
            return;
        };
        conn.write(
            &Packet::SubAck(SubAck {
                packet_id: plan.packet_id,
                reasons: plan.reasons,
                properties: AckProperties::default(),
            }),
            slot.session.version(),
        );
        if plan.retained.is_empty() {
            return;
        }
        let filters: Vec<ByteString> = plan.retained.iter().map(|(f, _, _)| f.clone()).collect();
        let mut candidates = self.retained_matching(&filters);
        candidates.extend(remote);
        for (filter, options, id) in &plan.retained {
            for message in &candidates {
                if message.is_expired(now) || !topic::matches(filter, &message.topic) {
                    continue;
                }
                let mut grant = grant_for(message, options, *id);
                grant.retain = true;
                self.deliver_to(key, message, grant, now);
            }
        }
    }

    pub(crate) fn unsubscribe(&mut self, key: SessionKey, unsubscribe: Unsubscribe) {
        let levels_max = self.limits.topic_levels_max;
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            if let Err(error) = topic::parse_filter(filter, levels_max) {
                reasons.push(error.reason_code());
                continue;
            }
            let removed = self
                .sessions
                .get_mut(&key)
                .and_then(|slot| slot.session.unsubscribe(filter));
            if removed.is_some() {
                self.remove_subscription(key, filter);
                reasons.push(ReasonCode::Success);
            } else {
                reasons.push(ReasonCode::NoSubscriptionExisted);
            }
        }
        if let Some(slot) = self.sessions.get(&key) {
            let version = slot.session.version();
            if let Some(conn) = &slot.conn {
                let reasons = match version {
                    ProtocolVersion::V5 => reasons,
                    ProtocolVersion::V311 => Vec::new(),
                };
                conn.write(
                    &Packet::UnsubAck(UnsubAck {
                        packet_id: unsubscribe.packet_id,
                        reasons,
                        properties: AckProperties::default(),
                    }),
                    version,
                );
            }
        }
    }

    /// Takes one subscription of `key` out of the tries (the session already
    /// forgot it), withdrawing interest the other shards hold for it.
    fn remove_subscription(&mut self, key: SessionKey, filter: &str) {
        let id = self.id;
        self.stats.subscriptions.sub(1);
        match topic::parse_filter(filter, ringmq_core::limits::TOPIC_LEVELS_MAX) {
            Ok(Filter::Plain(plain)) => {
                let last = self
                    .local
                    .remove(plain, key)
                    .is_some_and(|outcome| outcome.last_subscriber);
                if last {
                    let filter = ByteString::from(plain);
                    self.broadcast(|| ShardMsg::Interest {
                        filter: filter.clone(),
                        key: InterestKey::Shard(id),
                        add: false,
                    });
                }
            }
            Ok(Filter::Shared { .. }) => {
                let member = InterestKey::Member(id, key);
                self.remove_interest(filter, member);
                let filter = ByteString::from(filter);
                self.broadcast(|| ShardMsg::Interest {
                    filter: filter.clone(),
                    key: member,
                    add: false,
                });
            }
            Err(_) => {}
        }
    }

    pub(crate) fn apply_interest(&mut self, filter: &str, key: InterestKey, add: bool) {
        if add {
            let _ = self.interest.insert(filter, key, ());
        } else {
            self.remove_interest(filter, key);
        }
    }

    fn remove_interest(&mut self, filter: &str, key: InterestKey) {
        let last = self
            .interest
            .remove(filter, key)
            .is_some_and(|outcome| outcome.last_subscriber);
        if last {
            self.cursors.remove(filter);
        }
    }

    /// Registers a subscribe waiting for `remaining` answers.
    pub(crate) fn new_waiter(&mut self, remaining: usize) -> (u64, Rc<OneShot<Vec<Arc<Message>>>>) {
        self.next_token += 1;
        let done = OneShot::new();
        self.waiters.insert(
            self.next_token,
            Waiter {
                remaining,
                retained: Vec::new(),
                done: Rc::clone(&done),
            },
        );
        (self.next_token, done)
    }

    pub(crate) fn answer(&mut self, token: u64, retained: Vec<Arc<Message>>) {
        let finished = match self.waiters.get_mut(&token) {
            Some(waiter) => {
                waiter.retained.extend(retained);
                waiter.remaining = waiter.remaining.saturating_sub(1);
                waiter.remaining == 0
            }
            None => false,
        };
        if finished {
            if let Some(waiter) = self.waiters.remove(&token) {
                waiter.done.set(waiter.retained);
            }
        }
    }

    /// Client acknowledgements of outbound QoS 1/2 messages.
    pub(crate) fn outbound_ack(&mut self, key: SessionKey, packet: &Packet, now: Timestamp) {
        let Some(slot) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(conn) = slot.conn.clone() else {
            return;
        };
        let (dropped, wrote) = {
            let mut out = conn.out.borrow_mut();
            let before = out.len();
            let dropped = match packet {
                Packet::PubAck(ack) => slot.session.handle_puback(ack.packet_id, now, &mut out),
                Packet::PubRec(rec) => slot.session.handle_pubrec(rec, now, &mut out),
                Packet::PubComp(comp) => slot.session.handle_pubcomp(comp.packet_id, now, &mut out),
                Packet::PubRel(rel) => {
                    slot.session.handle_pubrel(rel.packet_id, &mut out);
                    Vec::new()
                }
                _ => Vec::new(),
            };
            (dropped, out.len() != before)
        };
        // Most acks only free a slot of the window: the writer has nothing new then.
        if wrote {
            conn.wake.notify();
        }
        for reason in dropped {
            self.stats.dropped(reason);
        }
        self.drained.notify_all();
    }

    /// Whether the work since the last [`Shard::take_congested`] left a session
    /// congested: the reader stops taking packets until it drains.
    pub(crate) fn has_congested(&self) -> bool {
        !self.congested.is_empty()
    }

    /// The sessions the work since the last call left congested.
    pub(crate) fn take_congested(&mut self) -> Vec<SessionKey> {
        std::mem::take(&mut self.congested)
    }

    /// Whether any of `keys` is still congested (gone sessions are not).
    pub(crate) fn any_congested(&self, keys: &[SessionKey]) -> bool {
        keys.iter().any(|key| {
            self.sessions
                .get(key)
                .is_some_and(|slot| slot.session.is_congested())
        })
    }
}

/// The QoS, RETAIN flag and identifiers one subscription gets a message with.
fn grant_for(message: &Message, options: &SubscriptionOptions, id: Option<NonZeroU32>) -> Grant {
    Grant {
        qos: message.qos.min(options.qos),
        retain: options.retain_as_published && message.retain,
        subscription_ids: id.into_iter().collect(),
    }
}
