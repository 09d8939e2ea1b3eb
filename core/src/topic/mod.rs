//! Topic names, topic filters and the structures that match them.
//!
//! - `validate`: [`validate_topic_name`], [`validate_topic_filter`] and [`parse_filter`]
//!   (which tells `$share/{group}/{filter}` from a plain filter) check input against
//!   MQTT 5 sections 4.7 and 4.8.2 and the broker's level limit; [`TopicError`] says what
//!   is wrong and which reason code answers it. [`matches()`] is the plain reference
//!   matcher, used by ACLs and by the tests of the two structures below.
//! - `trie`: [`SubscriptionTrie`], topic filter -> subscribers, matched against every
//!   PUBLISH without allocating. It reports the 0 <-> 1 subscriber transitions of each
//!   filter string, which are what a shard announces to the other shards and nodes;
//!   `f`, `$share/g/f` and `$share/h/f` are three interests.
//! - `retained`: [`RetainedTree`], topic name -> retained message, searched with a
//!   filter when a client subscribes.
//! - `level`: splitting off one level, the inline level keys both structures use, and
//!   the trie's map of them (a scan for a few children, a hash index for many).
//!
//! Neither structure validates: the caller checks a name or filter once, where it enters
//! the broker, and the structures trust it. Both free a node as soon as nothing needs it,
//! so memory follows the current subscriptions and retained messages, not their history.

mod level;
mod retained;
mod trie;
mod validate;

pub use retained::RetainedTree;
pub use trie::{InsertOutcome, Match, Members, RemoveOutcome, SubscriptionTrie};
pub use validate::{
    matches, parse_filter, validate_topic_filter, validate_topic_name, Filter, TopicError,
    TopicKind, SHARE_PREFIX,
};
