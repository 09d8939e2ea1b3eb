//! Starting the shards: one glommio executor per shard, pinned to its CPU, joined to
//! the others by a full mesh of bounded rings; and the tasks every shard runs
//! (accept loops, ring consumers, timers, `$SYS` on shard 0).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_core::packet::{LazyProperties, QoS};
use ringmq_core::session::Message;
use ringmq_net::{Listener, Stream};

use crate::config::ListenerConfig;
use crate::security::Security;
use tracing::{error, warn};

use crate::config::{BrokerConfig, Limits};
use crate::connection;
use crate::control::{BrokerHandle, Control, CONTROL_POLL, CONTROL_QUEUE_MAX};
use crate::notify::Notify;
use crate::ring::ShardMsg;
use crate::state::{self, Shard};
use crate::stats::{total, ShardStats};

/// How often a shard looks at session expiry and delayed wills.
const TIMER_PERIOD: Duration = Duration::from_millis(200);
/// Timer ticks between two counts of the inflight and queued gauges (1 s): a walk
/// over the sessions, too costly per message, cheap once a second.
const GAUGE_TICKS: u32 = 5;

/// Locked memory glommio registers per shard for storage I/O, which shards do not
/// use; the default (10 MiB) would exhaust a common 8 MiB memlock limit.
const SHARD_IO_MEMORY_BYTES: usize = 256 * 1024;

/// Messages for one peer that found its ring full, kept in order: once one message
/// waits, every later one queues behind it, so a ring never reorders.
#[derive(Default)]
struct Outgoing {
    queue: RefCell<VecDeque<ShardMsg>>,
    /// A message is being handed to the ring by the flusher.
    busy: Cell<bool>,
    wake: Notify,
    drained: RefCell<Vec<Waker>>,
}

/// What every task of a shard shares.
pub(crate) struct ShardCtx {
    pub id: usize,
    pub shards: usize,
    pub state: RefCell<Shard>,
    pub stats: Arc<ShardStats>,
    limits: RefCell<Arc<Limits>>,
    pub connections: Arc<AtomicUsize>,
    pub security: Arc<Security>,
    senders: Senders<ShardMsg>,
    outgoing: Vec<Outgoing>,
    assigned_ids: Cell<u64>,
    boot_id: u64,
    /// Set by [`Running::stop`] from any thread; a shard notices within a timer tick.
    stopping: Arc<AtomicBool>,
    /// Rung once this shard has noticed `stopping`.
    stop: Notify,
}

impl ShardCtx {
    /// The limits in force; a reload replaces them for what starts afterwards.
    pub(crate) fn limits(&self) -> Arc<Limits> {
        Arc::clone(&self.limits.borrow())
    }

    /// Sends to a peer shard without waiting: straight onto the ring when it has room
    /// and nothing queues before it, else behind the queue.
    pub(crate) fn send(&self, peer: usize, msg: ShardMsg) {
        let Some(outgoing) = self.outgoing.get(peer) else {
            return;
        };
        if let Some(sent) = self.stats.ring_sent.get(peer) {
            sent.inc();
        }
        let msg = if outgoing.queue.borrow().is_empty() && !outgoing.busy.get() {
            match self.senders.try_send_to(peer, msg) {
                Ok(()) => return,
                Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) => {
                    self.stats.ring_full.inc();
                    msg
                }
                Err(_) => return,
            }
        } else {
            msg
        };
        outgoing.queue.borrow_mut().push_back(msg);
        outgoing.wake.notify();
    }

    /// Sends what the state's outbox holds, then waits while a ring it used is full:
    /// the publisher stops being read, which is the backpressure.
    pub(crate) async fn flush(&self) {
        let messages = std::mem::take(&mut self.state.borrow_mut().outbox);
        if messages.is_empty() {
            return;
        }
        let mut peers: u128 = 0;
        for (peer, msg) in messages {
            if peer < 128 {
                peers |= 1 << peer;
            }
            self.send(peer, msg);
        }
        for (peer, outgoing) in self.outgoing.iter().enumerate() {
            if peer < 128 && peers & (1 << peer) == 0 {
                continue;
            }
            std::future::poll_fn(|cx| {
                if outgoing.queue.borrow().is_empty() {
                    std::task::Poll::Ready(())
                } else {
                    outgoing.drained.borrow_mut().push(cx.waker().clone());
                    std::task::Poll::Pending
                }
            })
            .await;
        }
    }

    /// A client id for an MQTT 5 client that sent none: unique across restarts and
    /// shards.
    pub(crate) fn assign_client_id(&self) -> ByteString {
        let n = self.assigned_ids.get() + 1;
        self.assigned_ids.set(n);
        ByteString::from(format!("ringmq-{:x}-{}-{}", self.boot_id, self.id, n))
    }
}

