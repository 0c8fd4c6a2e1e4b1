//! The server library's error type.

/// Why [`crate::run`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Accepting or serving connections failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
    /// The token-mode flags are not usable (a key that cannot be read,
    /// `--allow-client-ids` with a key, ...).
    #[error("token mode: {0}")]
    Auth(#[from] crate::auth::ConfigError),
    /// The cluster flags are not usable (a `--redis-url` that does not
    /// parse, a node TTL not above the heartbeat, ...).
    #[error("cluster: {0}")]
    Cluster(String),
    /// `--admin-token` is shorter than
    /// [`MIN_ADMIN_TOKEN_BYTES`](crate::config::MIN_ADMIN_TOKEN_BYTES).
    #[error(
        "--admin-token is {len} bytes long: at least {min} are required \
         (a random one: `openssl rand -hex 16`)"
    )]
    AdminTokenTooShort {
        /// The configured token's length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
}
