//! Checks of topic names and filters against MQTT 5 section 4.7 and the broker's level
//! limit, `$share/{group}/{filter}` parsing (section 4.8.2), and the naive matcher that
//! defines what the trie and the retained tree must agree with.

use std::fmt;

use crate::limits::STRING_BYTES_MAX;
use crate::reason::ReasonCode;

/// Prefix that makes a subscription shared (MQTT 5, 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Whether a string was checked as a topic name (PUBLISH, will) or a topic filter
/// (SUBSCRIBE, UNSUBSCRIBE); decides the reason code a broker answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Name,
    Filter,
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicKind::Name => "topic name",
            TopicKind::Filter => "topic filter",
        })
    }
}

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("{kind} is empty")]
    Empty { kind: TopicKind },
    #[error("{kind} is {len_bytes} bytes long, more than the {STRING_BYTES_MAX} an MQTT string can hold")]
    TooLong { kind: TopicKind, len_bytes: usize },
    #[error("{kind} contains the null character U+0000")]
    NullCharacter { kind: TopicKind },
    #[error("{kind} has more than {levels_max} levels")]
    TooManyLevels { kind: TopicKind, levels_max: usize },
    #[error("topic name contains the wildcard '{wildcard}'; wildcards are only allowed in topic filters")]
    WildcardInName { wildcard: char },
    #[error("level {position} of the topic filter mixes a wildcard with other characters; '+' and '#' must be a whole level")]
    WildcardNotWholeLevel { position: usize },
    #[error("'#' at level {position} of the topic filter is not the last level")]
    MultiLevelNotLast { position: usize },
    #[error("shared subscription has an empty share name ('$share//...')")]
    ShareNameEmpty,
    #[error("share name contains '{character}', which is not allowed in a share name")]
    ShareNameInvalid { character: char },
    #[error("shared subscription has no topic filter after '$share/{{name}}/'")]
    ShareFilterMissing,
}

impl TopicError {
    /// Whether the refused string was a topic name or a topic filter.
    pub fn kind(&self) -> TopicKind {
        match self {
            TopicError::Empty { kind }
            | TopicError::TooLong { kind, .. }
            | TopicError::NullCharacter { kind }
            | TopicError::TooManyLevels { kind, .. } => *kind,
            TopicError::WildcardInName { .. } => TopicKind::Name,
            TopicError::WildcardNotWholeLevel { .. }
            | TopicError::MultiLevelNotLast { .. }
            | TopicError::ShareNameEmpty
            | TopicError::ShareNameInvalid { .. }
            | TopicError::ShareFilterMissing => TopicKind::Filter,
        }
    }

    /// The MQTT 5 reason code a broker answers with: 0x90 "Topic Name invalid" in a
    /// PUBACK/PUBREC/DISCONNECT, 0x8F "Topic Filter invalid" in a SUBACK/UNSUBACK.
    pub fn reason_code(&self) -> ReasonCode {
        match self.kind() {
            TopicKind::Name => ReasonCode::TopicNameInvalid,
            TopicKind::Filter => ReasonCode::TopicFilterInvalid,
        }
    }
}

/// A topic filter from a SUBSCRIBE, told apart as plain or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter<'a> {
    /// An ordinary filter: every matching subscriber gets a copy.
    Plain(&'a str),
    /// `$share/{group}/{filter}`: one member of the group gets each message.
    Shared { group: &'a str, filter: &'a str },
}

impl<'a> Filter<'a> {
    /// The filter matched against topic names, without any `$share/{group}/` prefix.
    pub fn topic_filter(&self) -> &'a str {
        match self {
            Filter::Plain(filter) | Filter::Shared { filter, .. } => filter,
        }
    }

    /// The share group, for a shared subscription.
    pub fn group(&self) -> Option<&'a str> {
        match self {
            Filter::Plain(_) => None,
            Filter::Shared { group, .. } => Some(group),
        }
    }
}

