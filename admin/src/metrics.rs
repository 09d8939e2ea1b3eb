//! `/metrics`: every shard's counters, read when Prometheus scrapes.
//!
//! The shards keep single-writer counters of their own (`ShardStats`); a scrape
//! reads each one and reports it with a `shard` label, so nothing on the publish
//! path is shared or summed. Sums are the query's job (`sum without (shard)`).
//!
//! prometheus-client writes OpenMetrics text. Prometheus asks for it by its
//! `Accept` header and gets it as is; every other reader (promtool, curl, agents
//! that speak only the classic format) gets [`to_prometheus_text`] of it.

use std::fmt::{self, Write as _};
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use ringmq_shard::stats::{ring_backlog, Counter, ShardStats};
use ringmq_shard::{BrokerHandle, Limits};

/// The content type of [`to_prometheus_text`]'s output.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type prometheus-client writes.
pub(crate) const OPENMETRICS_TEXT: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Read = fn(&ShardStats) -> u64;

/// One metric family reported per shard, and per value of a second label when it
/// has one.
struct ShardFamily {
    /// Without the `_total` counters get and the unit suffix.
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    metric_type: MetricType,
    /// The label beside `shard` and, for each of its values, how to read it; an
    /// empty label means the family has only `shard`.
    label: &'static str,
    series: &'static [(&'static str, Read)],
}

fn by_qos(counters: &[Counter; 3], qos: usize) -> u64 {
    counters.get(qos).map_or(0, Counter::get)
}

const SHARD_FAMILIES: &[ShardFamily] = &[
    ShardFamily {
        name: "ringmq_connections_current",
        help: "Client connections open now (CONNECT accepted, not yet closed).",
        unit: None,
        metric_type: MetricType::Gauge,
        label: "",
        series: &[("", |s| s.clients_connected.get())],
    },
    ShardFamily {
        name: "ringmq_connections",
        help: "Client connections accepted (CONNACK success) since start.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.connections_total.get())],
    },
    ShardFamily {
        name: "ringmq_connections_rejected",
        help: "CONNECTs refused, by reason (limit: max_connections reached; sessions: max_sessions reached; auth: credentials, anonymous, failed-login limit).",
        unit: None,
        metric_type: MetricType::Counter,
        label: "reason",
        series: &[
            ("limit", |s| s.connections_refused.get()),
            ("sessions", |s| s.sessions_refused.get()),
            ("auth", |s| s.logins_refused.get()),
        ],
    },
    ShardFamily {
        name: "ringmq_protocol_errors",
        help: "Connections ended for malformed or forbidden packets.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.protocol_errors.get())],
    },
    ShardFamily {
        name: "ringmq_sessions",
        help: "Sessions held, connected or not.",
        unit: None,
        metric_type: MetricType::Gauge,
        label: "",
        series: &[("", |s| s.sessions.get())],
    },
    ShardFamily {
        name: "ringmq_messages_received",
        help: "PUBLISH packets received from clients, by QoS.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "qos",
        series: &[
            ("0", |s| by_qos(&s.received_by_qos, 0)),
            ("1", |s| by_qos(&s.received_by_qos, 1)),
            ("2", |s| by_qos(&s.received_by_qos, 2)),
        ],
    },
    ShardFamily {
        name: "ringmq_messages_sent",
        help: "PUBLISH packets delivered to clients, by the QoS they were sent with.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "qos",
        series: &[
            ("0", |s| by_qos(&s.sent_by_qos, 0)),
            ("1", |s| by_qos(&s.sent_by_qos, 1)),
            ("2", |s| by_qos(&s.sent_by_qos, 2)),
        ],
    },
    ShardFamily {
        name: "ringmq_received",
        help: "Bytes read from client sockets.",
        unit: Some(Unit::Bytes),
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.bytes_received.get())],
    },
    ShardFamily {
        name: "ringmq_sent",
        help: "Bytes written to client sockets.",
        unit: Some(Unit::Bytes),
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.bytes_sent.get())],
    },
    ShardFamily {
        name: "ringmq_messages_dropped",
        help: "Messages not delivered, by reason.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "reason",
        series: &[
            ("queue_full", |s| s.dropped_queue_full.get()),
            ("expired", |s| s.dropped_expired.get()),
            ("too_large", |s| s.dropped_too_large.get()),
            ("no_subscribers", |s| s.dropped_no_subscribers.get()),
            ("not_authorized", |s| s.dropped_not_authorized.get()),
        ],
    },
    ShardFamily {
        name: "ringmq_subscriptions_refused",
        help: "SUBSCRIBE filters the ACL refused (SUBACK 0x87 / 0x80).",
        unit: None,
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.subscriptions_refused.get())],
    },
    ShardFamily {
        name: "ringmq_subscriptions",
        help: "Subscriptions held by the sessions of the shard.",
        unit: None,
        metric_type: MetricType::Gauge,
        label: "",
        series: &[("", |s| s.subscriptions.get())],
    },
    ShardFamily {
        name: "ringmq_retained_messages",
        help: "Retained messages stored in the shard's partition.",
        unit: None,
        metric_type: MetricType::Gauge,
        label: "",
        series: &[("", |s| s.retained.get())],
    },
    ShardFamily {
        name: "ringmq_retained_dropped",
        help: "Retained PUBLISHes to a new topic delivered but not kept: max_retained_messages reached.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.retained_dropped.get())],
    },
    ShardFamily {
        name: "ringmq_ring_full",
        help: "Messages that found a shard-to-shard ring full and had to wait.",
        unit: None,
        metric_type: MetricType::Counter,
        label: "",
        series: &[("", |s| s.ring_full.get())],
    },
    ShardFamily {
        name: "ringmq_messages_inflight",
        help: "Outbound QoS 1/2 messages sent and not yet acknowledged, over the shard's sessions (counted every second).",
        unit: None,
        metric_type: MetricType::Gauge,
        label: "",
        series: &[("", |s| s.inflight.get())],
    },
    ShardFamily {
        name: "ringmq_messages_queued",
        help: "Messages queued in the shard's sessions, offline or behind a full inflight window (counted every second).",
        unit: None,
        metric_type: MetricType::Gauge,
        label: "",
        series: &[("", |s| s.queued.get())],
    },
];

