//! Authentication and authorisation for ringmq: who may connect, and what a
//! connected client may publish, subscribe to and receive.
//!
//! Layout:
//! - [`limits`]: every `*_max` of this crate, with the production hash cost.
//! - [`hash`]: the hash schemes a password file may hold, checking a password
//!   against one in constant time, and [`hash_password`] for new entries.
//! - [`password_file`]: [`PasswordFile`], the `user:HASH` file.
//! - [`verifier`]: [`Verifier`], worker threads that run the slow hashes off the
//!   shard threads behind a bounded queue.
//! - [`limiter`]: [`FailedLoginLimiter`], failed CONNECTs per source address
//!   (hand-written rather than `governor`; the module says why).
//! - [`acl`]: [`Acl`], the TOML rule file, compiled per client into a [`ClientAcl`].
//!
//! The crate is synchronous and knows no executor or socket; time is a parameter
//! (`now: Instant`), so every behaviour is testable on one thread.
//!
//! # Passwords
//!
//! A password file holds one `user:HASH` per line; `#` starts a comment line and
//! blank lines are skipped. HASH is one of:
//!
//! | scheme | form | notes |
//! |---|---|---|
//! | argon2id | `$argon2id$v=19$m=..,t=..,p=..$salt$hash` (PHC) | what [`hash_password`] writes: m=19 MiB, t=2, p=1 (OWASP) |
//! | PBKDF2-HMAC-SHA512 | `$pbkdf2-sha512$i=..,l=..$salt$hash` (PHC) | |
//! | bcrypt | `$2b$`, `$2y$`, `$2a$` + cost + 53 characters | passwords past 72 bytes are cut there, as bcrypt does |
//! | salted SHA-256 | `$sha256$<salt hex>$<hex of SHA-256(salt ‖ password)>` | only with [`HashPolicy::allow_insecure`] |
//! | plaintext | `$plain$<password>` | only with [`HashPolicy::allow_insecure`] |
//!
//! A failed login costs the attacker time, not the broker: every comparison is
//! constant-time (`subtle`), a user that does not exist costs one argon2id hash
//! like one that does (no user enumeration by timing), the hashes run on the
//! [`Verifier`]'s threads and never on a shard, and [`FailedLoginLimiter`] caps
//! the password checks per source address. Costs past [`limits`] are refused when
//! the file loads, so a bad entry cannot stall a worker for minutes.
//!
//! # Access control
//!
//! An ACL file is a list of `[[rule]]` tables:
//!
//! ```toml
//! [[rule]]
//! permission = "allow"            # or "deny"
//! action = "publish"              # "subscribe" (subscribe and receive) | "publish" | "both"
//! user = "alice"                  # optional; or client = "sensor-1"; both: both must match
//! topics = ["sensors/%u/#", "cmd/%c"]
//! ```
//!
//! A rule without `user` and `client` applies to everyone. Rules are numbered from
//! 1 in file order, and every error names the rule and the key. Unknown keys, an
//! empty or missing file and invalid filters are errors: the broker refuses to
//! start, or keeps its old rules on a reload, and never runs open.
//!
//! - **Deny beats allow.** An action on a topic is allowed iff an applicable allow
//!   rule matches it and no applicable deny rule does. No rule: denied.
//! - **SUBSCRIBE.** A filter F is [`SubscribeDecision::Deny`] unless an allow
//!   rule *covers* F (every topic F can match, the rule matches too; compared
//!   level by level, `+`/`#` aware). It is also `Deny` if a deny rule covers F;
//!   [`SubscribeDecision::AllowFiltered`] if a deny rule merely *intersects* F
//!   (some topic matches both: the broker then asks [`ClientAcl::may_receive`]
//!   per message); else [`SubscribeDecision::Allow`].
//! - **`$` topics.** The MQTT rule holds: a filter whose first level is `+` or
//!   `#` matches no topic starting with `$`. So `$SYS/...` is reachable only by a
//!   rule that names `$SYS` itself, and is denied to everyone else by default:
//!   `allow topics = ["#"]` does not open it.
//! - **Placeholders.** `%u` is replaced by the username and `%c` by the client id,
//!   as a whole level or part of one; `%%` is a literal `%`, and any other `%`
//!   sequence is an error. A value that is missing (anonymous), empty, or holds
//!   `+`, `#`, `/` or NUL, or starts with `$` (so `%u/#` cannot become `$SYS/#`),
//!   is *unusable*: an allow filter using it is skipped (grants nothing), and in a
//!   deny filter the level holding it becomes `+` (denies more, never less). A
//!   hostile username or client id thus never widens a rule: the property tests
//!   check that it gets no access a benign identity would not.
//!
//! The check path ([`ClientAcl::may_publish`], [`ClientAcl::may_receive`])
//! walks `&str` levels and allocates nothing; [`Acl::for_client`] substitutes the
//! placeholders once per connection.

pub mod acl;
pub mod hash;
pub mod limiter;
pub mod limits;
pub mod password_file;
pub mod verifier;

use std::path::PathBuf;

pub use acl::{Acl, ClientAcl, SubscribeDecision};
pub use hash::{hash_password, HashPolicy};
pub use limiter::FailedLoginLimiter;
pub use password_file::{user_of_line, validate_username, PasswordFile};
pub use verifier::{Busy, Verifier};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than its limit.
    #[error("{origin}: larger than {bytes_max} bytes")]
    TooLarge { origin: String, bytes_max: u64 },
    /// A line of a password file is wrong (`line` counts from 1).
    #[error("{origin}:{line}: {reason}")]
    PasswordLine {
        origin: String,
        line: usize,
        reason: String,
    },
    /// A password file without a single user.
    #[error("{origin}: no users in the password file")]
    NoUsers { origin: String },
    /// An ACL file is wrong as a whole (syntax, no rules, a stray top-level key).
    #[error("{origin}: {reason}")]
    Acl { origin: String, reason: String },
    /// One rule of an ACL file is wrong (`rule` counts from 1 in file order).
    #[error("{origin}: rule {rule}: `{key}`: {reason}")]
    AclRule {
        origin: String,
        rule: usize,
        key: String,
        reason: String,
    },
    /// A username that a password file cannot hold.
    #[error("invalid user name {name:?}: {reason}")]
    Username { name: String, reason: &'static str },
    /// An empty password was given to be hashed.
    #[error("the password is empty")]
    EmptyPassword,
    /// The hash function refused its input or parameters.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// [`Verifier::start`] was given a thread count outside `1..=VERIFIER_THREADS_MAX`.
    #[error("verifier threads must be 1..={max}, not {threads}")]
    VerifierThreads { threads: usize, max: usize },
    /// The operating system refused a verifier thread.
    #[error("cannot start a verifier thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Reads a whole text file of at most `bytes_max` bytes. A file that grows while
/// it is read is still cut off at the limit, not read without end.
pub(crate) fn read_limited(path: &std::path::Path, bytes_max: u64) -> Result<Vec<u8>, AuthError> {
    use std::io::Read;
    let read_error = |source| AuthError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(bytes_max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > bytes_max {
        return Err(AuthError::TooLarge {
            origin: path.display().to_string(),
            bytes_max,
        });
    }
    Ok(bytes)
}
