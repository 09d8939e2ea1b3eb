//! The admin endpoint of a real broker: `/metrics` checked by promtool and moving
//! with real MQTT traffic (mosquitto clients), the bearer token, the probes, and
//! the JSON API listing, inspecting and disconnecting a real client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod admin_harness;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Instant;

use admin_harness::{
    eventually, http, metric_sum, mqtt_connect, mqtt_subscribe, read_packet, run_with_input, tool,
    Ringmq, WAIT,
};

#[test]
fn metrics_pass_promtool_and_follow_real_traffic() {
    let promtool = tool("promtool", "prometheus");
    let mosquitto_sub = tool("mosquitto_sub", "mosquitto-clients");
    let mosquitto_pub = tool("mosquitto_pub", "mosquitto-clients");
    let broker = Ringmq::start(&[], &[]);
    let port = broker.mqtt.port().to_string();

    let before = broker.get("/metrics", None);
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        before.headers
    );
    let received_before = metric_sum(&before.body, "ringmq_messages_received_total", &[]);

    let mut subscriber = Command::new(mosquitto_sub)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "metrics-sub",
            "-t",
            "metrics/#",
        ])
        .args(["-q", "1", "-C", "1", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the subscription shows in the admin API", || {
        let subs = broker.get("/api/v1/subscriptions", None).json();
        (subs["count"] == 1).then_some(())
    });
    let published = Command::new(mosquitto_pub)
        .args(["-h", "127.0.0.1", "-p", &port, "-i", "metrics-pub"])
        .args(["-t", "metrics/a", "-m", "hello", "-q", "1"])
        .status()
        .unwrap();
    assert!(published.success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = subscriber.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mosquitto_sub got nothing");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());

    let after = eventually("the sent counter moves", || {
        let text = broker.get("/metrics", None).body;
        (metric_sum(&text, "ringmq_messages_sent_total", &["qos=\"1\""]) >= 1.0).then_some(text)
    });
    assert!(
        metric_sum(&after, "ringmq_messages_received_total", &["qos=\"1\""])
            >= received_before + 1.0
    );
    assert!(metric_sum(&after, "ringmq_connections_total", &[]) >= 2.0);
    // The first PUBLISH a shard reads is a latency sample; the subscriber's shard
    // records it once its copy is written.
    let latency = eventually("the delivery latency sample is recorded", || {
        let text = broker.get("/metrics", None).body;
        (metric_sum(&text, "ringmq_delivery_latency_seconds_count", &[]) >= 1.0).then_some(text)
    });
    let samples = metric_sum(&latency, "ringmq_delivery_latency_seconds_count", &[]);
    assert_eq!(
        metric_sum(
            &latency,
            "ringmq_delivery_latency_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        samples
    );
    let seconds = metric_sum(&latency, "ringmq_delivery_latency_seconds_sum", &[]);
    assert!(seconds > 0.0 && seconds < 20.0 * samples, "{latency}");
    assert!(metric_sum(&after, "ringmq_received_bytes_total", &[]) > 0.0);
    assert!(metric_sum(&after, "ringmq_sent_bytes_total", &[]) > 0.0);
    assert!(metric_sum(&after, "ringmq_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(metric_sum(&after, "ringmq_connections_max", &[]), 100_000.0);
    assert!(after.contains("ringmq_build_info{version=\""), "{after}");
    // One sample per shard, labelled.
    assert!(after.contains("ringmq_sessions{shard=\"0\"}"), "{after}");
    assert!(after.contains("ringmq_sessions{shard=\"1\"}"), "{after}");
    assert!(after.contains("ringmq_messages_dropped_total{shard=\"0\",reason=\"no_subscribers\"}"));
    assert!(after.contains("ringmq_connections_rejected_total{shard=\"1\",reason=\"limit\"}"));
    for line in after
        .lines()
        .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter"))
    {
        assert!(line.contains("_total "), "counters end in _total: {line}");
    }

    let checked = run_with_input(Command::new(&promtool).args(["check", "metrics"]), &after);
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Prometheus asks for OpenMetrics and gets it.
    let openmetrics = http(
        broker.admin(),
        "GET",
        "/metrics",
        None,
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    );
    assert!(openmetrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(openmetrics.body.ends_with("# EOF\n"));
}

#[test]
fn a_token_guards_everything_but_the_probes() {
    let broker = Ringmq::start(&[], &[("RINGMQ_ADMIN__TOKEN", "s3cret-token")]);
    assert_eq!(broker.get("/health", None).status, 200);
    assert_eq!(broker.get("/ready", None).status, 200);
    for path in [
        "/metrics",
        "/api/v1/broker",
        "/api/v1/clients",
        "/api/v1/shards",
    ] {
        let refused = broker.get(path, None);
        assert_eq!(refused.status, 401, "{path} without a token");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
        assert_eq!(broker.get(path, Some("wrong-token")).status, 401, "{path}");
        assert_eq!(broker.get(path, Some("s3cret-token")).status, 200, "{path}");
    }
    let basic = http(
        broker.admin(),
        "GET",
        "/metrics",
        None,
        &[("Authorization", "Basic czNjcmV0LXRva2Vu")],
    );
    assert_eq!(basic.status, 401, "only the Bearer scheme");
}

#[test]
fn clients_are_listed_inspected_and_kicked_over_http() {
    let broker = Ringmq::start(
        &[],
        &[
            ("RINGMQ_NODE_ID", "edge-7"),
            ("RINGMQ_ADVERTISE", "edge-7.example.net:1883"),
        ],
    );
    assert_eq!(broker.get("/ready", None).status, 200);
    let (mut client, code) = mqtt_connect(broker.mqtt, "admin-kick-me", 5);
    assert_eq!(code, 0);
    mqtt_subscribe(&mut client, "kick/+/state", 1, 5);

    let list = broker.get("/api/v1/clients", None).json();
    assert_eq!(list["limit"], 1000, "default limit");
    let entry = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "admin-kick-me")
        .cloned()
        .unwrap_or_else(|| panic!("client missing from {list}"));
    assert_eq!(entry["connected"], true);
    assert_eq!(entry["protocol"], "5.0");
    assert_eq!(entry["subscriptions"], 1);
    assert!(entry["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    let one = broker.get("/api/v1/clients/admin-kick-me", None);
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["client"]["client_id"], "admin-kick-me");
    assert_eq!(one["subscriptions"][0]["filter"], "kick/+/state");
    assert_eq!(one["subscriptions"][0]["qos"], 1);

    let subs = broker.get("/api/v1/subscriptions?limit=10", None).json();
    assert_eq!(subs["subscriptions"][0]["client_id"], "admin-kick-me");

    let shards = broker.get("/api/v1/shards", None).json();
    let shards = shards.as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let connections: u64 = shards
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(connections, 1);

    let about = broker.get("/api/v1/broker", None).json();
    assert_eq!(about["shards"], 2);
    assert_eq!(about["ready"], true);
    assert_eq!(about["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(about["node_id"], "edge-7");
    assert_eq!(about["advertise"], "edge-7.example.net:1883");
    let metrics = broker.get("/metrics", None).body;
    assert!(
        metrics.contains("node_id=\"edge-7\""),
        "ringmq_build_info names the node"
    );
    assert_eq!(about["totals"]["connections"], 1);

    let kicked = http(
        broker.admin(),
        "DELETE",
        "/api/v1/clients/admin-kick-me",
        None,
        &[],
    );
    assert_eq!(kicked.status, 204, "{}", kicked.body);
    // MQTT 5: DISCONNECT 0x98 (Administrative action), then the close.
    let (kind, body) = read_packet(&mut client).expect("a DISCONNECT");
    assert_eq!(kind, 0xE0);
    assert_eq!(body.first(), Some(&0x98));
    assert!(
        read_packet(&mut client).is_none(),
        "closed after DISCONNECT"
    );

    let again = http(
        broker.admin(),
        "DELETE",
        "/api/v1/clients/admin-kick-me",
        None,
        &[],
    );
    assert_eq!(again.status, 404);
    assert!(again.json()["error"]
        .as_str()
        .unwrap()
        .contains("not connected"));
    assert_eq!(broker.get("/api/v1/clients/nobody-here", None).status, 404);
    assert_eq!(broker.get("/api/v1/clients?limit=0", None).status, 400);
    assert_eq!(broker.get("/api/v1/nothing", None).status, 404);
}

#[test]
fn an_admin_endpoint_off_loopback_needs_a_token() {
    let refused = Ringmq::try_start(&["--admin-listen", "0.0.0.0:0"], &[])
        .err()
        .unwrap();
    assert!(
        refused.contains("`admin.listen` = \"0.0.0.0:0\""),
        "{refused}"
    );
    assert!(refused.contains("admin.token"), "{refused}");

    let broker = Ringmq::start(
        &["--admin-listen", "0.0.0.0:0"],
        &[("RINGMQ_ADMIN__TOKEN", "long-enough-token")],
    );
    assert!(broker.admin.is_some());
}

#[test]
fn the_ready_line_names_the_admin_endpoint_only_when_it_is_on() {
    let on = Ringmq::start(&[], &[]);
    let line = &on.ready_line;
    assert!(
        line.starts_with("ringmq ready listeners=127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains(" shards=2 admin=127.0.0.1:"), "{line}");
    assert!(on.admin().port() != 0);

    let off = Ringmq::start(&["--admin-listen", ""], &[]);
    assert!(off.admin.is_none(), "{}", off.ready_line);
    assert!(off.ready_line.ends_with(" shards=2"), "{}", off.ready_line);
}

#[test]
fn a_taken_admin_address_stops_the_start_unless_it_is_the_default() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let refused = Ringmq::try_start(&["--admin-listen", &addr], &[])
        .err()
        .unwrap();
    assert!(
        refused.contains(&format!("the admin endpoint cannot listen on {addr}")),
        "{refused}"
    );

    // The default address, held here (or by someone else on this machine): the
    // broker serves MQTT without the admin endpoint and says why.
    let _default = TcpListener::bind("127.0.0.1:9090");
    let broker = Ringmq::start(&["--admin-listen", "127.0.0.1:9090"], &[]);
    assert!(broker.admin.is_none(), "{}", broker.ready_line);
    broker.wait_for_log(&["default admin address is taken"]);
    let (_client, code) = mqtt_connect(broker.mqtt, "still-serving", 4);
    assert_eq!(code, 0);
}

/// A QoS 1 PUBLISH (MQTT 3.1.1) and its PUBACK.
fn publish_qos1(stream: &mut std::net::TcpStream, topic: &str, packet_id: u16) {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(b"payload");
    admin_harness::write_packet(stream, 0x32, &body);
    let (kind, _) = read_packet(stream).expect("a PUBACK");
    assert_eq!(kind, 0x40);
}

#[test]
fn inflight_queued_and_ring_gauges_follow_the_sessions() {
    let broker = Ringmq::start(&[], &[]);
    let (mut publisher, code) = mqtt_connect(broker.mqtt, "gauge-pub", 4);
    assert_eq!(code, 0);

    // A subscriber that never acknowledges: what it was sent stays inflight.
    let (mut silent, code) = mqtt_connect(broker.mqtt, "gauge-silent", 4);
    assert_eq!(code, 0);
    mqtt_subscribe(&mut silent, "inflight/#", 1, 4);

    // A persistent session that goes away: what it is sent is queued.
    let mut offline = std::net::TcpStream::connect(broker.mqtt).unwrap();
    offline.set_read_timeout(Some(WAIT)).unwrap();
    let id = b"gauge-offline";
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id);
    admin_harness::write_packet(&mut offline, 0x10, &connect);
    assert_eq!(read_packet(&mut offline).unwrap().0, 0x20);
    mqtt_subscribe(&mut offline, "queued/#", 1, 4);
    drop(offline);
    eventually("the persistent session is offline", || {
        let client = broker.get("/api/v1/clients/gauge-offline", None).json();
        (client["client"]["connected"] == false).then_some(())
    });

    publish_qos1(&mut publisher, "inflight/a", 1);
    publish_qos1(&mut publisher, "inflight/b", 2);
    for packet_id in 3..6 {
        publish_qos1(&mut publisher, "queued/x", packet_id);
    }
    for _ in 0..2 {
        let (kind, _) = read_packet(&mut silent).expect("a PUBLISH for the silent client");
        assert_eq!(kind & 0xF0, 0x30);
    }
    let text = eventually("the gauges count inflight 2 and queued 3", || {
        let text = broker.get("/metrics", None).body;
        let inflight = metric_sum(&text, "ringmq_messages_inflight", &[]);
        let queued = metric_sum(&text, "ringmq_messages_queued", &[]);
        (inflight == 2.0 && queued == 3.0).then_some(text)
    });
    // Nothing waits between shards once the traffic is over: one series per shard.
    assert!(
        text.contains("ringmq_ring_backlog{shard=\"0\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ringmq_ring_backlog{shard=\"1\"} 0"),
        "{text}"
    );
}
