//! SIGHUP on a real broker: a bad file changes nothing and the broker keeps
//! serving; a good file applies the limits (the next connection past a lowered
//! max_connections is refused) and the log filter at once, and names the keys that
//! need a restart. Flags given at start keep their precedence over the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod admin_harness;

use std::net::TcpStream;
use std::path::Path;

use admin_harness::{eventually, metric_sum, mqtt_connect, temp_dir, Ringmq};

fn write(file: &Path, contents: &str) {
    std::fs::write(file, contents).unwrap();
}

fn connections_max(broker: &Ringmq) -> f64 {
    metric_sum(
        &broker.get("/metrics", None).body,
        "ringmq_connections_max",
        &[],
    )
}

#[test]
fn sighup_with_a_bad_file_keeps_the_configuration_in_force() {
    let file = temp_dir("reload-bad").join("ringmq.toml");
    write(&file, "max_connections = 50\n");
    let broker = Ringmq::start(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(connections_max(&broker), 50.0);

    for (bad, why) in [
        ("max_connections = 0\n", "`max_connections` = 0"),
        ("max_connections = \n", "invalid configuration"),
        ("max_conections = 10\n", "max_conections"),
    ] {
        write(&file, bad);
        let seen = broker.log_len();
        broker.signal("HUP");
        let warning = broker.wait_for_log_after(seen, &["configuration not reloaded"]);
        assert!(warning.contains("WARN"), "{warning}");
        assert!(warning.contains(why), "{bad:?}: {warning}");
        assert_eq!(connections_max(&broker), 50.0, "{bad:?}: old limits stay");
        let (_client, code) = mqtt_connect(broker.mqtt, "after-bad-reload", 4);
        assert_eq!(code, 0, "{bad:?}: still serving");
    }

    // A file that went missing is the same: nothing changes.
    std::fs::remove_file(&file).unwrap();
    let seen = broker.log_len();
    broker.signal("HUP");
    broker.wait_for_log_after(seen, &["configuration not reloaded", "does not exist"]);
    assert_eq!(broker.get("/ready", None).status, 200);
}

#[test]
fn sighup_applies_max_connections_and_the_log_filter() {
    let file = temp_dir("reload-good").join("ringmq.toml");
    write(
        &file,
        "max_connections = 100\nlog = \"info\"\nlisten = [\"127.0.0.1:1\"]\n",
    );
    let broker = Ringmq::start(&["--config", file.to_str().unwrap()], &[]);
    let mut held: Vec<TcpStream> = Vec::new();
    for n in 0..2 {
        let (client, code) = mqtt_connect(broker.mqtt, &format!("reload-{n}"), 4);
        assert_eq!(code, 0);
        held.push(client);
    }

    // Two connections now fill the limit; a debug filter for the shards only; a
    // one-second CONNECT timeout that a silent socket will hit; and two keys that
    // wait for a restart. `listen` and `admin.listen` change too, but the flags
    // given at start (--listen, --admin-listen) still win.
    write(
        &file,
        "max_connections = 2\n\
         log = \"info,ringmq_shard=debug\"\n\
         connect_timeout = 1\n\
         ring_capacity = 64\n\
         shutdown_timeout = 1\n\
         listen = [\"127.0.0.1:2\"]\n\
         [admin]\n\
         listen = \"127.0.0.1:1\"\n",
    );
    let seen = broker.log_len();
    broker.signal("HUP");
    let done = broker.wait_for_log_after(seen, &["configuration reloaded"]);
    assert!(done.contains("changed=5"), "{done}\n{:#?}", broker.log());
    broker.wait_for_log_after(
        seen,
        &[
            "setting changed",
            "key=max_connections",
            "old=100",
            "new=2",
            "applies=now",
        ],
    );
    broker.wait_for_log_after(seen, &["setting changed", "key=log", "applies=now"]);
    broker.wait_for_log_after(
        seen,
        &[
            "setting changed",
            "key=ring_capacity",
            "applies=after a restart",
        ],
    );
    broker.wait_for_log_after(
        seen,
        &[
            "setting changed",
            "key=shutdown_timeout",
            "applies=after a restart",
        ],
    );
    broker.wait_for_log_after(
        seen,
        &["need a restart", "keys=ring_capacity,shutdown_timeout"],
    );
    assert!(
        !broker.log()[seen..]
            .iter()
            .any(|l| l.contains("key=listen ") || l.contains("key=admin.listen ")),
        "the flags given at start still win over the file"
    );

    // The limit: the third connection is refused (3.1.1: return code 3; 5: 0x97).
    assert_eq!(connections_max(&broker), 2.0);
    let (_refused, code) = mqtt_connect(broker.mqtt, "reload-2", 4);
    assert_eq!(code, 3);
    let (_refused, code) = mqtt_connect(broker.mqtt, "reload-3", 5);
    assert_eq!(code, 0x97);
    // The shard counts a refusal once the CONNACK is written: soon, not at once.
    eventually("both refusals are counted", || {
        let metrics = broker.get("/metrics", None).body;
        let refused = metric_sum(
            &metrics,
            "ringmq_connections_rejected_total",
            &["reason=\"limit\""],
        );
        (refused >= 2.0).then_some(())
    });
    // Room again once one leaves.
    drop(held.pop());
    eventually("a slot frees", || {
        let (_client, code) = mqtt_connect(broker.mqtt, "reload-4", 4);
        (code == 0).then_some(())
    });

    // The log filter: the shards' debug line for a silent connection now shows.
    let _silent = TcpStream::connect(broker.mqtt).unwrap();
    let line = broker.wait_for_log_after(seen, &["DEBUG", "no CONNECT within 1s"]);
    assert!(line.contains("ringmq_shard"), "{line}");
}
