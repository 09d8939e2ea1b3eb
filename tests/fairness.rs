//! A client that publishes as fast as it can does not keep a shard to itself: others
//! still connect, subscribe and receive promptly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{blocking, raw, Broker};

#[test]
fn a_flooding_publisher_does_not_starve_other_clients() {
    let broker = Broker::start_with(&["--shards", "1", "--sys-interval", "0", "--log", "warn"]);
    let port = broker.port();

    // The flood: four clients writing QoS 0 PUBLISHes back to back, bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for n in 0..4 {
        let mut flooder = blocking::connect_ok(port, &format!("flooder-{n}"));
        let stop = Arc::clone(&stop);
        flooders.push(std::thread::spawn(move || {
            let batch = raw::Publish::new("flood/x", 0, &[0u8; 64])
                .encode(4)
                .repeat(200);
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
    let mut subscriber = blocking::connect_ok(port, "latecomer");
    subscriber
        .write_all(&raw::subscribe(4, 1, &[("news", 0)], &raw::Props::new()))
        .unwrap();
    assert_eq!(
        blocking::read_packet(&mut subscriber).map(|p| p.0),
        Some(0x90),
        "SUBACK"
    );
    let mut publisher = blocking::connect_ok(port, "news-publisher");
    publisher
        .write_all(&raw::Publish::new("news", 0, b"hello").encode(4))
        .unwrap();
    let (kind, body) = blocking::read_packet(&mut subscriber).expect("the PUBLISH");
    assert_eq!((kind, &body[6..]), (0x30, &b"hello"[..]));
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    // Generous for a busy 2-core machine; a starved shard takes tens of seconds.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
