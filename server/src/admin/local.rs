//! The admin operations on this node's connections and sessions, each
//! returning the [`Answer`] a single node gives; and the bearer-token guard.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::{PushEncoder, close_code};

use super::lockout::Lockout;
use crate::auth;
use crate::clock::millis;
use crate::cluster::{Answer, Command};
use crate::registry::{CloseRequest, PushOutcome};
use crate::reliable::{Outgoing, SessionStore, To, Unwritten};
use crate::state::AppState;

/// Rejects requests without the right bearer token; an address that
/// failed too often lately gets 429 with `Retry-After` ([`super::lockout`]).
pub async fn require_token(
    State((state, lockout)): State<(AppState, Arc<Lockout>)>,
    crate::peer::ClientAddr(client): crate::peer::ClientAddr,
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
    let now = Instant::now();
    if let Some(wait) = lockout.locked(client.ip(), now) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, seconds.to_string())],
            "too many failed authentications from this address: try again later",
        )
            .into_response();
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !auth::bearer_matches(given, expected) {
        lockout.failed(client.ip(), now);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token",
        )
            .into_response();
    }
    next.run(request).await
}

pub(super) fn json(status: StatusCode, value: serde_json::Value) -> Answer {
    Answer {
        status: status.as_u16(),
        json: Some(value),
        text: String::new(),
    }
}

pub(super) fn text(status: StatusCode, text: impl Into<String>) -> Answer {
    Answer {
        status: status.as_u16(),
        json: None,
        text: text.into(),
    }
}

/// Runs `command` on this node.
pub async fn execute(state: &AppState, command: Command) -> Answer {
    match command {
        Command::Push { id, body } => push(state, &id, body).await,
        Command::Kick { id, code, reason } => kick(state, &id, CloseRequest { code, reason }),
        Command::PushUser { user, body, away } => push_user(state, &user, body, away).await,
        Command::KickUser { user, code, reason } => {
            kick_user(state, &user, &CloseRequest { code, reason }).await
        }
        Command::Broadcast { body } => broadcast(state, body),
        Command::Channels => super::channels::local_counts(state),
        Command::Unsubscribe { id, channel } => {
            super::channels::unsubscribe_here(state, &id, &channel).await
        }
        Command::Takeover { session, epoch } => {
            state.reliable.taken_over(&session, epoch);
            json(StatusCode::OK, json!({ "session": session }))
        }
    }
}

/// A push to connection `id` (or its reliable session, away).
pub async fn push(state: &AppState, id: &str, body: String) -> Answer {
    let push = Arc::new(PushEncoder::new(millis(SystemTime::now()), &body));
    drop(body);
    match state.registry.push(id, push.clone()) {
        PushOutcome::Queued => json(StatusCode::OK, json!({ "queued": true })),
        PushOutcome::QueueFull => {
            crate::metrics::Metrics::add(&state.metrics.pushes_dropped, 1);
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the client's queue is full",
            )
        }
        PushOutcome::NotReady => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the client's reliable session is not set up yet (nothing numbered either way yet); retry",
        ),
        PushOutcome::Unknown => match state.reliable.detached_of(id).await {
            // A reliable client that is away: the push waits for its resume.
            Ok(Some(session)) => {
                let push = Outgoing::Shared(push);
                let sent = crate::reliable::lock(&session).send(To::Away, push, Instant::now());
                // Cluster mode: stored in Redis, or not stored at all.
                let stored = match sent {
                    Ok(_) => state.reliable.persist(&session).await,
                    Err(_) => Err(Unwritten::TakenOver),
                };
                match stored {
                    Ok(()) => json(
                        StatusCode::ACCEPTED,
                        json!({ "queued": false, "stored": true }),
                    ),
                    // It came back in the meantime: the registry has it now.
                    Err(Unwritten::TakenOver) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the client has just resumed its session; retry",
                    ),
                    // It expired (or Redis lost it) since it was loaded.
                    Err(Unwritten::Gone) => no_client(id),
                    Err(Unwritten::Raced) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session was written by another node meanwhile; retry",
                    ),
                    // Perhaps stored: a retry could store it twice.
                    Err(Unwritten::Unconfirmed) => text(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the session store did not confirm in time: the push may or may not be stored",
                    ),
                    Err(_) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session store is unavailable; retry",
                    ),
                }
            }
            Ok(None) => no_client(id),
            // Not "no such client": the store could not say.
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store is unavailable; retry",
            ),
        },
    }
}

