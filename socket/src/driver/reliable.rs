//! Reliable mode, client side: the unacknowledged window, the exactly-once
//! filter for server messages, and the resume handshake of the `shared`
//! protocol (see its "Reliable mode" section).
//!
//! Pure state, no browser: the web layer asks [`Reliable::on_open`] for the
//! first message of each connection, [`Reliable::number`]s each application
//! text it writes, passes every text it receives through
//! [`Reliable::on_text`], and sends [`Reliable::take_ack`] when
//! [`Reliable::ack_now`] says so or its ack timer fires. Native code (the
//! fault-injection test, a native client) drives it the same way.
//!
//! The guarantee, and its bounds:
//! * every message written is kept until the server acknowledges it, and
//!   resent after a resume, in order, before anything new; the server
//!   processes each seq once, so a resend is never processed twice;
//! * every server message is delivered to the application once, in order,
//!   across reconnects;
//! * when that cannot hold it says so: a `resume_failed` (session expired,
//!   server restarted) hands the unacknowledged messages back
//!   ([`Incoming::ResumeFailed`]) and a `gap` names the server messages lost
//!   ([`Incoming::Gap`]).

use std::collections::VecDeque;

use shared::{ClientMessage, Protocol, ServerMessage};

/// Acknowledge after this many server messages, or when the ack timer fires.
pub const ACK_EVERY: u64 = 32;
/// How long after an unacknowledged server message the ack timer fires.
pub const ACK_DELAY_MS: u32 = 50;

/// A session's id and token, from a `welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    id: String,
    token: String,
}

/// Where the current connection is in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection, or the first message is not sent yet.
    Closed,
    /// `resume` sent; new messages wait for the answer (resends go first).
    Resuming,
    /// New messages may be written.
    Ready,
}

/// What [`Reliable::on_text`] made of a text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// An application message, unwrapped from its envelope (or an unnumbered
    /// one such as `welcome` or `pong`): deliver it.
    Deliver(String),
    /// Nothing for the application (an ack, or a message delivered before).
    Consumed,
    /// The session continues: write these frames, in order, then flush the queue.
    Resumed {
        /// The unacknowledged messages, re-enveloped with their seqs.
        resend: Vec<String>,
    },
    /// The session could not continue; the connection goes on with a new one.
    /// The messages sent but never acknowledged may or may not have been
    /// processed: they are handed back, not resent. Then flush the queue.
    ResumeFailed {
        /// The server's reason.
        reason: shared::ResumeFailure,
        /// The unacknowledged application texts, oldest first.
        unconfirmed: Vec<String>,
    },
    /// Server messages `from..=to` were lost.
    Gap {
        /// The first lost seq.
        from: u64,
        /// The last lost seq.
        to: u64,
    },
    /// A message arrived past a hole the server did not announce: report the
    /// loss of `from..=to`, then deliver `data` (a server bug, never silent).
    GapThen {
        /// The first lost seq.
        from: u64,
        /// The last lost seq.
        to: u64,
        /// The application message that followed the hole.
        data: String,
    },
}

/// The client side of one reliable session (it outlives connections).
#[derive(Debug, Clone)]
pub struct Reliable {
    session: Option<Credentials>,
    /// The session the current connection's welcome offered.
    offered: Option<Credentials>,
    phase: Phase,
    /// The seq of the last client message numbered.
    last_out: u64,
    /// Written, not yet acknowledged: (seq, text).
    unacked: VecDeque<(u64, String)>,
    unacked_bytes: usize,
    /// The last server seq processed.
    last_in: u64,
    /// The last server seq acknowledged.
    acked_in: u64,
    /// Client messages the server acknowledged, over all sessions.
    acked_total: u64,
    /// Server messages delivered, over all sessions.
    delivered_total: u64,
    /// Unacknowledged messages of a session never named, to report.
    orphans: Vec<String>,
    /// How the current connection frames a `msg`: version 1 until its
    /// `welcome` names another (the wrapper asks for the newest with
    /// `?protocol=`; a server older than that answers 1 or nothing, and a
    /// version-2 server reads version-1 frames too, so what is written
    /// before the welcome is always understood).
    protocol: Protocol,
}

impl Default for Reliable {
    fn default() -> Self {
        Self::new()
    }
}

impl Reliable {
    /// No session yet: the first connection starts one.
    pub fn new() -> Self {
        Self {
            session: None,
            offered: None,
            phase: Phase::Closed,
            last_out: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            last_in: 0,
            acked_in: 0,
            acked_total: 0,
            delivered_total: 0,
            orphans: Vec::new(),
            protocol: Protocol::V1,
        }
    }

