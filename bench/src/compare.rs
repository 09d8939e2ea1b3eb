//! `ringmq-bench compare --results DIR`: the body of a results folder's
//! `summary.md`: every case side by side per broker, the targets of issue #4 with
//! what was measured and whether each is met, the cost per message, and the plots.
//!
//! The targets name the cases of `scripts/perf-test.sh` by label; a case the folder
//! does not have is reported as not measured rather than left out.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::results::{self, per_message, Cost, Matrix, Runs, SUBJECT};
use crate::summary::number;

const RECEIVED: &[&str] = &["results", "received_per_s"];
const P50: &[&str] = &["results", "latency_us", "p50"];
const P95: &[&str] = &["results", "latency_us", "p95"];
const P99: &[&str] = &["results", "latency_us", "p99"];
const P999: &[&str] = &["results", "latency_us", "p999"];
const LOST: &[&str] = &["results", "lost"];
const CPU_PER_M: &[&str] = &["results", "broker", "cpu_s_per_million_msgs"];
const RSS: &[&str] = &["results", "broker", "peak_rss_bytes"];
const CONN_PER_S: &[&str] = &["results", "connect", "connections_per_s"];
const CONNACK_P50: &[&str] = &["results", "connect", "connack_ms", "p50"];
const CONNACK_P99: &[&str] = &["results", "connect", "connack_ms", "p99"];
const FAILED: &[&str] = &["results", "connections_failed"];
const MIB: f64 = 1024.0 * 1024.0;

