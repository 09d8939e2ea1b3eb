//! The broker's settings: defaults, then a TOML file (`--config`), then environment
//! variables (`RINGMQ_<KEY>`, nested keys joined by `__`), then flags; each layer
//! overrides the ones before. Unknown keys are errors in every layer, and every value
//! is checked once, here, with a message naming the key, the value and what is
//! allowed.
//!
//! A reload (SIGHUP) reads the same layers again; [`changes`] says what differs and
//! [`applies`] whether each key takes effect at once or after a restart.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ringmq_core::limits::{PACKET_SIZE_MAX, TOPIC_LEVELS_MAX};
use ringmq_shard::Limits;
use serde::{Deserialize, Deserializer, Serialize};

/// Every key of the configuration file. Names match the flags (`--max-inflight` is
/// `max_inflight`) and the environment (`RINGMQ_MAX_INFLIGHT`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Addresses to listen on, `HOST:PORT`; port 0 picks a free one.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// Shards (executor threads); 0 means one per available core, or one per CPU of
    /// `cpus`.
    pub shards: u16,
    /// CPUs to pin shards to, one per shard, e.g. `"0,2-3"`; empty: not pinned.
    #[serde(deserialize_with = "text")]
    pub cpus: String,
    /// Log filter: a level or directives such as `info,ringmq_shard=debug`.
    pub log: String,
    /// Log line format.
    pub log_format: LogFormat,
    pub max_connections: usize,
    pub max_packet_size: u32,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    pub max_topic_levels: u16,
    pub max_subscriptions_per_client: usize,
    pub max_topic_aliases: u16,
    /// Cap on a client's keep alive in seconds; 0: the client's own.
    pub max_keep_alive: u16,
    /// Bytes buffered for one connection before QoS 0 messages to it are dropped.
    pub max_outbound_bytes: usize,
    /// Messages a shard-to-shard ring holds before senders wait.
    pub ring_capacity: usize,
    /// Sessions, connected or offline, across all shards.
    pub max_sessions: usize,
    /// Retained topics kept across all shards.
    pub max_retained_messages: usize,
    /// What a connected subscriber's full queue does to QoS 1/2 messages for it:
    /// "drop" them (counted) or "backpressure" (hold their publishers until it drains).
    pub queue_full_policy: QueueFullPolicy,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
    /// Seconds a write may make no progress before the connection is closed.
    pub write_timeout: u64,
    /// Seconds between `$SYS` publications; 0 disables them.
    pub sys_interval: u64,
    /// Longest session expiry granted, in seconds.
    pub max_session_expiry: u32,
    /// Seconds shutdown waits for queued messages to reach connected clients.
    pub shutdown_timeout: u64,
    /// Microseconds an idle shard keeps polling before it sleeps; 0: it sleeps at
    /// once. Trades CPU for latency on cores the shards own.
    pub idle_spin_us: u64,
    /// This broker's name among its peers, in logs, the admin API and metrics;
    /// empty: the host name. Letters, digits, `.`, `_`, `-`; at most 64.
    pub node_id: String,
    /// `HOST:PORT` other nodes are told to reach this one at (a listener's address
    /// as seen from them, never 0.0.0.0); empty: none advertised.
    pub advertise: String,
    /// The admin HTTP endpoint: metrics, health and readiness, the JSON API.
    pub admin: AdminSettings,
    /// Authentication and authorization for every listener.
    pub auth: AuthSettings,
    /// Listeners beyond the plain ones of `listen`: TLS, WebSocket, WebSocket over
    /// TLS, or plain TCP with their own auth, ACL and connection limit.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerSettings>,
}

/// The `[auth]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `user:hash` lines (see `ringmq passwd`); empty: no password file.
    pub password_file: String,
    /// Who may publish and subscribe where; empty: everyone everywhere.
    pub acl_file: String,
    /// Clients without a user name (or certificate identity): `auto` allows them only
    /// when no password file is set.
    pub allow_anonymous: Anonymous,
    /// Accept `$sha256$` and `$plain$` entries in the password file (warned at start).
    pub allow_insecure_hashes: bool,
    /// Failed CONNECTs from one address within `failed_login_window` before its
    /// further CONNECTs are refused until the window passes; 0: no limit.
    pub failed_login_max: u32,
    /// Seconds a failed CONNECT counts against its address.
    pub failed_login_window: u64,
    /// Threads that check password hashes, apart from the shards.
    pub hash_threads: usize,
    /// CONNECTs waiting for a hash check; past it CONNECT is refused as busy.
    pub hash_queue_max: usize,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            password_file: String::new(),
            acl_file: String::new(),
            allow_anonymous: Anonymous::Auto,
            allow_insecure_hashes: false,
            failed_login_max: 10,
            failed_login_window: 60,
            hash_threads: 2,
            hash_queue_max: 1024,
        }
    }
}

