//! Protocol versions, and reliable mode's `msg` envelope in each of them.
//!
//! Version 1 carries the application's message as a JSON *string* inside
//! the envelope (`"data":"{\"type\":\"echo\",…}"`): every round trip
//! escapes and unescapes it once more on each side. Version 2 embeds it as
//! the JSON it already is, copied byte for byte (`"data":{"type":"echo",…}`);
//! text that is not one JSON object or array still travels as a string, and
//! a string `data` always means that text. So both versions carry the same
//! thing, the application's text, and a decoder reads either form whatever
//! the connection's version: only what a side *writes* depends on it.
//!
//! A client asks for a version with `?protocol=N`; the server speaks
//! `min(N, 2)` and says so in its `welcome`. A client that asks nothing (an
//! older build) gets version 1, exactly as before versions were asked for.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::fast::{escape_into, escaped_len};

/// A version of the wire protocol, as a client asks for it (`?protocol=N`)
/// and a `welcome` names it (`"protocol":N`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Version 1: a reliable `msg`'s `data` is a JSON string holding the
    /// application's text. What a client that asks for no version speaks.
    #[default]
    V1,
    /// Version 2: a reliable `msg`'s `data` is the application's JSON
    /// message itself, embedded as it is; other text travels as a string.
    V2,
}

impl Protocol {
    /// The newest version this crate speaks.
    pub const LATEST: Self = Self::V2;

    /// The version's number on the wire.
    pub fn number(self) -> u32 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// What a server speaks with a client that asked `?protocol=asked`: the
    /// newest version not above the ask. A missing or invalid ask (not a
    /// number, or 0) gets version 1, so an older client is served as before.
    ///
    /// ```
    /// use shared::Protocol;
    ///
    /// assert_eq!(Protocol::negotiate(None), Protocol::V1);
    /// assert_eq!(Protocol::negotiate(Some("2")), Protocol::V2);
    /// assert_eq!(Protocol::negotiate(Some("9")), Protocol::V2);
    /// assert_eq!(Protocol::negotiate(Some("two")), Protocol::V1);
    /// ```
    pub fn negotiate(asked: Option<&str>) -> Self {
        match asked.and_then(|asked| asked.parse::<u64>().ok()) {
            Some(n) if n >= 2 => Self::V2,
            _ => Self::V1,
        }
    }

    /// The version a `welcome`'s `protocol` names, as its client speaks it:
    /// 2 and above is version 2, anything else (1, or 0 from a server older
    /// than versions) version 1.
    pub fn from_number(n: u32) -> Self {
        if n >= 2 { Self::V2 } else { Self::V1 }
    }
}

/// How every envelope starts; serde writes the tag first, then the fields
/// in order, and so does every encoder here.
const MSG_PREFIX: &str = r#"{"type":"msg","seq":"#;
const DATA: &str = r#","data":"#;

/// How deep a text embedded in version 2 may nest: its envelope adds one
/// level, and serde_json refuses input nested beyond 128.
const MAX_EMBEDDED_DEPTH: usize = 64;

/// The `msg` envelope numbered `seq` around the application text `data`,
/// as `protocol` writes it: in version 2 embedded when [`embeddable`], else
/// (and always in version 1) as a JSON string. Byte for byte what serde
/// writes for [`ClientMessage::Msg`](crate::ClientMessage::Msg) in version 1.
///
/// ```
/// use shared::{Protocol, encode_msg};
///
/// let echo = r#"{"type":"echo","id":1,"body":"hi"}"#;
/// assert_eq!(
///     encode_msg(7, echo, Protocol::V2),
///     r#"{"type":"msg","seq":7,"data":{"type":"echo","id":1,"body":"hi"}}"#
/// );
/// assert_eq!(
///     encode_msg(7, echo, Protocol::V1),
///     r#"{"type":"msg","seq":7,"data":"{\"type\":\"echo\",\"id\":1,\"body\":\"hi\"}"}"#
/// );
/// assert_eq!(encode_msg(8, "plain text", Protocol::V2), r#"{"type":"msg","seq":8,"data":"plain text"}"#);
/// ```
pub fn encode_msg(seq: u64, data: &str, protocol: Protocol) -> String {
    let embed = protocol == Protocol::V2 && embeddable(data);
    frame(seq, data, embed)
}