/// What `/metrics` reports: the shards' counters and a few process-wide values.
#[derive(Debug)]
pub(crate) struct BrokerCollector {
    pub handle: BrokerHandle,
    /// The limits in force; a reload may change them.
    pub limits: Arc<RwLock<Arc<Limits>>>,
    pub start_time_unix_s: f64,
    pub node_id: String,
}

impl BrokerCollector {
    fn encode_shard_family(
        &self,
        family: &ShardFamily,
        encoder: &mut DescriptorEncoder,
    ) -> fmt::Result {
        let mut metric = encoder.encode_descriptor(
            family.name,
            family.help,
            family.unit.as_ref(),
            family.metric_type,
        )?;
        for (shard, stats) in self.handle.shard_stats().iter().enumerate() {
            for &(label_value, read) in family.series {
                let value = read(stats);
                if family.label.is_empty() {
                    let labels = [("shard", shard)];
                    encode_value(family.metric_type, value, metric.encode_family(&labels)?)?;
                } else {
                    let labels = [
                        ("shard", shard.to_string()),
                        (family.label, label_value.to_owned()),
                    ];
                    encode_value(family.metric_type, value, metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    metric_type: MetricType,
    value: u64,
    encoder: prometheus_client::encoding::MetricEncoder,
) -> fmt::Result {
    match metric_type {
        MetricType::Counter => ConstCounter::new(value).encode(encoder),
        _ => ConstGauge::new(value).encode(encoder),
    }
}

fn encode_gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: N,
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        {
            let info = ConstGauge::new(1u64);
            let mut metric = encoder.encode_descriptor(
                "ringmq_build_info",
                "Always 1; the version and node id of the running broker are its labels.",
                None,
                info.metric_type(),
            )?;
            let labels = [
                ("version", env!("CARGO_PKG_VERSION")),
                ("node_id", self.node_id.as_str()),
            ];
            info.encode(metric.encode_family(&labels)?)?;
        }
        encode_gauge(
            &mut encoder,
            "ringmq_start_time",
            "When the broker started, in seconds since the Unix epoch.",
            Some(Unit::Seconds),
            self.start_time_unix_s,
        )?;
        let limits = Arc::clone(&self.limits.read().unwrap_or_else(PoisonError::into_inner));
        encode_gauge(
            &mut encoder,
            "ringmq_connections_max",
            "The max_connections in force: connections past it are refused.",
            None,
            limits.connections_max as u64,
        )?;
        encode_gauge(
            &mut encoder,
            "ringmq_sessions_max",
            "The max_sessions in force: a CONNECT needing a new session past it is refused.",
            None,
            limits.sessions_max as u64,
        )?;
        encode_gauge(
            &mut encoder,
            "ringmq_retained_messages_max",
            "The max_retained_messages in force: retained messages to new topics past it are not kept.",
            None,
            limits.retained_max as u64,
        )?;
        let process = ProcessStats::read();
        if let Some(rss) = process.resident_memory_bytes {
            encode_gauge(
                &mut encoder,
                "ringmq_resident_memory",
                "Resident memory of the broker process (VmRSS).",
                Some(Unit::Bytes),
                rss,
            )?;
        }
        if let Some(open) = process.open_fds {
            encode_gauge(
                &mut encoder,
                "ringmq_open_fds",
                "File descriptors the broker process has open (sockets included).",
                None,
                open,
            )?;
        }
        if let Some(max) = process.max_fds {
            encode_gauge(
                &mut encoder,
                "ringmq_max_fds",
                "The process's limit on open file descriptors (LimitNOFILE).",
                None,
                max,
            )?;
        }
        for family in SHARD_FAMILIES {
            self.encode_shard_family(family, &mut encoder)?;
        }
        self.encode_ring_backlog(&mut encoder)?;
        self.encode_delivery_latency(&mut encoder)
    }
}

impl BrokerCollector {
    /// Per shard, the messages other shards sent it that it has not taken yet.
    fn encode_ring_backlog(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "ringmq_ring_backlog",
            "Messages other shards addressed to this shard not yet taken from its rings \
             (in the rings or queued in front of them).",
            None,
            MetricType::Gauge,
        )?;
        let all = self.handle.shard_stats();
        for shard in 0..all.len() {
            let labels = [("shard", shard)];
            ConstGauge::new(ring_backlog(all, shard)).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// The shards' sampled publish-to-delivery histograms, one series per shard.
    fn encode_delivery_latency(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "ringmq_delivery_latency",
            "Time from a PUBLISH decoded to its copy written to a subscriber's socket, \
             for one message in 32 delivered on arrival (the shard of the subscriber).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (shard, stats) in self.handle.shard_stats().iter().enumerate() {
            let histogram = &stats.delivery_latency;
            let buckets: Vec<(f64, u64)> = histogram.buckets().collect();
            let inside: u64 = buckets.iter().map(|(_, count)| count).sum();
            let mut all = buckets;
            all.push((f64::INFINITY, histogram.count().saturating_sub(inside)));
            let labels = [("shard", shard)];
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds(),
                    histogram.count(),
                    &all,
                    None,
                )?;
        }
        Ok(())
    }
}

/// What the kernel tells about this process; `None` where it cannot be read.
#[derive(Debug, Default)]
struct ProcessStats {
    resident_memory_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessStats {
    fn read() -> ProcessStats {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        ProcessStats {
            resident_memory_bytes: vm_rss_bytes(&status),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: open_files_limit(&limits),
        }
    }
}

/// `VmRSS:   1234 kB` in /proc/self/status, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

/// The soft limit of `Max open files` in /proc/self/limits.
fn open_files_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The registry a scrape encodes: just the collector, which reads everything then.
pub(crate) fn registry(collector: BrokerCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    registry
}

/// The exposition in OpenMetrics text.
pub(crate) fn openmetrics(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a counter's
/// `HELP` and `TYPE` name its samples (`x_total`, not `x`), and `UNIT` and `EOF`,
/// which that format does not have, go.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    let mut lines = openmetrics.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let is_counter = lines
                .peek()
                .is_some_and(|next| next.starts_with("# TYPE ") && next.ends_with(" counter"));
            let suffix = if is_counter { "_total" } else { "" };
            let _ = writeln!(text, "# HELP {name}{suffix} {help}");
            continue;
        }
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            let _ = writeln!(text, "# TYPE {name}_total counter");
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let openmetrics = "# HELP ringmq_connections Accepted.\n\
                           # TYPE ringmq_connections counter\n\
                           ringmq_connections_total{shard=\"0\"} 3\n\
                           # HELP ringmq_received_bytes Read.\n\
                           # TYPE ringmq_received_bytes counter\n\
                           # UNIT ringmq_received_bytes bytes\n\
                           ringmq_received_bytes_total{shard=\"0\"} 10\n\
                           # HELP ringmq_sessions Held.\n\
                           # TYPE ringmq_sessions gauge\n\
                           ringmq_sessions{shard=\"0\"} 1\n\
                           # EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP ringmq_connections_total Accepted.\n\
             # TYPE ringmq_connections_total counter\n\
             ringmq_connections_total{shard=\"0\"} 3\n\
             # HELP ringmq_received_bytes_total Read.\n\
             # TYPE ringmq_received_bytes_total counter\n\
             ringmq_received_bytes_total{shard=\"0\"} 10\n\
             # HELP ringmq_sessions Held.\n\
             # TYPE ringmq_sessions gauge\n\
             ringmq_sessions{shard=\"0\"} 1\n"
        );
    }

    #[test]
    fn process_files_parse() {
        assert_eq!(
            vm_rss_bytes("Name:\tringmq\nVmRSS:\t   2048 kB\nVmSwap: 0 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(vm_rss_bytes("Name:\tkthreadd\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        // Whatever this machine says, it says something.
        let process = ProcessStats::read();
        assert!(process.resident_memory_bytes.unwrap_or(0) > 0);
        assert!(process.open_fds.unwrap_or(0) > 0);
    }
}
