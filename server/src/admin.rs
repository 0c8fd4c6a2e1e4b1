//! The admin API under `/api`, guarded by a bearer token.
//!
//! With no `--admin-token` configured every request gets 403; a missing or
//! wrong token gets 401. Per connection: `/api/clients…`; per user (token
//! mode only, 404 in anonymous mode): `/api/users/{user}…`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::{PushEncoder, close_code};

use crate::auth;
use crate::registry::{CloseRequest, PushOutcome, millis};
use crate::reliable::{Outgoing, SessionStore, To};
use crate::state::AppState;

/// Rejects requests without the right bearer token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config.admin_token.as_deref() else {
        return (
            StatusCode::FORBIDDEN,
            "the admin API is off: start the server with --admin-token",
        )
            .into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !auth::bearer_matches(given, expected) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token",
        )
            .into_response();
    }
    next.run(request).await
}

/// `GET /api/clients`
pub async fn list(State(state): State<AppState>) -> Response {
    Json(state.registry.list()).into_response()
}

/// `POST /api/clients/{id}/push` with a text body (at most `--max-push-size`, else 413).
pub async fn push(State(state): State<AppState>, Path(id): Path<String>, body: String) -> Response {
    let push = Arc::new(PushEncoder::new(millis(SystemTime::now()), &body));
    drop(body);
    match state.registry.push(&id, push.clone()) {
        PushOutcome::Queued => Json(json!({ "queued": true })).into_response(),
        PushOutcome::QueueFull => {
            crate::metrics::Metrics::add(&state.metrics.pushes_dropped, 1);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the client's queue is full",
            )
                .into_response()
        }
        PushOutcome::NotReady => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the client's reliable session is not set up yet (nothing numbered either way yet); retry",
        )
            .into_response(),
        PushOutcome::Unknown => match state.reliable.detached_of(&id).await {
            // A reliable client that is away: the push waits for its resume.
            Some(session) => {
                let push = Outgoing::Shared(push);
                match crate::reliable::lock(&session).send(To::Away, push, Instant::now()) {
                    Ok(_) => (
                        StatusCode::ACCEPTED,
                        Json(json!({ "queued": false, "stored": true })),
                    )
                        .into_response(),
                    // It came back in the meantime: the registry has it now.
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the client has just resumed its session; retry",
                    )
                        .into_response(),
                }
            }
            None => (StatusCode::NOT_FOUND, format!("no client {id:?}")).into_response(),
        },
    }
}

/// `POST /api/broadcast` with a text body (at most `--max-push-size`, else
/// 413), escaped and encoded once for every client.
pub async fn broadcast(State(state): State<AppState>, body: String) -> Response {
    let push = Arc::new(PushEncoder::new(millis(SystemTime::now()), &body));
    drop(body);
    let (delivered, dropped) = state.registry.broadcast(&push);
    crate::metrics::Metrics::add(&state.metrics.pushes_dropped, dropped as u64);
    Json(json!({ "delivered": delivered, "dropped": dropped })).into_response()
}

/// The query of `DELETE /api/clients/{id}`.
#[derive(Debug, Deserialize)]
pub struct KickQuery {
    /// The close code: 1000, 1001, 1012, 1013 or 4000-4999; 4000 by default.
    code: Option<u16>,
    /// The close reason, at most 123 bytes; "kicked" by default.
    reason: Option<String>,
}

/// The close a kick asks for: 4000 "kicked" unless the query chooses.
/// A bad query is answered 400 with the returned text.
fn close_request(
    query: Result<Query<KickQuery>, QueryRejection>,
) -> Result<CloseRequest, &'static str> {
    const CODES: &str = "code must be 1000, 1001, 1012, 1013 or 4000-4999";
    let Ok(Query(query)) = query else {
        return Err(CODES);
    };
    let code = match query.code {
        None => close_code::KICKED,
        Some(code) if matches!(code, 1000 | 1001 | 1012 | 1013 | 4000..=4999) => code,
        Some(_) => return Err(CODES),
    };
    let reason = query.reason.unwrap_or_else(|| "kicked".into());
    if reason.len() > 123 {
        return Err("a close reason has at most 123 bytes");
    }
    Ok(CloseRequest { code, reason })
}

/// `DELETE /api/clients/{id}?code=N&reason=R`: default 4000 "kicked".
pub async fn kick(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<KickQuery>, QueryRejection>,
) -> Response {
    let request = match close_request(query) {
        Ok(request) => request,
        Err(text) => return (StatusCode::BAD_REQUEST, text).into_response(),
    };
    let code = request.code;
    if state.registry.kick(&id, request) {
        Json(json!({ "closed": id, "code": code })).into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no client {id:?}")).into_response()
    }
}

/// 404 for a user with nothing on this server, and for every user in
/// anonymous mode (there are no users).
fn no_user(user: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no user {user:?}")).into_response()
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
        return no_user(&user);
    }
    let push = Arc::new(PushEncoder::new(millis(SystemTime::now()), &body));
    drop(body);
    let (delivered, connections) = state.registry.push_user(&user, &push);
    crate::metrics::Metrics::add(
        &state.metrics.pushes_dropped,
        (connections - delivered) as u64,
    );
    let away = state.reliable.detached_of_user(&user).await;
    let now = Instant::now();
    // A session that came back meanwhile refuses `To::Away`: its
    // connection is in the registry now.
    let stored = away
        .iter()
        .filter(|session| {
            let push = Outgoing::Shared(push.clone());
            crate::reliable::lock(session)
                .send(To::Away, push, now)
                .is_ok()
        })
        .count();
    if connections == 0 && away.is_empty() {
        return no_user(&user);
    }
    Json(json!({ "delivered": delivered, "stored": stored })).into_response()
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
        return no_user(&user);
    }
    let request = match close_request(query) {
        Ok(request) => request,
        Err(text) => return (StatusCode::BAD_REQUEST, text).into_response(),
    };
    let code = request.code;
    let closed = state.registry.kick_user(&user, &request);
    let sessions = state.reliable.end_user(&user).await;
    if closed == 0 && sessions == 0 {
        return no_user(&user);
    }
    Json(json!({ "user": user, "closed": closed, "sessions_ended": sessions, "code": code }))
        .into_response()
}
