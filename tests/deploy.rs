//! What `deploy/` and `scripts/install-systemd.sh` ship, checked with the tools
//! that will read them: promtool for the alert rules and the dashboard's queries,
//! a real broker's /metrics for every metric name they use, systemd-analyze for
//! the unit, the install script run into a staging root, and systemd's readiness
//! protocol spoken by the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod admin_harness;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use admin_harness::{sample_names, temp_dir, tool, Ringmq, WAIT};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every `expr:` of the alert rules (single-line or `|` blocks).
fn alert_expressions() -> Vec<String> {
    let rules = read(&repo().join("deploy/prometheus/alerts.yml"));
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != "|" {
            exprs.push(rest.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                break;
            }
            block.push_str(next.trim());
            block.push(' ');
            lines.next();
        }
        exprs.push(block);
    }
    exprs
}

/// Every query of the dashboard: panel targets and annotations.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&repo().join("deploy/grafana/ringmq.json"))).unwrap();
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has queries", panel["title"]);
        for target in targets {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        exprs.push(annotation["expr"].as_str().unwrap().to_owned());
    }
    exprs
}

/// The metrics the dashboard's variables read: `label_values(METRIC, label)`.
fn dashboard_variable_metrics() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&repo().join("deploy/grafana/ringmq.json"))).unwrap();
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|variable| variable["definition"].as_str())
        .filter_map(|query| {
            let inside = query.strip_prefix("label_values(")?;
            Some(inside.split([',', ')']).next()?.trim().to_owned())
        })
        .collect()
}

/// The metric names a PromQL expression reads: identifiers that are neither
/// functions, keywords, label names nor inside quotes or brackets.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const NOT_METRICS: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "irate",
        "increase",
        "delta",
        "deriv",
        "changes",
        "by",
        "without",
        "and",
        "or",
        "unless",
        "offset",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "label_values",
        "predict_linear",
        "histogram_quantile",
    ];
    let mut names = BTreeSet::new();
    // A space at the end ends the last word like any other.
    let expr = format!("{expr} ");

    let mut depth_braces = 0;
    let mut in_quotes = false;
    let mut in_range = false;
    let mut word = String::new();
    let mut after_by = false;
    for c in expr.chars() {
        if in_quotes {
            in_quotes = c != '"';
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' {
            word.push(c);
            continue;
        }
        let taken = std::mem::take(&mut word);
        let is_label_list = after_by;
        if !taken.is_empty()
            && depth_braces == 0
            && !in_range
            && !is_label_list
            && !taken.starts_with('$')
            && !taken.chars().next().unwrap().is_ascii_digit()
            && !NOT_METRICS.contains(&taken.as_str())
        {
            names.insert(taken.clone());
        }
        if taken == "by" || taken == "without" {
            after_by = true;
        }
        match c {
            '"' => in_quotes = true,
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => in_range = true,
            ']' => in_range = false,
            ')' if after_by => after_by = false,
            _ => {}
        }
    }
    names
}

