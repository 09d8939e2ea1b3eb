//! Authentication end to end: a real broker with a password file made by
//! `ringmq passwd`, real sockets, MQTT 5 and 3.1.1.
//!
//! - the matrix: right, wrong, unknown user, missing password, anonymous, each
//!   refusal with its CONNACK code and the connection closed after it;
//! - `allow_anonymous` broker-wide and overridden per listener, both ways;
//! - the failed-login limit per source address, and its window;
//! - a per-listener connection limit;
//! - a full hash queue: CONNECT refused as busy;
//! - a bad password file: the start fails, `check-config` fails, a reload keeps
//!   the file in force (and never opens the broker to anonymous clients);
//! - a good new password file applies at a reload.
//!
//! Each password login costs the broker one argon2id hash, so the tests keep
//! their number of logins small.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod sec_harness;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sec_harness::mqtt::{
    self, connect, connect_ok, connect_over, connect_refused, Connect, ACCEPTED, BAD_CREDENTIALS,
    CONNECTION_RATE_EXCEEDED, NOT_AUTHORIZED, QUOTA_EXCEEDED, SERVER_BUSY, V3, V3_BAD_CREDENTIALS,
    V3_NOT_AUTHORIZED, V3_UNAVAILABLE, V5,
};
use sec_harness::{
    assert_check_config_fails, assert_start_fails, eventually, password_file, replace_file, start,
    temp_dir, toml_path, write_file,
};

/// The CONNACK codes of one protocol version.
struct Codes {
    version: u8,
    bad_credentials: u8,
    not_authorized: u8,
}

const BOTH: [Codes; 2] = [
    Codes {
        version: V5,
        bad_credentials: BAD_CREDENTIALS,
        not_authorized: NOT_AUTHORIZED,
    },
    Codes {
        version: V3,
        bad_credentials: V3_BAD_CREDENTIALS,
        not_authorized: V3_NOT_AUTHORIZED,
    },
];

fn alice_and_bob(dir: &Path) -> std::path::PathBuf {
    password_file(
        dir,
        "passwords",
        &[("alice", "apple pie"), ("bob", "banana")],
    )
}

#[test]
fn the_auth_matrix_on_mqtt_5_and_3_1_1() {
    let dir = temp_dir("auth-matrix");
    let passwords = alice_and_bob(&dir);
    // [auth] says nothing about anonymous clients: "auto" with a password file
    // refuses them. The listener on 127.0.0.3 lets them in.
    let broker = start(
        &dir,
        &format!(
            "[auth]\npassword_file = {}\nfailed_login_max = 0\n\n\
             [[listener]]\nkind = \"tcp\"\nlisten = \"127.0.0.3:0\"\nallow_anonymous = true\n",
            toml_path(&passwords)
        ),
        &[],
    );
    let main = broker.tcp();
    let open = broker.on(sec_harness::Scheme::Tcp, "127.0.0.3").addr;

    for codes in BOTH {
        let v = codes.version;
        let id = |what: &str| format!("{what}-v{v}");

        // The right password: in, and the session works.
        let mut alice = connect_ok(
            main,
            &Connect::new(v, &id("alice")).user("alice", "apple pie"),
        );
        alice.subscribe_ok("matrix/echo", 1);
        alice.publish_ok("matrix/echo", b"hi", 1, false);
        alice.expect_message("matrix/echo", "hi");
        alice.disconnect();

        // Wrong password, unknown user (with a password that is someone else's),
        // a user name without a password: bad credentials.
        for (what, attempt) in [
            (
                "wrong",
                Connect::new(v, &id("wrong")).user("alice", "apple"),
            ),
            (
                "unknown",
                Connect::new(v, &id("unknown")).user("mallory", "banana"),
            ),
            (
                "no-password",
                Connect::new(v, &id("nopass")).username_only("bob"),
            ),
        ] {
            let (code, mut client) = connect(main, &attempt);
            assert_eq!(code, codes.bad_credentials, "{what}, MQTT level {v}");
            client.expect_closed();
        }

        // No credentials where anonymous clients are not allowed.
        connect_refused(main, &Connect::new(v, &id("anon")), codes.not_authorized);

        // The listener that allows anonymous clients: they get in there, and a
        // wrong password is still wrong.
        connect_ok(open, &Connect::new(v, &id("anon-open"))).disconnect();
        connect_refused(
            open,
            &Connect::new(v, &id("wrong-open")).user("bob", "apple pie"),
            codes.bad_credentials,
        );
        connect_ok(
            open,
            &Connect::new(v, &id("bob-open")).user("bob", "banana"),
        )
        .disconnect();
    }
}

