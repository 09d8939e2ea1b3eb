//! The harness of the security tests (auth, ACL, TLS, WebSocket).
//!
//! - [`Broker`]: the real binary started with a TOML file this harness writes
//!   (`--config`), `--listen 127.0.0.1:0 --shards 2 --sys-interval 0
//!   --admin-listen ""`; its ready line parsed into every listener with its
//!   scheme ([`Listener`]); stderr kept so a test can wait for a log line; SIGHUP;
//!   killed on drop.
//! - [`try_start`] / [`check_config`]: a start or `ringmq check-config` that is
//!   expected to fail, with its exit status and stderr.
//! - [`passwd`]: a password file made by the broker's own `ringmq passwd`.
//! - [`mqtt`]: a blocking MQTT 3.1.1 / 5.0 client over any byte stream (plain
//!   TCP, rustls, WebSocket), written from the specifications.
//! - [`pki`]: CAs and certificates made with rcgen at run time, and rustls client
//!   configurations that trust them.
//! - [`paho`]: the Python paho-mqtt client (Debian's `python3-paho-mqtt`) run as
//!   a child process for WebSocket clients.
//!
//! Every wait has a deadline ([`WAIT`]); nothing sleeps for correctness. A test
//! that shows something does NOT happen watches for [`QUIET`], after a marker
//! message where the order of delivery lets it.

#![allow(dead_code)]

pub mod mqtt;
pub mod paho;
pub mod pki;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upper bound of every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a test watches to show that something does not happen.
pub const QUIET: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------- files

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-sec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a test file");
    path
}

/// Replaces a file the broker may be reading at a reload: write beside it, then
/// rename, so a SIGHUP never sees half a file.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, contents).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename the new file into place");
}

/// A TOML basic string holding `path`.
pub fn toml_path(path: &Path) -> String {
    toml_str(&path.display().to_string())
}

/// A TOML basic string.
pub fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------- passwords

/// Adds `user` with `password` to `file` (created if missing) with
/// `ringmq passwd FILE USER --password-stdin`; panics with its stderr on failure.
pub fn passwd(file: &Path, user: &str, password: &str) {
    let output = run_with_input(
        Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .arg("passwd")
            .arg(file)
            .arg(user)
            .arg("--password-stdin"),
        &format!("{password}\n"),
    );
    assert!(
        output.status.success(),
        "ringmq passwd {} {user:?} failed ({}): {}",
        file.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A password file in `dir` with every `(user, password)`.
pub fn password_file(dir: &Path, name: &str, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    for (user, password) in users {
        passwd(&path, user, password);
    }
    path
}

/// Runs a command with `input` on its standard input, for at most [`WAIT`].
pub fn run_with_input(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    wait_output(child, WAIT)
}

/// Waits for `child` to exit within `limit` (killing it past that, which fails
/// the test) and returns its output.
pub fn wait_output(mut child: Child, limit: Duration) -> std::process::Output {
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let take = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default()
    };
    std::process::Output {
        status,
        stdout: take(stdout),
        stderr: take(stderr),
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

// ---------------------------------------------------------------- listeners

/// How a listener is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    Tls,
    Ws,
    Wss,
}

/// One entry of the ready line's `listeners=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub scheme: Scheme,
    pub addr: SocketAddr,
    /// The WebSocket path (`ws`, `wss`); empty otherwise.
    pub path: String,
}

/// Parses `ringmq ready listeners=LIST shards=N [...]` where LIST holds
/// `HOST:PORT`, `mqtts://HOST:PORT`, `ws://HOST:PORT/PATH`, `wss://HOST:PORT/PATH`.
pub fn parse_ready_line(line: &str) -> Result<(Vec<Listener>, u32), String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("ringmq") || words.next() != Some("ready") {
        return Err("does not start with `ringmq ready`".into());
    }
    let mut listeners = None;
    let mut shards = None;
    for word in words {
        if let Some(list) = word.strip_prefix("listeners=") {
            let parsed: Result<Vec<Listener>, String> =
                list.split(',').map(parse_listener).collect();
            listeners = Some(parsed?);
        } else if let Some(n) = word.strip_prefix("shards=") {
            shards = Some(n.parse::<u32>().map_err(|e| format!("shards: {e}"))?);
        }
    }
    let listeners = listeners.ok_or("no listeners=")?;
    if listeners.iter().any(|l| l.addr.port() == 0) {
        return Err("a listener without a real port".into());
    }
    Ok((listeners, shards.ok_or("no shards=")?))
}

