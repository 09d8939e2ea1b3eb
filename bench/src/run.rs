//! Running a plan: one glommio executor per generator thread, and the coordinator
//! on the calling thread that moves every thread through the phases of a run.
//!
//! Phases: set-up (connect, subscribe; the retained publisher publishes) -> start
//! (the coordinator fixes the start time a little in the future) -> warm-up ->
//! measured window -> drain (publishers flush and collect acks, subscribers take
//! what is still in flight) -> finish (every link disconnects) -> merge.
//!
//! Threads and coordinator share only [`Control`]: counters and a few flags. Each
//! thread watches it with a 1 ms poll and turns its changes into local [`Signal`]s,
//! so thousands of link tasks wait on a `Cell` and a waker, never on an atomic.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::clock::{self, now_ns};
use crate::flags::{Config, Scenario};
use crate::link::Signal;
use crate::plan::{LinkPlan, Plan, Role};
use crate::procstat::{self, ProcSample};
use crate::stamp::SequenceTracker;
use crate::{load, storm};

/// Locked memory glommio registers per executor for file I/O, which the generator
/// does not do; the default (10 MiB) would exceed an 8 MiB memlock limit.
const THREAD_IO_MEMORY_BYTES: usize = 256 << 10;
/// Time between fixing the start and the start, so every thread sees it first.
const START_DELAY: Duration = Duration::from_millis(50);
/// How often threads and the coordinator look at [`Control`].
const CONTROL_POLL: Duration = Duration::from_millis(1);
/// Longest set-up: connections, subscriptions, retained publishing.
const SETUP_TIMEOUT_MIN: Duration = Duration::from_secs(60);
/// During the drain, how long without a new arrival means nothing more will come
/// (but for a fixed count, see [`drain`]).
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// Descriptors beyond one per connection: executors, io_uring, stdio.
const FILES_SPARE: u64 = 64;
/// Error messages kept (the first ones; the rest are only counted).
const ERRORS_MAX: usize = 20;
/// Highest latency or time a histogram holds: one hour, in nanoseconds.
const HISTOGRAM_NS_MAX: u64 = 3_600_000_000_000;

/// What the coordinator and the threads share.
#[derive(Debug, Default)]
pub struct Control {
    /// Links whose set-up succeeded (connect storm: connections made).
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    /// Start of the load on the process clock; 0 until fixed.
    pub start_ns: AtomicU64,
    pub finish: AtomicBool,
    pub abort: AtomicBool,
    pub sent: AtomicU64,
    /// Distinct messages received, over all sinks.
    pub delivered: AtomicU64,
    pub publishers_done: AtomicUsize,
    /// Retained subscribers that have every topic.
    pub complete: AtomicUsize,
    errors: Mutex<Vec<String>>,
    errors_total: AtomicUsize,
}

impl Control {
    pub fn error(&self, message: String) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < ERRORS_MAX {
                errors.push(message);
            }
        }
    }

    pub fn errors(&self) -> (Vec<String>, usize) {
        let list = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (list, self.errors_total.load(Ordering::Relaxed))
    }
}

/// The times of a run on the process clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    /// End of the warm-up: latency is measured for messages due from here...
    pub measure_ns: u64,
    /// ...until here, when publishers stop.
    pub stop_ns: u64,
    /// Last moment to wait for messages in flight.
    pub drain_end_ns: u64,
}

impl Window {
    pub fn new(config: &Config, start_ns: u64) -> Window {
        let measure_ns = start_ns + clock::as_ns(config.warmup());
        let stop_ns = measure_ns + clock::as_ns(config.duration());
        Window {
            start_ns,
            measure_ns,
            stop_ns,
            drain_end_ns: stop_ns + clock::as_ns(config.drain()),
        }
    }

    pub fn measures(&self, at_ns: u64) -> bool {
        at_ns >= self.measure_ns && at_ns < self.stop_ns
    }
}

