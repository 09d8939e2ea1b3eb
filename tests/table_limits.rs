//! The session table and the retained store are bounded: what a client sees when
//! they are full.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

fn start(env: &[(&str, &str)]) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
            "--sys-interval",
            "0",
        ])
        .envs(env.iter().copied())
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

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    [&[first, body.len() as u8][..], body].concat()
}

fn string(text: &str) -> Vec<u8> {
    [&(text.len() as u16).to_be_bytes()[..], text.as_bytes()].concat()
}

/// Sends an MQTT 5 CONNECT (clean start, session expiry `expiry_s`) and returns the
/// stream and the CONNACK reason code.
fn connect(port: u16, client_id: &str, expiry_s: u32) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let properties = [&[5u8, 0x11][..], &expiry_s.to_be_bytes()].concat();
    let body = [
        &string("MQTT")[..],
        &[5, 0x02, 0, 60],
        &properties,
        &string(client_id),
    ]
    .concat();
    stream.write_all(&frame(0x10, &body)).unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    let mut rest = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut rest).unwrap();
    assert_eq!(header[0], 0x20);
    (stream, rest[1])
}

fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    assert!(header[1] < 128, "short packets only in this test");
    let mut body = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut body).unwrap();
    (header[0], body)
}

#[test]
fn a_full_session_table_refuses_new_sessions_until_one_ends() {
    let broker = start(&[("RINGMQ_MAX_SESSIONS", "2")]);
    let (_a, a) = connect(broker.port, "a", 0);
    let (mut b, b_code) = connect(broker.port, "b", 0);
    assert_eq!((a, b_code), (0, 0));
    let (_c, c) = connect(broker.port, "c", 0);
    assert_eq!(c, 0x97, "Quota exceeded");
    // Reconnecting an existing client id needs no new session.
    let (_a2, a2) = connect(broker.port, "a", 0);
    assert_eq!(a2, 0);
    // A session that ends frees its place.
    b.write_all(&[0xE0, 0x00]).unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    let mut code = 0x97;
    for _ in 0..100 {
        let (_d, d) = connect(broker.port, "d", 0);
        code = d;
        if code == 0 {
            break;
        }
        // The broker ends b's session as it reads the DISCONNECT; retry briefly.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(code, 0);
}

#[test]
fn a_full_retained_store_keeps_what_it_has_and_delivers_the_rest() {
    let broker = start(&[("RINGMQ_MAX_RETAINED_MESSAGES", "2")]);
    let (mut publisher, code) = connect(broker.port, "pub", 0);
    assert_eq!(code, 0);
    // Three retained QoS 1 messages on three topics, and a replacement of the first.
    for (id, topic, payload) in [
        (1u16, "t/1", "one"),
        (2, "t/2", "two"),
        (3, "t/3", "three"),
        (4, "t/1", "uno"),
    ] {
        let body = [
            &string(topic)[..],
            &id.to_be_bytes(),
            &[0],
            payload.as_bytes(),
        ]
        .concat();
        publisher.write_all(&frame(0x33, &body)).unwrap();
        let (kind, ack) = read_packet(&mut publisher);
        assert_eq!((kind, &ack[..2]), (0x40, &id.to_be_bytes()[..]));
    }
    let (mut subscriber, code) = connect(broker.port, "sub", 0);
    assert_eq!(code, 0);
    let body = [&[0u8, 1, 0][..], &string("t/#"), &[0]].concat();
    subscriber.write_all(&frame(0x82, &body)).unwrap();
    let (kind, _) = read_packet(&mut subscriber);
    assert_eq!(kind, 0x90, "SUBACK");
    let mut got = Vec::new();
    for _ in 0..2 {
        let (kind, body) = read_packet(&mut subscriber);
        assert_eq!(kind & 0xF1, 0x31, "retained PUBLISH");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
        let payload = String::from_utf8(body[2 + topic_len + 1..].to_vec()).unwrap();
        got.push((topic, payload));
    }
    got.sort();
    assert_eq!(
        got,
        [("t/1".into(), "uno".into()), ("t/2".into(), "two".into())]
    );
    // Nothing more: t/3 was not kept.
    subscriber
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        subscriber.read(&mut byte).is_err(),
        "no third retained message"
    );
}
