//! The password file: one `user:HASH` per line.
//!
//! Syntax, which [`user_of_line`] shares with `ringmq passwd` so both read a line
//! alike: a trailing `\r` is dropped; a line that is blank or whose first
//! non-blank character is `#` is skipped; any other line is `user:HASH`, split at
//! the first `:` (usernames hold none), both parts taken as written. Hence a
//! username may not start with `#` or a blank.

use std::collections::HashMap;
use std::path::Path;

use argon2::Params;

use crate::hash::{burn_argon2id, production_params, HashPolicy, StoredHash};
use crate::limits::{PASSWORD_FILE_BYTES_MAX, PASSWORD_USERS_MAX, USERNAME_BYTES_MAX};
use crate::AuthError;

/// The users of a password file and their hashes. `Send + Sync`: load it once,
/// share it by `Arc`, replace the `Arc` on reload.
#[derive(Debug)]
pub struct PasswordFile {
    // std's SipHash: usernames come from the network, so no predictable hasher.
    users: HashMap<Box<str>, StoredHash>,
    /// The cost spent on an unknown user: the first argon2id entry's, so it takes
    /// as long as a real one; the production cost when there is none.
    unknown_user_params: Params,
    insecure_entries: usize,
}

impl PasswordFile {
    /// Reads and parses `path`. Errors name `path:line` and why; a file with no
    /// user, a duplicate user, a hash it cannot check, or a file over
    /// [`PASSWORD_FILE_BYTES_MAX`] is an error.
    pub fn load(path: &Path, policy: HashPolicy) -> Result<PasswordFile, AuthError> {
        let bytes = crate::read_limited(path, PASSWORD_FILE_BYTES_MAX)?;
        Self::parse_bytes(&bytes, &path.display().to_string(), policy)
    }

    /// Parses the text of a password file; errors name it "password file".
    pub fn parse(text: &str, policy: HashPolicy) -> Result<PasswordFile, AuthError> {
        Self::parse_text(text, "password file", policy)
    }

    fn parse_bytes(
        bytes: &[u8],
        origin: &str,
        policy: HashPolicy,
    ) -> Result<PasswordFile, AuthError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse_text(text, origin, policy),
            Err(error) => {
                let before = bytes.get(..error.valid_up_to()).unwrap_or_default();
                Err(AuthError::PasswordLine {
                    origin: origin.to_owned(),
                    line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
                    reason: "not valid UTF-8".to_owned(),
                })
            }
        }
    }

    fn parse_text(text: &str, origin: &str, policy: HashPolicy) -> Result<PasswordFile, AuthError> {
        let mut users: HashMap<Box<str>, StoredHash> = HashMap::new();
        let mut lines_of_users: HashMap<Box<str>, usize> = HashMap::new();
        let mut unknown_user_params = None;
        let mut insecure_entries = 0;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line_error = |reason: String| AuthError::PasswordLine {
                origin: origin.to_owned(),
                line: number,
                reason,
            };
            if is_skipped(line) {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| line_error("expected user:HASH".to_owned()))?;
            if let Err(reason) = username_problem(user) {
                return Err(line_error(format!("user name {reason}")));
            }
            if let Some(first) = lines_of_users.get(user) {
                return Err(line_error(format!(
                    "user {user:?} is already defined on line {first}"
                )));
            }
            if users.len() >= PASSWORD_USERS_MAX {
                return Err(line_error(format!("more than {PASSWORD_USERS_MAX} users")));
            }
            let stored = StoredHash::parse(hash, policy).map_err(line_error)?;
            if stored.is_insecure() {
                insecure_entries += 1;
            }
            if unknown_user_params.is_none() {
                unknown_user_params = stored.argon2_params().cloned();
            }
            lines_of_users.insert(user.into(), number);
            users.insert(user.into(), stored);
        }
        if users.is_empty() {
            return Err(AuthError::NoUsers {
                origin: origin.to_owned(),
            });
        }
        let unknown_user_params = match unknown_user_params {
            Some(params) => params,
            None => production_params()?,
        };
        Ok(PasswordFile {
            users,
            unknown_user_params,
            insecure_entries,
        })
    }

    /// Whether `password` is `user`'s. The comparison is constant-time, and an
    /// unknown user costs one argon2id hash like a known one, so the time taken
    /// does not tell which users exist. Slow on purpose: call it off the shard
    /// threads (see [`crate::Verifier`]).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(stored) => stored.verify(password),
            None => {
                burn_argon2id(&self.unknown_user_params, password);
                false
            }
        }
    }

    /// Entries in a scheme that [`HashPolicy::allow_insecure`] let in, for a
    /// startup warning.
    pub fn insecure_entries(&self) -> usize {
        self.insecure_entries
    }

    /// Users in the file (never 0).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Always false: a file without users does not load. Here for the convention
    /// that `len` comes with `is_empty`.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The user a password-file line defines, or `None` for a blank or comment line.
