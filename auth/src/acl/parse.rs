//! Reading an ACL file: TOML into [`Rule`]s, checking every key and filter, with
//! errors that name the rule (from 1, in file order) and the key.

use crate::limits::{
    ACL_FILTER_BYTES_MAX, ACL_FILTER_LEVELS_MAX, ACL_RULES_MAX, ACL_TOPICS_PER_RULE_MAX,
};
use crate::AuthError;

use super::{Action, Level, Pattern, Permission, Piece, Rule};

const KEYS: &str = "permission, action, user, client, topics";

pub(super) fn parse_rules(text: &str, origin: &str) -> Result<Vec<Rule>, AuthError> {
    let file_error = |reason: String| AuthError::Acl {
        origin: origin.to_owned(),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().to_owned()))?;
    if let Some(key) = table.keys().find(|key| *key != "rule") {
        return Err(file_error(format!(
            "unknown top-level key `{key}` (the file holds only [[rule]] tables)"
        )));
    }
    let rules = match table.get("rule") {
        Some(toml::Value::Array(rules)) if !rules.is_empty() => rules,
        None | Some(toml::Value::Array(_)) => {
            return Err(file_error(
                "no rules (an empty ACL is refused rather than read as \"deny all\")".to_owned(),
            ))
        }
        Some(_) => {
            return Err(file_error(
                "`rule` must be an array of tables: write [[rule]]".to_owned(),
            ))
        }
    };
    if rules.len() > ACL_RULES_MAX {
        return Err(file_error(format!("more than {ACL_RULES_MAX} rules")));
    }
    rules
        .iter()
        .enumerate()
        .map(|(index, value)| {
            parse_rule(value).map_err(|(key, reason)| AuthError::AclRule {
                origin: origin.to_owned(),
                rule: index + 1,
                key,
                reason,
            })
        })
        .collect()
}

/// The key at fault and why.
type RuleError = (String, String);

fn fault(key: &str, reason: impl Into<String>) -> RuleError {
    (key.to_owned(), reason.into())
}

fn parse_rule(value: &toml::Value) -> Result<Rule, RuleError> {
    let toml::Value::Table(table) = value else {
        return Err(fault("rule", "must be a table: write [[rule]]"));
    };
    if let Some(key) = table
        .keys()
        .find(|key| !["permission", "action", "user", "client", "topics"].contains(&key.as_str()))
    {
        return Err(fault(key, format!("unknown key (expected {KEYS})")));
    }
    let permission = match required_str(table, "permission")? {
        "allow" => Permission::Allow,
        "deny" => Permission::Deny,
        other => {
            return Err(fault(
                "permission",
                format!("{other:?} is not \"allow\" or \"deny\""),
            ))
        }
    };
    let action = match required_str(table, "action")? {
        "publish" => Action::Publish,
        "subscribe" => Action::Subscribe,
        "both" => Action::Both,
        other => {
            return Err(fault(
                "action",
                format!("{other:?} is not \"publish\", \"subscribe\" or \"both\""),
            ))
        }
    };
    let user = optional_name(table, "user")?;
    let client = optional_name(table, "client")?;
    let topics = match table.get("topics") {
        None => return Err(fault("topics", "missing (a list of topic filters)")),
        Some(toml::Value::Array(topics)) => topics,
        Some(_) => return Err(fault("topics", "must be a list of strings")),
    };
    if topics.is_empty() {
        return Err(fault("topics", "is empty"));
    }
    if topics.len() > ACL_TOPICS_PER_RULE_MAX {
        return Err(fault(
            "topics",
            format!("more than {ACL_TOPICS_PER_RULE_MAX} filters"),
        ));
    }
    let topics = topics
        .iter()
        .map(|topic| match topic {
            toml::Value::String(filter) => parse_pattern(filter)
                .map_err(|reason| fault("topics", format!("{filter:?}: {reason}"))),
            _ => Err(fault("topics", "must be a list of strings")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        permission,
        action,
        user,
        client,
        topics,
    })
}

fn required_str<'t>(table: &'t toml::Table, key: &'static str) -> Result<&'t str, RuleError> {
    match table.get(key) {
        Some(toml::Value::String(value)) => Ok(value),
        Some(_) => Err(fault(key, "must be a string")),
        None => Err(fault(key, "missing")),
    }
}

fn optional_name(table: &toml::Table, key: &'static str) -> Result<Option<Box<str>>, RuleError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(name)) if name.is_empty() => {
            Err(fault(key, "is empty (leave the key out to match everyone)"))
        }
        Some(toml::Value::String(name)) => Ok(Some(name.as_str().into())),
        Some(_) => Err(fault(key, "must be a string")),
    }
}

/// A rule filter with its placeholders found.
pub(super) fn parse_pattern(filter: &str) -> Result<Pattern, String> {
    if filter.is_empty() {
        return Err("empty filter".to_owned());
    }
    if filter.len() > ACL_FILTER_BYTES_MAX {
        return Err(format!("longer than {ACL_FILTER_BYTES_MAX} bytes"));
    }
    if filter.contains('\0') {
        return Err("contains NUL".to_owned());
    }
    let level_count = filter.split('/').count();
    if level_count > ACL_FILTER_LEVELS_MAX {
        return Err(format!("more than {ACL_FILTER_LEVELS_MAX} levels"));
    }
    let mut levels = Vec::with_capacity(level_count);
    for (index, text) in filter.split('/').enumerate() {
        let level = parse_level(text)?;
        let last = index + 1 == level_count;
        match &level {
            Level::Hash if !last => return Err("`#` must be the last level".to_owned()),
            Level::Text(pieces) if index == 0 => first_level_checks(text, pieces, level_count)?,
            _ => {}
        }
        levels.push(level);
    }
    Ok(Pattern { levels })
}

fn first_level_checks(text: &str, pieces: &[Piece], level_count: usize) -> Result<(), String> {
    if text == "$share" && level_count > 1 {
        return Err("rules apply to the filter after `$share/<group>/`: \
                    write it without that prefix"
            .to_owned());
    }
    // In a deny rule an unusable value turns its level into `+`, which cannot
    // match a `$` level: `$%u` would then deny less, not more.
    if text.starts_with('$') && pieces.iter().any(|p| !matches!(p, Piece::Literal(_))) {
        return Err("a placeholder may not share the first level with a leading `$`".to_owned());
    }
    Ok(())
}

fn parse_level(text: &str) -> Result<Level, String> {
    match text {
        "+" => return Ok(Level::Plus),
        "#" => return Ok(Level::Hash),
        _ if text.contains(['+', '#']) => {
            return Err("`+` and `#` must stand alone in their level".to_owned())
        }
        _ => {}
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let placeholder = match chars.next() {
            Some('%') => {
                literal.push('%');
                continue;
            }
            Some('u') => Piece::User,
            Some('c') => Piece::Client,
            Some(other) => {
                return Err(format!(
                    "unknown placeholder %{other} (use %u, %c, or %% for a literal %)"
                ))
            }
            None => return Err("a lone % ends a level (use %% for a literal %)".to_owned()),
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
        }
        pieces.push(placeholder);
    }
    if !literal.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Literal(literal.into()));
    }
    Ok(Level::Text(pieces))
}
