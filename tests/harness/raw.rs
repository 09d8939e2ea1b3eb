//! A byte-exact MQTT client for the end-to-end tests.
//!
//! rumqttc is a well-behaved client: it cannot send a malformed packet, a
//! publish that only names a topic alias, a DISCONNECT with reason 0x04, or
//! show how many publishes the broker has in flight towards it. This module
//! builds packets from bytes and parses what comes back, written from the
//! MQTT 3.1.1 and 5.0 specifications, independent of the broker's own codec so
//! that the two check each other.
//!
//! Layout: property ids (`prop`), an encoder per packet, a decoder into
//! [`Packet`], and [`RawClient`], a TCP stream that sends bytes and receives
//! whole packets with a deadline.

#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Protocol level byte of MQTT 3.1.1.
pub const V311: u8 = 4;
/// Protocol level byte of MQTT 5.0.
pub const V5: u8 = 5;

/// Packet type numbers (the high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// MQTT 5.0 property identifiers (spec 2.2.2.2).
pub mod prop {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// One property value; the wire type follows from the identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// An ordered list of MQTT 5.0 properties, duplicates allowed (user
/// properties and subscription identifiers repeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props(pub Vec<(u8, Value)>);

impl Props {
    pub fn new() -> Self {
        Props(Vec::new())
    }

    pub fn with(mut self, id: u8, value: Value) -> Self {
        self.0.push((id, value));
        self
    }

    pub fn get(&self, id: u8) -> Option<&Value> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    pub fn has(&self, id: u8) -> bool {
        self.get(id).is_some()
    }

    /// The integer value of a byte, two-byte, four-byte or variable integer property.
    pub fn int(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            Value::Byte(v) => Some(u32::from(*v)),
            Value::U16(v) => Some(u32::from(*v)),
            Value::U32(v) | Value::VarInt(v) => Some(*v),
            _ => None,
        }
    }

    /// All values of a repeatable integer property (subscription identifiers).
    pub fn ints(&self, id: u8) -> Vec<u32> {
        self.0
            .iter()
            .filter(|(i, _)| *i == id)
            .filter_map(|(_, v)| match v {
                Value::VarInt(x) | Value::U32(x) => Some(*x),
                _ => None,
            })
            .collect()
    }

    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn bin(&self, id: u8) -> Option<&[u8]> {
        match self.get(id)? {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    pub fn user_properties(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(_, v)| match v {
                Value::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------- encoding

pub fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

pub fn put_bin(buf: &mut Vec<u8>, b: &[u8]) {
    put_u16(
        buf,
        u16::try_from(b.len()).expect("field longer than 65535 bytes"),
    );
    buf.extend_from_slice(b);
}

pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bin(buf, s.as_bytes());
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u32) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if v == 0 {
            break;
        }
    }
}

pub fn encode_props(props: &Props) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, value) in &props.0 {
        body.push(*id);
        match value {
            Value::Byte(v) => body.push(*v),
            Value::U16(v) => put_u16(&mut body, *v),
            Value::U32(v) => put_u32(&mut body, *v),
            Value::VarInt(v) => put_varint(&mut body, *v),
            Value::Str(s) => put_str(&mut body, s),
            Value::Bin(b) => put_bin(&mut body, b),
            Value::Pair(k, v) => {
                put_str(&mut body, k);
                put_str(&mut body, v);
            }
        }
    }
    let mut out = Vec::new();
    put_varint(
        &mut out,
        u32::try_from(body.len()).expect("properties too long"),
    );
    out.extend_from_slice(&body);
    out
}

/// A whole packet: the first byte, the remaining length, the body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_varint(
        &mut out,
        u32::try_from(body.len()).expect("packet too long"),
    );
    out.extend_from_slice(body);
    out
}

#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Props,
}

impl Will {
    pub fn new(topic: &str, payload: &[u8]) -> Self {
        Will {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: 0,
            retain: false,
            props: Props::new(),
        }
    }
}

