//! The ACL engine: rules read once from a TOML file ([`Acl`]), compiled for one
//! client at CONNECT ([`ClientAcl`]: placeholders substituted, rules that do not
//! apply dropped), then checked per PUBLISH, SUBSCRIBE and delivery without
//! allocating.
//!
//! Layout: `parse` reads and checks the file; [`filter`] compares filters and
//! topics level by level. The semantics are in the [crate documentation](crate).

pub mod filter;
mod parse;

use std::path::Path;
use std::sync::Arc;

use crate::limits::ACL_FILE_BYTES_MAX;
use crate::AuthError;

/// The rules of an ACL file, in file order. `Send + Sync`: load once, share by
/// `Arc`, replace the `Arc` on reload (a reload that fails keeps the old one).
#[derive(Debug)]
pub struct Acl {
    rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Permission {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Publish,
    /// Subscribe, and receive what the subscription matches.
    Subscribe,
    Both,
}

#[derive(Debug)]
struct Rule {
    permission: Permission,
    action: Action,
    user: Option<Box<str>>,
    client: Option<Box<str>>,
    topics: Vec<Pattern>,
}

/// A rule filter, level by level, before substitution.
#[derive(Debug)]
struct Pattern {
    levels: Vec<Level>,
}

#[derive(Debug)]
enum Level {
    Plus,
    Hash,
    Text(Vec<Piece>),
}

#[derive(Debug)]
enum Piece {
    Literal(Box<str>),
    User,
    Client,
}

impl Acl {
    /// Reads and checks an ACL file. A missing, unreadable, empty (no rule) or
    /// malformed file, an unknown key or an invalid filter is an error.
    pub fn load(path: &Path) -> Result<Acl, AuthError> {
        let bytes = crate::read_limited(path, ACL_FILE_BYTES_MAX)?;
        let origin = path.display().to_string();
        let text = std::str::from_utf8(&bytes).map_err(|e| AuthError::Acl {
            origin: origin.clone(),
            reason: format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
        })?;
        Self::parse_named(text, &origin)
    }

    /// Checks the text of an ACL file; errors name it "ACL".
    pub fn parse(text: &str) -> Result<Acl, AuthError> {
        Self::parse_named(text, "ACL")
    }

    fn parse_named(text: &str, origin: &str) -> Result<Acl, AuthError> {
        let rules = parse::parse_rules(text, origin)?;
        Ok(Acl { rules })
    }

    /// Rules in the file.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Always false: a file without rules does not load.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Compiles the rules that apply to one client: `username` is `None` for an
    /// anonymous client. Placeholders are substituted here, once per connection.
    ///
    /// Takes `&self` rather than the sketched `self: &Arc<Self>`: the result owns
    /// what it needs, and an `Arc<Acl>` still calls it as before.
    pub fn for_client(&self, username: Option<&str>, client_id: &str) -> ClientAcl {
        let values = Values {
            user: username.filter(|u| is_usable(u)),
            client: Some(client_id).filter(|c| is_usable(c)),
        };
        let mut lists = Lists::default();
        for rule in &self.rules {
            let user_applies = rule.user.as_deref().is_none_or(|u| username == Some(u));
            let client_applies = rule.client.as_deref().is_none_or(|c| client_id == c);
            if !(user_applies && client_applies) {
                continue;
            }
            for pattern in &rule.topics {
                let Some(filter) = pattern.substitute(values, rule.permission) else {
                    continue;
                };
                let filter: Box<str> = filter.into();
                let (publish, subscribe) = match rule.permission {
                    Permission::Allow => (&mut lists.publish_allow, &mut lists.subscribe_allow),
                    Permission::Deny => (&mut lists.publish_deny, &mut lists.subscribe_deny),
                };
                match rule.action {
                    Action::Publish => publish.push(filter),
                    Action::Subscribe => subscribe.push(filter),
                    Action::Both => {
                        publish.push(filter.clone());
                        subscribe.push(filter);
                    }
                }
            }
        }
        ClientAcl {
            lists: Arc::new(lists),
        }
    }
}

/// The placeholder values of one client, `None` where unusable.
#[derive(Clone, Copy)]
struct Values<'a> {
    user: Option<&'a str>,
    client: Option<&'a str>,
}

