//! The transport over real sockets on a real glommio executor: bind with
//! SO_REUSEPORT, accept, split, write and read, hand a socket over, time out a read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use glommio::LocalExecutorBuilder;
use ringmq_net::{Listener, PortReservation, Stream};

#[test]
fn accept_split_echo_and_hand_over() {
    let reservation = PortReservation::new(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = reservation.addr();
    let handle = LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .spawn(move || async move {
            let listener = Listener::bind(addr, 16).unwrap();
            reservation.release();
            let client = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(b"ping").unwrap();
                let mut reply = [0u8; 4];
                c.read_exact(&mut reply).unwrap();
                assert_eq!(&reply, b"pong");
                // After the hand-over the same connection still works.
                c.write_all(b"again").unwrap();
                let mut reply = [0u8; 5];
                c.read_exact(&mut reply).unwrap();
                assert_eq!(&reply, b"AGAIN");
                let mut rest = Vec::new();
                c.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
            });
            let (mut stream, _peer) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            while buf.len() < 4 {
                assert!(stream.read_into(&mut buf, 64).await.unwrap() > 0);
            }
            assert_eq!(&buf[..], b"ping");
            stream.write_all(b"pong").await.unwrap();
            // Hand over as a plain socket (as to another shard) and adopt it again.
            let socket = stream.into_socket().unwrap();
            let stream = Stream::from_socket(socket);
            let (mut read, mut write) = stream.split().unwrap();
            buf.clear();
            while buf.len() < 5 {
                assert!(read.read_into(&mut buf, 64).await.unwrap() > 0);
            }
            write.write_all(&buf.to_ascii_uppercase()).await.unwrap();
            write.close().await;
            client.join().unwrap();
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn read_timeout_fires() {
    on_executor_with_listener(|listener, addr| async move {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let _c = std::net::TcpStream::connect(addr).unwrap();
            // Hold the connection open, silent, until the server has timed out.
            let _ = rx.recv_timeout(Duration::from_secs(20));
        });
        let (stream, _) = listener.accept().await.unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (mut read, _write) = stream.split().unwrap();
        let mut buf = BytesMut::new();
        let error = read.read_into(&mut buf, 64).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        tx.send(()).unwrap();
        client.join().unwrap();
    });
}

/// Reads append to the buffer byte for byte, never more than the chunk per read, after
/// what the buffer held; end of stream reads as 0. The bytes pass through the shard's
/// scratch buffer, reads that find data at once and reads that wait alike.
#[test]
fn reads_append_exact_bytes_within_the_chunk() {
    on_executor_with_listener(|listener, addr| async move {
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            // A first piece, then (once the server waits) the rest in bursts.
            c.write_all(&sent[..10]).unwrap();
            let _ = rx.recv_timeout(Duration::from_secs(20));
            for piece in sent[10..].chunks(7_000) {
                c.write_all(piece).unwrap();
            }
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (mut read, _write) = stream.split().unwrap();
        let mut buf = BytesMut::from(&b"held"[..]);
        let mut told = false;
        let mut reads = 0;
        loop {
            let n = read.read_into(&mut buf, 1000).await.unwrap();
            assert!(n <= 1000, "read {n} bytes with a chunk of 1000");
            if n == 0 {
                break;
            }
            reads += 1;
            if !told {
                tx.send(()).unwrap();
                told = true;
            }
        }
        assert_eq!(&buf[..4], b"held");
        assert_eq!(buf.len() - 4, expected.len());
        assert!(buf[4..] == expected[..], "bytes differ");
        assert!(
            reads >= 100,
            "{reads} reads for 100,000 bytes in chunks of 1000"
        );
        client.join().unwrap();
    });
}

/// Runs `test` on a glommio executor with a listener bound to a free loopback port.
fn on_executor_with_listener<F, Fut>(test: F)
where
    F: FnOnce(Listener, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let handle = LocalExecutorBuilder::default()
        .io_memory(256 << 10)
        .spawn(move || async move {
            let listener = Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 16).unwrap();
            let addr = listener.local_addr().unwrap();
            test(listener, addr).await;
        })
        .unwrap();
    handle.join().unwrap();
}