/// The fields of a CONNECT; build with [`Connect::v5`] or [`Connect::v311`].
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: u8,
    pub client_id: String,
    pub clean: bool,
    pub keep_alive_s: u16,
    pub props: Props,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl Connect {
    pub fn v5(client_id: &str) -> Self {
        Connect {
            version: V5,
            client_id: client_id.into(),
            clean: true,
            keep_alive_s: 60,
            props: Props::new(),
            will: None,
            username: None,
            password: None,
        }
    }

    pub fn v311(client_id: &str) -> Self {
        Connect {
            version: V311,
            ..Connect::v5(client_id)
        }
    }

    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }

    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.keep_alive_s = seconds;
        self
    }

    pub fn prop(mut self, id: u8, value: Value) -> Self {
        self.props.0.push((id, value));
        self
    }

    pub fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        body.push(self.version);
        let mut flags = 0u8;
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
        if self.clean {
            flags |= 0x02;
        }
        body.push(flags);
        put_u16(&mut body, self.keep_alive_s);
        if self.version == V5 {
            body.extend_from_slice(&encode_props(&self.props));
        }
        put_str(&mut body, &self.client_id);
        if let Some(will) = &self.will {
            if self.version == V5 {
                body.extend_from_slice(&encode_props(&will.props));
            }
            put_str(&mut body, &will.topic);
            put_bin(&mut body, &will.payload);
        }
        if let Some(user) = &self.username {
            put_str(&mut body, user);
        }
        if let Some(pass) = &self.password {
            put_bin(&mut body, pass);
        }
        frame(kind::CONNECT << 4, &body)
    }
}

/// A PUBLISH in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    pub payload: Vec<u8>,
    pub props: Props,
}

impl Publish {
    pub fn new(topic: &str, qos: u8, payload: &[u8]) -> Self {
        Publish {
            topic: topic.into(),
            qos,
            retain: false,
            dup: false,
            pkid: if qos > 0 { 1 } else { 0 },
            payload: payload.to_vec(),
            props: Props::new(),
        }
    }

    pub fn pkid(mut self, pkid: u16) -> Self {
        self.pkid = pkid;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn dup(mut self, dup: bool) -> Self {
        self.dup = dup;
        self
    }

    pub fn prop(mut self, id: u8, value: Value) -> Self {
        self.props.0.push((id, value));
        self
    }

    pub fn encode(&self, version: u8) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, &self.topic);
        if self.qos > 0 {
            put_u16(&mut body, self.pkid);
        }
        if version == V5 {
            body.extend_from_slice(&encode_props(&self.props));
        }
        body.extend_from_slice(&self.payload);
        let mut first = (kind::PUBLISH << 4) | (self.qos << 1);
        if self.retain {
            first |= 0x01;
        }
        if self.dup {
            first |= 0x08;
        }
        frame(first, &body)
    }
}

/// Subscription option bits of MQTT 5.0 (spec 3.8.3.1); for 3.1.1 only the QoS bits.
pub fn sub_options(qos: u8, no_local: bool, retain_as_published: bool, retain_handling: u8) -> u8 {
    let mut o = qos & 0x03;
    if no_local {
        o |= 0x04;
    }
    if retain_as_published {
        o |= 0x08;
    }
    o | ((retain_handling & 0x03) << 4)
}

pub fn subscribe(version: u8, pkid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, pkid);
    if version == V5 {
        body.extend_from_slice(&encode_props(props));
    }
    for (filter, options) in filters {
        put_str(&mut body, filter);
        body.push(*options);
    }
    frame((kind::SUBSCRIBE << 4) | 0x02, &body)
}