/// A line without `:` gives `None` too (the loader reports it as an error).
pub fn user_of_line(line: &str) -> Option<&str> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if is_skipped(line) {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

/// Checks that `name` can be stored in a password file: non-empty, at most
/// [`USERNAME_BYTES_MAX`] bytes, no `:` (the separator), no control character,
/// and not starting with `#` or a blank (such a line would be a comment or
/// ambiguous).
pub fn validate_username(name: &str) -> Result<(), AuthError> {
    username_problem(name).map_err(|reason| AuthError::Username {
        name: name.to_owned(),
        reason,
    })
}

fn username_problem(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > USERNAME_BYTES_MAX {
        return Err("is longer than 65535 bytes");
    }
    if name.contains(':') {
        return Err("contains ':'");
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if name.starts_with('#') {
        return Err("starts with '#'");
    }
    if name.starts_with(char::is_whitespace) {
        return Err("starts with a blank");
    }
    Ok(())
}

fn is_skipped(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::hash::tests::{argon2id_cheap, INSECURE, SECURE};

    fn line_error(text: &str, policy: HashPolicy) -> (usize, String) {
        match PasswordFile::parse(text, policy) {
            Err(AuthError::PasswordLine { line, reason, .. }) => (line, reason),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_users_comments_blank_lines_and_crlf() {
        let text = format!(
            "# users\n\nalice:{}\r\n  # indented comment\n\t\nbob:$plain$b:b\n",
            argon2id_cheap("a-pass")
        );
        let file = PasswordFile::parse(&text, INSECURE).unwrap();
        assert_eq!(file.len(), 2);
        assert!(!file.is_empty());
        assert_eq!(file.insecure_entries(), 1);
        assert!(file.verify("alice", b"a-pass"));
        assert!(!file.verify("alice", b"b:b"));
        assert!(file.verify("bob", b"b:b"));
        assert!(!file.verify("carol", b"a-pass"));
        assert!(!file.verify("ALICE", b"a-pass"));
    }

    #[test]
    fn every_line_error_names_its_line() {
        let good = argon2id_cheap("x");
        let cases = [
            (format!("a:{good}\nno-colon\n"), 2, "expected user:HASH"),
            (format!("# c\n:{good}\n"), 2, "user name is empty"),
            (format!("a\u{7}b:{good}\n"), 1, "control character"),
            (format!(" a:{good}\n"), 1, "starts with a blank"),
            (
                format!("a:{good}\n\nb:{good}\na:{good}\n"),
                4,
                "already defined on line 1",
            ),
            ("a:$plain$x\n".to_owned(), 1, "refused unless insecure"),
            ("a:$md5$x\n".to_owned(), 1, "unknown hash scheme"),
            (format!("a:{good} \n"), 1, "malformed argon2id"),
        ];
        for (text, line, needle) in cases {
            let (got_line, reason) = line_error(&text, SECURE);
            assert_eq!(got_line, line, "{text:?}: {reason}");
            assert!(reason.contains(needle), "{text:?}: {reason}");
        }
    }

    #[test]
    fn a_file_without_users_is_an_error() {
        for text in ["", "\n\n", "# only a comment\n"] {
            assert!(
                matches!(
                    PasswordFile::parse(text, SECURE),
                    Err(AuthError::NoUsers { .. })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn load_names_the_path_and_line() {
        let dir = std::env::temp_dir().join(format!("ringmq-auth-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");

        std::fs::write(&path, "a:$plain$x\nbroken\n").unwrap();
        let error = PasswordFile::load(&path, INSECURE).unwrap_err().to_string();
        assert_eq!(error, format!("{}:2: expected user:HASH", path.display()));

        std::fs::write(&path, b"a:$plain$x\nb:$plain$\xff\n").unwrap();
        let error = PasswordFile::load(&path, INSECURE).unwrap_err().to_string();
        assert_eq!(error, format!("{}:2: not valid UTF-8", path.display()));

        std::fs::write(&path, "").unwrap();
        let error = PasswordFile::load(&path, INSECURE).unwrap_err().to_string();
        assert!(error.contains("no users"), "{error}");

        std::fs::write(&path, "a:$plain$x\n").unwrap();
        let file = PasswordFile::load(&path, INSECURE).unwrap();
        assert!(file.verify("a", b"x"));

        let missing = dir.join("missing");
        let error = PasswordFile::load(&missing, INSECURE).unwrap_err();
        assert!(matches!(error, AuthError::Read { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shareable_between_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<PasswordFile>();
        is_send_sync::<crate::Verifier>();
        is_send_sync::<crate::FailedLoginLimiter>();
    }

    #[test]
    fn unknown_users_cost_the_files_argon2id() {
        let file = PasswordFile::parse(&format!("a:{}\n", argon2id_cheap("x")), SECURE).unwrap();
        assert_eq!(file.unknown_user_params.m_cost(), 64);
        let file = PasswordFile::parse("a:$plain$x\n", INSECURE).unwrap();
        assert_eq!(
            file.unknown_user_params.m_cost(),
            crate::limits::ARGON2_MEMORY_KIB
        );
    }

    #[test]
    fn usernames() {
        for good in [
            "alice",
            "a b",
            "ünï",
            "+",
            "#x".replace('#', "x+").as_str(),
            "a/b",
            "a#",
        ] {
            assert!(validate_username(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a:b", "a\nb", "a\0", "#a", " a", "\u{85}x"] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_username(&"x".repeat(USERNAME_BYTES_MAX)).is_ok());
        assert!(validate_username(&"x".repeat(USERNAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn user_of_line_agrees_with_the_loader() {
        assert_eq!(user_of_line("alice:$plain$x\n"), Some("alice"));
        assert_eq!(user_of_line("alice:$plain$x\r\n"), Some("alice"));
        assert_eq!(user_of_line("a b:h"), Some("a b"));
        assert_eq!(user_of_line("# alice:x\n"), None);
        assert_eq!(user_of_line("   \n"), None);
        assert_eq!(user_of_line("junk\n"), None);
    }
}
