//! A results folder of `scripts/perf-test.sh`, read back: the raw reports grouped
//! by case and broker, with the median of each figure over the repeated runs, and
//! the cost-per-message measurements of `scripts/cost-per-message.sh`.
//!
//! Layout of a folder: `raw/<broker>-<case>-<n>.json` (one `--json` report each,
//! labelled `<broker>/<case>`), `cost/*.json` (one measurement each, see [`Cost`]),
//! `plots/*.svg` (written by [`crate::plot`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// Reports one folder may hold: far above any matrix the script runs.
pub const REPORTS_MAX: usize = 10_000;
/// Brokers in one comparison, in the order tables and plots show them.
pub const BROKERS: &[&str] = &["ringmq", "mosquitto", "rumqttd"];
/// The broker every ratio is relative to.
pub const SUBJECT: &str = "ringmq";

/// The repeated runs of one case against one broker.
#[derive(Debug, Clone)]
pub struct Runs {
    pub case: String,
    pub broker: String,
    pub reports: Vec<Value>,
}

impl Runs {
    /// Median over the runs of the number at `path`, or `None` if no run has it.
    pub fn median(&self, path: &[&str]) -> Option<f64> {
        median(
            self.reports
                .iter()
                .filter_map(|r| number(r, path))
                .collect(),
        )
    }

    /// The smallest and largest value at `path`.
    pub fn spread(&self, path: &[&str]) -> Option<(f64, f64)> {
        let values: Vec<f64> = self
            .reports
            .iter()
            .filter_map(|r| number(r, path))
            .collect();
        let min = values.iter().copied().reduce(f64::min)?;
        let max = values.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }

    /// The sum over the runs of the number at `path` (absent counts as 0).
    pub fn total(&self, path: &[&str]) -> f64 {
        self.reports.iter().filter_map(|r| number(r, path)).sum()
    }

    pub fn scenario(&self) -> &str {
        self.reports
            .first()
            .and_then(|r| text(r, &["config", "scenario"]))
            .unwrap_or("?")
    }

    /// Max-rate cases are judged by throughput, fixed-rate ones by latency.
    pub fn is_max_rate(&self) -> bool {
        self.reports
            .first()
            .and_then(|r| text(r, &["config", "rate", "mode"]))
            == Some("max")
    }

    pub fn qos(&self) -> Option<f64> {
        self.reports
            .first()
            .and_then(|r| number(r, &["config", "qos"]))
    }

    /// The run whose p50 latency is the median one: its curve stands for the case.
    pub fn typical(&self) -> Option<&Value> {
        let mut with_p50: Vec<(f64, &Value)> = self
            .reports
            .iter()
            .filter_map(|r| Some((number(r, &["results", "latency_us", "p50"])?, r)))
            .collect();
        with_p50.sort_by(|a, b| a.0.total_cmp(&b.0));
        with_p50.get(with_p50.len() / 2).map(|(_, r)| *r)
    }
}

/// Every case of a folder, each with its runs per broker.
#[derive(Debug, Default)]
pub struct Matrix {
    /// Case -> broker -> runs, cases in the order of their first report's file name.
    pub cases: Vec<(String, BTreeMap<String, Runs>)>,
}

impl Matrix {
    pub fn get(&self, case: &str, broker: &str) -> Option<&Runs> {
        self.cases
            .iter()
            .find(|(c, _)| c == case)
            .and_then(|(_, brokers)| brokers.get(broker))
    }

    /// Brokers that appear anywhere, in [`BROKERS`] order, others after.
    pub fn brokers(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (_, brokers) in &self.cases {
            for b in brokers.keys() {
                if !seen.contains(b) {
                    seen.push(b.clone());
                }
            }
        }
        let rank = |b: &String| BROKERS.iter().position(|k| k == b).unwrap_or(BROKERS.len());
        seen.sort_by_key(rank);
        seen
    }

