//! Token auth (the server's token mode): the token itself, kept out of
//! logs, the application's async provider of fresh tokens, and what the
//! wrapper reports about them.
//!
//! The provider is called before every connection attempt and ahead of the
//! token's expiry, for the in-band `refresh`. The driver only asks for a
//! token ([`crate::driver::Effect::FetchToken`]) and is told the result
//! ([`crate::driver::Input::TokenFetched`]); the transports run the
//! provider: the browser's as a `!Send` future on the page's executor
//! (`spawn_local`), the native one as a `Send` future on tokio.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::cause::{DynError, ErrorCause};

/// A connection token (a JWT). Its `Debug` and `Display` print
/// `<redacted>`, so a token never reaches a log through the wrapper's
/// types; [`Token::expose`] gives the text to whoever must send it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's text, for the transport that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Token {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl From<&str> for Token {
    fn from(token: &str) -> Self {
        Self(token.to_owned())
    }
}

/// `Send` natively (the provider's future runs on tokio, maybe on another
/// thread); nothing in the browser, where futures are `!Send`
/// (`spawn_local`) and a provider may hold `Rc`s and JS values.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send> MaybeSend for T {}
/// `Send` natively (the provider's future runs on tokio, maybe on another
/// thread); nothing in the browser, where futures are `!Send`
/// (`spawn_local`) and a provider may hold `Rc`s and JS values.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSend for T {}

/// `Send + Sync` natively, nothing in the browser (see [`MaybeSend`]).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync> MaybeSendSync for T {}
/// `Send + Sync` natively, nothing in the browser (see [`MaybeSend`]).
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSendSync for T {}

/// One call of the provider: a token, or the provider's error (reported
/// as [`AuthError::Provider`]).
#[cfg(not(target_arch = "wasm32"))]
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, ErrorCause>> + Send>>;
/// One call of the provider: a token, or the provider's error (reported
/// as [`AuthError::Provider`]).
#[cfg(target_arch = "wasm32")]
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, ErrorCause>>>>;

#[cfg(not(target_arch = "wasm32"))]
type ProviderFn = dyn Fn() -> TokenFuture + Send + Sync;
#[cfg(target_arch = "wasm32")]
type ProviderFn = dyn Fn() -> TokenFuture;

#[cfg(not(target_arch = "wasm32"))]
type Shared<T> = std::sync::Arc<T>;
#[cfg(target_arch = "wasm32")]
type Shared<T> = std::rc::Rc<T>;

/// The application's source of fresh tokens ([`crate::Config::with_token`]).
/// Cloning shares the same function.
#[derive(Clone)]
pub struct TokenProvider(Shared<ProviderFn>);

impl TokenProvider {
    /// Wraps an async function that returns a fresh token, or an error
    /// (any error type, or a `String` or `&str`), which is kept as the
    /// [`ErrorCause`] of [`AuthError::Provider`]: the application can
    /// downcast it to its own type.
    pub fn new<F, Fut, T, E>(provider: F) -> Self
    where
        F: Fn() -> Fut + MaybeSendSync + 'static,
        Fut: Future<Output = Result<T, E>> + MaybeSend + 'static,
        T: Into<Token>,
        E: Into<Box<DynError>>,
    {
        Self(Shared::new(move || -> TokenFuture {
            let call = provider();
            Box::pin(async move { call.await.map(Into::into).map_err(ErrorCause::new) })
        }))
    }

    /// Calls the provider once.
    pub fn call(&self) -> TokenFuture {
        (self.0)()
    }