/// As [`encode_msg`], for `json` that the caller knows to be one JSON
/// object as this crate's encoders write it (a server's own message): in
/// version 2 it is embedded without being checked again.
pub fn encode_msg_json(seq: u64, json: &str, protocol: Protocol) -> String {
    debug_assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    frame(seq, json, protocol == Protocol::V2)
}

/// The length of the version-1 envelope of `data` numbered `seq`, the
/// longest of its framings, without writing it: what a reliable session's
/// history bounds count, so that they hold whatever version its client
/// speaks (and speaks after its next resume).
pub fn msg_v1_len(seq: u64, data: &str) -> usize {
    let mut digits = itoa::Buffer::new();
    MSG_PREFIX.len() + digits.format(seq).len() + DATA.len() + escaped_len(data) + 1
}

fn frame(seq: u64, data: &str, embed: bool) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(seq);
    let data_len = if embed { data.len() } else { data.len() + 2 };
    let mut out =
        String::with_capacity(MSG_PREFIX.len() + digits.len() + DATA.len() + data_len + 1);
    out.push_str(MSG_PREFIX);
    out.push_str(digits);
    out.push_str(DATA);
    if embed {
        out.push_str(data);
    } else {
        escape_into(&mut out, data);
    }
    out.push('}');
    out
}

/// Whether version 2 embeds `text`: it starts with `{` or `[`, ends with
/// `}` or `]` (so that nothing around it, such as a trailing newline, would
/// be lost), nests at most 64 deep, and is one JSON value.
pub fn embeddable(text: &str) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes.first(), Some(b'{' | b'['))
        && matches!(bytes.last(), Some(b'}' | b']'))
        && depth_within(bytes, MAX_EMBEDDED_DEPTH)
        && crate::object::value(text).is_ok()
}