/// The trackers of one sink kept by one thread.
#[derive(Debug)]
pub struct SinkStreams {
    pub sink: u32,
    pub first_publisher: u32,
    pub trackers: Vec<SequenceTracker>,
}

/// What one thread measured.
#[derive(Debug)]
pub struct ThreadStats {
    /// End-to-end latency of messages due in the measured window, ns.
    pub latency: Histogram<u64>,
    /// Open loop: how late messages of the window left the generator after their
    /// scheduled time (the generator's own lag plus the broker's backpressure), ns.
    pub send_lag: Histogram<u64>,
    /// Connect storm: from the (scheduled) start of a connection to its CONNACK, ns.
    pub connack: Histogram<u64>,
    /// Retained: from SUBSCRIBE to the last retained topic, ns.
    pub complete: Histogram<u64>,
    pub sinks: Vec<SinkStreams>,
    /// Messages sent by each publisher.
    pub sent: Vec<(u32, u64)>,
    pub sent_in_window: u64,
    pub received_in_window: u64,
    /// Messages of other runs or without a stamp.
    pub foreign: u64,
    /// QoS 1/2 publishes the broker answered with an error reason.
    pub refused: u64,
    /// QoS 1/2 publishes without an ack when the run ended.
    pub unacked: u64,
    pub last_connack_ns: u64,
}

impl ThreadStats {
    pub(crate) fn new() -> Result<ThreadStats> {
        let histogram = || {
            Histogram::new_with_bounds(1, HISTOGRAM_NS_MAX, 3)
                .map_err(|e| anyhow!("histogram: {e}"))
        };
        Ok(ThreadStats {
            latency: histogram()?,
            send_lag: histogram()?,
            connack: histogram()?,
            complete: histogram()?,
            sinks: Vec::new(),
            sent: Vec::new(),
            sent_in_window: 0,
            received_in_window: 0,
            foreign: 0,
            refused: 0,
            unacked: 0,
            last_connack_ns: 0,
        })
    }
}

/// What every task of one generator thread shares.
#[derive(Debug)]
pub struct ThreadCtx {
    pub config: Arc<Config>,
    pub control: Arc<Control>,
    pub topic_root: Arc<str>,
    pub stats: RefCell<ThreadStats>,
    pub start: Signal,
    pub finish: Signal,
    pub handshakes: glommio::sync::Semaphore,
}

impl ThreadCtx {
    /// The run's times; valid once `start` is raised.
    pub fn window(&self) -> Window {
        Window::new(&self.config, self.control.start_ns.load(Ordering::Acquire))
    }

    pub fn aborted(&self) -> bool {
        self.control.abort.load(Ordering::Acquire)
    }
}

/// The outcome of a run, before it becomes a report.
#[derive(Debug)]
pub struct Outcome {
    pub window: Window,
    /// When the coordinator declared the run over.
    pub end_ns: u64,
    pub threads: Vec<ThreadStats>,
    pub sent_total: u64,
    pub ready: usize,
    pub failed: usize,
    pub errors: Vec<String>,
    pub errors_total: usize,
    pub broker_before: Option<ProcSample>,
    pub broker_after: Option<ProcSample>,
    /// This process over the same span: is the generator itself near its limit?
    pub generator_before: Option<ProcSample>,
    pub generator_after: Option<ProcSample>,
}

