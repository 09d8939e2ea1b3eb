//! The transport against real peers in memory: a rustls client and a tungstenite
//! client exchange bytes with a `Transport` through buffers, no sockets (one
//! loopback test excepted). Certificates are made at test time with rcgen.
// Test helpers return a whole `Server` beside a refusal so the test can inspect it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::result_large_err
)]

mod load;
mod support;
mod tls;
mod ws;
mod wss;

use super::{Transport, TransportError, TransportLimits, WsSettings};

#[test]
fn transport_and_error_are_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Transport>();
    send_sync::<TransportError>();
}

#[test]
fn new_needs_a_layer_and_a_message_max() {
    let limits = TransportLimits { message_max: 1024 };
    assert!(matches!(
        Transport::new(None, None, limits),
        Err(TransportError::NoLayer)
    ));
    let ws = WsSettings {
        path: "/mqtt".into(),
    };
    assert!(matches!(
        Transport::new(None, Some(&ws), TransportLimits { message_max: 0 }),
        Err(TransportError::MessageMaxZero)
    ));
}
