//! The JSON API under `/api/v1`: what the shards answer through the
//! [`BrokerHandle`](ringmq_shard::BrokerHandle), as JSON.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ringmq_shard::control::{ClientDetail, ClientInfo, SubscriptionInfo, Unavailable};
use ringmq_shard::stats::{total, ShardStats};
use serde::{Deserialize, Serialize};

use crate::Admin;

/// Entries a list returns when the request does not say.
const LIST_LIMIT_DEFAULT: usize = 1000;
/// Entries a list may return: each costs the shards a copy and the answer memory.
const LIST_LIMIT_MAX: usize = 100_000;

pub(crate) fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/api/v1/broker", get(broker))
        .route("/api/v1/clients", get(clients))
        .route("/api/v1/clients/{client_id}", get(client).delete(kick))
        .route("/api/v1/subscriptions", get(subscriptions))
        .route("/api/v1/shards", get(shards))
}

/// An answer other than success, as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) enum ApiError {
    BadRequest(String),
    Unauthorized,
    NotFound(String),
    Unavailable,
}

impl From<Unavailable> for ApiError {
    fn from(_: Unavailable) -> ApiError {
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "this route needs the header `Authorization: Bearer <admin.token>`".into(),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, what),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, Unavailable.to_string()),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

impl ListQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(LIST_LIMIT_DEFAULT) {
            limit @ 1..=LIST_LIMIT_MAX => Ok(limit),
            limit => Err(ApiError::BadRequest(format!(
                "limit = {limit}: allowed from 1 to {LIST_LIMIT_MAX}"
            ))),
        }
    }
}

#[derive(Debug, Serialize)]
struct Totals {
    connections: u64,
    connections_total: u64,
    connections_rejected: u64,
    sessions: u64,
    subscriptions: u64,
    retained_messages: u64,
    messages_received: u64,
    messages_sent: u64,
    messages_dropped: u64,
    bytes_received: u64,
    bytes_sent: u64,
    protocol_errors: u64,
}

#[derive(Debug, Serialize)]
struct Broker {
    version: &'static str,
    node_id: String,
    advertise: Option<String>,
    uptime_s: u64,
    ready: bool,
    shards: usize,
    totals: Totals,
}

async fn broker(State(admin): State<Arc<Admin>>) -> Json<Broker> {
    let all = admin.handle.shard_stats();
    let sum = |value: fn(&ShardStats) -> u64| total(all, value);
    Json(Broker {
        version: env!("CARGO_PKG_VERSION"),
        node_id: admin.node_id.clone(),
        advertise: admin.advertise.clone(),
        uptime_s: admin.started.elapsed().as_secs(),
        ready: admin.handle.is_ready(),
        shards: admin.handle.shards(),
        totals: Totals {
            connections: sum(|s| s.clients_connected.get()),
            connections_total: sum(|s| s.connections_total.get()),
            connections_rejected: sum(|s| s.connections_refused.get() + s.sessions_refused.get()),
            sessions: sum(|s| s.sessions.get()),
            subscriptions: sum(|s| s.subscriptions.get()),
            retained_messages: sum(|s| s.retained.get()),
            messages_received: sum(|s| s.messages_received.get()),
            messages_sent: sum(|s| s.messages_sent.get()),
            messages_dropped: sum(|s| s.dropped_total() + s.dropped_no_subscribers.get()),
            bytes_received: sum(|s| s.bytes_received.get()),
            bytes_sent: sum(|s| s.bytes_sent.get()),
            protocol_errors: sum(|s| s.protocol_errors.get()),
        },
    })
}

#[derive(Debug, Serialize)]
struct Client {
    client_id: String,
    shard: usize,
    connected: bool,
    /// `HOST:PORT` of the connection, when connected.
    peer: Option<String>,
    protocol: &'static str,
    subscriptions: usize,
    pending_messages: usize,
    session_expiry_s: u32,
}

impl From<ClientInfo> for Client {
    fn from(info: ClientInfo) -> Client {
        Client {
            client_id: info.client_id,
            shard: info.shard,
            connected: info.connected,
            peer: info.peer.map(|peer| peer.to_string()),
            protocol: info.protocol,
            subscriptions: info.subscriptions,
            pending_messages: info.pending_messages,
            session_expiry_s: info.session_expiry_s,
        }
    }
}