/// Whether clients without credentials get in: `"auto"`, `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anonymous {
    /// Allowed unless a password file is set (the `[auth]` default); on a listener:
    /// as `[auth]` says.
    Auto,
    Allow,
    Deny,
}

impl Serialize for Anonymous {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Anonymous::Auto => serializer.serialize_str("auto"),
            Anonymous::Allow => serializer.serialize_bool(true),
            Anonymous::Deny => serializer.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for Anonymous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Anonymous, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Flag(bool),
            Text(String),
        }
        match Given::deserialize(deserializer)? {
            Given::Flag(true) => Ok(Anonymous::Allow),
            Given::Flag(false) => Ok(Anonymous::Deny),
            Given::Text(text) => match text.as_str() {
                "auto" => Ok(Anonymous::Auto),
                "true" => Ok(Anonymous::Allow),
                "false" => Ok(Anonymous::Deny),
                other => Err(serde::de::Error::custom(format!(
                    "allow_anonymous is true, false or \"auto\", not {other:?}"
                ))),
            },
        }
    }
}

/// One `[[listener]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    /// `tcp`, `tls`, `ws` (WebSocket) or `wss` (WebSocket over TLS).
    pub kind: ListenerKind,
    /// `HOST:PORT`; port 0 picks a free one.
    pub listen: String,
    /// PEM certificate chain and private key (`tls`, `wss`).
    #[serde(default)]
    pub cert: String,
    #[serde(default)]
    pub key: String,
    /// PEM CA certificates client certificates must chain to (`tls`, `wss`).
    #[serde(default)]
    pub client_ca: String,
    /// Client certificates: `none`, `optional` or `required` (needs `client_ca`).
    #[serde(default)]
    pub client_cert: ClientCertSetting,
    /// Take the user name from the client certificate (`cn` or `san`) instead of
    /// the CONNECT: the certificate is the credential. `none`: the CONNECT's.
    #[serde(default)]
    pub username_from: UsernameFrom,
    /// The HTTP path of the WebSocket upgrade (`ws`, `wss`).
    #[serde(default = "mqtt_path")]
    pub path: String,
    /// Overrides `[auth] allow_anonymous` for this listener.
    #[serde(default = "anonymous_auto")]
    pub allow_anonymous: Anonymous,
    /// Apply `[auth] acl_file` to this listener's clients (false: they may publish
    /// and subscribe anywhere; for trusted networks only).
    #[serde(default = "yes")]
    pub acl: bool,
    /// Connections this listener takes at once; 0: only `max_connections` bounds it.
    #[serde(default)]
    pub max_connections: usize,
}

fn mqtt_path() -> String {
    "/mqtt".into()
}

fn anonymous_auto() -> Anonymous {
    Anonymous::Auto
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl ListenerKind {
    fn has_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    fn has_websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertSetting {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameFrom {
    #[default]
    None,
    Cn,
    San,
}

/// The `[admin]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// `HOST:PORT` of the admin endpoint; empty: no admin endpoint.
    pub listen: String,
    /// Bearer token every admin route but `/health` and `/ready` requires; empty:
    /// none, allowed only when `listen` is a loopback address.
    pub token: String,
}

/// Where the admin endpoint listens unless told otherwise.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9090";

impl Default for AdminSettings {
    fn default() -> AdminSettings {
        AdminSettings {
            listen: ADMIN_LISTEN_DEFAULT.into(),
            token: String::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueFullPolicy {
    Drop,
    Backpressure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Settings {
        let limits = Limits::default();
        Settings {
            listen: vec!["0.0.0.0:1883".into()],
            shards: 0,
            cpus: String::new(),
            log: "info".into(),
            log_format: LogFormat::Text,
            max_connections: limits.connections_max,
            max_packet_size: limits.packet_size_max,
            max_inflight: limits.inflight_max,
            max_queued_messages: limits.queued_messages_max,
            max_topic_levels: limits.topic_levels_max as u16,
            max_subscriptions_per_client: limits.subscriptions_per_client_max,
            max_topic_aliases: limits.topic_alias_max,
            max_keep_alive: limits.keep_alive_max_s,
            max_outbound_bytes: limits.outbound_bytes_max,
            ring_capacity: limits.ring_capacity,
            max_sessions: limits.sessions_max,
            max_retained_messages: limits.retained_max,
            queue_full_policy: QueueFullPolicy::Backpressure,
            connect_timeout: limits.connect_timeout.as_secs(),
            write_timeout: limits.write_timeout.as_secs(),
            sys_interval: 10,
            max_session_expiry: limits.session_expiry_max_s,
            shutdown_timeout: 5,
            idle_spin_us: 0,
            node_id: String::new(),
            advertise: String::new(),
            admin: AdminSettings::default(),
            auth: AuthSettings::default(),
            listeners: Vec::new(),
        }
    }
}

/// A list given as a TOML array or as one comma-separated string (as environment
/// variables give it).
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(items) => items,
    })
}

/// Text that an environment variable may give as a bare number (`RINGMQ_CPUS=3`).
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(u64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::Text(text) => text,
        Text::Number(n) => n.to_string(),
    })
}

