//! `ringmq-bench summarize FILE...`: one markdown table from many `--json` reports,
//! one row per label (or scenario), each figure as the median and the spread
//! (min-max) of the repeated runs. `scripts/perf-test.sh` writes its `summary.md`
//! with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

/// A column: its header and where its value is in a report.
struct Column {
    header: &'static str,
    path: &'static [&'static str],
    /// Multiplies the value (e.g. bytes to MiB).
    scale: f64,
}

const LOAD_COLUMNS: &[Column] = &[
    Column {
        header: "sent msg/s",
        path: &["results", "sent_per_s"],
        scale: 1.0,
    },
    Column {
        header: "received msg/s",
        path: &["results", "received_per_s"],
        scale: 1.0,
    },
    Column {
        header: "p50 us",
        path: &["results", "latency_us", "p50"],
        scale: 1.0,
    },
    Column {
        header: "p95 us",
        path: &["results", "latency_us", "p95"],
        scale: 1.0,
    },
    Column {
        header: "p99 us",
        path: &["results", "latency_us", "p99"],
        scale: 1.0,
    },
    Column {
        header: "p99.9 us",
        path: &["results", "latency_us", "p999"],
        scale: 1.0,
    },
    Column {
        header: "max us",
        path: &["results", "latency_us", "max"],
        scale: 1.0,
    },
    Column {
        header: "lost",
        path: &["results", "lost"],
        scale: 1.0,
    },
    Column {
        header: "broker CPU s / M msgs",
        path: &["results", "broker", "cpu_s_per_million_msgs"],
        scale: 1.0,
    },
    Column {
        header: "broker peak RSS MiB",
        path: &["results", "broker", "peak_rss_bytes"],
        scale: 1.0 / (1024.0 * 1024.0),
    },
    Column {
        header: "generator CPU share",
        path: &["results", "generator_cpu_share"],
        scale: 1.0,
    },
];

const CONNECT_COLUMNS: &[Column] = &[
    Column {
        header: "connections/s",
        path: &["results", "connect", "connections_per_s"],
        scale: 1.0,
    },
    Column {
        header: "CONNACK p50 ms",
        path: &["results", "connect", "connack_ms", "p50"],
        scale: 1.0,
    },
    Column {
        header: "CONNACK p99 ms",
        path: &["results", "connect", "connack_ms", "p99"],
        scale: 1.0,
    },
    Column {
        header: "CONNACK max ms",
        path: &["results", "connect", "connack_ms", "max"],
        scale: 1.0,
    },
    Column {
        header: "failed",
        path: &["results", "connections_failed"],
        scale: 1.0,
    },
    Column {
        header: "broker peak RSS MiB",
        path: &["results", "broker", "peak_rss_bytes"],
        scale: 1.0 / (1024.0 * 1024.0),
    },
];

/// Reads the reports and renders the tables.
pub fn summarize(files: &[PathBuf]) -> Result<String> {
    let mut reports = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON report", file.display()))?;
        reports.push(report);
    }
    Ok(render(&reports))
}

/// The tables of `reports`: load scenarios first, then connect storms.
pub fn render(reports: &[Value]) -> String {
    let mut groups: BTreeMap<(bool, String), Vec<&Value>> = BTreeMap::new();
    for report in reports {
        let text = |key| lookup_str(report, &["config", key]);
        let scenario = text("scenario").unwrap_or("?");
        let label = text("label").unwrap_or(scenario).to_string();
        groups
            .entry((scenario == "connect", label))
            .or_default()
            .push(report);
    }
    let mut out = String::new();
    for (connect, columns) in [(false, LOAD_COLUMNS), (true, CONNECT_COLUMNS)] {
        let rows: Vec<_> = groups.iter().filter(|((c, _), _)| *c == connect).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(out, "| case | runs |");
        for c in columns {
            let _ = write!(out, " {} |", c.header);
        }
        let _ = write!(out, "\n|---|---|");
        for _ in columns {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        for ((_, label), runs) in rows {
            let _ = write!(out, "| {label} | {} |", runs.len());
            for c in columns {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| lookup(r, c.path))
                    .map(|v| v * c.scale)
                    .collect();
                let _ = write!(out, " {} |", cell(&values));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn lookup_str<'a>(report: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(report, |v, key| v.get(key))?.as_str()
}

fn lookup(report: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(report, |v, key| v.get(key))?.as_f64()
}

/// `median (min-max)`, or `-` without values.
fn cell(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
        return "-".to_string();
    };
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted.get(mid).copied().unwrap_or(min)
    } else {
        (sorted.get(mid - 1).copied().unwrap_or(min) + sorted.get(mid).copied().unwrap_or(max))
            / 2.0
    };
    if sorted.len() == 1 || min == max {
        number(median)
    } else {
        format!("{} ({}-{})", number(median), number(min), number(max))
    }
}

/// A figure for a table: whole above 100 or when whole, else two decimals.
pub(crate) fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(label: &str, received: f64, p99: f64) -> Value {
        json!({
            "config": {"scenario": "pairs", "label": label},
            "results": {"sent_per_s": received, "received_per_s": received, "lost": 0,
                        "latency_us": {"p50": 10.0, "p95": 20.0, "p99": p99, "p999": 40.0, "max": 50.0}}
        })
    }

    #[test]
    fn median_and_spread_per_label() {
        let reports = [
            run("a", 100.0, 30.0),
            run("a", 300.0, 35.5),
            run("a", 200.0, 31.0),
            run("b", 7.0, 1.0),
        ];
        let table = render(&reports);
        let row_a = table
            .lines()
            .find(|l| l.starts_with("| a |"))
            .unwrap_or_default();
        assert!(
            row_a.contains("| 3 | 200 (100-300) | 200 (100-300) | 10 | 20 | 31 (30-35.50) |"),
            "{row_a}"
        );
        assert!(
            table.lines().any(|l| l.starts_with("| b | 1 | 7 |")),
            "{table}"
        );
        // No broker figures in these reports.
        assert!(row_a.ends_with("| - | - | - |"), "{row_a}");
    }

    #[test]
    fn connect_storms_get_their_own_table() {
        let storm = json!({"config": {"scenario": "connect"}, "results": {"connections_failed": 0,
            "connect": {"connections_per_s": 5000.0, "connack_ms": {"p50": 1.5, "p99": 9.0, "max": 12.0}}}});
        let table = render(&[storm, run("a", 1.0, 1.0)]);
        assert!(
            table.contains("| connect | 1 | 5000 | 1.50 | 9 | 12 | 0 | - |"),
            "{table}"
        );
        assert!(table.find("| a |") < table.find("| connect |"));
    }

    #[test]
    fn medians_of_even_counts() {
        assert_eq!(cell(&[1.0, 2.0, 3.0, 10.0]), "2.50 (1-10)");
        assert_eq!(cell(&[]), "-");
        assert_eq!(cell(&[4.0, 4.0]), "4");
    }
}
