//! `ringmq passwd` as an operator runs it: add, update and delete users with
//! `--password-stdin`, then load the file the way the broker will and check the
//! passwords; bad user names and empty passwords fail with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringmq_auth::{HashPolicy, PasswordFile};

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `ringmq passwd ARGS` with `stdin` as its input, killed after 60 s.
fn passwd(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringmq");
    // Closing stdin after the write gives the command its end of input.
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ringmq passwd {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-passwd-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(path: &Path) -> PasswordFile {
    PasswordFile::load(path, HashPolicy::default()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn add_update_delete_then_the_broker_loads_it() {
    let dir = temp_dir("cycle");
    let file = dir.join("passwd");
    let path = file.to_str().unwrap();

    let run = passwd(&[path, "alice", "--password-stdin"], b"alice-1\n");
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("added user alice"), "{}", run.stdout);
    assert_eq!(mode(&file), 0o600, "a new file is for the broker only");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("alice:$argon2id$v=19$m=19456,t=2,p=1$"),
        "{text}"
    );

    // An operator's comment, then a second user (CRLF from a pasted password).
    std::fs::write(&file, format!("# staff\n{text}")).unwrap();
    let run = passwd(&[path, "bob", "--password-stdin"], b"bob pw\r\n");
    assert!(run.success, "{}", run.stderr);

    let run = passwd(&[path, "alice", "--password-stdin"], b"alice-2\n");
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("updated user alice"), "{}", run.stdout);
    let users = load(&file);
    assert_eq!(users.len(), 2);
    assert!(users.verify("alice", b"alice-2"));
    assert!(
        !users.verify("alice", b"alice-1"),
        "the old password is gone"
    );
    assert!(users.verify("bob", b"bob pw"));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# staff");
    assert!(lines[1].starts_with("alice:"), "updated in place: {text}");
    assert!(lines[2].starts_with("bob:"));

    let run = passwd(&[path, "bob", "--delete"], b"");
    assert!(run.success, "{}", run.stderr);
    let users = load(&file);
    assert_eq!(users.len(), 1);
    assert!(!users.verify("bob", b"bob pw"));
    assert!(users.verify("alice", b"alice-2"));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .starts_with("# staff\n"));

    let run = passwd(&[path, "bob", "--delete"], b"");
    assert!(!run.success);
    assert!(run.stderr.contains("no user \"bob\""), "{}", run.stderr);

    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_existing_files_mode_is_kept() {
    let dir = temp_dir("mode");
    let file = dir.join("passwd");
    std::fs::write(&file, "# group-readable on purpose\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = passwd(
        &[file.to_str().unwrap(), "carol", "--password-stdin"],
        b"c\n",
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(mode(&file), 0o640);
    assert!(load(&file).verify("carol", b"c"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_user_names_and_empty_passwords_are_refused() {
    let dir = temp_dir("refused");
    let file = dir.join("passwd");
    let path = file.to_str().unwrap();
    for user in ["a:b", "a\u{1}b", "", "#alice", " alice"] {
        let run = passwd(&[path, user, "--password-stdin"], b"pw\n");
        assert!(!run.success, "{user:?} accepted");
        assert!(
            run.stderr.contains("invalid user name"),
            "{user:?}: {}",
            run.stderr
        );
    }
    for stdin in [&b"\n"[..], b"", b"\r\n"] {
        let run = passwd(&[path, "alice", "--password-stdin"], stdin);
        assert!(!run.success, "{stdin:?} accepted");
        assert!(
            run.stderr.contains("the password is empty"),
            "{}",
            run.stderr
        );
    }
    // Without the flag, a pipe is not a terminal to prompt on.
    let run = passwd(&[path, "alice"], b"pw\n");
    assert!(!run.success);
    assert!(run.stderr.contains("--password-stdin"), "{}", run.stderr);
    assert!(!file.exists(), "nothing was written");
    std::fs::remove_dir_all(&dir).unwrap();
}
