//! Command-line flags, defined once and validated in one place into a [`Config`].
//!
//! Every limit of the tool is a `*_MAX` constant here, so what the tool refuses and
//! why is written down next to the flag that sets it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ringmq_core::packet::{ProtocolVersion, QoS};
use serde::Serialize;

use crate::stamp::{SEQ_MAX, STAMP_BYTES};

/// Largest payload: well under the broker's default maximum packet size (1 MiB).
pub const PAYLOAD_BYTES_MAX: usize = 512 * 1024;
/// Generator threads.
pub const THREADS_MAX: usize = 256;
/// Connections of one run, over all hosts and source addresses.
pub const CONNECTIONS_MAX: usize = 1_000_000;
/// Ephemeral ports one client address gets towards one destination (about 28k on
/// Linux's default range); past it a run needs more `--source-addrs`.
pub const PORTS_PER_SOURCE_MAX: usize = 28_000;
/// Longest measured run and warm-up.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Longest wait for messages still in flight after the publishers stop.
pub const DRAIN_MAX: Duration = Duration::from_secs(600);
/// Highest rate of one publisher: beyond it a schedule is max rate in all but name.
pub const RATE_PER_PUBLISHER_MAX: f64 = 10_000_000.0;
/// Longest busy-poll before a generator thread sleeps.
pub const SPIN_US_MAX: u64 = 10_000;
/// Retained topics of the `retained` scenario.
pub const TOPICS_MAX: usize = 1_000_000;
/// Messages of one fixed-count run (`--messages`), over all publishers.
pub const MESSAGES_MAX: u64 = 1_000_000_000;
// Even a single publisher's share must fit its sequence numbers.
const _: () = assert!(MESSAGES_MAX <= SEQ_MAX as u64);

