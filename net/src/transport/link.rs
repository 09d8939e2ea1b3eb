//! The byte stream the WebSocket layer reads and writes: either the caller's wire
//! bytes directly, or the plaintext side of the TLS connection. Both answer
//! `WouldBlock` when they have nothing more to give or no more room, which is how
//! tungstenite, written for sockets, learns to stop.

use std::io::{self, BufRead, IoSlice, Read, Write};

use bytes::{Buf, BufMut, BytesMut};
use rustls::ServerConnection;

pub(crate) enum Link<'a> {
    /// WebSocket straight on TCP: reads consume `input`, writes append to `output`
    /// up to `output_max` bytes.
    Plain {
        input: &'a mut BytesMut,
        output: &'a mut BytesMut,
        output_max: usize,
    },
    /// WebSocket inside TLS. With `out`, a write that finds rustls's record buffer
    /// full moves the records to `out` and goes on; without it the write blocks, so
    /// what the transport queues on its own stays within rustls's buffer limit.
    Tls {
        conn: &'a mut ServerConnection,
        out: Option<&'a mut BytesMut>,
    },
}

impl Link<'_> {
    /// Drops whatever input is left: after a close or a refusal nothing more is read.
    pub(crate) fn discard_input(&mut self) {
        match self {
            Link::Plain { input, .. } => input.clear(),
            Link::Tls { conn, .. } => discard_plaintext(conn),
        }
    }
}

impl Read for Link<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain { input, .. } => {
                if input.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = buf.len().min(input.len());
                let (head, _) = buf.split_at_mut(n);
                input.copy_to_slice(head);
                Ok(n)
            }
            // Ok(0) after close_notify would read as a reset to tungstenite; the
            // transport reports the TLS close itself.
            Link::Tls { conn, .. } => match conn.reader().read(buf) {
                Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                other => other,
            },
        }
    }
}

impl Write for Link<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let wanted: usize = bufs.iter().map(|b| b.len()).sum();
        if wanted == 0 {
            return Ok(0);
        }
        match self {
            Link::Plain {
                output, output_max, ..
            } => {
                let mut room = output_max.saturating_sub(output.len());
                if room == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let mut written = 0;
                for b in bufs {
                    let n = b.len().min(room);
                    output.put_slice(b.get(..n).unwrap_or_default());
                    written += n;
                    room -= n;
                }
                Ok(written)
            }
            Link::Tls { conn, out } => loop {
                let n = conn.writer().write_vectored(bufs)?;
                if n > 0 {
                    return Ok(n);
                }
                let drained = match out {
                    Some(out) => drain_tls(conn, out)?,
                    None => 0,
                };
                if drained == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves every TLS record rustls has ready into `out`; returns how many bytes.
pub(crate) fn drain_tls(conn: &mut ServerConnection, out: &mut BytesMut) -> io::Result<usize> {
    let mut total = 0;
    while conn.wants_write() {
        let n = conn.write_tls(&mut out.writer())?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

/// Writes all of `parts` as TLS application data, moving records to `out` as they
/// are made so rustls's own buffer stays within its limit whatever the size.
pub(crate) fn tls_write_all(
    conn: &mut ServerConnection,
    mut parts: &mut [IoSlice<'_>],
    out: &mut BytesMut,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = conn.writer().write_vectored(parts)?;
        let drained = drain_tls(conn, out)?;
        if n == 0 && drained == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

/// Appends all plaintext rustls holds to `app`, one copy out of its buffer.
pub(crate) fn drain_plaintext(conn: &mut ServerConnection, app: &mut BytesMut) {
    loop {
        let mut reader = conn.reader();
        // WouldBlock (nothing now) and Ok(empty) (closed) both end the loop: the
        // transport tracks the close from rustls's state, not from the reader.
        let Ok(chunk) = reader.fill_buf() else { return };
        if chunk.is_empty() {
            return;
        }
        let n = chunk.len();
        app.put_slice(chunk);
        reader.consume(n);
    }
}

fn discard_plaintext(conn: &mut ServerConnection) {
    loop {
        let mut reader = conn.reader();
        let Ok(chunk) = reader.fill_buf() else { return };
        if chunk.is_empty() {
            return;
        }
        let n = chunk.len();
        reader.consume(n);
    }
}