/// Under the backpressure policy: waits until the sessions the last work left
/// congested have drained below their limit, at most the write timeout (a client
/// that reads but never acknowledges must not hold its publishers forever).
/// False when it gave up at the timeout.
pub(crate) async fn wait_for_congestion(ctx: &ShardCtx) -> bool {
    let congested = ctx.state.borrow_mut().take_congested();
    if congested.is_empty() {
        return true;
    }
    let drained = Rc::clone(&ctx.state.borrow().drained);
    let deadline = Instant::now() + ctx.limits().write_timeout;
    while ctx.state.borrow().any_congested(&congested) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            warn!(
                sessions = congested.len(),
                "subscribers stayed congested; releasing publishers"
            );
            return false;
        };
        let _ = glommio::timer::timeout(left, async {
            drained.wait().await;
            Ok(())
        })
        .await;
    }
    true
}

/// Drains one peer's queue onto its ring, waiting for room.
async fn flush_peer(ctx: Rc<ShardCtx>, peer: usize) {
    let Some(outgoing) = ctx.outgoing.get(peer) else {
        return;
    };
    loop {
        let next = outgoing.queue.borrow_mut().pop_front();
        match next {
            Some(msg) => {
                outgoing.busy.set(true);
                let sent = ctx.senders.send_to(peer, msg).await;
                outgoing.busy.set(false);
                if sent.is_err() {
                    // The peer is gone (shutting down): nothing to deliver to.
                    outgoing.queue.borrow_mut().clear();
                }
            }
            None => {
                for waker in outgoing.drained.borrow_mut().drain(..) {
                    waker.wake();
                }
                outgoing.wake.notified().await;
            }
        }
    }
}

