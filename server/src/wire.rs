//! Errors and messages mapped to the wire in one place.

use axum::extract::ws::Message;
use shared::{ErrorCode, ServerMessage, close_code};
use tokio_tungstenite::tungstenite;

/// A text frame carrying `message`.
pub fn text(message: &ServerMessage) -> Message {
    Message::Text(message.to_json().into())
}

/// An `error` message.
pub fn error(code: ErrorCode, message: String) -> Message {
    text(&ServerMessage::Error { code, message })
}

/// What went wrong reading from a socket, as far as the close code goes.
#[derive(Debug)]
pub enum ReadError {
    /// A message or frame over the size limit.
    TooBig,
    /// A text message that is not UTF-8.
    BadUtf8,
    /// The peer broke RFC 6455.
    Protocol,
    /// The connection failed or closed; no close frame to send.
    Gone,
}

impl From<axum::Error> for ReadError {
    fn from(err: axum::Error) -> Self {
        match err.into_inner().downcast::<tungstenite::Error>() {
            Ok(err) => match *err {
                tungstenite::Error::Capacity(_) => Self::TooBig,
                tungstenite::Error::Utf8(_) => Self::BadUtf8,
                tungstenite::Error::Protocol(_) => Self::Protocol,
                _ => Self::Gone,
            },
            Err(_) => Self::Gone,
        }
    }
}

/// The close code and reason for a read error, or `None` when the connection is gone.
pub fn close_for(err: &ReadError) -> Option<(u16, &'static str)> {
    match err {
        ReadError::TooBig => Some((close_code::MESSAGE_TOO_BIG, "message too big")),
        ReadError::BadUtf8 => Some((close_code::INVALID_PAYLOAD, "invalid UTF-8")),
        ReadError::Protocol => Some((close_code::PROTOCOL_ERROR, "protocol error")),
        ReadError::Gone => None,
    }
}
