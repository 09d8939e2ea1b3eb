//! TLS alone: a rustls client against a `Transport` with TLS and no WebSocket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use rustls::version::{TLS12, TLS13};
use rustls::{Error as TlsError, ProtocolVersion};

use super::support::{client_config, server_config, tls_client, Pki, PumpError, TlsPair, LIMITS};
use crate::transport::{ClientCertMode, PeerIdentity, Transport, TransportError};

fn pair(
    pki: &Pki,
    mode: ClientCertMode,
    versions: &[&'static rustls::SupportedProtocolVersion],
    auth: Option<super::support::ClientAuth>,
) -> TlsPair {
    let server = Transport::new(Some(server_config(pki, mode)), None, LIMITS).unwrap();
    TlsPair::new(tls_client(client_config(pki, versions, auth)), server)
}

/// Bytes that differ at every position, so a reordering or a lost chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn data_both_ways(p: &mut TlsPair, len: usize) {
    let up = pattern(len, 1);
    p.client_sends(&up);
    assert_eq!(&p.server.app[..], &up[..]);
    p.server.app.clear();
    let down = pattern(len, 2);
    let records = p.server.send(&down);
    p.deliver(&records).unwrap();
    assert_eq!(p.client_app, down);
    p.client_app.clear();
}

#[test]
fn tls13_handshake_data_both_ways_and_close_notify() {
    let pki = Pki::new("test CA");
    let mut p = pair(&pki, ClientCertMode::None, &[&TLS13], None);
    assert!(!p.server.transport.is_established());
    let mut out = BytesMut::new();
    assert!(matches!(
        p.server.transport.send(b"early", &mut out),
        Err(TransportError::NotEstablished)
    ));
    p.pump().unwrap();
    assert!(p.server.transport.is_established());
    assert_eq!(p.client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert!(p.server.transport.peer_identity().is_none());
    data_both_ways(&mut p, 1000);

    // Client closes: the server sees it at the transport level.
    p.client.send_close_notify();
    p.pump().unwrap();
    assert!(p.server.transport.is_closed());
}

#[test]
fn tls12_handshake_data_both_ways_and_server_close() {
    let pki = Pki::new("test CA");
    let mut p = pair(&pki, ClientCertMode::None, &[&TLS12], None);
    p.pump().unwrap();
    assert!(p.server.transport.is_established());
    assert_eq!(p.client.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    data_both_ways(&mut p, 1000);

    // Server closes: the client reads a clean end, and the server sends no more.
    let mut out = BytesMut::new();
    p.server.transport.close(&mut out);
    p.deliver(&out).unwrap();
    let mut rest = Vec::new();
    assert_eq!(p.client.reader().read_to_end(&mut rest).unwrap(), 0);
    assert!(matches!(
        p.server.transport.send(b"late", &mut out),
        Err(TransportError::Closed)
    ));
}

#[test]
fn tls_large_data_both_ways_after_moving_to_another_thread() {
    let pki = Pki::new("test CA");
    let mut p = pair(&pki, ClientCertMode::None, &[&TLS13], None);
    p.pump().unwrap();
    // The broker hands a connection to another shard after CONNECT.
    let mut p = std::thread::spawn(move || {
        data_both_ways(&mut p, 3 << 20);
        p
    })
    .join()
    .unwrap();
    data_both_ways(&mut p, 1);
}

#[test]
fn tls_many_small_writes_arrive_in_order() {
    let pki = Pki::new("test CA");
    let mut p = pair(&pki, ClientCertMode::None, &[&TLS13], None);
    p.pump().unwrap();
    let mut expected = Vec::new();
    let mut out = BytesMut::new();
    for i in 0..500u32 {
        let chunk = pattern((i % 37) as usize + 1, i as u8);
        p.server.transport.send(&chunk, &mut out).unwrap();
        expected.extend_from_slice(&chunk);
    }
    p.deliver(&out).unwrap();
    assert_eq!(p.client_app, expected);
}

#[test]
fn client_trusting_another_ca_fails() {
    let pki = Pki::new("test CA");
    let other = Pki::new("other CA");
    let server = Transport::new(
        Some(server_config(&pki, ClientCertMode::None)),
        None,
        LIMITS,
    )
    .unwrap();
    let mut p = TlsPair::new(tls_client(client_config(&other, &[&TLS13], None)), server);
    let err = p.pump().unwrap_err();
    assert!(
        matches!(err, PumpError::Client(TlsError::InvalidCertificate(_))),
        "{err:?}"
    );
    // The client's alert ends the server side too.
    let mut alert = Vec::new();
    while p.client.wants_write() {
        p.client.write_tls(&mut alert).unwrap();
    }
    let err = p.server.receive(&alert).unwrap_err();
    assert!(
        matches!(err, TransportError::Tls(TlsError::AlertReceived(_))),
        "{err:?}"
    );
    assert!(!p.server.transport.is_established());
    assert!(matches!(
        p.server.receive(b"more"),
        Err(TransportError::Failed)
    ));
}

#[test]
fn mtls_required_without_client_cert_fails() {
    for version in [&TLS13, &TLS12] {
        let pki = Pki::new("test CA");
        let mut p = pair(&pki, ClientCertMode::Required, &[version], None);
        let err = p.pump().unwrap_err();
        assert!(
            matches!(
                err,
                PumpError::Server(TransportError::Tls(TlsError::NoCertificatesPresented))
            ),
            "{err:?}"
        );
        assert!(!p.server.transport.is_established());
        assert!(p.server.transport.peer_identity().is_none());
    }
}

fn expected_identity() -> PeerIdentity {
    PeerIdentity {
        common_name: Some("device-17".into()),
        subject_alt_names: vec![
            "device-17.example".into(),
            "ops@example.com".into(),
            "urn:ringmq:device:17".into(),
        ],
    }
}

#[test]
fn mtls_required_with_client_cert_gives_identity() {
    for version in [&TLS13, &TLS12] {
        let pki = Pki::new("test CA");
        let auth = pki.client_cert("device-17");
        let mut p = pair(&pki, ClientCertMode::Required, &[version], Some(auth));
        p.pump().unwrap();
        assert!(p.server.transport.is_established());
        assert_eq!(
            p.server.transport.peer_identity(),
            Some(&expected_identity())
        );
        data_both_ways(&mut p, 100);
    }
}

#[test]
fn mtls_optional_connects_with_and_without_cert() {
    let pki = Pki::new("test CA");
    let mut without = pair(&pki, ClientCertMode::Optional, &[&TLS13], None);
    without.pump().unwrap();
    assert!(without.server.transport.is_established());
    assert!(without.server.transport.peer_identity().is_none());
    data_both_ways(&mut without, 100);

    let auth = pki.client_cert("device-17");
    let mut with = pair(&pki, ClientCertMode::Optional, &[&TLS13], Some(auth));
    with.pump().unwrap();
    assert_eq!(
        with.server.transport.peer_identity(),
        Some(&expected_identity())
    );
}

#[test]
fn mtls_optional_refuses_a_cert_from_another_ca() {
    let pki = Pki::new("test CA");
    let other = Pki::new("other CA");
    let auth = other.client_cert("intruder");
    let mut p = pair(&pki, ClientCertMode::Optional, &[&TLS13], Some(auth));
    let err = p.pump().unwrap_err();
    assert!(
        matches!(
            err,
            PumpError::Server(TransportError::Tls(TlsError::InvalidCertificate(_)))
        ),
        "{err:?}"
    );
    assert!(p.server.transport.peer_identity().is_none());
}

/// A deterministic byte source, so a failure names the seed that caused it.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn tls_garbage_is_an_error_not_a_panic() {
    let pki = Pki::new("test CA");
    let config = server_config(&pki, ClientCertMode::None);
    let mut errors = 0;
    for seed in 0..200 {
        let mut t = Transport::new(Some(config.clone()), None, LIMITS).unwrap();
        let mut app = BytesMut::new();
        let mut result = Ok(());
        for chunk in noise(seed, 64 * 1024).chunks(4096) {
            let mut wire = BytesMut::from(chunk);
            result = t.receive(&mut wire, &mut app);
            assert!(wire.is_empty(), "seed {seed}");
            if result.is_err() {
                break;
            }
        }
        assert!(app.is_empty(), "seed {seed}");
        assert!(!t.is_established(), "seed {seed}");
        errors += usize::from(result.is_err());
        let mut out = BytesMut::new();
        t.poll_transmit(&mut out);
        assert!(out.len() < 1024, "seed {seed}: only an alert goes out");
    }
    assert_eq!(errors, 200, "64 KiB of noise is never a valid handshake");

    // An HTTP request on the TLS port: refused at once.
    let mut t = Transport::new(Some(config), None, LIMITS).unwrap();
    let mut wire = BytesMut::from(&b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    assert!(t.receive(&mut wire, &mut BytesMut::new()).is_err());
}

#[test]
fn tls_over_loopback_tcp() {
    let pki = Pki::new("test CA");
    let config = server_config(&pki, ClientCertMode::None);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut t = Transport::new(Some(config), None, LIMITS).unwrap();
        let mut app = BytesMut::new();
        let mut buf = [0u8; 4096];
        // Echo upper-cased until the client's close_notify.
        while !t.is_closed() {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0, "client went away without close_notify");
            let mut wire = BytesMut::from(&buf[..n]);
            t.receive(&mut wire, &mut app).unwrap();
            let mut out = BytesMut::new();
            t.poll_transmit(&mut out);
            if !app.is_empty() {
                t.send(&app.split().to_ascii_uppercase(), &mut out).unwrap();
            }
            socket.write_all(&out).unwrap();
        }
        let mut out = BytesMut::new();
        t.close(&mut out);
        socket.write_all(&out).unwrap();
    });
    let client = tls_client(client_config(&pki, &[&TLS13], None));
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stream = rustls::StreamOwned::new(client, socket);
    stream.write_all(b"hello over tcp").unwrap();
    let mut reply = [0u8; 14];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HELLO OVER TCP");
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.join().unwrap();
}
