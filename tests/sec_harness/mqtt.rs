//! A blocking MQTT 3.1.1 / 5.0 client over any byte stream, written from the
//! specifications and independent of the broker's codec, so the two check each
//! other. It shows what rumqttc hides: the exact CONNACK, SUBACK, PUBACK and
//! PUBREC codes, and whether the broker closed the connection.
//!
//! Incoming QoS 1 and 2 messages are acknowledged as they are read; packets a
//! wait skips over are kept for a later wait.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{QUIET, WAIT};

/// MQTT 3.1.1 (protocol level 4).
pub const V3: u8 = 4;
/// MQTT 5.0.
pub const V5: u8 = 5;

/// CONNACK codes.
pub const ACCEPTED: u8 = 0;
/// 3.1.1: server unavailable.
pub const V3_UNAVAILABLE: u8 = 3;
/// 3.1.1: bad user name or password.
pub const V3_BAD_CREDENTIALS: u8 = 4;
/// 3.1.1: not authorized.
pub const V3_NOT_AUTHORIZED: u8 = 5;
/// 5.0 reason codes.
pub const BAD_CREDENTIALS: u8 = 0x86;
pub const NOT_AUTHORIZED: u8 = 0x87;
pub const SERVER_BUSY: u8 = 0x89;
pub const QUOTA_EXCEEDED: u8 = 0x97;
pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
/// SUBACK failure of 3.1.1.
pub const V3_SUBACK_FAILURE: u8 = 0x80;

/// A byte stream the client can run over.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// What a CONNECT carries.
#[derive(Clone, Debug)]
pub struct Connect {
    pub version: u8,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<Will>,
    pub keep_alive_s: u16,
}

#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl Connect {
    /// An anonymous clean-session CONNECT.
    pub fn new(version: u8, client_id: &str) -> Connect {
        Connect {
            version,
            client_id: client_id.to_owned(),
            username: None,
            password: None,
            will: None,
            keep_alive_s: 60,
        }
    }

    pub fn user(mut self, username: &str, password: &str) -> Connect {
        self.username = Some(username.to_owned());
        self.password = Some(password.to_owned());
        self
    }

    /// A user name without a password.
    pub fn username_only(mut self, username: &str) -> Connect {
        self.username = Some(username.to_owned());
        self.password = None;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8) -> Connect {
        self.will = Some(Will {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain: false,
        });
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut flags = 0x02; // clean session / clean start
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        body.push(self.version);
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive_s.to_be_bytes());
        if self.version == V5 {
            body.push(0); // no properties
        }
        put_str(&mut body, &self.client_id);
        if let Some(will) = &self.will {
            if self.version == V5 {
                body.push(0); // no will properties
            }
            put_str(&mut body, &will.topic);
            put_bytes(&mut body, &will.payload);
        }
        if let Some(username) = &self.username {
            put_str(&mut body, username);
        }
        if let Some(password) = &self.password {
            put_bytes(&mut body, password.as_bytes());
        }
        frame(0x10, &body)
    }
}

/// A message received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A packet from the broker.
#[derive(Clone, Debug)]
pub enum Packet {
    ConnAck {
        code: u8,
    },
    Publish(Message),
    /// PUBACK, PUBREC, PUBCOMP (`kind` 4, 5, 7) with their reason code (0 when
    /// the packet has none).
    Ack {
        kind: u8,
        id: u16,
        code: u8,
    },
    SubAck {
        id: u16,
        codes: Vec<u8>,
    },
    Disconnect {
        code: u8,
    },
    Other {
        first: u8,
    },
}

/// How a wait ended without the packet it wanted.
#[derive(Debug)]
pub enum Ended {
    TimedOut,
    /// The broker closed the connection (EOF or an error of the stream).
    Closed(String),
}

/// A connection to the broker.
pub struct Client {
    io: Box<dyn Stream>,
    /// The TCP socket under `io`, to set read timeouts on.
    tcp: TcpStream,
    pub version: u8,
    pub name: String,
    buf: Vec<u8>,
    backlog: VecDeque<Packet>,
    next_id: u16,
    closed: Option<String>,
}