pub fn unsubscribe(version: u8, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    put_u16(&mut body, pkid);
    if version == V5 {
        body.extend_from_slice(&encode_props(&Props::new()));
    }
    for filter in filters {
        put_str(&mut body, filter);
    }
    frame((kind::UNSUBSCRIBE << 4) | 0x02, &body)
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP with reason "success" (the short form,
/// valid in both versions).
pub fn ack(kind_: u8, pkid: u16) -> Vec<u8> {
    let flags = if kind_ == kind::PUBREL { 0x02 } else { 0x00 };
    let mut body = Vec::new();
    put_u16(&mut body, pkid);
    frame((kind_ << 4) | flags, &body)
}

pub fn pingreq() -> Vec<u8> {
    vec![kind::PINGREQ << 4, 0]
}

/// A DISCONNECT; for 3.1.1 pass reason 0 and no properties.
pub fn disconnect(version: u8, reason: u8, props: &Props) -> Vec<u8> {
    if version != V5 || (reason == 0 && props.0.is_empty()) {
        return vec![kind::DISCONNECT << 4, 0];
    }
    let mut body = vec![reason];
    body.extend_from_slice(&encode_props(props));
    frame(kind::DISCONNECT << 4, &body)
}

// ---------------------------------------------------------------- decoding

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    ConnAck {
        session_present: bool,
        code: u8,
        props: Props,
    },
    Publish(Publish),
    PubAck {
        pkid: u16,
        code: u8,
    },
    PubRec {
        pkid: u16,
        code: u8,
    },
    PubRel {
        pkid: u16,
        code: u8,
    },
    PubComp {
        pkid: u16,
        code: u8,
    },
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
        props: Props,
    },
    UnsubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    PingResp,
    Disconnect {
        code: u8,
        props: Props,
    },
    Auth {
        code: u8,
        props: Props,
    },
    /// Anything a broker must never send (CONNECT, SUBSCRIBE, ...), kept raw.
    Unexpected {
        first: u8,
        body: Vec<u8>,
    },
}

/// Reads fields from a packet body; every read is checked, so a malformed
/// packet from the broker fails the test with a clear message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err(format!("need {n} bytes, {} left", self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("variable byte integer longer than 4 bytes".into())
    }

    fn bin(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn str(&mut self) -> Result<String, String> {
        String::from_utf8(self.bin()?).map_err(|e| format!("invalid UTF-8 string: {e}"))
    }

    fn rest(&mut self) -> Vec<u8> {
        let s = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        s
    }

    fn props(&mut self) -> Result<Props, String> {
        let len = self.varint()? as usize;
        let mut r = Reader::new(self.take(len)?);
        let mut props = Props::new();
        while r.remaining() > 0 {
            let id = r.u8()?;
            let value = match id {
                prop::PAYLOAD_FORMAT_INDICATOR
                | prop::REQUEST_PROBLEM_INFORMATION
                | prop::REQUEST_RESPONSE_INFORMATION
                | prop::MAXIMUM_QOS
                | prop::RETAIN_AVAILABLE
                | prop::WILDCARD_SUBSCRIPTION_AVAILABLE
                | prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE
                | prop::SHARED_SUBSCRIPTION_AVAILABLE => Value::Byte(r.u8()?),
                prop::SERVER_KEEP_ALIVE
                | prop::RECEIVE_MAXIMUM
                | prop::TOPIC_ALIAS_MAXIMUM
                | prop::TOPIC_ALIAS => Value::U16(r.u16()?),
                prop::MESSAGE_EXPIRY_INTERVAL
                | prop::SESSION_EXPIRY_INTERVAL
                | prop::WILL_DELAY_INTERVAL
                | prop::MAXIMUM_PACKET_SIZE => Value::U32(r.u32()?),
                prop::SUBSCRIPTION_IDENTIFIER => Value::VarInt(r.varint()?),
                prop::CONTENT_TYPE
                | prop::RESPONSE_TOPIC
                | prop::ASSIGNED_CLIENT_IDENTIFIER
                | prop::AUTHENTICATION_METHOD
                | prop::RESPONSE_INFORMATION
                | prop::SERVER_REFERENCE
                | prop::REASON_STRING => Value::Str(r.str()?),
                prop::CORRELATION_DATA | prop::AUTHENTICATION_DATA => Value::Bin(r.bin()?),
                prop::USER_PROPERTY => Value::Pair(r.str()?, r.str()?),
                other => return Err(format!("unknown property id 0x{other:02X}")),
            };
            props.0.push((id, value));
        }
        Ok(props)
    }
}