/// Runs `plan` to the end and returns what every thread measured.
pub fn run(config: &Config, plan: &Plan) -> Result<Outcome> {
    clock::epoch();
    let links: usize = plan.threads.iter().map(Vec::len).sum();
    if let Some(limit) = procstat::open_files_limit() {
        if links as u64 + FILES_SPARE > limit {
            bail!(
                "{links} connections need more than the {limit} open files allowed: raise `ulimit -n` (the broker, on this machine, needs as many)"
            );
        }
    }
    let config = Arc::new(config.clone());
    let control = Arc::new(Control::default());
    let topic_root: Arc<str> = Arc::from(plan.topic_root.as_str());
    let mut handles = Vec::new();
    for (t, links) in plan.threads.iter().enumerate() {
        let placement = match config.cpus.as_ref().and_then(|c| c.get(t)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let (config, control, topic_root) = (
            Arc::clone(&config),
            Arc::clone(&control),
            Arc::clone(&topic_root),
        );
        let links = links.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("ringmq-bench-{t}"))
            .io_memory(THREAD_IO_MEMORY_BYTES)
            .spin_before_park(Duration::from_micros(config.spin_us))
            .spawn(move || thread_main(config, control, topic_root, links))
            .map_err(|e| anyhow!("starting generator thread {t}: {e}"))?;
        handles.push(handle);
    }
    let coordinated = coordinate(&config, plan, &control);
    // Whatever happened, release the threads before joining them.
    control.finish.store(true, Ordering::Release);
    if coordinated.is_err() {
        control.abort.store(true, Ordering::Release);
    }
    let mut threads = Vec::new();
    for (t, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(stats)) => threads.push(stats),
            Ok(Err(e)) => bail!("generator thread {t}: {e:#}"),
            Err(e) => bail!("generator thread {t} failed: {e}"),
        }
    }
    let Coordinated {
        window,
        end_ns,
        samples: [broker_before, broker_after, generator_before, generator_after],
    } = coordinated?;
    let (errors, errors_total) = control.errors();
    Ok(Outcome {
        window,
        end_ns,
        threads,
        sent_total: control.sent.load(Ordering::Acquire),
        ready: control.ready.load(Ordering::Acquire),
        failed: control.failed.load(Ordering::Acquire),
        errors,
        errors_total,
        broker_before,
        broker_after,
        generator_before,
        generator_after,
    })
}

/// The times of a run, and broker and generator samples before and after.
struct Coordinated {
    window: Window,
    end_ns: u64,
    samples: [Option<ProcSample>; 4],
}

/// Moves the run through its phases from the calling (non-executor) thread.
fn coordinate(config: &Config, plan: &Plan, control: &Control) -> Result<Coordinated> {
    let links: usize = plan.threads.iter().map(Vec::len).sum();
    let storm = config.scenario == Scenario::Connect;
    if !storm {
        let setup = SETUP_TIMEOUT_MIN.max(Duration::from_millis(links as u64 * 2));
        let settled = || {
            control.ready.load(Ordering::Acquire) + control.failed.load(Ordering::Acquire) >= links
        };
        if !wait_until(now_ns() + clock::as_ns(setup), settled) {
            bail!(
                "set-up timed out after {setup:?}: {} of {links} links ready",
                control.ready.load(Ordering::Acquire)
            );
        }
        let failed = control.failed.load(Ordering::Acquire);
        if failed > 0 {
            let (errors, _) = control.errors();
            bail!(
                "{failed} of {links} links failed to set up; first: {}",
                errors.first().map_or("?", String::as_str)
            );
        }
    }
    let broker_before = config.broker_pid.map(procstat::sample).transpose()?;
    let generator_before = procstat::sample(std::process::id()).ok();
    let window = Window::new(config, now_ns() + clock::as_ns(START_DELAY));
    control.start_ns.store(window.start_ns, Ordering::Release);
    let deadline = window.drain_end_ns;
    match config.scenario {
        Scenario::Connect => {
            let done = || {
                control.ready.load(Ordering::Acquire) + control.failed.load(Ordering::Acquire)
                    >= links
            };
            wait_until(deadline, done);
        }
        Scenario::Retained => {
            let done = || control.complete.load(Ordering::Acquire) >= config.subscribers;
            wait_until(deadline, done);
        }
        _ => {
            let publishers_done =
                || control.publishers_done.load(Ordering::Acquire) >= config.publishers;
            // A fixed count may be sent before the window ends: stop there.
            let counted = config.messages.is_some();
            wait_until(window.stop_ns, || {
                control.abort.load(Ordering::Acquire) || (counted && publishers_done())
            });
            wait_until(deadline, publishers_done);
            // A fixed count is for a broker run under a tool (valgrind), which can
            // be quiet for seconds: there only the whole drain ends the wait.
            let idle = if counted { config.drain() } else { DRAIN_IDLE };
            drain(control, plan.copies_per_message, idle, deadline);
        }
    }
    let end_ns = now_ns();
    let broker_after = config.broker_pid.map(procstat::sample).transpose()?;
    let generator_after = procstat::sample(std::process::id()).ok();
    Ok(Coordinated {
        window,
        end_ns,
        samples: [
            broker_before,
            broker_after,
            generator_before,
            generator_after,
        ],
    })
}

