//! A JSON object read once into its fields, each decoded by name when
//! asked for: the type-first decoding of tagged messages.
//!
//! serde's derive cannot know where the tag of an internally tagged enum is
//! in an object, so it copies the whole object into a tree of its own
//! (`Content`) and decodes the variant from the tree; in a wasm build that
//! machinery, instantiated for every variant, was the largest single part
//! of the protocol's code. [`Object::parse`] instead checks the text as
//! JSON once and keeps each top-level field as its unparsed text, borrowed
//! from the input; the decoder reads the tag, then decodes only the fields
//! of that message type, each straight from its text.
//!
//! The scanning and the decoding of a field are this module's own, not
//! `serde_json`'s: a field is one of a few kinds of value (a string, an
//! integer, a boolean, `null`, an object or array read field by field), so
//! a small scanner and a serde `Deserializer` over one value's text do it,
//! and a wasm build that reads messages this way carries none of
//! `serde_json`'s parser (nor its float tables, nor the Debug formatting
//! of strings its error texts use). [`Object::parse`] and [`elements`]
//! still report a text that is not JSON as a `serde_json::Error` (made by
//! its `custom`, with the line and column), so their callers are unchanged.
//!
//! Values of fields that a message type does not read are checked for JSON
//! syntax only, as [`serde::de::IgnoredAny`] checks them: a `\u` escape of a
//! lone surrogate in a string, a number beyond `f64`'s range, or nesting
//! deeper than 128 is accepted there, where the derived decoder, which
//! parsed every value into its tree, refused the whole message.
//!
//! A field of the wrong type is a [`ValueError`] worded as `serde_json`
//! words it (`invalid type: string "x", expected u64`), with two
//! differences: the value is shown as its JSON text (a string as written,
//! escapes included; a float as written, `1.50` where `serde_json` showed
//! `1.5`), and no position is given (it was the position in the field's
//! own text, always on line 1).

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Expected, Unexpected, Visitor};

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
        /// What was found wrong.
        #[source]
        source: ValueError,
    },
    /// The field is an object (or an array of objects) and one of its own
    /// fields could not be decoded: the same text as an [`FieldError::Invalid`]
    /// whose error says it, made only when shown (a decoder that drops its
    /// errors, such as a browser's, then carries no error texts).
    #[error("field `{field}`: {source}")]
    Nested {
        /// The field.
        field: &'static str,
        /// What was wrong inside it.
        #[source]
        source: Box<FieldError>,
    },
}

/// Why a JSON value could not be decoded as the type asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The text is not JSON (or not of the shape asked for: an object, an
    /// array), as [`Object::parse`] and [`elements`] report it.
    #[error(transparent)]
    Syntax(#[from] serde_json::Error),
    /// The value is of another type: `invalid type: {found}, expected
    /// {expected}`.
    #[error("invalid type: {found}, expected {expected}")]
    InvalidType {
        /// What the value is, with its JSON text where it has one
        /// (`integer `7``, `string "x"`, `null`).
        found: String,
        /// What the type's decoder expected (`u64`, `a string`...).
        expected: String,
    },
    /// Anything else the type's decoder refused, in its words (a number
    /// out of range, an unknown variant...).
    #[error("{0}")]
    Custom(String),
}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::InvalidType {
            found: unexpected_text(&unexpected),
            expected: expected.to_string(),
        }
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::Custom(format!(
            "invalid value: {}, expected {expected}",
            unexpected_text(&unexpected)
        ))
    }
}

/// What serde's `Unexpected` says, without its Debug formatting of a
/// string (the string is written as JSON instead) or its float formatting.
fn unexpected_text(unexpected: &Unexpected<'_>) -> String {
    match *unexpected {
        Unexpected::Bool(b) => format!("boolean `{b}`"),
        Unexpected::Unsigned(n) => format!("integer `{n}`"),
        Unexpected::Signed(n) => format!("integer `{n}`"),
        Unexpected::Str(s) => {
            let mut text = "string ".to_owned();
            crate::fast::escape_into(&mut text, s);
            text
        }
        Unexpected::Float(_) => "floating point".to_owned(),
        // serde_json's word for a unit.
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Seq => "sequence".to_owned(),
        Unexpected::Map => "map".to_owned(),
        Unexpected::Other(other) => other.to_owned(),
        _ => "another type".to_owned(),
    }
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
    fields: Vec<(Cow<'a, str>, &'a str)>,
}

