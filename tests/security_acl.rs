//! Authorization end to end: a real broker with an ACL file, users from a
//! password file made by `ringmq passwd`, raw MQTT 5 and 3.1.1 clients that show
//! every reason code.
//!
//! An observer on a listener with `acl = false` sees every message that is
//! published, so a test can tell "the publish was refused" from "the
//! subscriber was not allowed to receive it". To show that a message is NOT
//! delivered, the publisher sends a marker after it: messages of one publisher
//! arrive in order, so the marker arriving first proves the other was dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod sec_harness;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sec_harness::mqtt::{connect_ok, Client, Connect, NOT_AUTHORIZED, V3, V3_SUBACK_FAILURE, V5};
use sec_harness::{
    assert_check_config_fails, assert_start_fails, password_file, replace_file, start, temp_dir,
    toml_path, write_file, Broker, Scheme,
};

/// The rules every test starts from; comments give each rule's number.
const ACL: &str = r##"
# rule 1: everyone may use public/ ...
[[rule]]
permission = "allow"
action = "both"
topics = ["public/#"]

# rule 2: ... except public/secret/
[[rule]]
permission = "deny"
action = "both"
topics = ["public/secret/#"]

# rule 3: each user and each client id has its own space
[[rule]]
permission = "allow"
action = "both"
topics = ["users/%u/#", "inbox/%u", "clients/%c/#", "mail/%c"]

# rule 4
[[rule]]
permission = "allow"
action = "publish"
user = "alice"
topics = ["alice/out/#"]

# rule 5
[[rule]]
permission = "allow"
action = "subscribe"
user = "bob"
topics = ["alice/out/#"]

# rule 6: "#" does not reach $SYS ...
[[rule]]
permission = "allow"
action = "subscribe"
user = "watcher"
topics = ["#"]

# rule 7: ... only a rule that names it does
[[rule]]
permission = "allow"
action = "subscribe"
user = "admin"
topics = ["$SYS/#"]

# rule 8
[[rule]]
permission = "allow"
action = "publish"
topics = ["wills/ok/#"]
"##;

/// Users and their passwords; `+` and `a/b` try to widen `%u` rules.
const USERS: [(&str, &str); 6] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("watcher", "watcher-pw"),
    ("admin", "admin-pw"),
    ("+", "plus-pw"),
    ("a/b", "slash-pw"),
];

/// One password file for every broker of this test binary (each user costs
/// `ringmq passwd` a hash).
fn passwords() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| password_file(&temp_dir("acl-passwords"), "passwords", &USERS))
}

fn password_of(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(name, _)| *name == user)
        .map(|(_, password)| *password)
        .unwrap()
}

struct AclBroker {
    broker: Broker,
    acl: PathBuf,
}

/// A broker with `acl` as its ACL file, anonymous clients allowed, and an
/// ACL-exempt listener on 127.0.0.3 for the observer.
fn acl_broker(name: &str, acl: &str, args: &[&str]) -> AclBroker {
    let dir = temp_dir(name);
    let acl_path = write_file(&dir, "acl.toml", acl);
    let config = format!(
        "[auth]\npassword_file = {}\nacl_file = {}\nallow_anonymous = true\nfailed_login_max = 0\n\n\
         [[listener]]\nkind = \"tcp\"\nlisten = \"127.0.0.3:0\"\nacl = false\n",
        toml_path(passwords()),
        toml_path(&acl_path)
    );
    AclBroker {
        broker: start(&dir, &config, args),
        acl: acl_path,
    }
}

impl AclBroker {
    fn user(&self, version: u8, user: &str, client_id: &str) -> Client {
        connect_ok(
            self.broker.tcp(),
            &Connect::new(version, client_id).user(user, password_of(user)),
        )
    }

    fn anonymous(&self, version: u8, client_id: &str) -> Client {
        connect_ok(self.broker.tcp(), &Connect::new(version, client_id))
    }

    /// A client on the ACL-exempt listener subscribed to `filter`.
    fn observer(&self, client_id: &str, filter: &str) -> Client {
        let exempt = self.broker.on(Scheme::Tcp, "127.0.0.3").addr;
        let mut observer = connect_ok(exempt, &Connect::new(V5, client_id));
        observer.subscribe_ok(filter, 1);
        observer
    }
}