/// Opens a TCP connection to `addr`.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Opens a TCP connection to `addr` from the local address `from` (another
/// loopback address is another source IP to the broker).
pub fn tcp_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for one connect");
    let stream = runtime
        .block_on(async {
            let socket = match from {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(from, 0))?;
            tokio::time::timeout(WAIT, socket.connect(addr))
                .await
                .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))?
        })
        .unwrap_or_else(|e| panic!("connect from {from} to {addr}: {e}"));
    let stream = stream.into_std().expect("a std socket");
    stream.set_nonblocking(false).expect("blocking mode");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// CONNECT over `stream`; the CONNACK code and the client.
pub fn connect_over(stream: TcpStream, connect: &Connect) -> (u8, Client) {
    let tcp = stream.try_clone().expect("clone the socket");
    Client::handshake(Box::new(stream), tcp, connect)
        .unwrap_or_else(|e| panic!("{}: no CONNACK: {e:?}", connect.client_id))
}

/// CONNECT over plain TCP to `addr`; the CONNACK code and the client.
pub fn connect(addr: SocketAddr, connect: &Connect) -> (u8, Client) {
    let stream = tcp(addr);
    let tcp = stream.try_clone().expect("clone the socket");
    Client::handshake(Box::new(stream), tcp, connect)
        .unwrap_or_else(|e| panic!("{}: no CONNACK: {e:?}", connect.client_id))
}

/// CONNECT over plain TCP and assert the broker accepts.
pub fn connect_ok(addr: SocketAddr, connect: &Connect) -> Client {
    let (code, client) = self::connect(addr, connect);
    assert_eq!(code, ACCEPTED, "{}: CONNACK", connect.client_id);
    client
}

/// CONNECT over plain TCP, assert the CONNACK code `expected` (a refusal), and
/// that the broker then closes the connection.
pub fn connect_refused(addr: SocketAddr, connect: &Connect, expected: u8) {
    let (code, mut client) = self::connect(addr, connect);
    assert_eq!(
        code, expected,
        "{} (MQTT level {}): CONNACK code",
        connect.client_id, connect.version
    );
    client.expect_closed();
}

impl Client {
    /// Sends CONNECT over `io` and reads the CONNACK.
    pub fn handshake(
        io: Box<dyn Stream>,
        tcp: TcpStream,
        connect: &Connect,
    ) -> Result<(u8, Client), Ended> {
        let mut client = Client {
            io,
            tcp,
            version: connect.version,
            name: connect.client_id.clone(),
            buf: Vec::new(),
            backlog: VecDeque::new(),
            next_id: 1,
            closed: None,
        };
        // A TLS session the server refuses may fail here, at the first write.
        if let Err(e) = client.try_send(&connect.encode()) {
            return Err(Ended::Closed(e.to_string()));
        }
        let deadline = Instant::now() + WAIT;
        match client.wait_for(deadline, |p| matches!(p, Packet::ConnAck { .. }))? {
            Packet::ConnAck { code } => Ok((code, client)),
            _ => unreachable!("picked only CONNACK"),
        }
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.io.write_all(bytes).and_then(|()| self.io.flush()) {
            panic!("{}: send failed: {e}", self.name);
        }
    }