impl<'a> Object<'a> {
    /// Reads `text` as one JSON object (whitespace around it allowed).
    ///
    /// # Errors
    ///
    /// A `serde_json` error (its line and column included) when `text` is
    /// not valid JSON, or is JSON but not an object.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut scan = Scanner::new(text);
        let fields = scan.object().map_err(|at| at.error(text))?;
        scan.end().map_err(|at| at.error(text))?;
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
            (first, _) => Ok(first.map(|(_, value)| *value)),
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
/// A `serde_json` error when `raw` is not a JSON array.
pub fn elements(raw: &str) -> Result<Vec<&str>, serde_json::Error> {
    let mut scan = Scanner::new(raw);
    let items = scan.array().map_err(|at| at.error(raw))?;
    scan.end().map_err(|at| at.error(raw))?;
    Ok(items)
}

/// The text of the one JSON value in `text`, without the whitespace
/// around it.
///
/// # Errors
///
/// A `serde_json` error when `text` is not one JSON value.
pub fn value(text: &str) -> Result<&str, serde_json::Error> {
    let mut scan = Scanner::new(text);
    let value = scan.value().map_err(|at| at.error(text))?;
    scan.end().map_err(|at| at.error(text))?;
    Ok(value)
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
    T::deserialize(Value(raw)).map_err(|source| FieldError::Invalid { field, source })
}

/// The value of a JSON string from its text (as [`Object::raw`] gives it),
/// borrowed when it has no escapes.
///
/// # Errors
///
/// [`ValueError`] when `raw` is not a JSON string (or is one with a lone
/// surrogate, which a Rust string cannot hold).
pub fn string(raw: &str) -> Result<Cow<'_, str>, ValueError> {
    match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        // The text of a string value without a backslash: nothing to unescape.
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => unescaped(raw),
    }
}

/// [`string`] for a text with escapes (or not a string at all).
fn unescaped(raw: &str) -> Result<Cow<'_, str>, ValueError> {
    let mut scan = Scanner::new(raw);
    let text = match scan.peek() {
        Some(b'"') => scan.string_value().map_err(|at| at.error(raw))?,
        _ => return Err(invalid(raw, &"a string")),
    };
    scan.end().map_err(|at| at.error(raw))?;
    Ok(text)
}

/// A JSON syntax error: what was wrong, and the byte it was found at.
struct SyntaxAt {
    what: &'static str,
    at: usize,
}

impl SyntaxAt {
    /// As `serde_json` reports it: the text, then ` at line L column C`
    /// (which its `custom` reads back into the error's position).
    fn error(self, text: &str) -> serde_json::Error {
        let before = text.get(..self.at).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
        de::Error::custom(format_args!("{} at line {line} column {column}", self.what))
    }
}

