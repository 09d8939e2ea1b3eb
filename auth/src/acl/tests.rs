use super::*;
use SubscribeDecision::{Allow, AllowFiltered, Deny};

const MATRIX: &str = r##"
# Everyone: public/ both ways, but not its secret part.
[[rule]]
permission = "allow"
action = "both"
topics = ["public/#"]

[[rule]]
permission = "deny"
action = "both"
topics = ["public/secret/#"]

# Each user their own tree, read-only below readonly/.
[[rule]]
permission = "allow"
action = "both"
topics = ["users/%u/#"]

[[rule]]
permission = "deny"
action = "publish"
topics = ["users/%u/readonly/#"]

# Each client its command topic, to receive only; %% is a literal %.
[[rule]]
permission = "allow"
action = "subscribe"
topics = ["cmd/%c", "pct/%%/dev-%c"]

# One sensor, publish only.
[[rule]]
permission = "allow"
action = "publish"
client = "sensor-1"
topics = ["sensors/1/#"]

# The admin reads everything, $SYS included...
[[rule]]
permission = "allow"
action = "subscribe"
user = "admin"
topics = ["#", "$SYS/#"]

# ...except private trees when on its read-only client (both must match).
[[rule]]
permission = "deny"
action = "subscribe"
user = "admin"
client = "admin-ro"
topics = ["users/+/private/#"]
"##;

fn client(text: &str, user: Option<&str>, client_id: &str) -> ClientAcl {
    Acl::parse(text).unwrap().for_client(user, client_id)
}

#[test]
fn everyone_rules_and_deny_over_allow() {
    let alice = client(MATRIX, Some("alice"), "c1");
    assert!(alice.may_publish("public/news"));
    assert!(alice.may_receive("public/news"));
    assert!(!alice.may_publish("public/secret/x"), "deny beats allow");
    assert!(!alice.may_receive("public/secret"));
    assert!(!alice.may_publish("elsewhere"), "no rule: denied");
    assert_eq!(alice.subscribe("public/a/+"), Allow);
    assert_eq!(
        alice.subscribe("public/#"),
        AllowFiltered,
        "a deny intersects"
    );
    assert_eq!(alice.subscribe("public/+/x"), AllowFiltered);
    assert_eq!(alice.subscribe("public/secret/#"), Deny, "a deny covers");
    assert_eq!(alice.subscribe("public/secret/+"), Deny);
    assert_eq!(alice.subscribe("#"), Deny, "no allow covers");
    assert_eq!(
        alice.subscribe("public"),
        Allow,
        "public/# matches public itself"
    );
}

#[test]
fn user_placeholder_and_publish_versus_subscribe() {
    let alice = client(MATRIX, Some("alice"), "c1");
    assert!(alice.may_publish("users/alice/x"));
    assert!(!alice.may_publish("users/bob/x"));
    assert!(!alice.may_publish("users/alice/readonly/x"), "publish deny");
    assert!(
        alice.may_receive("users/alice/readonly/x"),
        "subscribe unaffected"
    );
    assert_eq!(alice.subscribe("users/alice/#"), Allow);
    assert_eq!(alice.subscribe("users/+/#"), Deny);
}

#[test]
fn client_placeholder_and_subscribe_only() {
    let c1 = client(MATRIX, None, "c1");
    assert_eq!(c1.subscribe("cmd/c1"), Allow);
    assert_eq!(c1.subscribe("cmd/c2"), Deny);
    assert_eq!(c1.subscribe("cmd/+"), Deny);
    assert!(c1.may_receive("cmd/c1"));
    assert!(
        !c1.may_publish("cmd/c1"),
        "subscribe rules grant no publish"
    );
    assert!(c1.may_receive("pct/%/dev-c1"), "part of a level, and %%");
    assert!(!c1.may_receive("pct/%%/dev-c1"));
}

