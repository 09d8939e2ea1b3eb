//! One client connection: the CONNECT handshake on the shard that accepted it, the
//! hand-over to the shard that owns the client id, then a reader task (decode,
//! dispatch) and a writer task (flush the output buffer in batches).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use ringmq_core::codec::{self, DecodeError};
use ringmq_core::packet::{
    ConnAck, ConnAckProperties, Disconnect, DisconnectProperties, Packet, ProtocolVersion,
    Subscribe,
};
use ringmq_core::reason::ReasonCode;
use ringmq_core::session::{write_packet, Timestamp, Violation};
use ringmq_core::topic;
use ringmq_net::transport::{Transport, TransportLimits, WsSettings};
use ringmq_net::{ReadHalf, Stream, WriteHalf};
use tracing::{debug, info, warn};

use crate::config::{ListenerConfig, ListenerKind};
use crate::ring::{owner_of, Accepted, Adoption, ConnectionPermit, ShardMsg};
use crate::runtime::ShardCtx;
use crate::security::{self, Credentials, Login};
use crate::state::{clock_ns, quota_reason, Attached, CloseReason, ConnHandle, Ending};

/// Bytes asked of the socket per read: from `READ_CHUNK_MIN` for a quiet client (an
/// idle IoT connection should cost little memory) up to `READ_CHUNK_MAX` for one
/// that fills every read (batches for throughput). The read buffer is resident
/// memory, so it follows the client's pace.
const READ_CHUNK_MIN: usize = 1024;
const READ_CHUNK_MAX: usize = 16 * 1024;

/// Output buffer capacity kept between bursts.
const OUT_BUFFER_KEEP: usize = 4096;

/// Adapts the read size to what the last read brought.
fn next_chunk(chunk: usize, read: usize) -> usize {
    if read == chunk {
        (chunk * 2).min(READ_CHUNK_MAX)
    } else if read < chunk / 4 {
        (chunk / 2).max(READ_CHUNK_MIN)
    } else {
        chunk
    }
}

/// Buffers that grew for a burst are given back once they are empty again.
fn shrink_if_idle(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > 4 * keep {
        *buf = BytesMut::with_capacity(keep);
    }
}

/// Longest a SUBSCRIBE waits for the other shards' answers (they answer in
/// microseconds; this only bounds a shard that is stopping).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

/// A connection before its CONNECT is accepted: the socket and, for TLS and
/// WebSocket, the transport that unwraps it.
struct Opening {
    stream: Stream,
    transport: Option<Box<Transport>>,
    /// Bytes read from the socket not yet through the transport.
    wire: BytesMut,
}

