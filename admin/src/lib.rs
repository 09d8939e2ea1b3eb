//! The admin endpoint of ringmq: Prometheus metrics, health and readiness probes,
//! and a JSON API over the running shards, served over HTTP from a thread of its
//! own with a small tokio runtime. The shards never see tokio: questions reach them
//! through [`BrokerHandle`], and counters are read where the shards left them.
//!
//! Layout:
//! - this file: [`AdminConfig`], [`serve`] and the [`AdminServer`] it returns (the
//!   thread, the runtime, the routes, the bearer-token check);
//! - `metrics`: `/metrics`, every shard's counters read at scrape time;
//! - `api`: the JSON API under `/api/v1`.
//!
//! Routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | 200 while the process runs (never asks for a token) |
//! | `GET /ready` | 200 when every shard listens and the broker is not stopping, else 503 (no token) |
//! | `GET /metrics` | Prometheus text, or OpenMetrics when the scraper asks for it |
//! | `GET /api/v1/broker` | version, uptime, shards, totals |
//! | `GET /api/v1/clients?limit=N` | sessions, sorted by client id (default 1000) |
//! | `GET /api/v1/clients/{client_id}` | one session and its subscriptions, 404 if none |
//! | `DELETE /api/v1/clients/{client_id}` | disconnects the client (204), 404 if not connected |
//! | `GET /api/v1/subscriptions?limit=N` | subscriptions, sorted by client id and filter |
//! | `GET /api/v1/shards` | per-shard connections, sessions, subscriptions, messages |
//!
//! With a token set every route but `/health` and `/ready` needs
//! `Authorization: Bearer <token>` and answers 401 without it.

mod api;
mod metrics;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use ringmq_shard::{BrokerHandle, Limits};
use tracing::{error, warn};

/// How long [`AdminServer::shutdown`] waits for requests in progress.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// What the admin endpoint is started with.
#[derive(Clone)]
pub struct AdminConfig {
    /// Where to listen; port 0 picks a free port ([`AdminServer::addr`] tells it).
    pub listen: SocketAddr,
    /// The bearer token every route but `/health` and `/ready` requires; `None`:
    /// no token, allowed only on a loopback address.
    pub token: Option<String>,
    /// The broker's limits, some reported as gauges (`ringmq_connections_max`).
    pub limits: Limits,
    /// This broker's name among its peers (`node_id`), in the broker info and on
    /// `ringmq_build_info`.
    pub node_id: String,
    /// `HOST:PORT` peers are told to reach this node at (`advertise`), if set.
    pub advertise: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("limits", &self.limits)
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .finish()
    }
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the admin endpoint on {addr} would be reachable from other hosts without a \
         token: set admin.token, or listen on a loopback address"
    )]
    TokenRequired { addr: SocketAddr },
    #[error("the admin endpoint cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the admin endpoint cannot start: {0}")]
    Start(std::io::Error),
}

/// What every request handler shares.
struct Admin {
    handle: BrokerHandle,
    token: RwLock<Option<String>>,
    limits: Arc<RwLock<Arc<Limits>>>,
    registry: Registry,
    started: Instant,
    node_id: String,
    advertise: Option<String>,
}

impl Admin {
    fn token(&self) -> Option<String> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Tells the server's thread to stop, and hears when it has.
type Stop = (tokio::sync::oneshot::Sender<()>, mpsc::Receiver<()>);

/// The running admin endpoint; stops when dropped. Its methods take `&self`, so
/// one thread can change its settings while another stops it.
pub struct AdminServer {
    addr: SocketAddr,
    admin: Arc<Admin>,
    stop: Mutex<Option<Stop>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl AdminServer {
    /// The address it listens on, with the port the system picked for port 0.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the token (a configuration reload); `None` removes it.
    pub fn set_token(&self, token: Option<String>) {
        *self
            .admin
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The limits now in force (a configuration reload).
    pub fn set_limits(&self, limits: Limits) {
        *self
            .admin
            .limits
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(limits);
    }

    /// Stops accepting, lets requests in progress finish (briefly) and returns;
    /// later calls do nothing.
    pub fn shutdown(&self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, stopped)) = stop {
            let _ = stop.send(());
            if stopped.recv_timeout(SHUTDOWN_WAIT).is_err() {
                warn!("the admin endpoint did not stop in time; leaving it");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `config.listen` and serves the admin routes from a new thread.
///
/// Refuses a listener that is not on a loopback address unless a token is set.
pub fn serve(config: AdminConfig, handle: BrokerHandle) -> Result<AdminServer, AdminError> {
    let token = config.token.filter(|token| !token.is_empty());
    if token.is_none() && !config.listen.ip().is_loopback() {
        return Err(AdminError::TokenRequired {
            addr: config.listen,
        });
    }
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| AdminError::Bind {
            addr: config.listen,
            source,
        })?;
    listener.set_nonblocking(true).map_err(AdminError::Start)?;
    let addr = listener.local_addr().map_err(AdminError::Start)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("ringmq-admin")
        .build()
        .map_err(AdminError::Start)?;

    let limits = Arc::new(RwLock::new(Arc::new(config.limits)));
    let start_time_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let registry = metrics::registry(metrics::BrokerCollector {
        handle: handle.clone(),
        limits: Arc::clone(&limits),
        start_time_unix_s,
        node_id: config.node_id.clone(),
    });
    let admin = Arc::new(Admin {
        handle,
        token: RwLock::new(token),
        limits,
        registry,
        started: Instant::now(),
        node_id: config.node_id,
        advertise: config.advertise,
    });
    let app = router(Arc::clone(&admin));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (stopped_tx, stopped) = mpsc::channel();
    std::thread::Builder::new()
        .name("ringmq-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(err) => {
                        error!(error = %err, "the admin endpoint cannot use its socket");
                        return;
                    }
                };
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
                if let Err(err) = served {
                    error!(error = %err, "the admin endpoint stopped");
                }
            });
            let _ = stopped_tx.send(());
        })
        .map_err(AdminError::Start)?;
    Ok(AdminServer {
        addr,
        admin,
        stop: Mutex::new(Some((stop, stopped))),
    })
}

fn router(admin: Arc<Admin>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics_text))
        .merge(api::routes())
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&admin),
            require_token,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(guarded)
        .fallback(|| async { api::ApiError::NotFound("no such route".into()) })
        .with_state(admin)
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(admin): State<Arc<Admin>>) -> (StatusCode, &'static str) {
    if admin.handle.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let openmetrics = match metrics::openmetrics(&admin.registry) {
        Ok(text) => text,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let wants_openmetrics = headers
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(CONTENT_TYPE, metrics::OPENMETRICS_TEXT)], openmetrics).into_response()
    } else {
        (
            [(CONTENT_TYPE, metrics::PROMETHEUS_TEXT)],
            metrics::to_prometheus_text(&openmetrics),
        )
            .into_response()
    }
}

async fn require_token(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    if let Some(expected) = admin.token() {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if !given.is_some_and(|given| same_secret(given.as_bytes(), expected.as_bytes())) {
            return ([(WWW_AUTHENTICATE, "Bearer")], api::ApiError::Unauthorized).into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so the time taken does not
/// tell how much of a guess was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
