//! WebSocket alone: a tungstenite client against a `Transport` with WebSocket and
//! no TLS.

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

use super::support::{ws_connect, ws_settings, Pipe, Server, WsPair, MESSAGE_MAX};
use crate::transport::{
    Transport, TransportError, TransportLimits, TRANSMIT_PENDING_BYTES_MAX,
    WS_CONTROL_QUEUE_BYTES_MAX, WS_REQUEST_BYTES_MAX,
};

const URL: &str = "ws://localhost/mqtt";

fn server(message_max: usize) -> Server {
    Server::new(
        Transport::new(None, Some(&ws_settings()), TransportLimits { message_max }).unwrap(),
    )
}

fn connect(protocols: &str) -> WsPair<Pipe> {
    ws_connect(Pipe::default(), server(MESSAGE_MAX), URL, protocols)
        .map_err(|(e, _)| e)
        .unwrap()
}

fn binary(messages: &[Message]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| match m {
            Message::Binary(b) => b.to_vec(),
            other => panic!("expected binary, got {other:?}"),
        })
        .collect()
}

fn close_code(messages: &[Message]) -> Option<CloseCode> {
    messages.iter().find_map(|m| match m {
        Message::Close(frame) => frame.as_ref().map(|f| f.code),
        _ => None,
    })
}

/// The status line of a refusal, as the client saw it.
fn refused_status(url: &str, protocols: &str) -> (u16, TransportError) {
    let (err, mut server) = match ws_connect(Pipe::default(), server(MESSAGE_MAX), url, protocols) {
        Ok(_) => panic!("upgrade accepted"),
        Err(e) => e,
    };
    let tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err:?}");
    };
    assert!(!server.transport.is_established());
    let again = server.receive(b"more").unwrap_err();
    assert!(matches!(again, TransportError::Failed), "{again:?}");
    (response.status().as_u16(), again)
}

#[test]
fn handshake_selects_mqtt_subprotocol() {
    let mut p = connect("mqtt");
    assert!(p.server.transport.is_established());
    assert_eq!(
        p.response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    // Offered among others, in any order, it is still chosen.
    let p2 = connect("wamp, mqtt");
    assert_eq!(
        p2.response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    let wire = p.client_frames(Message::Binary(Bytes::from_static(b"\x10\x00")));
    p.server.receive(&wire).unwrap();
    assert_eq!(&p.server.app[..], b"\x10\x00");
}

#[test]
fn handshake_without_subprotocol_is_accepted() {
    let p = connect("");
    assert!(p.server.transport.is_established());
    assert!(p.response.headers().get("Sec-WebSocket-Protocol").is_none());
}

#[test]
fn handshake_offering_only_other_subprotocols_is_refused() {
    assert_eq!(refused_status(URL, "mqttv3.1, wamp").0, 400);
}

#[test]
fn wrong_path_gets_404_then_error() {
    assert_eq!(refused_status("ws://localhost/other", "mqtt").0, 404);
    assert_eq!(refused_status("ws://localhost/mqtt/x", "mqtt").0, 404);
}

#[test]
fn query_string_is_ignored() {
    let p = ws_connect(
        Pipe::default(),
        server(MESSAGE_MAX),
        "ws://localhost/mqtt?client=1",
        "mqtt",
    );
    assert!(p.is_ok());
}

fn raw_upgrade(request: &str) -> (Result<(), TransportError>, String) {
    let mut s = server(MESSAGE_MAX);
    let result = s.receive(request.as_bytes());
    let answer = String::from_utf8(s.transmit().to_vec()).unwrap();
    (result, answer)
}

#[test]
fn requests_that_are_not_upgrades_get_http_errors() {
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let cases = [
        ("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 400),
        (
            format!("POST /mqtt HTTP/1.1\r\nHost: x\r\n{upgrade}{key}\r\n"),
            405,
        ),
        (
            format!("GET /mqtt HTTP/1.1\r\nHost: x\r\n{upgrade}{key}\r\n"),
            426,
        ),
        (
            format!(
                "GET /mqtt HTTP/1.0\r\nHost: x\r\n{upgrade}Sec-WebSocket-Version: 13\r\n{key}\r\n"
            ),
            400,
        ),
        ("\u{1}\u{2}garbage\r\n\r\n".to_string(), 400),
    ];
    for (request, status) in cases {
        let (result, answer) = raw_upgrade(&request);
        assert!(
            matches!(result, Err(TransportError::UpgradeRefused { status: s, .. }) if s == status),
            "{request:?}: {result:?}"
        );
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {answer:?}"
        );
        assert!(answer.contains("Connection: close\r\n"));
    }
    let (_, answer) = raw_upgrade(&format!(
        "GET /mqtt HTTP/1.1\r\nHost: x\r\n{upgrade}{key}\r\n"
    ));
    assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"));
    // Bare line feeds end the headers as well as CRLF does.
    let (result, answer) = raw_upgrade(
        "GET /mqtt HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: websocket\n\
         Sec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\n",
    );
    result.unwrap();
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer:?}");
}

#[test]
fn endless_request_is_cut_at_its_limit() {
    let mut s = server(MESSAGE_MAX);
    let header =
        b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut fed = 0;
    s.receive(b"GET /mqtt HTTP/1.1\r\n").unwrap();
    let err = loop {
        // Without the limit this would go on for the whole megabyte.
        assert!(fed < 1 << 20, "no limit after {fed} bytes");
        match s.receive(header) {
            Ok(()) => fed += header.len(),
            Err(e) => break e,
        }
    };
    assert!(fed <= WS_REQUEST_BYTES_MAX, "cut after {fed} bytes");
    assert!(
        matches!(err, TransportError::UpgradeRefused { status: 431, .. }),
        "{err:?}"
    );
    assert!(String::from_utf8_lossy(&s.transmit()).starts_with("HTTP/1.1 431 "));
}

#[test]
fn request_split_at_every_byte_and_sent_with_frames() {
    let request = "GET /mqtt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Protocol: mqtt\r\n\r\n";
    let mut s = server(MESSAGE_MAX);
    for b in request.as_bytes() {
        assert!(!s.transport.is_established());
        s.receive(std::slice::from_ref(b)).unwrap();
    }
    assert!(s.transport.is_established());
    let answer = String::from_utf8(s.transmit().to_vec()).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));

    // A client that sends its first frames with the request, without waiting for
    // the 101, is served too.
    let mut s = server(MESSAGE_MAX);
    let mut wire = request.as_bytes().to_vec();
    wire.extend(masked_frame(0x2, b"first"));
    wire.extend(masked_frame(0x2, b" second"));
    s.receive(&wire).unwrap();
    assert_eq!(&s.app[..], b"first second");
}