fn handle_ring(ctx: &Rc<ShardCtx>, msg: ShardMsg) {
    match msg {
        ShardMsg::Adopt(adoption) => {
            let adoption = *adoption;
            let stream = Stream::from_socket(adoption.socket);
            glommio::spawn_local(connection::serve(Rc::clone(ctx), stream, adoption.accepted))
                .detach();
        }
        ShardMsg::Publish(message) => {
            ctx.state.borrow_mut().deliver_plain(&message, state::now());
        }
        ShardMsg::SharedPublish {
            message,
            member,
            filter,
        } => ctx
            .state
            .borrow_mut()
            .deliver_shared(&message, member, &filter, state::now()),
        ShardMsg::Interest { filter, key, add } => {
            ctx.state.borrow_mut().apply_interest(&filter, key, add);
        }
        ShardMsg::Retain(message) => ctx.state.borrow_mut().apply_retain(message),
        ShardMsg::Query {
            token,
            from,
            filters,
        } => {
            let retained = ctx.state.borrow().retained_matching(&filters);
            ctx.send(usize::from(from), ShardMsg::QueryReply { token, retained });
        }
        ShardMsg::QueryReply { token, retained } => ctx.state.borrow_mut().answer(token, retained),
    }
    // Work done for a ring message (a will, a redelivery) may address other shards;
    // a consumer never waits, it only queues.
    let pending = std::mem::take(&mut ctx.state.borrow_mut().outbox);
    for (peer, msg) in pending {
        ctx.send(peer, msg);
    }
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: Listener, config: Rc<ListenerConfig>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                glommio::spawn_local(connection::handshake(
                    Rc::clone(&ctx),
                    stream,
                    peer,
                    Rc::clone(&config),
                ))
                .detach();
            }
            Err(err) => {
                // Out of descriptors or memory: back off instead of spinning.
                warn!(error = %err, "accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn timer_loop(ctx: Rc<ShardCtx>) {
    let mut ticks: u32 = 0;
    loop {
        glommio::timer::sleep(TIMER_PERIOD).await;
        if ctx.stopping.load(Ordering::Relaxed) {
            ctx.stop.notify();
            return;
        }
        ctx.state.borrow_mut().run_timers();
        ticks = ticks.wrapping_add(1);
        if ticks % GAUGE_TICKS == 0 {
            ctx.state.borrow().refresh_gauges();
        }
        ctx.flush().await;
    }
}

/// Answers the admin endpoint's questions, a batch per tick.
async fn control_loop(ctx: Rc<ShardCtx>, requests: crossbeam_channel::Receiver<Control>) {
    loop {
        glommio::timer::sleep(CONTROL_POLL).await;
        while let Ok(request) = requests.try_recv() {
            match request {
                Control::Reload { limits, reply } => {
                    *ctx.limits.borrow_mut() = Arc::clone(&limits);
                    ctx.state.borrow_mut().limits = limits;
                    let _ = reply.send(());
                }
                other => ctx.state.borrow_mut().control(other),
            }
        }
        ctx.flush().await;
    }
}

/// Stops accepting, disconnects every client and waits (bounded) until what was
/// queued for them is written.
async fn shut_down(ctx: &ShardCtx, accept_tasks: Vec<glommio::Task<()>>, timeout: Duration) {
    // Dropping a task cancels it: the listeners close and accept no one else.
    drop(accept_tasks);
    ctx.state.borrow_mut().disconnect_all();
    let deadline = Instant::now() + timeout;
    while ctx.stats.clients_connected.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes `$SYS/broker/...` (retained) every `interval`, from shard 0.
async fn sys_loop(ctx: Rc<ShardCtx>, all: Arc<Vec<Arc<ShardStats>>>, interval: Duration) {
    let started = Instant::now();
    let version = ByteString::from(format!("ringmq {}", env!("CARGO_PKG_VERSION")));
    loop {
        let sum = |value: fn(&ShardStats) -> u64| total(&all, value).to_string();
        let values: [(&str, String); 12] = [
            ("$SYS/broker/version", version.to_string()),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", started.elapsed().as_secs()),
            ),
            (
                "$SYS/broker/clients/connected",
                sum(|s| s.clients_connected.get()),
            ),
            ("$SYS/broker/clients/total", sum(|s| s.sessions.get())),
            (
                "$SYS/broker/messages/received",
                sum(|s| s.messages_received.get()),
            ),
            ("$SYS/broker/messages/sent", sum(|s| s.messages_sent.get())),
            (
                "$SYS/broker/bytes/received",
                sum(|s| s.bytes_received.get()),
            ),
            ("$SYS/broker/bytes/sent", sum(|s| s.bytes_sent.get())),
            (
                "$SYS/broker/subscriptions/count",
                sum(|s| s.subscriptions.get()),
            ),
            (
                "$SYS/broker/retained messages/count",
                sum(|s| s.retained.get()),
            ),
            (
                "$SYS/broker/messages/dropped",
                sum(ShardStats::dropped_total),
            ),
            (
                "$SYS/broker/connections/refused",
                sum(|s| s.connections_refused.get() + s.sessions_refused.get()),
            ),
        ];
        {
            let mut state = ctx.state.borrow_mut();
            for (topic, value) in values {
                state.route(Arc::new(Message {
                    topic: ByteString::from(topic),
                    payload: Bytes::from(value),
                    qos: QoS::AtMostOnce,
                    retain: true,
                    properties: LazyProperties::none(),
                    expires_at: None,
                    origin: None,
                    sampled_at_ns: 0,
                }));
            }
        }
        ctx.flush().await;
        glommio::timer::sleep(interval).await;
    }
}

/// Asks the shards to shut down: stop accepting, tell clients (MQTT 5: DISCONNECT
/// 0x8B), write what is queued for them within the shutdown timeout, exit.
#[derive(Clone, Debug)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not start shard {shard}: {reason}")]
    Shard { shard: usize, reason: String },
    #[error("shard {shard} could not listen on {addr}: {reason}")]
    Listen {
        shard: usize,
        addr: std::net::SocketAddr,
        reason: String,
    },
}

/// Running shards: stop them with [`Running::stopper`], ask them questions with
/// [`Running::handle`], wait with [`Running::wait`].
pub struct Running {
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    handle: BrokerHandle,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("shards", &self.handles.len())
            .finish()
    }
}

impl Running {
    /// A handle that asks every shard to shut down gracefully; callable from any
    /// thread, e.g. a signal handler thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.stopping))
    }

    /// A thread-safe handle for questions about the running broker.
    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// Blocks until every shard has stopped.
    pub fn wait(self) {
        for handle in self.handles {
            if let Err(err) = handle.join() {
                error!(error = %err, "shard stopped with an error");
            }
        }
    }
}