/// A reader of JSON text, a byte at a time: checks the syntax and finds
/// where each value starts and ends. Never recursive (an array or object
/// nested a million deep is read with a stack of its brackets).
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, SyntaxAt> {
        Err(SyntaxAt { what, at: self.at })
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Result<(), SyntaxAt> {
        self.skip_whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => self.fail("trailing characters"),
        }
    }

    /// Takes `byte` (after whitespace), or fails with `what`.
    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), SyntaxAt> {
        self.skip_whitespace();
        match self.peek() {
            Some(b) if b == byte => {
                self.at += 1;
                Ok(())
            }
            None => self.fail("EOF while parsing a value"),
            Some(_) => self.fail(what),
        }
    }

    /// An object's fields: keys unescaped, values as their text.
    fn object(&mut self) -> Result<Vec<(Cow<'a, str>, &'a str)>, SyntaxAt> {
        self.expect(b'{', "invalid type: expected a JSON object")?;
        let mut fields = Vec::with_capacity(8);
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(fields);
        }
        loop {
            self.skip_whitespace();
            let key = self.key()?;
            fields.push((key, self.value()?));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(fields);
                }
                None => return self.fail("EOF while parsing an object"),
                Some(_) => return self.fail("expected `,` or `}`"),
            }
        }
    }

    /// An array's elements, as their text.
    fn array(&mut self) -> Result<Vec<&'a str>, SyntaxAt> {
        self.expect(b'[', "invalid type: expected a JSON array")?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(self.value()?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(items);
                }
                None => return self.fail("EOF while parsing a list"),
                Some(_) => return self.fail("expected `,` or `]`"),
            }
        }
    }

    /// A key and its colon, at the key (whitespace skipped).
    fn key(&mut self) -> Result<Cow<'a, str>, SyntaxAt> {
        match self.peek() {
            Some(b'"') => {}
            Some(b'}') => return self.fail("trailing comma"),
            None => return self.fail("EOF while parsing an object"),
            Some(_) => return self.fail("key must be a string"),
        }
        let key = self.string_value()?;
        self.expect(b':', "expected `:`")?;
        Ok(key)
    }

    /// One value, its syntax checked, as its text (whitespace before it
    /// skipped).
    fn value(&mut self) -> Result<&'a str, SyntaxAt> {
        self.skip_whitespace();
        let start = self.at;
        // The closing brackets of the arrays and objects the scan is in.
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some(b'{') => {
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                    } else {
                        self.key()?;
                        open.push(b'}');
                        continue;
                    }
                }
                Some(b'[') => {
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                    } else {
                        open.push(b']');
                        continue;
                    }
                }
                Some(b'"') => self.skip_string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(b']') if open.last() == Some(&b']') => return self.fail("trailing comma"),
                None => return self.fail("EOF while parsing a value"),
                Some(_) => return self.fail("expected value"),
            }
            // After a value: close what it ends, or go on after a comma.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(&self.text[start..self.at]);
                };
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if close == b'}' {
                            self.skip_whitespace();
                            self.key()?;
                        }
                        break;
                    }
                    Some(b) if b == close => {
                        self.at += 1;
                        open.pop();
                    }
                    None if close == b'}' => return self.fail("EOF while parsing an object"),
                    None => return self.fail("EOF while parsing a list"),
                    Some(_) if close == b'}' => return self.fail("expected `,` or `}`"),
                    Some(_) => return self.fail("expected `,` or `]`"),
                }
            }
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), SyntaxAt> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail("expected ident")
        }
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), SyntaxAt> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return self.fail("invalid number");
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), SyntaxAt> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            None => self.fail("EOF while parsing a value"),
            Some(_) => self.fail("invalid number"),
        }
    }

    /// Over a string whose value is not needed: its escapes and characters
    /// checked, a `\u` escape as four hex digits only (a lone surrogate
    /// passes, as with serde's `IgnoredAny`).
    fn skip_string(&mut self) -> Result<(), SyntaxAt> {
        self.at += 1;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1;
                        }
                        Some(b'u') => {
                            self.at += 1;
                            self.hex4()?;
                        }
                        None => return self.fail("EOF while parsing a string"),
                        Some(_) => return self.fail("invalid escape"),
                    }
                }
                Some(0..=0x1f) => {
                    return self
                        .fail("control character (\\u0000-\\u001F) found while parsing a string");
                }
                Some(_) => self.at += 1,
                None => return self.fail("EOF while parsing a string"),
            }
        }
    }

    /// Four hex digits, as a number.
    fn hex4(&mut self) -> Result<u16, SyntaxAt> {
        let mut n = 0u16;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                None => return self.fail("EOF while parsing a string"),
                Some(_) => return self.fail("invalid escape"),
            };
            n = n * 16 + u16::from(digit);
            self.at += 1;
        }
        Ok(n)
    }

    /// A string's value, at its opening quote: borrowed when it has no
    /// escapes; a lone surrogate is an error (a Rust string cannot hold it).
    fn string_value(&mut self) -> Result<Cow<'a, str>, SyntaxAt> {
        self.at += 1;
        let start = self.at;
        let mut owned: Option<String> = None;
        // The start of the text not yet copied into `owned`.
        let mut copied = start;
        loop {
            match self.peek() {
                Some(b'"') => {
                    let rest = &self.text[copied..self.at];
                    self.at += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(rest),
                        Some(mut text) => {
                            text.push_str(rest);
                            Cow::Owned(text)
                        }
                    });
                }
                Some(b'\\') => {
                    let text = owned.get_or_insert_with(String::new);
                    text.push_str(&self.text[copied..self.at]);
                    self.at += 1;
                    let unescaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let c = self.unicode_escape()?;
                            text.push(c);
                            copied = self.at;
                            continue;
                        }
                        None => return self.fail("EOF while parsing a string"),
                        Some(_) => return self.fail("invalid escape"),
                    };
                    text.push(unescaped);
                    self.at += 1;
                    copied = self.at;
                }
                Some(0..=0x1f) => {
                    return self
                        .fail("control character (\\u0000-\\u001F) found while parsing a string");
                }
                Some(_) => self.at += 1,
                None => return self.fail("EOF while parsing a string"),
            }
        }
    }

    /// The character of a `\u` escape (after the `u`), a surrogate pair's
    /// second half read too.
    fn unicode_escape(&mut self) -> Result<char, SyntaxAt> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if !self.text[self.at..].starts_with("\\u") {
                    return self.fail("lone leading surrogate in hex escape");
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return self.fail("lone leading surrogate in hex escape");
                }
                0x10000 + ((u32::from(first) - 0xd800) << 10) + (u32::from(second) - 0xdc00)
            }
            0xdc00..=0xdfff => return self.fail("lone trailing surrogate in hex escape"),
            _ => u32::from(first),
        };
        match char::from_u32(code) {
            Some(c) => Ok(c),
            None => self.fail("invalid unicode code point"),
        }
    }
}

