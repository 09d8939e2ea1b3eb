//! From settings to what the shards enforce: the listeners with their TLS
//! configurations, and the security rules (password file, ACL, failed-login
//! limiter). Every file is read and checked here, at start, at `check-config` and
//! at each reload; a file that does not load stops the start or keeps the rules in
//! force: never a broker that runs open by mistake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringmq_auth::{Acl, FailedLoginLimiter, HashPolicy, PasswordFile, Verifier};
use ringmq_net::transport::{load_tls, ClientCertMode, TlsSettings};
use ringmq_shard::{
    AclScope, ListenerAuth, ListenerConfig, ListenerKind, SecurityRules, TlsConfigCell,
    UsernameSource,
};
use tracing::warn;

use crate::config::{Anonymous, ClientCertSetting, ListenerSettings, Settings, UsernameFrom};

/// Source addresses the failed-login limiter remembers at once (oldest forgotten
/// first): bounds its memory under a scan from many addresses.
const FAILED_LOGIN_ADDRESSES_MAX: usize = 100_000;

/// The rules `[auth]` describes, its files read and checked.
pub fn rules(settings: &Settings) -> anyhow::Result<SecurityRules> {
    let auth = &settings.auth;
    let passwords = if auth.password_file.is_empty() {
        None
    } else {
        let policy = HashPolicy {
            allow_insecure: auth.allow_insecure_hashes,
        };
        let file = PasswordFile::load(Path::new(&auth.password_file), policy)
            .with_context(|| format!("auth.password_file {:?}", auth.password_file))?;
        if file.insecure_entries() > 0 {
            warn!(
                file = %auth.password_file,
                entries = file.insecure_entries(),
                "the password file holds plaintext or unsalted-speed SHA-256 entries \
                 (allow_insecure_hashes): rehash them with `ringmq passwd`"
            );
        }
        Some(Arc::new(file))
    };
    let acl = if auth.acl_file.is_empty() {
        None
    } else {
        let acl = Acl::load(Path::new(&auth.acl_file))
            .with_context(|| format!("auth.acl_file {:?}", auth.acl_file))?;
        Some(Arc::new(acl))
    };
    let limiter = (auth.failed_login_max > 0).then(|| {
        Arc::new(FailedLoginLimiter::new(
            auth.failed_login_max,
            Duration::from_secs(auth.failed_login_window),
            FAILED_LOGIN_ADDRESSES_MAX,
        ))
    });
    Ok(SecurityRules {
        anonymous: settings.anonymous_allowed(Anonymous::Auto),
        passwords,
        acl,
        limiter,
    })
}

/// The threads that check password hashes. Started even without a password file:
/// a reload may add one.
pub fn verifier(settings: &Settings) -> anyhow::Result<Verifier> {
    Verifier::start(settings.auth.hash_threads, settings.auth.hash_queue_max)
        .context("cannot start the password verifier threads")
}

fn tls_settings(listener: &ListenerSettings) -> TlsSettings {
    TlsSettings {
        cert: PathBuf::from(&listener.cert),
        key: PathBuf::from(&listener.key),
        client_ca: Some(PathBuf::from(&listener.client_ca)).filter(|p| !p.as_os_str().is_empty()),
        client_cert: match listener.client_cert {
            ClientCertSetting::None => ClientCertMode::None,
            ClientCertSetting::Optional => ClientCertMode::Optional,
            ClientCertSetting::Required => ClientCertMode::Required,
        },
    }
}

/// The TLS configuration of each `[[listener]]` (`None` for those without TLS),
/// by index.
pub fn tls_configs(settings: &Settings) -> anyhow::Result<Vec<Option<Arc<rustls::ServerConfig>>>> {
    settings
        .listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            if !matches!(
                listener.kind,
                crate::config::ListenerKind::Tls | crate::config::ListenerKind::Wss
            ) {
                return Ok(None);
            }
            load_tls(&tls_settings(listener))
                .map(Some)
                .with_context(|| format!("listener[{index}] ({})", listener.listen))
        })
        .collect()
}

/// Every listener: the plain ones of `listen`, then each `[[listener]]`, with the
/// address each binds (a free port already chosen for port 0) and its TLS.
pub fn listeners(
    settings: &Settings,
    plain: &[SocketAddr],
    extra: &[SocketAddr],
) -> anyhow::Result<Vec<ListenerConfig>> {
    let mut all: Vec<ListenerConfig> = plain.iter().copied().map(ListenerConfig::tcp).collect();
    let tls = tls_configs(settings)?;
    for ((listener, &addr), tls) in settings.listeners.iter().zip(extra).zip(tls) {
        all.push(ListenerConfig {
            addr,
            kind: match listener.kind {
                crate::config::ListenerKind::Tcp => ListenerKind::Tcp,
                crate::config::ListenerKind::Tls => ListenerKind::Tls,
                crate::config::ListenerKind::Ws => ListenerKind::Ws,
                crate::config::ListenerKind::Wss => ListenerKind::Wss,
            },
            tls: tls.map(TlsConfigCell::new),
            ws_path: listener.path.clone(),
            auth: ListenerAuth {
                anonymous: match listener.allow_anonymous {
                    Anonymous::Auto => None,
                    Anonymous::Allow => Some(true),
                    Anonymous::Deny => Some(false),
                },
                acl: if listener.acl {
                    AclScope::Applies
                } else {
                    AclScope::Exempt
                },
                username_from: match listener.username_from {
                    UsernameFrom::None => UsernameSource::Connect,
                    UsernameFrom::Cn => UsernameSource::CommonName,
                    UsernameFrom::San => UsernameSource::SubjectAltName,
                },
                connections_max: listener.max_connections,
            },
            connections: Arc::default(),
        });
    }
    Ok(all)
}

/// Reads the certificates of the listeners the broker started with again and
/// puts them in force for new connections, all or none.
pub fn reload_tls(started: &Settings, running: &[ListenerConfig]) -> anyhow::Result<()> {
    let loaded: Vec<Arc<rustls::ServerConfig>> =
        tls_configs(started)?.into_iter().flatten().collect();
    let cells: Vec<&TlsConfigCell> = running
        .iter()
        .filter_map(|listener| listener.tls.as_ref())
        .collect();
    if loaded.len() != cells.len() {
        anyhow::bail!("the TLS listeners differ from those the broker started with");
    }
    for (cell, config) in cells.into_iter().zip(loaded) {
        cell.replace(config);
    }
    Ok(())
}