/// A setting that cannot be used, and why.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: &str, value: impl fmt::Display, allowed: &str) -> ConfigError {
    ConfigError(format!("invalid setting `{key}` = {value}: {allowed}"))
}

/// Reads the layers in order: defaults, `file`, environment, `overrides`.
pub fn load(
    file: Option<&Path>,
    environment: bool,
    overrides: &impl Serialize,
) -> Result<Settings, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError(format!(
                "configuration file {} does not exist or is not a file",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    if environment {
        figment = figment.merge(Env::prefixed("RINGMQ_").split("__").ignore(&["config"]));
    }
    figment = figment.merge(Serialized::defaults(overrides));
    let settings: Settings = figment.extract().map_err(|error| {
        let mut text = String::new();
        for (index, e) in error.into_iter().enumerate() {
            if index > 0 {
                text.push_str("; ");
            }
            text.push_str(&e.to_string());
        }
        ConfigError(format!("invalid configuration: {text}"))
    })?;
    settings.check()?;
    Ok(settings)
}

fn in_range<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, value, &format!("allowed from {min} to {max}")));
    }
    Ok(())
}

impl Settings {
    /// Checks every value; the first bad one is reported.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(invalid("listen", "[]", "at least one HOST:PORT address"));
        }
        for listen in &self.listen {
            resolve("listen", listen)?;
        }
        self.cpu_list()?;
        self.shard_count()?;
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(invalid(
                "log",
                format!("{:?}", self.log),
                &format!(
                    "a level (error, warn, info, debug, trace) or filter directives ({error})"
                ),
            ));
        }
        in_range("max_connections", self.max_connections, 1, 10_000_000)?;
        in_range(
            "max_packet_size",
            self.max_packet_size,
            64,
            PACKET_SIZE_MAX as u32,
        )?;
        in_range("max_inflight", self.max_inflight, 1, u16::MAX)?;
        in_range(
            "max_queued_messages",
            self.max_queued_messages,
            0,
            10_000_000,
        )?;
        in_range(
            "max_topic_levels",
            self.max_topic_levels,
            1,
            TOPIC_LEVELS_MAX as u16,
        )?;
        in_range(
            "max_subscriptions_per_client",
            self.max_subscriptions_per_client,
            1,
            1_000_000,
        )?;
        in_range("max_outbound_bytes", self.max_outbound_bytes, 1024, 1 << 30)?;
        in_range("ring_capacity", self.ring_capacity, 16, 1 << 20)?;
        in_range("max_sessions", self.max_sessions, 1, 100_000_000)?;
        in_range(
            "max_retained_messages",
            self.max_retained_messages,
            0,
            100_000_000,
        )?;
        in_range("connect_timeout", self.connect_timeout, 1, 3600)?;
        in_range("write_timeout", self.write_timeout, 1, 3600)?;
        in_range("sys_interval", self.sys_interval, 0, 86_400)?;
        in_range("shutdown_timeout", self.shutdown_timeout, 0, 3600)?;
        in_range("idle_spin_us", self.idle_spin_us, 0, 100_000)?;
        if !self.node_id.is_empty() && !is_node_id(&self.node_id) {
            return Err(invalid(
                "node_id",
                format!("{:?}", self.node_id),
                "1 to 64 letters, digits, `.`, `_` or `-` (empty: the host name)",
            ));
        }
        self.advertised()?;
        self.check_listeners()?;
        self.check_auth()?;
        self.check_admin()
    }

    fn check_listeners(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<SocketAddr> = self.listen_addrs()?;
        for (index, listener) in self.listeners.iter().enumerate() {
            let key = |name: &str| format!("listener[{index}].{name}");
            let addr = resolve(&key("listen"), &listener.listen)?;
            if addr.port() != 0 && seen.contains(&addr) {
                return Err(invalid(
                    &key("listen"),
                    format!("{:?}", listener.listen),
                    "an address no other listener uses",
                ));
            }
            seen.push(addr);
            let tls_only = [
                ("cert", !listener.cert.is_empty()),
                ("key", !listener.key.is_empty()),
                ("client_ca", !listener.client_ca.is_empty()),
                (
                    "client_cert",
                    listener.client_cert != ClientCertSetting::None,
                ),
                (
                    "username_from",
                    listener.username_from != UsernameFrom::None,
                ),
            ];
            if listener.kind.has_tls() {
                for name in ["cert", "key"] {
                    let path = if name == "cert" {
                        &listener.cert
                    } else {
                        &listener.key
                    };
                    if path.is_empty() {
                        return Err(invalid(
                            &key(name),
                            "\"\"",
                            "a PEM file (a TLS listener needs a certificate and its key)",
                        ));
                    }
                    readable_file(&key(name), path)?;
                }
                if !listener.client_ca.is_empty() {
                    readable_file(&key("client_ca"), &listener.client_ca)?;
                    if listener.client_cert == ClientCertSetting::None {
                        return Err(invalid(
                            &key("client_ca"),
                            format!("{:?}", listener.client_ca),
                            "only with `client_cert` optional or required (it would be unused)",
                        ));
                    }
                }
                if listener.client_cert != ClientCertSetting::None && listener.client_ca.is_empty()
                {
                    return Err(invalid(
                        &key("client_cert"),
                        format!("{:?}", listener.client_cert).to_lowercase(),
                        "needs `client_ca`, the CA client certificates must chain to",
                    ));
                }
                if listener.username_from != UsernameFrom::None
                    && listener.client_cert == ClientCertSetting::None
                {
                    return Err(invalid(
                        &key("username_from"),
                        format!("{:?}", listener.username_from).to_lowercase(),
                        "needs `client_cert` optional or required",
                    ));
                }
            } else if let Some((name, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    &key(name),
                    "(set)",
                    "only for listeners of kind tls or wss",
                ));
            }
            if listener.kind.has_websocket() {
                let path = &listener.path;
                if !path.starts_with('/')
                    || path.len() > 256
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(invalid(
                        &key("path"),
                        format!("{path:?}"),
                        "an HTTP path such as /mqtt",
                    ));
                }
            } else if listener.path != mqtt_path() {
                return Err(invalid(
                    &key("path"),
                    format!("{:?}", listener.path),
                    "only for listeners of kind ws or wss",
                ));
            }
            in_range(
                &key("max_connections"),
                listener.max_connections,
                0,
                10_000_000,
            )?;
        }
        Ok(())
    }

    fn check_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if !auth.password_file.is_empty() {
            readable_file("auth.password_file", &auth.password_file)?;
        }
        if !auth.acl_file.is_empty() {
            readable_file("auth.acl_file", &auth.acl_file)?;
        }
        in_range(
            "auth.failed_login_window",
            auth.failed_login_window,
            1,
            86_400,
        )?;
        in_range("auth.hash_threads", auth.hash_threads, 1, 64)?;
        in_range("auth.hash_queue_max", auth.hash_queue_max, 1, 1_000_000)?;
        Ok(())
    }

    /// Whether clients without credentials may connect on a listener with this
    /// override.
    pub fn anonymous_allowed(&self, listener: Anonymous) -> bool {
        match (listener, self.auth.allow_anonymous) {
            (Anonymous::Allow, _) => true,
            (Anonymous::Deny, _) => false,
            (Anonymous::Auto, Anonymous::Allow) => true,
            (Anonymous::Auto, Anonymous::Deny) => false,
            (Anonymous::Auto, Anonymous::Auto) => self.auth.password_file.is_empty(),
        }
    }

    /// This node's id: `node_id`, or the host name made into one.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let id: String = host
            .trim()
            .chars()
            .map(|c| if is_node_id_char(c) { c } else { '-' })
            .take(NODE_ID_LEN_MAX)
            .collect();
        if id.is_empty() {
            "ringmq".into()
        } else {
            id
        }
    }

    /// The advertised `HOST:PORT`, checked; `None` when not set. Not resolved: the
    /// name may only resolve where the peers are.
    pub fn advertised(&self) -> Result<Option<String>, ConfigError> {
        let advertise = self.advertise.trim();
        if advertise.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| invalid("advertise", format!("{advertise:?}"), why);
        if let Ok(addr) = advertise.parse::<SocketAddr>() {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(bad(
                    "an address peers can reach: not 0.0.0.0 or [::], not port 0",
                ));
            }
            return Ok(Some(advertise.into()));
        }
        let (host, port) = advertise
            .rsplit_once(':')
            .ok_or_else(|| bad("HOST:PORT, e.g. node-1.example.net:1883"))?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        match port.parse::<u16>() {
            Ok(port) if port > 0 && host_ok => Ok(Some(advertise.into())),
            _ => Err(bad(
                "HOST:PORT with a DNS name or IP address and a port from 1 to 65535",
            )),
        }
    }

    fn check_admin(&self) -> Result<(), ConfigError> {
        let token = &self.admin.token;
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError(
                "invalid setting `admin.token`: visible ASCII characters only, no spaces \
                 (it travels in an HTTP header)"
                    .into(),
            ));
        }
        if let Some(addr) = self.admin_addr()? {
            if token.is_empty() && !addr.ip().is_loopback() {
                return Err(invalid(
                    "admin.listen",
                    format!("{:?}", self.admin.listen),
                    "a loopback address such as 127.0.0.1:9090 unless `admin.token` is set: \
                     the admin API can disconnect clients",
                ));
            }
        }
        Ok(())
    }

    /// Where the admin endpoint listens; `None`: it is off.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let listen = self.admin.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        resolve("admin.listen", listen).map(Some)
    }

    /// `"0,2-3"` -> [0, 2, 3]; empty: not pinned.
    pub fn cpu_list(&self) -> Result<Vec<usize>, ConfigError> {
        parse_cpu_list(&self.cpus).map_err(|why| invalid("cpus", format!("{:?}", self.cpus), &why))
    }

    pub fn shard_count(&self) -> Result<usize, ConfigError> {
        let pinned = self.cpu_list()?.len();
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        match (usize::from(self.shards), pinned) {
            (0, 0) => Ok(available),
            (0, pinned) => Ok(pinned),
            (shards, 0) if shards <= 1024 => Ok(shards),
            (shards, 0) => Err(invalid(
                "shards",
                shards,
                "allowed from 1 to 1024, or 0 for one per core",
            )),
            (shards, pinned) if pinned < shards => Err(invalid(
                "shards",
                shards,
                &format!("needs {shards} CPUs but `cpus` lists {pinned}"),
            )),
            (shards, _) => Ok(shards),
        }
    }

    /// The addresses to listen on, resolved.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.listen
            .iter()
            .map(|listen| resolve("listen", listen))
            .collect()
    }

    /// The address of each `[[listener]]`, resolved.
    pub fn listener_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                resolve(&format!("listener[{index}].listen"), &listener.listen)
            })
            .collect()
    }

    pub fn limits(&self) -> Limits {
        Limits {
            connections_max: self.max_connections,
            packet_size_max: self.max_packet_size,
            inflight_max: self.max_inflight,
            queued_messages_max: self.max_queued_messages,
            topic_levels_max: usize::from(self.max_topic_levels),
            subscriptions_per_client_max: self.max_subscriptions_per_client,
            topic_alias_max: self.max_topic_aliases,
            keep_alive_max_s: self.max_keep_alive,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            session_expiry_max_s: self.max_session_expiry,
            outbound_bytes_max: self.max_outbound_bytes,
            write_timeout: Duration::from_secs(self.write_timeout),
            ring_capacity: self.ring_capacity,
            sessions_max: self.max_sessions,
            retained_max: self.max_retained_messages,
            queue_full: match self.queue_full_policy {
                QueueFullPolicy::Drop => ringmq_shard::QueueFullPolicy::Drop,
                QueueFullPolicy::Backpressure => ringmq_shard::QueueFullPolicy::Backpressure,
            },
        }
    }

    /// The settings as a TOML document, every key present; a secret is shown only
    /// as set or not.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.admin.token.is_empty() {
            shown.admin.token = REDACTED.into();
        }
        toml::to_string(&shown)
            .unwrap_or_else(|error| format!("# cannot print the settings: {error}\n"))
    }
}