/// What a value's text is, read from its first byte (the text was checked
/// by the scanner, or is checked as it is read).
enum Kind<'a> {
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Unsigned(u64),
    Signed(i64),
    /// A number with a fraction or an exponent, or beyond 64 bits.
    Float,
    Array,
    Object,
}

/// The kind of the value `raw` (a string is read and unescaped).
fn kind(raw: &str) -> Result<Kind<'_>, ValueError> {
    Ok(match raw.as_bytes().first() {
        Some(b'n') if raw == "null" => Kind::Null,
        Some(b't') if raw == "true" => Kind::Bool(true),
        Some(b'f') if raw == "false" => Kind::Bool(false),
        Some(b'"') => Kind::Str(unescaped(raw)?),
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        Some(b'-' | b'0'..=b'9') => number(raw),
        _ => return Err(invalid(raw, &"a JSON value")),
    })
}

/// An integer when the text is one that fits, else [`Kind::Float`].
fn number(raw: &str) -> Kind<'_> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, raw),
    };
    let mut n = 0u64;
    for b in digits.bytes() {
        let Some(next) = (match b {
            b'0'..=b'9' => n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0'))),
            _ => None,
        }) else {
            return Kind::Float;
        };
        n = next;
    }
    if !negative {
        Kind::Unsigned(n)
    } else if n == 0 {
        // `-0` is the float -0.0 to serde_json.
        Kind::Float
    } else {
        match i64::try_from(n - 1) {
            Ok(m) => Kind::Signed(-m - 1),
            Err(_) => Kind::Float,
        }
    }
}

/// "invalid type" for the value `raw`, against what `expected` wanted.
fn invalid(raw: &str, expected: &dyn Expected) -> ValueError {
    let found = match raw.as_bytes().first() {
        Some(b'n') => "null".to_owned(),
        Some(b't' | b'f') => format!("boolean `{raw}`"),
        Some(b'"') => format!("string {raw}"),
        Some(b'[') => "sequence".to_owned(),
        Some(b'{') => "map".to_owned(),
        Some(_) if raw.contains(['.', 'e', 'E']) => format!("floating point `{raw}`"),
        Some(_) => format!("integer `{raw}`"),
        None => "nothing".to_owned(),
    };
    ValueError::InvalidType {
        found,
        expected: expected.to_string(),
    }
}

/// One JSON value's text, as a serde `Deserializer`: what [`Object`]'s
/// fields are decoded with.
struct Value<'a>(&'a str);