/// Checks a topic name from a PUBLISH or a will: non-empty, at most 65535 bytes, no
/// wildcard, no U+0000, at most `levels_max` levels. Empty levels (`a//b`, `/a`) are valid.
pub fn validate_topic_name(name: &str, levels_max: usize) -> Result<(), TopicError> {
    let kind = TopicKind::Name;
    check_length(name, kind)?;
    // One pass over the bytes: U+0000 is the only character whose UTF-8 holds a 0 byte,
    // and '/', '+', '#' never occur inside a multi-byte sequence.
    let mut levels = 1usize;
    for byte in name.bytes() {
        match byte {
            0 => return Err(TopicError::NullCharacter { kind }),
            b'+' | b'#' => {
                return Err(TopicError::WildcardInName {
                    wildcard: char::from(byte),
                })
            }
            b'/' => {
                levels += 1;
                if levels > levels_max {
                    return Err(TopicError::TooManyLevels { kind, levels_max });
                }
            }
            _ => {}
        }
    }
    if levels > levels_max {
        return Err(TopicError::TooManyLevels { kind, levels_max });
    }
    Ok(())
}

/// Checks a plain topic filter: non-empty, at most 65535 bytes, no U+0000, `+` and `#`
/// each a whole level, `#` only last, at most `levels_max` levels.
///
/// `$share/...` is not special here (MQTT 3.1.1 has no shared subscriptions); use
/// [`parse_filter`] to recognise it.
pub fn validate_topic_filter(filter: &str, levels_max: usize) -> Result<(), TopicError> {
    check_length(filter, TopicKind::Filter)?;
    check_filter_levels(filter, levels_max)
}

/// Checks a topic filter from a SUBSCRIBE and tells a shared subscription
/// (`$share/{group}/{filter}`) from a plain one. The group must be non-empty and free of
/// `+`, `#` and `/`; the inner filter must be non-empty and valid, and it alone counts
/// against `levels_max`.
pub fn parse_filter(filter: &str, levels_max: usize) -> Result<Filter<'_>, TopicError> {
    check_length(filter, TopicKind::Filter)?;
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        check_filter_levels(filter, levels_max)?;
        return Ok(Filter::Plain(filter));
    };
    // The group ends at the first '/', so it cannot contain one.
    let (group, inner) = rest.split_once('/').unwrap_or((rest, ""));
    if group.is_empty() {
        return Err(TopicError::ShareNameEmpty);
    }
    if let Some(character) = group.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(TopicError::ShareNameInvalid { character });
    }
    if inner.is_empty() {
        return Err(TopicError::ShareFilterMissing);
    }
    check_filter_levels(inner, levels_max)?;
    Ok(Filter::Shared {
        group,
        filter: inner,
    })
}

/// Splits `$share/{group}/{filter}` into its parts without validating them, so the trie
/// files a shared filter the same way on insert and on remove. Returns `None` for
/// anything [`parse_filter`] would not call shared.
pub(crate) fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let (group, inner) = filter.strip_prefix(SHARE_PREFIX)?.split_once('/')?;
    if group.is_empty() || inner.is_empty() {
        return None;
    }
    Some((group, inner))
}

/// The reference matcher: does a valid plain `filter` match a valid topic `name`?
///
/// `+` matches exactly one level, even an empty one; `#` matches its parent level and any
/// number of levels below (`sport/#` matches `sport`); a filter starting with a wildcard
/// does not match a name starting with `$` (MQTT 5, 4.7.2). Kept simple on purpose: the
/// trie and the retained tree are tested against it, and ACLs use it directly.
pub fn matches(filter: &str, name: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    if name.starts_with('$') && matches!(filter.split('/').next(), Some("+" | "#")) {
        return false;
    }
    loop {
        match (filter_levels.next(), name_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn check_length(topic: &str, kind: TopicKind) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty { kind });
    }
    if topic.len() > STRING_BYTES_MAX {
        return Err(TopicError::TooLong {
            kind,
            len_bytes: topic.len(),
        });
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter { kind });
    }
    Ok(())
}

