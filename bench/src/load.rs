//! The links that carry load: publishers, subscribers, and the two roles of the
//! retained scenario.
//!
//! Hot path rules: a publisher encodes into its link's write buffer from one
//! `Publish` made at set-up (topic and payload are shared `Bytes`), then writes the
//! stamp over the payload bytes in place; a subscriber decodes frames that are slices
//! of its read buffer. Neither allocates per message. Up to [`WRITE_BATCH_BYTES`] go
//! out in one write, so a fast publisher pipelines hundreds of messages per syscall.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use glommio::timer::Timer;
use ringmq_core::codec::encode_publish;
use ringmq_core::packet::{
    ByteString, LazyProperties, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS,
};

use crate::clock::{self, now_ns};
use crate::flags::{Rate, SessionKind};
use crate::link::{Endpoint, Hello, Link, Wake};
use crate::plan::{LinkPlan, Role};
use crate::run::{SinkStreams, ThreadCtx, Window};
use crate::stamp::{Arrival, SequenceTracker, Stamp, SEQ_MAX};

/// Bytes a publisher buffers before it waits for the socket.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Longest CONNECT -> CONNACK or SUBSCRIBE -> SUBACK.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for DISCONNECT to go out at the end.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sets up a link, runs its role, and closes it once the run is over.
pub async fn run(ctx: &Rc<ThreadCtx>, plan: &LinkPlan) -> Result<()> {
    let (mut link, window) = match setup(ctx, plan).await {
        Ok(ready) => {
            ctx.control.ready.fetch_add(1, Ordering::AcqRel);
            ready
        }
        Err(e) => {
            ctx.control.failed.fetch_add(1, Ordering::AcqRel);
            if let Role::Publisher { .. } = plan.role {
                ctx.control.publishers_done.fetch_add(1, Ordering::AcqRel);
            }
            return Err(e);
        }
    };
    ctx.start.raised().await;
    let result = match &plan.role {
        _ if ctx.aborted() => Ok(()),
        Role::Publisher { index, topic } => {
            let mut publisher = Publisher::new(ctx, *index, topic, window, link.version);
            let result = publisher.run(&mut link).await;
            publisher.report();
            ctx.control.publishers_done.fetch_add(1, Ordering::AcqRel);
            match result {
                Ok(()) => publisher.idle_until_finish(&mut link).await,
                Err(e) => Err(e),
            }
        }
        Role::Subscriber {
            sink, publishers, ..
        } => {
            let count = publishers.end.saturating_sub(publishers.start);
            let mut receiver = Receiver::new(ctx, *sink, publishers.start, count, None);
            let result = receiver.run(&mut link).await;
            receiver.report();
            result
        }
        Role::RetainedSubscriber { sink, filter } => {
            let topics = ctx.config.topics as u64;
            let mut receiver = Receiver::new(ctx, *sink, 0, 1, Some(topics));
            let result = receiver.subscribe_then_run(&mut link, filter).await;
            receiver.report();
            result
        }
        Role::RetainedPublisher { .. } | Role::Storm { .. } => Ok(()),
    };
    link.close(CLOSE_TIMEOUT).await;
    result
}

/// Connects (and subscribes, for a subscriber); returns the link and its QoS 1/2
/// window: `--inflight`, lowered to the broker's Receive Maximum.
async fn setup(ctx: &ThreadCtx, plan: &LinkPlan) -> Result<(Link, u16)> {
    let (link, connack) = {
        let _permit = ctx
            .handshakes
            .acquire_permit(1)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if ctx.finish.is_set() {
            bail!("the run ended before this link could connect");
        }
        let (mut link, connack) = connect(ctx, plan.endpoint, &plan.client_id).await?;
        if let Role::Subscriber { filter, .. } = &plan.role {
            link.subscribe(filter, ctx.config.qos, HANDSHAKE_TIMEOUT)
                .await
                .with_context(|| format!("SUBSCRIBE {filter}"))?;
        }
        (link, connack)
    };
    if let Some(max) = connack.properties.maximum_qos {
        if max < ctx.config.qos {
            bail!("the broker's Maximum QoS is {}", max.as_u8());
        }
    }
    let window = connack
        .properties
        .receive_maximum
        .map_or(ctx.config.inflight, |rm| rm.get().min(ctx.config.inflight));
    Ok((link, window))
}

pub async fn connect(
    ctx: &ThreadCtx,
    endpoint: Endpoint,
    client_id: &str,
) -> Result<(Link, ringmq_core::packet::ConnAck)> {
    let hello = Hello {
        client_id,
        version: ctx.config.mqtt,
        persistent: ctx.config.session == SessionKind::Persistent,
        keep_alive_s: ctx.config.keep_alive_s,
    };
    Link::connect(endpoint, hello, HANDSHAKE_TIMEOUT).await
}

