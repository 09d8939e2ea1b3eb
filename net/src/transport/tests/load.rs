//! `load_tls`: every way the files can be wrong names the file and the fault.

use std::path::PathBuf;

use rcgen::KeyPair;

use super::support::{Pki, Scratch};
use crate::transport::{load_tls, ClientCertMode, TlsSettings, TransportError};

struct Files {
    scratch: Scratch,
    pki: Pki,
}

impl Files {
    fn new() -> Files {
        Files {
            scratch: Scratch::new(),
            pki: Pki::new("test CA"),
        }
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings {
            cert: self.scratch.file("cert.pem", &self.pki.server_cert_pem),
            key: self.scratch.file("key.pem", &self.pki.server_key_pem),
            client_ca: None,
            client_cert: ClientCertMode::None,
        }
    }
}

fn names(err: &TransportError, path: &PathBuf) {
    let text = err.to_string();
    assert!(
        text.contains(&*path.to_string_lossy()),
        "{text:?} does not name {path:?}"
    );
}

#[test]
fn valid_files_load_in_every_mode() {
    let f = Files::new();
    assert!(load_tls(&f.settings()).is_ok());
    for mode in [ClientCertMode::Optional, ClientCertMode::Required] {
        let settings = TlsSettings {
            client_ca: Some(f.scratch.file("ca.pem", &f.pki.ca_pem())),
            client_cert: mode,
            ..f.settings()
        };
        assert!(load_tls(&settings).is_ok(), "{mode}");
    }
}

#[test]
fn missing_file_is_named() {
    let f = Files::new();
    let settings = TlsSettings {
        cert: f.scratch.dir.join("absent.pem"),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(matches!(err, TransportError::File { .. }), "{err:?}");
    names(&err, &settings.cert);

    let settings = TlsSettings {
        key: f.scratch.dir.join("absent-key.pem"),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    names(&err, &settings.key);
}

#[test]
fn file_without_certificate_or_key_is_named() {
    let f = Files::new();
    // The key where the certificate should be, and the other way round.
    let settings = TlsSettings {
        cert: f.scratch.file("swapped-cert.pem", &f.pki.server_key_pem),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(
        matches!(err, TransportError::NoCertificate { .. }),
        "{err:?}"
    );
    names(&err, &settings.cert);

    let settings = TlsSettings {
        key: f.scratch.file("swapped-key.pem", &f.pki.server_cert_pem),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(
        matches!(err, TransportError::NoPrivateKey { .. }),
        "{err:?}"
    );
    names(&err, &settings.key);

    let settings = TlsSettings {
        cert: f.scratch.file("empty.pem", ""),
        ..f.settings()
    };
    assert!(matches!(
        load_tls(&settings),
        Err(TransportError::NoCertificate { .. })
    ));
}

#[test]
fn broken_pem_is_named() {
    let f = Files::new();
    let settings = TlsSettings {
        cert: f.scratch.file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nthis is not base64!\n-----END CERTIFICATE-----\n",
        ),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(matches!(err, TransportError::Pem { .. }), "{err:?}");
    names(&err, &settings.cert);
}

#[test]
fn mismatched_key_is_named() {
    let f = Files::new();
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    let settings = TlsSettings {
        key: f.scratch.file("other-key.pem", &other_key),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(
        matches!(err, TransportError::CertificateKey { .. }),
        "{err:?}"
    );
    names(&err, &settings.cert);
    names(&err, &settings.key);
}

#[test]
fn client_ca_must_match_client_cert_mode() {
    let f = Files::new();
    for mode in [ClientCertMode::Optional, ClientCertMode::Required] {
        let settings = TlsSettings {
            client_cert: mode,
            ..f.settings()
        };
        let err = load_tls(&settings).unwrap_err();
        assert!(
            matches!(err, TransportError::ClientCaMissing { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&mode.to_string()));
    }
    let settings = TlsSettings {
        client_ca: Some(f.scratch.file("ca.pem", &f.pki.ca_pem())),
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(
        matches!(err, TransportError::ClientCaUnused { .. }),
        "{err:?}"
    );

    let settings = TlsSettings {
        client_ca: Some(f.scratch.file("no-ca.pem", "nothing here\n")),
        client_cert: ClientCertMode::Required,
        ..f.settings()
    };
    let err = load_tls(&settings).unwrap_err();
    assert!(
        matches!(err, TransportError::NoCertificate { .. }),
        "{err:?}"
    );
    names(&err, settings.client_ca.as_ref().unwrap());
}