/// One target of the issue, checked against a results folder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// ringmq's median msgs/s in `case` at least `factor` times `peer`'s.
    Throughput {
        case: &'static str,
        peer: &'static str,
        factor: f64,
    },
    /// ringmq's median peak RSS in `case` at most `fraction` of `peer`'s.
    Memory {
        case: &'static str,
        peer: &'static str,
        fraction: f64,
    },
    /// ringmq's median p50 and p99 in `case` below every peer's.
    Latency { case: &'static str },
    /// ringmq's user-space instructions per delivered message at most `fraction` of
    /// `peer`'s.
    Instructions { peer: &'static str, fraction: f64 },
    /// ringmq's system calls per delivered message at most `peer`'s.
    Syscalls { peer: &'static str },
    /// No QoS 1/2 message lost in any run of ringmq.
    NoLoss,
}

/// The targets of issue #4, by the case labels of `scripts/perf-test.sh`.
pub const TARGETS: &[Target] = &[
    Target::Throughput {
        case: "pairs-qos0-max",
        peer: "rumqttd",
        factor: 3.0,
    },
    Target::Throughput {
        case: "pairs-qos0-max",
        peer: "mosquitto",
        factor: 10.0,
    },
    Target::Throughput {
        case: "fan-in-qos0-max",
        peer: "rumqttd",
        factor: 3.0,
    },
    Target::Throughput {
        case: "fan-in-qos0-max",
        peer: "mosquitto",
        factor: 10.0,
    },
    Target::Throughput {
        case: "pairs-qos1-max",
        peer: "rumqttd",
        factor: 3.0,
    },
    Target::Throughput {
        case: "pairs-qos1-max",
        peer: "mosquitto",
        factor: 10.0,
    },
    Target::Throughput {
        case: "fan-out-qos0-max",
        peer: "rumqttd",
        factor: 2.0,
    },
    Target::Memory {
        case: "pairs-qos0-max",
        peer: "rumqttd",
        fraction: 0.1,
    },
    Target::Memory {
        case: "fan-in-qos0-max",
        peer: "rumqttd",
        fraction: 0.1,
    },
    Target::Memory {
        case: "pairs-qos1-max",
        peer: "rumqttd",
        fraction: 0.1,
    },
    Target::Memory {
        case: "fan-out-qos0-max",
        peer: "rumqttd",
        fraction: 0.1,
    },
    Target::Latency {
        case: "pairs-qos1-10k",
    },
    Target::Latency {
        case: "fan-in-qos1-10k",
    },
    Target::Latency {
        case: "shared-qos1-10k",
    },
    Target::Latency {
        case: "fan-out-qos0-10k",
    },
    Target::Latency {
        case: "pairs-qos0-half",
    },
    Target::Instructions {
        peer: "mosquitto",
        fraction: 1.0 / 3.0,
    },
    Target::Syscalls { peer: "rumqttd" },
    Target::NoLoss,
];

/// A checked target: what it asks, what was measured, and the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Met(String),
    NotMet(String),
    NotMeasured,
}

impl Verdict {
    fn of(met: bool, ratio: String) -> Verdict {
        if met {
            Verdict::Met(ratio)
        } else {
            Verdict::NotMet(ratio)
        }
    }

    fn text(&self) -> String {
        match self {
            Verdict::Met(r) => format!("**met** ({r})"),
            Verdict::NotMet(r) => format!("**not met** ({r})"),
            Verdict::NotMeasured => "not measured".to_string(),
        }
    }
}

fn instructions(c: &Cost) -> Option<f64> {
    c.instructions.map(|n| n as f64)
}

fn syscalls(c: &Cost) -> Option<f64> {
    c.syscalls.map(|n| n as f64)
}

impl Target {
    pub fn check(&self, matrix: &Matrix, costs: &[Cost]) -> Checked {
        let median = |case: &str, broker: &str, path: &[&str]| {
            matrix.get(case, broker).and_then(|r| r.median(path))
        };
        match *self {
            Target::Throughput { case, peer, factor } => {
                let (us, them) = (
                    median(case, SUBJECT, RECEIVED),
                    median(case, peer, RECEIVED),
                );
                let measured = format!("{} vs {}", rate(us), rate(them));
                let verdict = match (us, them) {
                    (Some(us), Some(them)) if them > 0.0 => {
                        Verdict::of(us >= factor * them, format!("{}x", number(us / them)))
                    }
                    _ => Verdict::NotMeasured,
                };
                Checked {
                    target: format!("{case}: msgs/s >= {}x {peer}'s", number(factor)),
                    measured,
                    verdict,
                }
            }
            Target::Memory {
                case,
                peer,
                fraction,
            } => {
                let (us, them) = (median(case, SUBJECT, RSS), median(case, peer, RSS));
                let mib =
                    |v: Option<f64>| v.map_or("-".into(), |v| format!("{} MiB", number(v / MIB)));
                let verdict = match (us, them) {
                    (Some(us), Some(them)) if them > 0.0 => {
                        Verdict::of(us <= fraction * them, format!("{}x", number(us / them)))
                    }
                    _ => Verdict::NotMeasured,
                };
                Checked {
                    target: format!(
                        "{case}: peak RSS <= {} of {peer}'s",
                        fraction_text(fraction)
                    ),
                    measured: format!("{} vs {}", mib(us), mib(them)),
                    verdict,
                }
            }
            Target::Latency { case } => latency_target(matrix, case),
            Target::Instructions { peer, fraction } => {
                let us = per_message(costs, SUBJECT, "callgrind", instructions);
                let them = per_message(costs, peer, "callgrind", instructions);
                let verdict = match (us, them) {
                    (Some(us), Some(them)) if them.value > 0.0 => Verdict::of(
                        us.value <= fraction * them.value,
                        format!("{}x", number(us.value / them.value)),
                    ),
                    _ => Verdict::NotMeasured,
                };
                Checked {
                    target: format!(
                        "instructions per delivered message (callgrind, QoS 0 pairs) <= {} of {peer}'s",
                        fraction_text(fraction)
                    ),
                    measured: format!(
                        "{} vs {}",
                        per_text(us.map(|p| p.value)),
                        per_text(them.map(|p| p.value))
                    ),
                    verdict,
                }
            }
            Target::Syscalls { peer } => {
                let us = per_message(costs, SUBJECT, "perf", syscalls);
                let them = per_message(costs, peer, "perf", syscalls);
                let verdict = match (us, them) {
                    (Some(us), Some(them)) => {
                        let ratio = if them.value > 0.0 {
                            format!("{}x", number(us.value / them.value))
                        } else {
                            format!("{} vs 0", number(us.value))
                        };
                        Verdict::of(us.value <= them.value, ratio)
                    }
                    _ => Verdict::NotMeasured,
                };
                Checked {
                    target: format!("system calls per delivered message (QoS 0 pairs) <= {peer}'s"),
                    measured: format!(
                        "{} vs {}",
                        per_text(us.map(|p| p.value)),
                        per_text(them.map(|p| p.value))
                    ),
                    verdict,
                }
            }
            Target::NoLoss => no_loss_target(matrix),
        }
    }
}

fn latency_target(matrix: &Matrix, case: &str) -> Checked {
    let target = format!("{case}: p50 and p99 below every peer's");
    let Some(ours) = matrix.get(case, SUBJECT) else {
        return Checked {
            target,
            measured: "-".into(),
            verdict: Verdict::NotMeasured,
        };
    };
    let peers: Vec<&Runs> = matrix
        .brokers()
        .iter()
        .filter(|b| b.as_str() != SUBJECT)
        .filter_map(|b| matrix.get(case, b))
        .collect();
    let show = |r: &Runs| {
        format!(
            "{} {} / {} us",
            r.broker,
            opt(r.median(P50)),
            opt(r.median(P99))
        )
    };
    let mut measured = show(ours);
    for p in &peers {
        let _ = write!(measured, "; {}", show(p));
    }
    let (Some(p50), Some(p99)) = (ours.median(P50), ours.median(P99)) else {
        return Checked {
            target,
            measured,
            verdict: Verdict::NotMeasured,
        };
    };
    if peers.is_empty() {
        return Checked {
            target,
            measured,
            verdict: Verdict::NotMeasured,
        };
    }
    // The closest peer decides: the smallest ratio of theirs to ours.
    let mut worst: Option<(f64, f64)> = None;
    for p in &peers {
        if let (Some(t50), Some(t99)) = (p.median(P50), p.median(P99)) {
            let r = (t50 / p50, t99 / p99);
            worst = Some(match worst {
                Some((w50, w99)) => (w50.min(r.0), w99.min(r.1)),
                None => r,
            });
        }
    }
    let verdict = match worst {
        Some((r50, r99)) => Verdict::of(
            r50 > 1.0 && r99 > 1.0,
            format!(
                "closest peer's / ringmq's: p50 {}x, p99 {}x",
                number(r50),
                number(r99)
            ),
        ),
        None => Verdict::NotMeasured,
    };
    Checked {
        target,
        measured,
        verdict,
    }
}

fn no_loss_target(matrix: &Matrix) -> Checked {
    let mut runs = 0usize;
    let mut lost = 0.0;
    for (_, brokers) in &matrix.cases {
        if let Some(r) = brokers.get(SUBJECT) {
            if r.qos().is_some_and(|q| q >= 1.0) {
                runs += r.reports.len();
                lost += r.total(LOST);
            }
        }
    }
    let verdict = if runs == 0 {
        Verdict::NotMeasured
    } else {
        Verdict::of(lost == 0.0, format!("{} lost", number(lost)))
    };
    Checked {
        target: "zero lost QoS 1/2 messages in every ringmq run".into(),
        measured: format!("{} lost in {runs} QoS 1/2 runs", number(lost)),
        verdict,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), number)
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{} msgs/s", number(v)))
}