#[test]
fn allow_anonymous_broker_wide_and_a_listener_that_refuses_them() {
    // Without a password file, "auto" lets anonymous clients in.
    let dir = temp_dir("auth-anon-auto");
    let broker = start(&dir, "", &[]);
    for v in [V5, V3] {
        connect_ok(broker.tcp(), &Connect::new(v, &format!("anon-auto-{v}"))).disconnect();
    }
    drop(broker);

    // With a password file and allow_anonymous = true, they get in as well, but a
    // listener can refuse them; credentials are checked everywhere.
    let dir = temp_dir("auth-anon-true");
    let passwords = alice_and_bob(&dir);
    let broker = start(
        &dir,
        &format!(
            "[auth]\npassword_file = {}\nallow_anonymous = true\nfailed_login_max = 0\n\n\
             [[listener]]\nkind = \"tcp\"\nlisten = \"127.0.0.3:0\"\nallow_anonymous = false\n",
            toml_path(&passwords)
        ),
        &[],
    );
    let strict = broker.on(sec_harness::Scheme::Tcp, "127.0.0.3").addr;
    for codes in BOTH {
        let v = codes.version;
        connect_ok(broker.tcp(), &Connect::new(v, &format!("anon-{v}"))).disconnect();
        connect_refused(
            broker.tcp(),
            &Connect::new(v, &format!("wrong-{v}")).user("alice", "banana"),
            codes.bad_credentials,
        );
        connect_refused(
            strict,
            &Connect::new(v, &format!("anon-strict-{v}")),
            codes.not_authorized,
        );
    }
    connect_ok(
        strict,
        &Connect::new(V5, "alice-strict").user("alice", "apple pie"),
    )
    .disconnect();
}