/// Parses one packet body given its first byte, for a connection of `version`.
pub fn decode(version: u8, first: u8, body: &[u8]) -> Result<Packet, String> {
    let mut r = Reader::new(body);
    let v5 = version == V5;
    let packet = match first >> 4 {
        kind::CONNACK => {
            let flags = r.u8()?;
            let code = r.u8()?;
            let props = if v5 { r.props()? } else { Props::new() };
            Packet::ConnAck {
                session_present: flags & 0x01 != 0,
                code,
                props,
            }
        }
        kind::PUBLISH => {
            let qos = (first >> 1) & 0x03;
            let topic = r.str()?;
            let pkid = if qos > 0 { r.u16()? } else { 0 };
            let props = if v5 { r.props()? } else { Props::new() };
            Packet::Publish(Publish {
                topic,
                qos,
                retain: first & 0x01 != 0,
                dup: first & 0x08 != 0,
                pkid,
                payload: r.rest(),
                props,
            })
        }
        k @ (kind::PUBACK | kind::PUBREC | kind::PUBREL | kind::PUBCOMP) => {
            let pkid = r.u16()?;
            let code = if r.remaining() > 0 { r.u8()? } else { 0 };
            if r.remaining() > 0 {
                r.props()?;
            }
            match k {
                kind::PUBACK => Packet::PubAck { pkid, code },
                kind::PUBREC => Packet::PubRec { pkid, code },
                kind::PUBREL => Packet::PubRel { pkid, code },
                _ => Packet::PubComp { pkid, code },
            }
        }
        kind::SUBACK => {
            let pkid = r.u16()?;
            let props = if v5 { r.props()? } else { Props::new() };
            Packet::SubAck {
                pkid,
                codes: r.rest(),
                props,
            }
        }
        kind::UNSUBACK => {
            let pkid = r.u16()?;
            if v5 {
                r.props()?;
            }
            Packet::UnsubAck {
                pkid,
                codes: r.rest(),
            }
        }
        kind::PINGRESP => Packet::PingResp,
        kind::DISCONNECT => {
            let code = if r.remaining() > 0 { r.u8()? } else { 0 };
            let props = if r.remaining() > 0 {
                r.props()?
            } else {
                Props::new()
            };
            Packet::Disconnect { code, props }
        }
        kind::AUTH => {
            let code = if r.remaining() > 0 { r.u8()? } else { 0 };
            let props = if r.remaining() > 0 {
                r.props()?
            } else {
                Props::new()
            };
            Packet::Auth { code, props }
        }
        _ => Packet::Unexpected {
            first,
            body: body.to_vec(),
        },
    };
    if r.remaining() > 0 {
        return Err(format!(
            "{} trailing bytes in packet 0x{first:02X}",
            r.remaining()
        ));
    }
    Ok(packet)
}

// ---------------------------------------------------------------- client

/// What one read from the broker gave.
#[derive(Debug)]
pub enum Recv {
    Packet(Packet),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing arrived before the deadline.
    TimedOut,
}

/// A TCP connection that speaks MQTT byte by byte.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    pub version: u8,
    closed: bool,
}

/// Largest packet this test client accepts from the broker.
const RECEIVE_PACKET_SIZE_MAX: usize = 64 * 1024 * 1024;

/// If `buf` starts with a whole packet: its first byte, header length and body length.
pub fn frame_bounds(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let first = *buf.first()?;
    let mut len = 0usize;
    let mut header = 1;
    loop {
        let byte = *buf.get(header)?;
        len |= usize::from(byte & 0x7F) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        assert!(
            header <= 4,
            "broker sent a remaining length longer than 4 bytes"
        );
    }
    assert!(
        len <= RECEIVE_PACKET_SIZE_MAX,
        "broker sent a {len}-byte packet"
    );
    if buf.len() < header + len {
        return None;
    }
    Some((first, header, len))
}