    /// Groups reports by their label `<broker>/<case>` (a label without a broker is
    /// ringmq's, as `perf-test.sh` without `--peers` used to write).
    pub fn from_reports(reports: Vec<Value>) -> Matrix {
        let mut matrix = Matrix::default();
        for report in reports {
            let label = text(&report, &["config", "label"])
                .or_else(|| text(&report, &["config", "scenario"]))
                .unwrap_or("?")
                .to_string();
            let (broker, case) = match label.split_once('/') {
                Some((b, c)) => (b.to_string(), c.to_string()),
                None => (SUBJECT.to_string(), label),
            };
            let index = match matrix.cases.iter().position(|(c, _)| *c == case) {
                Some(i) => i,
                None => {
                    matrix.cases.push((case.clone(), BTreeMap::new()));
                    matrix.cases.len() - 1
                }
            };
            if let Some((_, brokers)) = matrix.cases.get_mut(index) {
                brokers
                    .entry(broker.clone())
                    .or_insert_with(|| Runs {
                        case,
                        broker,
                        reports: Vec::new(),
                    })
                    .reports
                    .push(report);
            }
        }
        matrix
    }
}

/// Reads `dir/raw/*.json`, in the order the matrix ran them when the script's
/// `order.txt` is there (one label per line), else by file name.
pub fn load_matrix(dir: &Path) -> Result<Matrix> {
    let files = json_files(&dir.join("raw"))?;
    let mut reports = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        // A run that died before printing leaves an empty file; its .txt says why.
        if text.trim().is_empty() {
            continue;
        }
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON report", file.display()))?;
        reports.push(report);
    }
    let mut matrix = Matrix::from_reports(reports);
    if let Ok(order) = std::fs::read_to_string(dir.join("order.txt")) {
        let rank = |case: &str| {
            order
                .lines()
                .position(|l| l.trim() == case)
                .unwrap_or(usize::MAX)
        };
        matrix.cases.sort_by_key(|(case, _)| rank(case));
    }
    Ok(matrix)
}

/// `*.json` files of a directory, sorted by name; none if it does not exist.
pub fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
        if files.len() > REPORTS_MAX {
            bail!("{}: more than {REPORTS_MAX} reports", dir.display());
        }
    }
    files.sort();
    Ok(files)
}

/// One cost measurement of `scripts/cost-per-message.sh`: a broker run for a fixed
/// message count under one counting tool.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Cost {
    pub broker: String,
    /// `callgrind` (user-space instructions) or `perf` (system calls, tracepoints).
    pub tool: String,
    /// `--messages` of the run.
    pub messages: u64,
    /// Deliveries the bench counted.
    pub delivered: u64,
    /// callgrind: instructions executed by the broker over its whole life.
    #[serde(default)]
    pub instructions: Option<u64>,
    /// perf: `raw_syscalls:sys_enter` of the broker over its whole life.
    #[serde(default)]
    pub syscalls: Option<u64>,
    /// perf: `syscalls:sys_enter_io_uring_enter`.
    #[serde(default)]
    pub io_uring_enter: Option<u64>,
    /// perf: `io_uring:io_uring_submit_req`, one per submitted SQE.
    #[serde(default)]
    pub sqes: Option<u64>,
    /// wakes: the broker's CPU time (`task-clock`) in milliseconds.
    #[serde(default)]
    pub cpu_ms: Option<f64>,
    /// wakes: `syscalls:sys_enter_<call>` by call name, calls made at least once.
    #[serde(default)]
    pub calls: BTreeMap<String, u64>,
}

/// A cost per delivered message of one broker, by the difference of its smallest
/// and largest fixed-count run, so start-up, connections and shutdown cancel out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerMessage {
    pub value: f64,
    /// Deliveries between the two runs the difference was taken over.
    pub delivered_delta: u64,
}

/// The per-message difference of `pick` for `broker` under `tool`: `None` without two
/// runs that differ in deliveries.
pub fn per_message(
    costs: &[Cost],
    broker: &str,
    tool: &str,
    pick: impl Fn(&Cost) -> Option<f64>,
) -> Option<PerMessage> {
    let mut runs: Vec<(&Cost, f64)> = costs
        .iter()
        .filter(|c| c.broker == broker && c.tool == tool)
        .filter_map(|c| Some((c, pick(c)?)))
        .collect();
    runs.sort_by_key(|(c, _)| c.delivered);
    let (small, large) = (runs.first()?, runs.last()?);
    let delivered_delta = large.0.delivered.checked_sub(small.0.delivered)?;
    if delivered_delta == 0 {
        return None;
    }
    let counted = large.1 - small.1;
    Some(PerMessage {
        value: counted / delivered_delta as f64,
        delivered_delta,
    })
}