impl Opening {
    /// Reads once and appends the application bytes to `app`; 0 means the peer
    /// closed. A transport answers its handshakes on the way.
    async fn read(&mut self, app: &mut BytesMut) -> io::Result<usize> {
        let Some(transport) = &mut self.transport else {
            return self.stream.read_into(app, READ_CHUNK_MIN).await;
        };
        if transport.is_closed() {
            return Ok(0);
        }
        let read = self
            .stream
            .read_into(&mut self.wire, READ_CHUNK_MIN)
            .await?;
        if read == 0 {
            return Ok(0);
        }
        let received = transport.receive(&mut self.wire, app);
        let mut out = BytesMut::new();
        transport.poll_transmit(&mut out);
        if !out.is_empty() {
            self.stream.write_all(&out).await?;
        }
        // Bytes that came with a close (a CONNECT, then close_notify) are still
        // read; the next call reports the close.
        match received {
            Ok(()) => Ok(read),
            Err(error) => Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
    }

    /// Writes application bytes (a refusal) through the transport.
    async fn write(&mut self, app: &[u8]) {
        let mut out = BytesMut::new();
        let bytes = match &mut self.transport {
            None => app,
            Some(transport) => {
                if transport.send(app, &mut out).is_err() {
                    return;
                }
                transport.close(&mut out);
                &out
            }
        };
        let _ = self.stream.write_all(bytes).await;
    }
}

/// The transport a listener's connections start with; `None` for plain MQTT.
fn transport_for(
    ctx: &ShardCtx,
    listener: &ListenerConfig,
) -> Result<Option<Box<Transport>>, String> {
    let ws = WsSettings {
        path: listener.ws_path.clone(),
    };
    let tls = || listener.tls.as_ref().map(|cell| cell.get());
    let (tls, ws) = match listener.kind {
        ListenerKind::Tcp => return Ok(None),
        ListenerKind::Tls => (tls(), None),
        ListenerKind::Ws => (None, Some(&ws)),
        ListenerKind::Wss => (tls(), Some(&ws)),
    };
    let limits = TransportLimits {
        message_max: ctx.limits().packet_size_max as usize,
    };
    Transport::new(tls, ws, limits)
        .map(|transport| Some(Box::new(transport)))
        .map_err(|error| error.to_string())
}

/// Reads until a CONNECT arrives, checks it and the client's credentials, and
/// serves the connection here or hands it to the shard that owns its client id.
pub(crate) async fn handshake(
    ctx: Rc<ShardCtx>,
    stream: Stream,
    peer: SocketAddr,
    listener: Rc<ListenerConfig>,
) {
    let limits = ctx.limits();
    if stream
        .set_read_timeout(Some(limits.connect_timeout))
        .is_err()
    {
        return;
    }
    let transport = match transport_for(&ctx, &listener) {
        Ok(transport) => transport,
        Err(error) => {
            warn!(%peer, %error, "cannot set up the connection's transport; closing");
            return;
        }
    };
    let mut opening = Opening {
        stream,
        transport,
        wire: BytesMut::new(),
    };
    let mut buf = BytesMut::with_capacity(READ_CHUNK_MIN);
    let mut connect = loop {
        match codec::decode(&mut buf, ProtocolVersion::V5, limits.packet_size_max) {
            Ok(Some(Packet::Connect(connect))) => break connect,
            Ok(Some(other)) => {
                warn!(%peer, packet = ?other.packet_type(), "first packet is not CONNECT; closing");
                return;
            }
            Ok(None) => {}
            Err(error) => {
                refuse_bad_connect(&mut opening, &buf, &error).await;
                warn!(%peer, %error, "invalid CONNECT; closing");
                ctx.stats.protocol_errors.inc();
                return;
            }
        }
        match opening.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => ctx.stats.bytes_received.add(n as u64),
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                debug!(%peer, "no CONNECT within {:?}; closing", limits.connect_timeout);
                return;
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                // A failed TLS or WebSocket handshake: a scan, a wrong CA, a
                // client without the certificate a listener requires.
                info!(%peer, listener = %listener.url(), %error, "transport handshake failed; closing");
                return;
            }
            Err(_) => return,
        }
    };
    let version = connect.protocol;
    let mut assigned = false;
    if connect.client_id.is_empty() {
        if version == ProtocolVersion::V311 && !connect.clean_start {
            refuse(&mut opening, version, ReasonCode::ClientIdentifierNotValid).await;
            info!(%peer, "empty client id without clean session; refused");
            return;
        }
        connect.client_id = ctx.assign_client_id();
        assigned = true;
    }
    if connect.properties.authentication_method.is_some() {
        refuse(&mut opening, version, ReasonCode::BadAuthenticationMethod).await;
        info!(%peer, client = %connect.client_id, "enhanced authentication is not supported; refused");
        return;
    }
    if let Some(will) = &connect.will {
        if topic::validate_topic_name(&will.topic, limits.topic_levels_max).is_err() {
            refuse(&mut opening, version, ReasonCode::TopicNameInvalid).await;
            info!(%peer, client = %connect.client_id, "invalid will topic; refused");
            return;
        }
    }
    let Some(permit) = ConnectionPermit::acquire(&ctx.connections, limits.connections_max) else {
        // Counted first: whoever sees the refusal can already see it counted.
        ctx.stats.connections_refused.inc();
        refuse(&mut opening, version, quota_reason(version)).await;
        warn!(%peer, max = limits.connections_max, "connection limit reached; refused");
        return;
    };
    let listener_max = listener.auth.connections_max;
    let listener_permit = if listener_max == 0 {
        None
    } else if let Some(permit) = ConnectionPermit::acquire(&listener.connections, listener_max) {
        Some(permit)
    } else {
        ctx.stats.connections_refused.inc();
        refuse(&mut opening, version, quota_reason(version)).await;
        warn!(%peer, listener = %listener.url(), max = listener_max, "listener connection limit reached; refused");
        return;
    };
    let credentials = Credentials {
        ip: peer.ip(),
        username: connect.username.as_ref(),
        password: connect.password.as_ref(),
        certificate: opening
            .transport
            .as_ref()
            .and_then(|transport| transport.peer_identity()),
    };
    let username = match security::authenticate(&ctx.security, &listener.auth, credentials).await {
        Ok(username) => username,
        Err(refusal) => {
            ctx.stats.logins_refused.inc();
            refuse(&mut opening, version, refusal.reason(version)).await;
            warn!(
                %peer,
                client = %connect.client_id,
                user = connect.username.as_deref().unwrap_or(""),
                why = refusal.describe(),
                "login refused"
            );
            return;
        }
    };
    let rules = ctx.security.rules();
    let login = Login {
        acl: Login::compile(
            &rules,
            listener.auth.acl,
            username.as_deref(),
            &connect.client_id,
        ),
        acl_scope: listener.auth.acl,
        username,
    };
    drop(rules);
    let accepted = Accepted {
        peer,
        leftover: buf.split().freeze(),
        connect,
        assigned_id: assigned,
        permit,
        listener_permit,
        transport: opening.transport.take(),
        login,
    };
    let owner = owner_of(accepted.connect.client_id.as_bytes(), ctx.shards);
    if owner == ctx.id {
        serve(ctx, opening.stream, accepted).await;
        return;
    }
    match opening.stream.into_socket() {
        Ok(socket) => ctx.send(
            owner,
            ShardMsg::Adopt(Box::new(Adoption { socket, accepted })),
        ),
        Err(error) => warn!(%peer, %error, "could not hand the connection over; closing"),
    }
}

