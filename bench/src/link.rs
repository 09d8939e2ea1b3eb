//! One MQTT client connection of the generator, on a glommio `TcpStream`.
//!
//! A link is driven by exactly one task. Reading and writing happen in the same
//! task: [`Link::step`] polls the pending write, the socket's read side, an optional
//! timer and an optional [`Signal`] together and returns the first that is ready.
//! glommio keeps separate readiness sources for the two directions of a stream, so a
//! write blocked on a full socket never stops acks from being read, and no second
//! descriptor, lock or channel is needed.
//!
//! Reads land in a per-thread scratch buffer and only the bytes read are copied into
//! the link's own buffer, so an idle link holds almost no memory: a thread can carry
//! thousands of them.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use ringmq_core::codec::{decode, encode};
use ringmq_core::packet::{
    ConnAck, Connect, ConnectProperties, Disconnect, Packet, PacketId, ProtocolVersion, QoS,
    Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
};

/// Bytes one read takes from the socket at most.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Largest packet accepted from the broker.
pub const PACKET_BYTES_MAX: u32 = 1024 * 1024;
/// Session expiry asked for with `--persistent` (MQTT 5).
const PERSISTENT_EXPIRY_S: u32 = 3600;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK_BYTES]);
}

/// What woke a [`Link::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Bytes were appended to the read buffer.
    Read,
    /// The write buffer was fully written and is empty again.
    Written,
    Timer,
    Signal,
}

/// A one-way flag for the tasks of one thread, with the wakers of those waiting.
/// Every task registers at most once, because each link has one task and a task's
/// waker does not change.
#[derive(Debug, Default)]
pub struct Signal {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub fn raise(&self) {
        self.set.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Ready once raised; `registered` is the caller's memory of having registered.
    pub fn poll_raised(&self, cx: &Context<'_>, registered: &mut bool) -> Poll<()> {
        if self.set.get() {
            return Poll::Ready(());
        }
        if !*registered {
            self.waiters.borrow_mut().push(cx.waker().clone());
            *registered = true;
        }
        Poll::Pending
    }

    pub async fn raised(&self) {
        let mut registered = false;
        std::future::poll_fn(|cx| self.poll_raised(cx, &mut registered)).await;
    }
}

/// Where a link connects from and to.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub host: SocketAddr,
    pub source: Option<IpAddr>,
}

/// How a link introduces itself.
#[derive(Clone, Copy, Debug)]
pub struct Hello<'a> {
    pub client_id: &'a str,
    pub version: ProtocolVersion,
    pub persistent: bool,
    /// 0: off. The generator sends no PINGREQ, so it must outlast the run.
    pub keep_alive_s: u16,
}

/// A connected MQTT client.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    pub version: ProtocolVersion,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    written: usize,
    signal_registered: bool,
    next_packet_id: u16,
}

/// Starts a TCP connection without blocking the thread. With a source address the
/// socket is bound first (glommio's own connect cannot bind); the connection then
/// completes when the first write goes out.
pub fn open(endpoint: Endpoint) -> Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let domain = Domain::for_address(endpoint.host);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nodelay(true)?;
    if let Some(ip) = endpoint.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
            .with_context(|| format!("binding a client socket to {ip}"))?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(endpoint.host)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", endpoint.host)),
    }
    Ok(TcpStream::from(socket))
}