const NODE_ID_LEN_MAX: usize = 64;

fn is_node_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= NODE_ID_LEN_MAX && id.chars().all(is_node_id_char)
}

/// What is shown in place of a secret.
const REDACTED: &str = "<redacted>";

/// Keys that take effect only when the broker starts: the listeners, the shards
/// and their rings, the log format, the timers fixed at start, and the admin
/// listener. Every other key applies at a reload (SIGHUP), to what starts
/// afterwards: limits to new connections and sessions.
const RESTART_KEYS: &[&str] = &[
    "listen",
    "shards",
    "cpus",
    "log_format",
    "ring_capacity",
    "sys_interval",
    "shutdown_timeout",
    "idle_spin_us",
    "node_id",
    "advertise",
    "admin.listen",
    "listener",
    "auth.hash_threads",
    "auth.hash_queue_max",
];

/// Keys a reload applies at once.
#[cfg(test)]
const LIVE_KEYS: &[&str] = &[
    "log",
    "max_connections",
    "max_packet_size",
    "max_inflight",
    "max_queued_messages",
    "max_topic_levels",
    "max_subscriptions_per_client",
    "max_topic_aliases",
    "max_keep_alive",
    "max_outbound_bytes",
    "max_sessions",
    "max_retained_messages",
    "queue_full_policy",
    "connect_timeout",
    "write_timeout",
    "max_session_expiry",
    "admin.token",
    "auth.password_file",
    "auth.acl_file",
    "auth.allow_anonymous",
    "auth.allow_insecure_hashes",
    "auth.failed_login_max",
    "auth.failed_login_window",
];