/// Free packet ids of a QoS 1/2 window: taking one is sending, giving it back is the
/// final ack.
#[derive(Debug)]
struct IdPool {
    free: Vec<u16>,
    window: u16,
}

impl IdPool {
    fn new(window: u16) -> IdPool {
        IdPool {
            free: (1..=window).rev().collect(),
            window,
        }
    }

    fn take(&mut self) -> Option<PacketId> {
        self.free.pop().and_then(PacketId::new)
    }

    fn give(&mut self, id: PacketId) {
        // A broker acking twice must not grow the window.
        if self.free.len() < usize::from(self.window) && id.get() <= self.window {
            self.free.push(id.get());
        }
    }

    fn in_flight(&self) -> u64 {
        u64::from(self.window) - self.free.len() as u64
    }

    fn has_room(&self) -> bool {
        !self.free.is_empty()
    }
}

/// Reads the acks of a publishing link; returns how many publishes were refused.
fn handle_acks(link: &mut Link, ids: &mut IdPool, qos: QoS) -> Result<u64> {
    let mut refused = 0;
    while let Some(packet) = link.decode_next()? {
        match packet {
            Packet::PubAck(ack) if qos == QoS::AtLeastOnce => {
                refused += u64::from(ack.reason.is_error());
                ids.give(ack.packet_id);
            }
            Packet::PubRec(rec) if qos == QoS::ExactlyOnce => {
                if rec.reason.is_error() {
                    refused += 1;
                    ids.give(rec.packet_id);
                } else {
                    link.send(&Packet::PubRel(PubResponse::success(rec.packet_id)))?;
                }
            }
            Packet::PubComp(comp) if qos == QoS::ExactlyOnce => ids.give(comp.packet_id),
            Packet::Disconnect(d) => bail!("the broker sent DISCONNECT: {}", d.reason.text()),
            _ => {}
        }
    }
    Ok(refused)
}

/// Why a publisher stopped filling its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    /// The next message is not due yet.
    Schedule,
    /// The write buffer is full.
    Write,
    /// Every packet id is in flight.
    Window,
}

struct Publisher<'a> {
    ctx: &'a ThreadCtx,
    index: u32,
    template: Publish,
    version: ProtocolVersion,
    payload_bytes: usize,
    ids: IdPool,
    /// Sequence number of the next message: also the count sent.
    next_seq: u32,
    /// Fixed-count runs: how many this publisher sends in all.
    quota: u64,
    /// Nanoseconds between two scheduled sends; `None` at max rate.
    interval_ns: Option<f64>,
    /// Offset of this publisher's schedule, in intervals (0..1).
    phase: f64,
    window: Window,
    sent_in_window: u64,
    refused: u64,
}

