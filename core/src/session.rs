//! One client's protocol state, as a sans-IO state machine.
//!
//! The shard owns a [`Session`] per client id and feeds it what happens: inbound
//! packets (`handle_*`), messages routed to it ([`Session::deliver`]), a new
//! connection ([`Session::resume`]). Everything the session wants sent is encoded into
//! the caller's [`BytesMut`]; nothing here reads a clock (time is a [`Timestamp`]
//! argument) or touches a socket.
//!
//! What it tracks:
//! - outbound QoS 1/2: packet ids, the inflight window (the smaller of the client's
//!   receive maximum and ours), a bounded queue of messages waiting for the window or
//!   for the client to come back, and resend with DUP on resume;
//! - inbound QoS 2: the packet ids received and not yet released, so a resent PUBLISH
//!   is acknowledged again but routed once;
//! - inbound topic aliases (per connection);
//! - the subscriptions of the client, by filter.

use std::collections::{HashMap, VecDeque};
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{self, EncodeError};
use crate::packet::{
    LazyProperties, Packet, PacketId, PacketType, ProtocolVersion, PubResponse, Publish, QoS,
    SubscriptionOptions,
};
use crate::reason::ReasonCode;
use crate::topic;

/// Milliseconds on a monotonic clock the caller chooses; only differences matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn plus_s(self, seconds: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::from(seconds) * 1000))
    }
}

/// Identifies a session across all shards of a node; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey(pub u64);

/// A message as the broker routes it: immutable and shared (`Arc`) by every shard
/// and session that delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// As published, less the topic alias and subscription identifiers, which belong
    /// to one hop.
    pub properties: LazyProperties,
    /// When the message expires (MQTT 5 message expiry interval).
    pub expires_at: Option<Timestamp>,
    /// The session that published it, for No Local; `None` for the broker's own.
    pub origin: Option<SessionKey>,
    /// When the broker took this message as a sample for its publish-to-delivery
    /// latency, in nanoseconds of the broker's monotonic clock; 0: not a sample.
    /// The core only carries it: the clock and the histogram are the shard's.
    pub sampled_at_ns: u64,
}

impl Message {
    /// Builds the routed form of an inbound PUBLISH whose topic alias is resolved.
    pub fn from_publish(publish: Publish, origin: Option<SessionKey>, now: Timestamp) -> Message {
        let mut properties = publish.properties;
        if properties.topic_alias.is_some() || !properties.subscription_identifiers.is_empty() {
            let hop = properties.make_mut();
            hop.topic_alias = None;
            hop.subscription_identifiers.clear();
            properties.shrink();
        }
        let expires_at = properties.message_expiry_interval_s.map(|s| now.plus_s(s));
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            origin,
            sampled_at_ns: 0,
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// How one session receives one message: the outcome of matching its subscriptions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The smaller of the message's QoS and the subscription's.
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    pub subscription_ids: Vec<NonZeroU32>,
}

/// Limits one session works within.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// Our cap on outbound QoS 1/2 messages awaiting acknowledgement.
    pub inflight_max: u16,
    /// Messages waiting for the inflight window or for the client to reconnect.
    pub queued_max: usize,
    /// Inbound QoS 2 messages not yet released: our receive maximum.
    pub receive_maximum: u16,
    /// Inbound topic aliases we accept (0: none).
    pub topic_alias_maximum: u16,
    pub topic_levels_max: usize,
    pub subscriptions_max: usize,
    /// What a full queue does to a QoS 1/2 message for a connected client.
    pub queue_full: QueueFullPolicy,
}

/// What happens to a QoS 1/2 message for a connected client whose queue holds
/// `queued_max` messages already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QueueFullPolicy {
    /// Drop it and count it.
    #[default]
    Drop,
    /// Queue it anyway (up to twice the limit plus a little, so memory stays
    /// bounded) and report the session congested, so the caller stops reading the
    /// publisher until [`Session::is_congested`] is false again. Offline sessions drop
    /// at the limit: a client that is away must not stop its publishers.
    Backpressure,
}

