//! The admin API's channels (issue 23):
//!
//! * `POST /api/channels/{channel}/publish`: the body is the publication's
//!   data (one JSON value); an `Idempotency-Key` header works as a
//!   `publish`'s `id`. `{"offset":n,"epoch":"…"}`.
//! * `GET /api/channels`: the channels with subscribers, with their
//!   counts, over every live node (`unanswered` names the nodes that did
//!   not answer).
//! * `GET /api/channels/{channel}/history?limit=N`: the publications kept,
//!   oldest first (100 by default, 10,000 at most).
//! * `DELETE /api/channels/{channel}/subscribers/{client_id}`: the
//!   subscription ends with `unsubscribed` (`reason: admin`), on whichever
//!   node holds the connection.
//!
//! Statuses: 400 for a bad name, body or key; 404 for a namespace that is
//! not configured, or a client not subscribed; 413 for a publication over
//! the namespace's `max_publication_bytes`; 503 while the streams are
//! unavailable (Redis down: a retry with the same key publishes once).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::cluster;
use super::local::{json, text};
use crate::channels::namespace::ChannelError;
use crate::channels::service::{Refusal, pub_frame};
use crate::channels::stream::PublishRequest;
use crate::cluster::{Answer, Command};
use crate::queue::Outbound;
use crate::state::AppState;

/// The most publications one history request returns.
const MAX_HISTORY: usize = 10_000;

fn refused(refusal: &Refusal) -> Answer {
    let status = match refusal {
        Refusal::Channel(ChannelError::UnknownNamespace(_)) => StatusCode::NOT_FOUND,
        Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    text(status, refusal.to_string())
}

/// `POST /api/channels/{channel}/publish`.
pub async fn publish(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let namespace = match state.channels.namespace(&channel) {
        Ok(namespace) => namespace,
        Err(err) => return refused(&err.into()).into_response(),
    };
    if body.len() > namespace.max_publication_bytes {
        let refusal = Refusal::TooLarge {
            size: body.len(),
            max: namespace.max_publication_bytes,
        };
        return refused(&refusal).into_response();
    }
    let data = match shared::channel::RawJson::parse(&body) {
        Ok(data) => data,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is the publication's data, one JSON value: {err}"),
            )
                .into_response();
        }
    };
    let id = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= shared::channel::MAX_ID_BYTES => {
            Some(key.to_owned())
        }
        Some(_) => return refused(&Refusal::BadId).into_response(),
    };
    let request = PublishRequest {
        channel,
        data: data.get().to_owned(),
        id,
        info: None,
    };
    match state.channels.publish(request).await {
        Ok(published) => Json(json!({
            "offset": published.offset,
            "epoch": published.epoch,
        }))
        .into_response(),
        Err(refusal) => refused(&refusal).into_response(),
    }
}

/// This node's channels and their subscribers.
pub fn local_counts(state: &AppState) -> Answer {
    let counts: BTreeMap<String, usize> = state.channels.hub().counts().into_iter().collect();
    json(StatusCode::OK, json!({ "channels": counts }))
}

/// `GET /api/channels`.
pub async fn list(State(state): State<AppState>) -> Response {
    let Some(node) = &state.cluster else {
        return rows(local_counts(&state), Vec::new());
    };
    let others = node.others();
    let asked = others
        .iter()
        .map(|other| node.send(other, Command::Channels));
    let theirs = futures_util::future::join_all(asked).await;
    let mut all = local_counts(&state);
    let mut unanswered = Vec::new();
    for (other, answer) in others.into_iter().zip(theirs) {
        match answer {
            Ok(Answer {
                status: 200,
                json: Some(Value::Object(theirs)),
                ..
            }) => merge(&mut all, theirs.get("channels")),
            _ => unanswered.push(other),
        }
    }
    rows(all, unanswered)
}

fn merge(all: &mut Answer, theirs: Option<&Value>) {
    let (Some(Value::Object(theirs)), Some(Value::Object(mine))) = (
        theirs,
        all.json.as_mut().and_then(|j| j.get_mut("channels")),
    ) else {
        return;
    };
    for (channel, count) in theirs {
        let count = count.as_u64().unwrap_or(0);
        let entry = mine.entry(channel.clone()).or_insert(json!(0));
        *entry = json!(entry.as_u64().unwrap_or(0).saturating_add(count));
    }
}

/// `{"channels":[{"channel":…,"subscribers":n}…],"unanswered":[…]}`.
fn rows(counts: Answer, unanswered: Vec<String>) -> Response {
    let rows: Vec<Value> = counts
        .json
        .as_ref()
        .and_then(|j| j.get("channels"))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(channel, n)| json!({ "channel": channel, "subscribers": n }))
                .collect()
        })
        .unwrap_or_default();
    Json(json!({ "channels": rows, "unanswered": unanswered })).into_response()
}

/// `?limit=N`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /api/channels/{channel}/history?limit=N`.
pub async fn history(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(HistoryQuery { limit })) => limit.unwrap_or(100).min(MAX_HISTORY),
        Err(err) => return (StatusCode::BAD_REQUEST, err.body_text()).into_response(),
    };
    match state.channels.history(&channel, limit).await {
        Ok(publications) => {
            // Each as its `pub` frame says it, less the frame's own fields.
            let rows: Vec<Value> = publications
                .iter()
                .filter_map(|p| serde_json::from_str::<Value>(&pub_frame(&channel, p)).ok())
                .map(|mut row| {
                    if let Some(row) = row.as_object_mut() {
                        row.remove("type");
                        row.remove("channel");
                    }
                    row
                })
                .collect();
            Json(json!({ "channel": channel, "publications": rows })).into_response()
        }
        Err(refusal) => refused(&refusal).into_response(),
    }
}

/// `DELETE /api/channels/{channel}/subscribers/{client_id}`.
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path((channel, id)): Path<(String, String)>,
) -> Response {
    cluster::to_holder(&state, Command::Unsubscribe { id, channel })
        .await
        .into_response()
}

/// Ends connection `id`'s subscription to `channel` here, telling it.
pub async fn unsubscribe_here(state: &AppState, id: &str, channel: &str) -> Answer {
    let Some((conn, outbound, shared)) = state.registry.conn_of(id) else {
        return super::local::no_client(id);
    };
    if !state.channels.unsubscribe(channel, conn).await {
        return text(
            StatusCode::NOT_FOUND,
            format!("client {id:?} is not subscribed to {channel:?}"),
        );
    }
    let ended = shared::ServerMessage::Unsubscribed {
        channel: channel.to_owned(),
        reason: shared::channel::UnsubscribeReason::Admin,
        id: None,
    };
    // Within the queue's bounds, as a publication is: a connection that
    // cannot take it is closed as a slow consumer, never left unaware.
    if let Err(crate::queue::TrySendError::Full) =
        outbound.try_send(Outbound::Frame(crate::wire::text(&ended)))
    {
        shared.request_close(crate::registry::CloseRequest {
            code: shared::close_code::TRY_AGAIN_LATER,
            reason: crate::connection::end::SLOW_CONSUMER.into(),
        });
    }
    json(StatusCode::OK, json!({ "unsubscribed": true }))
}
