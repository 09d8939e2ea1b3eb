//! The WebSocket layer: the HTTP upgrade of RFC 6455 (parsed and answered with
//! tungstenite's own request parser and response builder, on bytes we hold, so no
//! stream is owned), then frames through tungstenite's `WebSocketContext`, which
//! takes the stream per call and so fits a sans-IO transport.
//!
//! MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5.0 §6): binary frames only, the
//! subprotocol `mqtt`, and a frame may hold any part of the MQTT byte stream; this
//! layer hands the payload bytes on in order and never looks inside them.

use std::io::{self, Cursor, Read, Write};

use bytes::BytesMut;
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};
use tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, FrameHeader};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{error::ProtocolError, Message, Utf8Bytes};

use super::link::Link;
use super::{
    TransportError, WS_CONTROL_QUEUE_BYTES_MAX, WS_READ_CHUNK_BYTES, WS_REQUEST_BYTES_MAX,
};

/// The subprotocol MQTT 3.1.1 and 5.0 name for WebSocket.
const SUBPROTOCOL: &str = "mqtt";

/// Where a WebSocket listener accepts upgrades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// The only request path upgraded, e.g. `/mqtt`; the query string is ignored.
    pub path: String,
}

#[derive(Debug)]
pub(crate) struct WsLayer {
    state: WsState,
    path: String,
    config: WebSocketConfig,
    peer_closed: bool,
}

#[derive(Debug)]
enum WsState {
    Upgrade(UpgradeRequest),
    Open(Box<WebSocketContext>),
    /// Refused or failed: input is dropped.
    Ended,
}

impl WsLayer {
    pub(crate) fn new(settings: &WsSettings, message_max: usize) -> WsLayer {
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_CHUNK_BYTES)
            // Eager writes: frames go straight to the link, which bounds them; what
            // a blocked link leaves behind is a few control frames at most.
            .write_buffer_size(0)
            .max_write_buffer_size(WS_CONTROL_QUEUE_BYTES_MAX)
            .max_frame_size(Some(message_max))
            .max_message_size(Some(message_max));
        WsLayer {
            state: WsState::Upgrade(UpgradeRequest::default()),
            path: settings.path.clone(),
            config,
            peer_closed: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, WsState::Open(_))
    }

    pub(crate) fn is_peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Reads what `link` has: first the upgrade request, then frames, whose
    /// binary payloads are appended to `app`.
    pub(crate) fn receive(
        &mut self,
        link: &mut Link<'_>,
        app: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if let WsState::Upgrade(request) = &mut self.state {
            let answer = match request.read(link) {
                Ok(None) => return Ok(()),
                Ok(Some(tail)) => request.answer(&self.path).map(|response| (response, tail)),
                Err(refusal) => Err(refusal),
            };
            match answer {
                Ok((response, tail)) => {
                    link.write_all(&response).map_err(tungstenite::Error::Io)?;
                    let ctx = WebSocketContext::from_partially_read(
                        tail,
                        Role::Server,
                        Some(self.config),
                    );
                    self.state = WsState::Open(Box::new(ctx));
                }
                Err(refusal) => {
                    self.state = WsState::Ended;
                    link.discard_input();
                    // Best effort: the error below ends the connection either way.
                    let _ = link.write_all(&refusal.response());
                    return Err(TransportError::UpgradeRefused {
                        status: refusal.status.as_u16(),
                        reason: refusal.reason,
                    });
                }
            }
        }
        match &mut self.state {
            WsState::Open(ctx) if !self.peer_closed => {
                read_messages(ctx, link, app, &mut self.peer_closed)
            }
            _ => {
                link.discard_input();
                Ok(())
            }
        }
    }

    /// Writes out what tungstenite has queued on its own (pong, close).
    pub(crate) fn flush(&mut self, link: &mut Link<'_>) {
        if let WsState::Open(ctx) = &mut self.state {
            // WouldBlock keeps the frame queued for the next call; ConnectionClosed
            // means the close reply is out and the socket may go.
            let _ = ctx.flush(link);
        }
    }

    /// Queues our close frame (once).
    pub(crate) fn close(&mut self, link: &mut Link<'_>) {
        if let WsState::Open(ctx) = &mut self.state {
            if ctx.can_write() {
                // Flushed first so the close frame finds room in tungstenite's queue.
                let _ = ctx.flush(link);
                let _ = ctx.close(link, Some(close_frame(CloseCode::Normal)));
            }
        }
    }

    /// Readies a binary frame of `len` bytes: flushes queued control frames first
    /// so the order on the wire stays the order of events, then gives the header.
    pub(crate) fn begin_binary(
        &mut self,
        link: &mut Link<'_>,
        len: usize,
    ) -> Result<FrameHead, TransportError> {
        let WsState::Open(ctx) = &mut self.state else {
            return Err(TransportError::NotEstablished);
        };
        if !ctx.can_write() {
            return Err(TransportError::Closed);
        }
        ctx.flush(link)?;
        FrameHead::binary(len)
    }
}

/// The longest frame header (RFC 6455 §5.2: 2 + 8 length + 4 mask bytes).
const FRAME_HEADER_BYTES_MAX: usize = 14;

/// The header of one unmasked, final binary frame (servers do not mask).
pub(crate) struct FrameHead {
    bytes: [u8; FRAME_HEADER_BYTES_MAX],
    len: usize,
}