/// Reads `dir/cost/*.json`.
pub fn load_costs(dir: &Path) -> Result<Vec<Cost>> {
    let mut costs = Vec::new();
    for file in json_files(&dir.join("cost"))? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let cost: Cost = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a cost measurement", file.display()))?;
        costs.push(cost);
    }
    Ok(costs)
}

pub fn number(report: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(report, |v, key| v.get(key))?.as_f64()
}

pub fn text<'a>(report: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(report, |v, key| v.get(key))?.as_str()
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values.get(mid).copied()
    } else {
        Some((values.get(mid.checked_sub(1)?)? + values.get(mid)?) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn report(label: &str, received: f64) -> Value {
        json!({"config": {"scenario": "pairs", "label": label, "rate": {"mode": "max"}},
               "results": {"received_per_s": received}})
    }

    #[test]
    fn labels_split_into_case_and_broker() {
        let m = Matrix::from_reports(vec![
            report("rumqttd/pairs", 3.0),
            report("ringmq/pairs", 1.0),
            report("ringmq/pairs", 5.0),
            report("fan-in", 2.0),
        ]);
        assert_eq!(m.cases.len(), 2);
        assert_eq!(m.cases[0].0, "pairs");
        assert_eq!(m.brokers(), vec!["ringmq", "rumqttd"]);
        let runs = m.get("pairs", "ringmq").unwrap();
        assert_eq!(runs.median(&["results", "received_per_s"]), Some(3.0));
        assert_eq!(
            runs.spread(&["results", "received_per_s"]),
            Some((1.0, 5.0))
        );
        assert!(runs.is_max_rate());
        // An unlabelled broker is ringmq.
        assert!(m.get("fan-in", "ringmq").is_some());
        assert!(m.get("fan-in", "mosquitto").is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    fn cost(broker: &str, delivered: u64, instructions: u64) -> Cost {
        Cost {
            broker: broker.into(),
            tool: "callgrind".into(),
            messages: delivered,
            delivered,
            instructions: Some(instructions),
            syscalls: None,
            io_uring_enter: None,
            sqes: None,
            cpu_ms: None,
            calls: BTreeMap::new(),
        }
    }

    #[test]
    fn cost_per_message_is_a_difference() {
        // 50M instructions of start-up and shutdown cancel out: 1000 per message.
        let costs = vec![
            cost("ringmq", 300_000, 350_000_000),
            cost("ringmq", 100_000, 150_000_000),
            cost("mosquitto", 100_000, 1),
        ];
        let pick = |c: &Cost| c.instructions.map(|n| n as f64);
        let per = per_message(&costs, "ringmq", "callgrind", pick).unwrap();
        assert_eq!(per.value, 1000.0);
        assert_eq!(per.delivered_delta, 200_000);
        // One run is not a difference.
        assert_eq!(per_message(&costs, "mosquitto", "callgrind", pick), None);
        assert_eq!(per_message(&costs, "ringmq", "perf", pick), None);
        let pick_syscalls = |c: &Cost| c.syscalls.map(|n| n as f64);
        assert_eq!(
            per_message(&costs, "ringmq", "callgrind", pick_syscalls),
            None
        );
    }

    #[test]
    fn cost_files_parse() {
        let c: Cost = serde_json::from_str(
            r#"{"broker":"ringmq","tool":"perf","messages":10,"delivered":9,"syscalls":5,"io_uring_enter":2,"sqes":3}"#,
        )
        .unwrap();
        assert_eq!(
            (c.syscalls, c.io_uring_enter, c.sqes, c.instructions),
            (Some(5), Some(2), Some(3), None)
        );
    }
}