#[derive(Debug, Parser)]
#[command(
    name = "ringmq-bench",
    version,
    about = "Thread-per-core MQTT load generator: throughput, HDR latency percentiles, loss/dup/reorder counts",
    after_help = "Examples:\n  ringmq-bench pairs --pairs 1000 --qos 1 --rate 10 --duration 10 --host 127.0.0.1:1883\n  ringmq-bench fan-out --subscribers 100 --total-rate 1000 --json\n  ringmq-bench connect --connections 20000 --source-addrs 127.0.0.2,127.0.0.3"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: ScenarioFlags,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioFlags {
    /// N publisher/subscriber pairs, each pair its own topic (the IoT ingest shape).
    Pairs(Flags),
    /// P publishers -> 1 or a few subscribers of a wildcard.
    FanIn(Flags),
    /// 1 (or P) publishers -> S subscribers of one topic.
    FanOut(Flags),
    /// P publishers -> a `$share/<group>/...` group of S subscribers.
    Shared(Flags),
    /// Connection storm: connections per second and time to CONNACK.
    Connect(Flags),
    /// R retained topics, then S wildcard subscribers: time until each has all R.
    Retained(Flags),
    /// Not a load: a markdown table (median and spread per label) of `--json` reports.
    Summarize {
        /// Files with one JSON report each (as written by `--json`).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
    },
    /// Not a load: the comparison of a results folder of `scripts/perf-test.sh`
    /// (scenario x broker, the targets of issue #4, cost per message) as markdown.
    Compare {
        /// The folder (with raw/*.json and, if measured, cost/*.json).
        #[arg(long, value_name = "DIR")]
        results: std::path::PathBuf,
    },
    /// Not a load: SVG plots of a results folder into DIR/plots/ (throughput bars per
    /// case and broker, latency percentile curves per broker).
    Plot {
        /// The folder (with raw/*.json).
        #[arg(long, value_name = "DIR")]
        results: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Flags {
    /// MQTT protocol version: 3 (3.1.1) or 5.
    #[arg(long, default_value = "5", value_name = "3|5")]
    pub mqtt: u8,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_name = "0|1|2")]
    pub qos: u8,
    /// Payload size; the first 16 bytes carry the send time, publisher and sequence.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,
    /// Messages per second of each publisher (open loop). Without a rate: max rate.
    #[arg(long, value_name = "MSGS_PER_S", conflicts_with = "total_rate")]
    pub rate: Option<f64>,
    /// Messages per second of all publishers together (open loop).
    #[arg(long, value_name = "MSGS_PER_S")]
    pub total_rate: Option<f64>,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub warmup: f64,
    /// Fixed count: publishers send N messages in all (split evenly), then stop;
    /// `--duration` becomes the longest the sending may take. For cost per message
    /// (instructions, system calls) by the difference of two counts.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Most seconds to wait, after the publishers stop, for messages in flight.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub drain: f64,
    /// Publisher/subscriber pairs (pairs).
    #[arg(long, value_name = "N")]
    pub pairs: Option<usize>,
    /// Publishers (fan-in, fan-out, shared).
    #[arg(long, value_name = "N")]
    pub publishers: Option<usize>,
    /// Subscribers (fan-in, fan-out, shared, retained).
    #[arg(long, value_name = "N")]
    pub subscribers: Option<usize>,
    /// Connections to open (connect).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// New connections per second over all threads (connect); default: as fast as
    /// `--connect-concurrency` allows.
    #[arg(long, value_name = "CONN_PER_S")]
    pub connect_rate: Option<f64>,
    /// Handshakes in progress at once per thread (all scenarios' set-up).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub connect_concurrency: usize,
    /// Retained topics (retained).
    #[arg(long, value_name = "N")]
    pub topics: Option<usize>,
    /// Unacknowledged QoS 1/2 messages per publisher; the broker's Receive Maximum
    /// lowers it.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub inflight: u16,
    /// Keep alive asked for in CONNECT, seconds; 0 turns it off. No PINGREQ is sent,
    /// so it must outlast warm-up + duration + drain. For brokers that refuse 0
    /// (rumqttd).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub keep_alive: u16,
    /// Clean sessions (the default).
    #[arg(long, conflicts_with = "persistent")]
    pub clean: bool,
    /// Persistent sessions: stable client ids, session expiry of one hour (MQTT 5).
    #[arg(long)]
    pub persistent: bool,
    /// Broker address; repeat for a cluster (connections are spread over them).
    #[arg(
        long = "host",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:1883"
    )]
    pub hosts: Vec<String>,
    /// Local addresses to bind client sockets to (past 28k connections per address).
    #[arg(long, value_delimiter = ',', value_name = "IP,IP")]
    pub source_addrs: Vec<IpAddr>,
    /// CPUs to pin generator threads to, one thread each, e.g. `1` or `2-3,6`.
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Microseconds a generator thread busy-polls before it sleeps: lower latency and
    /// cheaper wake-ups on a dedicated core; its CPU share then reads near 100%.
    #[arg(long, default_value_t = 0, value_name = "MICROS")]
    pub spin_us: u64,
    /// Generator threads when not pinned with `--cpus`.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// Topic prefix; a run id follows it so runs never see each other's messages.
    #[arg(long, default_value = "bench", value_name = "PREFIX")]
    pub topic_prefix: String,
    /// Shared subscription group name (shared).
    #[arg(long, default_value = "bench", value_name = "NAME")]
    pub group: String,
    /// Print one JSON object with the configuration and results on stdout.
    #[arg(long)]
    pub json: bool,
    /// A name for this run, kept in the JSON (`summarize` groups runs by it).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Broker process to read CPU time and peak RSS of (from /proc).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
}

/// Which load shape a run makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Pairs,
    FanIn,
    FanOut,
    Shared,
    Connect,
    Retained,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pairs => "pairs",
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Shared => "shared",
            Scenario::Connect => "connect",
            Scenario::Retained => "retained",
        }
    }
}

/// How publishers pace themselves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "msgs_per_s")]
pub enum Rate {
    /// As fast as the socket and (QoS 1/2) the inflight window allow.
    Max,
    /// Open loop: each publisher has a fixed schedule.
    PerPublisher(f64),
}

/// Clean or persistent sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    Clean,
    Persistent,
}

/// A validated run configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub scenario: Scenario,
    #[serde(serialize_with = "version_number")]
    pub mqtt: ProtocolVersion,
    #[serde(serialize_with = "qos_number")]
    pub qos: QoS,
    pub payload_bytes: usize,
    pub rate: Rate,
    /// `--total-rate` as given (the per-publisher rate is derived from it).
    pub total_rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_s: f64,
    /// `--messages`: a fixed count over all publishers instead of a measured window.
    pub messages: Option<u64>,
    pub publishers: usize,
    pub subscribers: usize,
    /// `connect`: connections to open; `retained`: topics.
    pub connections: usize,
    pub topics: usize,
    pub connect_rate: Option<f64>,
    pub connect_concurrency: usize,
    pub inflight: u16,
    pub keep_alive_s: u16,
    pub session: SessionKind,
    pub hosts: Vec<SocketAddr>,
    pub source_addrs: Vec<IpAddr>,
    pub cpus: Option<Vec<usize>>,
    pub threads: usize,
    pub spin_us: u64,
    pub topic_prefix: String,
    pub group: String,
    pub json: bool,
    pub label: Option<String>,
    pub broker_pid: Option<u32>,
}

