//! From what the threads measured to one report: loss, duplicates and reordering
//! per sink, merged histograms, rates, broker cost; printed for people or as one
//! JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use ringmq_core::packet::QoS;
use serde::Serialize;

use crate::flags::{Config, Scenario};
use crate::plan::Plan;
use crate::run::{Outcome, SinkStreams};

/// Exit code when QoS 1/2 messages were lost.
pub const EXIT_LOSS: u8 = 2;
/// Exit code when links failed or broke during the run.
pub const EXIT_ERRORS: u8 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub run_id: String,
    pub config: Config,
    pub results: Results,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    /// Length of the measured window.
    pub measured_s: f64,
    /// Messages published over the whole run (warm-up and window).
    pub sent: u64,
    pub sent_in_window: u64,
    pub sent_per_s: f64,
    /// Deliveries expected: every message times the subscribers that should get it.
    pub expected: u64,
    /// Distinct deliveries over the whole run.
    pub received: u64,
    pub received_in_window: u64,
    pub received_per_s: f64,
    /// End to end, of messages due in the window, from their scheduled send time.
    pub latency_us: Option<Percentiles>,
    /// The same histogram as a curve: `[percentile, microseconds]` at
    /// [`CURVE_PERCENTILES`], for latency plots.
    pub latency_curve_us: Option<Vec<[f64; 2]>>,
    /// Open loop: how late messages left the generator after their scheduled time
    /// (generator lag plus broker backpressure); part of `latency_us`.
    pub send_lag_us: Option<Percentiles>,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Messages of other runs or without a stamp.
    pub foreign: u64,
    pub refused: u64,
    pub unacked: u64,
    pub connections_ready: usize,
    pub connections_failed: usize,
    pub connect: Option<ConnectResults>,
    pub retained: Option<RetainedResults>,
    pub broker: Option<BrokerResults>,
    /// ringmq-bench's own CPU seconds over the same span, and as a share of the
    /// time its threads had (near 1.0: the generator may be the limit).
    pub generator_cpu_s: Option<f64>,
    pub generator_cpu_share: Option<f64>,
    pub errors: Vec<String>,
    pub errors_total: usize,
}

/// Where `latency_curve_us` samples the histogram: evenly spaced in "nines"
/// (log10 of 1/(1-q)), the usual x axis of latency percentile plots.
pub const CURVE_PERCENTILES: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 68.0, 75.0, 82.2, 90.0, 93.0, 95.0, 96.8, 98.0, 99.0, 99.3, 99.5, 99.68,
    99.8, 99.9, 99.93, 99.95, 99.968, 99.98, 99.99, 99.995, 99.999, 100.0,
];

/// The histogram (of nanoseconds) at [`CURVE_PERCENTILES`], in units of `unit_ns`.
fn curve(h: &Histogram<u64>, unit_ns: f64) -> Option<Vec<[f64; 2]>> {
    if h.is_empty() {
        return None;
    }
    Some(
        CURVE_PERCENTILES
            .iter()
            .map(|&p| [p, h.value_at_percentile(p) as f64 / unit_ns])
            .collect(),
    )
}