    /// Sends bytes and reports a failure instead of panicking (the broker may
    /// have closed the connection on purpose).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    /// Reads until one whole packet is buffered or `deadline` passes.
    fn read_packet(&mut self, deadline: Instant) -> Result<Packet, Ended> {
        loop {
            if let Some((first, body, used)) = split_packet(&self.buf) {
                self.buf.drain(..used);
                return Ok(self.decode(first, &body));
            }
            if let Some(why) = &self.closed {
                return Err(Ended::Closed(why.clone()));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(Ended::TimedOut);
            };
            let left = left.max(Duration::from_millis(1));
            self.tcp.set_read_timeout(Some(left)).expect("read timeout");
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk) {
                Ok(0) => self.closed = Some("end of stream".into()),
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => self.closed = Some(e.to_string()),
            }
        }
    }

    fn decode(&mut self, first: u8, body: &[u8]) -> Packet {
        let mut r = Reader { bytes: body, at: 0 };
        match first >> 4 {
            2 => {
                r.u8();
                Packet::ConnAck { code: r.u8() }
            }
            3 => {
                let qos = (first >> 1) & 3;
                let topic = r.string();
                let id = if qos > 0 { r.u16() } else { 0 };
                if self.version == V5 {
                    let len = r.varint();
                    r.skip(len);
                }
                let message = Message {
                    topic,
                    payload: r.rest().to_vec(),
                    qos,
                    retain: first & 1 == 1,
                };
                match qos {
                    1 => self.send(&ack(0x40, id)),
                    2 => self.send(&ack(0x50, id)),
                    _ => {}
                }
                Packet::Publish(message)
            }
            kind @ (4 | 5 | 7) => {
                let id = r.u16();
                let code = if r.left() > 0 { r.u8() } else { 0 };
                if kind == 5 && code < 0x80 {
                    // PUBREL; the PUBCOMP follows.
                    self.send(&ack(0x62, id));
                }
                Packet::Ack { kind, id, code }
            }
            6 => {
                let id = r.u16();
                self.send(&ack(0x70, id));
                Packet::Other { first }
            }
            9 => {
                let id = r.u16();
                if self.version == V5 {
                    let len = r.varint();
                    r.skip(len);
                }
                Packet::SubAck {
                    id,
                    codes: r.rest().to_vec(),
                }
            }
            14 => Packet::Disconnect {
                code: if r.left() > 0 { r.u8() } else { 0 },
            },
            _ => Packet::Other { first },
        }
    }

    /// The first packet (backlog first) that `pick` accepts; others are kept.
    fn wait_for(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(&Packet) -> bool,
    ) -> Result<Packet, Ended> {
        if let Some(at) = self.backlog.iter().position(&mut pick) {
            return Ok(self.backlog.remove(at).expect("index in range"));
        }
        loop {
            let packet = self.read_packet(deadline)?;
            if pick(&packet) {
                return Ok(packet);
            }
            if !matches!(packet, Packet::Other { .. }) {
                self.backlog.push_back(packet);
            }
        }
    }

    fn expect(&mut self, what: &str, pick: impl FnMut(&Packet) -> bool) -> Packet {
        match self.wait_for(Instant::now() + WAIT, pick) {
            Ok(packet) => packet,
            Err(ended) => panic!("{}: waiting for {what}: {ended:?}", self.name),
        }
    }

    /// SUBSCRIBE to every `(filter, qos)` in one packet; the SUBACK's codes.
    pub fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        let id = self.packet_id();
        let mut body = id.to_be_bytes().to_vec();
        if self.version == V5 {
            body.push(0);
        }
        for (filter, qos) in filters {
            put_str(&mut body, filter);
            body.push(*qos);
        }
        self.send(&frame(0x82, &body));
        match self.expect(
            "SUBACK",
            |p| matches!(p, Packet::SubAck { id: i, .. } if *i == id),
        ) {
            Packet::SubAck { codes, .. } => codes,
            _ => unreachable!(),
        }
    }

    /// SUBSCRIBE to one filter and assert it is granted `qos`.
    pub fn subscribe_ok(&mut self, filter: &str, qos: u8) {
        let codes = self.subscribe(&[(filter, qos)]);
        assert_eq!(codes, vec![qos], "{}: SUBACK for {filter}", self.name);
    }

    /// PUBLISH and, for QoS 1 and 2, wait for the broker's answer: the PUBACK's
    /// (QoS 1) or PUBREC's (QoS 2) reason code; a QoS 2 flow the broker accepted
    /// is completed (PUBREL, PUBCOMP). QoS 0 gives 0.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> u8 {
        let id = self.packet_id();
        let mut body = Vec::new();
        put_str(&mut body, topic);
        if qos > 0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        if self.version == V5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        self.send(&frame(0x30 | (qos << 1) | u8::from(retain), &body));
        match qos {
            0 => 0,
            1 => match self.expect("PUBACK", |p| is_ack(p, 4, id)) {
                Packet::Ack { code, .. } => code,
                _ => unreachable!(),
            },
            _ => {
                let code = match self.expect("PUBREC", |p| is_ack(p, 5, id)) {
                    Packet::Ack { code, .. } => code,
                    _ => unreachable!(),
                };
                if code < 0x80 {
                    let done = match self.expect("PUBCOMP", |p| is_ack(p, 7, id)) {
                        Packet::Ack { code, .. } => code,
                        _ => unreachable!(),
                    };
                    assert_eq!(done, 0, "{}: PUBCOMP for {topic}", self.name);
                }
                code
            }
        }
    }

    /// PUBLISH and assert the broker accepted it: a success code, 0 or (MQTT 5)
    /// 0x10 "no matching subscribers".
    pub fn publish_ok(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        let code = self.publish(topic, payload, qos, retain);
        assert!(
            code < 0x80,
            "{}: PUBLISH to {topic} (QoS {qos}) refused with {code:#x}",
            self.name
        );
    }

    /// The next message, within [`WAIT`].
    pub fn recv(&mut self) -> Message {
        match self.expect("PUBLISH", |p| matches!(p, Packet::Publish(_))) {
            Packet::Publish(m) => m,
            _ => unreachable!(),
        }
    }

    /// The next message if one comes within `timeout`.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Message> {
        match self.wait_for(Instant::now() + timeout, |p| {
            matches!(p, Packet::Publish(_))
        }) {
            Ok(Packet::Publish(m)) => Some(m),
            Ok(_) => unreachable!(),
            Err(Ended::TimedOut) => None,
            Err(Ended::Closed(why)) => panic!("{}: closed while receiving: {why}", self.name),
        }
    }

    /// Asserts the next message is on `topic` with `payload`.
    pub fn expect_message(&mut self, topic: &str, payload: &str) -> Message {
        let m = self.recv();
        assert_eq!(
            (m.topic.as_str(), m.text().as_str()),
            (topic, payload),
            "{}: next message",
            self.name
        );
        m
    }

    /// Asserts no message arrives within [`QUIET`].
    pub fn expect_no_message(&mut self) {
        if let Some(m) = self.recv_within(QUIET) {
            panic!("{}: expected no message, got {m:?}", self.name);
        }
    }

    /// Waits until the broker closes the connection; a DISCONNECT packet first
    /// is allowed. Panics if it stays open for [`WAIT`].
    pub fn expect_closed(&mut self) -> String {
        match self.wait_for(Instant::now() + WAIT, |_| false) {
            Err(Ended::Closed(why)) => why,
            Err(Ended::TimedOut) => {
                panic!("{}: the broker did not close the connection", self.name)
            }
            Ok(_) => unreachable!(),
        }
    }

    /// Sends DISCONNECT (normal) and closes.
    pub fn disconnect(mut self) {
        let _ = self.try_send(&frame(0xE0, &[]));
    }

    /// Closes the socket without a DISCONNECT, as a crash would: the broker then
    /// publishes the will.
    pub fn drop_connection(self) {
        let _ = self.tcp.shutdown(std::net::Shutdown::Both);
    }
}