/// A final client frame of `opcode` (payload under 126 bytes), masked.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

#[test]
fn binary_client_to_server_split_at_every_byte_boundary() {
    let mut p = connect("mqtt");
    // 300 bytes: a 16-bit length, so the split also cuts the extended header.
    for len in [5usize, 300] {
        let payload = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
        for split in 0..=len + 8 {
            let wire = p.client_frames(Message::Binary(payload.clone()));
            let split = split.min(wire.len());
            p.server.receive(&wire[..split]).unwrap();
            if split < wire.len() {
                assert!(p.server.app.is_empty(), "a partial frame gives nothing");
            }
            p.server.receive(&wire[split..]).unwrap();
            assert_eq!(p.server.app.split().freeze(), payload, "split at {split}");
        }
    }
}

#[test]
fn binary_server_to_client_split_at_every_byte_boundary() {
    let mut p = connect("mqtt");
    for len in [5usize, 300, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let wire = p.server.send(&payload);
        let splits: Vec<usize> = if len <= 300 {
            (0..=wire.len()).collect()
        } else {
            vec![0, 1, 2, 5, 9, 10, 11, wire.len() / 2, wire.len()]
        };
        for split in splits {
            let mut got = p.client_reads(&wire[..split]);
            if split < wire.len() {
                assert!(got.is_empty());
            }
            got.extend(p.client_reads(&wire[split..]));
            assert_eq!(binary(&got), payload, "len {len}, split at {split}");
        }
    }
}

#[test]
fn frames_and_mqtt_packets_need_not_line_up() {
    let mut p = connect("mqtt");
    // Two "packets" in one frame, one "packet" over two frames, two frames in one
    // read, a fragmented message: the application sees one ordered byte stream.
    let mut wire = p.client_frames(Message::Binary(Bytes::from_static(b"AAAA|BB")));
    wire.extend(p.client_frames(Message::Binary(Bytes::from_static(b"BB|"))));
    wire.extend(p.client_frames(Message::Frame(Frame::message(
        &b"CC"[..],
        OpCode::Data(Data::Binary),
        false,
    ))));
    wire.extend(p.client_frames(Message::Frame(Frame::message(
        &b"CC|"[..],
        OpCode::Data(Data::Continue),
        true,
    ))));
    p.server.receive(&wire).unwrap();
    assert_eq!(&p.server.app[..], b"AAAA|BBBB|CCCC|");
}

#[test]
fn ping_gets_pong() {
    let mut p = connect("mqtt");
    let wire = p.client_frames(Message::Ping(Bytes::from_static(b"are you there")));
    p.server.receive(&wire).unwrap();
    assert!(p.server.app.is_empty());
    let out = p.server.transmit();
    let got = p.client_reads(&out);
    assert_eq!(
        got,
        vec![Message::Pong(Bytes::from_static(b"are you there"))]
    );
}