/// Percentiles of a histogram, in the unit its field name says.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Of a histogram of nanoseconds, in units of `unit_ns`.
    fn of(h: &Histogram<u64>, unit_ns: f64) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let at = |q: f64| h.value_at_quantile(q) as f64 / unit_ns;
        Some(Percentiles {
            count: h.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: h.max() as f64 / unit_ns,
            mean: h.mean() / unit_ns,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ConnectResults {
    /// Connections made per second, from the start to the last CONNACK.
    pub connections_per_s: f64,
    pub connack_ms: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
pub struct RetainedResults {
    pub topics: usize,
    /// Subscribers that received every retained topic.
    pub complete: usize,
    pub incomplete: usize,
    /// From SUBSCRIBE to the last retained topic, per complete subscriber.
    pub complete_ms: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
pub struct BrokerResults {
    pub pid: u32,
    /// Broker CPU time (user + system) from the start of the load to the end of the
    /// drain.
    pub cpu_s: f64,
    /// That CPU time per million delivered messages.
    pub cpu_s_per_million_msgs: Option<f64>,
    pub peak_rss_bytes: u64,
    pub peak_rss_before_bytes: u64,
}

impl Report {
    pub fn new(config: &Config, plan: &Plan, outcome: &Outcome) -> Report {
        // A fixed count ends when it is delivered (or the drain gives up): rates are
        // over that span.
        let measured_s = match config.messages {
            Some(_) => {
                let span_ns = outcome.end_ns.saturating_sub(outcome.window.measure_ns);
                (span_ns as f64 / 1e9).clamp(1e-3, config.duration_s)
            }
            None => config.duration_s,
        };
        let mut r = Results {
            measured_s,
            ..Results::default()
        };
        let merged = |pick: fn(&crate::run::ThreadStats) -> &Histogram<u64>| {
            let mut iter = outcome.threads.iter();
            let mut total = iter.next().map(|t| pick(t).clone());
            for t in iter {
                if let Some(total) = total.as_mut() {
                    // Same bounds on every thread: adding cannot fail.
                    let _ = total.add(pick(t));
                }
            }
            total
        };
        let latency = merged(|t| &t.latency);
        r.latency_us = latency.as_ref().and_then(|h| Percentiles::of(h, 1e3));
        r.latency_curve_us = latency.as_ref().and_then(|h| curve(h, 1e3));
        r.send_lag_us = merged(|t| &t.send_lag).and_then(|h| Percentiles::of(&h, 1e3));
        let mut sent_by_publisher = vec![0u64; config.publishers];
        for t in &outcome.threads {
            for &(publisher, sent) in &t.sent {
                if let Some(slot) = sent_by_publisher.get_mut(publisher as usize) {
                    *slot += sent;
                }
            }
            r.sent_in_window += t.sent_in_window;
            r.received_in_window += t.received_in_window;
            r.foreign += t.foreign;
            r.refused += t.refused;
            r.unacked += t.unacked;
        }
        r.sent = sent_by_publisher.iter().sum();
        r.sent_per_s = r.sent_in_window as f64 / measured_s;
        r.received_per_s = r.received_in_window as f64 / measured_s;
        let sinks = merge_sinks(outcome.threads.iter().flat_map(|t| &t.sinks));
        for plan_sink in &plan.sinks {
            let streams = sinks.get(&plan_sink.sink);
            for publisher in plan_sink.publishers.clone() {
                let sent = sent_by_publisher
                    .get(publisher as usize)
                    .copied()
                    .unwrap_or(0);
                r.expected += sent;
                let tracker = streams.and_then(|s| {
                    s.trackers
                        .get(publisher.wrapping_sub(s.first_publisher) as usize)
                });
                match tracker {
                    Some(t) => {
                        r.received += t.distinct();
                        r.lost += t.lost(sent);
                        r.duplicated += t.duplicates();
                        r.reordered += t.reordered();
                    }
                    None => r.lost += sent,
                }
            }
        }
        r.connections_ready = outcome.ready;
        r.connections_failed = outcome.failed;
        if config.scenario == Scenario::Connect {
            let last = outcome
                .threads
                .iter()
                .map(|t| t.last_connack_ns)
                .max()
                .unwrap_or(0);
            let span_s = last.saturating_sub(outcome.window.start_ns) as f64 / 1e9;
            r.connect = Some(ConnectResults {
                connections_per_s: if span_s > 0.0 {
                    outcome.ready as f64 / span_s
                } else {
                    0.0
                },
                connack_ms: merged(|t| &t.connack).and_then(|h| Percentiles::of(&h, 1e6)),
            });
        }
        if config.scenario == Scenario::Retained {
            let complete = merged(|t| &t.complete);
            let done = complete.as_ref().map_or(0, |h| h.len() as usize);
            r.retained = Some(RetainedResults {
                topics: config.topics,
                complete: done,
                incomplete: config.subscribers.saturating_sub(done),
                complete_ms: complete.and_then(|h| Percentiles::of(&h, 1e6)),
            });
        }
        if let (Some(pid), Some(before), Some(after)) = (
            config.broker_pid,
            outcome.broker_before,
            outcome.broker_after,
        ) {
            let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
            r.broker = Some(BrokerResults {
                pid,
                cpu_s,
                cpu_s_per_million_msgs: (r.received > 0).then(|| cpu_s * 1e6 / r.received as f64),
                peak_rss_bytes: after.peak_rss_bytes,
                peak_rss_before_bytes: before.peak_rss_bytes,
            });
        }
        if let (Some(before), Some(after)) = (outcome.generator_before, outcome.generator_after) {
            let cpu_s = (after.cpu_s - before.cpu_s).max(0.0);
            let span_s = outcome.end_ns.saturating_sub(outcome.window.start_ns) as f64 / 1e9;
            r.generator_cpu_s = Some(cpu_s);
            r.generator_cpu_share =
                (span_s > 0.0).then(|| cpu_s / (span_s * config.threads.max(1) as f64));
        }
        r.errors = outcome.errors.clone();
        r.errors_total = outcome.errors_total;
        Report {
            tool: "ringmq-bench",
            version: env!("CARGO_PKG_VERSION"),
            run_id: plan.run_id.clone(),
            config: config.clone(),
            results: r,
        }
    }

    /// 0, [`EXIT_ERRORS`] or [`EXIT_LOSS`].
    pub fn exit_code(&self) -> u8 {
        let r = &self.results;
        if self.config.qos != QoS::AtMostOnce && r.lost > 0 {
            EXIT_LOSS
        } else if r.errors_total > 0 || r.connections_failed > 0 {
            EXIT_ERRORS
        } else {
            0
        }
    }

    /// The summary for people.
    pub fn human(&self) -> String {
        let c = &self.config;
        let r = &self.results;
        let mut out = String::new();
        let rate = match (c.rate, c.total_rate) {
            (_, Some(total)) => format!("{total} msg/s total"),
            (crate::flags::Rate::PerPublisher(rate), None) => format!("{rate} msg/s per publisher"),
            (crate::flags::Rate::Max, None) => "max rate".to_string(),
        };
        let mqtt = match c.mqtt {
            ringmq_core::packet::ProtocolVersion::V311 => "3.1.1",
            ringmq_core::packet::ProtocolVersion::V5 => "5",
        };
        let _ = writeln!(
            out,
            "ringmq-bench {} (run {}): MQTT {mqtt}, QoS {}, {} B payload, {rate}, {} thread(s), {:?} sessions",
            c.scenario.name(),
            self.run_id,
            c.qos.as_u8(),
            c.payload_bytes,
            c.threads,
            c.session,
        );
        let _ = writeln!(
            out,
            "  connections  {} ready, {} failed",
            r.connections_ready, r.connections_failed
        );
        match c.scenario {
            Scenario::Connect => {
                if let Some(connect) = &r.connect {
                    let _ = writeln!(
                        out,
                        "  storm        {:.0} connections/s",
                        connect.connections_per_s
                    );
                    if let Some(p) = &connect.connack_ms {
                        let _ = writeln!(out, "  connack      {}", percentiles(p, 1e3));
                    }
                }
            }
            Scenario::Retained => {
                if let Some(retained) = &r.retained {
                    let _ = writeln!(
                        out,
                        "  retained     {} topics: {} subscribers complete, {} incomplete",
                        retained.topics, retained.complete, retained.incomplete
                    );
                    if let Some(p) = &retained.complete_ms {
                        let _ = writeln!(out, "  all received {}", percentiles(p, 1e3));
                    }
                }
            }
            _ => {
                match c.messages {
                    Some(n) => {
                        let _ = writeln!(
                            out,
                            "  fixed count  {n} messages, over in {:.2} s after {} s warm-up",
                            r.measured_s, c.warmup_s
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "  window       {} s after {} s warm-up",
                            c.duration_s, c.warmup_s
                        );
                    }
                }
                let _ = writeln!(
                    out,
                    "  sent         {:>12.0} msg/s   ({} in window, {} in all)",
                    r.sent_per_s, r.sent_in_window, r.sent
                );
                let _ = writeln!(
                    out,
                    "  received     {:>12.0} msg/s   ({} in window, {} of {} expected in all)",
                    r.received_per_s, r.received_in_window, r.received, r.expected
                );
                match &r.latency_us {
                    Some(p) => {
                        let _ = writeln!(out, "  latency      {}", percentiles(p, 1.0));
                    }
                    None => {
                        let _ = writeln!(out, "  latency      no message of the window arrived");
                    }
                }
                if let Some(p) = &r.send_lag_us {
                    let _ = writeln!(out, "  send lag     {}", percentiles(p, 1.0));
                }
            }
        }
        if c.scenario != Scenario::Connect {
            let order = if c.scenario == Scenario::Retained {
                " (retained order is not defined)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  delivery     lost {}, duplicated {}, reordered {}{order} (QoS {}); unacked {}, refused {}, foreign {}",
                r.lost,
                r.duplicated,
                r.reordered,
                c.qos.as_u8(),
                r.unacked,
                r.refused,
                r.foreign
            );
        }
        if let Some(b) = &r.broker {
            let per_million = b
                .cpu_s_per_million_msgs
                .map_or(String::new(), |v| format!(" ({v:.3} s per million msgs)"));
            let _ = writeln!(
                out,
                "  broker       cpu {:.2} s{per_million}, peak rss {:.1} MiB",
                b.cpu_s,
                b.peak_rss_bytes as f64 / (1024.0 * 1024.0)
            );
        }
        if let (Some(cpu_s), Some(share)) = (r.generator_cpu_s, r.generator_cpu_share) {
            let _ = writeln!(
                out,
                "  generator    cpu {cpu_s:.2} s ({:.0}% of its {} thread(s))",
                share * 100.0,
                c.threads
            );
        }
        if r.errors_total > 0 {
            let _ = writeln!(
                out,
                "  errors       {} (first {} below)",
                r.errors_total,
                r.errors.len()
            );
            for e in &r.errors {
                let _ = writeln!(out, "    {e}");
            }
        }
        out
    }
}

/// `p50 .. max` of values in `unit_us` microseconds, each with a readable unit.
fn percentiles(p: &Percentiles, unit_us: f64) -> String {
    let show = |v: f64| {
        let us = v * unit_us;
        if us < 1_000.0 {
            format!("{us:.0} us")
        } else if us < 1_000_000.0 {
            format!("{:.2} ms", us / 1e3)
        } else {
            format!("{:.2} s", us / 1e6)
        }
    };
    format!(
        "p50 {}  p95 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        show(p.p50),
        show(p.p95),
        show(p.p99),
        show(p.p999),
        show(p.max),
        p.count
    )
}

/// Joins the trackers of one sink kept on different threads (a shared group).
fn merge_sinks<'a>(streams: impl Iterator<Item = &'a SinkStreams>) -> BTreeMap<u32, SinkStreams> {
    let mut sinks: BTreeMap<u32, SinkStreams> = BTreeMap::new();
    for s in streams {
        match sinks.get_mut(&s.sink) {
            Some(merged) if merged.first_publisher == s.first_publisher => {
                if merged.trackers.len() < s.trackers.len() {
                    merged.trackers.resize(s.trackers.len(), Default::default());
                }
                for (m, t) in merged.trackers.iter_mut().zip(&s.trackers) {
                    m.merge(t);
                }
            }
            Some(_) => {}
            None => {
                sinks.insert(
                    s.sink,
                    SinkStreams {
                        sink: s.sink,
                        first_publisher: s.first_publisher,
                        trackers: s.trackers.clone(),
                    },
                );
            }
        }
    }
    sinks
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::flags::Cli;
    use crate::run::{ThreadStats, Window};
    use crate::stamp::SequenceTracker;
    use clap::Parser;

    fn setup(args: &str) -> (Config, Plan) {
        let argv = std::iter::once("ringmq-bench").chain(args.split_whitespace());
        let config = Cli::try_parse_from(argv)
            .unwrap()
            .scenario
            .validate()
            .unwrap();
        let plan = Plan::new(&config, "000000");
        (config, plan)
    }

    fn tracker(seqs: impl IntoIterator<Item = u32>) -> SequenceTracker {
        let mut t = SequenceTracker::new();
        for s in seqs {
            t.record(s);
        }
        t
    }

    fn outcome(threads: Vec<ThreadStats>) -> Outcome {
        Outcome {
            window: Window::default(),
            end_ns: 0,
            threads,
            sent_total: 0,
            ready: 0,
            failed: 0,
            errors: Vec::new(),
            errors_total: 0,
            broker_before: None,
            broker_after: None,
            generator_before: None,
            generator_after: None,
        }
    }

    #[test]
    fn shared_group_members_on_two_threads_are_one_sink() {
        let (config, plan) = setup("shared --publishers 1 --subscribers 2 --qos 1 --threads 2");
        let mut a = ThreadStats::new().unwrap();
        a.sent.push((0, 10));
        a.sinks.push(SinkStreams {
            sink: 0,
            first_publisher: 0,
            trackers: vec![tracker(0..6)],
        });
        let mut b = ThreadStats::new().unwrap();
        // 5 is delivered to both members; 9 to neither.
        b.sinks.push(SinkStreams {
            sink: 0,
            first_publisher: 0,
            trackers: vec![tracker(5..9)],
        });
        let report = Report::new(&config, &plan, &outcome(vec![a, b]));
        let r = &report.results;
        assert_eq!((r.sent, r.expected, r.received), (10, 10, 9));
        assert_eq!((r.lost, r.duplicated), (1, 1));
        assert_eq!(report.exit_code(), EXIT_LOSS);
    }

    #[test]
    fn a_subscriber_that_heard_nothing_lost_everything() {
        let (config, plan) = setup("fan-out --subscribers 2");
        let mut t = ThreadStats::new().unwrap();
        t.sent.push((0, 7));
        t.sinks.push(SinkStreams {
            sink: 0,
            first_publisher: 0,
            trackers: vec![tracker(0..7)],
        });
        let report = Report::new(&config, &plan, &outcome(vec![t]));
        assert_eq!(
            (
                report.results.expected,
                report.results.received,
                report.results.lost
            ),
            (14, 7, 7)
        );
        // QoS 0 losses are a result, not a failure.
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn json_carries_config_and_results() {
        let (config, plan) = setup("pairs --pairs 1 --qos 2 --mqtt 3 --rate 5");
        let mut t = ThreadStats::new().unwrap();
        t.latency.record(1500).unwrap();
        let report = Report::new(&config, &plan, &outcome(vec![t]));
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["config"]["scenario"], "pairs");
        assert_eq!(json["config"]["mqtt"], 3);
        assert_eq!(json["config"]["qos"], 2);
        assert_eq!(json["config"]["rate"]["mode"], "per-publisher");
        assert_eq!(json["results"]["latency_us"]["count"], 1);
        let curve = json["results"]["latency_curve_us"].as_array().unwrap();
        assert_eq!(curve.len(), CURVE_PERCENTILES.len());
        assert_eq!(curve[0][0], 0.0);
        assert_eq!(curve[curve.len() - 1][0], 100.0);
        // One sample of 1.5 us: every point of the curve is that value.
        assert!(curve
            .iter()
            .all(|p| (p[1].as_f64().unwrap() - 1.5).abs() < 0.01));
        assert!(report.human().contains("latency"));
    }
}
