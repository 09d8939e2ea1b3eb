//! MQTT topic filters compared level by level on `&str`: does a filter match a
//! topic, does one filter cover another, do two intersect. Nothing here allocates.
//!
//! All three keep the `$` rule of MQTT: a filter whose first level is `+` or `#`
//! matches no topic whose first level starts with `$`.

/// A valid topic name to check: non-empty, no wildcard, no NUL. (The broker
/// validates PUBLISH topics itself; this keeps a wildcard from ever being read as
/// one here.)
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// A valid topic filter: non-empty, no NUL, `+` and `#` alone in their level,
/// `#` only last.
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether `filter` matches the topic name `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if is_wildcard(first_level(filter)) && topic.starts_with('$') {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic that `inner` matches, `outer` matches too.
pub fn covers(outer: &str, inner: &str) -> bool {
    // `inner` may reach `$` topics only through a literal first level.
    if is_wildcard(first_level(outer)) && first_level(inner).starts_with('$') {
        return false;
    }
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    let mut first = true;
    // `/#` cannot end after its empty first level (that topic would be empty), so
    // its `#` means `+/#` too.
    let inner_first_empty = first_level(inner).is_empty();
    let mut level = 0;
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            // Also when `inner` has ended: `a/#` matches `a` itself.
            (Some("#"), _) => return true,
            // A topic has at least one level, so a leading `#` means `+/#`.
            (Some("+"), Some("#")) if first || (level == 1 && inner_first_empty) => {
                return outer_levels.next() == Some("#")
            }
            // Equal literals, or `+` over `+`.
            (Some(o), Some(i)) if o == i => {}
            // `+` takes any one level, but not the many (or none) of `#`.
            (Some("+"), Some(i)) if i != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
        level += 1;
    }
}

/// Whether some topic matches both filters.
pub fn intersects(a: &str, b: &str) -> bool {
    let (a_first, b_first) = (first_level(a), first_level(b));
    if (is_wildcard(a_first) && b_first.starts_with('$'))
        || (is_wildcard(b_first) && a_first.starts_with('$'))
    {
        return false;
    }
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    // Whether the first level of every common topic is the empty one: then `#`
    // matching "nothing more" after it would mean the empty topic, which no
    // PUBLISH can have (`/#` and `+` share no topic).
    let first_empty = a_first.is_empty() || b_first.is_empty();
    let mut level = 0;
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), None) | (None, Some("#")) if level == 1 && first_empty => return false,
            // `#` matches whatever the other has left, even nothing.
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
        level += 1;
    }
}

fn first_level(filter: &str) -> &str {
    filter.split('/').next().unwrap_or_default()
}

fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_topic_is_no_common_ground() {
        assert!(!intersects("/#", "+"));
        assert!(!intersects("+", "/#"));
        assert!(intersects("/#", "+/+"));
        assert!(intersects("+/#", "+"));
        assert!(intersects("#", "+"));
        assert!(covers("/+/#", "/#"));
        assert!(!covers("/+", "/#"));
        assert!(covers("/#", "/#"));
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("+/+", "/", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/$b", "a/$b", true),
            ("a/+", "a/$b", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn covering() {
        let cases = [
            ("#", "a/#", true),
            ("#", "+/+", true),
            ("#", "$SYS/#", false),
            ("+/#", "$SYS/x", false),
            ("$SYS/#", "$SYS/+/x", true),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/+", "a/#", false),
            ("a/+/#", "a/#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/b", "a/+", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("+", "+", true),
            ("+", "#", false),
            ("a", "a/#", false),
            ("+/#", "#", true),
            ("+/+/#", "#", false),
            ("+", "#", false),
            ("a/+/#", "a/#", false),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(covers(outer, inner), expected, "{outer} covers {inner}");
        }
    }

    #[test]
    fn intersecting() {
        let cases = [
            ("a/+", "+/b", true),
            ("a/b", "a/c", false),
            ("a/#", "a", true),
            ("a", "a/#", true),
            ("a/+", "a", false),
            ("#", "$SYS/x", false),
            ("$SYS/#", "+/x", false),
            ("$SYS/+", "$SYS/#", true),
            ("+/+/c", "a/#", true),
            ("a/b/c", "a/+", false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(intersects(a, b), expected, "{a} x {b}");
            assert_eq!(intersects(b, a), expected, "{b} x {a}");
        }
    }

    #[test]
    fn validity() {
        for good in ["a", "/", "+", "#", "a/+/#", "+/+", "$SYS/#", "a//b"] {
            assert!(is_valid_filter(good), "{good}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/", "a\0"] {
            assert!(!is_valid_filter(bad), "{bad:?}");
        }
        assert!(is_valid_topic("a/b") && is_valid_topic("/"));
        for bad in ["", "a/+", "#", "a\0"] {
            assert!(!is_valid_topic(bad), "{bad:?}");
        }
    }
}