impl FrameHead {
    fn binary(payload_len: usize) -> Result<FrameHead, TransportError> {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        let mut bytes = [0u8; FRAME_HEADER_BYTES_MAX];
        let mut cursor = Cursor::new(&mut bytes[..]);
        header.format(payload_len as u64, &mut cursor)?;
        let len = usize::try_from(cursor.position()).unwrap_or(FRAME_HEADER_BYTES_MAX);
        Ok(FrameHead { bytes, len })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

fn close_frame(code: CloseCode) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(""),
    }
}

fn read_messages(
    ctx: &mut WebSocketContext,
    link: &mut Link<'_>,
    app: &mut BytesMut,
    peer_closed: &mut bool,
) -> Result<(), TransportError> {
    loop {
        match ctx.read(link) {
            Ok(Message::Binary(data)) => app.extend_from_slice(&data),
            // tungstenite queued the pong; pongs and raw frames need nothing.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Text(_)) => {
                let _ = ctx.close(link, Some(close_frame(CloseCode::Unsupported)));
                link.discard_input();
                return Err(TransportError::TextFrame);
            }
            Ok(Message::Close(_))
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                *peer_closed = true;
                link.discard_input();
                return Ok(());
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(())
            }
            Err(e) => {
                let code = match &e {
                    tungstenite::Error::Capacity(_) => CloseCode::Size,
                    tungstenite::Error::Utf8(_) => CloseCode::Invalid,
                    _ => CloseCode::Protocol,
                };
                let _ = ctx.close(link, Some(close_frame(code)));
                link.discard_input();
                return Err(e.into());
            }
        }
    }
}

/// The upgrade request as it arrives, bounded by [`WS_REQUEST_BYTES_MAX`].
#[derive(Debug, Default)]
struct UpgradeRequest {
    bytes: Vec<u8>,
    end: HeaderEnd,
}

impl UpgradeRequest {
    /// Reads until the blank line that ends the request; gives the bytes read past
    /// it (frames a client sent without waiting for our answer), or `None` while
    /// the request is incomplete.
    fn read(&mut self, link: &mut Link<'_>) -> Result<Option<Vec<u8>>, Refusal> {
        let mut chunk = [0u8; 1024];
        loop {
            let room = WS_REQUEST_BYTES_MAX.saturating_sub(self.bytes.len());
            if room == 0 {
                return Err(Refusal::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "upgrade request too long",
                ));
            }
            let want = chunk.get_mut(..room.min(1024)).unwrap_or_default();
            let n = match link.read(want) {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => n,
            };
            let got = want.get(..n).unwrap_or_default();
            let end = self.end.find(got).map(|i| self.bytes.len() + i + 1);
            self.bytes.extend_from_slice(got);
            if let Some(end) = end {
                return Ok(Some(self.bytes.split_off(end)));
            }
        }
    }

    /// The 101 response to a valid upgrade on `path`, or why not.
    fn answer(&self, path: &str) -> Result<Vec<u8>, Refusal> {
        let request = match Request::try_parse(&self.bytes) {
            Ok(Some((_, request))) => request,
            Err(tungstenite::Error::Protocol(ProtocolError::WrongHttpMethod)) => {
                return Err(
                    Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "only GET upgrades")
                        .with_header("Allow: GET"),
                )
            }
            Ok(None) | Err(_) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "malformed HTTP request",
                ))
            }
        };
        if request.uri().path() != path {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "no WebSocket endpoint at this path",
            ));
        }
        let mut response = match create_response(&request) {
            Ok(response) => response,
            Err(tungstenite::Error::Protocol(ProtocolError::MissingSecWebSocketVersionHeader)) => {
                return Err(Refusal::new(
                    StatusCode::UPGRADE_REQUIRED,
                    "WebSocket version 13 required",
                )
                .with_header("Sec-WebSocket-Version: 13"))
            }
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "not a WebSocket upgrade",
                ))
            }
        };
        let mut offered = request
            .headers()
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .peekable();
        // A client that offers no subprotocol is served anyway: some MQTT
        // WebSocket clients omit it, and the MQTT CONNECT that follows is checked
        // all the same.
        if offered.peek().is_some() {
            if !offered.any(|name| name == SUBPROTOCOL) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "subprotocol mqtt required",
                ));
            }
            response.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        let mut bytes = Vec::with_capacity(256);
        write_response(&mut bytes, &response)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "request cannot be answered"))?;
        Ok(bytes)
    }
}

/// Finds the blank line ending HTTP headers (`\n\r\n` or a bare `\n\n`, as
/// httparse accepts both) across reads, without rescanning.
#[derive(Debug, Default)]
struct HeaderEnd {
    /// 0: nothing; 1: just after `\n`; 2: just after `\n\r`.
    seen: u8,
}

impl HeaderEnd {
    /// Index in `bytes` of the `\n` that ends the headers.
    fn find(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            self.seen = match (self.seen, b) {
                (1 | 2, b'\n') => return Some(i),
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }
}

/// An HTTP error answer to an upgrade we do not accept.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    header: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Refusal {
        Refusal {
            status,
            reason,
            header: None,
        }
    }

    fn with_header(self, header: &'static str) -> Refusal {
        Refusal {
            header: Some(header),
            ..self
        }
    }

    fn response(&self) -> Vec<u8> {
        let extra = self.header.map(|h| format!("{h}\r\n")).unwrap_or_default();
        format!(
            "HTTP/1.1 {}\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n{extra}\r\n{}\n",
            self.status,
            self.reason.len() + 1,
            self.reason,
        )
        .into_bytes()
    }
}
