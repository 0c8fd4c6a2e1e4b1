//! What a connection may do in a channel: its namespace's lists, or a
//! token's `channels` claim (issue 23).
//!
//! * A connection without a token gets its namespace's `anonymous` list.
//! * A token user gets its namespace's `authenticated` list, unless the
//!   token has a `channels` claim, which replaces it for that user:
//!   `{"chat:*":["subscribe","publish"],"news:tech":["subscribe"]}`. A key
//!   is a channel name, or a prefix followed by one `*` at its end; the
//!   capabilities of every key that matches add up.
//!
//! The namespace must exist either way: a claim cannot make up channels
//! the configuration does not have.

use std::collections::BTreeMap;

use super::namespace::{Capabilities, Capability, Namespace};
use shared::channel::{MAX_CHANNEL_BYTES, allowed_byte};

/// A token's `channels` claim, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Exact names.
    exact: BTreeMap<String, Capabilities>,
    /// Prefixes (the key less its `*`).
    prefixes: Vec<(String, Capabilities)>,
}

/// A `channels` claim that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad channels claim: {0:?} is neither a channel name nor a prefix ending in one *")]
pub struct BadGrant(pub String);

/// The most keys a `channels` claim may have.
pub const MAX_GRANTS: usize = 256;

impl Grants {
    /// The claim's keys and capabilities, checked.
    ///
    /// # Errors
    ///
    /// [`BadGrant`] with the first key that is not a channel name or a
    /// prefix ending in one `*`, or past [`MAX_GRANTS`] keys.
    pub fn from_claim(claim: BTreeMap<String, Vec<Capability>>) -> Result<Self, BadGrant> {
        if claim.len() > MAX_GRANTS {
            return Err(BadGrant(format!("{} keys", claim.len())));
        }
        let mut grants = Self::default();
        for (key, capabilities) in claim {
            let capabilities: Capabilities = capabilities.into_iter().collect();
            let (name, prefix) = match key.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (key.as_str(), false),
            };
            let valid = name.len() <= MAX_CHANNEL_BYTES
                && name.bytes().all(allowed_byte)
                && (prefix || !name.is_empty());
            if !valid {
                return Err(BadGrant(key));
            }
            if prefix {
                grants.prefixes.push((name.to_owned(), capabilities));
            } else {
                grants.exact.insert(key, capabilities);
            }
        }
        Ok(grants)
    }

    /// What the claim grants in `channel`.
    pub fn of(&self, channel: &str) -> Capabilities {
        let exact = self
            .exact
            .get(channel)
            .copied()
            .unwrap_or(Capabilities::NONE);
        self.prefixes
            .iter()
            .filter(|(prefix, _)| channel.starts_with(prefix.as_str()))
            .fold(exact, |all, (_, capabilities)| all.union(*capabilities))
    }
}

/// A token's channel claims: its `channels` grants, and its `subs`, the
/// channels the server subscribes the connection to at connect (and at a
/// refresh that adds some). A refreshed token replaces both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelClaims {
    /// The `channels` claim, if the token has one.
    pub grants: Option<Grants>,
    /// The `subs` claim: channel names, checked.
    pub subs: Vec<String>,
}

/// Who asks, as far as channels care.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// A connection without a token.
    Anonymous,
    /// A token user, with its token's `channels` claim if it has one.
    User(Option<&'a Grants>),
}

/// Whether `who` may do `capability` in `channel` of `namespace`.
pub fn allows(who: Who<'_>, namespace: &Namespace, channel: &str, capability: Capability) -> bool {
    let capabilities = match who {
        Who::Anonymous => namespace.anonymous,
        Who::User(None) => namespace.authenticated,
        Who::User(Some(grants)) => grants.of(channel),
    };
    capabilities.allows(capability)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(pairs: &[(&str, &[Capability])]) -> Result<Grants, BadGrant> {
        Grants::from_claim(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn patterns_match_by_prefix_and_add_up() {
        use Capability::{Publish, Subscribe};
        let g = grants(&[
            ("chat:*", &[Subscribe]),
            ("chat:ops", &[Publish]),
            ("news:tech", &[Subscribe]),
        ])
        .expect("valid");
        let ns = Namespace::default();
        let user = Who::User(Some(&g));
        assert!(allows(user, &ns, "chat:lobby", Subscribe));
        assert!(!allows(user, &ns, "chat:lobby", Publish));
        assert!(allows(user, &ns, "chat:ops", Publish) && allows(user, &ns, "chat:ops", Subscribe));
        assert!(allows(user, &ns, "news:tech", Subscribe));
        assert!(
            !allows(user, &ns, "news:sport", Subscribe),
            "the claim replaces the namespace's list"
        );
        assert!(allows(Who::User(None), &ns, "news:sport", Subscribe));
        assert!(!allows(Who::Anonymous, &ns, "x", Publish));
        let everything = grants(&[("*", &[Publish])]).expect("valid");
        assert!(allows(
            Who::User(Some(&everything)),
            &ns,
            "any:thing",
            Publish
        ));
    }

    #[test]
    fn a_key_that_is_no_name_or_prefix_is_refused() {
        for bad in ["", "a*b*", "a b", "*x", "é*"] {
            assert_eq!(grants(&[(bad, &[])]), Err(BadGrant(bad.into())), "{bad:?}");
        }
    }
}