    /// Whether two providers are the same function object.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Shared::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// A problem with token auth, carried by [`crate::Event::Auth`]. None of
/// them holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token provider failed. Before a connection attempt, the attempt
    /// counts as failed and the next one follows the backoff; before a
    /// refresh, the refresh is tried again after the backoff's delay (while
    /// the token is still valid; past its `exp` the server's 4003 leads to
    /// a reconnect).
    #[error("the token provider failed: {0}")]
    Provider(#[source] ErrorCause),
    /// The server refused the token at connect (close 4401). With a
    /// provider the wrapper fetches a new token and retries with the backoff
    /// (`retrying` true, unless the reconnect policy says otherwise); without
    /// one it does not reconnect and stays closed.
    #[error("the server refused the token: {reason}")]
    Unauthorized {
        /// The server's close reason (`missing token`, `invalid token`,
        /// `token expired`, `wrong issuer`, `wrong audience`).
        reason: String,
        /// Whether a new attempt follows.
        retrying: bool,
    },
    /// The server refused an in-band `refresh` (`error` `bad_token`). The
    /// connection goes on until the current token's `exp`; then the server
    /// closes it with 4003 and the wrapper reconnects with a new token.
    #[error("the server refused the refreshed token: {0}")]
    RefreshRefused(String),
}

/// Adds `token` to `url`'s query as `token=` (percent-encoded), replacing
/// a `token` parameter already there and keeping the others and any
/// fragment: how a browser, which cannot set headers on a WebSocket, sends
/// its token.
pub fn url_with_token(url: &str, token: &Token) -> String {
    let (rest, fragment) = match url.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, query),
        None => (rest, ""),
    };
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("token"))
        .collect();
    let encoded = format!("token={}", percent_encode(token.expose()));
    params.push(&encoded);
    let mut out = format!("{base}?{}", params.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_or_display() {
        let token = Token::new("eyJhbGciOi.secret.sig");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(format!("{token}"), "<redacted>");
        assert!(!format!("{:?}", Some(token.clone())).contains("secret"));
        assert_eq!(token.expose(), "eyJhbGciOi.secret.sig");
    }

    #[test]
    fn the_token_joins_the_query_encoded_and_replaces_an_old_one() {
        let t = Token::new("a.b_c-d");
        assert_eq!(url_with_token("ws://h/ws", &t), "ws://h/ws?token=a.b_c-d");
        assert_eq!(
            url_with_token("ws://h/ws?reliable=1", &t),
            "ws://h/ws?reliable=1&token=a.b_c-d"
        );
        assert_eq!(
            url_with_token("ws://h/ws?token=old&x=1&tokens=2", &t),
            "ws://h/ws?x=1&tokens=2&token=a.b_c-d"
        );
        assert_eq!(url_with_token("ws://h/ws?", &t), "ws://h/ws?token=a.b_c-d");
        assert_eq!(
            url_with_token("ws://h/ws?a=1#frag", &Token::new("x+y/z= &")),
            "ws://h/ws?a=1&token=x%2By%2Fz%3D%20%26#frag"
        );
    }

    #[test]
    fn the_provider_keeps_its_error_as_the_cause() {
        let provider = TokenProvider::new(|| async { Err::<Token, _>("no session cookie") });
        let result = futures_util::FutureExt::now_or_never(provider.call());
        assert_eq!(result, Some(Err(ErrorCause::from("no session cookie"))));
        let provider =
            TokenProvider::new(|| async { Err::<Token, _>(std::io::Error::other("offline")) });
        let Some(Err(cause)) = futures_util::FutureExt::now_or_never(provider.call()) else {
            panic!("the provider fails");
        };
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        let error = AuthError::Provider(cause);
        assert_eq!(error.to_string(), "the token provider failed: offline");
        assert_eq!(
            std::error::Error::source(&error)
                .map(ToString::to_string)
                .as_deref(),
            Some("offline")
        );
        let provider = TokenProvider::new(|| async { Ok::<_, String>("t") });
        let result = futures_util::FutureExt::now_or_never(provider.call());
        assert_eq!(result, Some(Ok(Token::new("t"))));
        assert!(provider.ptr_eq(&provider.clone()));
        assert_eq!(format!("{provider:?}"), "TokenProvider");
    }
}