/// How far past `queued_max` backpressure lets a queue grow while publishers stop.
const BACKPRESSURE_SLACK: usize = 1024;

/// What a delivery came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Encoded into the output buffer.
    Sent,
    /// Waiting in the session's queue for the window or a reconnect.
    Queued,
    Dropped(DropReason),
}

/// Why a message was not delivered; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The session's queue is at `queued_max`, or a QoS 0 message found the
    /// connection's output full or the client offline.
    QueueFull,
    /// The message expired before it could be sent.
    Expired,
    /// The encoded PUBLISH exceeds the client's maximum packet size.
    TooLarge,
}

/// A protocol violation by the client: the connection ends with this reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {what}")]
pub struct Violation {
    pub reason: ReasonCode,
    pub what: &'static str,
}

impl Violation {
    const fn new(reason: ReasonCode, what: &'static str) -> Violation {
        Violation { reason, what }
    }
}

/// What to do with an inbound PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Route it, then acknowledge with [`Session::acknowledge`] if it has a packet id.
    Route(Arc<Message>, Option<PacketId>),
    /// A QoS 2 PUBLISH already received and not released: acknowledge again only.
    Duplicate(PacketId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutState {
    /// PUBLISH sent (QoS 1: awaiting PUBACK; QoS 2: awaiting PUBREC).
    Published,
    /// PUBREC received and PUBREL sent; awaiting PUBCOMP.
    Released,
}

#[derive(Debug)]
struct Outbound {
    packet_id: PacketId,
    /// `Session::allocations` when the packet id was handed out.
    allocated: u64,
    state: OutState,
    message: Arc<Message>,
    grant: Grant,
}

#[derive(Debug)]
struct Queued {
    message: Arc<Message>,
    grant: Grant,
}

/// A new subscription would exceed [`SessionLimits::subscriptions_max`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the client holds the most subscriptions allowed")]
pub struct SubscriptionLimit;

/// A subscription as the session remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionEntry {
    pub options: SubscriptionOptions,
    pub id: Option<NonZeroU32>,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: ByteString,
    pub key: SessionKey,
    version: ProtocolVersion,
    limits: SessionLimits,
    /// The client's receive maximum (MQTT 5), capped by ours.
    window: u16,
    /// The client's maximum packet size; unlimited when `None`.
    client_packet_max: Option<u32>,
    online: bool,
    next_packet_id: u16,
    /// Packet ids handed out so far (candidates skipped included): the id of
    /// allocation `n` is `n % 65,535 + 1`.
    allocations: u64,
    inflight: VecDeque<Outbound>,
    queue: VecDeque<Queued>,
    /// Inbound QoS 2 packet ids received, awaiting PUBREL.
    incoming: Vec<PacketId>,
    aliases: Vec<Option<ByteString>>,
    subscriptions: HashMap<ByteString, SubscriptionEntry>,
}