impl<'a> Publisher<'a> {
    fn new(
        ctx: &'a ThreadCtx,
        index: u32,
        topic: &str,
        window: u16,
        version: ProtocolVersion,
    ) -> Publisher<'a> {
        let qos = ctx.config.qos;
        Publisher {
            ctx,
            index,
            template: Publish {
                dup: false,
                qos,
                retain: false,
                topic: ByteString::from(topic),
                packet_id: None,
                properties: LazyProperties::none(),
                payload: Bytes::from(vec![0u8; ctx.config.payload_bytes]),
            },
            version,
            payload_bytes: ctx.config.payload_bytes,
            ids: IdPool::new(window),
            next_seq: 0,
            quota: ctx.config.quota(index).unwrap_or(u64::MAX),
            interval_ns: match ctx.config.rate {
                Rate::Max => None,
                Rate::PerPublisher(rate) => Some(1e9 / rate),
            },
            phase: f64::from(index) / ctx.config.publishers.max(1) as f64,
            window: ctx.window(),
            sent_in_window: 0,
            refused: 0,
        }
    }

    /// When message `seq` is due (open loop). Publisher `i` of `n` starts `i/n` of an
    /// interval late, so the publishers together send evenly rather than all at the
    /// same instants (1000 publishers at 10 msg/s are 10,000 msg/s, not 10 bursts of
    /// 1000).
    fn scheduled_ns(&self, seq: u32, interval_ns: f64) -> u64 {
        self.window.start_ns + ((f64::from(seq) + self.phase) * interval_ns) as u64
    }

    /// Messages due by `now` (all of them at max rate once the run has started: a
    /// max-rate publisher that began before the common start would put a fixed
    /// count's messages outside the measured window).
    fn due(&self, now: u64) -> u64 {
        match self.interval_ns {
            _ if now < self.window.start_ns => 0,
            None => u64::MAX,
            Some(interval) => {
                let elapsed = (now - self.window.start_ns) as f64 / interval;
                if elapsed < self.phase {
                    0
                } else {
                    (elapsed - self.phase) as u64 + 1
                }
            }
        }
    }

    /// Sends until the stop time, then waits (bounded by the drain) for the socket to
    /// take the rest and for the acks.
    async fn run(&mut self, link: &mut Link) -> Result<()> {
        let mut timer = Timer::new(clock::until(self.window.start_ns));
        self.send_until_stop(link, &mut timer).await?;
        timer.reset(clock::until(self.window.drain_end_ns));
        while !(link.write_idle() && self.ids.in_flight() == 0) {
            match link.step(Some(&mut timer), Some(&self.ctx.finish)).await? {
                Wake::Read => self.refused += handle_acks(link, &mut self.ids, self.template.qos)?,
                Wake::Written => {}
                Wake::Timer | Wake::Signal => break,
            }
        }
        Ok(())
    }

    /// `timer` is armed for the start of the window.
    async fn send_until_stop(&mut self, link: &mut Link, timer: &mut Timer) -> Result<()> {
        let qos = self.template.qos;
        let mut armed_ns = self.window.start_ns;
        loop {
            let now = now_ns();
            let sent_all = u64::from(self.next_seq) >= self.quota;
            if now >= self.window.stop_ns || self.next_seq >= SEQ_MAX || sent_all {
                return Ok(());
            }
            let due = self.due(now).min(self.quota);
            let mut sent = 0u64;
            let blocked = loop {
                if u64::from(self.next_seq) >= due {
                    break Blocked::Schedule;
                }
                if link.wbuf.len() >= WRITE_BATCH_BYTES {
                    break Blocked::Write;
                }
                if qos != QoS::AtMostOnce && !self.ids.has_room() {
                    break Blocked::Window;
                }
                let sent_ns = match self.interval_ns {
                    Some(interval) => self.scheduled_ns(self.next_seq, interval),
                    None => now,
                };
                if sent_ns >= self.window.stop_ns {
                    self.ctx.control.sent.fetch_add(sent, Ordering::AcqRel);
                    return Ok(());
                }
                if self.interval_ns.is_some() && self.window.measures(sent_ns) {
                    let lag = now.saturating_sub(sent_ns).max(1);
                    self.ctx.stats.borrow_mut().send_lag.saturating_record(lag);
                }
                self.encode(link, sent_ns)?;
                sent += 1;
            };
            self.ctx.control.sent.fetch_add(sent, Ordering::AcqRel);
            let wake_at = match (blocked, self.interval_ns) {
                _ if now < self.window.start_ns => self.window.start_ns,
                (Blocked::Schedule, Some(interval)) => self
                    .scheduled_ns(self.next_seq, interval)
                    .min(self.window.stop_ns),
                _ => self.window.stop_ns,
            };
            // Re-arming costs a timer-table removal and insertion: only when the
            // deadline moved (at max rate it is the stop time throughout).
            if wake_at != armed_ns {
                timer.reset(clock::until(wake_at));
                armed_ns = wake_at;
            }
            match link.step(Some(timer), None).await? {
                Wake::Read => {
                    self.refused += handle_acks(link, &mut self.ids, qos)?;
                    futures_lite::future::yield_now().await;
                }
                Wake::Written => futures_lite::future::yield_now().await,
                Wake::Timer | Wake::Signal => {}
            }
        }
    }

    /// Appends one stamped PUBLISH to the link's write buffer.
    fn encode(&mut self, link: &mut Link, sent_ns: u64) -> Result<()> {
        self.template.packet_id = match self.template.qos {
            QoS::AtMostOnce => None,
            _ => Some(
                self.ids
                    .take()
                    .ok_or_else(|| anyhow!("no packet id free"))?,
            ),
        };
        encode_publish(&self.template, self.version, &mut link.wbuf)
            .map_err(|e| anyhow!("encoding PUBLISH: {e}"))?;
        let end = link.wbuf.len();
        let payload = link
            .wbuf
            .get_mut(end.saturating_sub(self.payload_bytes)..end)
            .ok_or_else(|| anyhow!("PUBLISH shorter than its payload"))?;
        let stamp = Stamp {
            sent_ns,
            publisher: self.index,
            seq: self.next_seq,
        };
        if !stamp.write(payload) {
            bail!("payload too short for the stamp");
        }
        self.next_seq += 1;
        if self.window.measures(sent_ns) {
            self.sent_in_window += 1;
        }
        Ok(())
    }

    /// Keeps reading (late acks) until the run is over, so closing never resets a
    /// connection whose data the broker has not read yet.
    async fn idle_until_finish(&mut self, link: &mut Link) -> Result<()> {
        while !self.ctx.finish.is_set() {
            if let Wake::Read = link.step(None, Some(&self.ctx.finish)).await? {
                self.refused += handle_acks(link, &mut self.ids, self.template.qos)?;
            }
        }
        Ok(())
    }

    fn report(&self) {
        let mut stats = self.ctx.stats.borrow_mut();
        stats.sent.push((self.index, u64::from(self.next_seq)));
        stats.sent_in_window += self.sent_in_window;
        stats.refused += self.refused;
        stats.unacked += self.ids.in_flight();
    }
}

