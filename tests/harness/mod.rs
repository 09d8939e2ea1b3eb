//! The harness shared by the end-to-end tests.
//!
//! - [`Broker`]: starts the real `ringmq` binary on `127.0.0.1:0`, reads the
//!   one `ringmq ready ...` line from its stdout to learn the port, keeps its
//!   stderr tail to print when a test fails, and kills it on drop.
//! - [`V4`] and [`V5`]: rumqttc clients (MQTT 3.1.1 and 5.0) whose event loop
//!   runs in a task that forwards every event to an inbox, with waits that
//!   always have a deadline.
//! - [`raw`]: a byte-exact client for what rumqttc cannot send or show.
//! - [`shard_of`] / [`Broker::id_on`]: the broker's client-id-to-shard rule, so a
//!   test can place a publisher and a subscriber on different shards on purpose.
//!
//! Every wait is bounded by [`WAIT`]; a test proves that something does NOT
//! happen by watching for [`QUIET`].

#![allow(dead_code)]

pub mod raw;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Upper bound of every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches to show that something does not happen.
pub const QUIET: Duration = Duration::from_millis(400);
/// How long the broker may take to print its ready line.
pub const READY_WAIT: Duration = Duration::from_secs(20);
/// Lines of broker stderr kept to print when a test fails.
const STDERR_TAIL_LINES_MAX: usize = 200;

// ---------------------------------------------------------------- shards

/// FNV-1a, 64 bit, as the broker uses to place client ids on shards.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard that owns `client_id` in a broker with `shards` shards.
pub fn shard_of(client_id: &str, shards: u32) -> u32 {
    (fnv1a64(client_id.as_bytes()) % u64::from(shards)) as u32
}

/// A client id starting with `prefix` that the broker places on `shard`.
pub fn id_on_shard(prefix: &str, shard: u32, shards: u32) -> String {
    assert!(shard < shards);
    (0..10_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| shard_of(id, shards) == shard)
        .expect("no id found for that shard")
}

// ---------------------------------------------------------------- broker