/// A per-message figure: below 10 (system calls) with three decimals, so 0.012 and
/// 0.09 stay apart.
fn per_text(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v.abs() < 10.0 {
            format!("{:.3}", v.max(0.0))
        } else {
            number(v)
        }
    })
}

fn fraction_text(f: f64) -> String {
    if f > 0.0 && (1.0 / f - (1.0 / f).round()).abs() < 1e-9 {
        format!("1/{}", number((1.0 / f).round()))
    } else {
        number(f)
    }
}

/// The comparison of a results folder, as markdown.
pub fn compare(dir: &Path) -> Result<String> {
    let matrix = results::load_matrix(dir)?;
    let costs = results::load_costs(dir)?;
    let plots = crate::plot::plot_files(dir)?;
    Ok(render(&matrix, &costs, &plots))
}

/// Renders the tables; `plots` are paths relative to the folder.
pub fn render(matrix: &Matrix, costs: &[Cost], plots: &[String]) -> String {
    let mut out = String::new();
    let brokers = matrix.brokers();
    load_table(&mut out, matrix);
    connect_table(&mut out, matrix);
    let _ = writeln!(out, "## Targets of issue #4\n");
    let _ = writeln!(out, "| target | measured (ringmq vs peer) | result |");
    let _ = writeln!(out, "|---|---|---|");
    let mut missed_latency: Vec<&str> = Vec::new();
    for t in TARGETS {
        let c = t.check(matrix, costs);
        if let (Target::Latency { case }, Verdict::NotMet(_)) = (t, &c.verdict) {
            missed_latency.push(case);
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c.target,
            c.measured,
            c.verdict.text()
        );
    }
    out.push('\n');
    if let Some(note) = wake_gap_note(matrix, costs, &missed_latency) {
        let _ = writeln!(out, "{note}\n");
    }
    cost_table(&mut out, costs, &brokers);
    wake_table(&mut out, costs, &brokers);
    if !plots.is_empty() {
        let _ = writeln!(out, "## Plots\n");
        for p in plots {
            let _ = writeln!(out, "- [{p}]({p})");
        }
        out.push('\n');
    }
    out
}