/// A subscriber: tracks every publisher's sequence and records latency.
struct Receiver<'a> {
    ctx: &'a ThreadCtx,
    sink: u32,
    first_publisher: u32,
    trackers: Vec<SequenceTracker>,
    window: Window,
    /// Retained: messages that make the subscriber complete.
    complete_at: Option<u64>,
    subscribed_ns: u64,
}

impl<'a> Receiver<'a> {
    fn new(
        ctx: &'a ThreadCtx,
        sink: u32,
        first_publisher: u32,
        publishers: u32,
        complete_at: Option<u64>,
    ) -> Receiver<'a> {
        Receiver {
            ctx,
            sink,
            first_publisher,
            trackers: vec![SequenceTracker::new(); publishers as usize],
            // Retained messages were published before the run: no latency.
            window: if complete_at.is_some() {
                Window::default()
            } else {
                ctx.window()
            },
            complete_at,
            subscribed_ns: 0,
        }
    }

    async fn subscribe_then_run(&mut self, link: &mut Link, filter: &str) -> Result<()> {
        let subscribe = Packet::Subscribe(ringmq_core::packet::Subscribe {
            packet_id: PacketId::new(1).ok_or_else(|| anyhow!("packet id"))?,
            subscriptions: vec![ringmq_core::packet::Subscription {
                filter: filter.into(),
                options: ringmq_core::packet::SubscriptionOptions {
                    qos: self.ctx.config.qos,
                    ..Default::default()
                },
            }],
            properties: Default::default(),
        });
        self.subscribed_ns = now_ns();
        link.send(&subscribe)?;
        self.run(link).await
    }

    async fn run(&mut self, link: &mut Link) -> Result<()> {
        loop {
            match link.step(None, Some(&self.ctx.finish)).await? {
                Wake::Read => {
                    self.take(link)?;
                    futures_lite::future::yield_now().await;
                }
                Wake::Signal => return Ok(()),
                Wake::Written | Wake::Timer => {}
            }
        }
    }

    /// Handles every whole packet in the read buffer.
    fn take(&mut self, link: &mut Link) -> Result<()> {
        let now = now_ns();
        let mut new = 0u64;
        let ctx = self.ctx;
        let root: &str = &ctx.topic_root;
        let mut stats = ctx.stats.borrow_mut();
        while let Some(packet) = link.decode_next()? {
            let publish = match packet {
                Packet::Publish(publish) => publish,
                Packet::PubRel(rel) => {
                    link.send(&Packet::PubComp(PubResponse::success(rel.packet_id)))?;
                    continue;
                }
                Packet::SubAck(suback) => {
                    if let Some(reason) = suback.reasons.iter().find(|r| r.is_error()) {
                        bail!("SUBSCRIBE refused: {}", reason.text());
                    }
                    continue;
                }
                Packet::Disconnect(d) => bail!("the broker sent DISCONNECT: {}", d.reason.text()),
                _ => continue,
            };
            match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => {
                    link.send(&Packet::PubAck(PubResponse::success(id)))?
                }
                (QoS::ExactlyOnce, Some(id)) => {
                    link.send(&Packet::PubRec(PubResponse::success(id)))?
                }
                _ => {}
            }
            let stamp = match Stamp::read(&publish.payload) {
                Some(stamp) if publish.topic.starts_with(root) => stamp,
                // Clearing a retained topic delivers an empty payload.
                _ if publish.payload.is_empty() => continue,
                _ => {
                    stats.foreign += 1;
                    continue;
                }
            };
            let slot = stamp.publisher.wrapping_sub(self.first_publisher) as usize;
            let Some(tracker) = self.trackers.get_mut(slot) else {
                stats.foreign += 1;
                continue;
            };
            if let Arrival::InOrder | Arrival::Reordered = tracker.record(stamp.seq) {
                new += 1;
                if self.window.measures(stamp.sent_ns) {
                    stats
                        .latency
                        .saturating_record(now.saturating_sub(stamp.sent_ns).max(1));
                }
                if self.window.measures(now) {
                    stats.received_in_window += 1;
                }
                if let (Some(target), Some(t)) = (self.complete_at, self.trackers.first()) {
                    if t.distinct() == target {
                        stats
                            .complete
                            .saturating_record(now.saturating_sub(self.subscribed_ns).max(1));
                        ctx.control.complete.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }
        ctx.control.delivered.fetch_add(new, Ordering::AcqRel);
        Ok(())
    }

    fn report(&mut self) {
        self.ctx.stats.borrow_mut().sinks.push(SinkStreams {
            sink: self.sink,
            first_publisher: self.first_publisher,
            trackers: std::mem::take(&mut self.trackers),
        });
    }
}

/// The publisher of the retained scenario: publishes every topic during set-up, and
/// clears them (empty retained payloads) when the run is over.
pub async fn run_retained_publisher(
    ctx: &Rc<ThreadCtx>,
    plan: &LinkPlan,
    topics: u32,
) -> Result<()> {
    let published = async {
        let (mut link, window) = setup(ctx, plan).await?;
        publish_retained(ctx, &mut link, topics, window, false).await?;
        Ok::<_, anyhow::Error>(link)
    }
    .await;
    let mut link = match published {
        Ok(link) => {
            ctx.control.ready.fetch_add(1, Ordering::AcqRel);
            link
        }
        Err(e) => {
            ctx.control.failed.fetch_add(1, Ordering::AcqRel);
            return Err(e);
        }
    };
    {
        let mut stats = ctx.stats.borrow_mut();
        stats.sent.push((0, u64::from(topics)));
    }
    ctx.control
        .sent
        .fetch_add(u64::from(topics), Ordering::AcqRel);
    ctx.finish.raised().await;
    let cleared = publish_retained(ctx, &mut link, topics, 1, true).await;
    link.close(CLOSE_TIMEOUT).await;
    cleared
}

/// Publishes topic 0..topics retained (empty payloads when `clear`), then makes sure
/// the broker has them: every ack back, or a PINGREQ round trip at QoS 0.
async fn publish_retained(
    ctx: &ThreadCtx,
    link: &mut Link,
    topics: u32,
    window: u16,
    clear: bool,
) -> Result<()> {
    let qos = if clear {
        QoS::AtMostOnce
    } else {
        ctx.config.qos
    };
    let payload = if clear {
        Bytes::new()
    } else {
        Bytes::from(vec![0u8; ctx.config.payload_bytes])
    };
    let root = &ctx.topic_root;
    let mut ids = IdPool::new(window);
    let mut next = 0u32;
    let deadline = now_ns() + clock::as_ns(HANDSHAKE_TIMEOUT) + u64::from(topics) * 100_000;
    let mut timer = Timer::new(clock::until(deadline));
    while next < topics || !link.write_idle() || ids.in_flight() > 0 {
        while next < topics
            && link.wbuf.len() < WRITE_BATCH_BYTES
            && (qos == QoS::AtMostOnce || ids.has_room())
        {
            let mut publish = Publish {
                dup: false,
                qos,
                retain: true,
                topic: ByteString::from(format!("{root}retained/{next}")),
                packet_id: None,
                properties: LazyProperties::none(),
                payload: payload.clone(),
            };
            if qos != QoS::AtMostOnce {
                publish.packet_id = ids.take();
            }
            let mut stamped = vec![0u8; payload.len()];
            Stamp {
                sent_ns: now_ns(),
                publisher: 0,
                seq: next,
            }
            .write(&mut stamped);
            if !clear {
                publish.payload = Bytes::from(stamped);
            }
            encode_publish(&publish, link.version, &mut link.wbuf)
                .map_err(|e| anyhow!("encoding PUBLISH: {e}"))?;
            next += 1;
        }
        match link.step(Some(&mut timer), None).await? {
            Wake::Read => {
                if handle_acks(link, &mut ids, qos)? > 0 {
                    bail!("the broker refused a retained PUBLISH");
                }
            }
            Wake::Timer => bail!("publishing {topics} retained topics timed out"),
            Wake::Written | Wake::Signal => {}
        }
    }
    link.round_trip(HANDSHAKE_TIMEOUT).await
}