fn version_number<S: serde::Serializer>(v: &ProtocolVersion, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(match v {
        ProtocolVersion::V311 => 3,
        ProtocolVersion::V5 => 5,
    })
}

fn qos_number<S: serde::Serializer>(q: &QoS, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(q.as_u8())
}

impl Config {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain_s)
    }

    /// Messages publisher `index` sends in a fixed-count run: an even share of
    /// `--messages`, the first publishers taking one more of the remainder.
    pub fn quota(&self, index: u32) -> Option<u64> {
        let total = self.messages?;
        let publishers = self.publishers.max(1) as u64;
        let extra = u64::from(u64::from(index) < total % publishers);
        Some(total / publishers + extra)
    }

    /// Connections the run opens.
    pub fn connection_count(&self) -> usize {
        match self.scenario {
            Scenario::Connect => self.connections,
            Scenario::Retained => 1 + self.subscribers,
            _ => self.publishers + self.subscribers,
        }
    }
}

impl ScenarioFlags {
    fn split(&self) -> Result<(Scenario, &Flags)> {
        Ok(match self {
            ScenarioFlags::Pairs(f) => (Scenario::Pairs, f),
            ScenarioFlags::FanIn(f) => (Scenario::FanIn, f),
            ScenarioFlags::FanOut(f) => (Scenario::FanOut, f),
            ScenarioFlags::Shared(f) => (Scenario::Shared, f),
            ScenarioFlags::Connect(f) => (Scenario::Connect, f),
            ScenarioFlags::Retained(f) => (Scenario::Retained, f),
            ScenarioFlags::Summarize { .. }
            | ScenarioFlags::Compare { .. }
            | ScenarioFlags::Plot { .. } => bail!("not a load scenario"),
        })
    }