fn check_filter_levels(filter: &str, levels_max: usize) -> Result<(), TopicError> {
    let mut levels = filter.split('/').enumerate().peekable();
    while let Some((index, level)) = levels.next() {
        let position = index + 1;
        if position > levels_max {
            return Err(TopicError::TooManyLevels {
                kind: TopicKind::Filter,
                levels_max,
            });
        }
        match level {
            "#" if levels.peek().is_some() => {
                return Err(TopicError::MultiLevelNotLast { position })
            }
            "+" | "#" => {}
            _ if level.contains(['+', '#']) => {
                return Err(TopicError::WildcardNotWholeLevel { position })
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: usize = 8;

    #[test]
    fn names_valid() {
        for name in [
            "a",
            "sport/tennis/player1",
            "/",
            "/a",
            "a/",
            "a//b",
            "$SYS/x",
            " ",
            "ü/€",
        ] {
            assert_eq!(validate_topic_name(name, LEVELS), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn name_errors() {
        let name = TopicKind::Name;
        let cases = [
            ("", TopicError::Empty { kind: name }),
            ("a\0b", TopicError::NullCharacter { kind: name }),
            ("a/+", TopicError::WildcardInName { wildcard: '+' }),
            ("sport/#", TopicError::WildcardInName { wildcard: '#' }),
            ("sport+", TopicError::WildcardInName { wildcard: '+' }),
            (
                "a/b/c/d/e/f/g/h/i",
                TopicError::TooManyLevels {
                    kind: name,
                    levels_max: LEVELS,
                },
            ),
            (
                "////////",
                TopicError::TooManyLevels {
                    kind: name,
                    levels_max: LEVELS,
                },
            ),
        ];
        for (input, error) in cases {
            assert_eq!(validate_topic_name(input, LEVELS), Err(error), "{input:?}");
        }
        let long = "a".repeat(STRING_BYTES_MAX + 1);
        assert_eq!(
            validate_topic_name(&long, LEVELS),
            Err(TopicError::TooLong {
                kind: name,
                len_bytes: STRING_BYTES_MAX + 1
            })
        );
        let longest = "a".repeat(STRING_BYTES_MAX);
        assert_eq!(validate_topic_name(&longest, LEVELS), Ok(()));
    }

    #[test]
    fn name_levels_at_limit() {
        assert_eq!(validate_topic_name("a/b/c/d/e/f/g/h", LEVELS), Ok(()));
        assert_eq!(validate_topic_name("///////", LEVELS), Ok(()));
    }

    #[test]
    fn filters_valid() {
        let filters = [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/+",
            "/+",
            "+/tennis/#",
            "sport/+/player1",
            "sport/tennis/+",
            "a//b",
            "$SYS/#",
            "$share",
            "$share/g/#",
        ];
        for filter in filters {
            assert_eq!(validate_topic_filter(filter, LEVELS), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn filter_errors() {
        let kind = TopicKind::Filter;
        let cases = [
            ("", TopicError::Empty { kind }),
            ("a/\0", TopicError::NullCharacter { kind }),
            ("sport+", TopicError::WildcardNotWholeLevel { position: 1 }),
            (
                "sport/tennis#",
                TopicError::WildcardNotWholeLevel { position: 2 },
            ),
            ("a/++", TopicError::WildcardNotWholeLevel { position: 2 }),
            ("a/#b", TopicError::WildcardNotWholeLevel { position: 2 }),
            (
                "sport/tennis/#/ranking",
                TopicError::MultiLevelNotLast { position: 3 },
            ),
            ("#/", TopicError::MultiLevelNotLast { position: 1 }),
            (
                "+/+/+/+/+/+/+/+/#",
                TopicError::TooManyLevels {
                    kind,
                    levels_max: LEVELS,
                },
            ),
        ];
        for (input, error) in cases {
            assert_eq!(
                validate_topic_filter(input, LEVELS),
                Err(error.clone()),
                "{input:?}"
            );
            assert_eq!(parse_filter(input, LEVELS), Err(error), "{input:?}");
        }
        let long = "+/".repeat(STRING_BYTES_MAX / 2 + 1);
        assert!(matches!(
            validate_topic_filter(&long, usize::MAX),
            Err(TopicError::TooLong {
                kind: TopicKind::Filter,
                ..
            })
        ));
    }

    #[test]
    fn shared_filters() {
        assert_eq!(
            parse_filter("sport/#", LEVELS),
            Ok(Filter::Plain("sport/#"))
        );
        assert_eq!(parse_filter("$share", LEVELS), Ok(Filter::Plain("$share")));
        assert_eq!(
            parse_filter("$shared/g/a", LEVELS),
            Ok(Filter::Plain("$shared/g/a"))
        );
        let shared = parse_filter("$share/consumers/sport/+", LEVELS);
        assert_eq!(
            shared,
            Ok(Filter::Shared {
                group: "consumers",
                filter: "sport/+"
            })
        );
        assert_eq!(
            shared.map(|f| (f.group(), f.topic_filter())),
            Ok((Some("consumers"), "sport/+"))
        );
        assert_eq!(
            parse_filter("$share/g//", LEVELS),
            Ok(Filter::Shared {
                group: "g",
                filter: "/"
            })
        );
        // The prefix does not count against the level limit: 8 inner levels are fine.
        assert!(parse_filter("$share/g/a/b/c/d/e/f/g/h", LEVELS).is_ok());
    }

    #[test]
    fn shared_filter_errors() {
        let cases = [
            ("$share/", TopicError::ShareNameEmpty),
            ("$share//x", TopicError::ShareNameEmpty),
            ("$share/g", TopicError::ShareFilterMissing),
            ("$share/g/", TopicError::ShareFilterMissing),
            (
                "$share/g+/x",
                TopicError::ShareNameInvalid { character: '+' },
            ),
            (
                "$share/#/x",
                TopicError::ShareNameInvalid { character: '#' },
            ),
            (
                "$share/g/x/#/y",
                TopicError::MultiLevelNotLast { position: 2 },
            ),
            (
                "$share/g/a+",
                TopicError::WildcardNotWholeLevel { position: 1 },
            ),
            (
                "$share/g\0/a",
                TopicError::NullCharacter {
                    kind: TopicKind::Filter,
                },
            ),
            (
                "$share/g/a/b/c/d/e/f/g/h/i",
                TopicError::TooManyLevels {
                    kind: TopicKind::Filter,
                    levels_max: LEVELS,
                },
            ),
        ];
        for (input, error) in cases {
            assert_eq!(parse_filter(input, LEVELS), Err(error), "{input:?}");
        }
    }

    #[test]
    fn split_shared_agrees_with_parse_filter_on_valid_input() {
        assert_eq!(split_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(split_shared("$share/g/"), None);
        assert_eq!(split_shared("$share//a"), None);
        assert_eq!(split_shared("$share/g"), None);
        assert_eq!(split_shared("a/b"), None);
    }

    #[test]
    fn reason_codes() {
        let name = [
            TopicError::Empty {
                kind: TopicKind::Name,
            },
            TopicError::WildcardInName { wildcard: '#' },
        ];
        for error in name {
            assert_eq!(error.reason_code(), ReasonCode::TopicNameInvalid);
            assert_eq!(error.reason_code() as u8, 0x90);
        }
        let filter = [
            TopicError::Empty {
                kind: TopicKind::Filter,
            },
            TopicError::MultiLevelNotLast { position: 1 },
            TopicError::ShareFilterMissing,
        ];
        for error in filter {
            assert_eq!(error.reason_code(), ReasonCode::TopicFilterInvalid);
            assert_eq!(error.reason_code() as u8, 0x8F);
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let message = TopicError::MultiLevelNotLast { position: 3 }.to_string();
        assert_eq!(
            message,
            "'#' at level 3 of the topic filter is not the last level"
        );
        let message = TopicError::TooLong {
            kind: TopicKind::Name,
            len_bytes: 70_000,
        }
        .to_string();
        assert_eq!(
            message,
            "topic name is 70000 bytes long, more than the 65535 an MQTT string can hold"
        );
        assert_eq!(
            TopicError::ShareFilterMissing.to_string(),
            "shared subscription has no topic filter after '$share/{name}/'"
        );
    }

    // MQTT 5, 4.7.1.2: "sport/tennis/player1/#" and the names it matches.
    #[test]
    fn spec_multi_level_wildcard() {
        let filter = "sport/tennis/player1/#";
        for name in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches(filter, name), "{name}");
        }
        assert!(!matches(filter, "sport/tennis/player2"));
        assert!(!matches(filter, "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
    }

    // MQTT 5, 4.7.1.3: the single-level wildcard.
    #[test]
    fn spec_single_level_wildcard() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
        assert!(!matches("sport/+/player1", "sport/tennis/player2"));
    }

    // MQTT 5, 4.7.2: names starting with '$'.
    #[test]
    fn spec_dollar_topics() {
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        // Only the first level is special.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b"));
    }

    #[test]
    fn exact_and_empty_levels() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a//b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(matches("a/b/#", "a/b/"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("A", "a"));
    }
}
