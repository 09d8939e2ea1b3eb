//! Settings as a user meets them: precedence of flags, environment, file and
//! defaults; every validation error path; `check-config`; the example file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

fn ringmq(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    command.args(args);
    // A clean environment for RINGMQ_*: only what the test sets.
    for (key, _) in std::env::vars() {
        if key.starts_with("RINGMQ_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run ringmq")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--print-config` parsed back into key -> value text.
fn effective(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let output = ringmq(&all, env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let table: toml::Table = toml::from_str(&text(&output.stdout)).unwrap();
    table.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let file = temp_file(
        "precedence.toml",
        "max_inflight = 9\nmax_queued_messages = 5\nlog = \"warn\"\n",
    );
    let file = file.to_str().unwrap();
    let defaults = effective(&[], &[]);
    assert_eq!(defaults["max_inflight"], "64");
    assert_eq!(defaults["listen"], r#"["0.0.0.0:1883"]"#);

    let from_file = effective(&["--config", file], &[]);
    assert_eq!(from_file["max_inflight"], "9");
    assert_eq!(from_file["log"], r#""warn""#);

    let from_env = effective(&["--config", file], &[("RINGMQ_MAX_INFLIGHT", "7")]);
    assert_eq!(from_env["max_inflight"], "7");
    assert_eq!(
        from_env["max_queued_messages"], "5",
        "file keys the env does not set stay"
    );

    let from_flag = effective(
        &["--config", file, "--max-inflight", "3"],
        &[("RINGMQ_MAX_INFLIGHT", "7")],
    );
    assert_eq!(from_flag["max_inflight"], "3");

    // The file can come from the environment too.
    let via_env = effective(&[], &[("RINGMQ_CONFIG", file)]);
    assert_eq!(via_env["max_inflight"], "9");
}

#[test]
fn environment_lists_and_numbers_are_read_as_the_file_would() {
    let settings = effective(
        &[],
        &[
            ("RINGMQ_LISTEN", "127.0.0.1:1,127.0.0.1:2"),
            ("RINGMQ_CPUS", "0"),
            ("RINGMQ_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(settings["listen"], r#"["127.0.0.1:1", "127.0.0.1:2"]"#);
    assert_eq!(settings["cpus"], r#""0""#);
    assert_eq!(settings["log_format"], r#""json""#);
}

#[test]
fn every_bad_value_names_the_key_the_value_and_what_is_allowed() {
    let cases: &[(&str, &str, &str)] = &[
        ("max_inflight = 0", "`max_inflight` = 0", "1 to 65535"),
        ("max_packet_size = 10", "`max_packet_size` = 10", "64 to"),
        (
            "max_topic_levels = 500",
            "`max_topic_levels` = 500",
            "1 to 128",
        ),
        ("max_connections = 0", "`max_connections` = 0", "1 to"),
        (
            "max_subscriptions_per_client = 0",
            "`max_subscriptions_per_client` = 0",
            "1 to",
        ),
        (
            "max_outbound_bytes = 10",
            "`max_outbound_bytes` = 10",
            "1024 to",
        ),
        ("ring_capacity = 1", "`ring_capacity` = 1", "16 to"),
        ("connect_timeout = 0", "`connect_timeout` = 0", "1 to 3600"),
        ("write_timeout = 0", "`write_timeout` = 0", "1 to 3600"),
        (
            "sys_interval = 100000",
            "`sys_interval` = 100000",
            "0 to 86400",
        ),
        (
            "shutdown_timeout = 4000",
            "`shutdown_timeout` = 4000",
            "0 to 3600",
        ),
        (
            "max_queued_messages = 99999999",
            "`max_queued_messages`",
            "0 to",
        ),
        ("listen = []", "`listen`", "at least one"),
        (
            "listen = [\"nowhere\"]",
            "`listen` = \"nowhere\"",
            "HOST:PORT",
        ),
        (
            "cpus = \"3-1\"",
            "`cpus` = \"3-1\"",
            "ends before it starts",
        ),
        ("cpus = \"x\"", "`cpus` = \"x\"", "CPU number or range"),
        ("shards = 4\ncpus = \"0-1\"", "`shards` = 4", "needs 4 CPUs"),
        ("log = \"loud==\"", "`log`", "a level"),
        ("log_format = \"xml\"", "log_format", "text"),
        ("max_inflight = \"lots\"", "max_inflight", "expected u16"),
        ("max_inflght = 9", "max_inflght", "unknown field"),
        ("[limits]\nmax_inflight = 9", "limits", "unknown field"),
    ];
    for (index, (contents, key_and_value, allowed)) in cases.iter().enumerate() {
        let file = temp_file(&format!("bad-{index}.toml"), contents);
        let output = ringmq(&["check-config", file.to_str().unwrap()], &[]);
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{contents}: {message}");
        assert!(message.contains(key_and_value), "{contents}: {message}");
        assert!(message.contains(allowed), "{contents}: {message}");
        assert_eq!(
            message.lines().count(),
            1,
            "{contents}: one line: {message}"
        );
        // The broker itself refuses the same file before starting anything.
        let started = ringmq(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(started.status.code(), Some(1), "{contents}");
        assert!(text(&started.stdout).is_empty(), "{contents}: never ready");
    }
}

#[test]
fn unknown_environment_keys_and_missing_files_are_errors() {
    let output = ringmq(&["--print-config"], &[("RINGMQ_MAX_INFLGHT", "3")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("max_inflght"),
        "{}",
        text(&output.stderr)
    );

    let output = ringmq(&["check-config", "/nonexistent/ringmq.toml"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("does not exist"));
}

#[test]
fn the_example_file_is_valid_and_documents_every_key() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/ringmq.toml");
    let output = ringmq(&["check-config", example.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let documented: toml::Table =
        toml::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let defaults = effective(&[], &[]);
    let documented_keys: Vec<&String> = documented.keys().collect();
    let all_keys: Vec<&String> = defaults.keys().collect();
    assert_eq!(
        documented_keys, all_keys,
        "deploy/ringmq.toml lists every key"
    );
    // And with their defaults, so the example describes a broker started without it.
    for (key, value) in &documented {
        assert_eq!(&value.to_string(), &defaults[key], "default of {key}");
    }
}
