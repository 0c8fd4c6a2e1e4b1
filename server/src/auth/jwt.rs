//! JWT connection tokens: checked with the `jsonwebtoken` crate (its
//! pure-Rust crypto backend), never by hand. One [`Verifier`] per server,
//! built from the flags at start; [`mint_hs256`] signs tokens for tests,
//! the testbed and the `token` subcommand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::channels::grants::{ChannelClaims, Grants, MAX_GRANTS};
use crate::channels::namespace::Capability;

/// Bytes of a token read at most: anything longer is `invalid token`
/// without being parsed.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Bytes of a `sub` (user id) or `client_name` at most.
const MAX_CLAIM_BYTES: usize = 256;

/// Why a token was refused. Its text is the close reason of 4401 (and of
/// 4003 for a connection whose token ran out), so it names the cause and
/// nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `?token=` and no `Authorization: Bearer` header.
    #[error("missing token")]
    Missing,
    /// Not a JWT, a bad signature, an algorithm other than the configured
    /// one (`none` included), a `sub` or `exp` missing or malformed.
    #[error("invalid token")]
    Invalid,
    /// `exp` (plus the leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `iss` missing or not `--jwt-issuer`.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` missing or not `--jwt-audience` (or present when none is configured).
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` is further from now than `--jwt-max-lifetime`.
    #[error("token lifetime too long")]
    LifetimeTooLong,
}

impl TokenError {
    /// The close reason: the error's text.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing token",
            Self::Invalid => "invalid token",
            Self::Expired => "token expired",
            Self::WrongIssuer => "wrong issuer",
            Self::WrongAudience => "wrong audience",
            Self::LifetimeTooLong => "token lifetime too long",
        }
    }

    fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Self::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Self::WrongAudience,
            _ => Self::Invalid,
        }
    }
}

/// A key that cannot verify or sign tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An HS256 secret with no bytes.
    #[error("the secret is empty")]
    EmptySecret,
    /// A PEM file that holds neither an RSA nor an EC public key.
    #[error("not an RSA or EC (P-256) public key in PEM: {0}")]
    NotAPublicKey(#[source] jsonwebtoken::errors::Error),
}

/// A token-mode configuration the server refuses at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--allow-client-ids` together with a JWT key: a self-chosen id would
    /// sidestep the token.
    #[error(
        "--allow-client-ids cannot be used in token mode (--jwt-secret, --jwt-secret-file or --jwt-public-key): identities come from tokens"
    )]
    ClientIdsInTokenMode,
    /// More than one of `--jwt-secret`, `--jwt-secret-file`, `--jwt-public-key`.
    #[error("give one of --jwt-secret, --jwt-secret-file and --jwt-public-key")]
    TwoKeys,
    /// `--jwt-issuer` or `--jwt-audience` without a key.
    #[error(
        "--jwt-issuer and --jwt-audience need a key (--jwt-secret, --jwt-secret-file or --jwt-public-key)"
    )]
    ChecksWithoutKey,
    /// The secret or key file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key is not usable.
    #[error("{what}: {source}")]
    Key {
        /// The flag (and file) it came from.
        what: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The `token` subcommand signs with the HS256 secret, and none is configured.
    #[error(
        "the token subcommand signs with the HS256 secret: give --jwt-secret or --jwt-secret-file (or JWT_SECRET){}",
        if *.public_key_only { "; a public key (--jwt-public-key) can only verify tokens, sign them where its private key is" } else { "" }
    )]
    NoSecret {
        /// Only a public key is configured.
        public_key_only: bool,
    },
}

/// A token that could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// An empty secret.
    #[error("the secret is empty")]
    EmptySecret,
    /// The signature failed.
    #[error("signing the token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The default of `--jwt-max-lifetime` (and of [`Checks::new`]): 24 hours.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The optional checks of token mode and the leeway on `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Checks {
    /// `--jwt-issuer`: the `iss` every token must carry.
    pub issuer: Option<String>,
    /// `--jwt-audience`: the `aud` every token must carry.
    pub audience: Option<String>,
    /// `--jwt-leeway`: how long past `exp` a token is still accepted (whole seconds).
    pub leeway: Duration,
    /// `--jwt-max-lifetime`: a token whose `exp` is further than this from
    /// now is refused ([`TokenError::LifetimeTooLong`]); `None`: no bound.
    pub max_lifetime: Option<Duration>,
}

impl Checks {
    /// No issuer or audience check, `leeway` on `exp`, and `exp` at most
    /// [`DEFAULT_MAX_LIFETIME`] from now.
    pub fn new(leeway: Duration) -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway,
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
        }
    }

    /// Refuses tokens whose `exp` is more than `max` from now (`None`: no bound).
    #[must_use]
    pub fn with_max_lifetime(mut self, max: Option<Duration>) -> Self {
        self.max_lifetime = max;
        self
    }

    /// Requires `iss` to be `issuer`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires `aud` to be (or contain) `audience`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }
}