/// A running `ringmq` process, killed on drop.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    pub listeners: Vec<SocketAddr>,
    pub shards: u32,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Broker {
    /// A broker with two shards and default limits.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// A broker with `args` added to `--listen 127.0.0.1:0 --shards 2`
    /// (an explicit `--shards` or `--listen` in `args` replaces the default).
    pub fn start_with(args: &[&str]) -> Broker {
        Broker::start_with_env(args, &[])
    }

    /// Like [`Broker::start_with`], with `RINGMQ_*` environment variables; a
    /// setting given by variable is not also given by a default flag.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        // The test's own environment must not configure the broker.
        for (key, _) in std::env::vars() {
            if key.starts_with("RINGMQ_") {
                cmd.env_remove(key);
            }
        }
        let given =
            |flag: &str, var: &str| args.contains(&flag) || envs.iter().any(|(k, _)| *k == var);
        if !given("--listen", "RINGMQ_LISTEN") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !given("--shards", "RINGMQ_SHARDS") {
            cmd.args(["--shards", "2"]);
        }
        if !given("--log", "RINGMQ_LOG") {
            cmd.args(["--log", "info"]);
        }
        cmd.args(args);
        cmd.envs(envs.iter().copied());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the ringmq binary");

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        {
            let tail = Arc::clone(&stderr_tail);
            let stderr = child.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL_LINES_MAX {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }

        // The stdout reader keeps draining after the ready line so the broker
        // can never block on a full pipe.
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std_mpsc::channel::<String>();
        {
            let lines = Arc::clone(&stdout_lines);
            let stdout = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    if line.starts_with("ringmq ready") {
                        let _ = ready_tx.send(line);
                    }
                }
            });
        }

        let mut broker = Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            shards: 0,
            stdout_lines,
            stderr_tail,
        };
        let line = match ready_rx.recv_timeout(READY_WAIT) {
            Ok(line) => line,
            Err(_) => {
                let status = broker.child.try_wait().ok().flatten();
                panic!(
                    "ringmq did not print its ready line within {READY_WAIT:?} (exit status: {status:?});\n\
                     stdout: {:?}\nstderr tail:\n{}",
                    broker.stdout_lines(),
                    broker.stderr_tail()
                );
            }
        };
        let (listeners, shards) =
            parse_ready_line(&line).unwrap_or_else(|e| panic!("bad ready line {line:?}: {e}"));
        broker.addr = listeners[0];
        broker.listeners = listeners;
        broker.shards = shards;
        broker
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client id with `prefix` that this broker places on `shard`.
    pub fn id_on(&self, prefix: &str, shard: u32) -> String {
        id_on_shard(prefix, shard, self.shards)
    }

    /// The broker's resident set size, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status of the broker");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn v4_options(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1024 * 1024, 1024 * 1024);
        o
    }

    pub fn v5_options(&self, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", self.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// A connected MQTT 3.1.1 client with a clean session.
    pub async fn v4(&self, client_id: &str) -> V4 {
        V4::connect(self.v4_options(client_id)).await
    }

    /// A connected MQTT 5.0 client with a clean start.
    pub async fn v5(&self, client_id: &str) -> V5 {
        V5::connect(self.v5_options(client_id)).await
    }

    /// A byte-level connection that has not sent anything yet.
    pub async fn raw(&self, version: u8) -> raw::RawClient {
        raw::RawClient::open(self.port(), version).await
    }

    /// A byte-level connection after a successful CONNECT.
    pub async fn raw_connected(&self, connect: &raw::Connect) -> raw::RawClient {
        raw::RawClient::connect_ok(self.port(), connect).await
    }

    /// Proves the broker still serves: a fresh v5 pair on two shards
    /// exchanges a QoS 1 message.
    pub async fn assert_healthy(&self, tag: &str) {
        let sub_id = self.id_on(&format!("health-sub-{tag}"), 0);
        let pub_id = self.id_on(&format!("health-pub-{tag}"), 1 % self.shards);
        let topic = format!("health/{tag}");
        let mut sub = self.v5(&sub_id).await;
        sub.subscribe(&topic, Qos::AtLeastOnce).await;
        let mut publisher = self.v5(&pub_id).await;
        publisher
            .publish(&topic, Qos::AtLeastOnce, false, "alive")
            .await;
        let p = sub.recv().await;
        assert_eq!(p.payload.as_ref(), b"alive");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- ringmq (pid {}) stderr tail ----\n{}\n---- end of ringmq stderr ----",
                self.pid(),
                self.stderr_tail()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `ringmq ready listeners=A:P[,A:P...] shards=N`.
pub fn parse_ready_line(line: &str) -> Result<(Vec<SocketAddr>, u32), String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("ringmq") || words.next() != Some("ready") {
        return Err("does not start with `ringmq ready`".into());
    }
    let mut listeners = None;
    let mut shards = None;
    for word in words {
        if let Some(list) = word.strip_prefix("listeners=") {
            let addrs: Result<Vec<SocketAddr>, _> = list.split(',').map(str::parse).collect();
            listeners = Some(addrs.map_err(|e| format!("listeners: {e}"))?);
        } else if let Some(n) = word.strip_prefix("shards=") {
            shards = Some(n.parse::<u32>().map_err(|e| format!("shards: {e}"))?);
        }
    }
    let listeners = listeners.ok_or("no listeners=")?;
    if listeners.is_empty() || listeners.iter().any(|a| a.port() == 0) {
        return Err("listeners must have real, non-zero ports".into());
    }
    let shards = shards.ok_or("no shards=")?;
    if shards == 0 {
        return Err("shards=0".into());
    }
    Ok((listeners, shards))
}

// ---------------------------------------------------------------- inbox

/// Events forwarded from a client's event loop, with a backlog of incoming
/// packets that a wait skipped over (so waiting for a PUBACK never loses a
/// PUBLISH that arrived first).
struct Inbox<E, X> {
    rx: mpsc::UnboundedReceiver<Result<E, X>>,
    backlog: VecDeque<E>,
    ended: Option<X>,
}

enum Waited<E> {
    Got(E),
    TimedOut,
    Ended,
}

impl<E, X> Inbox<E, X> {
    /// Waits for the first event (backlog first) that `pick` accepts; other
    /// events are kept in the backlog if `keep` says so.
    async fn wait(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&E) -> bool,
        keep: impl Fn(&E) -> bool,
    ) -> Waited<E> {
        if let Some(i) = self.backlog.iter().position(&mut pick) {
            return Waited::Got(self.backlog.remove(i).expect("index in range"));
        }
        if self.ended.is_some() {
            return Waited::Ended;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Waited::TimedOut,
                Ok(None) => return Waited::Ended,
                Ok(Some(Err(e))) => {
                    self.ended = Some(e);
                    return Waited::Ended;
                }
                Ok(Some(Ok(ev))) => {
                    if pick(&ev) {
                        return Waited::Got(ev);
                    }
                    if keep(&ev) {
                        self.backlog.push_back(ev);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- MQTT 3.1.1 client

/// QoS of the MQTT 5.0 client.
pub use rumqttc::v5::mqttbytes::QoS as Qos;
pub use rumqttc::QoS as Qos311;

/// An MQTT 3.1.1 rumqttc client whose event loop runs in its own task.
/// Dropping it closes the TCP connection without a DISCONNECT.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    pub connack: rumqttc::ConnAck,
    inbox: Inbox<rumqttc::Event, rumqttc::ConnectionError>,
    task: JoinHandle<()>,
    pub client_id: String,
}

fn is_incoming_v4(ev: &rumqttc::Event) -> bool {
    matches!(ev, rumqttc::Event::Incoming(_))
}

impl V4 {
    /// Connects and panics unless the broker accepts.
    pub async fn connect(options: rumqttc::MqttOptions) -> V4 {
        let id = options.client_id();
        match V4::try_connect(options).await {
            Ok(c) => c,
            Err(e) => panic!("MQTT 3.1.1 connect of {id:?} failed: {e}"),
        }
    }

    /// Connects and returns the error if the broker refuses or closes.
    pub async fn try_connect(options: rumqttc::MqttOptions) -> Result<V4, String> {
        let client_id = options.client_id();
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 256);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        for ev in eventloop.state.events.drain(..) {
                            let _ = tx.send(Ok(ev));
                        }
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut inbox = Inbox {
            rx,
            backlog: VecDeque::new(),
            ended: None,
        };
        let waited = inbox
            .wait(
                WAIT,
                |ev| matches!(ev, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))),
                is_incoming_v4,
            )
            .await;
        match waited {
            Waited::Got(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(connack))) => Ok(V4 {
                client,
                connack,
                inbox,
                task,
                client_id,
            }),
            Waited::Got(_) => unreachable!("picked only CONNACK"),
            Waited::TimedOut => {
                task.abort();
                Err("timed out waiting for CONNACK".into())
            }
            Waited::Ended => {
                task.abort();
                Err(inbox
                    .ended
                    .map_or("event loop ended".into(), |e| e.to_string()))
            }
        }
    }

    async fn expect_incoming(
        &mut self,
        what: &str,
        pick: impl FnMut(&rumqttc::Event) -> bool,
    ) -> rumqttc::Packet {
        match self.inbox.wait(WAIT, pick, is_incoming_v4).await {
            Waited::Got(rumqttc::Event::Incoming(p)) => p,
            Waited::Got(other) => panic!(
                "{}: expected an incoming {what}, got {other:?}",
                self.client_id
            ),
            Waited::TimedOut => panic!(
                "{}: timed out after {WAIT:?} waiting for {what}",
                self.client_id
            ),
            Waited::Ended => panic!(
                "{}: connection ended while waiting for {what}: {:?}",
                self.client_id,
                self.inbox.ended.as_ref().map(ToString::to_string)
            ),
        }
    }

    async fn expect_outgoing(
        &mut self,
        what: &str,
        pick: impl FnMut(&rumqttc::Event) -> bool,
    ) -> rumqttc::Outgoing {
        match self.inbox.wait(WAIT, pick, is_incoming_v4).await {
            Waited::Got(rumqttc::Event::Outgoing(o)) => o,
            Waited::Got(other) => panic!(
                "{}: expected an outgoing {what}, got {other:?}",
                self.client_id
            ),
            Waited::TimedOut => panic!("{}: timed out waiting to send {what}", self.client_id),
            Waited::Ended => panic!(
                "{}: connection ended while sending {what}: {:?}",
                self.client_id,
                self.inbox.ended.as_ref().map(ToString::to_string)
            ),
        }
    }

    /// SUBSCRIBE one filter and wait for the SUBACK; returns its return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: Qos311,
    ) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        match self
            .expect_incoming("SUBACK", |e| {
                matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))
            })
            .await
        {
            rumqttc::Packet::SubAck(s) => s.return_codes,
            _ => unreachable!(),
        }
    }

    /// SUBSCRIBE and assert the broker granted `qos`.
    pub async fn subscribe_ok(&mut self, filter: &str, qos: Qos311) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(
            codes,
            vec![rumqttc::SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter}"
        );
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        self.expect_incoming("UNSUBACK", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(_)))
        })
        .await;
    }

    /// PUBLISH and, for QoS 1 and 2, wait until the broker acknowledged it
    /// (PUBACK, or PUBCOMP).
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: Qos311,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("queue PUBLISH");
        let out = self
            .expect_outgoing("PUBLISH", |e| {
                matches!(e, rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)))
            })
            .await;
        let rumqttc::Outgoing::Publish(pkid) = out else {
            unreachable!()
        };
        match qos {
            Qos311::AtMostOnce => {}
            Qos311::AtLeastOnce => {
                self.expect_incoming("PUBACK", |e| {
                    matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) if a.pkid == pkid)
                })
                .await;
            }
            Qos311::ExactlyOnce => {
                self.expect_incoming("PUBCOMP", |e| {
                    matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubComp(a)) if a.pkid == pkid)
                })
                .await;
            }
        }
    }

    /// The next PUBLISH received.
    pub async fn recv(&mut self) -> rumqttc::Publish {
        match self
            .expect_incoming("PUBLISH", |e| {
                matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)))
            })
            .await
        {
            rumqttc::Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// Asserts no PUBLISH arrives within `quiet`.
    pub async fn expect_no_publish(&mut self, quiet: Duration) {
        let waited = self
            .inbox
            .wait(
                quiet,
                |e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))),
                is_incoming_v4,
            )
            .await;
        if let Waited::Got(ev) = waited {
            panic!("{}: expected no PUBLISH, got {ev:?}", self.client_id);
        }
    }

    /// Waits until the broker ends the connection; returns the error text.
    pub async fn expect_closed(&mut self) -> String {
        match self.inbox.wait(WAIT, |_| false, |_| false).await {
            Waited::Ended => self
                .inbox
                .ended
                .as_ref()
                .map_or("event loop ended".into(), ToString::to_string),
            Waited::TimedOut => panic!(
                "{}: the broker did not close the connection",
                self.client_id
            ),
            Waited::Got(_) => unreachable!(),
        }
    }

    /// Sends DISCONNECT, then closes the socket.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.expect_outgoing("DISCONNECT", |e| {
            matches!(e, rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))
        })
        .await;
    }
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- MQTT 5.0 client