fn parse_listener(text: &str) -> Result<Listener, String> {
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("mqtts://") {
        (Scheme::Tls, rest)
    } else if let Some(rest) = text.strip_prefix("wss://") {
        (Scheme::Wss, rest)
    } else if let Some(rest) = text.strip_prefix("ws://") {
        (Scheme::Ws, rest)
    } else {
        (Scheme::Tcp, text)
    };
    let (addr, path) = match rest.find('/') {
        Some(at) if matches!(scheme, Scheme::Ws | Scheme::Wss) => rest.split_at(at),
        Some(_) => return Err(format!("{text:?}: a path on a listener that has none")),
        None if matches!(scheme, Scheme::Ws | Scheme::Wss) => {
            return Err(format!("{text:?}: a WebSocket listener without a path"))
        }
        None => (rest, ""),
    };
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    Ok(Listener {
        scheme,
        addr,
        path: path.to_owned(),
    })
}

// ---------------------------------------------------------------- broker

/// Lines the broker wrote to stderr, and a signal when another arrives.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

/// Why a broker did not start.
#[derive(Debug)]
pub struct Refused {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

/// A running `ringmq` process, killed on drop.
pub struct Broker {
    child: Child,
    pub listeners: Vec<Listener>,
    pub shards: u32,
    pub config: PathBuf,
    stderr: Arc<Lines>,
}

/// Starts the broker with `config` (the TOML text, written to `dir/ringmq.toml`)
/// and the default flags plus `args`; panics with its stderr if it does not
/// become ready.
pub fn start(dir: &Path, config: &str, args: &[&str]) -> Broker {
    try_start(dir, config, args).unwrap_or_else(|refused| {
        panic!(
            "ringmq did not start ({:?}):\n{}",
            refused.status, refused.stderr
        )
    })
}

/// Like [`start`], but a broker that exits (or does not print its ready line)
/// is an `Err` with its status and stderr.
pub fn try_start(dir: &Path, config: &str, args: &[&str]) -> Result<Broker, Refused> {
    let config_path = write_file(dir, "ringmq.toml", config);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RINGMQ_") || key == "NOTIFY_SOCKET" {
            command.env_remove(key);
        }
    }
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--shards", "2"),
        ("--sys-interval", "0"),
        ("--admin-listen", ""),
        ("--log", "info"),
    ] {
        if !args.contains(&flag) {
            command.args([flag, value]);
        }
    }
    command
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start the ringmq binary");

    let stderr = Arc::new(Lines::default());
    let stderr_reader = {
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
                sink.more.notify_all();
            }
        })
    };
    let (ready_tx, ready_rx) = mpsc::channel::<String>();
    {
        let pipe = child.stdout.take().expect("piped stdout");
        // Keeps reading so the broker never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ringmq ready") {
                    let _ = ready_tx.send(line);
                }
            }
        });
    }
    let deadline = Instant::now() + WAIT;
    let line = loop {
        match ready_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => break line,
            Err(_) if Instant::now() < deadline => {
                if let Ok(Some(status)) = child.try_wait() {
                    // The pipe is closed: the reader ends once it has every line.
                    let _ = stderr_reader.join();
                    return Err(Refused {
                        status: Some(status),
                        stderr: all_lines(&stderr).join("\n"),
                    });
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Refused {
                    status: None,
                    stderr: all_lines(&stderr).join("\n"),
                });
            }
        }
    };
    let (listeners, shards) = match parse_ready_line(&line) {
        Ok(parsed) => parsed,
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bad ready line {line:?}: {why}");
        }
    };
    Ok(Broker {
        child,
        listeners,
        shards,
        config: config_path,
        stderr,
    })
}

impl Broker {
    /// The first listener of `scheme`.
    pub fn first(&self, scheme: Scheme) -> &Listener {
        self.listeners
            .iter()
            .find(|l| l.scheme == scheme)
            .unwrap_or_else(|| panic!("no {scheme:?} listener in {:?}", self.listeners))
    }