/// The claims of a token, as [`mint_hs256`] signs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Seconds since the Unix epoch.
    pub exp: u64,
    /// Shown in the admin list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// What the user may do in which channels (replaces the namespaces'
    /// `authenticated` lists): channel names or prefixes ending in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, Vec<Capability>>>,
    /// Channels the server subscribes the connection to at connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs: Option<Vec<String>>,
}

impl Claims {
    /// `sub` until `exp` (seconds since the epoch).
    pub fn new(sub: impl Into<String>, exp: u64) -> Self {
        Self {
            sub: sub.into(),
            exp,
            client_name: None,
            iss: None,
            aud: None,
            channels: None,
            subs: None,
        }
    }

    /// `sub` for `ttl` from now (rounded up to a second).
    pub fn expiring_in(sub: impl Into<String>, ttl: Duration) -> Self {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        Self::new(sub, unix_now().saturating_add(secs))
    }

    /// With a `client_name`.
    #[must_use]
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// With an `iss`.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.iss = Some(issuer.into());
        self
    }

    /// With an `aud`.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.aud = Some(audience.into());
        self
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs `claims` with HS256 and `secret`: what the server checks with
/// `--jwt-secret`. The `token` subcommand, the testbed and the tests mint
/// with it.
///
/// # Errors
///
/// [`MintError::EmptySecret`] for an empty secret; [`MintError::Sign`]
/// should not happen with HMAC.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, MintError> {
    if secret.is_empty() {
        return Err(MintError::EmptySecret);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(MintError::Sign)
}

/// Who a valid token says the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The `sub` claim.
    pub user: String,
    /// The `client_name` claim, if any.
    pub client_name: Option<String>,
    /// The `exp` claim: seconds since the epoch.
    pub exp: u64,
    /// The `channels` and `subs` claims, when the token has either.
    pub channels: Option<Arc<ChannelClaims>>,
}

/// The claims read from a token (the others are checked by `jsonwebtoken`
/// or ignored). `aud` may be a string or a list, so it is not read here.
#[derive(Deserialize)]
struct Read {
    sub: String,
    exp: u64,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    channels: Option<BTreeMap<String, Vec<Capability>>>,
    #[serde(default)]
    subs: Option<Vec<String>>,
}