/// When a changed key takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    Now,
    AfterRestart,
}

impl fmt::Display for Applies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Applies::Now => "now",
            Applies::AfterRestart => "after a restart",
        })
    }
}

/// When a change of `key` (dotted for nested keys: `admin.listen`) takes effect.
pub fn applies(key: &str) -> Applies {
    if RESTART_KEYS.contains(&key) {
        Applies::AfterRestart
    } else {
        Applies::Now
    }
}

/// A key whose value differs between two settings; secrets show as redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
}

/// Every key whose value differs, in key order.
pub fn changes(old: &Settings, new: &Settings) -> Vec<Change> {
    let old = flat_values(old);
    let new = flat_values(new);
    let mut changed = Vec::new();
    for (key, new_value) in &new {
        let old_value = old.get(key).cloned().unwrap_or_default();
        if &old_value != new_value {
            let secret = key == "admin.token";
            let show = |value: String| if secret { REDACTED.into() } else { value };
            changed.push(Change {
                key: key.clone(),
                old: show(old_value),
                new: show(new_value.clone()),
            });
        }
    }
    changed
}

/// `key -> value as TOML`, nested tables flattened to dotted keys.
fn flat_values(settings: &Settings) -> std::collections::BTreeMap<String, String> {
    fn walk(
        prefix: &str,
        table: &toml::Table,
        into: &mut std::collections::BTreeMap<String, String>,
    ) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => walk(&key, inner, into),
                other => {
                    into.insert(key, other.to_string());
                }
            }
        }
    }
    let mut flat = std::collections::BTreeMap::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(settings) {
        walk("", &table, &mut flat);
    }
    flat
}

