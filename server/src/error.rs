//! The server library's error type.

/// Why [`crate::run`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Accepting or serving connections failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
}
