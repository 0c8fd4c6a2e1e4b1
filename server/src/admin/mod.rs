//! The admin API under `/api`, guarded by a bearer token.
//!
//! With no `--admin-token` configured every request gets 403; a missing or
//! wrong token gets 401, and an address with 10 failures within 10 s
//! ([`lockout`]) gets 429 with `Retry-After` until the 10 s end. Per
//! connection: `/api/clients…`; per user (token mode only, 404 in anonymous
//! mode): `/api/users/{user}…`.
//!
//! `local.rs` does each operation on this node and returns its [`Answer`];
//! on a single node that is the whole story. In cluster mode (`cluster.rs`)
//! an operation on a connection held by another node goes to that node and
//! its answer is relayed; a broadcast or a user operation runs on every
//! live node and the answers are summed.

pub mod channels;
mod cluster;
mod local;
mod lockout;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use local::{KickQuery, require_token};
pub use lockout::Lockout;

use crate::cluster::{Answer, Command, Executor};
use crate::state::AppState;

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self.json {
            Some(json) => (status, Json(json)).into_response(),
            None => (status, self.text).into_response(),
        }
    }
}

/// What another node asks this one to do: the local operations.
pub fn executor(state: AppState) -> Executor {
    std::sync::Arc::new(move |command| {
        let state = state.clone();
        Box::pin(async move { local::execute(&state, command).await })
    })
}

/// `GET /api/clients`: in cluster mode the connections of every live node,
/// each with its `node`.
pub async fn list(State(state): State<AppState>) -> Response {
    match &state.cluster {
        None => Json(state.registry.list(None)).into_response(),
        Some(node) => cluster::list(&state, node).await.into_response(),
    }
}

/// `POST /api/clients/{id}/push` with a text body (at most `--max-push-size`, else 413).
pub async fn push(State(state): State<AppState>, Path(id): Path<String>, body: String) -> Response {
    let command = Command::Push { id, body };
    cluster::to_holder(&state, command).await.into_response()
}

/// `POST /api/broadcast` with a text body (at most `--max-push-size`, else
/// 413), escaped and encoded once for every client (of each node).
pub async fn broadcast(State(state): State<AppState>, body: String) -> Response {
    cluster::to_all(&state, Command::Broadcast { body })
        .await
        .into_response()
}

/// `DELETE /api/clients/{id}?code=N&reason=R`: default 4000 "kicked".
pub async fn kick(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<KickQuery>, QueryRejection>,
) -> Response {
    let request = match local::close_request(query) {
        Ok(request) => request,
        Err(text) => return (StatusCode::BAD_REQUEST, text).into_response(),
    };
    let command = Command::Kick {
        id,
        code: request.code,
        reason: request.reason,
    };
    cluster::to_holder(&state, command).await.into_response()
}

/// `POST /api/users/{user}/push` (token mode) with a text body: to every
/// connection of the user, and stored for each of the user's reliable
/// sessions that is away (for its resume). `{"delivered":n,"stored":m}`;
/// 404 when the user has neither.
pub async fn push_user(
    State(state): State<AppState>,
    Path(user): Path<String>,
    body: String,
) -> Response {
    if state.auth.is_none() {
        return local::no_user(&user).into_response();
    }
    cluster::to_all(
        &state,
        Command::PushUser {
            user,
            body,
            away: true,
        },
    )
    .await
    .into_response()
}

/// `DELETE /api/users/{user}?code=N&reason=R` (token mode): closes every
/// connection of the user (4000 "kicked" by default) and ends the user's
/// reliable sessions. Tokens are not revoked: the user may connect again
/// with a valid one. 404 when the user has neither.
pub async fn kick_user(
    State(state): State<AppState>,
    Path(user): Path<String>,
    query: Result<Query<KickQuery>, QueryRejection>,
) -> Response {
    if state.auth.is_none() {
        return local::no_user(&user).into_response();
    }
    let request = match local::close_request(query) {
        Ok(request) => request,
        Err(text) => return (StatusCode::BAD_REQUEST, text).into_response(),
    };
    let command = Command::KickUser {
        user,
        code: request.code,
        reason: request.reason,
    };
    cluster::to_all(&state, command).await.into_response()
}
