//! Channel names and the namespaces they belong to (issue 23).
//!
//! A channel is `namespace:name`, or a bare name in the default namespace.
//! A name is at most [`MAX_CHANNEL_BYTES`] bytes of `[A-Za-z0-9_.\-:@=]`;
//! the namespace is what comes before its first `:`. Namespaces are
//! declared in the config file (`--config`), each key defaulting as
//! `[default_namespace]` does:
//!
//! ```toml
//! [default_namespace]          # bare names; these are its defaults
//! history_size = 100
//! history_ttl = "5m"
//! anonymous = ["subscribe"]
//! authenticated = ["subscribe"]
//!
//! [[namespace]]
//! name = "chat"                # channels "chat:…"
//! history_size = 1000
//! anonymous = ["subscribe", "publish"]
//! authenticated = ["subscribe", "publish"]
//! max_publication_bytes = 65536
//! ```
//!
//! The defaults are safe for production: subscribe only, no publication
//! from clients (the admin API publishes), 100 publications kept for 5
//! minutes. A name whose namespace is not declared is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::parse_duration;

pub use shared::channel::MAX_CHANNEL_BYTES;
use shared::channel::allowed_byte as allowed;

/// What a connection may do in a channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Capability {
    /// Receive its publications.
    Subscribe,
    /// Publish to it.
    Publish,
    /// See who is in it (the presence issue).
    Presence,
}

/// A set of [`Capability`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    /// None.
    pub const NONE: Self = Self(0);

    fn bit(capability: Capability) -> u8 {
        match capability {
            Capability::Subscribe => 1,
            Capability::Publish => 2,
            Capability::Presence => 4,
        }
    }

    /// Both sets.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether `capability` is in the set.
    pub fn allows(self, capability: Capability) -> bool {
        self.0 & Self::bit(capability) != 0
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, c| bits | Self::bit(c)))
    }
}

/// Why a channel name is refused (the wire's `bad_channel` and
/// `unknown_namespace`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// Empty, too long, or a byte outside `[A-Za-z0-9_.\-:@=]`.
    #[error("a channel name is 1 to 255 bytes of A-Z a-z 0-9 _ . - : @ =")]
    BadChannel,
    /// Its namespace is not declared in the config.
    #[error("no namespace {0:?} is configured")]
    UnknownNamespace(String),
}

/// The namespace of channel `name` (`""` for a bare name), once the name
/// is checked ([`shared::channel::namespace_of`]).
///
/// # Errors
///
/// [`ChannelError::BadChannel`] for an empty or too long name, or one with
/// a byte outside the allowed set.
pub fn namespace_of(name: &str) -> Result<&str, ChannelError> {
    shared::channel::namespace_of(name).ok_or(ChannelError::BadChannel)
}

/// One namespace's settings, every key resolved.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Namespace {
    /// Its name; `""` for the default namespace (bare names).
    pub name: String,
    /// Publications kept per channel for recovery.
    pub history_size: usize,
    /// How long a publication is kept.
    pub history_ttl: Duration,
    /// What connections without a token may do.
    pub anonymous: Capabilities,
    /// What token users may do when their token has no `channels` claim.
    pub authenticated: Capabilities,
    /// The largest publication's data, in bytes (`publish_too_large` above).
    pub max_publication_bytes: usize,
}

impl Default for Namespace {
    /// The safe defaults: subscribe only; 100 publications for 5 minutes.
    fn default() -> Self {
        let subscribe = [Capability::Subscribe].into_iter().collect();
        Self {
            name: String::new(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            anonymous: subscribe,
            authenticated: subscribe,
            max_publication_bytes: 64 * 1024,
        }
    }
}

/// What the config file may say of a namespace; unset keys take the
/// default namespace's value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNamespace {
    name: Option<String>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    anonymous: Option<Vec<Capability>>,
    authenticated: Option<Vec<Capability>>,
    max_publication_bytes: Option<usize>,
}

impl RawNamespace {
    /// The settings, unset keys from `defaults`.
    fn resolve(self, defaults: &Namespace) -> Result<Namespace, NamespaceError> {
        let name = self.name.unwrap_or_default();
        let history_ttl = match self.history_ttl {
            Some(text) => parse_duration(&text).map_err(|why| NamespaceError::Value {
                namespace: name.clone(),
                key: "history_ttl",
                why,
            })?,
            None => defaults.history_ttl,
        };
        Ok(Namespace {
            history_size: self.history_size.unwrap_or(defaults.history_size),
            history_ttl,
            anonymous: self
                .anonymous
                .map_or(defaults.anonymous, |c| c.into_iter().collect()),
            authenticated: self
                .authenticated
                .map_or(defaults.authenticated, |c| c.into_iter().collect()),
            max_publication_bytes: self
                .max_publication_bytes
                .unwrap_or(defaults.max_publication_bytes),
            name,
        })
    }
}

/// Why the namespaces of a config file are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// A `[[namespace]]` without a `name`, or with one that is empty or
    /// has a byte outside `[A-Za-z0-9_.\-@=]`.
    #[error("a [[namespace]] needs a name of A-Z a-z 0-9 _ . - @ = (got {0:?})")]
    BadName(String),
    /// `[default_namespace]` has a `name`.
    #[error("[default_namespace] takes no name")]
    DefaultNamed,
    /// Two `[[namespace]]`s of one name.
    #[error("the namespace {0:?} is declared twice")]
    Twice(String),
    /// A value that does not parse.
    #[error("namespace {namespace:?}: {key}: {why}")]
    Value {
        /// The namespace (`""`: the default).
        namespace: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A key or a type the file may not have there.
    #[error("{0}")]
    Shape(String),
}