/// Whether the brackets of `bytes` (outside strings) nest at most `max` deep.
fn depth_within(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The fields of an envelope, in any order.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// The seq and the application text of a `msg` envelope of either version
/// (a string `data` is that text; any other JSON value is its text, byte
/// for byte), or `None` when `text` is not one.
pub(crate) fn decode_msg(text: &str) -> Option<(u64, String)> {
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    if envelope.ty != "msg" {
        return None;
    }
    let data = data_text(envelope.data.get()).ok()?.into_owned();
    Some((envelope.seq, data))
}

/// The application text that an envelope's `data` carries, from the
/// data's JSON text: a string is that text, any other value its own text,
/// byte for byte.
///
/// # Errors
///
/// When `raw` is a string that does not decode (a lone surrogate).
pub(crate) fn data_text(raw: &str) -> Result<Cow<'_, str>, crate::object::ValueError> {
    if raw.starts_with('"') {
        crate::object::string(raw)
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

/// Whether `text` starts as every encoder here writes an envelope.
pub(crate) fn looks_like_msg(text: &str) -> bool {
    text.starts_with(r#"{"type":"msg","#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, ServerMessage};

    const TEXTS: &[&str] = &[
        r#"{"type":"echo","id":1,"body":"hi"}"#,
        r#"{"type":"echo","id":1,"body":"a \"q\" \\ é 😀 \n"}"#,
        r#"[1,2,{"a":null}]"#,
        "{}",
        "[]",
        "plain text",
        "",
        "\"a string\"",
        "42",
        "null",
        "{not json}",
        "{\"a\":1}\n",
        " {\"a\":1}",
        "[1,2",
        "{\"a\":\"}\"",
        "\u{1}\u{1f} control",
    ];

    #[test]
    fn version_one_is_what_serde_writes() {
        for text in TEXTS {
            for seq in [0, 1, 7, u64::MAX] {
                let derived = ServerMessage::Msg {
                    seq,
                    data: (*text).to_owned(),
                }
                .to_json();
                assert_eq!(encode_msg(seq, text, Protocol::V1), derived);
                assert_eq!(msg_v1_len(seq, text), derived.len());
                let client = ClientMessage::Msg {
                    seq,
                    data: (*text).to_owned(),
                }
                .to_json();
                assert_eq!(client, derived);
            }
        }
    }

    #[test]
    fn version_two_embeds_json_objects_and_arrays_only() {
        let embedded = |text: &str| !encode_msg(1, text, Protocol::V2).contains(r#""data":""#);
        assert!(embedded(TEXTS[0]));
        assert!(embedded(TEXTS[1]));
        assert!(embedded(TEXTS[2]));
        assert!(embedded("{}"));
        assert!(embedded("[]"));
        for text in &TEXTS[5..] {
            assert!(!embedded(text), "{text:?} travels as a string");
            assert_eq!(
                encode_msg(1, text, Protocol::V2),
                encode_msg(1, text, Protocol::V1)
            );
        }
        // Too deep to embed safely: a string.
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(!embedded(&deep));
        let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(embedded(&fine));
        // Brackets inside strings do not count.
        let quoted = format!("[\"{}\"]", "[".repeat(100));
        assert!(embedded(&quoted));
    }

    #[test]
    fn every_text_comes_back_exactly_in_both_versions() {
        for text in TEXTS {
            for protocol in [Protocol::V1, Protocol::V2] {
                let frame = encode_msg(9, text, protocol);
                assert_eq!(decode_msg(&frame), Some((9, (*text).to_owned())));
                assert_eq!(
                    ClientMessage::from_json(&frame),
                    Ok(ClientMessage::Msg {
                        seq: 9,
                        data: (*text).to_owned()
                    }),
                    "{frame}"
                );
                assert_eq!(
                    ServerMessage::from_json(&frame),
                    Ok(ServerMessage::Msg {
                        seq: 9,
                        data: (*text).to_owned()
                    })
                );
            }
        }
    }

    #[test]
    fn an_embedded_message_is_copied_byte_for_byte() {
        // Spacing and key order that a re-serialization would change.
        let text = r#"{ "body" : "x",  "type":"echo","id":1.50e1 }"#;
        let frame = encode_msg(3, text, Protocol::V2);
        assert_eq!(
            frame,
            r#"{"type":"msg","seq":3,"data":{ "body" : "x",  "type":"echo","id":1.50e1 }}"#
        );
        assert_eq!(decode_msg(&frame), Some((3, text.to_owned())));
    }

    #[test]
    fn envelopes_decode_in_any_field_order_and_other_values_as_their_text() {
        let any_order = r#"{"data":{"type":"ping","t":1},"seq":4,"type":"msg"}"#;
        assert_eq!(
            ClientMessage::from_json(any_order),
            Ok(ClientMessage::Msg {
                seq: 4,
                data: r#"{"type":"ping","t":1}"#.into()
            })
        );
        assert_eq!(
            decode_msg(r#"{"type":"msg","seq":1,"data":42}"#),
            Some((1, "42".into()))
        );
        // Not envelopes: the derived decoder's errors.
        for bad in [
            r#"{"type":"msg","seq":1}"#,
            r#"{"type":"msg","seq":-1,"data":"x"}"#,
            r#"{"type":"msg","seq":1,"data":{"a":}"#,
            r#"{"type":"msg","seq":1,"data":"x","seq":2}"#,
        ] {
            assert!(decode_msg(bad).is_none(), "{bad}");
            let err = ClientMessage::from_json(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    crate::DecodeError::InvalidFields { .. } | crate::DecodeError::Malformed(_)
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn versions_are_negotiated_down_and_default_to_one() {
        assert_eq!(Protocol::negotiate(None), Protocol::V1);
        assert_eq!(Protocol::negotiate(Some("")), Protocol::V1);
        assert_eq!(Protocol::negotiate(Some("0")), Protocol::V1);
        assert_eq!(Protocol::negotiate(Some("1")), Protocol::V1);
        assert_eq!(Protocol::negotiate(Some("-2")), Protocol::V1);
        assert_eq!(Protocol::negotiate(Some("2")), Protocol::V2);
        assert_eq!(Protocol::negotiate(Some("3")), Protocol::V2);
        assert_eq!(Protocol::negotiate(Some("99999999999")), Protocol::V2);
        assert_eq!(Protocol::from_number(0), Protocol::V1);
        assert_eq!(Protocol::from_number(7), Protocol::V2);
        assert_eq!(Protocol::LATEST.number(), 2);
    }
}
