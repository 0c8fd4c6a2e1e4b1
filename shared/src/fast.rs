//! Fast paths for the echo, the hottest message of `/ws`: decoding an
//! `echo` request without serde's buffering of an internally tagged enum,
//! and encoding its reply into one buffer of the right size. Each gives
//! exactly what the derived code gives (the tests compare them on many
//! inputs); anything else, and every error, goes the derived way, so the
//! errors (and their texts) are the derived code's.
//!
//! serde cannot know where `type` is in an object, so the derived decoder
//! of [`ClientMessage`](crate::ClientMessage) first copies the whole object
//! into a tree of its own, then decodes the variant from the tree. A peer
//! that writes `type` first (ours and `serde_json` always do) lets this
//! decoder read the fields straight from the text.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

/// What an `echo` request must start with to take the fast path.
const ECHO_PREFIX: &str = r#"{"type":"echo""#;

/// The `id` and `body` of an `echo` request whose first key is `type`, or
/// `None` for anything else (the derived decoder then decides).
pub(crate) fn echo_request(text: &str) -> Option<(u64, String)> {
    if !text.starts_with(ECHO_PREFIX) {
        return None;
    }
    if let Some(fields) = canonical_echo(text) {
        return Some(fields);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de).deserialize_map(EchoVisitor).ok()?;
    de.end().ok()?;
    Some(fields)
}

struct EchoVisitor;