#[test]
fn ping_flood_without_transmit_stays_bounded() {
    let mut p = connect("mqtt");
    let mut wire = BytesMut::new();
    for i in 0..20_000u32 {
        let payload = format!("{i:0>125}");
        wire.extend(p.client_frames(Message::Ping(Bytes::from(payload))));
    }
    // 2.6 MB of pings; their pongs would be as much.
    p.server.receive(&wire).unwrap();
    let out = p.server.transmit();
    assert!(
        out.len() <= TRANSMIT_PENDING_BYTES_MAX + WS_CONTROL_QUEUE_BYTES_MAX + 127,
        "{} bytes queued",
        out.len()
    );
    let got = p.client_reads(&out);
    assert!(got.iter().all(|m| matches!(m, Message::Pong(_))));
    // Coalesced: the last ping is answered, as RFC 6455 §5.5.3 allows.
    let last = p.server.transmit();
    let last = p.client_reads(&last);
    let answered: Vec<_> = got.iter().chain(last.iter()).collect();
    assert!(
        matches!(answered.last(), Some(Message::Pong(b)) if b.starts_with(b"0000") && b.ends_with(b"19999"))
    );
    // Still usable.
    let wire = p.client_frames(Message::Binary(Bytes::from_static(b"after")));
    p.server.receive(&wire).unwrap();
    assert_eq!(&p.server.app[..], b"after");
}

#[test]
fn close_from_client() {
    let mut p = connect("mqtt");
    p.client.close(None).unwrap();
    let wire = p.client.get_mut().tx.split();
    p.server.receive(&wire).unwrap();
    assert!(p.server.transport.is_closed());
    let out = p.server.transmit();
    let got = p.client_reads(&out);
    assert!(matches!(got.as_slice(), [Message::Close(_)]), "{got:?}");
    let mut out = BytesMut::new();
    assert!(matches!(
        p.server.transport.send(b"late", &mut out),
        Err(TransportError::Closed)
    ));
    // Anything after the close is dropped.
    p.server.receive(&masked_frame(0x2, b"ignored")).unwrap();
    assert!(p.server.app.is_empty());
}

#[test]
fn close_from_server() {
    let mut p = connect("mqtt");
    let mut out = BytesMut::new();
    p.server.transport.close(&mut out);
    let got = p.client_reads(&out);
    assert_eq!(close_code(&got), Some(CloseCode::Normal));
    assert!(!p.server.transport.is_closed());
    // The client's reply completes the close.
    let reply = p.client.get_mut().tx.split();
    p.server.receive(&reply).unwrap();
    assert!(p.server.transport.is_closed());
}

#[test]
fn text_frame_is_rejected() {
    let mut p = connect("mqtt");
    let wire = p.client_frames(Message::Text("hello".into()));
    let err = p.server.receive(&wire).unwrap_err();
    assert!(matches!(err, TransportError::TextFrame), "{err:?}");
    assert!(p.server.app.is_empty());
    let out = p.server.transmit();
    assert_eq!(
        close_code(&p.client_reads(&out)),
        Some(CloseCode::Unsupported)
    );
}

#[test]
fn oversized_frame_is_rejected_from_its_header() {
    let max = 1024;
    let mut p = ws_connect(Pipe::default(), server(max), URL, "mqtt")
        .map_err(|(e, _)| e)
        .unwrap();
    let at_max = p.client_frames(Message::Binary(Bytes::from(vec![7u8; max])));
    p.server.receive(&at_max).unwrap();
    assert_eq!(p.server.app.len(), max);
    let wire = p.client_frames(Message::Binary(Bytes::from(vec![7u8; 1 << 20])));
    // Only the header (2 + 8 length + 4 mask bytes): the payload is never awaited.
    let err = p.server.receive(&wire[..14]).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::WebSocket(tungstenite::Error::Capacity(_))
        ),
        "{err:?}"
    );
    let out = p.server.transmit();
    assert_eq!(close_code(&p.client_reads(&out)), Some(CloseCode::Size));
}

#[test]
fn oversized_fragmented_message_is_rejected() {
    let max = 1024;
    let mut p = ws_connect(Pipe::default(), server(max), URL, "mqtt")
        .map_err(|(e, _)| e)
        .unwrap();
    let first = p.client_frames(Message::Frame(Frame::message(
        vec![1u8; 600],
        OpCode::Data(Data::Binary),
        false,
    )));
    p.server.receive(&first).unwrap();
    let second = p.client_frames(Message::Frame(Frame::message(
        vec![1u8; 600],
        OpCode::Data(Data::Continue),
        false,
    )));
    let err = p.server.receive(&second).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::WebSocket(tungstenite::Error::Capacity(_))
        ),
        "{err:?}"
    );
    assert!(p.server.app.is_empty());
}

#[test]
fn unmasked_client_frame_is_rejected() {
    let mut p = connect("mqtt");
    let err = p.server.receive(&[0x82, 0x03, 1, 2, 3]).unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::WebSocket(tungstenite::Error::Protocol(_))
        ),
        "{err:?}"
    );
    let out = p.server.transmit();
    assert_eq!(close_code(&p.client_reads(&out)), Some(CloseCode::Protocol));
}

#[test]
fn garbage_after_upgrade_is_an_error_not_a_panic() {
    for seed in 0..100u64 {
        let mut p = connect("mqtt");
        let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let mut result = Ok(());
        for _ in 0..64 {
            let chunk: Vec<u8> = (0..1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            result = p.server.receive(&chunk);
            if result.is_err() {
                break;
            }
        }
        // Noise that happens to start with a close frame closes instead.
        assert!(
            result.is_err() || p.server.transport.is_closed(),
            "seed {seed}: 64 KiB of noise accepted"
        );
        assert!(p.server.transmit().len() < 1024, "seed {seed}");
    }
}
