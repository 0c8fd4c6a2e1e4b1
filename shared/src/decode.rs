//! [`ServerMessage::from_json`]'s decoder: type first, then the fields of
//! that type ([`Object`]), without serde's buffering of an internally
//! tagged enum. It decodes what the derived decoder decodes, to the same
//! message, and refuses what it refuses with the same [`DecodeError`]
//! variant (the tests compare the two on every message type and on many
//! bad inputs), with these exceptions, none of which a server writes:
//!
//! * values of fields that the message type does not read are checked for
//!   JSON syntax only (see [`crate::object`]);
//! * a JSON array is not a message (`Malformed`): serde's derive reads an
//!   internally tagged enum from an array too, its tag first and the
//!   fields in declaration order;
//! * a `type` that is neither a string nor `null` is
//!   [`DecodeError::UnknownType`] with its text as sent (the derived
//!   decoder printed it again through `serde_json::Value`);
//! * the `detail` of [`DecodeError::InvalidFields`] is worded by
//!   [`FieldError`];
//! * a `pub`'s `data` is kept as sent; the derived decoder compacts it
//!   (the two are equal: [`crate::channel::RawJson`] compares values).

use crate::channel::{
    Member, OffsetRange, PublisherInfo, RawJson, RecoveryFailure, UnsubscribeReason,
};
use crate::object::{self, FieldError, Object};
use crate::{DecodeError, ErrorCode, ServerMessage, envelope};

/// Decodes one server text frame; see the module doc.
pub(crate) fn server_message(text: &str) -> Result<ServerMessage, DecodeError> {
    decode_with(text, fields)
}