#[test]
fn client_rules() {
    let sensor = client(MATRIX, Some("alice"), "sensor-1");
    assert!(sensor.may_publish("sensors/1/temp"));
    assert_eq!(
        sensor.subscribe("sensors/1/temp"),
        Deny,
        "publish rules grant no subscribe"
    );
    let other = client(MATRIX, Some("alice"), "sensor-2");
    assert!(!other.may_publish("sensors/1/temp"));
}

#[test]
fn sys_topics_need_a_rule_that_names_them() {
    let admin = client(MATRIX, Some("admin"), "admin-1");
    assert_eq!(admin.subscribe("$SYS/#"), Allow);
    assert!(admin.may_receive("$SYS/broker/uptime"));
    assert_eq!(
        admin.subscribe("#"),
        AllowFiltered,
        "public/secret is denied to all"
    );
    let alice = client(MATRIX, Some("alice"), "c1");
    assert_eq!(alice.subscribe("$SYS/#"), Deny);
    assert!(!alice.may_receive("$SYS/broker/uptime"));

    let open = "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"#\", \"+/+\"]\n";
    let anyone = client(open, None, "x");
    assert!(anyone.may_publish("a/b"));
    assert!(!anyone.may_publish("$SYS/x"), "# does not open $SYS");
    assert!(!anyone.may_receive("$SYS/x"));
    assert_eq!(anyone.subscribe("$SYS/#"), Deny);
    assert_eq!(anyone.subscribe("#"), Allow);
}

#[test]
fn user_and_client_must_both_match() {
    let read_only = client(MATRIX, Some("admin"), "admin-ro");
    assert_eq!(read_only.subscribe("users/+/private/#"), Deny);
    assert!(!read_only.may_receive("users/bob/private/x"));
    let admin = client(MATRIX, Some("admin"), "admin-rw");
    assert_eq!(admin.subscribe("users/+/private/#"), Allow);
    let bob = client(MATRIX, Some("bob"), "admin-ro");
    assert_eq!(
        bob.subscribe("users/bob/private/#"),
        Allow,
        "the admin rule is not bob's"
    );
}

#[test]
fn hostile_names_never_widen_an_allow() {
    for hostile in ["+", "#", "a/b", "", "$SYS", "x\0y", "+/#"] {
        let acl = client(MATRIX, Some(hostile), hostile);
        for topic in ["users/bob/x", "users/a/b/x", "users/x", "cmd/c1", "cmd/a/b"] {
            assert!(!acl.may_publish(topic), "{hostile:?} publish {topic}");
            assert!(!acl.may_receive(topic), "{hostile:?} receive {topic}");
        }
        for filter in ["users/+/#", "users/#", "cmd/+", "cmd/#", "#", "$SYS/#"] {
            assert_eq!(
                acl.subscribe(filter),
                Deny,
                "{hostile:?} subscribe {filter}"
            );
        }
        assert!(
            acl.may_publish("public/x"),
            "{hostile:?} keeps what everyone has"
        );
    }
    let anonymous = client(MATRIX, None, "c9");
    assert!(!anonymous.may_publish("users/c9/x"), "anonymous has no %u");
    let dollar = client(
        "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"%u/#\"]\n",
        Some("$SYS"),
        "c",
    );
    assert!(!dollar.may_receive("$SYS/x"), "%u/# must not become $SYS/#");
}

#[test]
fn hostile_names_widen_a_deny() {
    let text = r##"
        [[rule]]
        permission = "allow"
        action = "both"
        topics = ["room/#"]

        [[rule]]
        permission = "deny"
        action = "both"
        topics = ["room/%u", "room/x-%c/in"]
    "##;
    let alice = client(text, Some("alice"), "c1");
    assert!(!alice.may_publish("room/alice"));
    assert!(alice.may_publish("room/bob"));
    assert!(!alice.may_publish("room/x-c1/in"));
    assert!(alice.may_publish("room/x-c2/in"));
    for hostile in ["+", "#", "a/b", "", "$x"] {
        let acl = client(text, Some(hostile), hostile);
        assert!(!acl.may_publish("room/bob"), "{hostile:?}: room/+ denied");
        assert!(!acl.may_publish("room/a"), "{hostile:?}");
        assert!(
            !acl.may_publish("room/x-c2/in"),
            "{hostile:?}: room/+/in denied"
        );
        assert!(
            acl.may_publish("room/a/b"),
            "{hostile:?}: only one level is widened"
        );
        assert_eq!(acl.subscribe("room/+"), Deny, "{hostile:?}");
        assert_eq!(acl.subscribe("room/#"), AllowFiltered, "{hostile:?}");
    }
    let anonymous = client(text, None, "c1");
    assert!(!anonymous.may_publish("room/bob"));
}