fn load_table(out: &mut String, matrix: &Matrix) {
    let _ = writeln!(out, "## Scenario x broker\n");
    let _ = writeln!(
        out,
        "msgs/s are deliveries to subscribers, median (min-max); latency in microseconds; \
         `vs ringmq` is ringmq's advantage on the case's headline figure (msgs/s at max rate, \
         p99 at a fixed rate): above 1, ringmq is better.\n"
    );
    let _ = writeln!(
        out,
        "| case | broker | runs | msgs/s | p50 | p95 | p99 | p99.9 | lost | CPU s / M msgs | peak RSS MiB | vs ringmq |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, brokers) in &matrix.cases {
        let Some(first) = brokers.values().next() else {
            continue;
        };
        if first.scenario() == "connect" {
            continue;
        }
        let ours = brokers.get(SUBJECT);
        for b in matrix.brokers() {
            let Some(r) = brokers.get(&b) else { continue };
            let advantage = match ours {
                Some(o) if r.is_max_rate() => ratio(o.median(RECEIVED), r.median(RECEIVED)),
                Some(o) => ratio(r.median(P99), o.median(P99)),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {case} | {b} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {advantage} |",
                r.reports.len(),
                with_spread(r, RECEIVED),
                opt(r.median(P50)),
                opt(r.median(P95)),
                opt(r.median(P99)),
                opt(r.median(P999)),
                opt(r.median(LOST)),
                opt(r.median(CPU_PER_M)),
                opt(r.median(RSS).map(|v| v / MIB)),
            );
        }
    }
    out.push('\n');
}

fn connect_table(out: &mut String, matrix: &Matrix) {
    let storms: Vec<_> = matrix
        .cases
        .iter()
        .filter(|(_, b)| b.values().next().is_some_and(|r| r.scenario() == "connect"))
        .collect();
    if storms.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| case | broker | runs | connections/s | CONNACK p50 ms | CONNACK p99 ms | failed | peak RSS MiB | vs ringmq |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (case, brokers) in storms {
        let ours = brokers.get(SUBJECT);
        for b in matrix.brokers() {
            let Some(r) = brokers.get(&b) else { continue };
            let advantage = ours.map_or("-".into(), |o| {
                ratio(o.median(CONN_PER_S), r.median(CONN_PER_S))
            });
            let _ = writeln!(
                out,
                "| {case} | {b} | {} | {} | {} | {} | {} | {} | {advantage} |",
                r.reports.len(),
                with_spread(r, CONN_PER_S),
                opt(r.median(CONNACK_P50)),
                opt(r.median(CONNACK_P99)),
                opt(r.median(FAILED)),
                opt(r.median(RSS).map(|v| v / MIB)),
            );
        }
    }
    out.push('\n');
}

