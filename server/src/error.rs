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
}
