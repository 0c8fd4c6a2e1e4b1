//! Token mode for tests: a server configuration with the testbed's known
//! HS256 secret, and tokens minted with it (by the server's own
//! `server::auth::mint_hs256`, as the `token` subcommand does).

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config;

/// The HS256 secret of every token-mode server the testbed starts. Known on
/// purpose: tests mint their tokens with it. Never a production secret.
pub const TEST_JWT_SECRET: &str = "testbed-secret-for-tests-only-never-deploy";

/// [`config`] in token mode: `--jwt-secret` [`TEST_JWT_SECRET`], a leeway
/// of 1 s (expiry tests stay short; `args` may change it), no refresh rate
/// limit (`--refresh-interval 0`: tests use tokens of a few seconds, which
/// the wrapper refreshes every second or two, sooner than the default 5 s
/// allows), and `--allow-client-ids` off (token mode refuses it), then
/// `args`.
///
/// # Errors
///
/// When an argument is unknown or its value invalid.
pub fn token_config(args: &[&str]) -> Result<server::Config> {
    let mut all = vec![
        "--allow-client-ids=false",
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--jwt-leeway",
        "1s",
        "--refresh-interval",
        "0",
    ];
    all.extend_from_slice(args);
    config(&all)
}

/// A token of user `sub` that expires `ttl` from now (rounded up to a whole
/// second, as JWT's `exp` is), signed with [`TEST_JWT_SECRET`].
///
/// # Panics
///
/// Never: minting fails only with an empty secret, and this one is not.
pub fn mint_token(sub: &str, ttl: Duration) -> String {
    try_mint_token(sub, ttl).expect("HS256 with a non-empty secret always signs")
}

/// [`mint_token`], for callers that answer errors (the control API).
///
/// # Errors
///
/// When the server's minting fails (it does not with this secret).
pub fn try_mint_token(sub: &str, ttl: Duration) -> Result<String> {
    let claims = server::auth::Claims::expiring_in(sub, ttl);
    server::auth::mint_hs256(TEST_JWT_SECRET.as_bytes(), &claims).context("minting a test token")
}

/// A token of user `sub` whose `exp` is `exp` (seconds since the epoch),
/// signed with [`TEST_JWT_SECRET`]: for callers that time what happens at
/// `exp` (the hostile run's deadline phase).
///
/// # Errors
///
/// When the server's minting fails (it does not with this secret).
pub fn try_mint_token_until(sub: &str, exp: u64) -> Result<String> {
    let claims = server::auth::Claims::new(sub, exp);
    server::auth::mint_hs256(TEST_JWT_SECRET.as_bytes(), &claims).context("minting a test token")
}