/// Starts the shards and returns once every one of them listens.
pub fn start(config: BrokerConfig) -> Result<Running, StartError> {
    let shards = config.shards.max(1);
    let limits = Arc::new(config.limits.clone());
    let mesh = MeshBuilder::full(shards, limits.ring_capacity.max(16));
    let connections = Arc::new(AtomicUsize::new(0));
    let all_stats: Arc<Vec<Arc<ShardStats>>> = Arc::new(
        (0..shards)
            .map(|_| Arc::new(ShardStats::new(shards)))
            .collect(),
    );
    let boot_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), StartError>>();
    let stopping = Arc::new(AtomicBool::new(false));
    let shutdown_timeout = config.shutdown_timeout;
    let (control_senders, control_receivers): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| crossbeam_channel::bounded::<Control>(CONTROL_QUEUE_MAX))
        .unzip();
    let mut control_receivers = control_receivers.into_iter();
    let mut handles = Vec::with_capacity(shards);
    for (id, stats) in all_stats.iter().cloned().enumerate() {
        let placement = match config.cpus.get(id) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let mesh = mesh.clone();
        let limits = Arc::clone(&limits);
        let connections = Arc::clone(&connections);
        let all_stats = Arc::clone(&all_stats);
        let listeners = config.listeners.clone();
        let security = Arc::clone(&config.security);
        let sys_interval = config.sys_interval;
        let ready = ready_tx.clone();
        let stopping = Arc::clone(&stopping);
        let Some(control) = control_receivers.next() else {
            break;
        };
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("ringmq-shard-{id}"))
            .io_memory(SHARD_IO_MEMORY_BYTES);
        if !config.idle_spin.is_zero() {
            builder = builder.spin_before_park(config.idle_spin);
        }
        let spawned = builder.spawn(move || async move {
            let (senders, mut receivers) = match mesh.join().await {
                Ok(ends) => ends,
                Err(err) => {
                    let _ = ready.send(Err(StartError::Shard {
                        shard: id,
                        reason: format!("could not join the shard mesh: {err}"),
                    }));
                    return;
                }
            };
            let ctx = Rc::new(ShardCtx {
                id,
                shards,
                state: RefCell::new(Shard::new(
                    id as u16,
                    shards,
                    Arc::clone(&limits),
                    Arc::clone(&stats),
                )),
                stats,
                limits: RefCell::new(limits),
                connections,
                security,
                senders,
                outgoing: (0..shards).map(|_| Outgoing::default()).collect(),
                assigned_ids: Cell::new(0),
                boot_id,
                stopping,
                stop: Notify::default(),
            });
            for (_, receiver) in receivers.streams() {
                let ctx = Rc::clone(&ctx);
                glommio::spawn_local(async move {
                    while let Some(msg) = receiver.recv().await {
                        ctx.stats.ring_received.inc();
                        handle_ring(&ctx, msg);
                        // Not taking more from this ring fills it, which holds
                        // the publishers on the other shard.
                        let _ = wait_for_congestion(&ctx).await;
                    }
                })
                .detach();
            }
            for peer in (0..shards).filter(|&p| p != id) {
                glommio::spawn_local(flush_peer(Rc::clone(&ctx), peer)).detach();
            }
            let mut tasks = Vec::new();
            for config in listeners {
                let addr = config.addr;
                match Listener::bind(addr, 1024) {
                    Ok(listener) => tasks.push(glommio::spawn_local(accept_loop(
                        Rc::clone(&ctx),
                        listener,
                        Rc::new(config),
                    ))),
                    Err(err) => {
                        let _ = ready.send(Err(StartError::Listen {
                            shard: id,
                            addr,
                            reason: err.to_string(),
                        }));
                        return;
                    }
                }
            }
            glommio::spawn_local(timer_loop(Rc::clone(&ctx))).detach();
            glommio::spawn_local(control_loop(Rc::clone(&ctx), control)).detach();
            if let (0, Some(interval)) = (id, sys_interval) {
                glommio::spawn_local(sys_loop(Rc::clone(&ctx), Arc::clone(&all_stats), interval))
                    .detach();
            }
            let _ = ready.send(Ok(()));
            drop(ready);
            ctx.stop.notified().await;
            shut_down(&ctx, tasks, shutdown_timeout).await;
        });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(err) => {
                return Err(StartError::Shard {
                    shard: id,
                    reason: err.to_string(),
                })
            }
        }
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                return Err(StartError::Shard {
                    shard: 0,
                    reason: "a shard stopped while starting".into(),
                })
            }
        }
    }
    let ready = Arc::new(AtomicBool::new(true));
    let handle = BrokerHandle::new(all_stats, control_senders, ready, Arc::clone(&stopping));
    Ok(Running {
        handles,
        stopping,
        handle,
    })
}
