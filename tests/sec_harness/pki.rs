//! Certificates made at test time with rcgen, and the rustls client side.
//!
//! - [`Ca`]: a self-signed CA that issues server certificates (for 127.0.0.1 and
//!   localhost) and client certificates (a CN and subject alternative names).
//! - [`Leaf`]: a certificate with its key, as PEM files for the broker or DER for
//!   a rustls client.
//! - [`client_config`]: a rustls client that trusts only the CAs given, with a
//!   client certificate or not; [`tls_connect`] and [`mqtt_over_tls`] run the
//!   handshake and a CONNECT over it with deadlines.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

use super::mqtt::{Client, Connect};
use super::WAIT;

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        super::write_file(dir, name, &self.pem())
    }

    /// A server certificate for localhost and 127.0.0.1 to 127.0.0.5 (the tests
    /// put listeners on several loopback addresses).
    pub fn server(&self, cn: &str) -> Leaf {
        let mut names: Vec<String> = (1..=5).map(|n| format!("127.0.0.{n}")).collect();
        names.push("localhost".to_owned());
        let mut params = CertificateParams::new(names).expect("server params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params)
    }

    /// A client certificate with subject CN `cn` and the given alternative names.
    pub fn client(&self, cn: &str, sans: Vec<SanType>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// An e-mail subject alternative name.
pub fn email_san(address: &str) -> SanType {
    SanType::Rfc822Name(address.try_into().expect("an IA5 e-mail address"))
}

/// A certificate and its private key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `dir/NAME.pem` and `dir/NAME.key`; their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            super::write_file(dir, &format!("{name}.pem"), &self.cert_pem),
            super::write_file(dir, &format!("{name}.key"), &self.key_pem),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client that trusts only `trust`, offering `identity` as its client
/// certificate if given; TLS 1.2 and 1.3.
pub fn client_config(trust: &[&Ca], identity: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config_versions(trust, identity, rustls::DEFAULT_VERSIONS)
}

/// Like [`client_config`], limited to `versions`.
pub fn client_config_versions(
    trust: &[&Ca],
    identity: Option<&Leaf>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in trust {
        roots.add(ca.der()).expect("a CA the client trusts");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key())
            .expect("a client certificate and key"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A finished TLS session over TCP, and the socket under it (for timeouts).
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` and completes the TLS handshake as `server_name`, within
/// [`WAIT`]; the error text on failure.
pub fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> Result<(TlsStream, TcpStream), String> {
    let tcp = super::mqtt::tcp(addr);
    let socket = tcp.try_clone().expect("clone the socket");
    let name = ServerName::try_from(server_name.to_owned()).expect("a server name");
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(conn, tcp);
    let deadline = Instant::now() + WAIT;
    while stream.conn.is_handshaking() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or("TLS handshake did not finish in time")?;
        socket.set_read_timeout(Some(left)).expect("read timeout");
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok((stream, socket))
}

/// The certificate the server presented in a finished session.
pub fn served_certificate(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server sent a certificate")
        .clone()
        .into_owned()
}

/// TLS to `addr` (server name 127.0.0.1), then CONNECT: the CONNACK code and
/// the client, or why the session failed (handshake, alert, close).
pub fn mqtt_over_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    connect: &Connect,
) -> Result<(u8, Client), String> {
    let (stream, socket) = tls_connect(addr, config, "127.0.0.1")?;
    Client::handshake(Box::new(stream), socket, connect).map_err(|e| format!("{e:?}"))
}