/// Messages received until one on `marker` arrives, as (topic, payload).
fn until_marker(client: &mut Client, marker: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let m = client.recv();
        if m.topic == marker {
            return seen;
        }
        seen.push((m.topic.clone(), m.text()));
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
        .collect()
}

/// The SUBACK code of a refused filter.
fn refused(version: u8) -> u8 {
    if version == V5 {
        NOT_AUTHORIZED
    } else {
        V3_SUBACK_FAILURE
    }
}

#[test]
fn publish_is_checked_and_subscribers_see_only_allowed_messages() {
    let b = acl_broker("acl-publish", ACL, &[]);
    let mut observer = b.observer("observer", "#");
    let mut bob = b.user(V3, "bob", "bob");
    bob.subscribe_ok("alice/out/#", 1);

    // MQTT 5: a refused QoS 1 gets PUBACK 0x87, QoS 2 PUBREC 0x87, QoS 0 nothing.
    let mut alice = b.user(V5, "alice", "alice-5");
    for qos in 0..3 {
        alice.publish_ok("alice/out/5", format!("ok{qos}").as_bytes(), qos, false);
    }
    assert_eq!(alice.publish("bob/in", b"no1", 1, false), NOT_AUTHORIZED);
    assert_eq!(alice.publish("bob/in", b"no2", 2, false), NOT_AUTHORIZED);
    alice.publish_ok("bob/in", b"no0", 0, false);
    // Allowed to one and denied to another rule: deny wins.
    assert_eq!(
        alice.publish("public/secret/x", b"no", 1, false),
        NOT_AUTHORIZED
    );
    // The connection stays open: the marker goes through.
    alice.publish_ok("alice/out/end5", b"", 1, false);
    let expected = pairs(&[
        ("alice/out/5", "ok0"),
        ("alice/out/5", "ok1"),
        ("alice/out/5", "ok2"),
    ]);
    let mut seen = until_marker(&mut observer, "alice/out/end5");
    seen.sort();
    assert_eq!(seen, expected);
    let mut to_bob = until_marker(&mut bob, "alice/out/end5");
    to_bob.sort();
    assert_eq!(to_bob, expected, "bob");

    // MQTT 3.1.1 has no code for it: a normal acknowledgement, nothing delivered.
    let mut alice3 = b.user(V3, "alice", "alice-3");
    alice3.publish_ok("alice/out/3", b"ok", 1, false);
    alice3.publish_ok("bob/in", b"no1", 1, false);
    alice3.publish_ok("bob/in", b"no2", 2, false);
    alice3.publish_ok("bob/in", b"no0", 0, false);
    alice3.publish_ok("alice/out/end3", b"", 1, false);
    assert_eq!(
        until_marker(&mut observer, "alice/out/end3"),
        pairs(&[("alice/out/3", "ok")])
    );
    assert_eq!(
        until_marker(&mut bob, "alice/out/end3"),
        pairs(&[("alice/out/3", "ok")])
    );
    observer.expect_no_message();
    bob.expect_no_message();
}

#[test]
fn a_multi_filter_subscribe_is_granted_filter_by_filter() {
    let b = acl_broker("acl-multi", ACL, &[]);
    let mut publisher = b.observer("publisher", "unused/none");
    for version in [V5, V3] {
        let no = refused(version);
        let mut bob = b.user(version, "bob", &format!("bob-{version}"));
        let codes = bob.subscribe(&[
            ("alice/out/#", 1),
            ("secret/#", 1),
            ("public/#", 0),
            ("users/bob/x", 2),
            ("public/secret/#", 1),
            ("users/alice/#", 1),
        ]);
        assert_eq!(codes, vec![1, no, 0, 2, no, no], "MQTT level {version}");

        for topic in [
            "alice/out/a",
            "secret/b",
            "public/c",
            "users/bob/x",
            "public/secret/d",
            "users/alice/e",
        ] {
            publisher.publish_ok(topic, topic.as_bytes(), 1, false);
        }
        publisher.publish_ok("public/end", b"", 1, false);
        let mut got = until_marker(&mut bob, "public/end");
        got.sort();
        assert_eq!(
            got,
            pairs(&[
                ("alice/out/a", "alice/out/a"),
                ("public/c", "public/c"),
                ("users/bob/x", "users/bob/x"),
            ]),
            "MQTT level {version}"
        );
        bob.disconnect();
    }
}