/// Answers a CONNECT that failed to decode, when its version tells how.
async fn refuse_bad_connect(opening: &mut Opening, buf: &BytesMut, error: &DecodeError) {
    match error {
        DecodeError::UnsupportedProtocolVersion(level) if *level < 5 => {
            // An MQTT 3.x client reads the 3.1.1 form: return code 1.
            opening.write(&[0x20, 0x02, 0x00, 0x01]).await;
        }
        DecodeError::UnsupportedProtocolVersion(_) => {
            refuse(
                opening,
                ProtocolVersion::V5,
                ReasonCode::UnsupportedProtocolVersion,
            )
            .await;
        }
        _ if connect_level(buf) == Some(5) => {
            let reason = match error.reason_code() {
                reason @ (ReasonCode::MalformedPacket
                | ReasonCode::PacketTooLarge
                | ReasonCode::TopicNameInvalid) => reason,
                _ => ReasonCode::ProtocolError,
            };
            refuse(opening, ProtocolVersion::V5, reason).await;
        }
        _ => {}
    }
}

/// The protocol level of a CONNECT at the start of `buf`, if that far has arrived.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let header = codec::check(buf, u32::MAX).ok().flatten()?;
    // Protocol name "MQTT" (2 + 4 bytes), then the level.
    buf.get(header.header_len + 6).copied()
}

fn refusal(reason: ReasonCode) -> Packet {
    Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason,
        properties: ConnAckProperties::default(),
    }))
}

async fn refuse(opening: &mut Opening, version: ProtocolVersion, reason: ReasonCode) {
    let mut out = BytesMut::new();
    write_packet(&refusal(reason), version, &mut out);
    opening.write(&out).await;
}