/// A value that may stand in a filter: non-empty, no wildcard, no separator, no
/// NUL, and not starting with `$` (so `%u/#` cannot become `$SYS/#`).
fn is_usable(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with('$')
        && !value.bytes().any(|b| matches!(b, b'+' | b'#' | b'/' | 0))
}

impl Pattern {
    /// The filter for one client. An unusable value skips an allow filter (`None`)
    /// and widens its level of a deny filter to `+`.
    fn substitute(&self, values: Values<'_>, permission: Permission) -> Option<String> {
        let mut filter = String::new();
        for (index, level) in self.levels.iter().enumerate() {
            if index > 0 {
                filter.push('/');
            }
            let pieces = match level {
                Level::Plus => {
                    filter.push('+');
                    continue;
                }
                Level::Hash => {
                    filter.push('#');
                    continue;
                }
                Level::Text(pieces) => pieces,
            };
            let level_start = filter.len();
            for piece in pieces {
                let value = match piece {
                    Piece::Literal(text) => Some(&**text),
                    Piece::User => values.user,
                    Piece::Client => values.client,
                };
                match (value, permission) {
                    (Some(text), _) => filter.push_str(text),
                    (None, Permission::Allow) => return None,
                    (None, Permission::Deny) => {
                        filter.truncate(level_start);
                        filter.push('+');
                        break;
                    }
                }
            }
        }
        Some(filter)
    }
}

#[derive(Debug, Default)]
struct Lists {
    publish_allow: Vec<Box<str>>,
    publish_deny: Vec<Box<str>>,
    subscribe_allow: Vec<Box<str>>,
    subscribe_deny: Vec<Box<str>>,
}

/// The rules of one client, compiled by [`Acl::for_client`]. Cheap to clone,
/// `Send + Sync`. The checks walk the client's filters: their cost grows with the
/// number of rules that apply to the client, and nothing is allocated.
#[derive(Clone, Debug)]
pub struct ClientAcl {
    lists: Arc<Lists>,
}

/// What a SUBSCRIBE may do, from least to most access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubscribeDecision {
    /// Refuse the subscription.
    Deny,
    /// Grant it, but check every message with [`ClientAcl::may_receive`]: a deny
    /// rule covers part of what the filter matches.
    AllowFiltered,
    /// Grant it; no message it matches is denied.
    Allow,
}

impl ClientAcl {
    /// Whether the client may publish to `topic` (a topic name; one holding a
    /// wildcard or NUL is refused).
    pub fn may_publish(&self, topic: &str) -> bool {
        is_allowed(&self.lists.publish_allow, &self.lists.publish_deny, topic)
    }

    /// Whether the client may subscribe to `filter`, given without its
    /// `$share/<group>/` prefix. An invalid filter is denied.
    pub fn subscribe(&self, filter: &str) -> SubscribeDecision {
        if !filter::is_valid_filter(filter) {
            return SubscribeDecision::Deny;
        }
        let lists = &self.lists;
        if !lists
            .subscribe_allow
            .iter()
            .any(|a| filter::covers(a, filter))
        {
            return SubscribeDecision::Deny;
        }
        let mut decision = SubscribeDecision::Allow;
        for deny in &lists.subscribe_deny {
            if filter::covers(deny, filter) {
                return SubscribeDecision::Deny;
            }
            if filter::intersects(deny, filter) {
                decision = SubscribeDecision::AllowFiltered;
            }
        }
        decision
    }

    /// Whether the client may receive a message on `topic`: the per-message check
    /// of an [`SubscribeDecision::AllowFiltered`] subscription and of retained
    /// messages.
    pub fn may_receive(&self, topic: &str) -> bool {
        is_allowed(
            &self.lists.subscribe_allow,
            &self.lists.subscribe_deny,
            topic,
        )
    }
}

fn is_allowed(allow: &[Box<str>], deny: &[Box<str>], topic: &str) -> bool {
    filter::is_valid_topic(topic)
        && allow.iter().any(|f| filter::matches(f, topic))
        && !deny.iter().any(|f| filter::matches(f, topic))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests;
