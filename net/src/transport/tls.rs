//! TLS settings of a listener, loaded from PEM files into a rustls configuration,
//! and the identity a client certificate gives.
//!
//! Reloading on SIGHUP is calling [`load_tls`] again and giving the new
//! configuration to connections accepted afterwards; open connections keep the
//! one they started with (rustls holds it in an `Arc`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::TransportError;

/// Whether a listener asks clients for a certificate (mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCertMode {
    /// No certificate is requested.
    #[default]
    None,
    /// A certificate is requested; a client without one still connects, a client
    /// with one that the client CA did not sign does not.
    Optional,
    /// A client without a valid certificate is refused in the handshake.
    Required,
}

impl fmt::Display for ClientCertMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientCertMode::None => "none",
            ClientCertMode::Optional => "optional",
            ClientCertMode::Required => "required",
        })
    }
}

/// The files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the CAs that sign client certificates; required when
    /// `client_cert` is not `None`, refused when it is.
    pub client_ca: Option<PathBuf>,
    /// Whether clients are asked for a certificate.
    pub client_cert: ClientCertMode,
}

/// Who the client is according to its verified certificate: material for a
/// username (the broker chooses which field).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerIdentity {
    /// The first common name (CN) of the subject, if it is a string.
    pub common_name: Option<String>,
    /// DNS names, e-mail addresses and URIs of the subject-alternative-name
    /// extension, in certificate order.
    pub subject_alt_names: Vec<String>,
}

/// Builds the server configuration of a listener: TLS 1.2 and 1.3 only, the
/// certificate and key checked to match, client certificates verified against
/// `client_ca` as `client_cert` asks.
pub fn load_tls(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&settings.cert)?;
    let key = read_key(&settings.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TransportError::TlsConfig)?;
    let builder = match (settings.client_cert, &settings.client_ca) {
        (ClientCertMode::None, None) => builder.with_no_client_auth(),
        (ClientCertMode::None, Some(path)) => {
            return Err(TransportError::ClientCaUnused { path: path.clone() })
        }
        (mode @ (ClientCertMode::Optional | ClientCertMode::Required), None) => {
            return Err(TransportError::ClientCaMissing {
                mode: match mode {
                    ClientCertMode::Optional => "optional",
                    _ => "required",
                },
            })
        }
        (mode, Some(path)) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| TransportError::ClientCa {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientCertMode::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| TransportError::ClientCa {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config =
        builder
            .with_single_cert(certs, key)
            .map_err(|source| TransportError::CertificateKey {
                cert: settings.cert.clone(),
                key: settings.key.clone(),
                source,
            })?;
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::File {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: pem::Error) -> TransportError {
    TransportError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TransportError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TransportError::NoPrivateKey {
            path: path.to_owned(),
        },
        e => pem_error(path, e),
    })
}

/// Reads the identity out of a client certificate rustls has already verified.
pub(crate) fn peer_identity(der: &[u8]) -> Result<PeerIdentity, TransportError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| TransportError::PeerCertificate(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut subject_alt_names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TransportError::PeerCertificate(e.to_string()))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    subject_alt_names.push((*s).to_owned())
                }
                _ => {}
            }
        }
    }
    Ok(PeerIdentity {
        common_name,
        subject_alt_names,
    })
}
