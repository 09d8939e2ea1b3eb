//! Property tests of the ACL engine.
//!
//! 1. The level-by-level filter functions agree with their definitions, checked
//!    by brute force over every topic of a small alphabet.
//! 2. A hostile username or client id (holding `+`, `#`, `/` or NUL, empty,
//!    starting with `$`, or absent) never gains access: for random rule sets,
//!    whatever it may do, a benign identity in its place may do too, and it gets
//!    exactly what an anonymous client (or the empty client id) gets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use ringmq_auth::acl::filter::{covers, intersects, matches};
use ringmq_auth::{Acl, ClientAcl};

// ---- 1. filters against their definitions ----

/// Levels of topics and filters; `$a` matters only first, `""` is a real level.
const LITERALS: [&str; 4] = ["a", "b", "$a", ""];
/// Every topic of up to 5 levels over LITERALS plus a level no filter names.
fn all_topics() -> Vec<String> {
    let alphabet = [LITERALS.as_slice(), &["z"]].concat();
    let mut topics: Vec<Vec<&str>> = alphabet.iter().map(|l| vec![*l]).collect();
    let mut frontier = topics.clone();
    for _ in 1..5 {
        frontier = frontier
            .iter()
            .flat_map(|t| alphabet.iter().map(move |l| [t.as_slice(), &[*l]].concat()))
            .collect();
        topics.extend(frontier.iter().cloned());
    }
    topics
        .into_iter()
        .map(|levels| levels.join("/"))
        .filter(|topic| !topic.is_empty())
        .collect()
}

/// The definition of a match, stated differently from the code under test: by
/// level counts, then level by level, then the `$` rule.
fn defined_match(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    let multi = f.last() == Some(&"#");
    let fixed = if multi { &f[..f.len() - 1] } else { &f[..] };
    let counts_fit = if multi {
        t.len() >= fixed.len()
    } else {
        t.len() == fixed.len()
    };
    let levels_fit = fixed.iter().zip(&t).all(|(f, t)| *f == "+" || f == t);
    let dollar_ok = !(topic.starts_with('$') && (f[0] == "+" || f[0] == "#"));
    counts_fit && levels_fit && dollar_ok
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        Just("a"),
        Just("b"),
        Just("$a"),
        Just(""),
        Just("+"),
        Just("+"),
    ];
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
        "an empty filter is invalid",
        |(levels, hash)| {
            let mut levels: Vec<&str> = levels;
            if hash {
                levels.push("#");
            }
            Some(levels.join("/")).filter(|filter| !filter.is_empty())
        },
    )
}

fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("a"), Just("b"), Just("$a"), Just(""), Just("z")];
    prop::collection::vec(level, 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("empty topic", |t| !t.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_agrees_with_its_definition(filter in filter_strategy(), topic in topic_strategy()) {
        prop_assert_eq!(matches(&filter, &topic), defined_match(&filter, &topic));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn covers_and_intersects_agree_with_brute_force(a in filter_strategy(), b in filter_strategy()) {
        let topics = all_topics();
        let covered = topics.iter().all(|t| !defined_match(&b, t) || defined_match(&a, t));
        let shared = topics.iter().any(|t| defined_match(&a, t) && defined_match(&b, t));
        prop_assert_eq!(covers(&a, &b), covered, "{} covers {}", a, b);
        prop_assert_eq!(intersects(&a, &b), shared, "{} intersects {}", a, b);
    }
}

// ---- 2. hostile identities ----

/// Names the rules may mention; identities under test never use them.
const RULE_USERS: [&str; 2] = ["alice", "bob"];
const RULE_CLIENT: &str = "c1";

fn pattern_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        Just("a"),
        Just("$SYS"),
        Just("+"),
        Just("%u"),
        Just("%c"),
        Just("x%u"),
        Just("%c-y"),
        Just("%%"),
    ];
    (prop::collection::vec(level, 1..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut levels: Vec<&str> = levels;
        if hash {
            levels.push("#");
        }
        levels.join("/")
    })
}

fn rule_strategy() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("allow"), Just("deny")],
        prop_oneof![Just("publish"), Just("subscribe"), Just("both")],
        prop_oneof![3 => Just(None), 1 => Just(Some(RULE_USERS[0])), 1 => Just(Some(RULE_USERS[1]))],
        prop_oneof![3 => Just(None), 1 => Just(Some(RULE_CLIENT))],
        prop::collection::vec(pattern_strategy(), 1..4),
    )
        .prop_map(|(permission, action, user, client, topics)| {
            let mut rule = format!("[[rule]]\npermission = \"{permission}\"\naction = \"{action}\"\n");
            if let Some(user) = user {
                rule.push_str(&format!("user = \"{user}\"\n"));
            }
            if let Some(client) = client {
                rule.push_str(&format!("client = \"{client}\"\n"));
            }
            let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
            rule.push_str(&format!("topics = [{}]\n", topics.join(", ")));
            rule
        })
}