/// Checks tokens against one key, one algorithm and the [`Checks`].
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway: Duration,
    /// Whole seconds: `exp` at most this far from now.
    max_lifetime: Option<u64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Verifier")
            .field("algorithm", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway", &self.leeway)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// HS256 with `secret`.
    ///
    /// # Errors
    ///
    /// [`KeyError::EmptySecret`].
    pub fn hs256(secret: &[u8], checks: Checks) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            checks,
        ))
    }

    /// RS256 or ES256, as the public key `pem` (`-----BEGIN PUBLIC KEY-----`)
    /// is an RSA or an EC (P-256) one.
    ///
    /// # Errors
    ///
    /// [`KeyError::NotAPublicKey`] for anything else.
    pub fn public_key_pem(pem: &[u8], checks: Checks) -> Result<Self, KeyError> {
        match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => Ok(Self::new(key, Algorithm::RS256, checks)),
            Err(_) => DecodingKey::from_ec_pem(pem)
                .map(|key| Self::new(key, Algorithm::ES256, checks))
                .map_err(KeyError::NotAPublicKey),
        }
    }

    fn new(key: DecodingKey, algorithm: Algorithm, checks: Checks) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = checks.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &checks.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &checks.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Self {
            key,
            validation,
            // Whole seconds, as `jsonwebtoken` applies it at the upgrade.
            leeway: Duration::from_secs(checks.leeway.as_secs()),
            max_lifetime: checks.max_lifetime.map(|max| max.as_secs()),
        }
    }

    /// The algorithm tokens must use: `HS256`, `RS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        match self.validation.algorithms.first() {
            Some(Algorithm::RS256) => "RS256",
            Some(Algorithm::ES256) => "ES256",
            _ => "HS256",
        }
    }

    /// How long past `exp` a token (and a connection) is still accepted.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Checks `token`: signature and algorithm, `exp` (with the leeway, and
    /// not beyond the maximum lifetime from now), `nbf` if present, the
    /// issuer and audience if configured.
    ///
    /// # Errors
    ///
    /// The [`TokenError`] that names the cause.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Read>(token, &self.key, &self.validation)
            .map_err(|err| TokenError::from_jwt(&err))?;
        let Read {
            sub,
            exp,
            client_name,
            channels,
            subs,
        } = data.claims;
        let too_long = |s: &str| s.len() > MAX_CLAIM_BYTES;
        if sub.is_empty() || too_long(&sub) || client_name.as_deref().is_some_and(too_long) {
            return Err(TokenError::Invalid);
        }
        // A claim that names no channel is refused as a whole: a typo
        // granting nothing in silence would be found late.
        let grants = match channels {
            Some(claim) => Some(Grants::from_claim(claim).map_err(|_| TokenError::Invalid)?),
            None => None,
        };
        let has_subs = subs.is_some();
        let subs = subs.unwrap_or_default();
        if subs.len() > MAX_GRANTS
            || subs
                .iter()
                .any(|s| shared::channel::namespace_of(s).is_none())
        {
            return Err(TokenError::Invalid);
        }
        if self
            .max_lifetime
            .is_some_and(|max| exp.saturating_sub(unix_now()) > max)
        {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(Identity {
            user: sub,
            client_name,
            exp,
            channels: (grants.is_some() || has_subs)
                .then(|| Arc::new(ChannelClaims { grants, subs })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test secret";

    fn verifier(checks: Checks) -> Verifier {
        Verifier::hs256(SECRET, checks).unwrap()
    }

    fn in_an_hour(sub: &str) -> Claims {
        Claims::expiring_in(sub, Duration::from_secs(3600))
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let claims = in_an_hour("alice").with_client_name("laptop");
        let token = mint_hs256(SECRET, &claims).unwrap();
        let identity = verifier(Checks::new(Duration::ZERO))
            .verify(&token)
            .unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(identity.client_name.as_deref(), Some("laptop"));
        assert_eq!(identity.exp, claims.exp);
    }

    #[test]
    fn each_refusal_names_its_cause() {
        let plain = verifier(Checks::new(Duration::ZERO));
        assert_eq!(plain.verify(""), Err(TokenError::Missing));
        assert_eq!(plain.verify("abc"), Err(TokenError::Invalid));
        let other = mint_hs256(b"another secret", &in_an_hour("a")).unwrap();
        assert_eq!(plain.verify(&other), Err(TokenError::Invalid));
        let old = mint_hs256(SECRET, &Claims::new("a", unix_now() - 10)).unwrap();
        assert_eq!(plain.verify(&old), Err(TokenError::Expired));
        // Within the leeway it is still good.
        let lenient = verifier(Checks::new(Duration::from_secs(60)));
        assert!(lenient.verify(&old).is_ok());

        let strict = verifier(
            Checks::new(Duration::ZERO)
                .with_issuer("me")
                .with_audience("ws"),
        );
        let good = in_an_hour("a").with_issuer("me").with_audience("ws");
        assert!(strict.verify(&mint_hs256(SECRET, &good).unwrap()).is_ok());
        let no_iss = in_an_hour("a").with_audience("ws");
        let wrong_iss = no_iss.clone().with_issuer("them");
        let no_aud = in_an_hour("a").with_issuer("me");
        let wrong_aud = no_aud.clone().with_audience("elsewhere");
        for (claims, error) in [
            (no_iss, TokenError::WrongIssuer),
            (wrong_iss, TokenError::WrongIssuer),
            (no_aud, TokenError::WrongAudience),
            (wrong_aud, TokenError::WrongAudience),
        ] {
            let token = mint_hs256(SECRET, &claims).unwrap();
            assert_eq!(strict.verify(&token), Err(error), "{claims:?}");
        }
        // An `exp` beyond the maximum lifetime (24 h by default), however far.
        for exp in [unix_now() + 25 * 3600, 1 << 62, u64::MAX] {
            let far = mint_hs256(SECRET, &Claims::new("a", exp)).unwrap();
            assert_eq!(plain.verify(&far), Err(TokenError::LifetimeTooLong));
        }
        let unbounded = verifier(Checks::new(Duration::ZERO).with_max_lifetime(None));
        let far = mint_hs256(SECRET, &Claims::new("a", 1 << 62)).unwrap();
        assert_eq!(unbounded.verify(&far).unwrap().exp, 1 << 62);
        let empty_sub = mint_hs256(SECRET, &in_an_hour("")).unwrap();
        assert_eq!(plain.verify(&empty_sub), Err(TokenError::Invalid));
        assert_eq!(
            plain.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn the_reason_is_the_text() {
        for error in [
            TokenError::Missing,
            TokenError::Invalid,
            TokenError::Expired,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::LifetimeTooLong,
        ] {
            assert_eq!(error.reason(), error.to_string());
        }
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert!(matches!(
            Verifier::hs256(b"", Checks::new(Duration::ZERO)),
            Err(KeyError::EmptySecret)
        ));
        assert!(matches!(
            mint_hs256(b"", &in_an_hour("a")),
            Err(MintError::EmptySecret)
        ));
        assert!(Verifier::public_key_pem(b"not a key", Checks::new(Duration::ZERO)).is_err());
    }
}
