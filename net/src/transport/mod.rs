//! TLS and WebSocket for a connection, sans-IO: no sockets, no clock, the caller
//! owns every buffer (after quinn-proto). The layers stack as
//! `wire <-> [TLS] <-> [WebSocket] <-> application bytes`.
//!
//! Layout:
//! - this file: [`Transport`], the per-connection state that runs the layers, and
//!   the limits of its buffers;
//! - [`tls`]: [`TlsSettings`], [`load_tls`] (PEM files to a rustls configuration,
//!   mTLS modes) and [`PeerIdentity`] from a client certificate;
//! - [`ws`]: [`WsSettings`], the HTTP upgrade and the frames (tungstenite);
//! - `link`: the byte stream between TLS and WebSocket that tungstenite reads
//!   and writes;
//! - [`error`]: [`TransportError`], for loading and for connections.
//!
//! A caller's loop: bytes read from the socket go to [`Transport::receive`], which
//! appends application bytes to the caller's buffer; then
//! [`Transport::poll_transmit`] gives what must be written (handshakes, pongs,
//! alerts); [`Transport::send`] wraps application bytes. After any error, call
//! `poll_transmit` once more and write its bytes (a TLS alert, an HTTP error
//! response or a close frame), then close the socket.

pub mod error;
mod link;
pub mod tls;
pub mod ws;

use std::io::IoSlice;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::{ServerConfig, ServerConnection};

pub use error::TransportError;
pub use tls::{load_tls, ClientCertMode, PeerIdentity, TlsSettings};
pub use ws::WsSettings;

use link::Link;
use ws::WsLayer;

/// Longest HTTP upgrade request (request line and headers) read before refusing
/// it with 431; browsers send well under 8 KiB unless cookies pile up.
pub const WS_REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Bytes the transport queues on its own (pongs, close frames, the upgrade
/// response, TLS records of them) before it stops adding more until
/// [`Transport::poll_transmit`] is called: a peer that floods pings gets its pongs
/// coalesced, never an ever-growing queue.
pub const TRANSMIT_PENDING_BYTES_MAX: usize = 64 * 1024;
/// Control frames (pong, close; at most 127 bytes each, unmasked) tungstenite may hold
/// when the pending queue is full; past it a new pong replaces the last one.
pub const WS_CONTROL_QUEUE_BYTES_MAX: usize = 1024;
/// How much the WebSocket frame decoder reads at a time; also its buffer's size
/// at rest, so kept small for many idle connections.
const WS_READ_CHUNK_BYTES: usize = 4 * 1024;

// The upgrade response (under 300 bytes) must fit the pending queue whole, and
// tungstenite's queue must hold a pong and a close frame (127 bytes each at most).
const _: () = assert!(TRANSMIT_PENDING_BYTES_MAX >= 1024);
const _: () = assert!(WS_CONTROL_QUEUE_BYTES_MAX >= 2 * 127);

/// Limits of one connection's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Largest WebSocket frame payload and message accepted from the peer; a
    /// larger one ends the connection (close code 1009) before it is buffered.
    /// MQTT packets may span messages, so this need not exceed the MQTT maximum
    /// packet size. TLS plaintext is bounded by rustls (16 KiB received, one
    /// record in decryption) and drained on every call.
    pub message_max: usize,
}

/// The TLS and/or WebSocket state of one connection. `Send`, so a connection can
/// move to another shard after CONNECT.
#[derive(Debug)]
pub struct Transport {
    tls: Option<ServerConnection>,
    ws: Option<WsLayer>,
    /// Output queued on its own by WebSocket without TLS (with TLS, rustls holds it).
    pending: BytesMut,
    peer_identity: Option<PeerIdentity>,
    tls_handshake_seen: bool,
    tls_peer_closed: bool,
    closing: bool,
    failed: bool,
}

impl Transport {
    /// A transport for a new connection: TLS with `tls`, WebSocket with `ws`, or
    /// WebSocket inside TLS with both.
    pub fn new(
        tls: Option<Arc<ServerConfig>>,
        ws: Option<&WsSettings>,
        limits: TransportLimits,
    ) -> Result<Transport, TransportError> {
        if tls.is_none() && ws.is_none() {
            return Err(TransportError::NoLayer);
        }
        if limits.message_max == 0 {
            return Err(TransportError::MessageMaxZero);
        }
        let tls = match tls {
            Some(config) => {
                let mut conn = ServerConnection::new(config)?;
                conn.set_buffer_limit(Some(TRANSMIT_PENDING_BYTES_MAX));
                Some(conn)
            }
            None => None,
        };
        Ok(Transport {
            tls,
            ws: ws.map(|settings| WsLayer::new(settings, limits.message_max)),
            pending: BytesMut::new(),
            peer_identity: None,
            tls_handshake_seen: false,
            tls_peer_closed: false,
            closing: false,
            failed: false,
        })
    }

    /// Consumes the bytes read from the socket in `wire` (all of them) and appends
    /// the application bytes they carry to `app`: at most the bytes of this call
    /// plus one WebSocket message begun earlier (`message_max`), so bounding reads
    /// bounds `app`. An error ends the connection; later calls
    /// answer [`TransportError::Failed`].
    pub fn receive(
        &mut self,
        wire: &mut BytesMut,
        app: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if self.failed {
            wire.clear();
            return Err(TransportError::Failed);
        }
        let result = self.receive_layers(wire, app);
        if result.is_err() {
            self.failed = true;
            wire.clear();
        }
        result
    }