#[derive(Debug, Serialize)]
struct Subscription {
    client_id: String,
    filter: String,
    qos: u8,
}

impl From<SubscriptionInfo> for Subscription {
    fn from(info: SubscriptionInfo) -> Subscription {
        Subscription {
            client_id: info.client_id,
            filter: info.filter,
            qos: info.qos,
        }
    }
}

#[derive(Debug, Serialize)]
struct ClientList {
    count: usize,
    limit: usize,
    clients: Vec<Client>,
}

async fn clients(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ClientList>, ApiError> {
    let limit = query.limit()?;
    let clients: Vec<Client> = admin
        .handle
        .clients(limit)
        .await?
        .into_iter()
        .map(Client::from)
        .collect();
    Ok(Json(ClientList {
        count: clients.len(),
        limit,
        clients,
    }))
}

#[derive(Debug, Serialize)]
struct ClientWithSubscriptions {
    client: Client,
    subscriptions: Vec<Subscription>,
}

impl From<ClientDetail> for ClientWithSubscriptions {
    fn from(detail: ClientDetail) -> ClientWithSubscriptions {
        ClientWithSubscriptions {
            client: detail.info.into(),
            subscriptions: detail
                .subscriptions
                .into_iter()
                .map(Subscription::from)
                .collect(),
        }
    }
}

async fn client(
    State(admin): State<Arc<Admin>>,
    Path(client_id): Path<String>,
) -> Result<Json<ClientWithSubscriptions>, ApiError> {
    match admin.handle.client(&client_id).await? {
        Some(detail) => Ok(Json(detail.into())),
        None => Err(ApiError::NotFound(format!(
            "no session for client {client_id:?}"
        ))),
    }
}

async fn kick(
    State(admin): State<Arc<Admin>>,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if admin.handle.kick(&client_id).await? {
        tracing::info!(client_id, "disconnected by the admin API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "client {client_id:?} is not connected"
        )))
    }
}

#[derive(Debug, Serialize)]
struct SubscriptionList {
    count: usize,
    limit: usize,
    subscriptions: Vec<Subscription>,
}

async fn subscriptions(
    State(admin): State<Arc<Admin>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let limit = query.limit()?;
    let subscriptions: Vec<Subscription> = admin
        .handle
        .subscriptions(limit)
        .await?
        .into_iter()
        .map(Subscription::from)
        .collect();
    Ok(Json(SubscriptionList {
        count: subscriptions.len(),
        limit,
        subscriptions,
    }))
}

#[derive(Debug, Serialize)]
struct Shard {
    shard: usize,
    connections: u64,
    sessions: u64,
    subscriptions: u64,
    retained_messages: u64,
    messages_received: u64,
    messages_sent: u64,
    messages_dropped: u64,
    ring_full: u64,
}

async fn shards(State(admin): State<Arc<Admin>>) -> Json<Vec<Shard>> {
    Json(
        admin
            .handle
            .shard_stats()
            .iter()
            .enumerate()
            .map(|(shard, s)| Shard {
                shard,
                connections: s.clients_connected.get(),
                sessions: s.sessions.get(),
                subscriptions: s.subscriptions.get(),
                retained_messages: s.retained.get(),
                messages_received: s.messages_received.get(),
                messages_sent: s.messages_sent.get(),
                messages_dropped: s.dropped_total() + s.dropped_no_subscribers.get(),
                ring_full: s.ring_full.get(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_statuses() {
        let status = |error: ApiError| error.into_response().status();
        assert_eq!(status(Unavailable.into()), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(ApiError::NotFound("x".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status(ApiError::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(ApiError::BadRequest("x".into())),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn list_limits_default_and_stay_bounded() {
        let limit = |limit: Option<usize>| ListQuery { limit }.limit().ok();
        assert_eq!(limit(None), Some(LIST_LIMIT_DEFAULT));
        assert_eq!(limit(Some(1)), Some(1));
        assert_eq!(limit(Some(LIST_LIMIT_MAX)), Some(LIST_LIMIT_MAX));
        assert_eq!(limit(Some(0)), None);
        assert_eq!(limit(Some(LIST_LIMIT_MAX + 1)), None);
    }
}
