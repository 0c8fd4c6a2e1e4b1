//! Errors and messages mapped to the wire in one place.

use axum::extract::ws::Message;
use shared::{ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite;

/// A text frame carrying `message`.
pub fn text(message: &ServerMessage) -> Message {
    Message::Text(message.to_json().into())
}

/// An `error` message.
pub fn error(code: ErrorCode, message: String) -> Message {
    text(&ServerMessage::Error {
        code,
        message,
        channel: None,
        id: None,
    })
}

/// What went wrong reading from a socket, as far as the close code goes
/// (`connection::End::read` has the code and reason of each).
#[derive(Debug)]
pub enum ReadError {
    /// A message or frame over the size limit.
    TooBig,
    /// A text message that is not UTF-8.
    BadUtf8,
    /// The peer broke RFC 6455.
    Protocol,
    /// The socket refused to read on: the message in progress would take
    /// the bytes of unfinished messages past `--max-partial-bytes`
    /// ([`crate::partial::OverBudget`]).
    PartialBudget,
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
                tungstenite::Error::Io(io)
                    if io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<crate::partial::OverBudget>()) =>
                {
                    Self::PartialBudget
                }
                _ => Self::Gone,
            },
            Err(_) => Self::Gone,
        }
    }
}