/// Waits until `instant` has passed: the failed-login window is a span of time
/// the contract defines, so here time itself is what the test waits for.
fn wait_until(instant: Instant) {
    while Instant::now() < instant {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failed_logins_from_one_address_are_refused_until_the_window_passes() {
    const FAILED_MAX: usize = 3;
    const WINDOW: Duration = Duration::from_secs(2);
    let dir = temp_dir("auth-limit");
    let passwords = alice_and_bob(&dir);
    let broker = start(
        &dir,
        &format!(
            "[auth]\npassword_file = {}\nfailed_login_max = {FAILED_MAX}\nfailed_login_window = {}\n",
            toml_path(&passwords),
            WINDOW.as_secs()
        ),
        &[],
    );
    let addr = broker.tcp();
    let alice = |v: u8, id: &str| Connect::new(v, id).user("alice", "apple pie");

    for n in 0..FAILED_MAX {
        let (code, mut client) = connect(
            addr,
            &Connect::new(V5, &format!("guess-{n}")).user("alice", &format!("guess {n}")),
        );
        assert_eq!(code, BAD_CREDENTIALS, "failure {n}");
        client.expect_closed();
    }
    // Past the limit, even the right password is refused from 127.0.0.1.
    connect_refused(
        addr,
        &alice(V5, "alice-limited-5"),
        CONNECTION_RATE_EXCEEDED,
    );
    connect_refused(addr, &alice(V3, "alice-limited-3"), V3_NOT_AUTHORIZED);
    let last_attempt = Instant::now();

    // Another source address is not affected.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let (code, client) = connect_over(mqtt::tcp_from(other, addr), &alice(V5, "alice-elsewhere"));
    assert_eq!(code, ACCEPTED, "a login from 127.0.0.2");
    client.disconnect();

    // Once the window has passed since the last attempt, 127.0.0.1 is welcome
    // again.
    wait_until(last_attempt + WINDOW + Duration::from_millis(300));
    connect_ok(addr, &alice(V5, "alice-after-window")).disconnect();
    connect_ok(addr, &alice(V3, "alice-after-window-3")).disconnect();
}

#[test]
fn a_listener_refuses_connections_past_its_own_limit() {
    let dir = temp_dir("auth-listener-limit");
    let broker = start(
        &dir,
        "[[listener]]\nkind = \"tcp\"\nlisten = \"127.0.0.3:0\"\nmax_connections = 1\n",
        &[],
    );
    let limited = broker.on(sec_harness::Scheme::Tcp, "127.0.0.3").addr;
    let first = connect_ok(limited, &Connect::new(V5, "limited-1"));
    connect_refused(limited, &Connect::new(V5, "limited-2"), QUOTA_EXCEEDED);
    connect_refused(limited, &Connect::new(V3, "limited-3"), V3_UNAVAILABLE);
    // The broker's other listener has no such limit.
    let _elsewhere = connect_ok(broker.tcp(), &Connect::new(V5, "unlimited-1"));
    first.disconnect();
    eventually("the listener has room again", || {
        let (code, client) = connect(limited, &Connect::new(V5, "limited-4"));
        (code == ACCEPTED).then_some(client)
    });
}

/// A malformed password file: a good line, then one without `:`.
fn malformed_password_file(dir: &Path) -> std::path::PathBuf {
    let good = password_file(dir, "good-source", &[("alice", "apple pie")]);
    let text = std::fs::read_to_string(good).unwrap();
    let first = text
        .lines()
        .find(|l| l.starts_with("alice:"))
        .unwrap()
        .to_owned();
    write_file(dir, "malformed", &format!("{first}\nbob-without-a-hash\n"))
}

#[test]
fn a_bad_password_file_stops_the_start_and_check_config() {
    let dir = temp_dir("auth-bad-start");
    let missing = dir.join("no-such-file");
    let empty = write_file(&dir, "empty", "");
    let malformed = malformed_password_file(&dir);

    for (what, path) in [
        ("missing", &missing),
        ("empty", &empty),
        ("malformed", &malformed),
    ] {
        let config = format!("[auth]\npassword_file = {}\n", toml_path(path));
        let shown = path.display().to_string();
        let stderr = assert_start_fails(&dir, &config, &[&shown]);
        if what == "malformed" {
            assert!(
                stderr.contains(&format!("{shown}:2")) || stderr.contains("line 2"),
                "the start error names line 2 of {shown}:\n{stderr}"
            );
        }
        assert_check_config_fails(&dir, &config, &[&shown]);
    }
}

#[test]
fn a_reload_with_a_bad_password_file_keeps_the_one_in_force() {
    let dir = temp_dir("auth-bad-reload");
    let passwords = alice_and_bob(&dir);
    let broker = start(
        &dir,
        &format!(
            "[auth]\npassword_file = {}\nfailed_login_max = 0\n",
            toml_path(&passwords)
        ),
        &[],
    );
    let malformed = std::fs::read_to_string(malformed_password_file(&dir)).unwrap();
    let shown = passwords.display().to_string();

    for (what, contents) in [
        ("malformed", Some(malformed.as_str())),
        ("empty", Some("")),
        ("missing", None),
    ] {
        match contents {
            Some(text) => replace_file(&passwords, text),
            None => std::fs::remove_file(&passwords).unwrap(),
        }
        let warning = broker.reload_refused(&[&shown]);
        assert!(warning.contains("WARN"), "{what}: {warning}");
        // The old file is still in force: bob (absent from the malformed file)
        // gets in, a wrong password does not, and an anonymous client is still
        // refused: a bad file never opens the broker.
        connect_ok(
            broker.tcp(),
            &Connect::new(V5, &format!("bob-{what}")).user("bob", "banana"),
        )
        .disconnect();
        connect_refused(
            broker.tcp(),
            &Connect::new(V5, &format!("wrong-{what}")).user("bob", "apple pie"),
            BAD_CREDENTIALS,
        );
        connect_refused(
            broker.tcp(),
            &Connect::new(V3, &format!("anon-{what}")),
            V3_NOT_AUTHORIZED,
        );
    }
}

#[test]
fn a_reload_with_a_good_password_file_applies_to_new_connections() {
    let dir = temp_dir("auth-good-reload");
    let passwords = alice_and_bob(&dir);
    let broker = start(
        &dir,
        &format!(
            "[auth]\npassword_file = {}\nfailed_login_max = 0\n",
            toml_path(&passwords)
        ),
        &[],
    );
    let mut connected = connect_ok(
        broker.tcp(),
        &Connect::new(V5, "alice-before").user("alice", "apple pie"),
    );

    // alice changes her password, bob leaves, carol arrives.
    let next = password_file(&dir, "next", &[("alice", "cherry"), ("carol", "date")]);
    std::fs::rename(&next, &passwords).unwrap();
    broker.reload_applied();
    connect_ok(
        broker.tcp(),
        &Connect::new(V5, "alice-new").user("alice", "cherry"),
    )
    .disconnect();
    connect_refused(
        broker.tcp(),
        &Connect::new(V5, "alice-old").user("alice", "apple pie"),
        BAD_CREDENTIALS,
    );
    connect_refused(
        broker.tcp(),
        &Connect::new(V3, "bob-gone").user("bob", "banana"),
        V3_BAD_CREDENTIALS,
    );
    connect_ok(
        broker.tcp(),
        &Connect::new(V3, "carol").user("carol", "date"),
    )
    .disconnect();

    // A connection made before the reload keeps its session.
    connected.subscribe_ok("reload/still", 1);
    connected.publish_ok("reload/still", b"here", 1, false);
    connected.expect_message("reload/still", "here");
}

#[test]
fn a_full_hash_queue_refuses_logins_as_busy() {
    // One hashing thread and room for one waiting CONNECT: a burst of password
    // logins finds the queue full.
    const BURST: usize = 12;
    const ROUNDS_MAX: usize = 5;
    let dir = temp_dir("auth-hash-queue");
    let passwords = alice_and_bob(&dir);
    let broker = start(
        &dir,
        &format!(
            "[auth]\npassword_file = {}\nfailed_login_max = 0\nhash_threads = 1\nhash_queue_max = 1\n",
            toml_path(&passwords)
        ),
        &[],
    );
    let addr = broker.tcp();
    for (version, busy) in [(V5, SERVER_BUSY), (V3, V3_UNAVAILABLE)] {
        let mut refused = 0;
        for round in 0..ROUNDS_MAX {
            let start_together = std::sync::Arc::new(std::sync::Barrier::new(BURST));
            let codes: Vec<u8> = (0..BURST)
                .map(|n| {
                    let start_together = std::sync::Arc::clone(&start_together);
                    std::thread::spawn(move || {
                        let stream = mqtt::tcp(addr);
                        start_together.wait();
                        let id = format!("burst-{version}-{round}-{n}");
                        let (code, mut client) = connect_over(
                            stream,
                            &Connect::new(version, &id).user("alice", "apple pie"),
                        );
                        if code != ACCEPTED {
                            client.expect_closed();
                        }
                        code
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert!(
                codes.iter().all(|c| *c == ACCEPTED || *c == busy),
                "MQTT level {version}: {codes:?}"
            );
            assert!(codes.contains(&ACCEPTED), "MQTT level {version}: {codes:?}");
            refused += codes.iter().filter(|c| **c == busy).count();
            if refused > 0 {
                break;
            }
        }
        assert!(
            refused > 0,
            "MQTT level {version}: no burst found the hash queue full"
        );
    }
    // Once the burst is over, logins go through again.
    connect_ok(addr, &Connect::new(V5, "after-burst").user("bob", "banana")).disconnect();
}
