//! The harness of the operations tests (admin endpoint, reload, deploy):
//!
//! - [`Ringmq`]: the real binary started with `--listen 127.0.0.1:0` and the admin
//!   endpoint on `127.0.0.1:0`; the ready line read with a deadline, stderr kept
//!   so a test can wait for a log line, killed on drop;
//! - [`http`]: one HTTP/1.1 request over a `TcpStream` (`Connection: close`);
//! - [`mqtt_connect`]: a raw MQTT CONNECT, the CONNACK's code back;
//! - [`tool`]: a Debian tool the tests need, or a failure naming its package.
//!
//! Every wait has a deadline ([`WAIT`]); nothing sleeps for correctness.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upper bound of every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// Lines the broker wrote to stderr, and a signal when another arrives.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

/// A running `ringmq` process, killed on drop.
pub struct Ringmq {
    child: Child,
    pub mqtt: SocketAddr,
    /// The admin endpoint, when the ready line names one.
    pub admin: Option<SocketAddr>,
    pub ready_line: String,
    stderr: Arc<Lines>,
}

impl Ringmq {
    /// Starts `ringmq --listen 127.0.0.1:0 --shards 2 --admin-listen 127.0.0.1:0
    /// --sys-interval 0` plus `args` (an `--admin-listen` in `args` replaces the
    /// default), with only the `RINGMQ_*` variables of `envs`.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Ringmq {
        Ringmq::try_start(args, envs).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Like [`Ringmq::start`], but a broker that exits before its ready line is
    /// an `Err` with its exit status and stderr.
    pub fn try_start(args: &[&str], envs: &[(&str, &str)]) -> Result<Ringmq, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        for (key, _) in std::env::vars() {
            if key.starts_with("RINGMQ_") || key == "NOTIFY_SOCKET" {
                command.env_remove(key);
            }
        }
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--sys-interval",
            "0",
        ]);
        if !args.contains(&"--admin-listen") {
            command.args(["--admin-listen", "127.0.0.1:0"]);
        }
        command
            .args(args)
            .envs(envs.iter().copied())
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
        let ready_line = loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // The pipe is closed: the reader ends once it has every line.
                        let _ = stderr_reader.join();
                        return Err(format!(
                            "ringmq exited ({status}) before it was ready:\n{}",
                            all_lines(&stderr).join("\n")
                        ));
                    }
                }
                // Stdout closed without a ready line: the broker is exiting. Its
                // stderr says why once the reader has every line.
                Err(mpsc::RecvTimeoutError::Disconnected) if Instant::now() < deadline => {
                    while Instant::now() < deadline {
                        if let Ok(Some(status)) = child.try_wait() {
                            let _ = stderr_reader.join();
                            return Err(format!(
                                "ringmq exited ({status}) before it was ready:\n{}",
                                all_lines(&stderr).join("\n")
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = child.kill();
                    return Err("stdout closed, no exit".into());
                }
                Err(_) => {
                    let _ = child.kill();
                    return Err(format!(
                        "no ready line within {WAIT:?}:\n{}",
                        all_lines(&stderr).join("\n")
                    ));
                }
            }
        };
        let field = |name: &str| {
            ready_line
                .split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(str::to_owned)
        };
        let mqtt = field("listeners=")
            .and_then(|list| list.split(',').next().and_then(|a| a.parse().ok()))
            .unwrap_or_else(|| panic!("no listener in {ready_line:?}"));
        let admin = field("admin=").map(|addr| {
            addr.parse()
                .unwrap_or_else(|_| panic!("bad admin address in {ready_line:?}"))
        });
        Ok(Ringmq {
            child,
            mqtt,
            admin,
            ready_line,
            stderr,
        })
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
            .unwrap_or_else(|| panic!("no admin endpoint in {:?}", self.ready_line))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "HUP") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for a stderr line containing every one of `parts`, seen since the
    /// start; panics with the log after [`WAIT`].
    pub fn wait_for_log(&self, parts: &[&str]) -> String {
        self.wait_for_log_after(0, parts)
    }

    /// Like [`Ringmq::wait_for_log`], looking only at lines after the first
    /// `skip` ([`Ringmq::log_len`] taken earlier).
    pub fn wait_for_log_after(&self, skip: usize, parts: &[&str]) -> String {
        let found = wait_for(
            &self.stderr,
            |lines| {
                lines
                    .iter()
                    .skip(skip)
                    .find(|line| parts.iter().all(|part| line.contains(part)))
                    .cloned()
            },
            WAIT,
        );
        found.unwrap_or_else(|| {
            panic!(
                "no log line with {parts:?} within {WAIT:?}:\n{}",
                self.log().join("\n")
            )
        })
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

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ringmq did not exit within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path` from the admin endpoint with `token`, if any.
    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        http(self.admin(), "GET", path, token, &[])
    }
}

impl Drop for Ringmq {
    fn drop(&mut self) {
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

fn wait_for<T>(
    lines: &Lines,
    mut check: impl FnMut(&[String]) -> Option<T>,
    timeout: Duration,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut guard = lines.lines.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(found) = check(&guard) {
            return Some(found);
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        guard = lines
            .more
            .wait_timeout(guard, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
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
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------- HTTP

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One request; `extra` headers as `("Accept", "...")`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to admin");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(rest.get(..size).expect("whole chunk"));
        body = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

// ---------------------------------------------------------------- metrics

/// The sum of every sample of `name` (classic text format) whose labels contain
/// each of `labels` (`qos="1"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The name of every sample in an exposition.
pub fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------- MQTT

/// MQTT 3.1.1 (`4`) or 5.0 (`5`).
pub type Level = u8;

/// Sends CONNECT (clean session, keep alive 60) and returns the stream and the
/// CONNACK's return or reason code (0: accepted).
pub fn mqtt_connect(addr: SocketAddr, client_id: &str, level: Level) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the broker");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    write_packet(&mut stream, 0x10, &body);
    let (kind, connack) = read_packet(&mut stream).expect("a CONNACK");
    assert_eq!(kind, 0x20, "CONNACK expected, got {kind:#x}");
    let code = *connack.get(1).expect("CONNACK code");
    (stream, code)
}

/// SUBSCRIBE to one filter (packet id 1) and wait for the SUBACK.
pub fn mqtt_subscribe(stream: &mut TcpStream, filter: &str, qos: u8, level: Level) {
    let mut body = vec![0, 1];
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    write_packet(stream, 0x82, &body);
    let (kind, _) = read_packet(stream).expect("a SUBACK");
    assert_eq!(kind, 0x90, "SUBACK expected, got {kind:#x}");
}

pub fn write_packet(stream: &mut TcpStream, first: u8, body: &[u8]) {
    let mut frame = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        frame.push(byte);
        if len == 0 {
            break;
        }
    }
    frame.extend_from_slice(body);
    stream.write_all(&frame).expect("send packet");
}

/// The next packet's first byte and body; `None` when the broker closed.
pub fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).ok()?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        len |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

// ---------------------------------------------------------------- tools

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

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-ops-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Runs a command with its standard input from `input`; its output back.
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
    child.wait_with_output().expect("wait for the command")
}