/// Every namespace, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespaces {
    default: Namespace,
    named: BTreeMap<String, Namespace>,
}

impl Default for Namespaces {
    /// The default namespace with the safe defaults, and no other.
    fn default() -> Self {
        Self {
            default: Namespace::default(),
            named: BTreeMap::new(),
        }
    }
}

impl Namespaces {
    /// From the config file's `[default_namespace]` and `[[namespace]]`s.
    ///
    /// # Errors
    ///
    /// A [`NamespaceError`] naming what is wrong.
    pub(crate) fn from_raw(
        default: Option<RawNamespace>,
        named: Vec<RawNamespace>,
    ) -> Result<Self, NamespaceError> {
        let default = default.unwrap_or_default();
        if default.name.is_some() {
            return Err(NamespaceError::DefaultNamed);
        }
        let default = default.resolve(&Namespace::default())?;
        let mut namespaces = BTreeMap::new();
        for raw in named {
            let name = raw.name.clone().unwrap_or_default();
            if name.is_empty() || !name.bytes().all(|b| allowed(b) && b != b':') {
                return Err(NamespaceError::BadName(name));
            }
            if namespaces.contains_key(&name) {
                return Err(NamespaceError::Twice(name));
            }
            namespaces.insert(name, raw.resolve(&default)?);
        }
        Ok(Self {
            default,
            named: namespaces,
        })
    }

    /// The namespace of channel `name`.
    ///
    /// # Errors
    ///
    /// [`ChannelError::BadChannel`] for a name that is not one,
    /// [`ChannelError::UnknownNamespace`] when its namespace is not declared.
    pub fn of(&self, channel: &str) -> Result<&Namespace, ChannelError> {
        match namespace_of(channel)? {
            "" => Ok(&self.default),
            namespace => self
                .named
                .get(namespace)
                .ok_or_else(|| ChannelError::UnknownNamespace(namespace.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Namespaces, NamespaceError> {
        #[derive(Deserialize)]
        struct File {
            default_namespace: Option<RawNamespace>,
            #[serde(default)]
            namespace: Vec<RawNamespace>,
        }
        let file: File = toml::from_str(text).map_err(|e| NamespaceError::Shape(e.to_string()))?;
        Namespaces::from_raw(file.default_namespace, file.namespace)
    }

    #[test]
    fn names_are_checked_and_split_at_the_first_colon() {
        assert_eq!(namespace_of("lobby"), Ok(""));
        assert_eq!(namespace_of("chat:lobby"), Ok("chat"));
        assert_eq!(namespace_of("chat:room:42@x=y"), Ok("chat"));
        for bad in ["", "a b", "chat/1", "é", &"x".repeat(256)] {
            assert_eq!(namespace_of(bad), Err(ChannelError::BadChannel), "{bad:?}");
        }
        assert_eq!(namespace_of(&"x".repeat(255)), Ok(""));
    }

    #[test]
    fn without_a_file_bare_names_may_be_subscribed_and_nothing_else() {
        let namespaces = Namespaces::default();
        let lobby = namespaces.of("lobby").expect("the default namespace");
        assert!(lobby.anonymous.allows(Capability::Subscribe));
        assert!(!lobby.anonymous.allows(Capability::Publish));
        assert!(!lobby.authenticated.allows(Capability::Publish));
        assert_eq!(
            namespaces.of("chat:lobby"),
            Err(ChannelError::UnknownNamespace("chat".into()))
        );
    }

    #[test]
    fn a_namespace_defaults_as_the_default_namespace_does() {
        let namespaces = parse(
            r#"
            [default_namespace]
            history_size = 10
            history_ttl = "1m"
            anonymous = []

            [[namespace]]
            name = "chat"
            anonymous = ["subscribe", "publish"]
            max_publication_bytes = 100
            "#,
        )
        .expect("valid");
        let chat = namespaces.of("chat:x").expect("declared");
        assert_eq!(chat.history_size, 10);
        assert_eq!(chat.history_ttl, Duration::from_secs(60));
        assert!(chat.anonymous.allows(Capability::Publish));
        assert!(chat.authenticated.allows(Capability::Subscribe));
        assert!(!chat.authenticated.allows(Capability::Publish));
        assert_eq!(chat.max_publication_bytes, 100);
        let bare = namespaces.of("x").expect("default");
        assert_eq!(bare.anonymous, Capabilities::NONE);
    }

    #[test]
    fn a_bad_namespace_section_is_refused_with_what_is_wrong() {
        let refused = |text: &str| parse(text).expect_err(text).to_string();
        assert!(refused("[[namespace]]\nhistory_size = 1").contains("needs a name"));
        assert!(refused("[[namespace]]\nname = \"a:b\"").contains("needs a name"));
        assert!(
            refused("[[namespace]]\nname = \"a\"\n[[namespace]]\nname = \"a\"").contains("twice")
        );
        assert!(refused("[default_namespace]\nname = \"x\"").contains("no name"));
        assert!(
            refused("[[namespace]]\nname = \"a\"\nhistory_ttl = \"soon\"").contains("history_ttl")
        );
        assert!(refused("[[namespace]]\nname = \"a\"\nhistroy_size = 1").contains("histroy_size"));
        assert!(refused("[[namespace]]\nname = \"a\"\nanonymous = [\"own\"]").contains("own"));
    }
}
