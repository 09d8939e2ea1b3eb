//! A client that publishes as fast as it can does not keep a shard to itself: others
//! still connect, subscribe and receive promptly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn string(text: &str) -> Vec<u8> {
    [&(text.len() as u16).to_be_bytes()[..], text.as_bytes()].concat()
}

fn connect(port: u16, client_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
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

#[test]
fn a_flooding_publisher_does_not_starve_other_clients() {
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _broker = Broker(child);
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split([' ', ',']).next())
        .and_then(|port| port.trim().parse().ok())
        .unwrap();

    // The flood: four clients writing QoS 0 PUBLISHes back to back, bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for n in 0..4 {
        let mut flooder = connect(port, &format!("flooder-{n}"));
        let stop = Arc::clone(&stop);
        flooders.push(std::thread::spawn(move || {
            let body = [&string("flood/x")[..], &[0u8; 64]].concat();
            let frame = [&[0x30, body.len() as u8][..], &body].concat();
            let batch = frame.repeat(200);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                if flooder.write_all(&batch).is_err() {
                    break;
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300)); // let the flood get going

    let started = Instant::now();
    let mut subscriber = connect(port, "latecomer");
    let body = [&[0u8, 1][..], &string("news"), &[0]].concat();
    subscriber
        .write_all(&[&[0x82, body.len() as u8][..], &body].concat())
        .unwrap();
    let mut suback = [0u8; 5];
    subscriber.read_exact(&mut suback).unwrap();
    assert_eq!(suback[0], 0x90);
    let mut publisher = connect(port, "news-publisher");
    let body = [&string("news")[..], b"hello"].concat();
    publisher
        .write_all(&[&[0x30, body.len() as u8][..], &body].concat())
        .unwrap();
    let mut publish = [0u8; 2 + 2 + 4 + 5];
    subscriber.read_exact(&mut publish).unwrap();
    assert_eq!(&publish[8..], b"hello");
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    // Generous for a busy 2-core machine; a starved shard takes tens of seconds.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