fn cost_table(out: &mut String, costs: &[Cost], brokers: &[String]) {
    let _ = writeln!(out, "## Cost per delivered message (QoS 0 pairs)\n");
    if !costs
        .iter()
        .any(|c| c.tool == "callgrind" || c.tool == "perf")
    {
        let _ = writeln!(
            out,
            "Not measured in this folder: `scripts/cost-per-message.sh --out DIR` adds it.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Difference of two fixed-count runs divided by the difference in deliveries, so \
         start-up, connections and shutdown cancel out. Instructions: `valgrind --tool=callgrind` \
         (user space, exact). System calls: `perf stat` on the tracepoints \
         `raw_syscalls:sys_enter` (every system call), `syscalls:sys_enter_io_uring_enter` \
         and `io_uring:io_uring_submit_req` (one per submitted SQE), over the broker's \
         whole life. Raw counts: cost/; where the instructions go: \
         cost/raw/<broker>-callgrind-profile.txt.\n"
    );
    let _ = writeln!(
        out,
        "| broker | instructions / msg | system calls / msg | io_uring_enter / msg | SQEs / msg | deliveries in the difference (callgrind; perf) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for b in broker_names(costs, brokers) {
        let ins = per_message(costs, b, "callgrind", instructions);
        let sys = per_message(costs, b, "perf", syscalls);
        if ins.is_none() && sys.is_none() {
            continue;
        }
        let enter = per_message(costs, b, "perf", |c| c.io_uring_enter.map(|n| n as f64));
        let sqes = per_message(costs, b, "perf", |c| c.sqes.map(|n| n as f64));
        // A count that does not grow with messages can come out a hair below zero.
        let per = |p: Option<results::PerMessage>| {
            p.map_or("-".into(), |p| format!("{:.3}", p.value.max(0.0)))
        };
        let _ = writeln!(
            out,
            "| {b} | {} | {} | {} | {} | {}; {} |",
            ins.map_or("-".into(), |p| format!("{:.0}", p.value)),
            per(sys),
            per(enter),
            per(sqes),
            ins.map_or("-".into(), |p| p.delivered_delta.to_string()),
            sys.map_or("-".into(), |p| p.delivered_delta.to_string()),
        );
    }
    out.push('\n');
}

/// The matrix's brokers, then any other broker with cost measurements.
fn broker_names<'a>(costs: &'a [Cost], brokers: &'a [String]) -> Vec<&'a str> {
    let mut names: Vec<&str> = brokers.iter().map(String::as_str).collect();
    for c in costs {
        if !names.contains(&c.broker.as_str()) {
            names.push(&c.broker);
        }
    }
    names
}

/// When latency targets were missed (`missed`: their cases) and the wake cost was
/// measured: where the time goes, in one sentence pointing at the table.
fn wake_gap_note(matrix: &Matrix, costs: &[Cost], missed: &[&str]) -> Option<String> {
    if missed.is_empty() {
        return None;
    }
    let cpu = |b: &str| per_message(costs, b, "wakes", |c| c.cpu_ms.map(|ms| ms * 1000.0));
    let ours = cpu(SUBJECT)?;
    let peers: Vec<String> = matrix
        .brokers()
        .iter()
        .filter(|b| b.as_str() != SUBJECT)
        .filter_map(|b| Some(format!("{b} {:.1}", cpu(b)?.value)))
        .collect();
    Some(format!(
        "Latency targets not met: {}. At these rates every message wakes the broker; a \
         woken ringmq spent {:.1} us of CPU per message ({}), see the cost of a woken \
         broker below for the system calls behind it.",
        missed.join(", "),
        ours.value,
        if peers.is_empty() {
            "no peer measured".to_string()
        } else {
            format!("us per message: {}", peers.join(", "))
        }
    ))
}

/// Where a broker's time goes when every message wakes it (the latency cases).
fn wake_table(out: &mut String, costs: &[Cost], brokers: &[String]) {
    if !costs.iter().any(|c| c.tool == "wakes") {
        return;
    }
    let _ = writeln!(
        out,
        "## Cost of a woken broker (QoS 1 pairs at a fixed rate)
"
    );
    let _ = writeln!(
        out,
        "At this rate every message wakes the broker, as in the latency cases, so the \
         cost of going to sleep and waking up is part of every message. `perf stat` on \
         the broker: its CPU time (`task-clock`) and its system calls by name \
         (`syscalls:sys_enter_<call>`), as the difference of two fixed-count runs per \
         delivered message (cost/*-wakes-*.json).\n"
    );
    let _ = writeln!(
        out,
        "| broker | CPU us / msg | system calls / msg | the calls / msg |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for b in broker_names(costs, brokers) {
        let Some(cpu) = per_message(costs, b, "wakes", |c| c.cpu_ms.map(|ms| ms * 1000.0)) else {
            continue;
        };
        let sys = per_message(costs, b, "wakes", syscalls);
        let mut names: Vec<&str> = costs
            .iter()
            .filter(|c| c.broker == b && c.tool == "wakes")
            .flat_map(|c| c.calls.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut calls: Vec<(&str, f64)> = names
            .into_iter()
            .filter_map(|name| {
                let per = per_message(costs, b, "wakes", |c| {
                    Some(c.calls.get(name).copied().unwrap_or(0) as f64)
                })?;
                (per.value >= 0.05).then_some((name, per.value))
            })
            .collect();
        calls.sort_by(|x, y| y.1.total_cmp(&x.1));
        let calls: Vec<String> = calls
            .iter()
            .map(|(name, per)| format!("{name} {per:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "| {b} | {:.1} | {} | {} |",
            cpu.value.max(0.0),
            sys.map_or("-".into(), |p| format!("{:.2}", p.value.max(0.0))),
            if calls.is_empty() {
                "-".into()
            } else {
                calls.join(", ")
            },
        );
    }
    out.push('\n');
}

/// `a / b` as `N.NNx`, or `-`.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}x", number(a / b)),
        _ => "-".into(),
    }
}

fn with_spread(r: &Runs, path: &[&str]) -> String {
    match (r.median(path), r.spread(path)) {
        (Some(m), Some((lo, hi))) if r.reports.len() > 1 && lo != hi => {
            format!("{} ({}-{})", number(m), number(lo), number(hi))
        }
        (Some(m), _) => number(m),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::{json, Value};

    fn run(
        label: &str,
        mode: &str,
        qos: u8,
        received: f64,
        p50: f64,
        p99: f64,
        rss_mib: f64,
    ) -> Value {
        json!({
            "config": {"scenario": "pairs", "label": label, "qos": qos, "rate": {"mode": mode}},
            "results": {"received_per_s": received, "lost": 0,
                        "latency_us": {"p50": p50, "p95": p99, "p99": p99, "p999": p99},
                        "broker": {"peak_rss_bytes": rss_mib * MIB, "cpu_s_per_million_msgs": 1.0}}
        })
    }

    fn matrix() -> Matrix {
        Matrix::from_reports(vec![
            run("ringmq/pairs-qos0-max", "max", 0, 900_000.0, 1.0, 1.0, 20.0),
            run(
                "rumqttd/pairs-qos0-max",
                "max",
                0,
                250_000.0,
                1.0,
                1.0,
                1400.0,
            ),
            run(
                "mosquitto/pairs-qos0-max",
                "max",
                0,
                100_000.0,
                1.0,
                1.0,
                9.0,
            ),
            run(
                "ringmq/pairs-qos1-10k",
                "per-publisher",
                1,
                10_000.0,
                80.0,
                300.0,
                20.0,
            ),
            run(
                "mosquitto/pairs-qos1-10k",
                "per-publisher",
                1,
                10_000.0,
                90.0,
                200.0,
                9.0,
            ),
            run(
                "rumqttd/pairs-qos1-10k",
                "per-publisher",
                1,
                10_000.0,
                95.0,
                900.0,
                30.0,
            ),
        ])
    }

    fn check(t: Target) -> Checked {
        t.check(&matrix(), &[])
    }

    #[test]
    fn throughput_targets_compare_medians() {
        let c = check(Target::Throughput {
            case: "pairs-qos0-max",
            peer: "rumqttd",
            factor: 3.0,
        });
        assert_eq!(c.verdict, Verdict::Met("3.60x".into()));
        let c = check(Target::Throughput {
            case: "pairs-qos0-max",
            peer: "mosquitto",
            factor: 10.0,
        });
        assert_eq!(c.verdict, Verdict::NotMet("9x".into()));
        let c = check(Target::Throughput {
            case: "fan-in-qos0-max",
            peer: "rumqttd",
            factor: 3.0,
        });
        assert_eq!(c.verdict, Verdict::NotMeasured);
    }

    #[test]
    fn memory_target() {
        let c = check(Target::Memory {
            case: "pairs-qos0-max",
            peer: "rumqttd",
            fraction: 0.1,
        });
        assert!(matches!(c.verdict, Verdict::Met(_)), "{c:?}");
        assert!(c.target.contains("1/10"), "{}", c.target);
    }

    #[test]
    fn latency_target_needs_both_percentiles_below_every_peer() {
        // p50 is lower than both peers', p99 is not lower than mosquitto's.
        let c = check(Target::Latency {
            case: "pairs-qos1-10k",
        });
        assert!(
            matches!(&c.verdict, Verdict::NotMet(r) if r.contains("p99 0.67x")),
            "{c:?}"
        );
        assert!(
            c.measured.contains("mosquitto 90 / 200 us"),
            "{}",
            c.measured
        );
    }

    #[test]
    fn cost_targets_use_the_difference_method() {
        let cost = |broker: &str, delivered, instructions, syscalls| Cost {
            broker: String::from(broker),
            tool: if syscalls == 0 {
                "callgrind".into()
            } else {
                "perf".into()
            },
            messages: delivered,
            delivered,
            instructions: (instructions > 0).then_some(instructions),
            syscalls: (syscalls > 0).then_some(syscalls),
            io_uring_enter: None,
            sqes: None,
            cpu_ms: None,
            calls: Default::default(),
        };
        let costs = vec![
            cost("ringmq", 1000, 1_000_000, 0),
            cost("ringmq", 2000, 2_000_000, 0),
            cost("mosquitto", 1000, 5_000_000, 0),
            cost("mosquitto", 2000, 9_000_000, 0),
            cost("ringmq", 1000, 0, 100),
            cost("ringmq", 3000, 0, 200),
            cost("rumqttd", 1000, 0, 100),
            cost("rumqttd", 2000, 0, 140),
        ];
        let m = matrix();
        let c = Target::Instructions {
            peer: "mosquitto",
            fraction: 1.0 / 3.0,
        }
        .check(&m, &costs);
        assert_eq!(c.verdict, Verdict::Met("0.25x".into()));
        assert_eq!(c.measured, "1000 vs 4000");
        let c = Target::Syscalls { peer: "rumqttd" }.check(&m, &costs);
        // 0.05 per message against 0.04.
        assert_eq!(c.verdict, Verdict::NotMet("1.25x".into()));
        let table = render(&m, &costs, &["plots/throughput.svg".into()]);
        assert!(table.contains("| ringmq | 1000 | 0.050 |"), "{table}");
        assert!(table.contains("[plots/throughput.svg](plots/throughput.svg)"));
    }

    #[test]
    fn tables_show_every_broker_and_the_advantage() {
        let table = render(&matrix(), &[], &[]);
        let row = table
            .lines()
            .find(|l| l.starts_with("| pairs-qos0-max | rumqttd |"))
            .unwrap();
        assert!(row.ends_with("| 3.60x |"), "{row}");
        // At a fixed rate the advantage is the peer's p99 over ringmq's.
        let row = table
            .lines()
            .find(|l| l.starts_with("| pairs-qos1-10k | rumqttd |"))
            .unwrap();
        assert!(row.ends_with("| 3x |"), "{row}");
        assert!(table.contains("| zero lost QoS 1/2 messages in every ringmq run | 0 lost in 1 QoS 1/2 runs | **met** (0 lost) |"), "{table}");
        assert!(
            table.contains("fan-out-qos0-max: msgs/s >= 2x rumqttd's | - vs - | not measured |"),
            "{table}"
        );
        assert!(table.contains("Not measured in this folder"));
    }

    #[test]
    fn the_wake_table_breaks_the_cost_down_by_call() {
        let wake = |broker: &str, delivered: u64, cpu_ms: f64, calls: &[(&str, u64)]| Cost {
            broker: broker.into(),
            tool: "wakes".into(),
            messages: delivered,
            delivered,
            instructions: None,
            syscalls: Some(calls.iter().map(|(_, n)| n).sum()),
            io_uring_enter: None,
            sqes: None,
            cpu_ms: Some(cpu_ms),
            calls: calls.iter().map(|(k, n)| ((*k).to_string(), *n)).collect(),
        };
        let costs = vec![
            wake(
                "ringmq",
                1000,
                500.0,
                &[("io_uring_enter", 2000), ("recvfrom", 100)],
            ),
            wake(
                "ringmq",
                3000,
                900.0,
                &[("io_uring_enter", 6000), ("recvfrom", 4100)],
            ),
            // A call seen in one run only counts as 0 in the other.
            wake("mosquitto", 1000, 300.0, &[("epoll_wait", 1000)]),
            wake(
                "mosquitto",
                2000,
                350.0,
                &[("epoll_wait", 2000), ("read", 2000)],
            ),
        ];
        let table = render(&matrix(), &costs, &[]);
        assert!(
            table.contains("| ringmq | 200.0 | 4.00 | io_uring_enter 2.00, recvfrom 2.00 |"),
            "{table}"
        );
        assert!(
            table.contains("| mosquitto | 50.0 | 3.00 | read 2.00, epoll_wait 1.00 |"),
            "{table}"
        );
        assert!(!render(&matrix(), &[], &[]).contains("woken broker"));
        assert!(
            table.contains(
                "a woken ringmq spent 200.0 us of CPU per message (us per message: mosquitto 50.0)"
            ),
            "{table}"
        );
    }
}
