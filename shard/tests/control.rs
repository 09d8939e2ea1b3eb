//! The admin handle against real shards: list, inspect and kick a client connected
//! over a real socket, reload limits, stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use futures_lite::future::block_on;
use ringmq_net::PortReservation;
use ringmq_shard::{BrokerConfig, Limits, ListenerConfig, Security, SecurityRules};

fn connect_v5(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    // And one subscription, to show up in the listing.
    let filter = b"a/+";
    let sub = [
        &[
            0x82,
            3 + 2 + filter.len() as u8 + 1,
            0,
            1,
            0,
            0,
            filter.len() as u8,
        ][..],
        filter,
        &[1],
    ]
    .concat();
    frame.extend_from_slice(&sub);
    stream.write_all(&frame).unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    let mut rest = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut rest).unwrap();
    assert_eq!((header[0], rest[1]), (0x20, 0), "CONNACK success");
    let mut suback = [0u8; 6];
    stream.read_exact(&mut suback).unwrap();
    assert_eq!(suback[0], 0x90);
    stream
}

#[test]
fn list_inspect_kick_reload_and_stop() {
    let reservation = PortReservation::new(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = reservation.addr();
    let running = ringmq_shard::start(BrokerConfig {
        listeners: vec![ListenerConfig::tcp(addr)],
        security: Security::new(SecurityRules::open(), None),
        shards: 2,
        cpus: Vec::new(),
        limits: Limits::default(),
        sys_interval: None,
        shutdown_timeout: Duration::from_secs(2),
        idle_spin: Duration::from_micros(100),
    })
    .unwrap();
    reservation.release();
    let handle = running.handle();
    assert!(handle.is_ready());
    assert_eq!(handle.shards(), 2);

    let mut client = connect_v5(addr, "admin-target");
    let clients = block_on(handle.clients(100)).unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0].client_id, "admin-target");
    assert!(clients[0].connected);
    assert_eq!(clients[0].protocol, "5.0");
    assert_eq!(clients[0].shard, ringmq_shard::owner_of(b"admin-target", 2));

    let detail = block_on(handle.client("admin-target")).unwrap().unwrap();
    assert_eq!(detail.subscriptions.len(), 1);
    assert_eq!(
        (
            detail.subscriptions[0].filter.as_str(),
            detail.subscriptions[0].qos
        ),
        ("a/+", 1)
    );
    assert_eq!(block_on(handle.client("nobody")).unwrap(), None);
    let subscriptions = block_on(handle.subscriptions(10)).unwrap();
    assert_eq!(subscriptions.len(), 1);

    let limits = Limits {
        connections_max: 1,
        ..Limits::default()
    };
    block_on(handle.reload_limits(limits)).unwrap();

    assert!(block_on(handle.kick("admin-target")).unwrap());
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, [0xE0, 0x02, 0x98, 0x00], "DISCONNECT 0x98 then close");
    assert!(
        !block_on(handle.kick("admin-target")).unwrap(),
        "already gone"
    );

    // The reloaded connection limit (1) is in force for new connections.
    let _first = connect_v5(addr, "after-reload-1");
    let mut second = TcpStream::connect(addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x'];
    second
        .write_all(&[&[0x10, body.len() as u8][..], &body].concat())
        .unwrap();
    let mut connack = Vec::new();
    second.read_to_end(&mut connack).unwrap();
    assert_eq!(
        connack.get(3),
        Some(&0x97),
        "quota exceeded: {connack:02X?}"
    );

    running.stopper().stop();
    running.wait();
}
