//! [`ErrorCause`]: the error underneath one of the wrapper's own errors
//! (what a transport or the token provider said), kept as an error rather
//! than flattened to text, so that an application can print its whole chain
//! or downcast it.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The error type an [`ErrorCause`] holds: `Send + Sync` natively (events
/// cross threads there), anything in the browser (a provider's future may
/// hold `Rc`s, and so may its error).
#[cfg(not(target_arch = "wasm32"))]
pub type DynError = dyn StdError + Send + Sync + 'static;
/// The error type an [`ErrorCause`] holds: `Send + Sync` natively (events
/// cross threads there), anything in the browser (a provider's future may
/// hold `Rc`s, and so may its error).
#[cfg(target_arch = "wasm32")]
pub type DynError = dyn StdError + 'static;

/// What went wrong underneath a [`crate::TransportError`] or an
/// [`crate::AuthError::Provider`]: the error the transport or the token
/// provider gave, or the browser's text when that is all there is.
///
/// It is transparent: its `Display` and [`StdError::source`] are those of
/// the error it holds. Natively a connection's error is the
/// `tokio_tungstenite::tungstenite::Error` ([`ErrorCause::downcast_ref`]
/// gets it); a provider's error is whatever the provider returned. It is
/// cloneable (shared in an `Arc`), as the events that carry it are, and two
/// causes are equal when they say the same thing (most errors have no
/// equality of their own).
#[derive(Clone)]
pub struct ErrorCause(Arc<DynError>);

impl ErrorCause {
    /// Wraps `error`: any error type, or a `String` or `&str` when there is
    /// only text (as from a browser, which says little on purpose).
    pub fn new(error: impl Into<Box<DynError>>) -> Self {
        Self(Arc::from(error.into()))
    }

    /// The error itself, for a caller that wants to inspect it further.
    pub fn get_ref(&self) -> &DynError {
        &*self.0
    }

    /// The error as a `T`, if it is one (natively a connection's
    /// `tungstenite::Error`, or the provider's own error type).
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl fmt::Display for ErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl StdError for ErrorCause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Equal when they say the same thing: the errors underneath rarely have an
/// equality of their own, and the events that carry them are compared in tests.
impl PartialEq for ErrorCause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for ErrorCause {}

impl From<String> for ErrorCause {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<&str> for ErrorCause {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_is_transparent_and_downcasts_to_what_it_holds() {
        let cause = ErrorCause::new(Outer(std::io::Error::other("inner")));
        assert_eq!(cause.to_string(), "outer");
        assert_eq!(
            cause.source().map(ToString::to_string).as_deref(),
            Some("inner")
        );
        assert!(cause.downcast_ref::<Outer>().is_some());
        assert!(cause.downcast_ref::<std::io::Error>().is_none());
    }

    #[test]
    fn causes_are_equal_when_they_say_the_same_thing() {
        let text = ErrorCause::from("connection reset");
        assert_eq!(
            text,
            ErrorCause::new(std::io::Error::other("connection reset"))
        );
        assert_ne!(text, ErrorCause::from("refused"));
        assert_eq!(text, text.clone());
        assert_eq!(format!("{text:?}"), "\"connection reset\"");
    }
}
