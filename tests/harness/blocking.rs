//! Blocking MQTT clients over std sockets, for tests that drive the broker from
//! plain threads (floods, slow readers) with exact bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::raw;

/// Connects to the broker on 127.0.0.1, sends `connect`, and returns the stream and
/// the CONNACK reason code.
pub fn connect(port: u16, connect: &raw::Connect) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
    stream
        .set_read_timeout(Some(super::WAIT))
        .expect("set a read timeout");
    stream.write_all(&connect.encode()).expect("send CONNECT");
    let (kind, body) = read_packet(&mut stream).expect("a CONNACK");
    assert_eq!(kind, 0x20, "CONNACK expected");
    (stream, body.get(1).copied().expect("CONNACK reason code"))
}

/// Connects with clean start and no keep alive, and asserts the broker accepted.
pub fn connect_ok(port: u16, client_id: &str) -> TcpStream {
    let (stream, reason) = connect(port, &raw::Connect::v311(client_id).keep_alive(0));
    assert_eq!(reason, 0, "{client_id}: CONNACK refused");
    stream
}

/// Reads one whole packet (first byte, body) within the stream's read timeout;
/// `None` when the timeout passes or the connection closes first.
pub fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    if let Err(e) = stream.read_exact(&mut first) {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::UnexpectedEof
            ),
            "{e}"
        );
        return None;
    }
    let mut len = 0usize;
    for shift in (0..28).step_by(7) {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).ok()?;
        len |= usize::from(byte[0] & 0x7F) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

/// Every packet that arrives until `quiet` passes with nothing new.
pub fn read_until_quiet(stream: &mut TcpStream, quiet: Duration) -> Vec<(u8, Vec<u8>)> {
    stream
        .set_read_timeout(Some(quiet))
        .expect("set a read timeout");
    std::iter::from_fn(|| read_packet(stream)).collect()
}
