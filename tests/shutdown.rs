//! SIGTERM with clients connected: MQTT 5 clients are told (DISCONNECT 0x8B), every
//! connection closes, the process exits 0 by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn connect(port: u16, client_id: &str, level: u8) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    stream.write_all(&frame).unwrap();
    let mut connack = [0u8; 2];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20);
    let mut rest = vec![0u8; usize::from(connack[1])];
    stream.read_exact(&mut rest).unwrap();
    assert_eq!(rest[1], 0, "CONNACK refused: {rest:?}");
    stream
}

fn read_to_end(mut stream: TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("connection closed cleanly");
    bytes
}

#[test]
fn sigterm_disconnects_clients_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--sys-interval",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    let v5 = connect(port, "shutdown-v5", 5);
    let v311 = connect(port, "shutdown-v311", 4);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    assert_eq!(
        read_to_end(v5),
        [0xE0, 0x02, 0x8B, 0x00],
        "DISCONNECT 0x8B, then close"
    );
    assert!(
        read_to_end(v311).is_empty(),
        "MQTT 3.1.1 has no DISCONNECT from the server"
    );

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            child.kill().unwrap();
            panic!("ringmq did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // Nothing listens any more.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
