//! The `ringmq` binary: read flags (each also an environment variable), check that
//! io_uring can be used, start one shard per core, and say when it listens.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ringmq_net::PortReservation;
use ringmq_shard::{BrokerConfig, Limits};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core MQTT 3.1.1 / 5.0 broker on io_uring.
///
/// With no flags it listens on 0.0.0.0:1883 with one shard per available core.
#[derive(Debug, Parser)]
#[command(name = "ringmq", version, about, long_about = None)]
struct Flags {
    /// Address to listen on, HOST:PORT; repeat for several. Port 0 picks a free port
    /// (printed on the ready line).
    #[arg(
        long,
        env = "RINGMQ_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:1883"
    )]
    listen: Vec<String>,

    /// Number of shards (executor threads); default: one per available core, or one
    /// per CPU of --cpus.
    #[arg(long, env = "RINGMQ_SHARDS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    shards: Option<u16>,

    /// CPUs to pin shards to, one per shard, e.g. `0,2-3`. Without it shards are not
    /// pinned.
    #[arg(long, env = "RINGMQ_CPUS", value_parser = parse_cpu_list)]
    cpus: Option<CpuList>,

    /// Log filter: a level (error, warn, info, debug, trace) or per-module
    /// directives such as `info,ringmq_shard=debug`.
    #[arg(long, env = "RINGMQ_LOG", default_value = "info")]
    log: String,

    /// Client connections across all shards; more are refused at CONNECT.
    #[arg(long, env = "RINGMQ_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,

    /// Largest packet a client may send, in bytes (MQTT 5 clients are told).
    #[arg(long, env = "RINGMQ_MAX_PACKET_SIZE", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(64..=268_435_460))]
    max_packet_size: u32,

    /// QoS 1/2 messages in flight per client, each way (the receive maximum).
    #[arg(long, env = "RINGMQ_MAX_INFLIGHT", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_inflight: u16,

    /// Messages queued per session while its client is offline or its window full.
    #[arg(long, env = "RINGMQ_MAX_QUEUED_MESSAGES", default_value_t = 1000)]
    max_queued_messages: usize,

    /// Levels a topic name or filter may have.
    #[arg(long, env = "RINGMQ_MAX_TOPIC_LEVELS", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=ringmq_core::limits::TOPIC_LEVELS_MAX as i64))]
    max_topic_levels: u16,

    /// Subscriptions one client may hold.
    #[arg(
        long,
        env = "RINGMQ_MAX_SUBSCRIPTIONS_PER_CLIENT",
        default_value_t = 1000
    )]
    max_subscriptions_per_client: usize,

    /// Longest keep alive a client may use, in seconds (MQTT 5 clients are told);
    /// 0 accepts whatever the client asks, including none.
    #[arg(long, env = "RINGMQ_MAX_KEEP_ALIVE", default_value_t = 0)]
    max_keep_alive: u16,

    /// Seconds a new connection has to send CONNECT.
    #[arg(long, env = "RINGMQ_CONNECT_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    connect_timeout: u64,

    /// Seconds between `$SYS/broker/...` publications; 0 disables them.
    #[arg(long, env = "RINGMQ_SYS_INTERVAL", default_value_t = 10)]
    sys_interval: u64,

    /// Longest session expiry granted, in seconds; MQTT 3.1.1 persistent sessions
    /// live this long offline.
    #[arg(long, env = "RINGMQ_MAX_SESSION_EXPIRY", default_value_t = 86_400)]
    max_session_expiry: u32,
}

#[derive(Clone, Debug)]
struct CpuList(Vec<usize>);

/// `0,2-3` -> [0, 2, 3].
fn parse_cpu_list(text: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first
            .parse()
            .map_err(|_| format!("`{part}` is not a CPU number or range"))?;
        let last: usize = last
            .parse()
            .map_err(|_| format!("`{part}` is not a CPU number or range"))?;
        if last < first {
            return Err(format!("range `{part}` ends before it starts"));
        }
        cpus.extend(first..=last);
    }
    if cpus.is_empty() {
        return Err("the CPU list is empty".into());
    }
    let mut sorted = cpus.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cpus.len() {
        return Err("a CPU appears twice".into());
    }
    Ok(CpuList(cpus))
}

fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("--listen {listen}: not a HOST:PORT address"))?
        .next()
        .with_context(|| format!("--listen {listen}: resolves to no address"))
}

fn config(flags: &Flags) -> anyhow::Result<(BrokerConfig, Vec<PortReservation>)> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = flags.cpus.clone().map(|list| list.0).unwrap_or_default();
    let shards = match (flags.shards, cpus.len()) {
        (Some(shards), 0) => usize::from(shards),
        (Some(shards), pinned) if pinned < usize::from(shards) => {
            bail!("--shards {shards} needs {shards} CPUs but --cpus lists {pinned}")
        }
        (Some(shards), _) => usize::from(shards),
        (None, 0) => available,
        (None, pinned) => pinned,
    };
    let mut listeners = Vec::new();
    let mut reservations = Vec::new();
    for listen in &flags.listen {
        let addr = resolve(listen)?;
        if addr.port() == 0 {
            let reservation = PortReservation::new(addr)
                .with_context(|| format!("--listen {listen}: cannot bind"))?;
            listeners.push(reservation.addr());
            reservations.push(reservation);
        } else {
            listeners.push(addr);
        }
    }
    let limits = Limits {
        connections_max: flags.max_connections,
        packet_size_max: flags.max_packet_size,
        inflight_max: flags.max_inflight,
        queued_messages_max: flags.max_queued_messages,
        topic_levels_max: usize::from(flags.max_topic_levels),
        subscriptions_per_client_max: flags.max_subscriptions_per_client,
        keep_alive_max_s: flags.max_keep_alive,
        connect_timeout: Duration::from_secs(flags.connect_timeout),
        session_expiry_max_s: flags.max_session_expiry,
        ..Limits::default()
    };
    let config = BrokerConfig {
        listeners,
        shards,
        cpus,
        limits,
        sys_interval: (flags.sys_interval > 0).then(|| Duration::from_secs(flags.sys_interval)),
    };
    Ok((config, reservations))
}

fn run(flags: Flags) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&flags.log)
        .with_context(|| format!("--log {}: not a log level or filter", flags.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (config, reservations) = config(&flags)?;
    ringmq_net::probe::check(config.shards).context("io_uring is not usable")?;
    let listeners: Vec<String> = config.listeners.iter().map(ToString::to_string).collect();
    let shards = config.shards;
    let running = ringmq_shard::start(config)?;
    for reservation in reservations {
        reservation.release();
    }
    tracing::info!(listeners = %listeners.join(","), shards, "ringmq ready");
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "ringmq ready listeners={} shards={shards}",
        listeners.join(",")
    )?;
    stdout.flush()?;
    drop(stdout);
    running.wait();
    Ok(())
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringmq: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_and_refuse_nonsense() {
        assert_eq!(parse_cpu_list("0,2-3").map(|c| c.0), Ok(vec![0, 2, 3]));
        assert_eq!(parse_cpu_list(" 5 ").map(|c| c.0), Ok(vec![5]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("1,1").is_err());
    }
}
