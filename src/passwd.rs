//! `ringmq passwd FILE USER`: add or update a user of a password file with a new
//! argon2id hash, or `--delete` one. Every other line, comments included, is kept
//! as it was; the file is replaced atomically (a temporary file in the same
//! directory, synced, then renamed over it), keeping the mode and owner of the
//! old file, or mode 0600 for a new one.

use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ringmq_auth::user_of_line;

/// Mode of a password file this command creates: the hashes are for the broker only.
const NEW_FILE_MODE: u32 = 0o600;

#[derive(Clone, Debug, clap::Args)]
pub struct PasswdArgs {
    /// The password file (`user:HASH` lines); created if missing.
    pub file: PathBuf,

    /// The user to add, update or delete.
    pub user: String,

    /// Read the password from the first line of standard input instead of
    /// prompting on the terminal.
    #[arg(long, conflicts_with = "delete")]
    pub password_stdin: bool,

    /// Remove the user instead.
    #[arg(long)]
    pub delete: bool,
}

pub fn run(args: &PasswdArgs) -> anyhow::Result<()> {
    ringmq_auth::validate_username(&args.user)?;
    let path = target_path(&args.file)?;
    let existing = read_existing(&path)?;
    let text = existing.as_ref().map_or("", |(text, _)| text.as_str());
    let (new_text, done) = if args.delete {
        if existing.is_none() {
            bail!("{}: no such file", path.display());
        }
        let (new_text, removed) = remove_user(text, &args.user);
        if !removed {
            bail!("{}: no user {:?}", path.display(), args.user);
        }
        (new_text, "deleted")
    } else {
        let password = read_password(args.password_stdin)?;
        let entry = ringmq_auth::hash_password(&password)?;
        set_user(text, &args.user, &entry)
    };
    write_atomically(&path, &new_text, existing.as_ref().map(|(_, meta)| meta))?;
    println!("{}: {done} user {}", path.display(), args.user);
    if !new_text.lines().any(|line| user_of_line(line).is_some()) {
        eprintln!(
            "ringmq passwd: warning: {} has no users left; the broker refuses to start with it",
            path.display()
        );
    }
    Ok(())
}

/// Writes through a symbolic link rather than replacing the link with a file.
fn target_path(file: &Path) -> anyhow::Result<PathBuf> {
    match fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(file)
            .with_context(|| format!("cannot follow the link {}", file.display())),
        _ => Ok(file.to_owned()),
    }
}

fn read_existing(path: &Path) -> anyhow::Result<Option<(String, Metadata)>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some((text, meta)))
}

/// The first line of standard input, or the password typed twice on the terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<Vec<u8>> {
    let password = if from_stdin {
        let mut line = Vec::new();
        std::io::stdin()
            .lock()
            .read_until(b'\n', &mut line)
            .context("cannot read the password from standard input")?;
        let end = line.strip_suffix(b"\n").map_or(line.len(), <[u8]>::len);
        line.truncate(end);
        let end = line.strip_suffix(b"\r").map_or(line.len(), <[u8]>::len);
        line.truncate(end);
        line
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let second =
            rpassword::prompt_password("Password again: ").context("cannot read the password")?;
        if first != second {
            bail!("the passwords differ");
        }
        first.into_bytes()
    } else {
        bail!("standard input is not a terminal: give the password with --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// Replaces the user's first line in place (dropping any later duplicate, which
/// the broker would refuse) or appends one. Says whether it added or updated.
fn set_user(text: &str, user: &str, entry: &str) -> (String, &'static str) {
    let mut out = String::with_capacity(text.len() + user.len() + entry.len() + 2);
    let mut replaced = false;
    for line in text.split_inclusive('\n') {
        if user_of_line(line) != Some(user) {
            out.push_str(line);
            continue;
        }
        if !replaced {
            let ending = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
            out.push_str(&format!("{user}:{entry}{ending}"));
            replaced = true;
        }
    }
    if replaced {
        return (out, "updated");
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{user}:{entry}\n"));
    (out, "added")
}

/// Removes every line of the user; says whether there was one.
fn remove_user(text: &str, user: &str) -> (String, bool) {
    let mut removed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if user_of_line(line) == Some(user) {
            removed = true;
        } else {
            out.push_str(line);
        }
    }
    (out, removed)
}

fn write_atomically(path: &Path, text: &str, old: Option<&Metadata>) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(NEW_FILE_MODE)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    let written = fill_and_rename(&mut file, &temp, path, dir, text, old);
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&temp);
    }
    written
}

fn fill_and_rename(
    file: &mut File,
    temp: &Path,
    path: &Path,
    dir: &Path,
    text: &str,
    old: Option<&Metadata>,
) -> anyhow::Result<()> {
    let context = || format!("cannot write {}", temp.display());
    let mode = old.map_or(NEW_FILE_MODE, |meta| meta.mode() & 0o7777);
    // Set explicitly: the umask applies to create, not to set_permissions.
    file.set_permissions(Permissions::from_mode(mode))
        .with_context(context)?;
    if let Some(old) = old {
        let new = file.metadata().with_context(context)?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
            std::os::unix::fs::fchown(&*file, Some(old.uid()), Some(old.gid())).with_context(
                || {
                    format!(
                        "cannot give the new {} the owner of the old one ({}:{})",
                        path.display(),
                        old.uid(),
                        old.gid()
                    )
                },
            )?;
        }
    }
    file.write_all(text.as_bytes()).with_context(context)?;
    file.sync_all().with_context(context)?;
    fs::rename(temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    // The rename is durable only once the directory is synced.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_user_keeps_other_lines_and_replaces_in_place() {
        let text = "# users\nalice:old\r\n\nbob:x\nalice:dup\n# end";
        let (out, done) = set_user(text, "alice", "NEW");
        assert_eq!(done, "updated");
        assert_eq!(out, "# users\nalice:NEW\r\n\nbob:x\n# end");
        let (out, done) = set_user(text, "carol", "C");
        assert_eq!(done, "added");
        assert_eq!(out, format!("{text}\ncarol:C\n"));
        assert_eq!(set_user("", "a", "A"), ("a:A\n".to_owned(), "added"));
        // A commented-out user is a comment, not the user.
        let (out, _) = set_user("#alice:old\n", "alice", "N");
        assert_eq!(out, "#alice:old\nalice:N\n");
    }

    #[test]
    fn remove_user_removes_every_line_of_the_user() {
        let (out, removed) = remove_user("a:1\n# a:c\nb:2\na:3", "a");
        assert!(removed);
        assert_eq!(out, "# a:c\nb:2\n");
        let (out, removed) = remove_user("b:2\n", "a");
        assert!(!removed);
        assert_eq!(out, "b:2\n");
    }
}
