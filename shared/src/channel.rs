//! Channels on the wire (issue 23, protocol version 2): names, positions
//! in a channel's stream, and the values that the channel messages of
//! [`crate::ClientMessage`] and [`crate::ServerMessage`] carry.
//!
//! Names are checked the same way by the server and the wrapper:
//! `namespace:name`, or a bare name in the default namespace; at most
//! [`MAX_CHANNEL_BYTES`] bytes of `[A-Za-z0-9_.\-:@=]`. The namespace is
//! what comes before the first `:`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// The most bytes of a channel message's `id` (a `publish`'s idempotency
/// key): a longer one gets `invalid_fields`.
pub const MAX_ID_BYTES: usize = 64;

/// Whether `byte` may appear in a channel name.
pub fn allowed_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-' | b':' | b'@' | b'=')
}

/// The namespace of channel `name` (`""` for a bare name); `None` when
/// `name` is not a channel name (empty, too long, or a byte outside the
/// set): the server answers it with `bad_channel`.
pub fn namespace_of(name: &str) -> Option<&str> {
    if name.is_empty() || name.len() > MAX_CHANNEL_BYTES || !name.bytes().all(allowed_byte) {
        return None;
    }
    Some(name.split_once(':').map_or("", |(namespace, _)| namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_split_at_the_first_colon() {
        assert_eq!(namespace_of("lobby"), Some(""));
        assert_eq!(namespace_of("chat:lobby"), Some("chat"));
        assert_eq!(namespace_of("chat:room:42@x=y.z_-"), Some("chat"));
        assert_eq!(namespace_of(":x"), Some(""));
        for bad in ["", "a b", "chat/1", "é", "a\0", &"x".repeat(256)] {
            assert_eq!(namespace_of(bad), None, "{bad:?}");
        }
        assert_eq!(namespace_of(&"x".repeat(255)), Some(""));
    }

    #[test]
    fn unsubscribe_reasons_go_by_their_wire_names() {
        for (reason, wire) in [
            (UnsubscribeReason::Client, "client"),
            (UnsubscribeReason::Permission, "permission"),
            (UnsubscribeReason::Admin, "admin"),
            (UnsubscribeReason::Other("later".into()), "later"),
        ] {
            assert_eq!(reason.as_str(), wire);
            assert_eq!(UnsubscribeReason::from(wire.to_owned()), reason);
        }
    }
}

/// Where a subscriber was in a channel's stream: the stream's epoch and
/// the last offset it delivered (`since` of a `subscribe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The stream's epoch, as a `subscribed` gave it (opaque).
    pub epoch: String,
    /// The last offset delivered.
    pub offset: u64,
}

/// Why a recovery did not give everything after `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryFailure {
    /// The history no longer has the range in `gap`; what it has follows.
    HistoryTrimmed,
    /// The channel's stream was lost and started again: reload the state.
    EpochChanged,
}

/// Offsets `from..=to` (both inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The first offset.
    pub from: u64,
    /// The last offset.
    pub to: u64,
}

/// Who published a publication (absent when the admin API did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherInfo {
    /// The publishing connection's client id.
    pub client_id: String,
    /// Its user, in token mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A member of a channel's presence: one connection (one browser, when its
/// tabs share one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its client id.
    pub client_id: String,
    /// Its user, in token mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its token's `client_name`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
}

/// Why the server ended a subscription (`unsubscribed`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
#[non_exhaustive]
pub enum UnsubscribeReason {
    /// The client's own `unsubscribe` (`"client"`).
    Client,
    /// A refreshed token no longer allows it (`"permission"`).
    Permission,
    /// The admin API ended it (`"admin"`).
    Admin,
    /// A reason this version does not know.
    Other(String),
}

impl UnsubscribeReason {
    /// The reason as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Client => "client",
            Self::Permission => "permission",
            Self::Admin => "admin",
            Self::Other(reason) => reason,
        }
    }
}

impl From<String> for UnsubscribeReason {
    fn from(reason: String) -> Self {
        match reason.as_str() {
            "client" => Self::Client,
            "permission" => Self::Permission,
            "admin" => Self::Admin,
            _ => Self::Other(reason),
        }
    }
}

impl From<UnsubscribeReason> for String {
    fn from(reason: UnsubscribeReason) -> Self {
        reason.as_str().to_owned()
    }
}

/// One JSON value kept as its text: a publication's `data`, which the
/// server stores and forwards without reading it. [`RawJson::parse`]
/// checks that it is one JSON value. Two are equal when they hold the same
/// JSON value, whitespace aside (the derived decoder of a tagged enum can
/// only give the compact text; [`crate::ServerMessage::from_json`] keeps
/// the text as sent).
#[derive(Debug, Clone, Eq)]
pub struct RawJson(String);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
            || matches!(
                (
                    serde_json::from_str::<serde_json::Value>(&self.0),
                    serde_json::from_str::<serde_json::Value>(&other.0),
                ),
                (Ok(a), Ok(b)) if a == b
            )
    }
}

impl RawJson {
    /// `text`, once checked to be one JSON value.
    ///
    /// # Errors
    ///
    /// A `serde_json` error when it is not (found by
    /// [`crate::object::value`]'s scanner, without `serde_json`'s parser).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        crate::object::value(text).map(|value| Self(value.to_owned()))
    }

    /// A value's compact JSON text.
    pub fn of(value: &serde_json::Value) -> Self {
        Self(value.to_string())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// Text the crate's own decoder checked already.
    pub(crate) fn checked(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::value::RawValue::from_string(self.0.clone()) {
            Ok(raw) => raw.serialize(serializer),
            Err(err) => Err(serde::ser::Error::custom(err)),
        }
    }
}

impl<'de> Deserialize<'de> for RawJson {
    /// Through a `serde_json::Value` (a tagged enum's fields come buffered,
    /// so the original text is gone): its compact text.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|value| Self::of(&value))
    }
}