    /// The window another client of the same session left (issue 15: a new
    /// leader tab carries on the connection of the one that left). Session
    /// `id` with its resume `token`; `last_in`, the last server seq
    /// delivered; `unacked`, the texts written (or about to be) and not
    /// acknowledged, the first numbered `acked_seq + 1`, in order. The next
    /// [`Reliable::on_open`] resumes from `last_in` and, once `resumed`,
    /// resends them with those seqs: the server processes none twice.
    pub fn restored(
        id: String,
        token: String,
        last_in: u64,
        acked_seq: u64,
        unacked: impl IntoIterator<Item = String>,
    ) -> Self {
        let unacked: VecDeque<(u64, String)> = (acked_seq + 1..).zip(unacked).collect();
        Self {
            session: Some(Credentials { id, token }),
            last_out: acked_seq + unacked.len() as u64,
            unacked_bytes: unacked.iter().map(|(_, text)| text.len()).sum(),
            unacked,
            last_in,
            // The `resume` tells the server what was processed.
            acked_in: last_in,
            ..Self::new()
        }
    }

    /// The first message of a new connection: `resume` when there is a
    /// session to continue, else `ack` 0 (which starts the offered one).
    ///
    /// Messages written on a connection that died before a `welcome` named
    /// the session cannot be resumed: they are set aside for
    /// [`Reliable::take_orphans`] and numbering starts again. (The driver
    /// numbers nothing before a `welcome`, so only a server whose welcome
    /// names no session leaves orphans.)
    pub fn on_open(&mut self) -> String {
        self.offered = None;
        self.protocol = Protocol::V1;
        if self.session.is_none() && (self.last_out > 0 || self.last_in > 0) {
            self.orphans
                .extend(self.unacked.drain(..).map(|(_, text)| text));
            self.unacked_bytes = 0;
            self.last_out = 0;
            self.last_in = 0;
            self.acked_in = 0;
        }
        match &self.session {
            Some(session) => {
                self.phase = Phase::Resuming;
                ClientMessage::Resume {
                    session: session.id.clone(),
                    token: session.token.clone(),
                    last_seq: self.last_in,
                }
                .to_json()
            }
            None => {
                self.phase = Phase::Ready;
                ClientMessage::Ack { seq: 0 }.to_json()
            }
        }
    }

    /// Messages sent under a session that was never named (see
    /// [`Reliable::on_open`]): like a failed resume's, they may or may not
    /// have been processed. Report them.
    pub fn take_orphans(&mut self) -> Vec<String> {
        std::mem::take(&mut self.orphans)
    }

    /// The connection closed.
    pub fn on_close(&mut self) {
        self.phase = Phase::Closed;
    }

    /// The protocol version the current connection frames its `msg`s in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether new messages may be written now (open, and not waiting for
    /// the answer to a `resume`).
    pub fn ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Numbers `text`, keeps it until acknowledged, and returns its envelope
    /// to write.
    pub fn number(&mut self, text: String) -> String {
        self.last_out += 1;
        let envelope = shared::encode_msg(self.last_out, &text, self.protocol);
        self.unacked_bytes += text.len();
        self.unacked.push_back((self.last_out, text));
        envelope
    }

    /// Messages written and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Their bytes (as the queue's byte limit counts them).
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Client messages the server acknowledged, over the wrapper's life.
    pub fn acked_total(&self) -> u64 {
        self.acked_total
    }

    /// Server messages delivered exactly once, over the wrapper's life.
    pub fn delivered_total(&self) -> u64 {
        self.delivered_total
    }

