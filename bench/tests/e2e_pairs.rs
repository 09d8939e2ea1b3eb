//! End to end: the real `ringmq` broker and the real `ringmq-bench` binary, a short
//! `pairs` run at a low fixed rate over QoS 1, checked through the JSON report.
//!
//! The broker binary is not a dependency of this package, so it is looked up beside
//! this test's own target directory (`cargo test --workspace` builds it; alone, run
//! `cargo build -p ringmq` first). Without it the test says so and passes, or fails
//! when `RINGMQ_BENCH_REQUIRE_BROKER` is set (as a CI that must run it would set).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the broker may take to print its ready line.
const READY_WAIT: Duration = Duration::from_secs(20);
/// Bound of the whole bench run (it lasts about 3 s).
const RUN_WAIT: Duration = Duration::from_secs(60);

const PAIRS: u64 = 4;
const RATE: u64 = 50;
const DURATION_S: u64 = 2;

/// The broker binary: `RINGMQ_BIN`, else `ringmq` in this test's target directory.
fn broker_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RINGMQ_BIN") {
        return Some(PathBuf::from(path));
    }
    // target/<profile>/deps/e2e_pairs-<hash> -> target/<profile>/ringmq
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("ringmq");
    candidate.is_file().then_some(candidate)
}

/// A broker process, killed when dropped.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(binary: &PathBuf) -> Broker {
        let mut command = Command::new(binary);
        // The broker reads RINGMQ_* as configuration and refuses unknown keys: this
        // test's own switches (RINGMQ_BIN, RINGMQ_BENCH_REQUIRE_BROKER) must not
        // reach it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RINGMQ_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "1",
                "--sys-interval",
                "0",
                "--log",
                "warn",
                // No admin endpoint: parallel test runs would race for its port.
                "--admin-listen",
                "",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut broker = Broker {
            child,
            addr: String::new(),
        };
        let deadline = Instant::now() + READY_WAIT;
        while broker.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the broker printed no ready line in time");
            if let Some(rest) = line.strip_prefix("ringmq ready listeners=") {
                broker.addr = rest.split_whitespace().next().unwrap().to_string();
            }
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the bench binary to completion, killing it past `RUN_WAIT`.
fn run_bench(args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringmq-bench");
    let deadline = Instant::now() + RUN_WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringmq-bench ran past {RUN_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn pairs_at_a_fixed_rate_lose_nothing() {
    let Some(binary) = broker_binary() else {
        let msg = "SKIPPED e2e_pairs: no ringmq binary beside this test; run `cargo build -p ringmq` (or set RINGMQ_BIN)";
        assert!(
            std::env::var_os("RINGMQ_BENCH_REQUIRE_BROKER").is_none(),
            "{msg}"
        );
        eprintln!("{msg}");
        return;
    };
    let broker = Broker::start(&binary);
    let args: Vec<String> = format!(
        "pairs --pairs {PAIRS} --qos 1 --rate {RATE} --duration {DURATION_S} --warmup 0.5 --drain 5 \
         --host {} --broker-pid {} --json",
        broker.addr,
        broker.child.id()
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    let output = run_bench(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ringmq-bench failed: {:?}\n{stderr}",
        output.status
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    let r = &report["results"];
    let int = |key: &str| {
        r[key]
            .as_u64()
            .unwrap_or_else(|| panic!("results.{key} in {r}"))
    };

    assert_eq!(report["config"]["scenario"], "pairs");
    assert_eq!(report["config"]["qos"], 1);
    assert_eq!(int("connections_ready"), 2 * PAIRS);
    assert_eq!(int("connections_failed"), 0);
    assert_eq!(int("lost"), 0, "{stderr}");
    assert_eq!(int("duplicated"), 0);
    assert_eq!(int("reordered"), 0);
    assert_eq!(int("unacked"), 0);
    assert_eq!(int("errors_total"), 0);
    assert_eq!(int("received"), int("sent"));
    assert_eq!(int("expected"), int("sent"));
    // An open-loop schedule never sends more than rate x time (give or take the
    // edges); on a machine busy with other work the generator may send part of
    // the window's schedule after it, so only a floor far below is asserted.
    let in_window = int("sent_in_window");
    let scheduled = PAIRS * RATE * DURATION_S;
    assert!(
        in_window <= scheduled + PAIRS && in_window >= scheduled / 2,
        "{in_window} sent in the window, {scheduled} scheduled"
    );
    let latency = &r["latency_us"];
    assert_eq!(latency["count"].as_u64(), Some(in_window));
    let (p50, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= max, "p50 {p50} max {max}");
    assert!(r["broker"]["peak_rss_bytes"].as_u64().unwrap() > 0);
}

/// `--messages`: a fixed count at max rate is sent in full, arrives in full inside
/// the window (so its latency is measured), and the run ends long before
/// `--duration`.
#[test]
fn a_fixed_count_is_sent_and_delivered_whole() {
    let Some(binary) = broker_binary() else {
        let msg = "SKIPPED e2e_pairs: no ringmq binary beside this test; run `cargo build -p ringmq` (or set RINGMQ_BIN)";
        assert!(
            std::env::var_os("RINGMQ_BENCH_REQUIRE_BROKER").is_none(),
            "{msg}"
        );
        eprintln!("{msg}");
        return;
    };
    const MESSAGES: u64 = 10_001;
    let broker = Broker::start(&binary);
    let args: Vec<String> = format!(
        "pairs --pairs {PAIRS} --qos 1 --messages {MESSAGES} --warmup 0 --duration 50 --drain 5 \
         --keep-alive 120 --host {} --json",
        broker.addr
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    let started = Instant::now();
    let output = run_bench(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ringmq-bench failed\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "a fixed count waited for --duration"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    let r = &report["results"];
    assert_eq!(report["config"]["messages"], MESSAGES);
    assert_eq!(report["config"]["keep_alive_s"], 120);
    for key in ["sent", "sent_in_window", "received", "received_in_window"] {
        assert_eq!(r[key].as_u64(), Some(MESSAGES), "{key}: {r}");
    }
    assert_eq!(r["latency_us"]["count"].as_u64(), Some(MESSAGES));
    let curve = r["latency_curve_us"].as_array().expect("a latency curve");
    assert!(curve
        .windows(2)
        .all(|w| w[0][1].as_f64() <= w[1][1].as_f64()));
    let measured_s = r["measured_s"].as_f64().unwrap();
    assert!(
        measured_s > 0.0 && measured_s < 40.0,
        "measured {measured_s} s"
    );
}