/// Decodes one server text frame if it is of a type the connection itself
/// acts on ([`CONTROL_TYPES`]); `Ok(None)` for any other type, whose fields
/// are not read. A wrapper that hands the rest to its application as text
/// needs no more (and, in a browser, carries no decoder of the rest).
pub(crate) fn control_message(text: &str) -> Result<Option<ServerMessage>, DecodeError> {
    match decode_with(text, control_fields) {
        Ok(message) => Ok(Some(message)),
        Err(DecodeError::UnknownType(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The types [`control_message`] decodes: the connection's, and the
/// application's errors (token mode reads a refused refresh's).
pub const CONTROL_TYPES: &[&str] = &[
    "welcome",
    "msg",
    "ack",
    "resumed",
    "resume_failed",
    "gap",
    "refreshed",
    "error",
];

/// The control message in `text`, if it is one that decodes; anything
/// else (another type, or a frame that does not decode) is `None`, and no
/// error text is made: a browser wrapper that would drop the error then
/// carries none of `serde_json`'s error formatting.
pub(crate) fn control_message_if_any(text: &str) -> Option<ServerMessage> {
    decode_parts(text, control_fields).ok()
}

/// The channel message in `text` (a [`CHANNEL_TYPES`] type, or an
/// `error`), if it decodes; anything else is `None`, with no error text
/// made, as for [`control_message_if_any`]: the wrapper's channel table
/// needs these types only, and a browser build then carries no decoder of
/// the others (echo, push...) nor the decoder's error formatting.
pub(crate) fn channel_message_if_any(text: &str) -> Option<ServerMessage> {
    decode_parts(text, |ty, object| match ty {
        "error" => control_fields(ty, object),
        _ => channel_fields(ty, object),
    })
    .ok()
}

/// The channel types (version 2), which [`channel_message_if_any`] decodes
/// (with `error`).
pub const CHANNEL_TYPES: &[&str] = &[
    "subscribed",
    "pub",
    "channel_gap",
    "published",
    "unsubscribed",
    "presence",
    "presence_stats",
    "join",
    "leave",
];

fn decode_with(
    text: &str,
    fields: impl FnOnce(&str, &Object<'_>) -> Result<Option<ServerMessage>, FieldError>,
) -> Result<ServerMessage, DecodeError> {
    decode_parts(text, fields).map_err(Failure::into_error)
}

/// Why [`decode_parts`] failed, before any of it is put into words.
enum Failure<'a> {
    Malformed(serde_json::Error),
    /// The `type` is a string that does not decode (a lone surrogate).
    MalformedTag(object::ValueError),
    /// The `type` field twice.
    DuplicateTag(FieldError),
    MissingType,
    UnknownType(std::borrow::Cow<'a, str>),
    InvalidFields {
        ty: std::borrow::Cow<'a, str>,
        error: FieldError,
    },
}

impl Failure<'_> {
    fn into_error(self) -> DecodeError {
        match self {
            Self::Malformed(err) => DecodeError::Malformed(err.to_string()),
            Self::MalformedTag(err) => DecodeError::Malformed(err.to_string()),
            Self::DuplicateTag(err) => DecodeError::Malformed(err.to_string()),
            Self::MissingType => DecodeError::MissingType,
            Self::UnknownType(ty) => DecodeError::UnknownType(ty.into_owned()),
            Self::InvalidFields { ty, error } => DecodeError::InvalidFields {
                ty: ty.into_owned(),
                detail: error.to_string(),
            },
        }
    }
}

fn decode_parts<'a>(
    text: &'a str,
    fields: impl FnOnce(&str, &Object<'_>) -> Result<Option<ServerMessage>, FieldError>,
) -> Result<ServerMessage, Failure<'a>> {
    let object = Object::parse(text).map_err(Failure::Malformed)?;
    // Two `type` fields: the derived decoder's probe of the tag failed too.
    let tag = object.raw("type").map_err(Failure::DuplicateTag)?;
    let ty = match tag {
        None | Some("null") => return Err(Failure::MissingType),
        Some(raw) if !raw.starts_with('"') => return Err(Failure::UnknownType(raw.into())),
        // A string that does not decode (a lone surrogate) failed the probe.
        Some(raw) => object::string(raw).map_err(Failure::MalformedTag)?,
    };
    match fields(&ty, &object) {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(Failure::UnknownType(ty)),
        Err(error) => Err(Failure::InvalidFields { ty, error }),
    }
}

/// The message of type `ty` from `object`'s fields; `None` for a type the
/// server does not send.
fn fields(ty: &str, object: &Object<'_>) -> Result<Option<ServerMessage>, FieldError> {
    if let Some(message) = control_fields(ty, object)? {
        return Ok(Some(message));
    }
    if let Some(message) = channel_fields(ty, object)? {
        return Ok(Some(message));
    }
    app_fields(ty, object)
}

/// [`fields`] of the [`CONTROL_TYPES`]; `None` for any other type.
fn control_fields(ty: &str, object: &Object<'_>) -> Result<Option<ServerMessage>, FieldError> {
    Ok(Some(match ty {
        "welcome" => ServerMessage::Welcome {
            client_id: object.required("client_id")?,
            push_interval_ms: object.required("push_interval_ms")?,
            session: object.optional("session")?,
            token: object.optional("token")?,
            protocol: object.or_default("protocol")?,
            exp: object.optional("exp")?,
        },
        "error" => ServerMessage::Error {
            code: ErrorCode::from(object.required::<String>("code")?),
            message: object.required("message")?,
            channel: object.optional("channel")?,
            id: object.optional("id")?,
        },
        "msg" => {
            let seq = object.required("seq")?;
            let data = object.raw("data")?.ok_or(FieldError::Missing("data"))?;
            let data = envelope::data_text(data)
                .map_err(|source| FieldError::Invalid {
                    field: "data",
                    source,
                })?
                .into_owned();
            ServerMessage::Msg { seq, data }
        }
        "ack" => ServerMessage::Ack {
            seq: object.required("seq")?,
        },
        "resumed" => ServerMessage::Resumed {
            last_seq: object.required("last_seq")?,
        },
        "resume_failed" => ServerMessage::ResumeFailed {
            reason: object.required("reason")?,
        },
        "gap" => ServerMessage::Gap {
            from: object.required("from")?,
            to: object.required("to")?,
        },
        "refreshed" => ServerMessage::Refreshed {
            exp: object.required("exp")?,
        },
        _ => return Ok(None),
    }))
}

/// [`fields`] of the types that are the application's.
fn app_fields(ty: &str, object: &Object<'_>) -> Result<Option<ServerMessage>, FieldError> {
    Ok(Some(match ty {
        "echo" => ServerMessage::Echo {
            id: object.required("id")?,
            body: object.required("body")?,
        },
        "push" => ServerMessage::Push {
            seq: object.required("seq")?,
            sent_at_ms: object.required("sent_at_ms")?,
            body: object.required("body")?,
        },
        "burst_done" => ServerMessage::BurstDone {
            count: object.required("count")?,
            elapsed_ms: object.required("elapsed_ms")?,
        },
        "pong" => ServerMessage::Pong {
            t: object.required("t")?,
        },
        _ => return Ok(None),
    }))
}

/// [`fields`] of the [`CHANNEL_TYPES`]; `None` for any other type.
fn channel_fields(ty: &str, object: &Object<'_>) -> Result<Option<ServerMessage>, FieldError> {
    Ok(Some(match ty {
        "subscribed" => ServerMessage::Subscribed {
            channel: object.required("channel")?,
            epoch: object.required("epoch")?,
            offset: object.required("offset")?,
            recovered: flag(object, "recovered")?,
            reason: recovery_failure(object)?,
            gap: nested(object, "gap", |gap| {
                Ok(OffsetRange {
                    from: gap.required("from")?,
                    to: gap.required("to")?,
                })
            })?,
            id: object.optional("id")?,
        },
        "pub" => ServerMessage::Pub {
            channel: object.required("channel")?,
            offset: object.required("offset")?,
            // Kept as the server wrote it: the application reads it.
            data: RawJson::checked(object.raw("data")?.ok_or(FieldError::Missing("data"))?),
            info: nested(object, "info", |info| {
                Ok(PublisherInfo {
                    client_id: info.required("client_id")?,
                    user: info.optional("user")?,
                })
            })?,
        },
        "channel_gap" => ServerMessage::ChannelGap {
            channel: object.required("channel")?,
            from: object.required("from")?,
            to: object.required("to")?,
        },
        "published" => ServerMessage::Published {
            channel: object.required("channel")?,
            offset: object.required("offset")?,
            id: object.optional("id")?,
        },
        "unsubscribed" => ServerMessage::Unsubscribed {
            channel: object.required("channel")?,
            reason: UnsubscribeReason::from(object.required::<String>("reason")?),
            id: object.optional("id")?,
        },
        "presence" => ServerMessage::Presence {
            channel: object.required("channel")?,
            clients: members(object)?,
            truncated: flag(object, "truncated")?,
            id: object.optional("id")?,
        },
        "presence_stats" => ServerMessage::PresenceStats {
            channel: object.required("channel")?,
            clients: object.required("clients")?,
            users: object.required("users")?,
            id: object.optional("id")?,
        },
        "join" | "leave" => {
            let channel = object.required("channel")?;
            let info = nested(object, "info", member)?.ok_or(FieldError::Missing("info"))?;
            if ty == "join" {
                ServerMessage::Join { channel, info }
            } else {
                ServerMessage::Leave { channel, info }
            }
        }
        _ => return Ok(None),
    }))
}

/// A presence member's fields.
fn member(object: &Object<'_>) -> Result<Member, FieldError> {
    Ok(Member {
        client_id: object.required("client_id")?,
        user: object.optional("user")?,
        client_name: object.optional("client_name")?,
    })
}

/// A `presence`'s `clients`, each read as [`member`].
fn members(object: &Object<'_>) -> Result<Vec<Member>, FieldError> {
    let raw = object
        .raw("clients")?
        .ok_or(FieldError::Missing("clients"))?;
    let invalid = |source: serde_json::Error| FieldError::Invalid {
        field: "clients",
        source: source.into(),
    };
    object::elements(raw)
        .map_err(invalid)?
        .into_iter()
        .map(|element| {
            let inner = Object::parse(element).map_err(invalid)?;
            member(&inner).map_err(|err| FieldError::Nested {
                field: "clients",
                source: Box::new(err),
            })
        })
        .collect()
}

/// Field `name`, an optional object, read by `read` from its own fields:
/// the types the channel messages nest are read with the decoders the
/// others already use, rather than each with serde's own (smaller wasm).
fn nested<T>(
    object: &Object<'_>,
    name: &'static str,
    read: impl FnOnce(&Object<'_>) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    let invalid = |source| FieldError::Invalid {
        field: name,
        source,
    };
    match object.raw(name)? {
        None | Some("null") => Ok(None),
        Some(raw) => {
            let inner = Object::parse(raw).map_err(|err| invalid(err.into()))?;
            read(&inner).map(Some).map_err(|err| match err {
                FieldError::Invalid { source, .. } => invalid(source),
                other => FieldError::Nested {
                    field: name,
                    source: Box::new(other),
                },
            })
        }
    }
}

/// A `subscribed`'s `reason`, by its wire name.
fn recovery_failure(object: &Object<'_>) -> Result<Option<RecoveryFailure>, FieldError> {
    Ok(match object.optional::<String>("reason")?.as_deref() {
        None => None,
        Some("history_trimmed") => Some(RecoveryFailure::HistoryTrimmed),
        Some("epoch_changed") => Some(RecoveryFailure::EpochChanged),
        Some(other) => {
            return Err(FieldError::Invalid {
                field: "reason",
                source: serde::de::Error::custom(other),
            });
        }
    })
}

/// An optional boolean field, read from its text.
fn flag(object: &Object<'_>, name: &'static str) -> Result<Option<bool>, FieldError> {
    match object.raw(name)? {
        None | Some("null") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(FieldError::Invalid {
            field: name,
            source: serde::de::Error::custom(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeError, ResumeFailure};

    /// The decoder this one replaced: serde's derive, a probe of the tag on
    /// error, and the envelope decoder for `msg`.
    fn derived(text: &str) -> Result<ServerMessage, DecodeError> {
        crate::decode_or_msg(text, crate::SERVER_TYPES, |seq, data| ServerMessage::Msg {
            seq,
            data,
        })
    }

    /// Both decoders agree: the same message, or errors of the same variant
    /// (with the same type or tag where they carry one).
    fn agree(text: &str) {
        let ours = server_message(text);
        let theirs = derived(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(DecodeError::Malformed(_)), Err(DecodeError::Malformed(_)))
            | (Err(DecodeError::MissingType), Err(DecodeError::MissingType)) => {}
            (Err(DecodeError::UnknownType(a)), Err(DecodeError::UnknownType(b))) => {
                assert_eq!(a, b, "{text}");
            }
            (
                Err(DecodeError::InvalidFields { ty: a, .. }),
                Err(DecodeError::InvalidFields { ty: b, .. }),
            ) => assert_eq!(a, b, "{text}"),
            _ => panic!("{text}: ours {ours:?}, derived {theirs:?}"),
        }
    }

    #[test]
    fn the_control_decoder_decodes_the_control_types_as_the_full_one_and_reads_no_other() {
        for text in VALID {
            let full = server_message(text).expect("valid");
            let control = control_message(text).expect("valid");
            let ty = Object::parse(text)
                .unwrap()
                .tag("type")
                .unwrap()
                .unwrap()
                .into_owned();
            // The decoder without error texts gives the same message.
            assert_eq!(control_message_if_any(text), control, "{text}");
            if CONTROL_TYPES.contains(&ty.as_str()) {
                assert_eq!(control, Some(full), "{text}");
            } else {
                assert_eq!(control, None, "{text}");
            }
        }
        // Another type's fields are not read: not this decoder's to judge.
        assert_eq!(
            control_message(r#"{"type":"echo","id":"x"}"#).unwrap(),
            None
        );
        assert!(control_message(r#"{"type":"ack","seq":"x"}"#).is_err());
        assert!(control_message("[").is_err());
        for refused in [
            r#"{"type":"echo","id":"x"}"#,
            r#"{"type":"ack","seq":"x"}"#,
            r#"{"type":"ack","seq":1,"type":"ack"}"#,
            r#"{"seq":1}"#,
            r#"{"type":7}"#,
            "[",
        ] {
            assert_eq!(control_message_if_any(refused), None, "{refused}");
        }
    }

    #[test]
    fn the_channel_decoder_decodes_the_channel_types_and_errors_as_the_full_one_and_no_other() {
        for text in VALID {
            let full = server_message(text).expect("valid");
            let ty = Object::parse(text)
                .unwrap()
                .tag("type")
                .unwrap()
                .unwrap()
                .into_owned();
            let channel = channel_message_if_any(text);
            if CHANNEL_TYPES.contains(&ty.as_str()) || ty == "error" {
                assert_eq!(channel, Some(full), "{text}");
            } else {
                assert_eq!(channel, None, "{text}");
            }
        }
        for refused in [
            r#"{"type":"pub","channel":"c","offset":"x","data":1}"#,
            r#"{"type":"join","channel":"c"}"#,
            r#"{"type":"echo","id":1,"body":"b"}"#,
            r#"{"type":7}"#,
            "[",
        ] {
            assert_eq!(channel_message_if_any(refused), None, "{refused}");
        }
    }

    /// One valid message of every type the server sends, as it writes it.
    const VALID: &[&str] = &[
        r#"{"type":"welcome","client_id":"c-1","push_interval_ms":1000,"protocol":1}"#,
        r#"{"type":"welcome","client_id":"c-1","push_interval_ms":1000,"session":"s1","token":"k","protocol":2,"exp":1700000900}"#,
        r#"{"type":"welcome","client_id":"c","push_interval_ms":0}"#,
        r#"{"type":"echo","id":18446744073709551615,"body":"ünïcode ✓"}"#,
        r#"{"type":"push","seq":1,"sent_at_ms":1700000000000,"body":"tick"}"#,
        r#"{"type":"burst_done","count":3,"elapsed_ms":12}"#,
        r#"{"type":"pong","t":-0.25}"#,
        r#"{"type":"pong","t":12}"#,
        r#"{"type":"pong","t":1e300}"#,
        r#"{"type":"error","code":"malformed","message":"bad"}"#,
        r#"{"type":"error","code":"from_the_future","message":""}"#,
        r#"{"type":"msg","seq":3,"data":"{\"type\":\"pong\",\"t\":1}"}"#,
        r#"{"type":"msg","seq":3,"data":{"type":"pong","t":1}}"#,
        r#"{"type":"msg","seq":3,"data":[1, 2]}"#,
        r#"{"type":"msg","seq":3,"data":42}"#,
        r#"{"type":"msg","seq":3,"data":null}"#,
        r#"{"type":"ack","seq":9}"#,
        r#"{"type":"resumed","last_seq":12}"#,
        r#"{"type":"resume_failed","reason":"unknown_session"}"#,
        r#"{"type":"resume_failed","reason":"bad_token"}"#,
        r#"{"type":"resume_failed","reason":"not_first"}"#,
        r#"{"type":"resume_failed","reason":"no_session"}"#,
        r#"{"type":"resume_failed","reason":{"bad_token":null}}"#,
        r#"{"type":"gap","from":13,"to":20}"#,
        r#"{"type":"refreshed","exp":1700000900}"#,
        r#"{"type":"error","code":"bad_channel","message":"no","channel":"a b","id":"s-1"}"#,
        r#"{"type":"error","code":"unavailable","message":"later","channel":"chat:x"}"#,
        r#"{"type":"subscribed","channel":"chat:x","epoch":"e1","offset":0}"#,
        r#"{"type":"subscribed","channel":"chat:x","epoch":"e1","offset":41,"recovered":true,"id":"s-2"}"#,
        r#"{"type":"subscribed","channel":"x","epoch":"e1","offset":41,"recovered":false,"reason":"history_trimmed","gap":{"from":3,"to":7}}"#,
        r#"{"type":"subscribed","channel":"x","epoch":"e2","offset":0,"recovered":false,"reason":"epoch_changed"}"#,
        r#"{"type":"pub","channel":"chat:x","offset":42,"data":{"text":"hi","n":[1,2.5,null]},"info":{"client_id":"c1","user":"alice"}}"#,
        r#"{"type":"pub","channel":"chat:x","offset":43,"data":"just text"}"#,
        r#"{"type":"pub","channel":"chat:x","offset":44,"data":null,"info":{"client_id":"c2"}}"#,
        r#"{"type":"channel_gap","channel":"chat:x","from":43,"to":45}"#,
        r#"{"type":"published","channel":"chat:x","offset":42,"id":"p-17"}"#,
        r#"{"type":"published","channel":"chat:x","offset":42}"#,
        r#"{"type":"unsubscribed","channel":"chat:x","reason":"permission"}"#,
        r#"{"type":"unsubscribed","channel":"chat:x","reason":"client","id":"u-1"}"#,
        r#"{"type":"unsubscribed","channel":"chat:x","reason":"from_the_future"}"#,
        r#"{"type":"presence","channel":"chat:x","clients":[]}"#,
        r#"{"type":"presence","channel":"chat:x","clients":[{"client_id":"c1","user":"alice","client_name":"ann's laptop"},{"client_id":"c2"}],"truncated":true,"id":"q-1"}"#,
        r#"{"type":"presence_stats","channel":"chat:x","clients":3,"users":2,"id":"q-2"}"#,
        r#"{"type":"join","channel":"chat:x","info":{"client_id":"c1","user":"alice"}}"#,
        r#"{"type":"leave","channel":"chat:x","info":{"client_id":"c2"}}"#,
    ];

    /// Bad or unusual inputs of every kind.
    const ODD: &[&str] = &[
        "",
        " ",
        "{",
        "}",
        "not json",
        "\"pong\"",
        "12",
        "null",
        "{}",
        "{} ",
        "{}x",
        "{}{}",
        r#"{"id":1}"#,
        r#"{"type":null,"t":1}"#,
        r#"{"type":"teleport"}"#,
        r#"{"type":"Pong","t":1}"#,
        r#"{"type":"pong ","t":1}"#,
        r#"{"type":"\u0070ong","t":1}"#,
        r#"{"typ\u0065":"pong","t":1}"#,
        r#"{"type":7}"#,
        r#"{"type":true}"#,
        r#"{"type":"pong","type":"pong","t":1}"#,
        r#"{"type":"pong","t":1,"type":"ping"}"#,
        r#"{"t":1,"type":"pong"}"#,
        r#"{"body":"x","seq":1,"type":"push","sent_at_ms":2}"#,
        r#"{"type":"pong"}"#,
        r#"{"type":"pong","t":null}"#,
        r#"{"type":"pong","t":"1"}"#,
        r#"{"type":"pong","t":1,"t":2}"#,
        r#"{"type":"pong","t":1,"extra":[1,{"a":null}],"seq":"not read by pong"}"#,
        r#"{"type":"pong","t":1,"\u0074":2}"#,
        r#"{"type":"pong","t":1}  "#,
        r#"{"type":"pong","t":1,}"#,
        r#"{"type":"pong","t":1"#,
        r#"{"type":"pong","t":01}"#,
        r#"{"type":"pong","t":1e400}"#,
        r#"{"type":"echo","id":-1,"body":"x"}"#,
        r#"{"type":"echo","id":1.0,"body":"x"}"#,
        r#"{"type":"echo","id":-0,"body":"x"}"#,
        r#"{"type":"echo","id":18446744073709551616,"body":"x"}"#,
        r#"{"type":"echo","id":1,"body":null}"#,
        r#"{"type":"echo","id":1,"body":"\ud800"}"#,
        r#"{"type":"echo","id":1,"body":"\ud83d\ude00"}"#,
        r#"{"type":"echo","id":1}"#,
        r#"{"type":"burst_done","count":4294967296,"elapsed_ms":1}"#,
        r#"{"type":"burst_done","count":4294967295,"elapsed_ms":1}"#,
        r#"{"type":"welcome","client_id":"c","push_interval_ms":0,"protocol":null}"#,
        r#"{"type":"welcome","client_id":"c","push_interval_ms":0,"protocol":-1}"#,
        r#"{"type":"welcome","client_id":"c","push_interval_ms":0,"exp":null,"session":null,"token":null}"#,
        r#"{"type":"welcome","client_id":"c","push_interval_ms":0,"exp":"soon"}"#,
        r#"{"type":"welcome","client_id":"c","push_interval_ms":0,"session":1}"#,
        r#"{"type":"welcome","client_id":"c"}"#,
        r#"{"type":"welcome","push_interval_ms":0}"#,
        r#"{"type":"error","code":7,"message":"x"}"#,
        r#"{"type":"error","code":"malformed"}"#,
        r#"{"type":"resume_failed","reason":"tomorrow"}"#,
        r#"{"type":"resume_failed","reason":null}"#,
        r#"{"type":"resume_failed"}"#,
        r#"{"type":"msg","seq":1}"#,
        r#"{"type":"msg","data":"x"}"#,
        r#"{"type":"msg","seq":-1,"data":"x"}"#,
        r#"{"type":"msg","seq":1,"data":{"a":}"#,
        r#"{"type":"msg","seq":1,"data":"x","seq":2}"#,
        r#"{"type":"msg","seq":1,"data":"x","data":"y"}"#,
        r#"{"type":"msg","seq":1,"data":"\ud800"}"#,
        r#"{"data":{"type":"ping","t":1},"seq":4,"type":"msg"}"#,
        r#"{"type":"msg","seq":4,"data" : { "b" : 1 } }"#,
        r#"{"type":"gap","from":13}"#,
        r#"{"type":"refreshed","exp":1.5}"#,
        r#"{"type":"ack","seq":1,"ack":2}"#,
        r#"{"type":"subscribed","channel":"x","epoch":"e","offset":1,"reason":"lost"}"#,
        r#"{"type":"subscribed","channel":"x","epoch":"e","offset":1,"gap":{"from":1}}"#,
        r#"{"type":"subscribed","channel":"x","offset":1}"#,
        r#"{"type":"subscribed","channel":"x","epoch":"e","offset":1,"recovered":1}"#,
        r#"{"type":"subscribed","channel":"x","epoch":"e","offset":1,"recovered":null}"#,
        r#"{"type":"pub","channel":"x","offset":1}"#,
        r#"{"type":"pub","channel":"x","offset":1,"data":{"a": 1}}"#,
        r#"{"type":"pub","channel":"x","offset":1,"data":1,"info":{"user":"a"}}"#,
        r#"{"type":"pub","channel":"x","offset":"1","data":1}"#,
        r#"{"type":"channel_gap","channel":"x","from":1}"#,
        r#"{"type":"unsubscribed","channel":"x"}"#,
        r#"{"type":"error","code":"bad_channel","message":"x","id":7}"#,
        // Client-only and tab messages are not server messages.
        r#"{"type":"subscribe","channel":"x"}"#,
        r#"{"type":"publish","channel":"x","data":1}"#,
        r#"{"type":"ping","t":1}"#,
        r#"{"type":"burst","count":1}"#,
        r#"{"type":"refresh","token":"x"}"#,
    ];

    #[test]
    fn every_message_decodes_as_the_derived_decoder_decodes_it() {
        for text in VALID {
            assert!(server_message(text).is_ok(), "{text}");
            agree(text);
        }
    }

    #[test]
    fn bad_input_gets_the_derived_decoders_error() {
        for text in ODD {
            agree(text);
        }
    }

    /// A field inside a nested object says both names (`FieldError::Nested`
    /// makes the text only when it is shown).
    #[test]
    fn errors_inside_nested_objects_name_both_fields() {
        let detail = |text: &str| match server_message(text) {
            Err(DecodeError::InvalidFields { detail, .. }) => detail,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            detail(r#"{"type":"presence","channel":"a","clients":[{"user":"u"}]}"#),
            "field `clients`: missing field `client_id`"
        );
        assert_eq!(
            detail(r#"{"type":"presence","channel":"a","clients":[{"client_id":"c","user":1}]}"#),
            // No position: it was the position in the field's own text
            // (see `object`'s module docs).
            "field `clients`: field `user`: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            detail(r#"{"type":"join","channel":"a","info":{"user":"u"}}"#),
            "field `info`: missing field `client_id`"
        );
    }

    /// Every valid message cut short, and with each byte replaced by a few
    /// others: whatever the damage, the two decoders agree (except where
    /// the module doc says they differ, which these edits cannot reach:
    /// they make no array, no lone surrogate, no huge number).
    #[test]
    fn damaged_messages_get_the_derived_decoders_answer() {
        for text in VALID {
            for end in 0..text.len() {
                if let Some(cut) = text.get(..end) {
                    agree(cut);
                }
            }
            for (at, _) in text.char_indices() {
                for with in ["", "\"", ",", "}", "{", ":", " ", "0", "\\", "x", "null"] {
                    let mut damaged = text.to_string();
                    let len = text[at..].chars().next().map_or(0, char::len_utf8);
                    damaged.replace_range(at..at + len, with);
                    agree(&damaged);
                }
            }
        }
    }

    #[test]
    fn the_documented_differences() {
        // Arrays: the derived decoder reads the tag, then the fields in order.
        let array = r#"["pong",1.5]"#;
        assert_eq!(derived(array), Ok(ServerMessage::Pong { t: 1.5 }));
        assert!(matches!(
            server_message(array),
            Err(DecodeError::Malformed(_))
        ));
        // Fields the type does not read are checked for syntax only.
        for text in [
            r#"{"type":"pong","t":1,"x":"\ud800"}"#,
            r#"{"type":"pong","t":1,"x":1e400}"#,
            &format!(
                r#"{{"type":"pong","t":1,"x":{}{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
        ] {
            assert!(
                matches!(derived(text), Err(DecodeError::InvalidFields { .. })),
                "{text}"
            );
            assert_eq!(server_message(text), Ok(ServerMessage::Pong { t: 1.0 }));
        }
        // A `type` that is not a string: its text as sent.
        assert_eq!(
            derived(r#"{"type": 1.50}"#),
            Err(DecodeError::UnknownType("1.5".into()))
        );
        assert_eq!(
            server_message(r#"{"type": 1.50}"#),
            Err(DecodeError::UnknownType("1.50".into()))
        );
    }

    #[test]
    fn resume_failures_decode_by_their_wire_names() {
        assert_eq!(
            server_message(r#"{"type":"resume_failed","reason":"not_first"}"#),
            Ok(ServerMessage::ResumeFailed {
                reason: ResumeFailure::NotFirst
            })
        );
    }
}