fn acl_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(rule_strategy(), 1..8).prop_map(|rules| rules.join("\n"))
}

fn hostile_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("+".to_owned()),
        Just("#".to_owned()),
        Just("a/b".to_owned()),
        Just("$SYS".to_owned()),
        "[a-z]{0,2}[+#/\\x00][a-z$]{0,2}",
        "\\$[a-z]{1,3}",
    ]
}

fn benign_strategy() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,3}".prop_filter("named by a rule", |name| {
        !RULE_USERS.contains(&name.as_str()) && name != RULE_CLIENT
    })
}

/// Topics and filters written with `%U`/`%C` for the benign user and client, so
/// the cases reach the very topics the placeholders produce.
fn template_strategy(wildcards: bool) -> impl Strategy<Value = String> {
    let level = prop_oneof![
        Just("a"),
        Just("$SYS"),
        Just("%U"),
        Just("%C"),
        Just("x%U"),
        Just("%C-y"),
        Just("%"),
        Just("q"),
    ];
    let plus = if wildcards { 0.3 } else { 0.0 };
    (
        prop::collection::vec((level, prop::bool::weighted(plus)), 1..5),
        prop::bool::weighted(plus),
    )
        .prop_map(|(levels, hash)| {
            let mut levels: Vec<&str> = levels
                .into_iter()
                .map(|(level, plus)| if plus { "+" } else { level })
                .collect();
            if hash {
                levels.push("#");
            }
            levels.join("/")
        })
}

fn fill(template: &str, user: &str, client: &str) -> String {
    template.replace("%U", user).replace("%C", client)
}

struct Probe {
    topics: Vec<String>,
    filters: Vec<String>,
}

/// Whatever `weaker` may do, `stronger` may do too.
fn assert_subset(
    weaker: &ClientAcl,
    stronger: &ClientAcl,
    probe: &Probe,
) -> Result<(), TestCaseError> {
    for topic in &probe.topics {
        prop_assert!(
            !weaker.may_publish(topic) || stronger.may_publish(topic),
            "publish {}",
            topic
        );
        prop_assert!(
            !weaker.may_receive(topic) || stronger.may_receive(topic),
            "receive {}",
            topic
        );
    }
    for filter in &probe.filters {
        prop_assert!(
            weaker.subscribe(filter) <= stronger.subscribe(filter),
            "subscribe {}",
            filter
        );
    }
    Ok(())
}

fn assert_same(a: &ClientAcl, b: &ClientAcl, probe: &Probe) -> Result<(), TestCaseError> {
    assert_subset(a, b, probe)?;
    assert_subset(b, a, probe)
}

fn probe(topics: &[String], filters: &[String], user: &str, client: &str) -> Probe {
    Probe {
        topics: topics.iter().map(|t| fill(t, user, client)).collect(),
        filters: filters.iter().map(|f| fill(f, user, client)).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_hostile_username_gets_nothing_a_benign_one_would_not(
        acl in acl_strategy(),
        hostile in prop::option::of(hostile_strategy()),
        benign in benign_strategy(),
        client in prop_oneof![Just("c1".to_owned()), Just("c2".to_owned()), hostile_strategy()],
        topics in prop::collection::vec(template_strategy(false), 1..12),
        filters in prop::collection::vec(template_strategy(true), 1..12),
    ) {
        let acl = Acl::parse(&acl).unwrap();
        let hostile_acl = acl.for_client(hostile.as_deref(), &client);
        let benign_acl = acl.for_client(Some(&benign), &client);
        let anonymous_acl = acl.for_client(None, &client);
        // Probe with the benign name in the topics, and with the hostile one.
        let mut probes = vec![probe(&topics, &filters, &benign, &client)];
        if let Some(hostile) = &hostile {
            probes.push(probe(&topics, &filters, hostile, &client));
        }
        for probe in &probes {
            assert_subset(&hostile_acl, &benign_acl, probe)?;
            assert_same(&hostile_acl, &anonymous_acl, probe)?;
        }
    }

    #[test]
    fn a_hostile_client_id_gets_nothing_a_benign_one_would_not(
        acl in acl_strategy(),
        hostile in hostile_strategy(),
        benign in benign_strategy(),
        user in prop::option::of(prop_oneof![Just("alice".to_owned()), Just("carol".to_owned()), hostile_strategy()]),
        topics in prop::collection::vec(template_strategy(false), 1..12),
        filters in prop::collection::vec(template_strategy(true), 1..12),
    ) {
        let acl = Acl::parse(&acl).unwrap();
        let user = user.as_deref();
        let hostile_acl = acl.for_client(user, &hostile);
        let benign_acl = acl.for_client(user, &benign);
        let empty_acl = acl.for_client(user, "");
        let name = user.unwrap_or("nobody");
        for probe in [probe(&topics, &filters, name, &benign), probe(&topics, &filters, name, &hostile)] {
            assert_subset(&hostile_acl, &benign_acl, &probe)?;
            assert_same(&hostile_acl, &empty_acl, &probe)?;
        }
    }
}
