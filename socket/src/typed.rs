//! A typed socket over the `shared` protocol (or any serde types): messages
//! go out as JSON text frames and come in decoded.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::message::Message;
#[cfg(any(target_arch = "wasm32", feature = "native"))]
use crate::message::{SendError, SendOutcome};

/// Encodes outgoing `Out` values as JSON and decodes incoming text as `In`.
///
/// On wasm (and natively with the feature `native`) it wraps a [`crate::Socket`]; [`TypedSocket::encode`] and
/// [`TypedSocket::decode`] are plain functions, usable anywhere.
pub struct TypedSocket<Out, In> {
    #[cfg(any(target_arch = "wasm32", feature = "native"))]
    socket: crate::Socket,
    _types: PhantomData<fn(Out) -> In>,
}

/// The socket of this project's protocol.
pub type AppSocket = TypedSocket<shared::ClientMessage, shared::ServerMessage>;

/// Why an incoming message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A binary frame where JSON text was expected.
    #[error("a binary frame is not a typed message")]
    Binary,
    /// The text was not the expected JSON.
    #[error("could not decode the message: {0}")]
    Json(#[from] serde_json::Error),
}

impl<Out: Serialize, In: DeserializeOwned> TypedSocket<Out, In> {
    /// The text frame for `value`.
    ///
    /// # Errors
    ///
    /// When `value`'s `Serialize` fails (never for the `shared` protocol).
    pub fn encode(value: &Out) -> Result<Message, serde_json::Error> {
        serde_json::to_string(value).map(Message::Text)
    }

    /// Decodes an incoming message.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Binary`] for binary frames, [`DecodeError::Json`] for text that is not an `In`.
    pub fn decode(message: &Message) -> Result<In, DecodeError> {
        decode(message)
    }
}

fn decode<In: DeserializeOwned>(message: &Message) -> Result<In, DecodeError> {
    match message {
        Message::Text(text) => Ok(serde_json::from_str(text)?),
        Message::Binary(_) => Err(DecodeError::Binary),
    }
}

#[cfg(any(target_arch = "wasm32", feature = "native"))]
impl<Out, In> Clone for TypedSocket<Out, In> {
    fn clone(&self) -> Self {
        Self {
            socket: self.socket.clone(),
            _types: PhantomData,
        }
    }
}

#[cfg(any(target_arch = "wasm32", feature = "native"))]
impl<Out: Serialize, In: DeserializeOwned> TypedSocket<Out, In> {
    /// Wraps `socket`.
    pub fn new(socket: crate::Socket) -> Self {
        Self {
            socket,
            _types: PhantomData,
        }
    }

    /// Sends `value` as JSON, with the queueing of [`crate::Socket::send`].
    ///
    /// # Errors
    ///
    /// As [`crate::Socket::send`]. A value whose `Serialize` fails (never
    /// the case for the `shared` protocol) is reported as
    /// [`SendError::Encode`], serde's error its source.
    pub fn send(&self, value: &Out) -> Result<SendOutcome, SendError> {
        let message = Self::encode(value).map_err(|err| SendError::Encode(err.into()))?;
        self.socket.send(message)
    }

    /// Calls `callback` with every incoming message, decoded, until the
    /// subscription is dropped. A message that does not decode is handed
    /// over as the error, never skipped.
    #[cfg(target_arch = "wasm32")]
    pub fn on_message(
        &self,
        mut callback: impl FnMut(Result<In, DecodeError>) + 'static,
    ) -> crate::Subscription
    where
        In: 'static,
    {
        self.socket.on_event(move |event| {
            if let crate::Event::Message(message) = event {
                callback(decode(message));
            }
        })
    }

    /// Calls `callback` with every incoming message, decoded, until the
    /// subscription is dropped. A message that does not decode is handed
    /// over as the error, never skipped. Natively the callback runs on the
    /// socket's task, so it must be `Send`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn on_message(
        &self,
        mut callback: impl FnMut(Result<In, DecodeError>) + Send + 'static,
    ) -> crate::Subscription
    where
        In: 'static,
    {
        self.socket.on_event(move |event| {
            if let crate::Event::Message(message) = event {
                callback(decode(message));
            }
        })
    }

    /// The raw socket, for state, stats, events and binary frames.
    pub fn raw(&self) -> &crate::Socket {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use shared::{ClientMessage, ServerMessage};

    use super::*;

    #[test]
    fn encodes_and_decodes_the_protocol() {
        let message = AppSocket::encode(&ClientMessage::Ping { t: 2.0 }).unwrap();
        assert_eq!(message, Message::Text(r#"{"type":"ping","t":2.0}"#.into()));
        let pong = AppSocket::decode(&Message::Text(r#"{"type":"pong","t":2.0}"#.into())).unwrap();
        assert_eq!(pong, ServerMessage::Pong { t: 2.0 });
        assert!(matches!(
            AppSocket::decode(&Message::Binary(vec![1])),
            Err(DecodeError::Binary)
        ));
        assert!(matches!(
            AppSocket::decode(&Message::Text("{".into())),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn a_value_that_does_not_encode_is_a_typed_error_with_serdes_as_its_source() {
        use std::collections::BTreeMap;
        use std::error::Error;

        use crate::message::{EncodeError, SendError};

        // JSON map keys must be strings.
        let value: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let serde = TypedSocket::<_, ServerMessage>::encode(&value).unwrap_err();
        let text = serde.to_string();
        let error = SendError::Encode(EncodeError::from(serde));
        assert_eq!(error.to_string(), "could not encode the message as JSON");
        let source = error.source().expect("serde's error");
        assert_eq!(source.to_string(), text);
        assert!(source.is::<std::sync::Arc<serde_json::Error>>());
        assert_eq!(error.clone(), error);
        assert_eq!(error.into_message(), None, "no message was made");
    }
}