#[test]
fn invalid_topics_and_filters_are_refused() {
    let open = "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"#\"]\n";
    let acl = client(open, None, "x");
    for topic in ["", "a/+", "a/#", "a\0"] {
        assert!(!acl.may_publish(topic), "{topic:?}");
        assert!(!acl.may_receive(topic), "{topic:?}");
    }
    for filter in ["", "a/#/b", "a+", "x\0"] {
        assert_eq!(acl.subscribe(filter), Deny, "{filter:?}");
    }
}

#[test]
fn compiled_once_shared_cheaply() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Acl>();
    is_send_sync::<ClientAcl>();
    let acl = Arc::new(Acl::parse(MATRIX).unwrap());
    assert_eq!(acl.len(), 8);
    let alice = acl.for_client(Some("alice"), "c1");
    let copy = alice.clone();
    assert!(Arc::ptr_eq(&alice.lists, &copy.lists));
    // Rules that do not apply to alice were dropped at compile time.
    assert_eq!(alice.lists.subscribe_allow.len(), 4);
}

fn rule_error(text: &str) -> (usize, String, String) {
    match Acl::parse(text) {
        Err(AuthError::AclRule {
            rule, key, reason, ..
        }) => (rule, key, reason),
        other => panic!("expected a rule error for {text}, got {other:?}"),
    }
}

fn file_error(text: &str) -> String {
    match Acl::parse(text) {
        Err(AuthError::Acl { reason, .. }) => reason,
        other => panic!("expected a file error for {text}, got {other:?}"),
    }
}

const GOOD: &str = "[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"a\"]\n";

#[test]
fn file_errors() {
    let cases = [
        ("", "no rules"),
        ("# nothing\n", "no rules"),
        ("rule = []\n", "no rules"),
        ("rule = \"x\"\n", "array of tables"),
        ("[rule]\npermission = \"allow\"\n", "array of tables"),
        ("[[rule]\n", "TOML parse error"),
        (
            "permission = \"allow\"\n",
            "unknown top-level key `permission`",
        ),
    ];
    for (text, needle) in cases {
        let reason = file_error(text);
        assert!(reason.contains(needle), "{text:?}: {reason}");
    }
}