impl Link {
    pub fn new(stream: TcpStream, version: ProtocolVersion) -> Link {
        Link {
            stream,
            version,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            written: 0,
            signal_registered: false,
            next_packet_id: 0,
        }
    }

    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(
        endpoint: Endpoint,
        hello: Hello<'_>,
        timeout: Duration,
    ) -> Result<(Link, ConnAck)> {
        let mut link = Link::new(open(endpoint)?, hello.version);
        let connect = Connect {
            protocol: hello.version,
            clean_start: !hello.persistent,
            keep_alive_s: hello.keep_alive_s,
            client_id: hello.client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval_s: match (hello.persistent, hello.version) {
                    (true, ProtocolVersion::V5) => Some(PERSISTENT_EXPIRY_S),
                    _ => None,
                },
                ..ConnectProperties::default()
            },
        };
        link.send(&Packet::Connect(Box::new(connect)))?;
        let connack = within(timeout, async {
            link.flush().await?;
            match link.next_packet().await? {
                Packet::ConnAck(connack) => Ok(*connack),
                other => bail!("expected CONNACK, got {:?}", other.packet_type()),
            }
        })
        .await
        .with_context(|| format!("CONNECT to {} as {}", endpoint.host, hello.client_id))?;
        if connack.reason.is_error() {
            bail!(
                "CONNECT to {} as {} refused: {}",
                endpoint.host,
                hello.client_id,
                connack.reason.text()
            );
        }
        Ok((link, connack))
    }

    /// Subscribes to one filter and waits for the SUBACK to grant it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS, timeout: Duration) -> Result<()> {
        let packet_id = self.packet_id();
        let subscribe = Subscribe {
            packet_id,
            subscriptions: vec![Subscription {
                filter: filter.into(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: SubscribeProperties::default(),
        };
        self.send(&Packet::Subscribe(subscribe))?;
        within(timeout, async {
            self.flush().await?;
            match self.next_packet().await? {
                Packet::SubAck(suback) if suback.packet_id == packet_id => {
                    match suback.reasons.first() {
                        Some(reason) if !reason.is_error() => Ok(()),
                        Some(reason) => bail!("SUBSCRIBE {filter} refused: {}", reason.text()),
                        None => bail!("SUBACK without a reason code"),
                    }
                }
                other => bail!("expected SUBACK, got {:?}", other.packet_type()),
            }
        })
        .await
    }

    /// A packet id for a control packet (SUBSCRIBE, PINGREQ round trips).
    fn packet_id(&mut self) -> PacketId {
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        PacketId::new(self.next_packet_id).unwrap_or(PacketId(std::num::NonZeroU16::MIN))
    }

    /// Appends a packet to the write buffer.
    pub fn send(&mut self, packet: &Packet) -> Result<()> {
        encode(packet, self.version, &mut self.wbuf).map_err(|e| anyhow!("encoding: {e}"))?;
        Ok(())
    }

    /// Decodes the next whole packet from the read buffer, if there is one.
    pub fn decode_next(&mut self) -> Result<Option<Packet>> {
        decode(&mut self.rbuf, self.version, PACKET_BYTES_MAX)
            .map_err(|e| anyhow!("from the broker: {e}"))
    }

    /// Reads until one whole packet is there (set-up and tear-down only).
    pub async fn next_packet(&mut self) -> Result<Packet> {
        loop {
            if let Some(packet) = self.decode_next()? {
                return Ok(packet);
            }
            self.step(None, None).await?;
        }
    }

    /// Writes out everything buffered.
    pub async fn flush(&mut self) -> Result<()> {
        while self.written < self.wbuf.len() {
            self.step(None, None).await?;
        }
        Ok(())
    }

    /// Sends a PINGREQ and waits for the PINGRESP: once it is back, the broker has
    /// handled every packet this link sent before it.
    pub async fn round_trip(&mut self, timeout: Duration) -> Result<()> {
        self.send(&Packet::PingReq)?;
        within(timeout, async {
            self.flush().await?;
            loop {
                if let Packet::PingResp = self.next_packet().await? {
                    return Ok(());
                }
            }
        })
        .await
    }

    /// Sends DISCONNECT (best effort, bounded by `timeout`) and closes.
    pub async fn close(mut self, timeout: Duration) {
        if self
            .send(&Packet::Disconnect(Disconnect::default()))
            .is_ok()
        {
            let _ = within(timeout, self.flush()).await;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both).await;
    }

    /// True when nothing is waiting to be written.
    pub fn write_idle(&self) -> bool {
        self.written >= self.wbuf.len()
    }

    /// Waits for the first of: the write buffer drained, bytes read, `timer`,
    /// `signal`. A closed connection is an error.
    pub async fn step(
        &mut self,
        mut timer: Option<&mut Timer>,
        signal: Option<&Signal>,
    ) -> Result<Wake> {
        let Link {
            stream,
            rbuf,
            wbuf,
            written,
            signal_registered,
            ..
        } = self;
        std::future::poll_fn(|cx| {
            while *written < wbuf.len() {
                let pending = wbuf.get(*written..).unwrap_or_default();
                match Pin::new(&mut *stream).poll_write(cx, pending) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => *written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
                if *written >= wbuf.len() {
                    wbuf.clear();
                    *written = 0;
                    return Poll::Ready(Ok(Wake::Written));
                }
            }
            // Timer and signal before the socket: a peer that never stops sending must
            // not hide the end of the run.
            if let Some(timer) = timer.as_deref_mut() {
                if Pin::new(timer).poll(cx).is_ready() {
                    return Poll::Ready(Ok(Wake::Timer));
                }
            }
            if let Some(signal) = signal {
                if signal.poll_raised(cx, signal_registered).is_ready() {
                    return Poll::Ready(Ok(Wake::Signal));
                }
            }
            let read = SCRATCH.with_borrow_mut(|scratch| {
                match Pin::new(&mut *stream).poll_read(cx, scratch) {
                    Poll::Ready(Ok(n)) => {
                        rbuf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            });
            match read {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                ))),
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(Wake::Read)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
        .map_err(anyhow::Error::from)
    }
}

/// Runs `work` for at most `timeout`.
pub async fn within<T>(timeout: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    futures_lite::future::or(work, async {
        glommio::timer::sleep(timeout).await;
        Err(anyhow!("timed out after {timeout:?}"))
    })
    .await
}
