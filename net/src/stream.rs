//! A client connection on one shard.
//!
//! glommio's stream is one object; reading and writing it from two tasks would need
//! a lock held across the pending read. Instead the socket gets a second descriptor
//! (`dup`): the reading half owns one, the writing half the other, and each has its
//! own glommio source. Closing either half with `shutdown` ends the other's wait.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::unix::io::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;

/// A connection not yet split; it can still move to another shard.
#[derive(Debug)]
pub struct Stream {
    inner: TcpStream,
}

impl Stream {
    pub(crate) fn new(inner: TcpStream) -> Stream {
        Stream { inner }
    }

    /// Adopts a socket handed over by another shard, on the calling shard.
    pub fn from_socket(socket: socket2::Socket) -> Stream {
        Stream {
            inner: TcpStream::from(socket),
        }
    }

    /// Gives up the connection as a plain socket that another shard can adopt with
    /// [`Stream::from_socket`]. Nothing may be pending on the stream.
    pub fn into_socket(self) -> io::Result<socket2::Socket> {
        let socket = duplicate(&self.inner)?;
        drop(self.inner);
        Ok(socket)
    }

    /// Bounds the wait of each read; a read that times out fails with `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner
            .set_read_timeout(timeout)
            .map_err(io::Error::from)
    }

    /// Reads once into the spare room of `buf` (see [`ReadHalf::read_into`]).
    pub async fn read_into(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        read_into(&mut self.inner, buf, chunk).await
    }

    /// Writes all of `bytes` (used before the split, e.g. to refuse a CONNECT).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await
    }

    /// Splits into halves for a reader task and a writer task.
    pub fn split(self) -> io::Result<(ReadHalf, WriteHalf)> {
        let write = TcpStream::from(duplicate(&self.inner)?);
        Ok((ReadHalf { inner: self.inner }, WriteHalf { inner: write }))
    }
}

/// A second descriptor of the same socket.
fn duplicate(stream: &TcpStream) -> io::Result<socket2::Socket> {
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let owned = fd.try_clone_to_owned()?;
    // SAFETY: `into_raw_fd` gives up sole ownership of the new, valid descriptor;
    // the socket becomes its only owner (socket2 0.4 has no `From<OwnedFd>`).
    Ok(unsafe { socket2::Socket::from_raw_fd(owned.into_raw_fd()) })
}

thread_local! {
    /// What glommio reads into before the bytes are appended to a connection's buffer.
    /// One per shard thread, zeroed once: a read then costs a copy of the bytes it
    /// brought instead of zeroing the whole chunk it asked for (`&mut [u8]` must be
    /// initialised). Borrowed only inside one poll, never across an await.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

async fn read_into(stream: &mut TcpStream, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < chunk {
                scratch.resize(chunk, 0);
            }
            let spare = scratch.get_mut(..chunk).unwrap_or_default();
            match Pin::new(&mut *stream).poll_read(cx, spare) {
                Poll::Ready(Ok(read)) => {
                    buf.extend_from_slice(spare.get(..read).unwrap_or_default());
                    Poll::Ready(Ok(read))
                }
                other => other,
            }
        })
    })
    .await
}

#[derive(Debug)]
pub struct ReadHalf {
    inner: TcpStream,
}

impl ReadHalf {
    /// Appends what the socket has (up to `chunk` bytes) to `buf`; 0 means the peer
    /// closed its side.
    pub async fn read_into(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        read_into(&mut self.inner, buf, chunk).await
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner
            .set_read_timeout(timeout)
            .map_err(io::Error::from)
    }
}

#[derive(Debug)]
pub struct WriteHalf {
    inner: TcpStream,
}

impl WriteHalf {
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await
    }

    /// Writes what the socket takes right now with one `send(2)`, without waiting
    /// and without an io_uring round trip: at low load a message leaves at once.
    /// Returns the bytes written (0 when the socket buffer is full).
    pub fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        // SAFETY: the descriptor belongs to this stream and stays open for the
        // call; `bytes` is a live slice of `bytes.len()` readable bytes. MSG_DONTWAIT
        // never blocks the shard; MSG_NOSIGNAL turns a closed peer into EPIPE
        // instead of SIGPIPE. The caller never has an io_uring write of this socket
        // in flight at the same time, so the byte order on the wire is kept.
        let sent = unsafe {
            libc::send(
                self.inner.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        Err(error)
    }

    /// Bounds each write, so a client that never reads cannot hold its writer forever.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner
            .set_write_timeout(timeout)
            .map_err(io::Error::from)
    }

    /// Closes the connection both ways; the reading half's pending read returns.
    pub async fn close(&self) {
        // The peer may be gone already; there is nothing left to do then.
        let _ = self.inner.shutdown(Shutdown::Both).await;
    }
}