/// Serves an accepted connection on the shard that owns its client id.
pub(crate) async fn serve(ctx: Rc<ShardCtx>, stream: Stream, accepted: Accepted) {
    let Accepted {
        peer,
        connect,
        assigned_id,
        leftover,
        permit,
        listener_permit,
        transport,
        login,
    } = accepted;
    let (mut reader, writer) = match stream.split() {
        Ok(halves) => halves,
        Err(error) => {
            warn!(%peer, %error, "could not set up the connection; closing");
            return;
        }
    };
    let transport = transport.map(|transport| Rc::new(RefCell::new(*transport)));
    let client_id = connect.client_id.clone();
    let generation = ctx.state.borrow_mut().next_generation();
    let conn = ConnHandle::new(generation, peer);
    let version = connect.protocol;
    let attach = ctx
        .state
        .borrow_mut()
        .attach(connect, assigned_id, &conn, login);
    let attached = match attach {
        Ok(attached) => attached,
        Err(reason) => {
            let mut out = BytesMut::new();
            write_packet(&refusal(reason), version, &mut out);
            conn.out.borrow_mut().extend_from_slice(&out);
            conn.close_with(CloseReason::Kicked(reason));
            write_loop(Rc::clone(&ctx), writer, Rc::clone(&conn), transport).await;
            warn!(client = %client_id, %peer, %reason, "session table full; refused");
            return;
        }
    };
    glommio::spawn_local(write_loop(
        Rc::clone(&ctx),
        writer,
        Rc::clone(&conn),
        transport.clone(),
    ))
    .detach();
    ctx.flush().await;
    info!(client = %client_id, %peer, shard = ctx.id, version = ?attached.version, "connected");

    // Keep alive is enforced at one and a half times the client's (MQTT 3.1.2.10).
    let keep_alive_ms = u64::from(attached.keep_alive_s) * 1500;
    let timeout = (keep_alive_ms > 0).then(|| Duration::from_millis(keep_alive_ms));
    if reader.set_timeout(timeout).is_err() {
        conn.close_with(CloseReason::Kicked(ReasonCode::UnspecifiedError));
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK_MIN.max(leftover.len()));
    buf.extend_from_slice(&leftover);
    let mut input = Input {
        reader: &mut reader,
        transport,
        wire: BytesMut::new(),
    };
    let (ending, why) = read_loop(&ctx, &mut input, &mut buf, &conn, attached, &client_id).await;
    ctx.state
        .borrow_mut()
        .detach(attached.key, generation, ending);
    ctx.flush().await;
    if conn.close.get().is_none() {
        conn.close_with(CloseReason::Kicked(ReasonCode::Success));
    }
    info!(client = %client_id, %peer, reason = why, "disconnected");
    drop(permit);
    drop(listener_permit);
}

/// The reading side of a served connection.
struct Input<'a> {
    reader: &'a mut ReadHalf,
    /// Shared with the writer task; `None` for plain MQTT.
    transport: Option<Rc<RefCell<Transport>>>,
    wire: BytesMut,
}

/// What one read brought.
enum Read {
    /// Bytes came from the socket (application bytes may be fewer, even none).
    Bytes(usize),
    /// The peer closed: the socket, or the transport (close_notify, WebSocket close).
    Closed,
    TimedOut,
    /// A broken TLS record or WebSocket frame.
    Transport,
    Failed,
}

impl Input<'_> {
    async fn read(&mut self, buf: &mut BytesMut, chunk: usize, conn: &ConnHandle) -> Read {
        let Some(transport) = &self.transport else {
            return match self.reader.read_into(buf, chunk).await {
                Ok(0) => Read::Closed,
                Ok(n) => Read::Bytes(n),
                Err(error) if error.kind() == io::ErrorKind::TimedOut => Read::TimedOut,
                Err(_) => Read::Failed,
            };
        };
        if transport.borrow().is_closed() {
            return Read::Closed;
        }
        let n = match self.reader.read_into(&mut self.wire, chunk).await {
            Ok(0) => return Read::Closed,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::TimedOut => return Read::TimedOut,
            Err(_) => return Read::Failed,
        };
        let mut transport = transport.borrow_mut();
        let received = transport.receive(&mut self.wire, buf);
        // Whatever the transport has to answer (a pong, an alert) goes out with
        // the writer.
        conn.wake.notify();
        // What came before a close (DISCONNECT, then close_notify) is decoded
        // first; the next read reports the close.
        match received {
            Err(_) => Read::Transport,
            Ok(()) => Read::Bytes(n),
        }
    }
}