impl RawClient {
    pub async fn open(port: u16, version: u8) -> RawClient {
        let stream = tokio::time::timeout(super::WAIT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawClient {
            stream,
            buf: Vec::new(),
            version,
            closed: false,
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK's fields.
    pub async fn connect(port: u16, connect: &Connect) -> (RawClient, Packet) {
        let mut c = RawClient::open(port, connect.version).await;
        c.send(&connect.encode()).await.expect("send CONNECT");
        let connack = c.expect_packet("CONNACK").await;
        assert!(
            matches!(connack, Packet::ConnAck { .. }),
            "expected CONNACK, got {connack:?}"
        );
        (c, connack)
    }

    /// Like [`RawClient::connect`] but asserts the CONNACK says success.
    pub async fn connect_ok(port: u16, connect: &Connect) -> RawClient {
        let (c, connack) = RawClient::connect(port, connect).await;
        match connack {
            Packet::ConnAck { code: 0, .. } => c,
            other => panic!("CONNECT of {:?} refused: {other:?}", connect.client_id),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket and any bytes already read past the last whole packet.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Waits up to `timeout` for one whole packet and returns its first byte
    /// and body without interpreting them (for replies whose version is unknown).
    pub async fn recv_frame(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((first, header, len)) = frame_bounds(&self.buf) {
                let body = self.buf[header..header + len].to_vec();
                self.buf.drain(..header + len);
                return Some((first, body));
            }
            if self.closed {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Parses one whole packet out of the read buffer, if one is there.
    fn parse_buffered(&mut self) -> Option<Packet> {
        let (first, header, len) = frame_bounds(&self.buf)?;
        let body: Vec<u8> = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Some(decode(self.version, first, &body).unwrap_or_else(|e| {
            panic!("broker sent a malformed packet 0x{first:02X} {body:02X?}: {e}")
        }))
    }

    /// Waits up to `timeout` for the next packet.
    pub async fn recv(&mut self, timeout: Duration) -> Recv {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.parse_buffered() {
                return Recv::Packet(p);
            }
            if self.closed {
                return Recv::Closed;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Recv::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = true;
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next packet, or a panic naming `what` on close or timeout.
    pub async fn expect_packet(&mut self, what: &str) -> Packet {
        match self.recv(super::WAIT).await {
            Recv::Packet(p) => p,
            Recv::Closed => panic!("connection closed while waiting for {what}"),
            Recv::TimedOut => panic!("timed out waiting for {what}"),
        }
    }

    /// Skips PINGRESPs and returns the next other packet.
    pub async fn expect_non_ping(&mut self, what: &str) -> Packet {
        loop {
            match self.expect_packet(what).await {
                Packet::PingResp => continue,
                p => return p,
            }
        }
    }

    pub async fn expect_publish(&mut self) -> Publish {
        match self.expect_non_ping("PUBLISH").await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection; returns what it sent first.
    pub async fn expect_closed(&mut self, what: &str) -> Vec<Packet> {
        let deadline = Instant::now() + super::WAIT;
        let mut seen = Vec::new();
        loop {
            match self
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::Packet(p) => seen.push(p),
                Recv::Closed => return seen,
                Recv::TimedOut => {
                    panic!("broker did not close the connection ({what}); it sent {seen:?}")
                }
            }
        }
    }

    /// Asserts nothing but PINGRESPs arrive and the connection stays open for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            match self
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Recv::TimedOut => return,
                Recv::Packet(Packet::PingResp) => continue,
                Recv::Packet(p) => panic!("expected nothing, got {p:?}"),
                Recv::Closed => panic!("expected nothing, but the broker closed the connection"),
            }
        }
    }

    /// SUBSCRIBE and wait for the SUBACK; returns its reason codes.
    pub async fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
        let bytes = subscribe(self.version, pkid, filters, props);
        self.send(&bytes).await.expect("send SUBSCRIBE");
        match self.expect_non_ping("SUBACK").await {
            Packet::SubAck {
                pkid: got, codes, ..
            } => {
                assert_eq!(got, pkid, "SUBACK packet id");
                codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// PUBLISH and complete its QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    /// Returns the reason code of the PUBACK or PUBREC.
    pub async fn publish(&mut self, publish: &Publish) -> u8 {
        self.send(&publish.encode(self.version))
            .await
            .expect("send PUBLISH");
        match publish.qos {
            0 => 0,
            1 => match self.expect_non_ping("PUBACK").await {
                Packet::PubAck { pkid, code } if pkid == publish.pkid => code,
                other => panic!("expected PUBACK {}, got {other:?}", publish.pkid),
            },
            _ => {
                let code = match self.expect_non_ping("PUBREC").await {
                    Packet::PubRec { pkid, code } if pkid == publish.pkid => code,
                    other => panic!("expected PUBREC {}, got {other:?}", publish.pkid),
                };
                if code < 0x80 {
                    self.send(&ack(kind::PUBREL, publish.pkid))
                        .await
                        .expect("send PUBREL");
                    match self.expect_non_ping("PUBCOMP").await {
                        Packet::PubComp { pkid, .. } if pkid == publish.pkid => {}
                        other => panic!("expected PUBCOMP {}, got {other:?}", publish.pkid),
                    }
                }
                code
            }
        }
    }
}
