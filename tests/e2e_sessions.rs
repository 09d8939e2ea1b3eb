//! Sessions: takeover by a second connection with the same client id,
//! persistent sessions with offline queues (3.1.1 clean_session=false, 5.0
//! session expiry), QoS 2 exactly once across reconnects, expiry, clean start
//! and the session-present flag.

// A test states its expectations with unwrap/expect and indexing: a panic
// here is a failed assertion, not a bug on a hot path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod harness;

use std::time::Duration;

use harness::raw::{self, kind, prop, Connect, Packet, Props, Publish, RawClient, Value};
use harness::{persistent_v4, persistent_v5, Broker, Qos, Qos311, QUIET, V4, V5, WAIT};

/// A raw MQTT 5 CONNECT that resumes (or starts) a session kept for 300 s.
fn raw_persistent_v5(id: &str) -> Connect {
    Connect::v5(id)
        .clean(false)
        .prop(prop::SESSION_EXPIRY_INTERVAL, Value::U32(300))
}

fn session_present(connack: &Packet) -> bool {
    match connack {
        Packet::ConnAck {
            session_present, ..
        } => *session_present,
        other => panic!("not a CONNACK: {other:?}"),
    }
}

// The connection that is taken over is a raw client: rumqttc 0.25 cannot
// parse a DISCONNECT whose property length is omitted (`E0 01 8E`, valid per
// MQTT 5.0 3.14.2.2) and reports "connection closed by peer" instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_takeover_sends_0x8e_to_the_old_connection_and_the_new_one_works() {
    let broker = Broker::start();
    let id = broker.id_on("takeover-v5", 1);
    let mut publisher = broker.v5(&broker.id_on("takeover-v5-pub", 0)).await;
    let mut current = broker.raw_connected(&Connect::v5(&id)).await;
    // Several rounds, since the kernel picks the accepting shard: at least one
    // takeover is then likely to start on the shard that does not own the id.
    for round in 0..4u16 {
        let (mut next, connack) = RawClient::connect(broker.port(), &Connect::v5(&id)).await;
        assert!(
            matches!(
                connack,
                Packet::ConnAck {
                    code: 0,
                    session_present: false,
                    ..
                }
            ),
            "{connack:?}"
        );
        let seen = current.expect_closed("the taken-over connection").await;
        assert!(
            matches!(seen.as_slice(), [Packet::Disconnect { code: 0x8E, .. }]),
            "round {round}: DISCONNECT 0x8E (session taken over) then close, got {seen:?}"
        );

        let topic = format!("takeover/v5/{round}");
        assert_eq!(
            next.subscribe(round + 1, &[(&topic, 1)], &Props::new())
                .await,
            vec![1]
        );
        publisher
            .publish(&topic, Qos::AtLeastOnce, false, format!("round {round}"))
            .await;
        let p = next.expect_publish().await;
        assert_eq!(p.payload, format!("round {round}").as_bytes());
        next.send(&raw::ack(kind::PUBACK, p.pkid))
            .await
            .expect("send PUBACK");
        current = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_takeover_closes_the_old_connection() {
    let broker = Broker::start();
    let id = broker.id_on("takeover-v311", 0);
    let mut old = broker.v4(&id).await;
    let mut new = broker.v4(&id).await;
    old.expect_closed().await;

    new.subscribe_ok("takeover/v311", Qos311::AtLeastOnce).await;
    let mut publisher = broker.v4(&broker.id_on("takeover-v311-pub", 1)).await;
    publisher
        .publish(
            "takeover/v311",
            Qos311::AtLeastOnce,
            false,
            "to the new one",
        )
        .await;
    assert_eq!(new.recv().await.payload.as_ref(), b"to the new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_a_persistent_session_keeps_its_subscriptions() {
    let broker = Broker::start();
    let id = broker.id_on("takeover-keep", 1);
    let mut old = broker.raw_connected(&raw_persistent_v5(&id)).await;
    assert_eq!(
        old.subscribe(1, &[("keep/t", 1)], &Props::new()).await,
        vec![1]
    );

    let mut new = V5::connect(persistent_v5(&broker, &id, 300)).await;
    assert!(new.connack.session_present, "the session was resumed");
    let seen = old.expect_closed("the taken-over connection").await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect { code: 0x8E, .. }]),
        "{seen:?}"
    );

    let mut publisher = broker.v5(&broker.id_on("takeover-keep-pub", 0)).await;
    publisher
        .publish("keep/t", Qos::AtLeastOnce, false, "kept")
        .await;
    assert_eq!(
        new.recv().await.payload.as_ref(),
        b"kept",
        "subscription survived the takeover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_present_flag_follows_the_session() {
    let broker = Broker::start();
    let v4_id = broker.id_on("present-v311", 0);
    let first = V4::connect(persistent_v4(&broker, &v4_id)).await;
    assert!(
        !first.connack.session_present,
        "v3.1.1 first connect: no session yet"
    );
    first.disconnect().await;
    let second = V4::connect(persistent_v4(&broker, &v4_id)).await;
    assert!(
        second.connack.session_present,
        "v3.1.1 reconnect: session present"
    );
    second.disconnect().await;
    let clean = broker.v4(&v4_id).await;
    assert!(
        !clean.connack.session_present,
        "v3.1.1 clean session: never present"
    );

    let v5_id = broker.id_on("present-v5", 1);
    let first = V5::connect(persistent_v5(&broker, &v5_id, 300)).await;
    assert!(
        !first.connack.session_present,
        "v5 first connect: no session yet"
    );
    first.disconnect().await;
    let second = V5::connect(persistent_v5(&broker, &v5_id, 300)).await;
    assert!(
        second.connack.session_present,
        "v5 reconnect: session present"
    );
    second.disconnect().await;
    let clean = broker.v5(&v5_id).await;
    assert!(
        !clean.connack.session_present,
        "v5 clean start: never present"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_persistent_session_queues_qos1_and_qos2_while_offline() {
    let broker = Broker::start();
    let id = broker.id_on("offline-v311", 0);
    let mut sub = V4::connect(persistent_v4(&broker, &id)).await;
    sub.subscribe_ok("offline/v311/+", Qos311::ExactlyOnce)
        .await;
    sub.disconnect().await;

    let mut publisher = broker.v4(&broker.id_on("offline-v311-pub", 1)).await;
    let sent: Vec<(String, Qos311)> = (0..6)
        .map(|i| {
            (
                format!("m{i}"),
                if i % 2 == 0 {
                    Qos311::AtLeastOnce
                } else {
                    Qos311::ExactlyOnce
                },
            )
        })
        .collect();
    for (payload, qos) in &sent {
        publisher
            .publish("offline/v311/x", *qos, false, payload.clone())
            .await;
    }

    let mut sub = V4::connect(persistent_v4(&broker, &id)).await;
    assert!(sub.connack.session_present);
    for (payload, qos) in &sent {
        let p = sub.recv().await;
        assert_eq!(
            p.payload.as_ref(),
            payload.as_bytes(),
            "queued messages arrive in order"
        );
        assert_eq!(p.qos, *qos);
    }
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_persistent_session_queues_qos1_and_qos2_while_offline() {
    let broker = Broker::start();
    let id = broker.id_on("offline-v5", 1);
    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    sub.subscribe("offline/v5/+", Qos::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = broker.v5(&broker.id_on("offline-v5-pub", 0)).await;
    for i in 0..6 {
        let qos = if i % 2 == 0 {
            Qos::AtLeastOnce
        } else {
            Qos::ExactlyOnce
        };
        publisher
            .publish("offline/v5/x", qos, false, format!("m{i}"))
            .await;
    }

    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    assert!(sub.connack.session_present);
    for i in 0..6 {
        let p = sub.recv().await;
        assert_eq!(p.payload.as_ref(), format!("m{i}").as_bytes());
        let qos = if i % 2 == 0 {
            Qos::AtLeastOnce
        } else {
            Qos::ExactlyOnce
        };
        assert_eq!(p.qos, qos);
    }
    sub.expect_no_publish(QUIET).await;

    // The resumed session keeps receiving live messages too.
    publisher
        .publish("offline/v5/x", Qos::AtLeastOnce, false, "live")
        .await;
    assert_eq!(sub.recv().await.payload.as_ref(), b"live");
}

/// A publisher whose connection drops before it saw the PUBREC resends the
/// PUBLISH (DUP) after resuming its session: subscribers still get one copy.
/// A publisher that saw the PUBREC resends only the PUBREL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_from_a_publisher_is_delivered_once_across_its_reconnect() {
    let broker = Broker::start();
    let mut sub = broker.v5(&broker.id_on("q2in-sub", 0)).await;
    sub.subscribe("q2in/t", Qos::ExactlyOnce).await;
    let pub_id = broker.id_on("q2in-pub", 1);

    // Case 1: the PUBLISH is resent after the reconnect.
    let mut publisher = broker.raw_connected(&raw_persistent_v5(&pub_id)).await;
    publisher
        .send(&Publish::new("q2in/t", 2, b"first").pkid(7).encode(raw::V5))
        .await
        .expect("send");
    match publisher.expect_non_ping("PUBREC").await {
        Packet::PubRec { pkid: 7, code } => assert!(code < 0x80, "PUBREC reason {code:#x}"),
        other => panic!("expected PUBREC 7, got {other:?}"),
    }
    drop(publisher);
    let (mut publisher, connack) =
        RawClient::connect(broker.port(), &raw_persistent_v5(&pub_id)).await;
    assert!(session_present(&connack));
    publisher
        .send(
            &Publish::new("q2in/t", 2, b"first")
                .pkid(7)
                .dup(true)
                .encode(raw::V5),
        )
        .await
        .expect("resend PUBLISH");
    assert!(matches!(
        publisher.expect_non_ping("PUBREC").await,
        Packet::PubRec { pkid: 7, .. }
    ));
    publisher
        .send(&raw::ack(kind::PUBREL, 7))
        .await
        .expect("send PUBREL");
    assert!(matches!(
        publisher.expect_non_ping("PUBCOMP").await,
        Packet::PubComp { pkid: 7, code: 0 }
    ));

    let p = sub.recv().await;
    assert_eq!(p.payload.as_ref(), b"first");
    sub.expect_no_publish(QUIET).await;

    // Case 2: only the PUBREL is resent after the reconnect.
    publisher
        .send(&Publish::new("q2in/t", 2, b"second").pkid(8).encode(raw::V5))
        .await
        .expect("send");
    assert!(matches!(
        publisher.expect_non_ping("PUBREC").await,
        Packet::PubRec { pkid: 8, .. }
    ));
    drop(publisher);
    let (mut publisher, connack) =
        RawClient::connect(broker.port(), &raw_persistent_v5(&pub_id)).await;
    assert!(session_present(&connack));
    publisher
        .send(&raw::ack(kind::PUBREL, 8))
        .await
        .expect("send PUBREL");
    assert!(matches!(
        publisher.expect_non_ping("PUBCOMP").await,
        Packet::PubComp { pkid: 8, code: 0 }
    ));

    let p = sub.recv().await;
    assert_eq!(p.payload.as_ref(), b"second");
    sub.expect_no_publish(QUIET).await;
}

/// A subscriber that sent PUBREC and dropped before PUBCOMP gets the PUBREL
/// again after resuming, never the message a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_to_a_subscriber_is_delivered_once_across_its_reconnect() {
    let broker = Broker::start();
    let sub_id = broker.id_on("q2out-sub", 1);
    let mut sub = broker.raw_connected(&raw_persistent_v5(&sub_id)).await;
    assert_eq!(
        sub.subscribe(1, &[("q2out/t", 2)], &Props::new()).await,
        vec![2]
    );

    let mut publisher = broker.v5(&broker.id_on("q2out-pub", 0)).await;
    publisher
        .publish("q2out/t", Qos::ExactlyOnce, false, "exactly once")
        .await;

    let p = sub.expect_publish().await;
    assert_eq!((p.qos, p.payload.as_slice()), (2, &b"exactly once"[..]));
    sub.send(&raw::ack(kind::PUBREC, p.pkid))
        .await
        .expect("send PUBREC");
    match sub.expect_non_ping("PUBREL").await {
        Packet::PubRel { pkid, .. } => assert_eq!(pkid, p.pkid),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(sub);

    let (mut sub, connack) = RawClient::connect(broker.port(), &raw_persistent_v5(&sub_id)).await;
    assert!(session_present(&connack));
    match sub.expect_non_ping("the resent PUBREL").await {
        Packet::PubRel { pkid, .. } => {
            assert_eq!(pkid, p.pkid, "PUBREL with the original packet id")
        }
        other => panic!("expected the PUBREL to be resent, got {other:?}"),
    }
    sub.send(&raw::ack(kind::PUBCOMP, p.pkid))
        .await
        .expect("send PUBCOMP");
    sub.expect_silence(QUIET).await;
}

/// An unacknowledged QoS 1 message is resent with DUP set and the same packet
/// id when a 3.1.1 persistent session resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_unacknowledged_qos1_is_resent_with_dup_after_reconnect() {
    let broker = Broker::start();
    let sub_id = broker.id_on("dup-sub", 0);
    let connect = Connect::v311(&sub_id).clean(false);
    let mut sub = broker.raw_connected(&connect).await;
    assert_eq!(
        sub.subscribe(3, &[("dup/t", 1)], &Props::new()).await,
        vec![1]
    );

    let mut publisher = broker.v4(&broker.id_on("dup-pub", 1)).await;
    publisher
        .publish("dup/t", Qos311::AtLeastOnce, false, "again")
        .await;
    let first = sub.expect_publish().await;
    assert!(!first.dup);
    drop(sub);

    let (mut sub, connack) = RawClient::connect(broker.port(), &connect).await;
    assert!(session_present(&connack));
    let again = sub.expect_publish().await;
    assert_eq!(again.payload, b"again");
    assert_eq!(again.pkid, first.pkid, "same packet id");
    assert!(again.dup, "DUP set on redelivery");
    sub.send(&raw::ack(kind::PUBACK, again.pkid))
        .await
        .expect("send PUBACK");
    sub.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_ends_after_its_expiry_interval() {
    let broker = Broker::start();
    let id = broker.id_on("expiry", 0);
    let mut sub = V5::connect(persistent_v5(&broker, &id, 1)).await;
    sub.subscribe("expiry/t", Qos::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = broker.v5(&broker.id_on("expiry-pub", 1)).await;
    publisher
        .publish("expiry/t", Qos::AtLeastOnce, false, "while offline")
        .await;
    // The session expires 1 s after the disconnect: let that time pass.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let mut sub = V5::connect(persistent_v5(&broker, &id, 300)).await;
    assert!(!sub.connack.session_present, "expired session is gone");
    sub.expect_no_publish(QUIET).await;
    publisher
        .publish("expiry/t", Qos::AtLeastOnce, false, "after expiry")
        .await;
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_without_expiry_ends_at_disconnect() {
    let broker = Broker::start();
    let id = broker.id_on("no-expiry", 1);
    let mut o = broker.v5_options(&id);
    o.set_clean_start(false);
    let mut sub = V5::connect(o.clone()).await;
    sub.subscribe("no-expiry/t", Qos::AtLeastOnce).await;
    sub.disconnect().await;

    let mut sub = V5::connect(o).await;
    assert!(
        !sub.connack.session_present,
        "session expiry 0: the session ended with the connection"
    );
    let mut publisher = broker.v5(&broker.id_on("no-expiry-pub", 0)).await;
    publisher
        .publish("no-expiry/t", Qos::AtLeastOnce, false, "x")
        .await;
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_can_set_session_expiry_to_zero() {
    let broker = Broker::start();
    let id = broker.id_on("expiry-at-disconnect", 0);
    let mut sub = broker.raw_connected(&raw_persistent_v5(&id)).await;
    assert_eq!(
        sub.subscribe(1, &[("expiry-at-disconnect/t", 1)], &Props::new())
            .await,
        vec![1]
    );
    let props = Props::new().with(prop::SESSION_EXPIRY_INTERVAL, Value::U32(0));
    sub.send(&raw::disconnect(raw::V5, 0x00, &props))
        .await
        .expect("send DISCONNECT");
    sub.expect_closed("after DISCONNECT").await;

    let (_sub, connack) = RawClient::connect(broker.port(), &raw_persistent_v5(&id)).await;
    assert!(
        !session_present(&connack),
        "DISCONNECT set the expiry to 0: no session left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_start_discards_the_session_and_its_queue() {
    let broker = Broker::start();
    let mut publisher = broker.v5(&broker.id_on("discard-pub", 1)).await;

    let v5_id = broker.id_on("discard-v5", 0);
    let mut sub = V5::connect(persistent_v5(&broker, &v5_id, 300)).await;
    sub.subscribe("discard/v5", Qos::AtLeastOnce).await;
    sub.disconnect().await;
    publisher
        .publish("discard/v5", Qos::AtLeastOnce, false, "queued")
        .await;
    let mut sub = broker.v5(&v5_id).await;
    assert!(!sub.connack.session_present);
    sub.expect_no_publish(QUIET).await;
    publisher
        .publish("discard/v5", Qos::AtLeastOnce, false, "live")
        .await;
    sub.expect_no_publish(QUIET).await;

    let v4_id = broker.id_on("discard-v311", 1);
    let mut sub = V4::connect(persistent_v4(&broker, &v4_id)).await;
    sub.subscribe_ok("discard/v311", Qos311::AtLeastOnce).await;
    sub.disconnect().await;
    publisher
        .publish("discard/v311", Qos::AtLeastOnce, false, "queued")
        .await;
    let mut sub = broker.v4(&v4_id).await;
    assert!(!sub.connack.session_present);
    sub.expect_no_publish(QUIET).await;
    publisher
        .publish("discard/v311", Qos::AtLeastOnce, false, "live")
        .await;
    sub.expect_no_publish(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_session_expiry_caps_what_the_client_asks() {
    let broker = Broker::start_with(&["--max-session-expiry", "1"]);
    let id = broker.id_on("capped", 0);
    let (mut c, connack) = RawClient::connect(broker.port(), &raw_persistent_v5(&id)).await;
    match &connack {
        Packet::ConnAck { code: 0, props, .. } => assert_eq!(
            props.int(prop::SESSION_EXPIRY_INTERVAL),
            Some(1),
            "CONNACK tells the client the expiry the server uses"
        ),
        other => panic!("expected a successful CONNACK, got {other:?}"),
    }
    assert_eq!(
        c.subscribe(1, &[("capped/t", 1)], &Props::new()).await,
        vec![1]
    );
    c.send(&raw::disconnect(raw::V5, 0, &Props::new()))
        .await
        .expect("send DISCONNECT");
    c.expect_closed("after DISCONNECT").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_c, connack) = RawClient::connect(broker.port(), &raw_persistent_v5(&id)).await;
    assert!(
        !session_present(&connack),
        "the session expired after the capped 1 s, not 300 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_session_expiry_also_ends_v311_persistent_sessions() {
    let broker = Broker::start_with(&["--max-session-expiry", "1"]);
    let id = broker.id_on("capped-v311", 1);
    let c = V4::connect(persistent_v4(&broker, &id)).await;
    c.disconnect().await;
    let c = V4::connect(persistent_v4(&broker, &id)).await;
    assert!(c.connack.session_present, "resumed within the second");
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let c = V4::connect(persistent_v4(&broker, &id)).await;
    assert!(
        !c.connack.session_present,
        "a 3.1.1 persistent session lives --max-session-expiry offline"
    );
}

/// A QoS 1 message in flight to a connection that is taken over (resuming
/// the session) is resent to the new connection with DUP and the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_move_to_the_connection_that_takes_over() {
    let broker = Broker::start();
    let id = broker.id_on("inflight-move", 0);
    let mut old = broker.raw_connected(&raw_persistent_v5(&id)).await;
    assert_eq!(
        old.subscribe(1, &[("move/t", 1)], &Props::new()).await,
        vec![1]
    );
    let mut publisher = broker.v5(&broker.id_on("inflight-move-pub", 1)).await;
    publisher
        .publish("move/t", Qos::AtLeastOnce, false, "unacked")
        .await;
    let first = old.expect_publish().await;

    let (mut new, connack) = RawClient::connect(broker.port(), &raw_persistent_v5(&id)).await;
    assert!(session_present(&connack));
    let seen = old.expect_closed("the taken-over connection").await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect { code: 0x8E, .. }]),
        "{seen:?}"
    );
    let again = new.expect_publish().await;
    assert_eq!(
        (again.payload.as_slice(), again.pkid, again.dup),
        (&b"unacked"[..], first.pkid, true)
    );
    new.send(&raw::ack(kind::PUBACK, again.pkid))
        .await
        .expect("send PUBACK");
    new.expect_silence(QUIET).await;
}

/// What a rumqttc user sees of a takeover: the DISCONNECT reason 0x8E.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rumqttc_client_sees_session_taken_over() {
    let broker = Broker::start();
    let id = broker.id_on("takeover-rumqttc", 0);
    let mut old = broker.v5(&id).await;
    let _new = broker.v5(&id).await;
    assert_eq!(
        old.expect_server_disconnect().await,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver
    );
}

/// Ten connections with one client id at once: the broker ends up with
/// exactly one of them open, and the others were closed (v5: with 0x8E).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_with_one_id_leave_exactly_one_connection() {
    const CONNECTIONS: usize = 10;
    let broker = Broker::start_with(&["--shards", "3"]);
    let id = broker.id_on("race", 2);
    let port = broker.port();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = RawClient::open(port, raw::V5).await;
            c.send(&Connect::v5(&id).encode()).await.ok();
            c
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.expect("connect task"));
    }
    // First every CONNECT is answered (CONNACK, or a close), so every
    // takeover has started; then each connection either stays open or is
    // closed, after at most a CONNACK and a DISCONNECT 0x8E.
    let mut seen_by = Vec::new();
    let mut closed_by = Vec::new();
    for c in &mut conns {
        let mut seen = Vec::new();
        let closed = loop {
            match c.recv(WAIT).await {
                raw::Recv::Packet(p) => {
                    let answered = matches!(p, Packet::ConnAck { .. });
                    seen.push(p);
                    if answered {
                        break false;
                    }
                }
                raw::Recv::Closed => break true,
                raw::Recv::TimedOut => panic!("no CONNACK and no close within {WAIT:?}"),
            }
        };
        seen_by.push(seen);
        closed_by.push(closed);
    }
    let mut open = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let mut seen = std::mem::take(&mut seen_by[i]);
        let closed = closed_by[i]
            || loop {
                match c.recv(Duration::from_millis(1500)).await {
                    raw::Recv::Packet(p) => seen.push(p),
                    raw::Recv::Closed => break true,
                    raw::Recv::TimedOut => break false,
                }
            };
        for p in &seen {
            assert!(
                matches!(
                    p,
                    Packet::ConnAck { code: 0, .. } | Packet::Disconnect { code: 0x8E, .. }
                ),
                "connection {i}: unexpected {p:?} in {seen:?}"
            );
        }
        if closed {
            assert!(
                !seen.iter().any(|p| matches!(p, Packet::ConnAck { .. }))
                    || seen
                        .iter()
                        .any(|p| matches!(p, Packet::Disconnect { code: 0x8E, .. })),
                "connection {i}: accepted, then closed without DISCONNECT 0x8E: {seen:?}"
            );
        } else {
            assert!(
                matches!(seen.as_slice(), [Packet::ConnAck { code: 0, .. }]),
                "connection {i} is open: {seen:?}"
            );
            open.push(c);
        }
    }
    assert_eq!(open.len(), 1, "exactly one connection survives");
    let survivor = &mut open[0];
    assert_eq!(
        survivor.subscribe(1, &[("race/t", 1)], &Props::new()).await,
        vec![1]
    );
    let mut publisher = broker.v5(&broker.id_on("race-pub", 0)).await;
    publisher
        .publish("race/t", Qos::AtLeastOnce, false, "to the survivor")
        .await;
    assert_eq!(survivor.expect_publish().await.payload, b"to the survivor");
}
