//! Listeners: every shard binds its own socket to the same address with
//! `SO_REUSEPORT`, and the kernel spreads new connections over them.

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, IntoRawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::stream::Stream;

fn reuseport_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// A bound, not listening, socket that holds a port while the shards bind to it.
///
/// `HOST:0` asks the kernel for a port; every shard must then use the same one. The
/// reservation binds first (with `SO_REUSEPORT`) and stays bound until the shards
/// have bound theirs, so no other process can take the port in between. It never
/// listens, so it never receives connections.
#[derive(Debug)]
pub struct PortReservation {
    socket: Socket,
    addr: SocketAddr,
}

impl PortReservation {
    pub fn new(addr: SocketAddr) -> io::Result<PortReservation> {
        let socket = reuseport_socket(addr)?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
        Ok(PortReservation { socket, addr })
    }

    /// The address with its real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Releases the port once the shards hold it.
    pub fn release(self) {
        drop(self.socket);
    }
}

/// One shard's listening socket.
#[derive(Debug)]
pub struct Listener {
    inner: glommio::net::TcpListener,
}

impl Listener {
    /// Binds and listens on `addr` with `SO_REUSEPORT`, on the calling shard.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        let socket = reuseport_socket(addr)?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        // SAFETY: `into_raw_fd` hands over sole ownership of a valid, listening TCP
        // socket descriptor; the glommio listener becomes its only owner.
        let inner = unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
        Ok(Listener { inner })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(io::Error::from)
    }

    /// Waits for the next connection, with `TCP_NODELAY` set: MQTT frames are small
    /// and latency matters more than segment count (writes are batched anyway).
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let stream = self.inner.accept().await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((Stream::new(stream), peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_resolves_port_zero_and_shards_share_it() {
        let reservation = PortReservation::new(
            "127.0.0.1:0"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .map_err(|e| e.to_string());
        let reservation = match reservation {
            Ok(r) => r,
            Err(e) => panic!("reserve: {e}"),
        };
        let addr = reservation.addr();
        assert_ne!(addr.port(), 0);
        // Two more sockets with SO_REUSEPORT can bind the same port while it is held.
        let a = reuseport_socket(addr).map(|s| s.listen(16));
        let b = reuseport_socket(addr).map(|s| s.listen(16));
        assert!(matches!(a, Ok(Ok(()))), "{a:?}");
        assert!(matches!(b, Ok(Ok(()))), "{b:?}");
        reservation.release();
    }
}
