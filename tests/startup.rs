//! Start-up failures a user meets before any client connects: each is one clear
//! line on stderr and a non-zero exit, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ringmq(wrapper: &[&str], args: &[&str]) -> Output {
    let binary = env!("CARGO_BIN_EXE_ringmq");
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ringmq");
    // These runs must end by themselves, quickly.
    let started = Instant::now();
    let output = child.wait_with_output().expect("wait for ringmq");
    assert!(started.elapsed() < Duration::from_secs(30));
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn too_little_locked_memory_is_one_line_naming_the_fix() {
    // 64 KiB is below what even one shard's io_uring needs.
    let output = ringmq(
        &["prlimit", "--memlock=65536:65536"],
        &["--listen", "127.0.0.1:0", "--shards", "2"],
    );
    assert!(!output.status.success());
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("locked-memory limit"), "{text}");
    assert!(text.contains("LimitMEMLOCK=infinity"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for (args, needle) in [
        (&["--cpus", "3-1"][..], "ends before it starts"),
        (&["--listen", "not-an-address"][..], "not-an-address"),
        (&["--max-inflight", "0"][..], "`max_inflight` = 0"),
        (&["--log", "loud=="][..], "`log`"),
        (&["--shards", "4", "--cpus", "0-1"][..], "needs 4 CPUs"),
    ] {
        let output = ringmq(&[], args);
        assert!(!output.status.success(), "{args:?}");
        let text = stderr(&output);
        assert!(text.contains(needle), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

#[test]
fn a_port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = ringmq(&[], &["--listen", &addr, "--shards", "1"]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains(&addr) && text.contains("listen"), "{text}");
}
