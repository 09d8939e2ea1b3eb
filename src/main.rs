//! The `ringmq` binary: read the settings (defaults < file < environment < flags),
//! check that io_uring can be used, start one shard per core and the admin
//! endpoint, say when it listens (stdout, and systemd when run as a notify
//! service), reload on SIGHUP and shut down gracefully on SIGTERM or SIGINT.
//!
//! Layout: `config` (the settings and their checks), `access` (listeners, TLS,
//! passwords and ACL from the settings), `logging` (stderr, with a
//! filter a reload can replace), `reload` (SIGHUP), `systemd` (readiness
//! notification), `passwd` (the `passwd` subcommand: password file entries).

mod access;
mod config;
mod logging;
mod passwd;
mod reload;
mod systemd;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringmq_admin::{AdminConfig, AdminError, AdminServer};
use ringmq_net::PortReservation;
use ringmq_shard::{BrokerConfig, BrokerHandle, Security};
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use config::Settings;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core MQTT 3.1.1 / 5.0 broker on io_uring.
///
/// With no flags and no file it listens on 0.0.0.0:1883 with one shard per core.
/// Settings come from defaults, then `--config FILE`, then `RINGMQ_<KEY>`
/// environment variables, then flags, each overriding the ones before.
#[derive(Clone, Debug, Parser, Serialize)]
#[command(name = "ringmq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    #[serde(skip)]
    command: Option<Command>,

    /// TOML configuration file (keys as in `--print-config`).
    #[arg(long, env = "RINGMQ_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Print the effective configuration, defaults included, and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,

    /// Address to listen on, HOST:PORT; repeat for several. Port 0 picks a free
    /// port (shown on the ready line).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    listen: Vec<String>,

    /// Shards (executor threads); 0 or absent: one per core, or per CPU of --cpus.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<u16>,

    /// CPUs to pin shards to, one per shard, e.g. `0,2-3`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,

    /// Log filter: a level (error, warn, info, debug, trace) or directives such as
    /// `info,ringmq_shard=debug`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,

    /// Log line format: text or json.
    #[arg(long, value_parser = ["text", "json"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,

    /// Client connections across all shards; more are refused at CONNECT.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,

    /// Largest packet a client may send, in bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_packet_size: Option<u32>,

    /// QoS 1/2 messages in flight per client, each way (the receive maximum).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_inflight: Option<u16>,

    /// Messages queued per session while offline or while its window is full.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queued_messages: Option<usize>,

    /// Levels a topic name or filter may have.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_topic_levels: Option<u16>,

    /// Subscriptions one client may hold.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_subscriptions_per_client: Option<usize>,

    /// Longest keep alive a client may use, in seconds; 0: the client's own.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_keep_alive: Option<u16>,

    /// Seconds a new connection has to send CONNECT.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<u64>,

    /// Seconds between `$SYS/broker/...` publications; 0 disables them.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sys_interval: Option<u64>,

    /// Longest session expiry granted, in seconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_session_expiry: Option<u32>,

    /// Seconds shutdown waits for queued messages to reach connected clients.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_timeout: Option<u64>,

    /// Microseconds an idle shard polls before it sleeps (0: at once); for shards
    /// pinned to cores of their own.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_spin_us: Option<u64>,

    #[command(flatten)]
    #[serde(skip_serializing_if = "AdminFlags::is_empty")]
    admin: AdminFlags,
}

/// Flags of the `[admin]` table. The token has none: a flag would show it to
/// every user of the host (`ps`); set it in the file or in RINGMQ_ADMIN__TOKEN.
#[derive(Clone, Debug, Args, Serialize)]
struct AdminFlags {
    /// Admin HTTP endpoint (metrics, probes, JSON API), HOST:PORT; empty: off.
    #[arg(id = "admin_listen", long = "admin-listen", value_name = "HOST:PORT")]
    #[serde(rename = "listen", skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
}

impl AdminFlags {
    fn is_empty(&self) -> bool {
        self.listen.is_none()
    }
}

#[derive(Clone, Debug, Subcommand)]
enum Command {
    /// Check a configuration file on its own (defaults filled in) and exit: 0 when
    /// it is valid, 1 with the key, the bad value and what is allowed when not.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Add or update a user of a password file (argon2id hash), or delete one.
    Passwd(passwd::PasswdArgs),
}

