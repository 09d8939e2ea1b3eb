//! Who may connect, and with which rules: the broker-wide password file, ACL and
//! failed-login limiter (replaced whole at a reload), and the login decision a
//! CONNECT gets on the shard that accepted it.
//!
//! Password hashes never run on a shard: a CONNECT with a password waits for the
//! verifier threads (`ringmq_auth::Verifier`) while its shard serves everyone else.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use ringmq_auth::{Acl, ClientAcl, FailedLoginLimiter, PasswordFile, Verifier};
use ringmq_core::packet::ProtocolVersion;
use ringmq_core::reason::ReasonCode;
use ringmq_net::transport::PeerIdentity;

use crate::config::{AclScope, ListenerAuth, UsernameSource};

/// The rules in force; a reload builds new ones and swaps them in whole.
#[derive(Debug, Default)]
pub struct SecurityRules {
    pub passwords: Option<Arc<PasswordFile>>,
    pub acl: Option<Arc<Acl>>,
    /// Whether clients without credentials get in where the listener does not say.
    pub anonymous: bool,
    /// `None`: failed logins are not limited.
    pub limiter: Option<Arc<FailedLoginLimiter>>,
}

impl SecurityRules {
    /// Everyone in, everything allowed: a broker without an `[auth]` section.
    pub fn open() -> SecurityRules {
        SecurityRules {
            anonymous: true,
            ..SecurityRules::default()
        }
    }
}

/// The broker-wide security state every shard reads at CONNECT.
#[derive(Debug)]
pub struct Security {
    rules: RwLock<Arc<SecurityRules>>,
    verifier: Option<Verifier>,
}

impl Security {
    /// `verifier` checks the password hashes; `None` when no password file can be
    /// configured (tests, embedded use): then every password login is refused.
    pub fn new(rules: SecurityRules, verifier: Option<Verifier>) -> Arc<Security> {
        Arc::new(Security {
            rules: RwLock::new(Arc::new(rules)),
            verifier,
        })
    }

    pub fn rules(&self) -> Arc<SecurityRules> {
        Arc::clone(&self.rules.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts new rules in force for the next CONNECT; the shards recompile the ACL
    /// of their sessions when told (`BrokerHandle::reload_security`).
    pub fn replace(&self, rules: SecurityRules) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
    }
}

/// Who a client is once let in, and the rules that bind it.
#[derive(Clone, Debug)]
pub(crate) struct Login {
    pub username: Option<ByteString>,
    pub acl_scope: AclScope,
    /// `None`: no ACL applies (none configured, or the listener is exempt).
    pub acl: Option<ClientAcl>,
}

impl Login {
    /// The ACL of this client under `rules`.
    pub(crate) fn compile(
        rules: &SecurityRules,
        scope: AclScope,
        username: Option<&str>,
        client_id: &str,
    ) -> Option<ClientAcl> {
        match scope {
            AclScope::Exempt => None,
            AclScope::Applies => rules
                .acl
                .as_ref()
                .map(|acl| acl.for_client(username, client_id)),
        }
    }
}

/// Why a CONNECT is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Wrong password, unknown user, a user name without a password.
    BadCredentials,
    /// No credentials where they are required.
    NotAuthorized,
    /// Too many failed logins from this address lately.
    RateLimited,
    /// The verifier's queue is full.
    Busy,
}

impl Refusal {
    pub(crate) fn reason(self, version: ProtocolVersion) -> ReasonCode {
        match (self, version) {
            (Refusal::BadCredentials, ProtocolVersion::V5) => ReasonCode::BadUserNameOrPassword,
            (Refusal::NotAuthorized, ProtocolVersion::V5) => ReasonCode::NotAuthorized,
            (Refusal::RateLimited, ProtocolVersion::V5) => ReasonCode::ConnectionRateExceeded,
            (Refusal::Busy, ProtocolVersion::V5) => ReasonCode::ServerBusy,
            (Refusal::BadCredentials, ProtocolVersion::V311) => ReasonCode::BadUserNameOrPassword,
            (Refusal::NotAuthorized | Refusal::RateLimited, ProtocolVersion::V311) => {
                ReasonCode::NotAuthorized
            }
            (Refusal::Busy, ProtocolVersion::V311) => ReasonCode::ServerUnavailable,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad user name or password",
            Refusal::NotAuthorized => "no credentials and anonymous clients are not allowed",
            Refusal::RateLimited => "too many failed logins from this address",
            Refusal::Busy => "too many logins waiting for a password check",
        }
    }
}

/// What the CONNECT and the transport tell about the client.
#[derive(Debug)]
pub(crate) struct Credentials<'a> {
    pub ip: IpAddr,
    pub username: Option<&'a ByteString>,
    pub password: Option<&'a Bytes>,
    pub certificate: Option<&'a PeerIdentity>,
}

/// Decides whether a client gets in, and as whom.
pub(crate) async fn authenticate(
    security: &Security,
    listener: &ListenerAuth,
    given: Credentials<'_>,
) -> Result<Option<ByteString>, Refusal> {
    let rules = security.rules();
    if let Some(limiter) = &rules.limiter {
        if limiter.is_blocked(given.ip, Instant::now()) {
            return Err(Refusal::RateLimited);
        }
    }
    let decided = decide(security, &rules, listener, &given).await;
    // A success does not clear the address's failures: one valid account must
    // not reset the count of guesses at the others.
    if let (Some(limiter), Err(Refusal::BadCredentials | Refusal::NotAuthorized)) =
        (&rules.limiter, &decided)
    {
        limiter.record_failure(given.ip, Instant::now());
    }
    decided
}

async fn decide(
    security: &Security,
    rules: &SecurityRules,
    listener: &ListenerAuth,
    given: &Credentials<'_>,
) -> Result<Option<ByteString>, Refusal> {
    // A verified client certificate is the credential where the listener says so.
    let from_certificate = given
        .certificate
        .and_then(|identity| match listener.username_from {
            UsernameSource::Connect => None,
            UsernameSource::CommonName => identity.common_name.clone(),
            UsernameSource::SubjectAltName => identity.subject_alt_names.first().cloned(),
        });
    if let Some(name) = from_certificate {
        return Ok(Some(ByteString::from(name)));
    }
    let anonymous = listener.anonymous.unwrap_or(rules.anonymous);
    match (given.username, given.password, &rules.passwords) {
        (None, None, _) if anonymous => Ok(None),
        (None, None, _) => Err(Refusal::NotAuthorized),
        // Without a password file a user name proves nothing: it is a label, and
        // only where anonymous clients are welcome anyway.
        (username, _, None) if anonymous => Ok(username.cloned()),
        (_, _, None) => Err(Refusal::NotAuthorized),
        (None, Some(_), Some(_)) | (Some(_), None, Some(_)) => Err(Refusal::BadCredentials),
        (Some(username), Some(password), Some(file)) => {
            let Some(verifier) = &security.verifier else {
                return Err(Refusal::BadCredentials);
            };
            let check = verifier
                .verify(Arc::clone(file), username.to_string(), password.clone())
                .map_err(|_| Refusal::Busy)?;
            if check.await {
                Ok(Some(username.clone()))
            } else {
                Err(Refusal::BadCredentials)
            }
        }
    }
}
