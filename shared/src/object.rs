//! A JSON object read once into its fields, each decoded by name when
//! asked for: the type-first decoding of tagged messages.
//!
//! serde's derive cannot know where the tag of an internally tagged enum is
//! in an object, so it copies the whole object into a tree of its own
//! (`Content`) and decodes the variant from the tree; in a wasm build that
//! machinery, instantiated for every variant, was the largest single part
//! of the protocol's code. [`Object::parse`] instead checks the text as
//! JSON once and keeps each top-level field as its unparsed text (a
//! [`RawValue`] borrowed from the input); the decoder reads the tag, then
//! decodes only the fields of that message type, each with `serde_json`
//! straight from its text.
//!
//! Values of fields that a message type does not read are checked for JSON
//! syntax only, as [`serde::de::IgnoredAny`] checks them: a `\u` escape of a
//! lone surrogate in a string, a number beyond `f64`'s range, or nesting
//! deeper than 128 is accepted there, where the derived decoder, which
//! parsed every value into its tree, refused the whole message.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a field of an [`Object`] could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The field is required and absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// The field appears more than once.
    #[error("duplicate field `{0}`")]
    Duplicate(&'static str),
    /// The field's value is not of its type.
    #[error("field `{field}`: {source}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What `serde_json` found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The field is an object (or an array of objects) and one of its own
    /// fields could not be decoded: the same text as an [`FieldError::Invalid`]
    /// whose `serde_json` error says it, made only when shown (a decoder
    /// that drops its errors, such as a browser's, then carries no error
    /// texts of `serde_json`).
    #[error("field `{field}`: {source}")]
    Nested {
        /// The field.
        field: &'static str,
        /// What was wrong inside it.
        #[source]
        source: Box<FieldError>,
    },
}

/// One JSON object's top-level fields, in order, each with its value's
/// text; duplicates are kept (and refused by name when asked for).
///
/// ```
/// use shared::object::Object;
///
/// let object = Object::parse(r#"{"type":"gap","from":13,"to":20}"#)?;
/// assert_eq!(object.tag("type")?.as_deref(), Some("gap"));
/// assert_eq!(object.required::<u64>("to")?, 20);
/// assert_eq!(object.optional::<u64>("exp")?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Object<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Object<'a> {
    /// Reads `text` as one JSON object (whitespace around it allowed).
    ///
    /// # Errors
    ///
    /// `serde_json`'s error when `text` is not valid JSON, or is JSON but
    /// not an object.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = (&mut de).deserialize_map(FieldsVisitor)?;
        de.end()?;
        Ok(Self { fields })
    }

    /// The text of field `name`'s value, or `None` when it is absent.
    ///
    /// # Errors
    ///
    /// [`FieldError::Duplicate`] when the field appears more than once.
    pub fn raw(&self, name: &'static str) -> Result<Option<&'a str>, FieldError> {
        let mut found = self.fields.iter().filter(|(key, _)| key == name);
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(FieldError::Duplicate(name)),
            (first, _) => Ok(first.map(|(_, value)| value.get())),
        }
    }

    /// Field `name` read as a tag: `None` when it is absent or `null`,
    /// the string when it is one (borrowed unless it has escapes).
    ///
    /// # Errors
    ///
    /// [`FieldError::Duplicate`]; [`FieldError::Invalid`] when the value
    /// is neither `null` nor a string (its text is then the raw value:
    /// see [`Object::raw`]).
    pub fn tag(&self, name: &'static str) -> Result<Option<Cow<'a, str>>, FieldError> {
        match self.raw(name)? {
            None | Some("null") => Ok(None),
            Some(raw) => string(raw).map(Some).map_err(|source| FieldError::Invalid {
                field: name,
                source,
            }),
        }
    }

    /// Field `name`, required.
    ///
    /// # Errors
    ///
    /// [`FieldError::Missing`], [`FieldError::Duplicate`], or
    /// [`FieldError::Invalid`] when its value is not a `T`.
    pub fn required<T: DeserializeOwned>(&self, name: &'static str) -> Result<T, FieldError> {
        match self.raw(name)? {
            Some(raw) => decode(name, raw),
            None => Err(FieldError::Missing(name)),
        }
    }

    /// Field `name`, optional: `None` when it is absent or `null`.
    ///
    /// # Errors
    ///
    /// [`FieldError::Duplicate`], or [`FieldError::Invalid`] when its value
    /// is neither `null` nor a `T`.
    pub fn optional<T: DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.raw(name)? {
            Some(raw) => decode(name, raw),
            None => Ok(None),
        }
    }

    /// Field `name`, or `T::default()` when it is absent (a `null` is not
    /// absent: it must be a `T`, as with serde's `#[serde(default)]`).
    ///
    /// # Errors
    ///
    /// [`FieldError::Duplicate`], or [`FieldError::Invalid`] when its value
    /// is not a `T`.
    pub fn or_default<T: DeserializeOwned + Default>(
        &self,
        name: &'static str,
    ) -> Result<T, FieldError> {
        match self.raw(name)? {
            Some(raw) => decode(name, raw),
            None => Ok(T::default()),
        }
    }
}