fn broker_config(
    settings: &Settings,
    security: Arc<Security>,
) -> anyhow::Result<(BrokerConfig, Vec<PortReservation>)> {
    let mut reservations = Vec::new();
    let mut bind = |addr: SocketAddr| -> anyhow::Result<SocketAddr> {
        if addr.port() != 0 {
            return Ok(addr);
        }
        let reservation =
            PortReservation::new(addr).with_context(|| format!("cannot bind {addr}"))?;
        let addr = reservation.addr();
        reservations.push(reservation);
        Ok(addr)
    };
    let mut plain = Vec::new();
    for addr in settings.listen_addrs()? {
        plain.push(bind(addr)?);
    }
    let mut extra = Vec::new();
    for addr in settings.listener_addrs()? {
        extra.push(bind(addr)?);
    }
    let config = BrokerConfig {
        listeners: access::listeners(settings, &plain, &extra)?,
        security,
        shards: settings.shard_count()?,
        cpus: settings.cpu_list()?,
        limits: settings.limits(),
        sys_interval: (settings.sys_interval > 0)
            .then(|| Duration::from_secs(settings.sys_interval)),
        shutdown_timeout: Duration::from_secs(settings.shutdown_timeout),
        idle_spin: Duration::from_micros(settings.idle_spin_us),
    };
    Ok((config, reservations))
}

/// Starts the admin endpoint unless it is off. The default address may be taken
/// (Prometheus itself listens on 9090): then the broker runs without it and says
/// so; an address chosen on purpose that cannot be had stops the start.
fn start_admin(settings: &Settings, handle: BrokerHandle) -> anyhow::Result<Option<AdminServer>> {
    let Some(listen) = settings.admin_addr()? else {
        return Ok(None);
    };
    let config = AdminConfig {
        listen,
        token: Some(settings.admin.token.clone()).filter(|t| !t.is_empty()),
        limits: settings.limits(),
        node_id: settings.node_id(),
        advertise: settings.advertised().ok().flatten(),
    };
    match ringmq_admin::serve(config, handle) {
        Ok(server) => Ok(Some(server)),
        Err(AdminError::Bind { addr, source })
            if settings.admin.listen == config::ADMIN_LISTEN_DEFAULT
                && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(
                %addr,
                "the default admin address is taken; running without the admin endpoint \
                 (set admin.listen to another address, or to \"\" to turn it off)"
            );
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

fn serve(settings: Settings, load: reload::Load) -> anyhow::Result<()> {
    let log_filter = logging::init(&settings)?;
    // Before any shard starts: a SIGHUP's default action would end the process.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("cannot install signal handlers")?;
    let security = Security::new(
        access::rules(&settings)?,
        Some(access::verifier(&settings)?),
    );
    let (config, reservations) = broker_config(&settings, Arc::clone(&security))?;
    ringmq_net::probe::check(config.shards).context("io_uring is not usable")?;
    let listeners: Vec<String> = config.listeners.iter().map(|l| l.url()).collect();
    let listener_configs = config.listeners.clone();
    let shards = config.shards;
    let node_id = settings.node_id();
    let running = ringmq_shard::start(config)?;
    let stopper = running.stopper();
    let admin = start_admin(&settings, running.handle())?.map(Arc::new);
    let admin_addr = admin.as_ref().map(|admin| admin.addr());
    let mut reloader = reload::Reloader::new(
        load,
        settings,
        reload::Running {
            handle: running.handle(),
            security,
            listeners: listener_configs,
        },
        log_filter,
        admin.clone(),
    );
    std::thread::Builder::new()
        .name("ringmq-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reloader.reload();
                    continue;
                }
                tracing::info!(signal, "shutting down");
                systemd::notify("STOPPING=1");
                stopper.stop();
                break;
            }
        })
        .context("cannot start the signal thread")?;
    for reservation in reservations {
        reservation.release();
    }
    let mut ready = format!(
        "ringmq ready listeners={} shards={shards}",
        listeners.join(",")
    );
    if let Some(addr) = admin_addr {
        ready.push_str(&format!(" admin={addr}"));
    }
    let admin_shown = admin_addr.map_or_else(|| "off".to_owned(), |addr| addr.to_string());
    tracing::info!(%node_id, listeners = %listeners.join(","), shards, admin = %admin_shown, "ringmq ready");
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")?;
    stdout.flush()?;
    drop(stdout);
    systemd::notify("READY=1");
    running.wait();
    if let Some(admin) = admin {
        admin.shutdown();
    }
    tracing::info!("stopped");
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Passwd(args)) = &cli.command {
        return passwd::run(args);
    }
    if let Some(Command::CheckConfig { file }) = &cli.command {
        let settings = config::load(
            Some(file),
            false,
            &std::collections::BTreeMap::<String, String>::new(),
        )?;
        // The files the settings name must load too.
        access::rules(&settings)?;
        access::tls_configs(&settings)?;
        println!("{}: valid", file.display());
        return Ok(());
    }
    let settings = config::load(cli.config.as_deref(), true, &cli)?;
    if cli.print_config {
        print!("{}", settings.to_toml());
        return Ok(());
    }
    let file = cli.config.clone();
    let load: reload::Load = Box::new(move || config::load(file.as_deref(), true, &cli));
    serve(settings, load)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringmq: {err:#}");
            ExitCode::FAILURE
        }
    }
}