#[test]
fn placeholders_give_each_user_and_client_id_its_own_space() {
    let b = acl_broker("acl-placeholders", ACL, &[]);
    let mut alice = b.user(V5, "alice", "alice");
    assert_eq!(
        alice.subscribe(&[
            ("users/alice/#", 1),
            ("inbox/alice", 1),
            ("users/bob/#", 1),
            ("users/+/#", 1),
            ("inbox/bob", 1),
        ]),
        vec![1, 1, NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    alice.publish_ok("users/alice/x", b"mine", 1, false);
    alice.expect_message("users/alice/x", "mine");
    assert_eq!(
        alice.publish("users/bob/x", b"his", 1, false),
        NOT_AUTHORIZED
    );

    let mut device = b.anonymous(V5, "dev-1");
    assert_eq!(
        device.subscribe(&[
            ("clients/dev-1/#", 1),
            ("mail/dev-1", 1),
            ("clients/dev-2/#", 1),
            ("mail/+", 1),
        ]),
        vec![1, 1, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    device.publish_ok("mail/dev-1", b"to me", 1, false);
    device.expect_message("mail/dev-1", "to me");
    assert_eq!(device.publish("mail/dev-2", b"", 1, false), NOT_AUTHORIZED);
    // Anonymous: `%u` has no value, so those rules grant nothing.
    assert_eq!(
        device.subscribe(&[("users/+/#", 1), ("inbox/+", 1)]),
        vec![NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    assert_eq!(device.publish("users/x/y", b"", 1, false), NOT_AUTHORIZED);
}

#[test]
fn user_names_and_client_ids_with_wildcards_never_widen_a_rule() {
    let b = acl_broker("acl-injection", ACL, &[]);
    let mut observer = b.observer("observer", "#");

    // User "+": `users/%u/#` must not become `users/+/#`.
    let mut plus = b.user(V5, "+", "plus-user");
    assert_eq!(
        plus.subscribe(&[
            ("users/+/#", 1),
            ("inbox/+", 1),
            ("users/alice/#", 1),
            ("#", 1)
        ]),
        vec![NOT_AUTHORIZED; 4]
    );
    assert_eq!(plus.publish("users/alice/x", b"", 1, false), NOT_AUTHORIZED);
    assert_eq!(plus.publish("inbox/alice", b"", 1, false), NOT_AUTHORIZED);

    // User "a/b": `users/%u/#` must not become `users/a/b/#`, nor `inbox/%u` a
    // topic two levels deep.
    let mut slash = b.user(V3, "a/b", "slash-user");
    assert_eq!(
        slash.subscribe(&[("users/a/b/#", 1), ("inbox/a/b", 1), ("users/a/#", 1)]),
        vec![V3_SUBACK_FAILURE; 3]
    );
    // 3.1.1 acknowledges a refused publish as any other; the observer shows
    // that nothing went out before the client's own marker.
    slash.publish_ok("users/a/b/c", b"x", 1, false);
    slash.publish_ok("inbox/a/b", b"x", 1, false);
    slash.publish_ok("public/slash-end", b"", 1, false);
    assert_eq!(until_marker(&mut observer, "public/slash-end"), vec![]);

    // Client ids "+", "#" and "a/b" against `clients/%c/#` and `mail/%c`.
    for id in ["+", "#", "a/b"] {
        let mut client = b.anonymous(V5, id);
        let mut filters = vec![format!("mail/{id}"), "mail/+".to_owned()];
        if id != "#" {
            filters.push(format!("clients/{id}/#"));
        }
        let asked: Vec<(&str, u8)> = filters.iter().map(|f| (f.as_str(), 1)).collect();
        assert_eq!(
            client.subscribe(&asked),
            vec![NOT_AUTHORIZED; asked.len()],
            "client id {id:?}: {filters:?}"
        );
        for topic in ["mail/x", "clients/x/y", "mail/a/b", "clients/a/b/c"] {
            assert_eq!(
                client.publish(topic, b"x", 1, false),
                NOT_AUTHORIZED,
                "client id {id:?} publishing to {topic}"
            );
        }
    }

    // A benign identity gets what the rules give it, and nothing above went out.
    let mut alice = b.user(V5, "alice", "alice");
    assert_eq!(alice.subscribe(&[("users/alice/#", 1)]), vec![1]);
    observer.expect_no_message();
}

#[test]
fn a_will_is_published_only_to_a_topic_its_client_may_publish_to() {
    let b = acl_broker("acl-will", ACL, &[]);
    let mut observer = b.observer("observer", "wills/#");
    for version in [V5, V3] {
        let denied = connect_ok(
            b.broker.tcp(),
            &Connect::new(version, &format!("will-denied-{version}")).will(
                "wills/denied/x",
                b"must not",
                1,
            ),
        );
        let allowed = connect_ok(
            b.broker.tcp(),
            &Connect::new(version, &format!("will-ok-{version}")).will("wills/ok/x", b"goodbye", 1),
        );
        denied.drop_connection();
        allowed.drop_connection();
        observer.expect_message("wills/ok/x", "goodbye");
        // The two wills come from different clients, so no order holds between
        // them: watch for the denied one for a while.
        observer.expect_no_message();
    }
}

#[test]
fn retained_messages_are_filtered_by_a_deny_rule_inside_a_granted_subscription() {
    let b = acl_broker("acl-retained", ACL, &[]);
    let mut publisher = b.observer("publisher", "unused/none");
    for (topic, payload) in [
        ("public/a", "open"),
        ("public/secret/b", "hidden"),
        ("public/x/y", "open too"),
    ] {
        publisher.publish_ok(topic, payload.as_bytes(), 1, true);
    }
    for version in [V5, V3] {
        let mut reader = b.anonymous(version, &format!("reader-{version}"));
        // public/secret/# is denied inside public/#: the subscription is granted,
        // the denied topics are not delivered.
        reader.subscribe_ok("public/#", 1);
        let mut retained = vec![reader.recv(), reader.recv()];
        retained.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert!(retained.iter().all(|m| m.retain), "{retained:?}");
        assert_eq!(
            retained
                .iter()
                .map(|m| (m.topic.clone(), m.text()))
                .collect::<Vec<_>>(),
            pairs(&[("public/a", "open"), ("public/x/y", "open too")])
        );
        // Live messages too.
        publisher.publish_ok("public/secret/c", b"hidden", 1, false);
        publisher.publish_ok("public/end", b"", 1, false);
        assert_eq!(until_marker(&mut reader, "public/end"), vec![]);
        reader.expect_no_message();
    }
}

#[test]
fn shared_subscriptions_are_checked_as_their_filter() {
    let b = acl_broker("acl-share", ACL, &[]);
    let mut publisher = b.observer("publisher", "unused/none");
    for version in [V5, V3] {
        let no = refused(version);
        let mut member = b.anonymous(version, &format!("member-{version}"));
        assert_eq!(
            member.subscribe(&[
                ("$share/g/public/#", 1),
                ("$share/g/secret/#", 1),
                ("$share/g/public/secret/#", 1),
                ("$share/g/#", 1),
            ]),
            vec![1, no, no, no],
            "MQTT level {version}"
        );
        publisher.publish_ok("public/secret/s", b"hidden", 1, false);
        publisher.publish_ok("secret/t", b"hidden", 1, false);
        publisher.publish_ok("public/ok", b"shared", 1, false);
        member.expect_message("public/ok", "shared");
        member.expect_no_message();
        member.disconnect();
    }
}

#[test]
fn sys_topics_need_a_rule_that_names_them() {
    // $SYS statistics every second, so there is something to receive.
    let b = acl_broker("acl-sys", ACL, &["--sys-interval", "1"]);
    let mut watcher = b.user(V5, "watcher", "watcher");
    assert_eq!(
        watcher.subscribe(&[("#", 0), ("$SYS/#", 0), ("$SYS/broker/uptime", 0)]),
        vec![0, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    let mut someone = b.anonymous(V3, "someone");
    assert_eq!(someone.subscribe(&[("$SYS/#", 0)]), vec![V3_SUBACK_FAILURE]);

    let mut admin = b.user(V5, "admin", "admin");
    admin.subscribe_ok("$SYS/#", 0);
    let m = admin.recv();
    assert!(m.topic.starts_with("$SYS/"), "{m:?}");
    // By then "#" has had a $SYS publication to match, and must not have.
    if let Some(m) = watcher.recv_within(sec_harness::QUIET) {
        panic!("`#` received {m:?}");
    }
}

#[test]
fn a_bad_acl_file_stops_the_start_and_check_config() {
    let dir = temp_dir("acl-bad-start");
    let cases = [
        ("missing", None),
        ("empty", Some("")),
        ("syntax", Some("[[rule]\npermission = \"allow\"\n")),
        (
            "rule",
            Some(
                "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"a/#\"]\n\n\
                 [[rule]]\npermission = \"maybe\"\naction = \"both\"\ntopics = [\"b/#\"]\n",
            ),
        ),
        (
            "filter",
            Some("[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"a/#/b\"]\n"),
        ),
    ];
    for (what, contents) in cases {
        let path = match contents {
            Some(text) => write_file(&dir, &format!("acl-{what}.toml"), text),
            None => dir.join("acl-missing.toml"),
        };
        let shown = path.display().to_string();
        let config = format!("[auth]\nacl_file = {}\n", toml_path(&path));
        let mut names = vec![shown.as_str()];
        if what == "rule" {
            names.push("rule 2");
        }
        assert_start_fails(&dir, &config, &names);
        assert_check_config_fails(&dir, &config, &names);
    }
}

#[test]
fn a_reload_with_a_bad_acl_file_keeps_the_old_rules() {
    let b = acl_broker("acl-bad-reload", ACL, &[]);
    let mut alice = b.user(V5, "alice", "alice");
    let shown = b.acl.display().to_string();
    // The malformed file opens everything in its first rule: applied even in
    // part, alice could publish to bob/in.
    let malformed = "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"#\"]\n\n\
                     [[rule]]\npermission = \"allow\"\naction = \"both\"\ntopic = [\"x\"]\n";
    for (what, contents) in [
        ("malformed", Some(malformed)),
        ("empty", Some("")),
        ("missing", None),
    ] {
        match contents {
            Some(text) => replace_file(&b.acl, text),
            None => std::fs::remove_file(&b.acl).unwrap(),
        }
        let warning = b.broker.reload_refused(&[&shown]);
        assert!(warning.contains("WARN"), "{what}: {warning}");
        for client in [
            &mut alice,
            &mut b.user(V5, "alice", &format!("alice-{what}")),
        ] {
            client.publish_ok("alice/out/x", b"", 1, false);
            assert_eq!(
                client.publish("bob/in", b"", 1, false),
                NOT_AUTHORIZED,
                "{what}: still denied"
            );
        }
        let mut anonymous = b.anonymous(V5, &format!("anon-{what}"));
        assert_eq!(
            anonymous.subscribe(&[("#", 1)]),
            vec![NOT_AUTHORIZED],
            "{what}"
        );
    }
}

#[test]
fn a_reload_with_a_good_acl_file_applies_to_connected_clients_and_pending_wills() {
    let b = acl_broker("acl-good-reload", ACL, &[]);
    let mut observer = b.observer("observer", "wills/#");
    let mut alice = b.user(V5, "alice", "alice");
    assert_eq!(alice.publish("bob/in", b"", 1, false), NOT_AUTHORIZED);
    // Its will is allowed now, and will not be when it is sent.
    let willer = connect_ok(
        b.broker.tcp(),
        &Connect::new(V5, "willer").will("wills/ok/late", b"too late", 1),
    );

    replace_file(
        &b.acl,
        "[[rule]]\npermission = \"allow\"\naction = \"publish\"\nuser = \"alice\"\n\
         topics = [\"bob/in\"]\n\n\
         [[rule]]\npermission = \"allow\"\naction = \"publish\"\ntopics = [\"wills/new/#\"]\n",
    );
    b.broker.reload_applied();
    // alice's next action already follows the new rules.
    alice.publish_ok("bob/in", b"", 1, false);
    assert_eq!(alice.publish("alice/out/x", b"", 1, false), NOT_AUTHORIZED);

    let newer = connect_ok(
        b.broker.tcp(),
        &Connect::new(V5, "newer").will("wills/new/x", b"in time", 1),
    );
    willer.drop_connection();
    newer.drop_connection();
    observer.expect_message("wills/new/x", "in time");
    observer.expect_no_message();
}