impl Session {
    pub fn new(client_id: ByteString, key: SessionKey, limits: SessionLimits) -> Session {
        Session {
            client_id,
            key,
            version: ProtocolVersion::V311,
            window: limits.inflight_max.max(1),
            limits,
            client_packet_max: None,
            online: false,
            next_packet_id: 1,
            allocations: 0,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            incoming: Vec::new(),
            aliases: Vec::new(),
            subscriptions: HashMap::new(),
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// Messages inflight plus queued.
    pub fn pending_len(&self) -> usize {
        self.inflight.len() + self.queue.len()
    }

    /// Outbound QoS 1/2 messages sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Messages waiting for the inflight window or for the client to reconnect.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Attaches a new connection: resends what was inflight (PUBLISH with DUP, or
    /// PUBREL), then fills the window from the queue. Topic aliases start afresh.
    pub fn resume(
        &mut self,
        version: ProtocolVersion,
        client_receive_maximum: Option<NonZeroU16>,
        client_packet_max: Option<NonZeroU32>,
        now: Timestamp,
        out: &mut BytesMut,
    ) {
        self.version = version;
        self.online = true;
        let ours = self.limits.inflight_max.max(1);
        self.window = client_receive_maximum.map_or(ours, |theirs| theirs.get().min(ours));
        self.client_packet_max = client_packet_max.map(NonZeroU32::get);
        self.aliases.clear();
        for outbound in &mut self.inflight {
            match outbound.state {
                OutState::Published => {
                    // Written even if expired: the client may already hold it.
                    let _ = write_publish(
                        &outbound.message,
                        &outbound.grant,
                        Some(outbound.packet_id),
                        true,
                        version,
                        now,
                        self.client_packet_max,
                        out,
                        None,
                    );
                }
                OutState::Released => write_packet(
                    &Packet::PubRel(PubResponse::success(outbound.packet_id)),
                    version,
                    out,
                ),
            }
        }
        self.fill_window(now, out);
    }

    /// Detaches the connection; the session keeps its state until it expires.
    pub fn disconnect(&mut self) {
        self.online = false;
        self.aliases.clear();
    }

    /// Offers a routed message. `out` is the connection's output; `out_full` says it
    /// is over its byte limit, in which case QoS 0 is dropped and QoS 1/2 queued.
    pub fn deliver(
        &mut self,
        message: &Arc<Message>,
        grant: Grant,
        now: Timestamp,
        out: &mut BytesMut,
        out_full: bool,
        frames: &mut FrameCache,
    ) -> Delivery {
        if message.is_expired(now) {
            return Delivery::Dropped(DropReason::Expired);
        }
        if grant.qos == QoS::AtMostOnce {
            if !self.online || out_full {
                return Delivery::Dropped(DropReason::QueueFull);
            }
            return match write_publish(
                message,
                &grant,
                None,
                false,
                self.version,
                now,
                self.client_packet_max,
                out,
                Some(frames),
            ) {
                Ok(()) => Delivery::Sent,
                Err(reason) => Delivery::Dropped(reason),
            };
        }
        if self.online && !out_full && self.queue.is_empty() && self.window_open() {
            return self.send_outbound(Arc::clone(message), grant, now, out, Some(frames));
        }
        if self.queue.len() >= self.queue_cap() {
            return Delivery::Dropped(DropReason::QueueFull);
        }
        self.queue.push_back(Queued {
            message: Arc::clone(message),
            grant,
        });
        Delivery::Queued
    }

    /// Past this many queued messages a delivery is dropped.
    fn queue_cap(&self) -> usize {
        let soft = self.limits.queued_max;
        match self.limits.queue_full {
            QueueFullPolicy::Backpressure if self.online => {
                soft.saturating_mul(2).saturating_add(BACKPRESSURE_SLACK)
            }
            _ => soft,
        }
    }

    /// Under [`QueueFullPolicy::Backpressure`]: the connected client's queue is at
    /// its limit and publishers to it should wait.
    pub fn is_congested(&self) -> bool {
        self.limits.queue_full == QueueFullPolicy::Backpressure
            && self.online
            && self.queue.len() >= self.limits.queued_max
    }

    fn window_open(&self) -> bool {
        self.inflight.len() < usize::from(self.window)
    }

    fn allocate_packet_id(&mut self) -> (PacketId, u64) {
        // The window is at most 65,535 so a free id always exists; ids in use are
        // skipped so a slow ack never collides with a new message. The window is in
        // allocation order (pushed at the back, removed anywhere), so its front is the
        // oldest: ids repeat every 65,535 allocations, and unless the front is that
        // old no id in the window can be the candidate, without looking at them all.
        loop {
            let candidate = PacketId::new(self.next_packet_id);
            let allocation = self.allocations;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            self.allocations += 1;
            if let Some(id) = candidate {
                let wrapped = self
                    .inflight
                    .front()
                    .is_some_and(|oldest| allocation - oldest.allocated >= u64::from(u16::MAX));
                if !wrapped || !self.inflight.iter().any(|o| o.packet_id == id) {
                    return (id, allocation);
                }
            }
        }
    }

    fn send_outbound(
        &mut self,
        message: Arc<Message>,
        grant: Grant,
        now: Timestamp,
        out: &mut BytesMut,
        frames: Option<&mut FrameCache>,
    ) -> Delivery {
        let (packet_id, allocated) = self.allocate_packet_id();
        match write_publish(
            &message,
            &grant,
            Some(packet_id),
            false,
            self.version,
            now,
            self.client_packet_max,
            out,
            frames,
        ) {
            Ok(()) => {
                self.inflight.push_back(Outbound {
                    packet_id,
                    allocated,
                    state: OutState::Published,
                    message,
                    grant,
                });
                Delivery::Sent
            }
            Err(reason) => Delivery::Dropped(reason),
        }
    }

    /// Moves queued messages into the window while it has room and the connection
    /// is online; returns the messages that were dropped on the way (expired or too
    /// large), for the caller's counters.
    pub fn fill_window(&mut self, now: Timestamp, out: &mut BytesMut) -> Vec<DropReason> {
        let mut dropped = Vec::new();
        while self.online && self.window_open() {
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            if queued.message.is_expired(now) {
                dropped.push(DropReason::Expired);
                continue;
            }
            if let Delivery::Dropped(reason) =
                self.send_outbound(queued.message, queued.grant, now, out, None)
            {
                dropped.push(reason);
            }
        }
        dropped
    }

    /// Resolves the topic alias, checks the topic against the level limit, and for QoS 2
    /// whether the packet id was already received. `publish` is as the decoder made it:
    /// its topic, if any, holds no wildcard and no U+0000.
    pub fn handle_publish(
        &mut self,
        mut publish: Publish,
        now: Timestamp,
    ) -> Result<Inbound, Violation> {
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "PUBLISH from a client carries a subscription identifier",
            ));
        }
        if let Some(alias) = publish.properties.topic_alias {
            let slot = usize::from(alias.get()) - 1;
            if alias.get() > self.limits.topic_alias_maximum {
                return Err(Violation::new(
                    ReasonCode::TopicAliasInvalid,
                    "topic alias above the topic alias maximum",
                ));
            }
            if publish.topic.is_empty() {
                publish.topic = self
                    .aliases
                    .get(slot)
                    .cloned()
                    .flatten()
                    .ok_or(Violation::new(
                        ReasonCode::ProtocolError,
                        "unknown topic alias",
                    ))?;
            } else {
                if self.aliases.len() <= slot {
                    self.aliases.resize(slot + 1, None);
                }
                if let Some(entry) = self.aliases.get_mut(slot) {
                    *entry = Some(publish.topic.clone());
                }
            }
        }
        // The decoder refused U+0000, wildcards and an empty name without an alias; an
        // alias stands for a name it checked before. The broker's level limit is left.
        debug_assert!(topic::validate_topic_name(&publish.topic, usize::MAX).is_ok());
        if publish.topic.is_empty() {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "empty topic name without a topic alias",
            ));
        }
        let separators = publish.topic.bytes().filter(|&b| b == b'/').count();
        if separators >= self.limits.topic_levels_max {
            return Err(Violation::new(
                ReasonCode::TopicNameInvalid,
                "topic name has more levels than the broker allows",
            ));
        }
        let packet_id = publish.packet_id;
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, packet_id) {
            if self.incoming.contains(&id) {
                return Ok(Inbound::Duplicate(id));
            }
            if self.incoming.len() >= usize::from(self.limits.receive_maximum) {
                return Err(Violation::new(
                    ReasonCode::ReceiveMaximumExceeded,
                    "more QoS 2 messages unreleased than the receive maximum",
                ));
            }
            self.incoming.push(id);
        }
        let origin = Some(self.key);
        Ok(Inbound::Route(
            Arc::new(Message::from_publish(publish, origin, now)),
            packet_id,
        ))
    }

    /// Acknowledges an inbound QoS 1 (PUBACK) or QoS 2 (PUBREC) PUBLISH.
    /// `matched` false sends MQTT 5 "No matching subscribers".
    pub fn acknowledge(&self, qos: QoS, packet_id: PacketId, matched: bool, out: &mut BytesMut) {
        // One per inbound QoS 1/2 message, and always the same few bytes: written
        // directly, as the codec would write them (test `acknowledgements_are_encoded_as_the_codec_does`).
        let first = match qos {
            QoS::ExactlyOnce => (PacketType::PubRec as u8) << 4,
            _ => (PacketType::PubAck as u8) << 4,
        };
        let [high, low] = packet_id.get().to_be_bytes();
        if matched || self.version == ProtocolVersion::V311 {
            out.extend_from_slice(&[first, 2, high, low]);
        } else {
            // The reason, then an empty property length.
            let reason = ReasonCode::NoMatchingSubscribers.as_u8();
            out.extend_from_slice(&[first, 4, high, low, reason, 0]);
        }
    }

    /// Refuses an inbound QoS 1/2 PUBLISH the client may not send (MQTT 5: the
    /// reason in PUBACK or PUBREC; 3.1.1 has no way to say it and gets a plain
    /// acknowledgement). A refused QoS 2 exchange ends with the PUBREC, so its
    /// packet id is released at once.
    pub fn refuse_publish(
        &mut self,
        qos: QoS,
        packet_id: PacketId,
        reason: ReasonCode,
        out: &mut BytesMut,
    ) {
        let mut response = PubResponse::success(packet_id);
        if self.version == ProtocolVersion::V5 {
            response.reason = reason;
        }
        let packet = match qos {
            QoS::ExactlyOnce => {
                if self.version == ProtocolVersion::V5 {
                    self.incoming.retain(|&id| id != packet_id);
                }
                Packet::PubRec(response)
            }
            _ => Packet::PubAck(response),
        };
        write_packet(&packet, self.version, out);
    }

    /// PUBREL from the client: release the id and answer PUBCOMP.
    pub fn handle_pubrel(&mut self, packet_id: PacketId, out: &mut BytesMut) {
        let mut response = PubResponse::success(packet_id);
        if let Some(index) = self.incoming.iter().position(|&id| id == packet_id) {
            self.incoming.swap_remove(index);
        } else {
            response.reason = ReasonCode::PacketIdentifierNotFound;
        }
        write_packet(&Packet::PubComp(response), self.version, out);
    }

    /// PUBACK from the client: a QoS 1 delivery is done.
    pub fn handle_puback(
        &mut self,
        packet_id: PacketId,
        now: Timestamp,
        out: &mut BytesMut,
    ) -> Vec<DropReason> {
        self.complete(packet_id, OutState::Published, QoS::AtLeastOnce);
        self.fill_window(now, out)
    }

    /// PUBREC from the client: answer PUBREL (or drop the message on an error reason).
    pub fn handle_pubrec(
        &mut self,
        response: &PubResponse,
        now: Timestamp,
        out: &mut BytesMut,
    ) -> Vec<DropReason> {
        let id = response.packet_id;
        let position = self.inflight.iter().position(|o| {
            o.packet_id == id && o.state == OutState::Published && o.grant.qos == QoS::ExactlyOnce
        });
        let Some(index) = position else {
            let mut rel = PubResponse::success(id);
            rel.reason = ReasonCode::PacketIdentifierNotFound;
            write_packet(&Packet::PubRel(rel), self.version, out);
            return Vec::new();
        };
        if response.reason.is_error() {
            self.inflight.remove(index);
            return self.fill_window(now, out);
        }
        if let Some(outbound) = self.inflight.get_mut(index) {
            outbound.state = OutState::Released;
        }
        write_packet(&Packet::PubRel(PubResponse::success(id)), self.version, out);
        Vec::new()
    }

    /// PUBCOMP from the client: a QoS 2 delivery is done.
    pub fn handle_pubcomp(
        &mut self,
        packet_id: PacketId,
        now: Timestamp,
        out: &mut BytesMut,
    ) -> Vec<DropReason> {
        self.complete(packet_id, OutState::Released, QoS::ExactlyOnce);
        self.fill_window(now, out)
    }

    fn complete(&mut self, packet_id: PacketId, state: OutState, qos: QoS) {
        // Acks come in order almost always: the match is nearly always the front.
        if let Some(index) = self
            .inflight
            .iter()
            .position(|o| o.packet_id == packet_id && o.state == state && o.grant.qos == qos)
        {
            self.inflight.remove(index);
        }
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = (&ByteString, &SubscriptionEntry)> {
        self.subscriptions.iter()
    }

    pub fn subscription(&self, filter: &str) -> Option<&SubscriptionEntry> {
        self.subscriptions.get(filter)
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Records a subscription; returns the previous entry for the same filter, or
    /// an error when a new filter would exceed the subscription limit.
    pub fn subscribe(
        &mut self,
        filter: ByteString,
        entry: SubscriptionEntry,
    ) -> Result<Option<SubscriptionEntry>, SubscriptionLimit> {
        if !self.subscriptions.contains_key(&filter)
            && self.subscriptions.len() >= self.limits.subscriptions_max
        {
            return Err(SubscriptionLimit);
        }
        Ok(self.subscriptions.insert(filter, entry))
    }

    pub fn unsubscribe(&mut self, filter: &str) -> Option<SubscriptionEntry> {
        self.subscriptions.remove(filter)
    }

    /// Removes every subscription (clean start, or the session ended).
    pub fn take_subscriptions(&mut self) -> Vec<ByteString> {
        self.subscriptions
            .drain()
            .map(|(filter, _)| filter)
            .collect()
    }
}

/// Encodes a packet the broker built itself; such packets are always encodable, and
/// should one not be, it is dropped rather than sent half-built.
pub fn write_packet(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let result = codec::encode(packet, version, out);
    debug_assert!(
        result.is_ok(),
        "broker-built packet failed to encode: {result:?}"
    );
}

/// Encodes one PUBLISH of `message` for a client, from `frames` when it holds the
/// same form already (see [`FrameCache`]).
#[allow(clippy::too_many_arguments)]
fn write_publish(
    message: &Arc<Message>,
    grant: &Grant,
    packet_id: Option<PacketId>,
    dup: bool,
    version: ProtocolVersion,
    now: Timestamp,
    client_packet_max: Option<u32>,
    out: &mut BytesMut,
    frames: Option<&mut FrameCache>,
) -> Result<(), DropReason> {
    // Nothing in the frame differs by client but the packet id: written straight
    // from the message, which costs less than copying a cached frame.
    let bare = grant.subscription_ids.is_empty()
        && (version == ProtocolVersion::V311
            || (message.properties.is_empty() && message.expires_at.is_none()));
    if bare {
        let header = codec::BareHeader {
            dup,
            qos: grant.qos,
            retain: grant.retain,
            packet_id,
        };
        let start = out.len();
        let len =
            codec::encode_bare_publish(header, &message.topic, &message.payload, version, out)
                .map_err(|_: EncodeError| DropReason::TooLarge)?;
        // Rarely too large for the client: taken back off then, as below.
        if client_packet_max.is_some_and(|max| len > max as usize) {
            out.truncate(start);
            return Err(DropReason::TooLarge);
        }
        return Ok(());
    }
    if let Some(frames) = frames.filter(|_| !dup && grant.subscription_ids.is_empty()) {
        let frame = frames.frame(message, grant, version, now)?;
        if client_packet_max.is_some_and(|max| frame.bytes.len() > max as usize) {
            return Err(DropReason::TooLarge);
        }
        let start = out.len();
        out.extend_from_slice(&frame.bytes);
        if let Some(id) = packet_id {
            let at = start + frame.packet_id_at;
            if let Some(slot) = out.get_mut(at..at + 2) {
                slot.copy_from_slice(&id.get().to_be_bytes());
            }
        }
        return Ok(());
    }
    let publish = outbound_publish(message, grant, packet_id, dup, version, now);
    // Encoded once; taken back off if it exceeds what the client accepts.
    let start = out.len();
    let len = codec::encode_publish(&publish, version, out)
        .map_err(|_: EncodeError| DropReason::TooLarge)?;
    if client_packet_max.is_some_and(|max| len > max as usize) {
        out.truncate(start);
        return Err(DropReason::TooLarge);
    }
    Ok(())
}

/// The encoded PUBLISH of one message in each form its subscribers receive it in, so
/// a message with properties (or an expiry to count down) fanned out to many sessions
/// is encoded once per form (protocol version, QoS, RETAIN flag) instead of once per
/// session. A QoS 1/2 frame is stored with a placeholder packet id that each copy
/// overwrites. A message without properties is cheaper to write straight from its
/// topic and payload than to copy from here, and bypasses the cache.
///
/// The cache belongs to one message at one instant: it empties itself when asked for
/// another message or another `now` (the remaining expiry may differ), and holds the
/// message so its address cannot be reused while frames are kept.
#[derive(Debug, Default)]
pub struct FrameCache {
    message: Option<Arc<Message>>,
    now: Timestamp,
    frames: Vec<CachedFrame>,
}

#[derive(Debug)]
struct CachedFrame {
    version: ProtocolVersion,
    qos: QoS,
    retain: bool,
    bytes: Bytes,
    /// Where the packet id sits in `bytes` (QoS 1/2).
    packet_id_at: usize,
}

/// Stands in for the real packet id in a shared QoS 1/2 frame.
const PLACEHOLDER_PACKET_ID: PacketId = match PacketId::new(1) {
    Some(id) => id,
    None => panic!("1 is a valid packet id"),
};

impl FrameCache {
    /// Drops the frames and the message they belong to.
    pub fn clear(&mut self) {
        self.message = None;
        self.frames.clear();
    }

    fn frame(
        &mut self,
        message: &Arc<Message>,
        grant: &Grant,
        version: ProtocolVersion,
        now: Timestamp,
    ) -> Result<&CachedFrame, DropReason> {
        let same_message = self
            .message
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, message));
        if !same_message || self.now != now {
            self.frames.clear();
            self.message = Some(Arc::clone(message));
            self.now = now;
        }
        let found = self
            .frames
            .iter()
            .position(|f| f.version == version && f.qos == grant.qos && f.retain == grant.retain);
        let index = match found {
            Some(index) => index,
            None => {
                let packet_id = (grant.qos != QoS::AtMostOnce).then_some(PLACEHOLDER_PACKET_ID);
                let publish = outbound_publish(message, grant, packet_id, false, version, now);
                let mut bytes = BytesMut::new();
                codec::encode_publish(&publish, version, &mut bytes)
                    .map_err(|_| DropReason::TooLarge)?;
                // After the fixed header (1 byte + remaining length) and the topic.
                let remaining_len_bytes =
                    bytes.iter().skip(1).take_while(|b| *b & 0x80 != 0).count() + 1;
                let packet_id_at = 1 + remaining_len_bytes + 2 + message.topic.len();
                self.frames.push(CachedFrame {
                    version,
                    qos: grant.qos,
                    retain: grant.retain,
                    bytes: bytes.freeze(),
                    packet_id_at,
                });
                self.frames.len() - 1
            }
        };
        self.frames.get(index).ok_or(DropReason::TooLarge)
    }
}

/// The PUBLISH one client receives: its QoS, RETAIN flag and subscription ids, and
/// the remaining message expiry.
pub fn outbound_publish(
    message: &Message,
    grant: &Grant,
    packet_id: Option<PacketId>,
    dup: bool,
    version: ProtocolVersion,
    now: Timestamp,
) -> Publish {
    let mut properties = LazyProperties::none();
    if version == ProtocolVersion::V5 {
        properties = message.properties.clone();
        if !grant.subscription_ids.is_empty() {
            properties
                .make_mut()
                .subscription_identifiers
                .clone_from(&grant.subscription_ids);
        }
        if let Some(at) = message.expires_at {
            let left_ms = at.0.saturating_sub(now.0);
            properties.make_mut().message_expiry_interval_s =
                Some(u32::try_from(left_ms.div_ceil(1000)).unwrap_or(u32::MAX));
        }
    }
    Publish {
        dup,
        qos: grant.qos,
        retain: grant.retain,
        topic: message.topic.clone(),
        packet_id,
        properties,
        payload: message.payload.clone(),
    }
}