#[test]
fn promql_names_are_found() {
    let names = metric_names(
        "sum by (instance, reason) (rate(ringmq_messages_dropped_total{reason=~\"a|b\"}[5m])) \
         / max by (instance) (ringmq_connections_max) > 0.9 and up{job=\"x\"} == 0",
    );
    let expected: BTreeSet<String> = [
        "ringmq_messages_dropped_total",
        "ringmq_connections_max",
        "up",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
}

#[test]
fn alert_rules_pass_promtool() {
    let promtool = tool("promtool", "prometheus");
    let output = Command::new(promtool)
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("SUCCESS"), "{}", text(&output));
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool checks PromQL inside rule files: give it the dashboard's queries
    // as recording rules, with Grafana's variables filled in.
    let promtool = tool("promtool", "prometheus");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, expr) in dashboard_expressions().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: '{}'\n",
            expr.replace('\'', "''")
        ));
    }
    let file = temp_dir("dashboard-rules").join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let output = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn every_metric_the_alerts_and_dashboard_use_is_exported() {
    let broker = Ringmq::start(&[], &[]);
    let exported = sample_names(&broker.get("/metrics", None).body);
    // Series Prometheus makes itself for each scrape target.
    let from_prometheus = ["up"];
    let mut used = BTreeSet::new();
    for expr in alert_expressions().iter().chain(&dashboard_expressions()) {
        used.extend(metric_names(expr));
    }
    used.extend(dashboard_variable_metrics());
    assert!(used.len() >= 15, "the parser found the names: {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !from_prometheus.contains(&name.as_str()))
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
    // And everything the broker exports is shown or alerted on.
    let unused: Vec<&String> = exported
        .iter()
        .filter(|name| !used.contains(*name))
        .collect();
    assert!(
        unused.is_empty(),
        "exported but never shown or alerted on: {unused:?}"
    );
}

/// The unit with its binary path pointing at `binary`, written beside a copy.
fn unit_for(unit: &str, binary: &Path, dir: &Path) -> PathBuf {
    let unit: String = unit
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                format!(
                    "ExecStart={} --config /etc/ringmq/ringmq.toml",
                    binary.display()
                )
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("ringmq.service");
    std::fs::write(&path, unit + "\n").unwrap();
    path
}

fn verify_unit(path: &Path) {
    let analyze = tool("systemd-analyze", "systemd");
    let output = Command::new(analyze)
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    let said = text(&output);
    assert!(output.status.success(), "systemd-analyze verify:\n{said}");
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("ringmq.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify:\n{said}");
}

#[test]
fn the_systemd_unit_verifies_and_has_what_a_broker_needs() {
    let unit = read(&repo().join("deploy/systemd/ringmq.service"));
    for directive in [
        "Type=notify",
        "ExecStart=/usr/local/bin/ringmq --config /etc/ringmq/ringmq.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=ringmq",
        "CPUAffinity=",
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=infinity",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=ringmq",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(
            unit.lines().any(|line| line.starts_with(directive)),
            "{directive} missing"
        );
    }
    let dir = temp_dir("unit");
    verify_unit(&unit_for(
        &unit,
        Path::new(env!("CARGO_BIN_EXE_ringmq")),
        &dir,
    ));
}

fn install(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/install-systemd.sh"))
        .args(args)
        .env_remove("RINGMQ_CONFIG")
        .output()
        .unwrap()
}

/// Every file under `dir` with its contents and mode.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                files.push((path.clone(), std::fs::read(&path).unwrap(), mode));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_install_script_stages_idempotently_and_uninstalls() {
    let root = temp_dir("install-root");
    let root_arg = root.to_str().unwrap();
    let binary = env!("CARGO_BIN_EXE_ringmq");
    let config = temp_dir("install-config").join("mine.toml");
    std::fs::write(
        &config,
        "# mine\nmax_connections = 5000\n\n[admin]\nlisten = \"127.0.0.1:9191\"\n",
    )
    .unwrap();
    let args = [
        "--root",
        root_arg,
        "--cpus",
        "0-1,3",
        "--binary",
        binary,
        "--config",
        config.to_str().unwrap(),
    ];

    let first = install(&args);
    assert!(first.status.success(), "{}", text(&first));
    let installed = snapshot(&root);
    let second = install(&args);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(snapshot(&root), installed, "a second run changes nothing");

    let bin = root.join("usr/local/bin/ringmq");
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(binary).unwrap());
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );

    let config_path = root.join("etc/ringmq/ringmq.toml");
    let written: toml::Table = toml::from_str(&read(&config_path)).unwrap();
    assert_eq!(written["cpus"].as_str(), Some("0-1,3"));
    assert_eq!(written["shards"].as_integer(), Some(3));
    assert_eq!(
        written["max_connections"].as_integer(),
        Some(5000),
        "the given file's keys stay"
    );
    assert_eq!(written["admin"]["listen"].as_str(), Some("127.0.0.1:9191"));
    assert!(
        written["admin"].get("cpus").is_none(),
        "cpus is not put in [admin]"
    );
    let checked = Command::new(&bin)
        .arg("check-config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", text(&checked));

    let unit = read(&root.join("etc/systemd/system/ringmq.service"));
    assert!(unit.contains("\nCPUAffinity=0-1,3\n"), "{unit}");
    assert!(unit.contains("\nExecStart=/usr/local/bin/ringmq --config /etc/ringmq/ringmq.toml\n"));
    // The unit as installed verifies once its binary path exists.
    verify_unit(&unit_for(&unit, &bin, &temp_dir("install-unit")));

    // Without --config a second install keeps the installed file, new CPUs aside.
    let moved = install(&["--root", root_arg, "--cpus", "2", "--binary", binary]);
    assert!(moved.status.success(), "{}", text(&moved));
    let written: toml::Table = toml::from_str(&read(&config_path)).unwrap();
    assert_eq!(written["cpus"].as_str(), Some("2"));
    assert_eq!(written["shards"].as_integer(), Some(1));
    assert_eq!(written["max_connections"].as_integer(), Some(5000));

    // Bad input changes nothing.
    let before = snapshot(&root);
    for bad in [vec!["--cpus", "3-1"], vec!["--cpus", "x"], vec![]] {
        let mut args = vec!["--root", root_arg, "--binary", binary];
        args.extend(bad.iter().copied());
        let refused = install(&args);
        assert!(!refused.status.success(), "{bad:?}");
        assert!(
            text(&refused).contains("--cpus"),
            "{bad:?}: {}",
            text(&refused)
        );
    }
    let invalid = temp_dir("install-invalid").join("bad.toml");
    std::fs::write(&invalid, "max_inflight = 0\n").unwrap();
    let refused = install(&[
        "--root",
        root_arg,
        "--cpus",
        "0",
        "--binary",
        binary,
        "--config",
        invalid.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("max_inflight"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        snapshot(&root),
        before,
        "refused runs leave the installation alone"
    );

    let removed = install(&["--root", root_arg, "--uninstall"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!bin.exists());
    assert!(!root.join("etc/systemd/system/ringmq.service").exists());
    assert!(config_path.exists(), "the configuration is kept");
    let again = install(&["--root", root_arg, "--uninstall"]);
    assert!(again.status.success(), "uninstalling twice is fine");
}

#[test]
fn systemd_hears_ready_and_stopping() {
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut broker = Ringmq::start(&[], &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within the deadline");
    assert_eq!(&buf[..n], b"READY=1");
    broker.signal("TERM");
    let n = socket
        .recv(&mut buf)
        .expect("STOPPING=1 within the deadline");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(broker.wait_exit().success());
}