    fn receive_layers(
        &mut self,
        wire: &mut BytesMut,
        app: &mut BytesMut,
    ) -> Result<(), TransportError> {
        let Some(conn) = &mut self.tls else {
            let Some(ws) = &mut self.ws else {
                return Err(TransportError::NoLayer);
            };
            let mut link = Link::Plain {
                input: wire,
                output: &mut self.pending,
                output_max: TRANSMIT_PENDING_BYTES_MAX,
            };
            return ws.receive(&mut link, app);
        };
        while !wire.is_empty() {
            let mut records: &[u8] = wire;
            let n = conn.read_tls(&mut records).map_err(TransportError::TlsIo)?;
            if n == 0 {
                // After close_notify rustls reads nothing more; neither do we.
                wire.clear();
                break;
            }
            bytes::Buf::advance(wire, n);
            let state = conn.process_new_packets()?;
            if state.peer_has_closed() {
                self.tls_peer_closed = true;
            }
            if !self.tls_handshake_seen && !conn.is_handshaking() {
                self.tls_handshake_seen = true;
                if let Some(cert) = conn.peer_certificates().and_then(|chain| chain.first()) {
                    self.peer_identity = Some(tls::peer_identity(cert)?);
                }
            }
            // Plaintext is taken after every record batch: rustls holds at most
            // 16 KiB of it and refuses to read more until it is drained.
            match &mut self.ws {
                Some(ws) => ws.receive(&mut Link::Tls { conn, out: None }, app)?,
                None => link::drain_plaintext(conn, app),
            }
        }
        Ok(())
    }

    /// Wraps `app` for the wire (TLS records; one WebSocket binary frame per call)
    /// and appends it to `out`.
    pub fn send(&mut self, app: &[u8], out: &mut BytesMut) -> Result<(), TransportError> {
        if self.failed {
            return Err(TransportError::Failed);
        }
        if self.closing {
            return Err(TransportError::Closed);
        }
        if !self.is_established() {
            return Err(TransportError::NotEstablished);
        }
        match (&mut self.tls, &mut self.ws) {
            (Some(conn), None) => {
                link::tls_write_all(conn, &mut [IoSlice::new(app)], out)
                    .map_err(TransportError::TlsIo)?;
            }
            (Some(conn), Some(ws)) => {
                let head = ws.begin_binary(
                    &mut Link::Tls {
                        conn,
                        out: Some(&mut *out),
                    },
                    app.len(),
                )?;
                let mut parts = [IoSlice::new(head.as_bytes()), IoSlice::new(app)];
                link::tls_write_all(conn, &mut parts, out).map_err(TransportError::TlsIo)?;
            }
            (None, Some(ws)) => {
                take_pending(&mut self.pending, out);
                let mut no_input = BytesMut::new();
                let head = ws.begin_binary(
                    &mut Link::Plain {
                        input: &mut no_input,
                        output: &mut *out,
                        output_max: usize::MAX,
                    },
                    app.len(),
                )?;
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(app);
            }
            (None, None) => return Err(TransportError::NoLayer),
        }
        Ok(())
    }

    /// Appends to `out` the bytes the transport must send on its own now: TLS
    /// handshake records and alerts, the upgrade response or an HTTP error, pongs,
    /// close frames.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) {
        match (&mut self.tls, &mut self.ws) {
            (Some(conn), ws) => {
                if let Some(ws) = ws {
                    ws.flush(&mut Link::Tls {
                        conn,
                        out: Some(&mut *out),
                    });
                }
                // Writing to a BytesMut cannot fail.
                let _ = link::drain_tls(conn, out);
            }
            (None, Some(ws)) => {
                take_pending(&mut self.pending, out);
                let mut no_input = BytesMut::new();
                ws.flush(&mut Link::Plain {
                    input: &mut no_input,
                    output: out,
                    output_max: usize::MAX,
                });
            }
            (None, None) => {}
        }
    }

    /// All handshakes are done: application bytes may flow.
    pub fn is_established(&self) -> bool {
        let tls_done = self.tls.as_ref().is_none_or(|conn| !conn.is_handshaking());
        let ws_done = self.ws.as_ref().is_none_or(WsLayer::is_open);
        tls_done && ws_done && !self.failed
    }

    /// The peer closed at the transport level (TLS close_notify or a WebSocket
    /// close frame): no more application bytes will come.
    pub fn is_closed(&self) -> bool {
        self.tls_peer_closed || self.ws.as_ref().is_some_and(WsLayer::is_peer_closed)
    }

    /// Appends our close (a WebSocket close frame, then TLS close_notify) and
    /// anything still queued to `out`; `send` refuses from now on.
    pub fn close(&mut self, out: &mut BytesMut) {
        if self.closing {
            return;
        }
        self.closing = true;
        match (&mut self.tls, &mut self.ws) {
            (Some(conn), ws) => {
                if let Some(ws) = ws {
                    ws.close(&mut Link::Tls {
                        conn,
                        out: Some(&mut *out),
                    });
                }
                conn.send_close_notify();
            }
            (None, Some(ws)) => {
                take_pending(&mut self.pending, out);
                let mut no_input = BytesMut::new();
                ws.close(&mut Link::Plain {
                    input: &mut no_input,
                    output: &mut *out,
                    output_max: usize::MAX,
                });
            }
            (None, None) => {}
        }
        self.poll_transmit(out);
    }

    /// The client certificate's identity, once the TLS handshake has verified one.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.peer_identity.as_ref()
    }
}

/// Moves the pending output to `out`; a queue grown by a burst of control frames
/// gives its memory back.
fn take_pending(pending: &mut BytesMut, out: &mut BytesMut) {
    if pending.is_empty() {
        return;
    }
    out.extend_from_slice(pending);
    if pending.capacity() > WS_READ_CHUNK_BYTES {
        *pending = BytesMut::new();
    } else {
        pending.clear();
    }
}

#[cfg(test)]
mod tests;
