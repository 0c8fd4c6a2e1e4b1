//! The application behind `/ws`: what a request is answered with. One
//! function for both modes and for a request at the top level or inside a
//! reliable `msg`; only the delivery of its answer (direct, or numbered in a
//! session) depends on the mode.

use shared::{ClientMessage, ErrorCode, ServerMessage};

/// The answer to one request.
#[derive(Debug, PartialEq)]
pub(crate) enum Served {
    /// A message in reply.
    Reply(ServerMessage),
    /// A burst of this many pushes, then `burst_done`.
    Burst(u32),
}

/// Answers `request`; bursts over `max_burst` are refused.
pub(super) fn serve(request: ClientMessage, max_burst: u32) -> Served {
    match request {
        ClientMessage::Echo { id, body } => Served::Reply(ServerMessage::Echo { id, body }),
        ClientMessage::Ping { t } => Served::Reply(ServerMessage::Pong { t }),
        ClientMessage::Burst { count } if count > max_burst => Served::Reply(error(
            ErrorCode::BurstTooLarge,
            format!("a burst may have at most {max_burst} messages, not {count}"),
        )),
        ClientMessage::Burst { count } => Served::Burst(count),
        // At the top level these are the connection's, never the
        // application's: only one nested in a `msg` gets here. The rule: a
        // message gets inside a `msg` what it gets at the top level,
        // numbered, except for these control messages.
        ClientMessage::Resume { .. }
        | ClientMessage::Ack { .. }
        | ClientMessage::Msg { .. }
        | ClientMessage::Refresh { .. } => Served::Reply(error(
            ErrorCode::NotReliable,
            "resume, ack, msg and refresh belong to the connection: send them outside a msg".into(),
        )),
        _ => Served::Reply(unknown_type()),
    }
}

/// An `error` message.
pub(super) fn error(code: ErrorCode, message: String) -> ServerMessage {
    ServerMessage::Error {
        code,
        message,
        channel: None,
        id: None,
    }
}

pub(super) fn unknown_type() -> ServerMessage {
    error(
        ErrorCode::UnknownType,
        "this message type is not handled by the server".into(),
    )
}

/// The refusal of a burst beyond the connection's (or session's) pending
/// ones: one in progress and one waiting.
pub(super) fn burst_busy() -> ServerMessage {
    error(
        ErrorCode::BurstBusy,
        "a burst is in progress and another waits: this one was not started; \
         wait for a burst_done"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_gets_its_answer() {
        let echo = ClientMessage::Echo {
            id: 3,
            body: "b".into(),
        };
        let reply = ServerMessage::Echo {
            id: 3,
            body: "b".into(),
        };
        assert_eq!(serve(echo, 10), Served::Reply(reply));
        assert_eq!(
            serve(ClientMessage::Ping { t: 2.0 }, 10),
            Served::Reply(ServerMessage::Pong { t: 2.0 })
        );
        assert_eq!(
            serve(ClientMessage::Burst { count: 10 }, 10),
            Served::Burst(10)
        );
        let Served::Reply(ServerMessage::Error { code, .. }) =
            serve(ClientMessage::Burst { count: 11 }, 10)
        else {
            panic!("a burst over the limit is refused")
        };
        assert_eq!(code, ErrorCode::BurstTooLarge);
        let controls = [
            ClientMessage::Ack { seq: 1 },
            ClientMessage::Msg {
                seq: 1,
                data: "{}".into(),
            },
            ClientMessage::Resume {
                session: "s".into(),
                token: "t".into(),
                last_seq: 0,
            },
            ClientMessage::Refresh { token: "t".into() },
        ];
        for control in controls {
            let Served::Reply(ServerMessage::Error { code, .. }) = serve(control.clone(), 10)
            else {
                panic!("a nested {control:?} is refused")
            };
            assert_eq!(code, ErrorCode::NotReliable);
        }
    }
}