/// The texts of the elements of a JSON array, from its text (as
/// [`Object::raw`] gives it): to read an array of objects with
/// [`Object::parse`].
///
/// # Errors
///
/// `serde_json`'s error when `raw` is not a JSON array.
pub fn elements(raw: &str) -> Result<Vec<&str>, serde_json::Error> {
    let values: Vec<&RawValue> = serde_json::from_str(raw)?;
    Ok(values.into_iter().map(RawValue::get).collect())
}

/// Appends `text` as a JSON string, quotes included, byte for byte as
/// `serde_json` writes it: for encoders that write JSON by hand.
///
/// ```
/// let mut out = String::new();
/// shared::object::write_string(&mut out, "a \"q\"\n");
/// assert_eq!(out, serde_json::to_string("a \"q\"\n").unwrap());
/// ```
pub fn write_string(out: &mut String, text: &str) {
    crate::fast::escape_into(out, text);
}

fn decode<T: DeserializeOwned>(field: &'static str, raw: &str) -> Result<T, FieldError> {
    serde_json::from_str(raw).map_err(|source| FieldError::Invalid { field, source })
}

/// The value of a JSON string from its text (as [`Object::raw`] gives it),
/// borrowed when it has no escapes.
///
/// # Errors
///
/// `serde_json`'s error when `raw` is not a JSON string.
pub fn string(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        // The text of a string value without a backslash: nothing to unescape.
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str::<String>(raw).map(Cow::Owned),
    }
}

/// Collects a map's keys (unescaped, borrowed when they can be) and the
/// text of its values.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(8);
        while let Some(Key(key)) = map.next_key()? {
            fields.push((key, map.next_value()?));
        }
        Ok(fields)
    }
}

/// A field name: borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(key)))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(key.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_their_unescaped_name() {
        let object = Object::parse(r#" {"a":1, "\u0062":"x\ny", "c":null, "d":[1,{"e":2}]} "#)
            .expect("an object");
        assert_eq!(object.required::<u64>("a").ok(), Some(1));
        assert_eq!(object.required::<String>("b").ok(), Some("x\ny".into()));
        assert_eq!(object.optional::<u64>("c").ok(), Some(None));
        assert_eq!(object.optional::<u64>("z").ok(), Some(None));
        assert_eq!(object.or_default::<u32>("z").ok(), Some(0));
        assert!(matches!(
            object.or_default::<u32>("c"),
            Err(FieldError::Invalid { field: "c", .. })
        ));
        assert_eq!(object.raw("d").ok(), Some(Some(r#"[1,{"e":2}]"#)));
        assert!(matches!(
            object.required::<u64>("z"),
            Err(FieldError::Missing("z"))
        ));
        assert!(matches!(
            object.required::<u64>("b"),
            Err(FieldError::Invalid { field: "b", .. })
        ));
    }

    #[test]
    fn duplicates_are_refused_when_asked_for() {
        let object = Object::parse(r#"{"a":1,"a":2,"b":3}"#).expect("an object");
        assert!(matches!(
            object.required::<u64>("a"),
            Err(FieldError::Duplicate("a"))
        ));
        assert_eq!(object.required::<u64>("b").ok(), Some(3));
        assert_eq!(
            FieldError::Duplicate("a").to_string(),
            "duplicate field `a`"
        );
    }

    #[test]
    fn tags_are_strings_borrowed_when_they_can_be() {
        let object =
            Object::parse(r#"{"t":"plain","u":"\u0070ong","n":null,"x":7}"#).expect("an object");
        assert!(matches!(object.tag("t"), Ok(Some(Cow::Borrowed("plain")))));
        assert!(matches!(object.tag("u"), Ok(Some(Cow::Owned(s))) if s == "pong"));
        assert!(matches!(object.tag("n"), Ok(None)));
        assert!(matches!(object.tag("none"), Ok(None)));
        assert!(matches!(object.tag("x"), Err(FieldError::Invalid { .. })));
    }

    #[test]
    fn arrays_split_into_their_elements() {
        assert_eq!(
            elements(r#"[ {"a":1}, 2 ,"x",[3]]"#).ok(),
            Some(vec![r#"{"a":1}"#, "2", r#""x""#, "[3]"])
        );
        assert_eq!(elements("[]").ok(), Some(vec![]));
        assert!(elements(r#"{"a":1}"#).is_err());
        assert!(elements("[1,]").is_err());
    }

    #[test]
    fn only_one_json_object_parses() {
        for text in [
            "", "{", "[]", "[1]", "\"a\"", "1", "null", "{} {}", "{}x", "{\"a\":}",
        ] {
            assert!(Object::parse(text).is_err(), "{text:?}");
        }
        assert!(Object::parse("{}").is_ok());
    }
}
