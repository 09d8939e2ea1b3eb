//! The Python paho-mqtt client (`paho_client.py` beside this file) as a child
//! process: its JSON events read line by line with deadlines, killed on drop.
//!
//! Debian's `python3-paho-mqtt` installs for Debian's `/usr/bin/python3`; a
//! `python3` earlier on PATH (pyenv, a venv) may not see it, so that one is
//! preferred.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::WAIT;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/sec_harness/paho_client.py"
);

/// A Python interpreter that can import paho.mqtt, or a failure naming the
/// package.
fn python() -> &'static str {
    static FOUND: OnceLock<String> = OnceLock::new();
    FOUND.get_or_init(|| {
        for candidate in ["/usr/bin/python3", "python3"] {
            let ok = Command::new(candidate)
                .args(["-c", "import paho.mqtt.client"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return candidate.to_owned();
            }
        }
        panic!("no python3 with paho-mqtt: apt-get install -y python3-paho-mqtt (.ci/run does)")
    })
}

/// A running paho client.
pub struct Paho {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// Every event read so far, for failure messages.
    pub seen: Vec<Value>,
}

impl Paho {
    /// Starts the script with `args` (see its doc string).
    pub fn spawn(args: &[String]) -> Paho {
        let mut child = Command::new(python())
            .arg(SCRIPT)
            .args(args)
            .args(["--timeout", &WAIT.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the paho client");
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "event": "text", "line": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let sink = Arc::clone(&stderr);
            let pipe = child.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        Paho {
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
            seen: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "events so far: {:?}\npaho stderr:\n{}",
            self.seen,
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        )
    }

    /// The next event named `name`, skipping others (kept in `seen`); panics
    /// after [`WAIT`] or on an `error` event.
    pub fn event(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if event["event"] == name {
                        return event;
                    }
                    if event["event"] == "error" {
                        panic!("paho client failed waiting for {name}: {}", self.describe());
                    }
                }
                Err(_) => panic!(
                    "paho client: no {name} event within {WAIT:?}: {}",
                    self.describe()
                ),
            }
        }
    }

    /// The next event, whatever it is; `None` if the client ended first.
    pub fn next(&mut self) -> Option<Value> {
        let event = self.events.recv_timeout(WAIT).ok()?;
        self.seen.push(event.clone());
        Some(event)
    }

    /// Lets a client started with `--wait-stdin` go on.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"go\n").expect("write to the paho client");
        stdin.flush().expect("flush");
    }

    /// Waits for the process to exit (within [`WAIT`]).
    pub fn wait(&mut self) -> ExitStatus {
        self.stdin.take();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "paho client did not exit within {WAIT:?}: {}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `done` and a zero exit.
    pub fn finish(&mut self) {
        self.event("done");
        let status = self.wait();
        assert!(
            status.success(),
            "paho client exit {status}: {}",
            self.describe()
        );
    }

    /// The payloads of `message` events read so far, in order, as (topic, payload).
    pub fn messages(&self) -> Vec<(String, String)> {
        self.seen
            .iter()
            .filter(|e| e["event"] == "message")
            .map(|e| {
                (
                    e["topic"].as_str().unwrap_or_default().to_owned(),
                    e["payload"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Paho {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- paho client ----\n{}", self.describe());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