    /// Checks every flag and their combination; the error says which flag and why.
    pub fn validate(&self) -> Result<Config> {
        let (scenario, f) = self.split()?;
        let mqtt = match f.mqtt {
            3 => ProtocolVersion::V311,
            5 => ProtocolVersion::V5,
            other => bail!("--mqtt {other}: use 3 (MQTT 3.1.1) or 5"),
        };
        let qos = QoS::from_u8(f.qos).ok_or_else(|| anyhow!("--qos {}: use 0, 1 or 2", f.qos))?;
        if f.payload < STAMP_BYTES || f.payload > PAYLOAD_BYTES_MAX {
            bail!(
                "--payload {}: must be {STAMP_BYTES}..={PAYLOAD_BYTES_MAX} bytes (the first {STAMP_BYTES} carry the stamp)",
                f.payload
            );
        }
        let duration_s = seconds("--duration", f.duration, DURATION_MAX, false)?;
        let warmup_s = seconds("--warmup", f.warmup, DURATION_MAX, true)?;
        let drain_s = seconds("--drain", f.drain, DRAIN_MAX, true)?;
        let (publishers, subscribers, connections, topics) = counts(scenario, f)?;
        let rate = match (f.rate, f.total_rate) {
            (Some(_), Some(_)) => bail!("--rate and --total-rate exclude each other"),
            (Some(r), None) => Rate::PerPublisher(positive_rate("--rate", r)?),
            (None, Some(r)) => {
                let total = positive_rate("--total-rate", r)?;
                Rate::PerPublisher(total / publishers.max(1) as f64)
            }
            (None, None) => Rate::Max,
        };
        if let Rate::PerPublisher(r) = rate {
            if r > RATE_PER_PUBLISHER_MAX {
                bail!("a rate of {r} msgs/s per publisher is over {RATE_PER_PUBLISHER_MAX}: leave the rate out for max rate");
            }
        }
        if let Some(n) = f.messages {
            if matches!(scenario, Scenario::Connect | Scenario::Retained) {
                bail!("--messages applies to the pairs, fan-in, fan-out and shared scenarios");
            }
            if n == 0 || n > MESSAGES_MAX {
                bail!("--messages {n}: must be 1..={MESSAGES_MAX}");
            }
        }
        if f.connect_rate.is_some() && scenario != Scenario::Connect {
            bail!("--connect-rate applies to the connect scenario only");
        }
        let connect_rate = f
            .connect_rate
            .map(|r| positive_rate("--connect-rate", r))
            .transpose()?;
        if f.connect_concurrency == 0 {
            bail!("--connect-concurrency must be at least 1");
        }
        if f.inflight == 0 {
            bail!("--inflight must be at least 1");
        }
        let run_s = warmup_s + duration_s + drain_s;
        if f.keep_alive > 0 && f64::from(f.keep_alive) <= run_s {
            bail!(
                "--keep-alive {}: the generator sends no PINGREQ, so it must be 0 or longer than warm-up + duration + drain ({run_s} s)",
                f.keep_alive
            );
        }
        let hosts = f
            .hosts
            .iter()
            .map(|h| resolve(h))
            .collect::<Result<Vec<_>>>()?;
        let cpus = f.cpus.as_deref().map(parse_cpu_list).transpose()?;
        let threads = match &cpus {
            Some(list) => list.len(),
            None => f.threads,
        };
        if threads == 0 || threads > THREADS_MAX {
            bail!("--threads {threads}: must be 1..={THREADS_MAX}");
        }
        if f.spin_us > SPIN_US_MAX {
            bail!("--spin-us {}: at most {SPIN_US_MAX}", f.spin_us);
        }
        if f.topic_prefix.is_empty() || f.topic_prefix.contains(['+', '#']) {
            bail!("--topic-prefix must be non-empty and free of wildcards");
        }
        if f.group.is_empty() || f.group.contains(['/', '+', '#']) {
            bail!("--group must be non-empty and free of '/', '+' and '#'");
        }
        let config = Config {
            scenario,
            mqtt,
            qos,
            payload_bytes: f.payload,
            rate,
            total_rate: f.total_rate,
            duration_s,
            warmup_s,
            drain_s,
            messages: f.messages,
            publishers,
            subscribers,
            connections,
            topics,
            connect_rate,
            connect_concurrency: f.connect_concurrency,
            inflight: f.inflight,
            keep_alive_s: f.keep_alive,
            session: if f.persistent {
                SessionKind::Persistent
            } else {
                SessionKind::Clean
            },
            hosts,
            source_addrs: f.source_addrs.clone(),
            cpus,
            threads,
            spin_us: f.spin_us,
            topic_prefix: f.topic_prefix.clone(),
            group: f.group.clone(),
            json: f.json,
            label: f.label.clone(),
            broker_pid: f.broker_pid,
        };
        check_ports(&config)?;
        Ok(config)
    }
}

/// Publisher, subscriber, connection and topic counts, with per-scenario defaults;
/// a count that the scenario does not use is an error rather than silently ignored.
fn counts(scenario: Scenario, f: &Flags) -> Result<(usize, usize, usize, usize)> {
    let refuse = |name: &str, given: bool| -> Result<()> {
        if given {
            bail!(
                "--{name} does not apply to the {} scenario",
                scenario.name()
            );
        }
        Ok(())
    };
    let (publishers, subscribers, connections, topics) = match scenario {
        Scenario::Pairs => {
            refuse("publishers", f.publishers.is_some())?;
            refuse("subscribers", f.subscribers.is_some())?;
            let pairs = f.pairs.unwrap_or(100);
            (pairs, pairs, 0, 0)
        }
        Scenario::FanIn | Scenario::FanOut | Scenario::Shared => {
            refuse("pairs", f.pairs.is_some())?;
            let (p, s) = match scenario {
                Scenario::FanIn => (100, 1),
                Scenario::FanOut => (1, 100),
                _ => (10, 10),
            };
            (f.publishers.unwrap_or(p), f.subscribers.unwrap_or(s), 0, 0)
        }
        Scenario::Connect => {
            refuse("pairs", f.pairs.is_some())?;
            refuse("publishers", f.publishers.is_some())?;
            refuse("subscribers", f.subscribers.is_some())?;
            (0, 0, f.connections.unwrap_or(1000), 0)
        }
        Scenario::Retained => {
            refuse("pairs", f.pairs.is_some())?;
            refuse("publishers", f.publishers.is_some())?;
            (1, f.subscribers.unwrap_or(10), 0, f.topics.unwrap_or(1000))
        }
    };
    if scenario != Scenario::Connect {
        refuse("connections", f.connections.is_some())?;
    }
    if scenario != Scenario::Retained {
        refuse("topics", f.topics.is_some())?;
    }
    let total = match scenario {
        Scenario::Connect => connections,
        Scenario::Retained => {
            if topics == 0 || topics > TOPICS_MAX {
                bail!("--topics {topics}: must be 1..={TOPICS_MAX}");
            }
            subscribers + 1
        }
        _ => publishers + subscribers,
    };
    if scenario != Scenario::Connect && (publishers == 0 || subscribers == 0) {
        bail!(
            "a {} run needs at least one publisher and one subscriber",
            scenario.name()
        );
    }
    if total == 0 || total > CONNECTIONS_MAX {
        bail!("{total} connections: must be 1..={CONNECTIONS_MAX}");
    }
    if publishers > u32::MAX as usize {
        bail!("too many publishers");
    }
    Ok((publishers, subscribers, connections, topics))
}