    /// The listener of `scheme` bound to `ip` (tests give each extra listener its
    /// own loopback address, so the ready line's order does not matter).
    pub fn on(&self, scheme: Scheme, ip: &str) -> &Listener {
        let ip: IpAddr = ip.parse().expect("an IP address");
        self.listeners
            .iter()
            .find(|l| l.scheme == scheme && l.addr.ip() == ip)
            .unwrap_or_else(|| panic!("no {scheme:?} listener on {ip} in {:?}", self.listeners))
    }

    /// The plain listener of `--listen 127.0.0.1:0`.
    pub fn tcp(&self) -> SocketAddr {
        self.on(Scheme::Tcp, "127.0.0.1").addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP: re-read the configuration, password, ACL and TLS files.
    pub fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Lines of stderr so far.
    pub fn log_len(&self) -> usize {
        self.stderr
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn log(&self) -> Vec<String> {
        all_lines(&self.stderr)
    }

    /// Waits for a stderr line after the first `skip` that contains each of
    /// `parts`; panics with the log after [`WAIT`].
    pub fn wait_for_log_after(&self, skip: usize, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        let mut guard = self.stderr.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(line) = guard
                .iter()
                .skip(skip)
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line.clone();
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                let log = guard.join("\n");
                drop(guard);
                panic!("no log line with {parts:?} within {WAIT:?}:\n{log}");
            };
            guard = self
                .stderr
                .more
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends SIGHUP and waits until the broker says the reload is done (every
    /// shard has the new rules; a client's next action follows them).
    pub fn reload_applied(&self) -> String {
        let seen = self.log_len();
        self.reload();
        self.wait_for_log_after(seen, &["configuration reloaded"])
    }

    /// Sends SIGHUP and waits for the warning that the reload was refused; the
    /// warning must name `names` (the file, the key).
    pub fn reload_refused(&self, names: &[&str]) -> String {
        let seen = self.log_len();
        self.reload();
        let mut parts = vec!["configuration not reloaded"];
        parts.extend_from_slice(names);
        self.wait_for_log_after(seen, &parts)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- ringmq (pid {}) stderr ----\n{}\n---- end of ringmq stderr ----",
                self.pid(),
                self.log().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn all_lines(lines: &Lines) -> Vec<String> {
    lines
        .lines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Asserts the broker refuses to start with `config`: a non-zero exit before
/// the ready line, with every one of `names` on stderr. Returns the stderr.
pub fn assert_start_fails(dir: &Path, config: &str, names: &[&str]) -> String {
    match try_start(dir, config, &[]) {
        Ok(broker) => {
            let listeners = broker.listeners.clone();
            drop(broker);
            panic!("ringmq started (listeners {listeners:?}) but should have refused")
        }
        Err(Refused { status, stderr }) => {
            let status = status.unwrap_or_else(|| {
                panic!("ringmq neither started nor exited within {WAIT:?}:\n{stderr}")
            });
            assert!(!status.success(), "exit status {status}:\n{stderr}");
            for name in names {
                assert!(
                    stderr.contains(name),
                    "stderr does not name {name:?}:\n{stderr}"
                );
            }
            stderr
        }
    }
}

/// Runs `ringmq check-config FILE`: its exit status and stderr.
pub fn check_config(file: &Path) -> (ExitStatus, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("check-config")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringmq check-config");
    let output = wait_output(child, WAIT);
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts `ringmq check-config` refuses the configuration `config` (written to
/// `dir/check.toml`) and names each of `names`.
pub fn assert_check_config_fails(dir: &Path, config: &str, names: &[&str]) {
    let file = write_file(dir, "check.toml", config);
    let (status, stderr) = check_config(&file);
    assert!(
        !status.success(),
        "check-config accepted {config:?}:\n{stderr}"
    );
    for name in names {
        assert!(
            stderr.contains(name),
            "check-config does not name {name:?}:\n{stderr}"
        );
    }
}

/// Polls `check` until it gives a value, for at most [`WAIT`].
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of a command the tests need, or a failure naming the Debian package
/// that has it (`.ci/run` installs them).
pub fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed: apt-get install -y {package} (.ci/run does)")
    })
}