enum Next {
    Continue,
    /// Checked and planned; the caller awaits the other shards (`subscribe_and_wait`).
    Subscribe(Subscribe),
    Stop(Ending, &'static str),
}

async fn read_loop(
    ctx: &Rc<ShardCtx>,
    input: &mut Input<'_>,
    buf: &mut BytesMut,
    conn: &Rc<ConnHandle>,
    attached: Attached,
    client_id: &ByteString,
) -> (Ending, &'static str) {
    let max = ctx.limits().packet_size_max;
    let mut chunk = READ_CHUNK_MIN;
    // The last read filled its chunk: the socket may hold more, and the next read
    // would complete without waiting.
    let mut more_waiting = false;
    // Cleared when a wait for a congested subscriber gave up at the write timeout:
    // the rest of what was read then goes through (and past the queue limit, is
    // dropped) instead of waiting that long again per message.
    let mut hold_for_congestion = true;
    loop {
        // The clock is read once per batch of packets (it dates expiry and acks, in
        // milliseconds), and again after anything that awaited.
        let mut batch_now = None;
        // A PUBLISH left a subscriber congested (backpressure): the rest of the
        // batch waits in the buffer until it drains, so many publishers reading
        // large batches at once cannot overrun its queue.
        let mut congested = false;
        loop {
            if let Some(reason) = conn.close.get() {
                return (Ending::Abnormal, reason.describe());
            }
            match codec::decode(buf, attached.version, max) {
                Ok(Some(packet)) => {
                    let now = *batch_now.get_or_insert_with(crate::state::now);
                    let next = match dispatch(ctx, conn, attached, packet, now) {
                        // The one packet that awaits (the other shards' answers):
                        // whatever follows it reads the clock again.
                        Ok(Next::Subscribe(subscribe)) => {
                            batch_now = None;
                            subscribe_and_wait(ctx, conn, attached, subscribe)
                                .await
                                .map(|()| Next::Continue)
                        }
                        next => next,
                    };
                    match next {
                        Ok(Next::Continue | Next::Subscribe(_)) => {
                            if hold_for_congestion && ctx.state.borrow().has_congested() {
                                congested = true;
                                break;
                            }
                        }
                        Ok(Next::Stop(ending, why)) => return (ending, why),
                        Err(violation) => {
                            kick(ctx, conn, attached.version, violation, client_id);
                            return (Ending::Abnormal, violation.what);
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let violation = Violation {
                        reason: error.reason_code(),
                        what: "undecodable packet",
                    };
                    warn!(client = %client_id, peer = %conn.peer, %error, "protocol error");
                    kick(ctx, conn, attached.version, violation, client_id);
                    return (Ending::Abnormal, "protocol error");
                }
            }
        }
        ctx.flush().await;
        if !crate::runtime::wait_for_congestion(ctx).await {
            hold_for_congestion = false;
        }
        if congested {
            // Whole packets may still be in the buffer: decode them before reading.
            continue;
        }
        // A read of a socket that always has data completes without waiting, so a
        // client that publishes flat out would keep the shard to itself: give the
        // other connections their turn after a batch that filled the read. After a
        // shorter read the runtime polls the socket before the next read completes,
        // and a yield would only cost an extra turn of the executor (three
        // `io_uring_enter`s, at a rate where every message wakes the shard).
        if more_waiting {
            glommio::executor().yield_now().await;
        }
        // A client that does not read its messages stops being read: its output
        // buffer, even its own PINGRESPs, never grows past the limit.
        let outbound_max = ctx.limits().outbound_bytes_max;
        while conn.out.borrow().len() >= outbound_max && conn.close.get().is_none() {
            conn.drained.notified().await;
        }
        shrink_if_idle(buf, chunk);
        let read = input.read(buf, chunk, conn).await;
        if let (Read::Closed | Read::Failed, Some(reason)) = (&read, conn.close.get()) {
            // The broker closed the socket itself (takeover, a failed write).
            return (Ending::Abnormal, reason.describe());
        }
        match read {
            Read::Closed => return (Ending::Abnormal, "connection closed by the client"),
            Read::Bytes(n) => {
                ctx.stats.bytes_received.add(n as u64);
                more_waiting = n >= chunk;
                hold_for_congestion = true;
                chunk = next_chunk(chunk, n);
            }
            Read::TimedOut => {
                if attached.version == ProtocolVersion::V5 {
                    conn.write(
                        &disconnect(ReasonCode::KeepAliveTimeout),
                        ProtocolVersion::V5,
                    );
                }
                conn.close_with(CloseReason::Kicked(ReasonCode::KeepAliveTimeout));
                return (Ending::Abnormal, "keep alive timeout");
            }
            Read::Transport => {
                warn!(client = %client_id, peer = %conn.peer, "broken TLS record or WebSocket frame; closing");
                conn.close_with(CloseReason::Kicked(ReasonCode::MalformedPacket));
                return (Ending::Abnormal, "transport error");
            }
            Read::Failed => return (Ending::Abnormal, "network error"),
        }
    }
}

fn disconnect(reason: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect {
        reason,
        ..Disconnect::default()
    })
}

/// Ends a connection that broke the protocol: MQTT 5 learns why in a DISCONNECT.
fn kick(
    ctx: &ShardCtx,
    conn: &ConnHandle,
    version: ProtocolVersion,
    violation: Violation,
    client_id: &str,
) {
    ctx.stats.protocol_errors.inc();
    warn!(client = %client_id, peer = %conn.peer, reason = %violation.reason, what = violation.what, "closing connection");
    if version == ProtocolVersion::V5 {
        // A Reason String is always allowed on DISCONNECT (MQTT 5 3.1.2.11.7).
        let packet = Packet::Disconnect(Disconnect {
            reason: violation.reason,
            properties: DisconnectProperties {
                reason_string: Some(ByteString::from_static(violation.what)),
                ..DisconnectProperties::default()
            },
        });
        conn.write(&packet, version);
    }
    conn.close_with(CloseReason::Kicked(violation.reason));
}

fn protocol_error(what: &'static str) -> Violation {
    Violation {
        reason: ReasonCode::ProtocolError,
        what,
    }
}

/// Handles one packet from the client without awaiting, so the per-message path
/// builds no future; a SUBSCRIBE comes back to be awaited.
fn dispatch(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<ConnHandle>,
    attached: Attached,
    packet: Packet,
    now: Timestamp,
) -> Result<Next, Violation> {
    let key = attached.key;
    match packet {
        Packet::Publish(publish) => ctx.state.borrow_mut().inbound_publish(key, publish, now)?,
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PubRel(_) => {
            ctx.state.borrow_mut().outbound_ack(key, &packet, now);
        }
        Packet::Subscribe(subscribe) => return Ok(Next::Subscribe(subscribe)),
        Packet::Unsubscribe(unsubscribe) => ctx.state.borrow_mut().unsubscribe(key, unsubscribe),
        Packet::PingReq => conn.write(&Packet::PingResp, attached.version),
        Packet::Disconnect(disconnect) => {
            let ending = Ending::Disconnect {
                with_will: disconnect.reason == ReasonCode::DisconnectWithWill,
                expiry_s: disconnect.properties.session_expiry_interval_s,
            };
            conn.close_with(CloseReason::Kicked(ReasonCode::Success));
            return Ok(Next::Stop(ending, "DISCONNECT"));
        }
        Packet::Auth(_) => return Err(protocol_error("AUTH without an authentication method")),
        Packet::Connect(_) => return Err(protocol_error("second CONNECT")),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Err(protocol_error("a server-to-client packet from the client"))
        }
    }
    Ok(Next::Continue)
}

/// A SUBSCRIBE: checked and planned here, then, with more than one shard, the
/// retained messages of the other shards are awaited before the SUBACK.
async fn subscribe_and_wait(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<ConnHandle>,
    attached: Attached,
    subscribe: Subscribe,
) -> Result<(), Violation> {
    let key = attached.key;
    let plan = ctx.state.borrow_mut().subscribe(key, subscribe)?;
    let remote = if ctx.shards > 1 {
        // The query travels behind the interest updates on every ring, so
        // when all shards have answered, all of them route to this client.
        let filters = plan.retained_filters();
        let (token, done) = {
            let mut state = ctx.state.borrow_mut();
            let waiter = state.new_waiter(ctx.shards - 1);
            for shard in (0..ctx.shards).filter(|&s| s != ctx.id) {
                state.outbox.push((
                    shard,
                    ShardMsg::Query {
                        token: waiter.0,
                        from: ctx.id as u16,
                        filters: filters.clone(),
                    },
                ));
            }
            waiter
        };
        let _ = token;
        ctx.flush().await;
        glommio::timer::timeout(SUBSCRIBE_WAIT, async { Ok(done.wait().await) })
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    ctx.state
        .borrow_mut()
        .finish_subscribe(key, conn.generation, plan, remote);
    Ok(())
}

/// Writes whatever collects in the connection's output buffer, all of it per write
/// (many frames per submission under load), until the connection closes. With a
/// transport, the buffer is wrapped first and the transport's own output (pongs,
/// alerts) goes along.
async fn write_loop(
    ctx: Rc<ShardCtx>,
    mut writer: WriteHalf,
    conn: Rc<ConnHandle>,
    transport: Option<Rc<RefCell<Transport>>>,
) {
    if writer
        .set_timeout(Some(ctx.limits().write_timeout))
        .is_err()
    {
        writer.close().await;
        return;
    }
    let mut spare = BytesMut::new();
    let mut wire = BytesMut::new();
    loop {
        let (has_data, sample_ns) = {
            let mut out = conn.out.borrow_mut();
            if out.is_empty() {
                (false, 0)
            } else {
                std::mem::swap(&mut *out, &mut spare);
                (true, conn.sample_ns.replace(0))
            }
        };
        let bytes: &[u8] = match &transport {
            None => &spare,
            Some(transport) => {
                let mut transport = transport.borrow_mut();
                if has_data && transport.send(&spare, &mut wire).is_err() {
                    break;
                }
                transport.poll_transmit(&mut wire);
                &wire
            }
        };
        if !bytes.is_empty() {
            let sent = match writer.try_write(bytes) {
                Ok(sent) => sent,
                Err(_) => break,
            };
            if writer
                .write_all(bytes.get(sent..).unwrap_or_default())
                .await
                .is_err()
            {
                break;
            }
            if sample_ns != 0 {
                let elapsed_ns = clock_ns().saturating_sub(sample_ns);
                ctx.stats
                    .delivery_latency
                    .record(Duration::from_nanos(elapsed_ns));
            }
            ctx.stats.bytes_sent.add(bytes.len() as u64);
            spare.clear();
            wire.clear();
            shrink_if_idle(&mut spare, OUT_BUFFER_KEEP);
            shrink_if_idle(&mut wire, OUT_BUFFER_KEEP);
            conn.drained.notify();
            continue;
        }
        spare.clear();
        if conn.close.get().is_some() {
            break;
        }
        conn.wake.notified().await;
    }
    // Whatever made the writer stop, the reader must stop too.
    if conn.close.get().is_none() {
        conn.close.set(Some(CloseReason::WriteFailed));
    }
    if let Some(transport) = &transport {
        // A goodbye the peer can tell from a cut: WebSocket close, close_notify.
        wire.clear();
        transport.borrow_mut().close(&mut wire);
        if !wire.is_empty() {
            let _ = writer.try_write(&wire);
        }
    }
    writer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_follows_the_client() {
        assert_eq!(
            next_chunk(READ_CHUNK_MIN, READ_CHUNK_MIN),
            2 * READ_CHUNK_MIN
        );
        assert_eq!(next_chunk(READ_CHUNK_MAX, READ_CHUNK_MAX), READ_CHUNK_MAX);
        assert_eq!(next_chunk(8192, 100), 4096);
        assert_eq!(next_chunk(READ_CHUNK_MIN, 10), READ_CHUNK_MIN);
        assert_eq!(next_chunk(4096, 3000), 4096);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        shrink_if_idle(&mut buf, 1024);
        assert!(buf.capacity() < 8192);
        let mut busy = BytesMut::with_capacity(64 * 1024);
        busy.extend_from_slice(b"pending");
        shrink_if_idle(&mut busy, 1024);
        assert!(
            busy.capacity() >= 64 * 1024,
            "a buffer holding data is kept"
        );
    }
}