#[test]
fn rule_errors_name_the_rule_and_key() {
    let rule = |body: &str| format!("{GOOD}[[rule]]\n{body}\n");
    let base = "permission = \"deny\"\naction = \"publish\"\n";
    let cases = [
        ("rule = [1]".to_owned(), 1, "rule", "must be a table"),
        (
            rule(&format!("{base}topics = [\"a\"]\nactoin = \"x\"")),
            2,
            "actoin",
            "unknown key",
        ),
        (
            rule("action = \"publish\"\ntopics = [\"a\"]"),
            2,
            "permission",
            "missing",
        ),
        (
            rule("permission = 1\naction = \"publish\"\ntopics = [\"a\"]"),
            2,
            "permission",
            "must be a string",
        ),
        (
            rule("permission = \"maybe\"\naction = \"publish\"\ntopics = [\"a\"]"),
            2,
            "permission",
            "not \"allow\"",
        ),
        (
            rule("permission = \"deny\"\ntopics = [\"a\"]"),
            2,
            "action",
            "missing",
        ),
        (
            rule("permission = \"deny\"\naction = \"read\"\ntopics = [\"a\"]"),
            2,
            "action",
            "not \"publish\"",
        ),
        (
            rule(&format!("{base}user = \"\"\ntopics = [\"a\"]")),
            2,
            "user",
            "is empty",
        ),
        (
            rule(&format!("{base}user = 7\ntopics = [\"a\"]")),
            2,
            "user",
            "must be a string",
        ),
        (
            rule(&format!("{base}client = \"\"\ntopics = [\"a\"]")),
            2,
            "client",
            "is empty",
        ),
        (rule(base), 2, "topics", "missing"),
        (
            rule(&format!("{base}topics = \"a\"")),
            2,
            "topics",
            "list of strings",
        ),
        (rule(&format!("{base}topics = []")), 2, "topics", "is empty"),
        (
            rule(&format!("{base}topics = [\"a\", 3]")),
            2,
            "topics",
            "list of strings",
        ),
        (
            rule(&format!("{base}topics = [\"\"]")),
            2,
            "topics",
            "empty filter",
        ),
        (
            rule(&format!("{base}topics = [\"a\\u0000\"]")),
            2,
            "topics",
            "NUL",
        ),
        (
            rule(&format!("{base}topics = [\"a/#/b\"]")),
            2,
            "topics",
            "last level",
        ),
        (
            rule(&format!("{base}topics = [\"a+/b\"]")),
            2,
            "topics",
            "stand alone",
        ),
        (
            rule(&format!("{base}topics = [\"a/%x\"]")),
            2,
            "topics",
            "unknown placeholder %x",
        ),
        (
            rule(&format!("{base}topics = [\"a/b%\"]")),
            2,
            "topics",
            "lone %",
        ),
        (
            rule(&format!("{base}topics = [\"$share/g/a\"]")),
            2,
            "topics",
            "$share",
        ),
        (
            rule(&format!("{base}topics = [\"$%u/a\"]")),
            2,
            "topics",
            "leading `$`",
        ),
    ];
    for (text, rule_number, key, needle) in cases {
        let (got_rule, got_key, reason) = rule_error(&text);
        assert_eq!(
            (got_rule, got_key.as_str()),
            (rule_number, key),
            "{text}: {reason}"
        );
        assert!(reason.contains(needle), "{text}: {reason}");
    }
    let error = Acl::parse(&rule(&format!("{base}topics = [\"a/%x\"]")))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "ACL: rule 2: `topics`: \"a/%x\": unknown placeholder %x (use %u, %c, or %% for a literal %)"
    );
}

#[test]
fn limits_are_enforced() {
    let many = (0..=crate::limits::ACL_TOPICS_PER_RULE_MAX)
        .map(|i| format!("\"t{i}\""))
        .collect::<Vec<_>>()
        .join(",");
    let text = format!("[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [{many}]\n");
    assert!(rule_error(&text).2.contains("more than"));
    let deep = vec!["a"; crate::limits::ACL_FILTER_LEVELS_MAX + 1].join("/");
    let text =
        format!("[[rule]]\npermission = \"allow\"\naction = \"both\"\ntopics = [\"{deep}\"]\n");
    assert!(rule_error(&text).2.contains("levels"));
}

#[test]
fn load_from_a_file() {
    let dir = std::env::temp_dir().join(format!("ringmq-auth-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("acl.toml");
    std::fs::write(&path, MATRIX).unwrap();
    assert_eq!(Acl::load(&path).unwrap().len(), 8);

    std::fs::write(&path, "").unwrap();
    let error = Acl::load(&path).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: no rules", path.display())),
        "{error}"
    );

    std::fs::write(&path, b"\xff").unwrap();
    let error = Acl::load(&path).unwrap_err().to_string();
    assert!(error.contains("not valid UTF-8"), "{error}");

    let error = Acl::load(&dir.join("missing.toml")).unwrap_err();
    assert!(matches!(error, AuthError::Read { .. }), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