fn is_ack(packet: &Packet, kind: u8, id: u16) -> bool {
    matches!(packet, Packet::Ack { kind: k, id: i, .. } if *k == kind && *i == id)
}

fn ack(first: u8, id: u16) -> Vec<u8> {
    frame(first, &id.to_be_bytes())
}

/// A packet: first byte, remaining length, body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u16::try_from(b.len()).expect("a field under 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

/// One whole packet at the start of `buf`: first byte, body, bytes used.
fn split_packet(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let first = *buf.first()?;
    let mut len = 0usize;
    let mut at = 1;
    for shift in [0, 7, 14, 21] {
        let byte = *buf.get(at)?;
        at += 1;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let body = buf.get(at..at + len)?;
            return Some((first, body.to_vec(), at + len));
        }
    }
    panic!("malformed remaining length from the broker: {buf:?}");
}

/// Reads fields of a packet body; a short body panics (the broker sent a bad
/// packet).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let out = self
            .bytes
            .get(self.at..self.at + n)
            .unwrap_or_else(|| panic!("short packet from the broker: {:?}", self.bytes));
        self.at += n;
        out
    }

    fn u8(&mut self) -> u8 {
        *self.take(1).first().expect("one byte")
    }

    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_be_bytes([*b.first().expect("byte"), *b.get(1).expect("byte")])
    }

    fn string(&mut self) -> String {
        let len = usize::from(self.u16());
        String::from_utf8(self.take(len).to_vec()).expect("UTF-8 from the broker")
    }

    fn varint(&mut self) -> usize {
        let mut value = 0usize;
        for shift in [0, 7, 14, 21] {
            let byte = self.u8();
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
        }
        panic!("malformed variable byte integer from the broker");
    }

    fn skip(&mut self, n: usize) {
        self.take(n);
    }

    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn rest(&mut self) -> &[u8] {
        let out = self.bytes.get(self.at..).unwrap_or_default();
        self.at = self.bytes.len();
        out
    }
}
