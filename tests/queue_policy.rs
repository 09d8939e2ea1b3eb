//! What a subscriber's full queue does to QoS 1 messages, per `queue_full_policy`:
//! "backpressure" holds the publisher back and loses nothing; "drop" keeps the
//! publisher going and drops what does not fit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    port: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(policy: &str) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--sys-interval",
            "0",
            "--log",
            "warn",
        ])
        .env("RINGMQ_QUEUE_FULL_POLICY", policy)
        .env("RINGMQ_MAX_QUEUED_MESSAGES", "5")
        .env("RINGMQ_MAX_INFLIGHT", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split([' ', ',']).next())
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Broker { child, port }
}

fn string(text: &str) -> Vec<u8> {
    [&(text.len() as u16).to_be_bytes()[..], text.as_bytes()].concat()
}

fn connect(port: u16, client_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = [&string("MQTT")[..], &[4, 0x02, 0, 0], &string(client_id)].concat();
    stream
        .write_all(&[&[0x10, body.len() as u8][..], &body].concat())
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    stream
}

/// Reads until `quiet` passes with nothing new (or, with `eager`, until at least one
/// whole packet is there); returns the whole packets read.
fn read_packets(
    stream: &mut TcpStream,
    quiet: Duration,
    pending: &mut Vec<u8>,
    eager: bool,
) -> Vec<(u8, Vec<u8>)> {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let whole = pending.len() >= 2 && pending.len() >= 2 + usize::from(pending[1]);
        if eager && whole {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let mut packets = Vec::new();
    while pending.len() >= 2 && pending.len() >= 2 + usize::from(pending[1]) {
        let len = usize::from(pending[1]);
        packets.push((pending[0], pending[2..2 + len].to_vec()));
        pending.drain(..2 + len);
    }
    packets
}

fn publish_batch(publisher: &mut TcpStream, first_id: u16, count: u16) {
    let mut bytes = Vec::new();
    for id in first_id..first_id + count {
        let body = [&string("q/t")[..], &id.to_be_bytes(), b"payload"].concat();
        bytes.extend_from_slice(&[0x32, body.len() as u8]);
        bytes.extend_from_slice(&body);
    }
    publisher.write_all(&bytes).unwrap();
}

/// Runs the scenario; returns (PUBACKs of batch 2 seen while the subscriber was
/// stalled, messages the subscriber got in the end).
fn scenario(policy: &str) -> (usize, usize) {
    let broker = start(policy);
    let mut subscriber = connect(broker.port, "slow-sub");
    let body = [&[0u8, 1][..], &string("q/t"), &[1]].concat();
    subscriber
        .write_all(&[&[0x82, body.len() as u8][..], &body].concat())
        .unwrap();
    let mut suback = [0u8; 5];
    subscriber.read_exact(&mut suback).unwrap();
    let mut publisher = connect(broker.port, "fast-pub");
    let mut pub_pending = Vec::new();

    publish_batch(&mut publisher, 1, 30);
    let mut acks = 0;
    let started = Instant::now();
    while acks < 30 && started.elapsed() < Duration::from_secs(10) {
        acks += read_packets(
            &mut publisher,
            Duration::from_millis(200),
            &mut pub_pending,
            true,
        )
        .len();
    }
    assert_eq!(acks, 30, "{policy}: the first batch is acknowledged");

    publish_batch(&mut publisher, 31, 30);
    let stalled_acks = read_packets(
        &mut publisher,
        Duration::from_millis(700),
        &mut pub_pending,
        false,
    )
    .len();

    // The subscriber catches up: it acknowledges everything it gets until quiet.
    let mut sub_pending = Vec::new();
    let mut received = 0;
    loop {
        let packets = read_packets(
            &mut subscriber,
            Duration::from_millis(700),
            &mut sub_pending,
            true,
        );
        if packets.is_empty() {
            break;
        }
        for (kind, body) in packets {
            if kind & 0xF0 == 0x30 {
                received += 1;
                let id = &body[5..7];
                subscriber.write_all(&[0x40, 2, id[0], id[1]]).unwrap();
            }
        }
    }
    (stalled_acks, received)
}

#[test]
fn backpressure_holds_the_publisher_and_loses_nothing() {
    let (stalled_acks, received) = scenario("backpressure");
    assert_eq!(
        stalled_acks, 0,
        "the publisher is not read while the subscriber is congested"
    );
    assert_eq!(
        received, 60,
        "every acknowledged message reaches the subscriber"
    );
}

#[test]
fn drop_keeps_the_publisher_going_and_drops_the_overflow() {
    let (stalled_acks, received) = scenario("drop");
    assert_eq!(stalled_acks, 30, "the publisher is never held back");
    assert!(
        received < 60,
        "messages past the queue limit were dropped: got {received}"
    );
    assert!(
        received >= 7,
        "the window and the queue were delivered: got {received}"
    );
}