    /// The session id, once the server offered one.
    pub fn session(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.id.as_str())
    }

    /// The session id and its resume token (what another client needs to
    /// carry on: [`Reliable::restored`]).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.session
            .as_ref()
            .map(|s| (s.id.as_str(), s.token.as_str()))
    }

    /// The last server seq processed: after a text delivered by
    /// [`Reliable::on_text`], that message's seq.
    pub fn last_in(&self) -> u64 {
        self.last_in
    }

    fn release(&mut self, seq: u64) {
        while let Some((front, text)) = self.unacked.front() {
            if *front > seq {
                break;
            }
            self.unacked_bytes -= text.len();
            self.acked_total += 1;
            self.unacked.pop_front();
        }
    }

    /// Whether enough server messages wait for an ack to send one now.
    pub fn ack_now(&self) -> bool {
        self.last_in - self.acked_in >= ACK_EVERY
    }

    /// Whether any server message waits for an ack (arm the timer).
    pub fn ack_pending(&self) -> bool {
        self.last_in > self.acked_in
    }

    /// The cumulative ack to send, if one is due.
    pub fn take_ack(&mut self) -> Option<String> {
        self.ack_pending().then(|| {
            self.acked_in = self.last_in;
            ClientMessage::Ack { seq: self.last_in }.to_json()
        })
    }

    /// Handles one received text frame.
    pub fn on_text(&mut self, text: String) -> Incoming {
        // Only the connection's own messages are decoded here; the others
        // are not ours to judge: the application sees them as they came.
        let Some(message) = ServerMessage::control_if_any(&text) else {
            return Incoming::Deliver(text);
        };
        match message {
            ServerMessage::Welcome {
                session: Some(id),
                token: Some(token),
                protocol,
                ..
            } => {
                self.protocol = Protocol::from_number(protocol);
                let offered = Credentials { id, token };
                if self.session.is_none() {
                    self.session = Some(offered);
                } else {
                    self.offered = Some(offered);
                }
                Incoming::Deliver(text)
            }
            ServerMessage::Msg { seq, data } => {
                if seq <= self.last_in {
                    return Incoming::Consumed;
                }
                let skipped = (seq > self.last_in + 1).then_some((self.last_in + 1, seq - 1));
                self.last_in = seq;
                self.delivered_total += 1;
                match skipped {
                    // The server skipped without a `gap`: a loss all the same.
                    Some((from, to)) => Incoming::GapThen { from, to, data },
                    None => Incoming::Deliver(data),
                }
            }
            ServerMessage::Ack { seq } => {
                self.release(seq);
                Incoming::Consumed
            }
            ServerMessage::Resumed { last_seq } => {
                self.release(last_seq);
                self.phase = Phase::Ready;
                let resend = self
                    .unacked
                    .iter()
                    .map(|(seq, data)| shared::encode_msg(*seq, data, self.protocol))
                    .collect();
                Incoming::Resumed { resend }
            }
            ServerMessage::ResumeFailed { reason } => {
                // A new session: the one this connection's welcome offered.
                self.session = self.offered.take();
                self.phase = Phase::Ready;
                self.last_out = 0;
                self.last_in = 0;
                self.acked_in = 0;
                self.unacked_bytes = 0;
                let unconfirmed = self.unacked.drain(..).map(|(_, text)| text).collect();
                Incoming::ResumeFailed {
                    reason,
                    unconfirmed,
                }
            }
            ServerMessage::Gap { from, to } => {
                self.last_in = self.last_in.max(to);
                Incoming::Gap { from, to }
            }
            _ => Incoming::Deliver(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(message: &ServerMessage) -> String {
        message.to_json()
    }

    fn welcome(session: &str) -> String {
        welcome_in(session, shared::PROTOCOL_VERSION)
    }

    /// The welcome of a server speaking version `protocol` with us.
    fn welcome_in(session: &str, protocol: u32) -> String {
        server(&ServerMessage::Welcome {
            client_id: "c".into(),
            push_interval_ms: 0,
            session: Some(session.into()),
            token: Some(format!("{session}-token")),
            protocol,
            exp: None,
        })
    }

    fn msg(seq: u64, data: &str) -> String {
        server(&ServerMessage::Msg {
            seq,
            data: data.into(),
        })
    }

    fn seqs(frames: &[String]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| match ClientMessage::from_json(f).unwrap() {
                ClientMessage::Msg { seq, .. } => seq,
                other => panic!("not a msg: {other:?}"),
            })
            .collect()
    }

    /// A reliable client on its first connection, with session `s1`.
    fn started() -> Reliable {
        let mut r = Reliable::new();
        assert_eq!(r.on_open(), r#"{"type":"ack","seq":0}"#);
        assert!(r.ready());
        assert!(matches!(r.on_text(welcome("s1")), Incoming::Deliver(_)));
        assert_eq!(r.session(), Some("s1"));
        r
    }

    #[test]
    fn msgs_are_framed_in_the_version_the_welcome_names() {
        let ping = |t: u32| format!(r#"{{"type":"ping","t":{t}}}"#);
        let mut r = Reliable::new();
        r.on_open();
        // Before the welcome: version 1, which every server reads.
        assert_eq!(r.protocol(), Protocol::V1);
        assert_eq!(
            r.number(ping(1)),
            r#"{"type":"msg","seq":1,"data":"{\"type\":\"ping\",\"t\":1}"}"#
        );
        assert!(matches!(r.on_text(welcome("s1")), Incoming::Deliver(_)));
        assert_eq!(r.protocol(), Protocol::V2);
        assert_eq!(
            r.number(ping(2)),
            r#"{"type":"msg","seq":2,"data":{"type":"ping","t":2}}"#
        );
        assert_eq!(
            r.number("hi".into()),
            r#"{"type":"msg","seq":3,"data":"hi"}"#
        );
        // Both forms deliver the application's text as it was sent.
        let pong = r#"{"type":"pong","t":1}"#;
        let embedded = format!(r#"{{"type":"msg","seq":1,"data":{pong}}}"#);
        assert_eq!(r.on_text(embedded), Incoming::Deliver(pong.into()));
        assert_eq!(r.on_text(msg(2, pong)), Incoming::Deliver(pong.into()));
        // Reconnected to a server that speaks version 1 (an older node
        // during a deploy): the resend is framed in version 1.
        r.on_close();
        assert!(r.on_open().starts_with(r#"{"type":"resume""#));
        assert_eq!(r.protocol(), Protocol::V1);
        r.on_text(welcome_in("s2", 1));
        let Incoming::Resumed { resend } =
            r.on_text(server(&ServerMessage::Resumed { last_seq: 1 }))
        else {
            panic!("resumed")
        };
        assert_eq!(
            resend,
            [
                r#"{"type":"msg","seq":2,"data":"{\"type\":\"ping\",\"t\":2}"}"#,
                r#"{"type":"msg","seq":3,"data":"hi"}"#
            ]
        );
        // And a server older than versions (no `protocol`): version 1.
        r.on_close();
        r.on_open();
        r.on_text(welcome_in("s3", 0));
        assert_eq!(r.protocol(), Protocol::V1);
    }

    #[test]
    fn the_window_keeps_what_is_unacknowledged_and_acks_release_it() {
        let mut r = started();
        let frames: Vec<String> = (1..=5).map(|n| r.number(format!("m{n}"))).collect();
        assert_eq!(seqs(&frames), [1, 2, 3, 4, 5]);
        assert_eq!(r.unacked(), 5);
        assert_eq!(r.unacked_bytes(), 10);
        assert_eq!(
            r.on_text(server(&ServerMessage::Ack { seq: 3 })),
            Incoming::Consumed
        );
        assert_eq!(r.unacked(), 2);
        assert_eq!(r.acked_total(), 3);
        // A stale ack changes nothing.
        r.on_text(server(&ServerMessage::Ack { seq: 1 }));
        assert_eq!(r.unacked(), 2);
    }

    #[test]
    fn resume_resends_the_unacknowledged_in_order_before_anything_new() {
        let mut r = started();
        for n in 1..=4 {
            r.number(format!("m{n}"));
        }
        r.on_text(msg(1, "a"));
        r.on_text(msg(2, "b"));
        r.on_close();
        assert!(!r.ready());
        let resume = r.on_open();
        assert_eq!(
            resume,
            r#"{"type":"resume","session":"s1","token":"s1-token","last_seq":2}"#
        );
        assert!(!r.ready(), "new messages wait for the answer");
        // This connection's welcome offers another session; it is kept aside.
        r.on_text(welcome("s2"));
        let Incoming::Resumed { resend } =
            r.on_text(server(&ServerMessage::Resumed { last_seq: 2 }))
        else {
            panic!("not resumed")
        };
        assert_eq!(seqs(&resend), [3, 4]);
        assert!(r.ready());
        assert_eq!(r.session(), Some("s1"));
        // New messages carry on after the resent ones.
        assert_eq!(seqs(&[r.number("m5".into())]), [5]);
    }

    #[test]
    fn server_messages_are_delivered_once_and_in_order() {
        let mut r = started();
        assert_eq!(r.on_text(msg(1, "a")), Incoming::Deliver("a".into()));
        // A replay after a resume repeats what was delivered: skipped.
        assert_eq!(r.on_text(msg(1, "a")), Incoming::Consumed);
        assert_eq!(r.on_text(msg(2, "b")), Incoming::Deliver("b".into()));
        assert_eq!(r.delivered_total(), 2);
        // Unnumbered messages pass through.
        let pong = server(&ServerMessage::Pong { t: 1.0 });
        assert_eq!(r.on_text(pong.clone()), Incoming::Deliver(pong));
        assert_eq!(
            r.on_text("not json".into()),
            Incoming::Deliver("not json".into())
        );
    }

    #[test]
    fn acks_are_batched() {
        let mut r = started();
        assert_eq!(r.take_ack(), None);
        for seq in 1..ACK_EVERY {
            r.on_text(msg(seq, "x"));
            assert!(!r.ack_now());
        }
        assert!(r.ack_pending());
        r.on_text(msg(ACK_EVERY, "x"));
        assert!(r.ack_now());
        assert_eq!(
            r.take_ack(),
            Some(format!(r#"{{"type":"ack","seq":{ACK_EVERY}}}"#))
        );
        assert!(!r.ack_pending());
        assert_eq!(r.take_ack(), None);
    }

    #[test]
    fn gaps_are_reported_and_skipped() {
        let mut r = started();
        r.on_text(msg(1, "a"));
        assert_eq!(
            r.on_text(server(&ServerMessage::Gap { from: 2, to: 5 })),
            Incoming::Gap { from: 2, to: 5 }
        );
        assert_eq!(r.on_text(msg(6, "f")), Incoming::Deliver("f".into()));
        // A hole nobody announced is a loss all the same.
        assert_eq!(
            r.on_text(msg(9, "i")),
            Incoming::GapThen {
                from: 7,
                to: 8,
                data: "i".into()
            }
        );
        r.on_close();
        assert!(r.on_open().contains(r#""last_seq":9"#));
    }

    #[test]
    fn a_failed_resume_hands_the_unconfirmed_back_and_starts_the_offered_session() {
        let mut r = started();
        r.number("m1".into());
        r.number("m2".into());
        r.on_text(server(&ServerMessage::Ack { seq: 1 }));
        r.on_text(msg(1, "a"));
        r.on_close();
        r.on_open();
        r.on_text(welcome("s2"));
        let failed = r.on_text(server(&ServerMessage::ResumeFailed {
            reason: shared::ResumeFailure::UnknownSession,
        }));
        assert_eq!(
            failed,
            Incoming::ResumeFailed {
                reason: shared::ResumeFailure::UnknownSession,
                unconfirmed: vec!["m2".into()],
            }
        );
        assert!(r.ready());
        assert_eq!(r.session(), Some("s2"));
        assert_eq!(r.unacked(), 0);
        // The new session numbers from 1 again, both ways.
        assert_eq!(seqs(&[r.number("m3".into())]), [1]);
        assert_eq!(r.on_text(msg(1, "z")), Incoming::Deliver("z".into()));
    }

    #[test]
    fn a_restored_window_resumes_the_session_and_resends_with_the_same_seqs() {
        let mut r = Reliable::restored(
            "s1".into(),
            "s1-token".into(),
            7,
            4,
            ["m5".to_owned(), "m6".to_owned()],
        );
        assert_eq!(r.unacked(), 2);
        assert_eq!(r.unacked_bytes(), 4);
        assert_eq!(r.credentials(), Some(("s1", "s1-token")));
        assert_eq!(r.last_in(), 7);
        assert!(!r.ack_pending(), "the resume carries last_seq");
        assert_eq!(
            r.on_open(),
            r#"{"type":"resume","session":"s1","token":"s1-token","last_seq":7}"#
        );
        assert!(r.take_orphans().is_empty());
        // The server had processed m5 already.
        let Incoming::Resumed { resend } =
            r.on_text(server(&ServerMessage::Resumed { last_seq: 5 }))
        else {
            panic!("not resumed")
        };
        assert_eq!(seqs(&resend), [6]);
        assert_eq!(seqs(&[r.number("m7".into())]), [7]);
        // Server messages carry on after last_in, the replayed ones skipped.
        assert_eq!(r.on_text(msg(7, "old")), Incoming::Consumed);
        assert_eq!(r.on_text(msg(8, "new")), Incoming::Deliver("new".into()));
        assert_eq!(r.last_in(), 8, "the seq of what was just delivered");
    }

    #[test]
    fn messages_of_a_connection_that_died_before_its_welcome_are_reported() {
        let mut r = Reliable::new();
        r.on_open();
        r.number("m1".into());
        r.number("m2".into());
        // No welcome arrived: the session was never named.
        r.on_close();
        assert_eq!(r.on_open(), r#"{"type":"ack","seq":0}"#);
        assert_eq!(r.take_orphans(), ["m1", "m2"]);
        assert!(r.take_orphans().is_empty());
        assert_eq!(r.unacked(), 0);
        // A new session numbers from 1.
        assert_eq!(seqs(&[r.number("m3".into())]), [1]);
    }
}
