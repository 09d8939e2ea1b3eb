//! What a subscriber's full queue does to QoS 1 messages, per `queue_full_policy`:
//! "backpressure" holds the publisher back and loses nothing; "drop" keeps the
//! publisher going and drops what does not fit. Without the key it is
//! "backpressure": an acknowledged message is not lost to a slow subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use harness::{blocking, raw, Broker};

fn publish_batch(publisher: &mut TcpStream, first_id: u16, count: u16) {
    let bytes: Vec<u8> = (first_id..first_id + count)
        .flat_map(|id| raw::Publish::new("q/t", 1, b"payload").pkid(id).encode(4))
        .collect();
    publisher.write_all(&bytes).unwrap();
}

/// A broker with a window of 2 and a queue of 5 per session, `policy` or the
/// default, and a QoS 1 subscriber of `q/t` that reads nothing yet.
fn broker_and_subscriber(policy: Option<&str>, client_id: &str) -> (Broker, TcpStream) {
    let mut envs = vec![
        ("RINGMQ_MAX_QUEUED_MESSAGES", "5"),
        ("RINGMQ_MAX_INFLIGHT", "2"),
    ];
    if let Some(policy) = policy {
        envs.push(("RINGMQ_QUEUE_FULL_POLICY", policy));
    }
    let broker = Broker::start_with_env(
        &["--shards", "1", "--sys-interval", "0", "--log", "warn"],
        &envs,
    );
    let mut subscriber = blocking::connect_ok(broker.port(), client_id);
    subscriber
        .write_all(&raw::subscribe(4, 1, &[("q/t", 1)], &raw::Props::new()))
        .unwrap();
    assert_eq!(
        blocking::read_packet(&mut subscriber).map(|p| p.0),
        Some(0x90),
        "SUBACK"
    );
    (broker, subscriber)
}

/// The subscriber catches up: it acknowledges every message as it arrives, until
/// `quiet` passes with nothing new. Returns how many it got.
fn catch_up(subscriber: &mut TcpStream, quiet: Duration) -> usize {
    subscriber.set_read_timeout(Some(quiet)).unwrap();
    let mut received = 0;
    while let Some((kind, body)) = blocking::read_packet(subscriber) {
        if kind & 0xF0 == 0x30 {
            received += 1;
            let id = u16::from_be_bytes([body[5], body[6]]);
            subscriber
                .write_all(&raw::ack(raw::kind::PUBACK, id))
                .unwrap();
        }
    }
    received
}

/// Runs the scenario: 60 QoS 1 messages pipelined to a subscriber that reads none
/// yet; returns (PUBACKs the publisher got while the subscriber was stalled,
/// messages the subscriber got in the end, acknowledging as it reads). `None`: the default policy.
fn scenario(policy: Option<&str>) -> (usize, usize) {
    let (broker, mut subscriber) = broker_and_subscriber(policy, "slow-sub");
    let mut publisher = blocking::connect_ok(broker.port(), "fast-pub");
    publish_batch(&mut publisher, 1, 30);
    publish_batch(&mut publisher, 31, 30);
    let stalled_acks = blocking::read_until_quiet(&mut publisher, Duration::from_millis(700)).len();
    let received = catch_up(&mut subscriber, Duration::from_millis(700));
    (stalled_acks, received)
}

#[test]
fn backpressure_holds_the_publisher_and_loses_nothing() {
    let (stalled_acks, received) = scenario(Some("backpressure"));
    assert_eq!(
        stalled_acks, 7,
        "the publisher is held once the window (2) and the queue (5) are full"
    );
    assert_eq!(
        received, 60,
        "every acknowledged message reaches the subscriber"
    );
}

#[test]
fn drop_keeps_the_publisher_going_and_drops_the_overflow() {
    let (stalled_acks, received) = scenario(Some("drop"));
    assert_eq!(stalled_acks, 60, "the publisher is never held back");
    assert!(
        received < 60,
        "messages past the queue limit were dropped: got {received}"
    );
    assert!(
        received >= 7,
        "the window and the queue were delivered: got {received}"
    );
}

#[test]
fn by_default_a_slow_subscriber_loses_nothing() {
    let (stalled_acks, received) = scenario(None);
    assert_eq!(stalled_acks, 7, "the default holds the publisher back");
    assert_eq!(
        received, 60,
        "every acknowledged message reaches the subscriber"
    );
}

/// Many publishers whose pipelined batches all arrive while the one subscriber is
/// stalled: each is held from the message that congests the subscriber on, not
/// after its whole batch, so together they cannot overrun its queue.
#[test]
fn pipelined_batches_of_many_publishers_lose_nothing() {
    const PUBLISHERS: u16 = 20;
    const EACH: u16 = 100;
    let (broker, mut subscriber) = broker_and_subscriber(None, "stalled-sub");
    // Together far more than the queue takes even past its backpressure slack.
    let publishers: Vec<TcpStream> = (0..PUBLISHERS)
        .map(|n| {
            let mut publisher = blocking::connect_ok(broker.port(), &format!("burst-pub-{n}"));
            publish_batch(&mut publisher, 1, EACH);
            publisher
        })
        .collect();
    let received = catch_up(&mut subscriber, Duration::from_millis(1500));
    assert_eq!(
        received,
        usize::from(PUBLISHERS * EACH),
        "every acknowledged message reaches the subscriber"
    );
    drop(publishers);
}