/// Waits until every copy of every sent message arrived, nothing arrived for
/// `idle`, or `deadline`.
fn drain(control: &Control, copies: u64, idle: Duration, deadline: u64) {
    let mut last = control.delivered.load(Ordering::Acquire);
    let mut last_change = now_ns();
    wait_until(deadline, || {
        let delivered = control.delivered.load(Ordering::Acquire);
        let expected = control.sent.load(Ordering::Acquire) * copies;
        if delivered != last {
            last = delivered;
            last_change = now_ns();
        }
        delivered >= expected || now_ns() - last_change > clock::as_ns(idle)
    });
}

/// Polls `done` until it holds (true) or `deadline` passes (false).
fn wait_until(deadline_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if now_ns() >= deadline_ns {
            return false;
        }
        std::thread::sleep(CONTROL_POLL.min(clock::until(deadline_ns)));
    }
}

/// The body of one generator thread.
async fn thread_main(
    config: Arc<Config>,
    control: Arc<Control>,
    topic_root: Arc<str>,
    links: Vec<LinkPlan>,
) -> Result<ThreadStats> {
    let ctx = Rc::new(ThreadCtx {
        handshakes: glommio::sync::Semaphore::new(config.connect_concurrency as u64),
        config,
        control,
        topic_root,
        stats: RefCell::new(ThreadStats::new()?),
        start: Signal::default(),
        finish: Signal::default(),
    });
    // One task queue for all. A separate subscriber queue with more shares and
    // Latency::Matters was measured (pairs, QoS 1, max rate): it cut throughput by
    // 3-5x and added multi-second stalls. Every link yields after each batch instead.
    let watcher = glommio::spawn_local(watch(Rc::clone(&ctx)));
    let (storm_links, links): (Vec<_>, Vec<_>) = links
        .into_iter()
        .partition(|l| matches!(l.role, Role::Storm { .. }));
    let storm = glommio::spawn_local(storm::run(Rc::clone(&ctx), storm_links));
    let tasks: Vec<_> = links
        .into_iter()
        .map(|link| glommio::spawn_local(run_link(Rc::clone(&ctx), link)))
        .collect();
    for task in tasks {
        task.await;
    }
    storm.await;
    watcher.await;
    let ctx = Rc::try_unwrap(ctx).map_err(|_| anyhow!("a task of the thread outlived it"))?;
    Ok(ctx.stats.into_inner())
}

/// Turns [`Control`] changes into this thread's signals.
async fn watch(ctx: Rc<ThreadCtx>) {
    loop {
        if !ctx.start.is_set() && ctx.control.start_ns.load(Ordering::Acquire) != 0 {
            ctx.start.raise();
        }
        if ctx.control.finish.load(Ordering::Acquire) {
            ctx.start.raise();
            ctx.finish.raise();
            return;
        }
        glommio::timer::sleep(CONTROL_POLL).await;
    }
}

async fn run_link(ctx: Rc<ThreadCtx>, plan: LinkPlan) {
    let result = match &plan.role {
        Role::RetainedPublisher { topics } => {
            load::run_retained_publisher(&ctx, &plan, *topics).await
        }
        _ => load::run(&ctx, &plan).await,
    };
    if let Err(e) = result {
        ctx.control.error(format!("{}: {e:#}", plan.client_id));
    }
}