/// Refuses a run that needs more ephemeral ports than its source addresses have.
fn check_ports(config: &Config) -> Result<()> {
    let sources = config.source_addrs.len().max(1);
    let per_destination = config
        .connection_count()
        .div_ceil(config.hosts.len().max(1));
    // Bound before connect, a socket's port is taken for every destination at once.
    let per_source = if config.source_addrs.is_empty() {
        per_destination
    } else {
        config.connection_count().div_ceil(sources)
    };
    if per_source > PORTS_PER_SOURCE_MAX {
        bail!(
            "{} connections need about {per_source} ports per client address, over the ~{PORTS_PER_SOURCE_MAX} available: add --source-addrs 127.0.0.2,127.0.0.3,... (and raise `ulimit -n`)",
            config.connection_count()
        );
    }
    Ok(())
}

fn seconds(flag: &str, value: f64, max: Duration, zero_ok: bool) -> Result<f64> {
    let ok =
        value.is_finite() && value >= 0.0 && (zero_ok || value > 0.0) && value <= max.as_secs_f64();
    if !ok {
        let low = if zero_ok { "0" } else { "more than 0" };
        bail!(
            "{flag} {value}: must be {low} and at most {} s",
            max.as_secs()
        );
    }
    Ok(value)
}

fn positive_rate(flag: &str, value: f64) -> Result<f64> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} {value}: must be a positive number of messages per second");
    }
    Ok(value)
}

