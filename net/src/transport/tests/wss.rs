//! WebSocket inside TLS, end to end: a tungstenite client over a rustls client,
//! against a `Transport` with both layers.

use bytes::{Bytes, BytesMut};
use rustls::version::{TLS12, TLS13};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use super::support::{
    client_config, server_config, tls_client, ws_connect, ws_settings, Pipe, Pki, Server,
    TlsClientStream, WsPair, LIMITS,
};
use crate::transport::{
    ClientCertMode, Transport, TransportError, TRANSMIT_PENDING_BYTES_MAX,
    WS_CONTROL_QUEUE_BYTES_MAX,
};

fn connect(
    pki: &Pki,
    version: &'static rustls::SupportedProtocolVersion,
    url: &str,
) -> Result<WsPair<TlsClientStream>, (tungstenite::Error, Server)> {
    let server = Transport::new(
        Some(server_config(pki, ClientCertMode::Required)),
        Some(&ws_settings()),
        LIMITS,
    )
    .unwrap();
    let stream = TlsClientStream {
        conn: tls_client(client_config(
            pki,
            &[version],
            Some(pki.client_cert("browser-1")),
        )),
        pipe: Pipe::default(),
    };
    ws_connect(stream, Server::new(server), url, "mqtt")
}

#[test]
fn wss_end_to_end() {
    for version in [&TLS13, &TLS12] {
        let pki = Pki::new("test CA");
        let mut p = connect(&pki, version, "wss://localhost/mqtt")
            .map_err(|(e, _)| e)
            .unwrap();
        assert!(p.server.transport.is_established());
        assert_eq!(
            p.response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "mqtt"
        );
        let identity = p.server.transport.peer_identity().unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("browser-1"));

        // Client to server, in small and large messages.
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for len in [1usize, 125, 126, 65_535, 65_536, 3] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            expected.extend_from_slice(&payload);
            wire.extend(p.client_frames(Message::Binary(Bytes::from(payload))));
        }
        for chunk in wire.chunks(7_000) {
            p.server.receive(chunk).unwrap();
        }
        assert_eq!(&p.server.app[..], &expected[..]);

        // Server to client.
        let big: Vec<u8> = (0..300_000).map(|i| (i % 253) as u8).collect();
        let mut out = p.server.send(b"small");
        out.extend(p.server.send(&big));
        let got = p.client_reads(&out);
        assert_eq!(
            got,
            vec![
                Message::Binary(Bytes::from_static(b"small")),
                Message::Binary(Bytes::from(big))
            ]
        );

        // Ping through both layers.
        let ping = p.client_frames(Message::Ping(Bytes::from_static(b"tls ping")));
        p.server.receive(&ping).unwrap();
        let out = p.server.transmit();
        assert_eq!(
            p.client_reads(&out),
            vec![Message::Pong(Bytes::from_static(b"tls ping"))]
        );

        // Server closes: close frame, then close_notify.
        let mut out = BytesMut::new();
        p.server.transport.close(&mut out);
        let got = p.client_reads(&out);
        assert!(
            matches!(got.first(), Some(Message::Close(Some(f))) if f.code == CloseCode::Normal),
            "{got:?}"
        );
        let reply = p.client.get_mut().pipe.tx.split();
        p.server.receive(&reply).unwrap();
        assert!(p.server.transport.is_closed());
    }
}

#[test]
fn wss_wrong_path_gets_404_through_tls() {
    let pki = Pki::new("test CA");
    let Err((err, server)) = connect(&pki, &TLS13, "wss://localhost/nope") else {
        panic!("upgrade accepted");
    };
    let tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err:?}");
    };
    assert_eq!(response.status().as_u16(), 404);
    assert!(!server.transport.is_established());
}

#[test]
fn wss_client_tls_close_notify_is_seen() {
    let pki = Pki::new("test CA");
    let mut p = connect(&pki, &TLS13, "wss://localhost/mqtt")
        .map_err(|(e, _)| e)
        .unwrap();
    let stream = p.client.get_mut();
    stream.conn.send_close_notify();
    let mut wire = Vec::new();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut wire).unwrap();
    }
    p.server.receive(&wire).unwrap();
    assert!(p.server.transport.is_closed());
}

#[test]
fn wss_ping_flood_stays_bounded() {
    let pki = Pki::new("test CA");
    let mut p = connect(&pki, &TLS13, "wss://localhost/mqtt")
        .map_err(|(e, _)| e)
        .unwrap();
    let mut wire = BytesMut::new();
    for i in 0..10_000u32 {
        wire.extend(p.client_frames(Message::Ping(Bytes::from(format!("{i:0>125}")))));
    }
    p.server.receive(&wire).unwrap();
    let out = p.server.transmit();
    // TLS adds about 22 bytes per record to the plaintext bound.
    assert!(
        out.len() <= TRANSMIT_PENDING_BYTES_MAX + 2 * WS_CONTROL_QUEUE_BYTES_MAX,
        "{} bytes queued",
        out.len()
    );
    let got = p.client_reads(&out);
    assert!(!got.is_empty() && got.iter().all(|m| matches!(m, Message::Pong(_))));
}

#[test]
fn wss_text_frame_is_rejected_with_close_through_tls() {
    let pki = Pki::new("test CA");
    let mut p = connect(&pki, &TLS13, "wss://localhost/mqtt")
        .map_err(|(e, _)| e)
        .unwrap();
    let wire = p.client_frames(Message::Text("not mqtt".into()));
    let err = p.server.receive(&wire).unwrap_err();
    assert!(matches!(err, TransportError::TextFrame), "{err:?}");
    let out = p.server.transmit();
    let got = p.client_reads(&out);
    assert!(
        matches!(got.first(), Some(Message::Close(Some(f))) if f.code == CloseCode::Unsupported),
        "{got:?}"
    );
}
