//! The credentials in the configuration: token mode's verifier from the
//! `--jwt-*` flags, the `token` subcommand's signing secret, and the admin
//! token's minimum length.

use super::{Config, MIN_ADMIN_TOKEN_BYTES};
use crate::auth;

impl Config {
    /// Token mode's verifier, from the `--jwt-*` flags; `None` in anonymous
    /// mode.
    ///
    /// # Errors
    ///
    /// Two keys, an unreadable or unusable key, `--jwt-issuer` or
    /// `--jwt-audience` without a key, `--allow-client-ids` with a key.
    pub fn verifier(&self) -> Result<Option<auth::Verifier>, auth::ConfigError> {
        let mut checks = auth::Checks::new(self.jwt_leeway)
            .with_max_lifetime((!self.jwt_max_lifetime.is_zero()).then_some(self.jwt_max_lifetime));
        checks.issuer.clone_from(&self.jwt_issuer);
        checks.audience.clone_from(&self.jwt_audience);
        let verifier = match (self.secret()?, &self.jwt_public_key) {
            (Some(_), Some(_)) => return Err(auth::ConfigError::TwoKeys),
            (Some((what, secret)), None) => auth::Verifier::hs256(&secret, checks)
                .map_err(|source| auth::ConfigError::Key { what, source })?,
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| auth::ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                auth::Verifier::public_key_pem(&pem, checks).map_err(|source| {
                    auth::ConfigError::Key {
                        what: format!("--jwt-public-key {}", path.display()),
                        source,
                    }
                })?
            }
            (None, None) if self.jwt_issuer.is_some() || self.jwt_audience.is_some() => {
                return Err(auth::ConfigError::ChecksWithoutKey);
            }
            (None, None) => return Ok(None),
        };
        if self.allow_client_ids {
            return Err(auth::ConfigError::ClientIdsInTokenMode);
        }
        Ok(Some(verifier))
    }

    /// Checks `--admin-token`, if any, is at least [`MIN_ADMIN_TOKEN_BYTES`] long.
    ///
    /// # Errors
    ///
    /// [`crate::Error::AdminTokenTooShort`].
    pub fn check_admin_token(&self) -> Result<(), crate::Error> {
        match &self.admin_token {
            Some(token) if token.len() < MIN_ADMIN_TOKEN_BYTES => {
                Err(crate::Error::AdminTokenTooShort {
                    len: token.len(),
                    min: MIN_ADMIN_TOKEN_BYTES,
                })
            }
            _ => Ok(()),
        }
    }

    /// The HS256 secret the `token` subcommand signs with.
    ///
    /// # Errors
    ///
    /// None configured (perhaps only a public key), or its file unreadable.
    pub fn signing_secret(&self) -> Result<Vec<u8>, auth::ConfigError> {
        match self.secret()? {
            Some((_, secret)) if !secret.is_empty() => Ok(secret),
            _ => Err(auth::ConfigError::NoSecret {
                public_key_only: self.jwt_public_key.is_some(),
            }),
        }
    }

    /// The HS256 secret and where it came from, if one is configured.
    fn secret(&self) -> Result<Option<(String, Vec<u8>)>, auth::ConfigError> {
        match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(_), Some(_)) => Err(auth::ConfigError::TwoKeys),
            (Some(secret), None) => Ok(Some(("--jwt-secret".into(), secret.clone().into_bytes()))),
            (None, Some(path)) => {
                let mut secret = std::fs::read(path).map_err(|source| auth::ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                Ok(Some((
                    format!("--jwt-secret-file {}", path.display()),
                    secret,
                )))
            }
            (None, None) => Ok(None),
        }
    }
}