use rumqttc::v5::mqttbytes::v5 as mq5;
use rumqttc::v5::{Event as Ev5, Incoming as In5};

fn is_incoming_v5(ev: &Ev5) -> bool {
    matches!(ev, Ev5::Incoming(_))
}

/// An MQTT 5.0 rumqttc client whose event loop runs in its own task.
/// Dropping it closes the TCP connection without a DISCONNECT.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub connack: mq5::ConnAck,
    inbox: Inbox<Ev5, rumqttc::v5::ConnectionError>,
    task: JoinHandle<()>,
    pub client_id: String,
    /// Publishes queued by [`V5::publish_nowait`] whose "sent" events have
    /// not been consumed yet; [`V5::publish_with`] skips them to find its own.
    unmatched_publishes: usize,
}

impl V5 {
    /// Connects and panics unless the broker accepts.
    pub async fn connect(options: rumqttc::v5::MqttOptions) -> V5 {
        let id = options.client_id();
        match V5::try_connect(options).await {
            Ok(c) => c,
            Err(e) => panic!("MQTT 5 connect of {id:?} failed: {e}"),
        }
    }

    /// Connects; on refusal returns the rumqttc error.
    pub async fn try_connect(
        options: rumqttc::v5::MqttOptions,
    ) -> Result<V5, rumqttc::v5::ConnectionError> {
        let client_id = options.client_id();
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 256);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        for ev in eventloop.state.events.drain(..) {
                            let _ = tx.send(Ok(ev));
                        }
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut inbox = Inbox {
            rx,
            backlog: VecDeque::new(),
            ended: None,
        };
        let waited = inbox
            .wait(
                WAIT,
                |ev| matches!(ev, Ev5::Incoming(In5::ConnAck(_))),
                is_incoming_v5,
            )
            .await;
        match waited {
            Waited::Got(Ev5::Incoming(In5::ConnAck(connack))) => Ok(V5 {
                client,
                connack,
                inbox,
                task,
                client_id,
                unmatched_publishes: 0,
            }),
            Waited::Got(_) => unreachable!("picked only CONNACK"),
            Waited::TimedOut => {
                task.abort();
                panic!("{client_id}: timed out waiting for CONNACK")
            }
            Waited::Ended => {
                task.abort();
                Err(inbox.ended.expect("the event loop reports why it ended"))
            }
        }
    }

    async fn expect_event(&mut self, what: &str, pick: impl FnMut(&Ev5) -> bool) -> Ev5 {
        match self.inbox.wait(WAIT, pick, is_incoming_v5).await {
            Waited::Got(ev) => ev,
            Waited::TimedOut => panic!(
                "{}: timed out after {WAIT:?} waiting for {what}",
                self.client_id
            ),
            Waited::Ended => panic!(
                "{}: connection ended while waiting for {what}: {:?}",
                self.client_id,
                self.inbox.ended.as_ref().map(ToString::to_string)
            ),
        }
    }

    /// SUBSCRIBE one filter with its options and properties; returns the SUBACK.
    pub async fn subscribe_filters(
        &mut self,
        filters: Vec<mq5::Filter>,
        props: Option<mq5::SubscribeProperties>,
    ) -> mq5::SubAck {
        match props {
            Some(p) => self.client.subscribe_many_with_properties(filters, p).await,
            None => self.client.subscribe_many(filters).await,
        }
        .expect("queue SUBSCRIBE");
        match self
            .expect_event("SUBACK", |e| matches!(e, Ev5::Incoming(In5::SubAck(_))))
            .await
        {
            Ev5::Incoming(In5::SubAck(s)) => s,
            _ => unreachable!(),
        }
    }

    /// SUBSCRIBE and assert the broker granted `qos`.
    pub async fn subscribe(&mut self, filter: &str, qos: Qos) {
        let ack = self
            .subscribe_filters(vec![mq5::Filter::new(filter, qos)], None)
            .await;
        assert_eq!(
            ack.return_codes,
            vec![mq5::SubscribeReasonCode::Success(qos)],
            "{}: SUBACK for {filter}",
            self.client_id
        );
    }

    pub async fn unsubscribe(&mut self, filter: &str) -> Vec<mq5::UnsubAckReason> {
        self.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        match self
            .expect_event("UNSUBACK", |e| matches!(e, Ev5::Incoming(In5::UnsubAck(_))))
            .await
        {
            Ev5::Incoming(In5::UnsubAck(u)) => u.reasons,
            _ => unreachable!(),
        }
    }

    /// PUBLISH with properties and, for QoS 1 and 2, wait for the broker's
    /// PUBACK or PUBCOMP.
    pub async fn publish_with(
        &mut self,
        topic: &str,
        qos: Qos,
        retain: bool,
        payload: impl Into<Vec<u8>>,
        props: Option<mq5::PublishProperties>,
    ) {
        let payload: Vec<u8> = payload.into();
        match props {
            Some(p) => {
                self.client
                    .publish_with_properties(topic, qos, retain, payload, p)
                    .await
            }
            None => self.client.publish(topic, qos, retain, payload).await,
        }
        .expect("queue PUBLISH");
        // rumqttc sends requests in order: the first "sent" events belong to
        // earlier publish_nowait calls.
        for _ in 0..std::mem::take(&mut self.unmatched_publishes) {
            self.expect_event("to send an earlier PUBLISH", |e| {
                matches!(e, Ev5::Outgoing(rumqttc::Outgoing::Publish(_)))
            })
            .await;
        }
        let ev = self
            .expect_event("to send PUBLISH", |e| {
                matches!(e, Ev5::Outgoing(rumqttc::Outgoing::Publish(_)))
            })
            .await;
        let Ev5::Outgoing(rumqttc::Outgoing::Publish(pkid)) = ev else {
            unreachable!()
        };
        match qos {
            Qos::AtMostOnce => {}
            Qos::AtLeastOnce => {
                self.expect_event(
                    "PUBACK",
                    |e| matches!(e, Ev5::Incoming(In5::PubAck(a)) if a.pkid == pkid),
                )
                .await;
            }
            Qos::ExactlyOnce => {
                self.expect_event(
                    "PUBCOMP",
                    |e| matches!(e, Ev5::Incoming(In5::PubComp(a)) if a.pkid == pkid),
                )
                .await;
            }
        }
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        qos: Qos,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.publish_with(topic, qos, retain, payload, None).await;
    }

    /// Queues a PUBLISH without waiting for it to be sent or acknowledged
    /// (rumqttc keeps the order and its own inflight window).
    pub async fn publish_nowait(
        &mut self,
        topic: &str,
        qos: Qos,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("queue PUBLISH");
        self.unmatched_publishes += 1;
    }

    /// The next PUBLISH received.
    pub async fn recv(&mut self) -> mq5::Publish {
        match self
            .expect_event("PUBLISH", |e| matches!(e, Ev5::Incoming(In5::Publish(_))))
            .await
        {
            Ev5::Incoming(In5::Publish(p)) => p,
            _ => unreachable!(),
        }
    }

    /// The next PUBLISH if one arrives within `timeout`.
    pub async fn try_recv(&mut self, timeout: Duration) -> Option<mq5::Publish> {
        match self
            .inbox
            .wait(
                timeout,
                |e| matches!(e, Ev5::Incoming(In5::Publish(_))),
                is_incoming_v5,
            )
            .await
        {
            Waited::Got(Ev5::Incoming(In5::Publish(p))) => Some(p),
            Waited::Got(_) => unreachable!(),
            Waited::TimedOut => None,
            Waited::Ended => panic!(
                "{}: connection ended while waiting for PUBLISH: {:?}",
                self.client_id,
                self.inbox.ended.as_ref().map(ToString::to_string)
            ),
        }
    }

    /// Asserts no PUBLISH arrives within `quiet`.
    pub async fn expect_no_publish(&mut self, quiet: Duration) {
        let waited = self
            .inbox
            .wait(
                quiet,
                |e| matches!(e, Ev5::Incoming(In5::Publish(_))),
                is_incoming_v5,
            )
            .await;
        if let Waited::Got(ev) = waited {
            panic!("{}: expected no PUBLISH, got {ev:?}", self.client_id);
        }
    }

    /// Waits for a DISCONNECT from the broker and returns its reason code.
    ///
    /// rumqttc 0.25 parses a DISCONNECT only if it carries a property length:
    /// the short form `E0 01 <reason>` (valid MQTT 5.0) reaches it as a bare
    /// close. Tests that check a reason code use [`raw::RawClient`].
    pub async fn expect_server_disconnect(&mut self) -> mq5::DisconnectReasonCode {
        let waited = self
            .inbox
            .wait(
                WAIT,
                |e| matches!(e, Ev5::Incoming(In5::Disconnect(_))),
                is_incoming_v5,
            )
            .await;
        match waited {
            Waited::Got(Ev5::Incoming(In5::Disconnect(d))) => d.reason_code,
            Waited::Got(_) => unreachable!(),
            Waited::TimedOut => panic!(
                "{}: no DISCONNECT from the broker within {WAIT:?}",
                self.client_id
            ),
            Waited::Ended => panic!(
                "{}: connection ended without a DISCONNECT packet: {:?}",
                self.client_id,
                self.inbox.ended.as_ref().map(ToString::to_string)
            ),
        }
    }

    /// Waits until the broker ends the connection; returns the error text.
    pub async fn expect_closed(&mut self) -> String {
        match self.inbox.wait(WAIT, |_| false, |_| false).await {
            Waited::Ended => self
                .inbox
                .ended
                .as_ref()
                .map_or("event loop ended".into(), ToString::to_string),
            Waited::TimedOut => panic!(
                "{}: the broker did not close the connection",
                self.client_id
            ),
            Waited::Got(_) => unreachable!(),
        }
    }

    /// Sends DISCONNECT (reason 0x00), then closes the socket.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.expect_event("to send DISCONNECT", |e| {
            matches!(e, Ev5::Outgoing(rumqttc::Outgoing::Disconnect))
        })
        .await;
    }
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The topic of a v5 PUBLISH as text.
pub fn topic_of(p: &mq5::Publish) -> String {
    String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic")
}

/// v5 options for a persistent session: clean start off and the given expiry.
pub fn persistent_v5(
    broker: &Broker,
    client_id: &str,
    session_expiry_s: u32,
) -> rumqttc::v5::MqttOptions {
    let mut o = broker.v5_options(client_id);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(session_expiry_s));
    o
}

/// v3.1.1 options with clean_session = false.
pub fn persistent_v4(broker: &Broker, client_id: &str) -> rumqttc::MqttOptions {
    let mut o = broker.v4_options(client_id);
    o.set_clean_session(false);
    o
}
