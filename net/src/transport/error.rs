//! What can go wrong when loading TLS files or carrying a connection through the
//! TLS and WebSocket layers.

use std::io;
use std::path::PathBuf;

/// An error of the transport layers. Loading errors name the file and what is wrong
/// with it; connection errors end that connection only (after the caller has sent
/// what [`super::Transport::poll_transmit`] still gives: an alert, an HTTP error
/// response or a close frame).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("{} is not valid PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("{} holds no certificate (expected a PEM `CERTIFICATE` block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error(
        "certificate {} and key {} cannot be used together: {source}",
        cert.display(),
        key.display()
    )]
    CertificateKey {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("client CA file {}: {detail}", path.display())]
    ClientCa { path: PathBuf, detail: String },
    #[error("client certificates are {mode} but no client CA file is set to verify them")]
    ClientCaMissing { mode: &'static str },
    #[error(
        "client CA file {} is set but client certificates are not requested (client_cert = none)",
        path.display()
    )]
    ClientCaUnused { path: PathBuf },
    #[error("TLS configuration: {0}")]
    TlsConfig(rustls::Error),
    #[error("a transport needs TLS, WebSocket or both (plain TCP needs no transport)")]
    NoLayer,
    #[error("message_max must be at least 1 byte")]
    MessageMaxZero,

    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS record buffers: {0}")]
    TlsIo(io::Error),
    #[error("client certificate cannot be read: {0}")]
    PeerCertificate(String),
    #[error("WebSocket upgrade refused with HTTP {status}: {reason}")]
    UpgradeRefused { status: u16, reason: &'static str },
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("WebSocket text frame: MQTT travels in binary frames only")]
    TextFrame,
    #[error("handshake not finished: no application data can be sent yet")]
    NotEstablished,
    #[error("transport is closed")]
    Closed,
    #[error("transport failed earlier and is unusable")]
    Failed,
}