impl<'de> Visitor<'de> for EchoVisitor {
    type Value = (u64, String);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an echo request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Keys are borrowed: one with an escape fails here and takes the
        // derived way, which unescapes it.
        if map.next_key::<&str>()? != Some("type") || map.next_value::<&str>()? != "echo" {
            return Err(de::Error::custom("not an echo with `type` first"));
        }
        let (mut id, mut body) = (None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "id" if id.is_none() => id = Some(map.next_value::<u64>()?),
                "body" if body.is_none() => body = Some(map.next_value::<String>()?),
                // A second `type`, `id` or `body`: the derived decoder's error.
                "type" | "id" | "body" => return Err(de::Error::custom("duplicate")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match (id, body) {
            (Some(id), Some(body)) => Ok((id, body)),
            _ => Err(de::Error::custom("missing field")),
        }
    }
}

/// `{"type":"echo","id":N,"body":"..."}`, as the derived encoder writes
/// [`ServerMessage::Echo`](crate::ServerMessage::Echo), into one buffer
/// sized for a body without escapes.
pub(crate) fn echo_reply(id: u64, body: &str) -> String {
    const PREFIX: &str = r#"{"type":"echo","id":"#;
    const BODY: &str = r#","body":"#;
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(id);
    let mut out = String::with_capacity(PREFIX.len() + digits.len() + BODY.len() + body.len() + 3);
    out.push_str(PREFIX);
    out.push_str(digits);
    out.push_str(BODY);
    escape_into(&mut out, body);
    out.push('}');
    out
}

/// [`ClientMessage::to_json`](crate::ClientMessage::to_json): the derived
/// encoder's JSON (the tag first, then the fields in declaration order),
/// written into one buffer.
pub(crate) fn client_message(message: &crate::ClientMessage) -> String {
    use crate::ClientMessage;

    let mut out = String::with_capacity(64);
    let mut digits = itoa::Buffer::new();
    let mut number = |out: &mut String, n: u64| out.push_str(digits.format(n));
    match message {
        ClientMessage::Echo { id, body } => return echo_reply(*id, body),
        ClientMessage::Burst { count } => {
            out.push_str(r#"{"type":"burst","count":"#);
            number(&mut out, u64::from(*count));
        }
        ClientMessage::Ping { t } => {
            out.push_str(r#"{"type":"ping","t":"#);
            // serde_json's own float formatting (`null` when not finite).
            out.push_str(&serde_json::to_string(t).unwrap_or_else(|_| "null".into()));
        }
        ClientMessage::Resume {
            session,
            token,
            last_seq,
        } => {
            out.push_str(r#"{"type":"resume","session":"#);
            escape_into(&mut out, session);
            out.push_str(r#","token":"#);
            escape_into(&mut out, token);
            out.push_str(r#","last_seq":"#);
            number(&mut out, *last_seq);
        }
        ClientMessage::Ack { seq } => {
            out.push_str(r#"{"type":"ack","seq":"#);
            number(&mut out, *seq);
        }
        ClientMessage::Msg { seq, data } => {
            out.push_str(r#"{"type":"msg","seq":"#);
            number(&mut out, *seq);
            out.push_str(r#","data":"#);
            escape_into(&mut out, data);
        }
        ClientMessage::Refresh { token } => {
            out.push_str(r#"{"type":"refresh","token":"#);
            escape_into(&mut out, token);
        }
        ClientMessage::Subscribe { channel, since, id } => {
            out.push_str(r#"{"type":"subscribe","channel":"#);
            escape_into(&mut out, channel);
            if let Some(since) = since {
                out.push_str(r#","since":{"epoch":"#);
                escape_into(&mut out, &since.epoch);
                out.push_str(r#","offset":"#);
                number(&mut out, since.offset);
                out.push('}');
            }
            optional_string(&mut out, "id", id.as_deref());
        }
        ClientMessage::Unsubscribe { channel, id } => {
            out.push_str(r#"{"type":"unsubscribe","channel":"#);
            escape_into(&mut out, channel);
            optional_string(&mut out, "id", id.as_deref());
        }
        ClientMessage::Publish { channel, data, id } => {
            out.push_str(r#"{"type":"publish","channel":"#);
            escape_into(&mut out, channel);
            out.push_str(r#","data":"#);
            out.push_str(data.get());
            optional_string(&mut out, "id", id.as_deref());
        }
        ClientMessage::Presence { channel, id } => {
            out.push_str(r#"{"type":"presence","channel":"#);
            escape_into(&mut out, channel);
            optional_string(&mut out, "id", id.as_deref());
        }
        ClientMessage::PresenceStats { channel, id } => {
            out.push_str(r#"{"type":"presence_stats","channel":"#);
            escape_into(&mut out, channel);
            optional_string(&mut out, "id", id.as_deref());
        }
    }
    out.push('}');
    out
}

/// `,"name":"value"` when there is a value (serde's `skip_serializing_if`).
fn optional_string(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        escape_into(out, value);
    }
}

/// The first byte of `bytes` that a JSON string cannot hold as it is: below
/// 0x20, a quote or a backslash.
///
/// Checked 32 bytes at a time without an early exit, which the compiler
/// turns into vector instructions; serde_json looks at one byte at a time
/// (a callgrind profile of the typed echo put its escaping at a third of the
/// server's instructions for a 1 KiB body).
fn find_special(bytes: &[u8]) -> Option<usize> {
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = bytes.chunks_exact(32);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        if chunk.iter().fold(false, |any, &b| any | special(b)) {
            return chunk.iter().position(|&b| special(b)).map(|i| at + i);
        }
        at += 32;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| special(b))
        .map(|i| at + i)
}

/// Writes `text` as a JSON string, quotes included, byte for byte as
/// `serde_json` does (`\"`, `\\`, the five short escapes, `\u00xx` in
/// lower case for the other control characters, everything else as it is),
/// copying the runs between escapes whole.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(i) = find_special(rest.as_bytes()) {
        // `i` is at an ASCII byte: a char boundary.
        out.push_str(&rest[..i]);
        let byte = rest.as_bytes()[i];
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// The length of `text` written by [`escape_into`], without writing it.
pub(crate) fn escaped_len(text: &str) -> usize {
    let mut len = text.len() + 2;
    let mut rest = text.as_bytes();
    while let Some(i) = find_special(rest) {
        len += match rest[i] {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            _ => 5,
        };
        rest = &rest[i + 1..];
    }
    len
}

/// The canonical echo request, `{"type":"echo","id":N,"body":"..."}` with
/// no space, no leading zero and a body without escapes (what our clients
/// and serde_json write): its fields read straight from the text, the body
/// found by [`find_special`] and copied whole. `None` for anything else.
fn canonical_echo(text: &str) -> Option<(u64, String)> {
    canonical_echo_parts(text).map(|(id, body)| (id, body.to_owned()))
}

/// Whether `text` is an `echo` request whose reply is `text` itself, byte
/// for byte: `{"type":"echo","id":N,"body":"..."}` with a canonical `N`
/// and a body without escapes, which is exactly how the reply is encoded
/// ([`echo_reply`]). A server may then send the request's own bytes back,
/// with no decode into a `String`, no encode and no copy.
pub fn echo_is_its_own_reply(text: &str) -> bool {
    canonical_echo_parts(text).is_some()
}

/// The `id` and the body, borrowed, of a canonical echo request (see
/// [`echo_is_its_own_reply`]).
fn canonical_echo_parts(text: &str) -> Option<(u64, &str)> {
    let rest = text.strip_prefix(r#"{"type":"echo","id":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits > 1 && rest.starts_with('0')) {
        return None;
    }
    let id = rest[..digits].bytes().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    let body = rest[digits..].strip_prefix(r#","body":""#)?;
    let end = find_special(body.as_bytes())?;
    (body.as_bytes()[end] == b'"' && &body[end + 1..] == "}").then(|| (id, &body[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, ServerMessage};

    /// The derived decoding of `text`, whatever it is.
    fn derived(text: &str) -> Result<ClientMessage, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn an_echo_that_is_its_own_reply_is_byte_for_byte_what_the_encoder_writes() {
        let own = [
            r#"{"type":"echo","id":1,"body":"hi"}"#,
            r#"{"type":"echo","id":0,"body":""}"#,
            "{\"type\":\"echo\",\"id\":18446744073709551615,\"body\":\"\u{e9} \u{1f600} x\u{7f}\"}",
        ];
        for text in own {
            assert!(echo_is_its_own_reply(text), "{text}");
            let Ok(ClientMessage::Echo { id, body }) = ClientMessage::from_json(text) else {
                panic!("{text} is an echo");
            };
            assert_eq!(ServerMessage::Echo { id, body }.to_json(), text);
        }
        let not = [
            r#"{"type":"echo","body":"hi","id":1}"#,
            r#"{"type":"echo","id":01,"body":"hi"}"#,
            r#"{"type":"echo","id":1,"body":"a \"q\""}"#,
            r#"{"type":"echo","id":1,"body":"\u0041"}"#,
            "{\"type\":\"echo\",\"id\":1,\"body\":\"tab\there\"}",
            r#"{"type":"echo","id":1,"body":"hi" }"#,
            r#"{"type":"echo","id":1,"body":"hi","x":1}"#,
            r#"{"type":"echo","id":18446744073709551616,"body":"hi"}"#,
            r#"{"type":"ping","t":1}"#,
        ];
        for text in not {
            assert!(!echo_is_its_own_reply(text), "{text}");
        }
    }

    #[test]
    fn the_fast_decoder_agrees_with_the_derived_one_or_steps_aside() {
        let cases = [
            r#"{"type":"echo","id":1,"body":"hi"}"#,
            r#"{"type":"echo","body":"hi","id":7}"#,
            r#"{"type":"echo","id":1,"body":"a \"q\" \\ \u00e9 \ud83d\ude00 \n"}"#,
            r#"{"type":"echo","id":18446744073709551615,"body":""}"#,
            r#"{"type":"echo","id":1,"body":"x","extra":{"a":[1,2,{"b":null}]}}"#,
            r#"{"type":"echo","id":-0,"body":"x"}"#,
            r#"{"type":"echo","id":1.0,"body":"x"}"#,
            r#"{"type":"echo","id":-1,"body":"x"}"#,
            r#"{"type":"echo","id":18446744073709551616,"body":"x"}"#,
            r#"{"type":"echo","id":1}"#,
            r#"{"type":"echo","body":"x"}"#,
            r#"{"type":"echo","id":1,"body":"x","id":2}"#,
            r#"{"type":"echo","id":1,"body":"x","type":"echo"}"#,
            r#"{"type":"echo","id":1,"b\u006fdy":"x"}"#,
            r#"{"type":"echo","id":1,"body":3}"#,
            r#"{"type":"echo","id":1,"body":"x"} "#,
            r#"{"type":"echo","id":1,"body":"x"}x"#,
            r#"{"type":"echo","id":1,"body":"x""#,
            r#"{"type":"echo" ,"id":1,"body":"x"}"#,
            r#"{"type":"echoes","id":1,"body":"x"}"#,
            r#"{"id":1,"type":"echo","body":"x"}"#,
            r#"{"type":"echo","id":0,"body":"x"}"#,
            r#"{"type":"echo","id":01,"body":"x"}"#,
            r#"{"type":"echo","id":,"body":"x"}"#,
            r#"{"type":"echo","id":1,"body":"x\"y"}"#,
            r#"{"type":"echo","id":1,"body":"é 😀 x"}"#,
            r#"{"type":"echo","id":1,"body":"x"}}"#,
            r#"{"type":"echo","id":1,"body":"x","n":1}"#,
            "{\"type\":\"echo\",\"id\":1,\"body\":\"a\u{1}b\"}",
            "{\"type\":\"echo\",\"id\":1,\"body\":\"0123456789012345678901234567890123456789\u{1f}\"}",
        ];
        for text in cases {
            let expected = derived(text);
            // Stepping aside (`None`) is always allowed; the derived way decides.
            if let Some((id, body)) = echo_request(text) {
                assert_eq!(Ok(ClientMessage::Echo { id, body }), expected, "{text}");
            }
        }
        // And it does take the common ones, the canonical one by the short way.
        assert!(canonical_echo(cases[0]).is_some());
        assert!(echo_request(cases[0]).is_some());
        assert!(echo_request(cases[2]).is_some());
        assert!(echo_request(cases[4]).is_some());
    }

    #[test]
    fn client_messages_are_written_as_the_derived_encoder_writes_them() {
        let text = "a \"q\" \\ é 😀 \n \u{1} \u{7f}";
        let mut cases = vec![
            ClientMessage::Echo {
                id: u64::MAX,
                body: text.into(),
            },
            ClientMessage::Burst { count: u32::MAX },
            ClientMessage::Burst { count: 0 },
            ClientMessage::Resume {
                session: text.into(),
                token: "k".into(),
                last_seq: 41,
            },
            ClientMessage::Ack { seq: 0 },
            ClientMessage::Msg {
                seq: 7,
                data: r#"{"type":"ping","t":1}"#.into(),
            },
            ClientMessage::Refresh { token: text.into() },
            ClientMessage::Subscribe {
                channel: "chat:x".into(),
                since: None,
                id: None,
            },
            ClientMessage::Subscribe {
                channel: "chat:x".into(),
                since: Some(crate::channel::StreamPosition {
                    epoch: text.into(),
                    offset: u64::MAX,
                }),
                id: Some(text.into()),
            },
            ClientMessage::Unsubscribe {
                channel: "x".into(),
                id: Some("u-1".into()),
            },
            ClientMessage::Unsubscribe {
                channel: "x".into(),
                id: None,
            },
            ClientMessage::Presence {
                channel: "chat:x".into(),
                id: Some("q".into()),
            },
            ClientMessage::PresenceStats {
                channel: "chat:x".into(),
                id: None,
            },
            ClientMessage::Publish {
                channel: "chat:x".into(),
                data: crate::channel::RawJson::parse(
                    r#"{"text":"hi","n":[1,2.5,null],"s":"\"q\""}"#,
                )
                .unwrap(),
                id: Some("p-17".into()),
            },
            ClientMessage::Publish {
                channel: "chat:x".into(),
                data: crate::channel::RawJson::parse("null").unwrap(),
                id: None,
            },
        ];
        for t in [
            0.0,
            -0.0,
            1.0,
            12.5,
            -0.25,
            0.1,
            1e300,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            1_765_000_000_000.123,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            cases.push(ClientMessage::Ping { t });
        }
        for message in cases {
            assert_eq!(
                client_message(&message),
                serde_json::to_string(&message).unwrap()
            );
        }
    }

    #[test]
    fn the_fast_encoder_writes_what_the_derived_one_writes() {
        let long = "x".repeat(5000);
        let mut every_byte: String = (0u8..0x80).map(char::from).collect();
        every_byte.push_str("é 😀 \u{2028} \u{80}");
        let mut cases = vec![
            String::new(),
            "hi".into(),
            "a \"q\" \\ é 😀 \n \u{1} \u{7f}".into(),
            long,
            every_byte.clone(),
        ];
        // Every special byte at every offset of an 8-byte word, and at the ends.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{8}', '\u{c}', 'é'] {
            for at in 0..17 {
                let mut text: String = "abcdefghijklmnopq".chars().take(at).collect();
                text.push(special);
                text.push_str("rstuvwxyz0123456");
                cases.push(text);
            }
        }
        for body in cases.iter().map(String::as_str) {
            for id in [0, 42, u64::MAX] {
                let derived = serde_json::to_string(&ServerMessage::Echo {
                    id,
                    body: body.to_owned(),
                })
                .unwrap();
                assert_eq!(echo_reply(id, body), derived);
            }
        }
    }
}
