//! Who a connection is: secrets compared in constant time (the admin API's
//! bearer token, reliable sessions' resume tokens) and the JWT connection
//! tokens of token mode. A leaf module (it imports nothing of the crate), so
//! any module may use it; public, so that tests, the testbed and the
//! `token` subcommand mint tokens with the same code the server checks them
//! with ([`mint_hs256`]).
//!
//! # Modes
//!
//! * **Anonymous** (no key configured, the default). The server assigns
//!   every connection a random 128-bit id. A `?client_id=` is refused (the
//!   connection is upgraded, then closed at once with 1008) unless the
//!   server runs with `--allow-client-ids`, which is for development and
//!   tests: a self-chosen id is not authentication, anyone can take it.
//!   There are no users (`/api/users/…` answers 404).
//! * **Token** (`--jwt-secret` / `--jwt-secret-file` for HS256, or
//!   `--jwt-public-key` with an RSA (RS256) or P-256 (ES256) public key in
//!   PEM). Every `/ws` connection brings a JWT, `?token=` (browsers cannot
//!   set headers on a WebSocket) or `Authorization: Bearer`. Its claims:
//!   `sub`, the user (required); `exp`, seconds since the epoch (required);
//!   optionally `client_name`, shown in the admin list; `iss` and `aud`
//!   when `--jwt-issuer` / `--jwt-audience` ask for them. Only the
//!   configured algorithm is accepted (`alg: none` and the others are
//!   `invalid token`). `exp` is checked with `--jwt-leeway` (5 s by
//!   default; the `jsonwebtoken` crate's own default would be 60 s).
//!
//! A refused token is answered as Centrifugo does: the upgrade completes
//! and the connection is closed at once with 4401
//! ([`shared::close_code::UNAUTHORIZED`]) and the [`TokenError`] as reason
//! (`missing token`, `invalid token`, `token expired`, `wrong issuer`,
//! `wrong audience`, `token lifetime too long`), before the welcome: a
//! browser cannot read the HTTP status of a refused handshake, only a close
//! frame. The welcome of an
//! accepted connection carries the token's `exp`; the client sends
//! `{"type":"refresh","token":…}` (same `sub`) before it, and a connection
//! not refreshed by `exp` plus the leeway is closed with 4003 "token
//! expired". Tokens are never logged (neither is any request's query).
//! Tokens are not revoked: short lifetimes with refresh are the mechanism.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use server::auth::{Checks, Claims, TokenError, Verifier, mint_hs256};
//!
//! let secret = b"a long random secret, from a file";
//! let verifier = Verifier::hs256(secret, Checks::new(Duration::from_secs(5)))?;
//! let token = mint_hs256(secret, &Claims::expiring_in("alice", Duration::from_secs(3600)))?;
//! assert_eq!(verifier.verify(&token)?.user, "alice");
//! assert_eq!(verifier.verify("not.a.token"), Err(TokenError::Invalid));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod jwt;

pub use jwt::{
    Checks, Claims, ConfigError, DEFAULT_MAX_LIFETIME, Identity, KeyError, MintError, TokenError,
    Verifier, mint_hs256, unix_now,
};

/// Compares without an early exit, so timing does not leak the secret.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization` header value is `Bearer <expected>`.
pub(crate) fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    bearer(header).is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer(header: Option<&str>) -> Option<&str> {
    header.and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(Some("s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b"b"));
    }
}
