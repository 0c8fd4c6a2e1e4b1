//! Why a connection ends: every close code and reason the server sends on
//! `/ws` and `/echo`, in one place ([`End`]). The codes are `shared::close_code`'s;
//! the reasons are written here only, so that a client (and a test) sees
//! one wording per cause.

use shared::close_code;

use crate::reliable::{Refused, TakenOver, Unwritten};
use crate::wire::ReadError;

/// The close reason when the session store lost the session (a resume
/// then fails with `unknown_session`, and the client starts over).
pub(crate) const SESSION_GONE: &str = "session lost by the session store: resume to start over";

/// The close reason of a `?client_id=` without `--allow-client-ids`.
pub(crate) const CLIENT_ID_REFUSED: &str =
    "client_id is chosen by the server: start it with --allow-client-ids (development only)";

/// The close reason (with 4401) of a connection whose token refreshes were
/// refused or rate-limited three times in a row.
pub(crate) const TOO_MANY_BAD_REFRESHES: &str = "too many bad refreshes";

/// The close reason (with 1013) of a connection whose unfinished message
/// would take the bytes every connection holds in unfinished messages past
/// `--max-partial-bytes`.
pub(crate) const PARTIAL_BUDGET_FULL: &str =
    "server busy: too many bytes of unfinished messages, try again later";

/// The close reason (with 1013) of a connection whose outbound queue could
/// not take a channel's publication: its client recovers by offset.
pub(crate) const SLOW_CONSUMER: &str = "slow consumer";

/// The close reason (with 1001) of every connection at the server's shutdown.
const SHUTTING_DOWN: &str = "server shutting down";

/// Why the connection ended, for its close frame and the disconnect log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct End {
    /// The close code to send; `None` when the connection is gone already.
    pub(crate) code: Option<u16>,
    pub(crate) reason: String,
}

impl End {
    pub(crate) fn with(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }

    /// The connection is gone: no close frame to send.
    pub(crate) fn gone(reason: impl Into<String>) -> Self {
        Self {
            code: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn shutdown() -> Self {
        Self::with(close_code::GOING_AWAY, SHUTTING_DOWN)
    }

    /// The close request the server's shutdown makes of every connection
    /// (`connection::shut_down`).
    pub(crate) fn shutdown_request() -> crate::registry::CloseRequest {
        crate::registry::CloseRequest {
            code: close_code::GOING_AWAY,
            reason: SHUTTING_DOWN.into(),
        }
    }

    pub(crate) fn idle() -> Self {
        Self::with(close_code::IDLE_TIMEOUT, "idle timeout")
    }

    /// Token mode: the token's `exp` (plus the leeway) passed without a refresh.
    pub(crate) fn token_expired() -> Self {
        Self::with(close_code::TOKEN_EXPIRED, "token expired")
    }

    pub(crate) fn too_many_bad() -> Self {
        Self::with(
            close_code::POLICY_VIOLATION,
            "too many messages that could not be decoded",
        )
    }

    /// The client lets the session's history fill up (it does not acknowledge).
    pub(crate) fn history_full() -> Self {
        Self::with(
            close_code::TRY_AGAIN_LATER,
            "too many unacknowledged messages: acknowledge, then resume",
        )
    }

    pub(crate) fn too_many_sessions() -> Self {
        Self::with(close_code::TRY_AGAIN_LATER, "too many reliable sessions")
    }

    /// Cluster mode: Redis, where the sessions live, does not answer.
    pub(crate) fn store_unavailable() -> Self {
        Self::with(
            close_code::TRY_AGAIN_LATER,
            "session store unavailable: try again later",
        )
    }

    /// A batch of writes made no progress within `--write-timeout`: the
    /// client stopped reading.
    pub(crate) fn slow_consumer() -> Self {
        Self::with(close_code::TRY_AGAIN_LATER, SLOW_CONSUMER)
    }

    /// The close frame for a read error, or none when the connection is gone.
    pub(crate) fn read(err: &ReadError) -> Self {
        match err {
            ReadError::TooBig => Self::with(close_code::MESSAGE_TOO_BIG, "message too big"),
            ReadError::BadUtf8 => Self::with(close_code::INVALID_PAYLOAD, "invalid UTF-8"),
            ReadError::Protocol => Self::with(close_code::PROTOCOL_ERROR, "protocol error"),
            ReadError::PartialBudget => {
                Self::with(close_code::TRY_AGAIN_LATER, PARTIAL_BUDGET_FULL)
            }
            ReadError::Gone => Self::gone("connection failed"),
        }
    }
}

impl From<Unwritten> for End {
    fn from(unwritten: Unwritten) -> Self {
        match unwritten {
            Unwritten::TakenOver => TakenOver.into(),
            Unwritten::Gone => Self::with(close_code::TRY_AGAIN_LATER, SESSION_GONE),
            _ => Self::store_unavailable(),
        }
    }
}

/// The session was resumed on another connection: this one ends with 4002.
impl From<TakenOver> for End {
    fn from(TakenOver: TakenOver) -> Self {
        Self::with(
            close_code::REPLACED,
            "session resumed on another connection",
        )
    }
}

impl From<Refused> for End {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::TakenOver => TakenOver.into(),
            Refused::Full => Self::history_full(),
        }
    }
}