fn resolve(host: &str) -> Result<SocketAddr> {
    host.to_socket_addrs()
        .with_context(|| format!("--host {host}: not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("--host {host}: no address"))
}

/// Parses a CPU list such as `0,2-3`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || anyhow!("--cpus {text}: `{part}` is not a CPU number or range");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
        if cpus.len() > THREADS_MAX {
            bail!("--cpus {text}: more than {THREADS_MAX} CPUs");
        }
    }
    if cpus.is_empty() {
        bail!("--cpus is empty");
    }
    let mut sorted = cpus.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cpus.len() {
        bail!("--cpus {text}: a CPU is listed twice");
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(args: &str) -> Result<Config> {
        let argv = std::iter::once("ringmq-bench").chain(args.split_whitespace());
        Cli::try_parse_from(argv)
            .map_err(|e| anyhow!("{e}"))?
            .scenario
            .validate()
    }

    fn error(args: &str) -> String {
        format!("{:#}", config(args).expect_err("should be refused"))
    }

    #[test]
    fn defaults_per_scenario() {
        let c = config("pairs").unwrap();
        assert_eq!((c.publishers, c.subscribers), (100, 100));
        assert_eq!(c.rate, Rate::Max);
        assert_eq!(c.qos, QoS::AtMostOnce);
        assert_eq!(c.mqtt, ProtocolVersion::V5);
        assert_eq!(c.threads, 1);
        let c = config("fan-out").unwrap();
        assert_eq!((c.publishers, c.subscribers), (1, 100));
        let c = config("fan-in").unwrap();
        assert_eq!((c.publishers, c.subscribers), (100, 1));
        let c = config("connect --connections 10").unwrap();
        assert_eq!(c.connection_count(), 10);
        let c = config("retained --topics 5 --subscribers 2").unwrap();
        assert_eq!((c.topics, c.connection_count()), (5, 3));
    }

    #[test]
    fn payload_must_hold_the_stamp() {
        assert!(error("pairs --payload 15").contains("--payload 15"));
        assert!(config("pairs --payload 16").is_ok());
        assert!(error("pairs --payload 100000000").contains("--payload"));
    }

    #[test]
    fn protocol_and_qos_are_checked() {
        assert!(error("pairs --mqtt 4").contains("--mqtt 4"));
        assert!(error("pairs --qos 3").contains("--qos 3"));
        assert_eq!(
            config("pairs --mqtt 3").unwrap().mqtt,
            ProtocolVersion::V311
        );
        assert_eq!(config("pairs --qos 2").unwrap().qos, QoS::ExactlyOnce);
    }

    #[test]
    fn rates() {
        assert!(config("pairs --rate 10 --total-rate 100").is_err());
        assert!(error("pairs --rate 0").contains("--rate"));
        assert!(error("pairs --rate=-5").contains("--rate"));
        assert!(error("pairs --rate NaN").contains("--rate"));
        let c = config("fan-in --publishers 4 --total-rate 1000").unwrap();
        assert_eq!(c.rate, Rate::PerPublisher(250.0));
        let c = config("pairs --pairs 3 --rate 7").unwrap();
        assert_eq!(c.rate, Rate::PerPublisher(7.0));
        assert!(error("pairs --connect-rate 5").contains("connect scenario"));
    }

    #[test]
    fn counts_that_do_not_apply_are_refused() {
        assert!(error("pairs --publishers 3").contains("--publishers"));
        assert!(error("fan-in --pairs 3").contains("--pairs"));
        assert!(error("connect --subscribers 3").contains("--subscribers"));
        assert!(error("pairs --topics 3").contains("--topics"));
        assert!(error("fan-out --subscribers 0").contains("at least one"));
    }

    #[test]
    fn times_are_bounded() {
        assert!(error("pairs --duration 0").contains("--duration"));
        assert!(error("pairs --duration 99999").contains("--duration"));
        assert!(config("pairs --warmup 0").is_ok());
        assert!(error("pairs --warmup=-1").contains("--warmup"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("1,1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(config("pairs --cpus 1").unwrap().threads, 1);
        assert_eq!(config("pairs --cpus 0-1").unwrap().cpus, Some(vec![0, 1]));
    }

    #[test]
    fn too_many_connections_for_one_address_names_the_fix() {
        assert!(error("pairs --pairs 20000").contains("--source-addrs"));
        assert!(config("pairs --pairs 20000 --source-addrs 127.0.0.2,127.0.0.3").is_ok());
        assert!(config("pairs --pairs 20000 --host 127.0.0.1:1 --host 127.0.0.1:2").is_ok());
    }

    #[test]
    fn fixed_counts_are_shared_out_and_bounded() {
        let c = config("fan-in --publishers 3 --messages 10").unwrap();
        assert_eq!(
            (c.quota(0), c.quota(1), c.quota(2)),
            (Some(4), Some(3), Some(3))
        );
        assert_eq!(config("pairs").unwrap().quota(0), None);
        assert!(error("pairs --messages 0").contains("--messages 0"));
        assert!(error("connect --messages 5").contains("--messages applies"));
        assert!(error("pairs --pairs 1 --messages 2000000000").contains("--messages 2000000000"));
    }

    #[test]
    fn keep_alive_must_outlast_the_run() {
        assert_eq!(config("pairs").unwrap().keep_alive_s, 0);
        assert_eq!(
            config("pairs --keep-alive 3600").unwrap().keep_alive_s,
            3600
        );
        // 2 + 10 + 10 s by default.
        assert!(error("pairs --keep-alive 22").contains("--keep-alive 22"));
        assert!(config("pairs --keep-alive 23").is_ok());
    }

    #[test]
    fn hosts_and_sessions() {
        assert!(error("pairs --host nowhere").contains("--host nowhere"));
        let c = config("pairs --persistent --host 127.0.0.1:1 --host 127.0.0.1:2").unwrap();
        assert_eq!(c.session, SessionKind::Persistent);
        assert_eq!(c.hosts.len(), 2);
        assert!(config("pairs --clean --persistent").is_err());
    }
}