/// A file the broker will read at start and at each reload.
fn readable_file(key: &str, path: &str) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(invalid(key, format!("{path:?}"), "a file, not a directory")),
        Err(error) => Err(invalid(
            key,
            format!("{path:?}"),
            &format!("a readable file ({error})"),
        )),
    }
}

fn resolve(key: &str, listen: &str) -> Result<SocketAddr, ConfigError> {
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(
                key,
                format!("{listen:?}"),
                "a HOST:PORT address, e.g. 0.0.0.0:1883",
            )
        })
}

/// `0,2-3` -> [0, 2, 3].
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let bad = || format!("`{part}` is not a CPU number or range such as 0,2-3");
        let first: usize = first.parse().map_err(|_| bad())?;
        let last: usize = last.parse().map_err(|_| bad())?;
        if last < first {
            return Err(format!("range `{part}` ends before it starts"));
        }
        if last - first > 4096 {
            return Err(format!("range `{part}` is larger than any machine"));
        }
        cpus.extend(first..=last);
    }
    let mut sorted = cpus.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != cpus.len() {
        return Err("a CPU appears twice".into());
    }
    Ok(cpus)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::type_complexity,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_and_refuse_nonsense() {
        assert_eq!(parse_cpu_list("0,2-3"), Ok(vec![0, 2, 3]));
        assert_eq!(parse_cpu_list(" 5 "), Ok(vec![5]));
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("1,1").is_err());
        assert!(parse_cpu_list("0-99999").is_err());
    }

    #[test]
    fn defaults_are_valid_and_print_every_key() {
        let settings = Settings::default();
        assert!(settings.check().is_ok());
        let text = settings.to_toml();
        for key in [
            "listen",
            "max_inflight",
            "log_format",
            "shutdown_timeout",
            "cpus",
        ] {
            assert!(text.contains(key), "{key} missing from\n{text}");
        }
        let back: Settings = toml::from_str(&text).unwrap_or_default();
        assert_eq!(back, settings);
    }

    #[test]
    fn every_key_is_either_live_or_needs_a_restart() {
        let mut classified: Vec<&str> = RESTART_KEYS.iter().chain(LIVE_KEYS).copied().collect();
        classified.sort_unstable();
        let all: Vec<String> = flat_values(&Settings::default()).into_keys().collect();
        assert_eq!(
            classified, all,
            "a new key must be listed in RESTART_KEYS or LIVE_KEYS"
        );
        assert_eq!(applies("max_connections"), Applies::Now);
        assert_eq!(applies("admin.listen"), Applies::AfterRestart);
    }

    #[test]
    fn changes_name_nested_keys_and_hide_secrets() {
        let old = Settings::default();
        let mut new = old.clone();
        new.max_connections = 5;
        new.admin.token = "hunter2".into();
        let changed = changes(&old, &new);
        assert_eq!(
            changed,
            vec![
                Change {
                    key: "admin.token".into(),
                    old: REDACTED.into(),
                    new: REDACTED.into(),
                },
                Change {
                    key: "max_connections".into(),
                    old: "100000".into(),
                    new: "5".into(),
                },
            ]
        );
        assert!(changes(&old, &old).is_empty());
        assert!(!new.to_toml().contains("hunter2"));
    }

    #[test]
    fn node_identity_is_checked_and_defaults_to_the_host_name() {
        let mut settings = Settings::default();
        let id = settings.node_id();
        assert!(is_node_id(&id), "{id:?}");
        assert_eq!(settings.advertised().ok(), Some(None));
        settings.node_id = "edge-7.rack_2".into();
        settings.advertise = "edge-7.example.net:1883".into();
        assert!(settings.check().is_ok());
        assert_eq!(settings.node_id(), "edge-7.rack_2");
        settings.advertise = "[fd00::7]:1883".into();
        assert!(settings.check().is_ok());
        for (node_id, advertise, key) in [
            ("a b", "", "`node_id`"),
            (&"x".repeat(65) as &str, "", "`node_id`"),
            ("ok", "0.0.0.0:1883", "`advertise`"),
            ("ok", "10.0.0.1:0", "`advertise`"),
            ("ok", "node-1", "`advertise`"),
            ("ok", "node_1:1883", "`advertise`"),
            ("ok", "node-1:99999", "`advertise`"),
        ] {
            settings.node_id = node_id.into();
            settings.advertise = advertise.into();
            let error = settings
                .check()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(key), "{node_id:?} {advertise:?}: {error}");
        }
    }

    fn listener(kind: ListenerKind) -> ListenerSettings {
        ListenerSettings {
            kind,
            listen: "127.0.0.1:0".into(),
            cert: String::new(),
            key: String::new(),
            client_ca: String::new(),
            client_cert: ClientCertSetting::None,
            username_from: UsernameFrom::None,
            path: mqtt_path(),
            allow_anonymous: Anonymous::Auto,
            acl: true,
            max_connections: 0,
        }
    }

    fn error_of(settings: &Settings) -> String {
        settings
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn listeners_and_auth_are_checked_key_by_key() {
        // Any existing file stands in for a certificate: the contents are read
        // (and refused) when the TLS configuration is built.
        let file = env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml";
        let mut settings = Settings::default();
        settings.listeners = vec![listener(ListenerKind::Ws), listener(ListenerKind::Tcp)];
        assert!(settings.check().is_ok(), "{}", error_of(&settings));

        let cases: Vec<(Box<dyn Fn(&mut ListenerSettings)>, &str)> = vec![
            (
                Box::new(|l| l.kind = ListenerKind::Tls),
                "`listener[0].cert`",
            ),
            (
                Box::new(|l| {
                    l.kind = ListenerKind::Tls;
                    l.cert = "/nonexistent.pem".into();
                }),
                "`listener[0].cert` = \"/nonexistent.pem\": a readable file",
            ),
            (
                Box::new(|l| l.cert = "x.pem".into()),
                "only for listeners of kind tls or wss",
            ),
            (
                Box::new(|l| l.client_cert = ClientCertSetting::Required),
                "`listener[0].client_cert`",
            ),
            (Box::new(|l| l.path = "mqtt".into()), "`listener[0].path`"),
            (
                Box::new(|l| l.listen = "nowhere".into()),
                "`listener[0].listen`",
            ),
            (
                Box::new(|l| l.listen = "0.0.0.0:1883".into()),
                "no other listener uses",
            ),
        ];
        for (change, expected) in cases {
            let mut broken = settings.clone();
            if let Some(first) = broken.listeners.first_mut() {
                change(first);
            }
            let error = error_of(&broken);
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let mut tcp = settings.clone();
        tcp.listeners[1].path = "/other".into();
        assert!(error_of(&tcp).contains("only for listeners of kind ws or wss"));

        let mut tls = settings.clone();
        tls.listeners[0] = ListenerSettings {
            cert: file.clone(),
            key: file.clone(),
            ..listener(ListenerKind::Tls)
        };
        assert!(tls.check().is_ok(), "{}", error_of(&tls));
        tls.listeners[0].username_from = UsernameFrom::Cn;
        assert!(error_of(&tls).contains("`listener[0].username_from`"));
        tls.listeners[0].username_from = UsernameFrom::None;
        tls.listeners[0].client_ca = file.clone();
        assert!(error_of(&tls).contains("it would be unused"));
        tls.listeners[0].client_cert = ClientCertSetting::Optional;
        tls.listeners[0].username_from = UsernameFrom::San;
        assert!(tls.check().is_ok(), "{}", error_of(&tls));

        let mut auth = Settings::default();
        auth.auth.password_file = "/nonexistent/passwd".into();
        assert!(error_of(&auth).contains("`auth.password_file`"));
        auth.auth.password_file = String::new();
        auth.auth.acl_file = "/nonexistent/acl.toml".into();
        assert!(error_of(&auth).contains("`auth.acl_file`"));
        auth.auth.acl_file = String::new();
        auth.auth.hash_threads = 0;
        assert!(error_of(&auth).contains("`auth.hash_threads`"));
    }

    #[test]
    fn anonymous_clients_follow_the_listener_then_the_auth_table() {
        let mut settings = Settings::default();
        assert!(settings.anonymous_allowed(Anonymous::Auto));
        settings.auth.password_file = "/etc/ringmq/passwd".into();
        assert!(
            !settings.anonymous_allowed(Anonymous::Auto),
            "a password file closes the door"
        );
        assert!(settings.anonymous_allowed(Anonymous::Allow));
        settings.auth.allow_anonymous = Anonymous::Allow;
        assert!(settings.anonymous_allowed(Anonymous::Auto));
        assert!(!settings.anonymous_allowed(Anonymous::Deny));
        for (text, expected) in [
            ("true", Anonymous::Allow),
            ("false", Anonymous::Deny),
            ("\"auto\"", Anonymous::Auto),
        ] {
            let parsed: AuthSettings =
                toml::from_str(&format!("allow_anonymous = {text}")).unwrap_or_default();
            assert_eq!(parsed.allow_anonymous, expected, "{text}");
        }
        assert!(toml::from_str::<AuthSettings>("allow_anonymous = \"maybe\"").is_err());
    }

    #[test]
    fn an_admin_endpoint_off_loopback_needs_a_token() {
        let mut settings = Settings::default();
        settings.admin.listen = "0.0.0.0:9090".into();
        let error = settings
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("`admin.listen` = \"0.0.0.0:9090\"") && error.contains("admin.token"),
            "0.0.0.0 without a token is refused: {error}"
        );
        settings.admin.token = "s3cret".into();
        assert!(settings.check().is_ok());
        settings.admin.token = "two words".into();
        assert!(settings.check().is_err());
        settings.admin = AdminSettings {
            listen: String::new(),
            token: String::new(),
        };
        assert_eq!(settings.admin_addr().ok(), Some(None), "empty: off");
        settings.admin.listen = "[::1]:0".into();
        assert!(settings.check().is_ok());
    }
}
