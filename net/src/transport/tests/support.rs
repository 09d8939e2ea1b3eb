//! Certificates, PEM files in a scratch directory, in-memory byte pipes, and the
//! loops that move bytes between a client and a `Transport` until both are quiet.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::{ClientHandshake, Response};
use tungstenite::{HandshakeError, Message, WebSocket};

use crate::transport::{
    load_tls, ClientCertMode, TlsSettings, Transport, TransportError, TransportLimits, WsSettings,
};

pub const MESSAGE_MAX: usize = 64 * 1024;
pub const LIMITS: TransportLimits = TransportLimits {
    message_max: MESSAGE_MAX,
};
/// Rounds of byte exchange after which a handshake that has not settled is a bug.
const ROUNDS_MAX: usize = 64;

pub fn ws_settings() -> WsSettings {
    WsSettings {
        path: "/mqtt".into(),
    }
}

/// A CA and a server certificate for `localhost` it signed.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        Pki {
            ca,
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A client certificate with `cn` and a DNS name, an e-mail and a URI.
    pub fn client_cert(&self, cn: &str) -> ClientAuth {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![
            SanType::DnsName(format!("{cn}.example").try_into().unwrap()),
            SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            SanType::URI("urn:ringmq:device:17".try_into().unwrap()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        ClientAuth {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

pub struct ClientAuth {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A scratch directory removed on drop, so generated keys never outlive the test.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmq-transport-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The listener's files for `pki`, loaded through `load_tls` as the broker would.
pub fn server_config(pki: &Pki, client_cert: ClientCertMode) -> Arc<rustls::ServerConfig> {
    let scratch = Scratch::new();
    let settings = TlsSettings {
        cert: scratch.file("cert.pem", &pki.server_cert_pem),
        key: scratch.file("key.pem", &pki.server_key_pem),
        client_ca: (client_cert != ClientCertMode::None)
            .then(|| scratch.file("ca.pem", &pki.ca_pem())),
        client_cert,
    };
    load_tls(&settings).unwrap()
}

pub fn client_config(
    trusted: &Pki,
    versions: &[&'static SupportedProtocolVersion],
    auth: Option<ClientAuth>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.ca_der()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    Arc::new(match auth {
        Some(auth) => builder.with_client_auth_cert(auth.chain, auth.key).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

pub fn tls_client(config: Arc<ClientConfig>) -> ClientConnection {
    let mut client =
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    // The tests write megabytes at once; the client side need not bound itself.
    client.set_buffer_limit(None);
    client
}

/// The server side: a transport and the application bytes it gave.
pub struct Server {
    pub transport: Transport,
    pub app: BytesMut,
}

impl Server {
    pub fn new(transport: Transport) -> Server {
        Server {
            transport,
            app: BytesMut::new(),
        }
    }

    pub fn receive(&mut self, wire: &[u8]) -> Result<(), TransportError> {
        let mut wire = BytesMut::from(wire);
        let result = self.transport.receive(&mut wire, &mut self.app);
        assert!(wire.is_empty(), "receive leaves no wire bytes behind");
        result
    }

    pub fn transmit(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        self.transport.poll_transmit(&mut out);
        out
    }

    pub fn send(&mut self, app: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        self.transport.send(app, &mut out).unwrap();
        out
    }
}

#[derive(Debug)]
pub enum PumpError {
    Client(rustls::Error),
    Server(TransportError),
}

/// A rustls client talking to a TLS `Transport`.
pub struct TlsPair {
    pub client: ClientConnection,
    pub server: Server,
    /// Plaintext the client has received.
    pub client_app: Vec<u8>,
}

impl TlsPair {
    pub fn new(client: ClientConnection, server: Transport) -> TlsPair {
        TlsPair {
            client,
            server: Server::new(server),
            client_app: Vec::new(),
        }
    }

    /// Moves bytes both ways until neither side has anything to send. A server
    /// error still delivers what the server queued (its alert) to the client.
    pub fn pump(&mut self) -> Result<(), PumpError> {
        for _ in 0..ROUNDS_MAX {
            let mut to_server = BytesMut::new();
            while self.client.wants_write() {
                self.client
                    .write_tls(&mut (&mut to_server).writer())
                    .unwrap();
            }
            let received = if to_server.is_empty() {
                Ok(())
            } else {
                self.server.receive(&to_server)
            };
            let to_client = self.server.transmit();
            let delivered = if to_client.is_empty() {
                Ok(())
            } else {
                self.deliver(&to_client)
            };
            received.map_err(PumpError::Server)?;
            delivered.map_err(PumpError::Client)?;
            if to_server.is_empty() && to_client.is_empty() {
                return Ok(());
            }
        }
        panic!("TLS exchange did not settle in {ROUNDS_MAX} rounds");
    }

    /// Gives `records` to the client and takes the plaintext they carry.
    pub fn deliver(&mut self, records: &[u8]) -> Result<(), rustls::Error> {
        let mut rest = records;
        while !rest.is_empty() {
            self.client.read_tls(&mut rest).unwrap();
            self.client.process_new_packets()?;
            read_available(&mut self.client.reader(), &mut self.client_app);
        }
        Ok(())
    }

    /// The client writes `data` and the server receives it.
    pub fn client_sends(&mut self, data: &[u8]) {
        self.client.writer().write_all(data).unwrap();
        self.pump().unwrap();
    }
}

/// Reads until the source has nothing more now.
pub fn read_available(source: &mut impl Read, into: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match source.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// One end of an in-memory byte stream: `rx` holds what the peer sent, `tx` what
/// this end wrote. Reading an empty `rx` blocks, as a non-blocking socket would.
#[derive(Debug, Default)]
pub struct Pipe {
    pub rx: BytesMut,
    pub tx: BytesMut,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rx.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.rx.len());
        buf[..n].copy_from_slice(&self.rx.split_to(n));
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client byte stream whose wire bytes can be reached: a plain pipe, or TLS
/// over one.
pub trait ClientStream: Read + Write {
    fn pipe(&mut self) -> &mut Pipe;
}

impl ClientStream for Pipe {
    fn pipe(&mut self) -> &mut Pipe {
        self
    }
}

/// A rustls client over a pipe, for a WebSocket client over TLS.
pub struct TlsClientStream {
    pub conn: ClientConnection,
    pub pipe: Pipe,
}

impl TlsClientStream {
    fn flush_records(&mut self) {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.pipe).unwrap();
        }
    }
}

impl Read for TlsClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => {
                    self.flush_records();
                    return other;
                }
            }
            if self.pipe.rx.is_empty() {
                self.flush_records();
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.conn.read_tls(&mut self.pipe)?;
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl Write for TlsClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.flush_records();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records();
        Ok(())
    }
}

impl ClientStream for TlsClientStream {
    fn pipe(&mut self) -> &mut Pipe {
        &mut self.pipe
    }
}

/// A tungstenite client and the server it talks to.
pub struct WsPair<S: ClientStream> {
    pub client: WebSocket<S>,
    pub server: Server,
    pub response: Response,
}

/// Runs the client's upgrade against `server`, moving bytes until it ends.
pub fn ws_connect<S: ClientStream>(
    stream: S,
    mut server: Server,
    url: &str,
    protocols: &str,
) -> Result<WsPair<S>, (tungstenite::Error, Server)> {
    let mut request = url.into_client_request().unwrap();
    if !protocols.is_empty() {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let mut mid = match ClientHandshake::start(stream, request, None) {
        Ok(mid) => mid,
        Err(e) => return Err((e, server)),
    };
    for _ in 0..ROUNDS_MAX {
        match mid.handshake() {
            Ok((client, response)) => {
                return Ok(WsPair {
                    client,
                    server,
                    response,
                })
            }
            Err(HandshakeError::Failure(e)) => return Err((e, server)),
            Err(HandshakeError::Interrupted(again)) => mid = again,
        }
        let pipe = mid.get_mut().get_mut().pipe();
        let to_server = pipe.tx.split();
        // A refused upgrade answers before its error: the client must see both.
        let _ = server.receive(&to_server);
        let to_client = server.transmit();
        mid.get_mut()
            .get_mut()
            .pipe()
            .rx
            .extend_from_slice(&to_client);
    }
    panic!("WebSocket upgrade did not settle in {ROUNDS_MAX} rounds");
}

impl<S: ClientStream> WsPair<S> {
    /// Wire bytes of one message as the client sends it.
    pub fn client_frames(&mut self, message: Message) -> BytesMut {
        self.client.send(message).unwrap();
        self.client.get_mut().pipe().tx.split()
    }

    /// Gives `wire` to the client and returns every message it can read now.
    pub fn client_reads(&mut self, wire: &[u8]) -> Vec<Message> {
        self.client.get_mut().pipe().rx.extend_from_slice(wire);
        let mut messages = Vec::new();
        loop {
            match self.client.read() {
                Ok(message) => messages.push(message),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return messages
                }
                Err(tungstenite::Error::ConnectionClosed) => return messages,
                Err(e) => panic!("client read failed: {e}"),
            }
        }
    }
}