impl<'de> Value<'de> {
    fn integer<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Unsigned(n) => visitor.visit_u64(n),
            Kind::Signed(n) => visitor.visit_i64(n),
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn float<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Unsigned(n) => visitor.visit_u64(n),
            Kind::Signed(n) => visitor.visit_i64(n),
            Kind::Float => match self.0.parse::<f64>() {
                Ok(f) if f.is_finite() => visitor.visit_f64(f),
                _ => Err(ValueError::Custom("number out of range".to_owned())),
            },
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn text<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Str(Cow::Borrowed(s)) => visitor.visit_borrowed_str(s),
            Kind::Str(Cow::Owned(s)) => visitor.visit_string(s),
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Object => visitor.visit_map(Fields {
                fields: Object::parse(self.0)?.fields.into_iter(),
                value: None,
            }),
            _ => Err(invalid(self.0, &visitor)),
        }
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            self.integer(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Value<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(b),
            Kind::Str(_) => self.text(visitor),
            Kind::Unsigned(_) | Kind::Signed(_) | Kind::Float => self.float(visitor),
            Kind::Array => self.deserialize_seq(visitor),
            Kind::Object => self.map(visitor),
        }
    }

    integers! {
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.float(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.float(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Bool(b) => visitor.visit_bool(b),
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.text(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.text(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.text(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        if self.0 == "null" {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Null => visitor.visit_unit(),
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Array => visitor.visit_seq(Elements(elements(self.0)?.into_iter())),
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.map(visitor)
    }

    /// A variant written as its name, or as an object of one field, the
    /// name and the variant's value (`{"bad_token":null}`), as
    /// `serde_json` reads an externally tagged enum.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match kind(self.0)? {
            Kind::Str(Cow::Borrowed(s)) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            Kind::Str(Cow::Owned(s)) => visitor.visit_enum(StringDeserializer::new(s)),
            Kind::Object => match Object::parse(self.0)?.fields.as_slice() {
                [(name, value)] => visitor.visit_enum(Variant {
                    name: name.clone(),
                    value,
                }),
                _ => Err(ValueError::Custom(
                    "expected an object of one field, a variant".to_owned(),
                )),
            },
            _ => Err(invalid(self.0, &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf
    }
}

/// An enum's variant written as an object of one field: its name, and the
/// text of its value.
struct Variant<'a> {
    name: Cow<'a, str>,
    value: &'a str,
}

impl<'de> de::EnumAccess<'de> for Variant<'de> {
    type Error = ValueError;
    type Variant = Value<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Value<'de>), ValueError> {
        let variant = match self.name {
            Cow::Borrowed(name) => {
                seed.deserialize(BorrowedStrDeserializer::<ValueError>::new(name))
            }
            Cow::Owned(name) => seed.deserialize(StringDeserializer::<ValueError>::new(name)),
        }?;
        Ok((variant, Value(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for Value<'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        serde::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ValueError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.map(visitor)
    }
}

/// An array's elements, for a sequence's decoder.
struct Elements<'a>(std::vec::IntoIter<&'a str>);

impl<'de> de::SeqAccess<'de> for Elements<'de> {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        self.0
            .next()
            .map(|raw| seed.deserialize(Value(raw)))
            .transpose()
    }
}

/// An object's fields, for a map's or a struct's decoder.
struct Fields<'a> {
    fields: std::vec::IntoIter<(Cow<'a, str>, &'a str)>,
    value: Option<&'a str>,
}

impl<'de> de::MapAccess<'de> for Fields<'de> {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        let Some((key, value)) = self.fields.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        match key {
            Cow::Borrowed(key) => seed.deserialize(BorrowedStrDeserializer::new(key)),
            Cow::Owned(key) => seed.deserialize(StringDeserializer::new(key)),
        }
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        match self.value.take() {
            Some(raw) => seed.deserialize(Value(raw)),
            None => Err(ValueError::Custom(
                "a value asked for before its key".to_owned(),
            )),
        }
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

    /// Texts to read as values: every kind, escapes, surrogates, numbers
    /// at the edges of the integer types, and broken ones.
    const VALUES: &[&str] = &[
        "0",
        "7",
        "-0",
        "-7",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1.5",
        "1.50",
        "-0.0",
        "1e3",
        "1E+3",
        "2e-2",
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "1e",
        "--1",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        r#""""#,
        r#""plain""#,
        r#""a\nb\"c\\d\/e\tf""#,
        r#""\u00e9\u0041""#,
        r#""\ud83d\ude00""#,
        r#""\ud83d""#,
        r#""\ude00x""#,
        r#""\ud83dx""#,
        r#""\u12""#,
        r#""\q""#,
        "\"tab\there\"",
        "\"unterminated",
        "\"é ü 😀\"",
        "[]",
        "[1,2]",
        "[1,]",
        "[,1]",
        "{}",
        r#"{"a":1}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{1:2}"#,
        " 1 ",
        "1 2",
        "",
        " ",
        "x",
    ];

    /// Every value decodes as `serde_json` decodes it, as each type the
    /// protocol reads, or both refuse it.
    #[test]
    fn values_decode_as_serde_json_decodes_them() {
        fn same<T>(raw: &str)
        where
            T: DeserializeOwned + PartialEq + fmt::Debug,
        {
            let ours = T::deserialize(Value(raw.trim()));
            let theirs = serde_json::from_str::<T>(raw);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{raw}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{raw}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
        for raw in VALUES {
            // Ours reads only what the scanner has checked.
            if value(raw).is_err() {
                assert!(
                    serde_json::from_str::<de::IgnoredAny>(raw).is_err(),
                    "{raw}"
                );
                continue;
            }
            same::<u64>(raw);
            same::<u32>(raw);
            same::<i64>(raw);
            same::<f64>(raw);
            same::<bool>(raw);
            same::<String>(raw);
            same::<Option<u64>>(raw);
            same::<Option<String>>(raw);
            same::<Vec<u64>>(raw);
            same::<std::collections::BTreeMap<String, u64>>(raw);
            same::<crate::ResumeFailure>(raw);
        }
    }

    /// The scanner accepts what `serde_json` accepts as a value it ignores
    /// (a lone surrogate included), and splits arrays and objects as its
    /// `RawValue` does.
    #[test]
    fn the_scanner_checks_syntax_as_serde_json_does() {
        for raw in VALUES {
            let ours = value(raw);
            let theirs = serde_json::from_str::<&serde_json::value::RawValue>(raw);
            assert_eq!(
                ours.as_ref().ok().copied(),
                theirs.as_ref().ok().map(|v| v.get()),
                "{raw}: ours {ours:?}, serde_json {theirs:?}"
            );
            let object = format!(r#"{{"k":{raw}}}"#);
            assert_eq!(Object::parse(&object).is_ok(), theirs.is_ok(), "{object}");
        }
        // Keys are decoded: a lone surrogate in one is refused.
        assert!(Object::parse(r#"{"\ud83d":1}"#).is_err());
        assert!(
            serde_json::from_str::<std::collections::BTreeMap<String, u64>>(r#"{"\ud83d":1}"#)
                .is_err()
        );
    }

    #[test]
    fn deep_nesting_is_read_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(value(&deep).ok(), Some(deep.as_str()));
        let object = format!(r#"{{"a":{deep},"b":2}}"#);
        let object = Object::parse(&object).expect("an object");
        assert_eq!(object.required::<u64>("b").ok(), Some(2));
        assert!(value(&deep[1..]).is_err());
    }

    /// Syntax errors say where, as `serde_json`'s do.
    #[test]
    fn syntax_errors_have_a_line_and_a_column() {
        let err = Object::parse("{\n  \"a\": tru\n}").expect_err("not JSON");
        assert_eq!(err.line(), 2);
        assert_eq!(err.column(), 8);
        assert_eq!(err.to_string(), "expected ident at line 2 column 8");
    }

    /// A field of the wrong type is worded as `serde_json` words it, its
    /// value shown as its JSON text.
    #[test]
    fn type_errors_name_the_value_and_the_type() {
        let object = Object::parse(r#"{"s":"a\"b","f":1.50,"n":null,"m":-3}"#).expect("an object");
        let text = |result: Result<u64, FieldError>| result.map_err(|e| e.to_string()).err();
        assert_eq!(
            text(object.required("s")).as_deref(),
            Some(r#"field `s`: invalid type: string "a\"b", expected u64"#)
        );
        assert_eq!(
            text(object.required("f")).as_deref(),
            Some("field `f`: invalid type: floating point `1.50`, expected u64")
        );
        assert_eq!(
            text(object.required("n")).as_deref(),
            Some("field `n`: invalid type: null, expected u64")
        );
        assert_eq!(
            text(object.required("m")).as_deref(),
            Some("field `m`: invalid value: integer `-3`, expected u64")
        );
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