/// 404 for an unknown connection.
pub fn no_client(id: &str) -> Answer {
    text(StatusCode::NOT_FOUND, format!("no client {id:?}"))
}

/// A broadcast to every connection of this node, encoded once.
pub fn broadcast(state: &AppState, body: String) -> Answer {
    let push = Arc::new(PushEncoder::new(millis(SystemTime::now()), &body));
    drop(body);
    let (delivered, dropped) = state.registry.broadcast(&push);
    crate::metrics::Metrics::add(&state.metrics.pushes_dropped, dropped as u64);
    json(
        StatusCode::OK,
        json!({ "delivered": delivered, "dropped": dropped }),
    )
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
pub fn close_request(
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

/// Closes connection `id` as `request` asks.
pub fn kick(state: &AppState, id: &str, request: CloseRequest) -> Answer {
    let code = request.code;
    if state.registry.kick(id, request) {
        json(StatusCode::OK, json!({ "closed": id, "code": code }))
    } else {
        no_client(id)
    }
}

/// 404 for a user with nothing on this server, and for every user in
/// anonymous mode (there are no users).
pub fn no_user(user: &str) -> Answer {
    text(StatusCode::NOT_FOUND, format!("no user {user:?}"))
}

/// A push to every connection of `user` here and, with `away`, stored for
/// each of the user's reliable sessions that is away (in a cluster, only
/// the node asked stores: the sessions away are shared in Redis).
pub async fn push_user(state: &AppState, user: &str, body: String, away: bool) -> Answer {
    if state.auth.is_none() {
        return no_user(user);
    }
    // The sessions away first: when the store cannot say, nothing is
    // delivered either, so that the 503's retry delivers nothing twice.
    let away = if away {
        match state.reliable.detached_of_user(user).await {
            Ok(away) => away,
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session store is unavailable; retry",
                );
            }
        }
    } else {
        Vec::new()
    };
    let push = Arc::new(PushEncoder::new(millis(SystemTime::now()), &body));
    drop(body);
    let (delivered, connections) = state.registry.push_user(user, &push);
    crate::metrics::Metrics::add(
        &state.metrics.pushes_dropped,
        (connections - delivered) as u64,
    );
    let now = Instant::now();
    // A session that came back meanwhile refuses `To::Away`: its
    // connection is in the registry now.
    let mut stored = 0;
    for session in &away {
        let push = Outgoing::Shared(push.clone());
        let sent = crate::reliable::lock(session).send(To::Away, push, now);
        // Cluster mode: counted only once stored in Redis.
        if sent.is_ok() && state.reliable.persist(session).await.is_ok() {
            stored += 1;
        }
    }
    if connections == 0 && away.is_empty() {
        return no_user(user);
    }
    json(
        StatusCode::OK,
        json!({ "delivered": delivered, "stored": stored }),
    )
}

/// Closes every connection of `user` here and ends the user's sessions.
pub async fn kick_user(state: &AppState, user: &str, request: &CloseRequest) -> Answer {
    if state.auth.is_none() {
        return no_user(user);
    }
    let code = request.code;
    let closed = state.registry.kick_user(user, request);
    // Cluster mode: the Redis store answers 0 sessions ended when Redis
    // fails, which read as "no such user" (404) while the sessions stayed
    // resumable. Every failed Redis command of the node is counted, so a
    // count that moved meanwhile says the store may not have ended them:
    // 503, and the retry ends them (another command's failure at the same
    // moment also gives a 503, which a retry answers; never a false 404).
    let errors_before = state.cluster.as_ref().map(|node| node.redis_errors());
    let sessions = state.reliable.end_user(user).await;
    if let (Some(node), Some(before)) = (&state.cluster, errors_before)
        && node.redis_errors() != before
    {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the session store did not answer: {closed} connection(s) closed here, \
                 but the user's reliable sessions may still be resumable; retry"
            ),
        );
    }
    if closed == 0 && sessions == 0 {
        return no_user(user);
    }
    json(
        StatusCode::OK,
        json!({ "user": user, "closed": closed, "sessions_ended": sessions, "code": code }),
    )
}
