//! The admin API under `/api`, guarded by a bearer token.
//!
//! With no `--admin-token` configured every request gets 403; a missing or
//! wrong token gets 401.

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

/// `DELETE /api/clients/{id}?code=N&reason=R`: default 4000 "kicked".
pub async fn kick(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<KickQuery>, QueryRejection>,
) -> Response {
    const CODES: &str = "code must be 1000, 1001, 1012, 1013 or 4000-4999";
    let Ok(Query(query)) = query else {
        return (StatusCode::BAD_REQUEST, CODES).into_response();
    };
    let code = match query.code {
        None => close_code::KICKED,
        Some(code) if matches!(code, 1000 | 1001 | 1012 | 1013 | 4000..=4999) => code,
        Some(_) => return (StatusCode::BAD_REQUEST, CODES).into_response(),
    };
    let reason = query.reason.unwrap_or_else(|| "kicked".into());
    if reason.len() > 123 {
        return (
            StatusCode::BAD_REQUEST,
            "a close reason has at most 123 bytes",
        )
            .into_response();
    }
    if state.registry.kick(&id, CloseRequest { code, reason }) {
        Json(json!({ "closed": id, "code": code })).into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no client {id:?}")).into_response()
    }
}
