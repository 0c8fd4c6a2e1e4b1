//! Driver rules: token mode (a token before every connect, the in-band
//! refresh ahead of `exp`, 4401 and 4003).

use shared::ErrorCode;
use shared::close_code::{TOKEN_EXPIRED, UNAUTHORIZED};

use super::*;
use crate::ErrorCause;
use crate::token::{AuthError, Token};

/// `now` 0 is this wall-clock time, in epoch milliseconds.
const EPOCH_MS: f64 = 1_000_000_000.0;
/// ... and in seconds.
const EPOCH_S: u64 = 1_000_000;

fn token_config() -> Config {
    config().with_token(|| async { Ok::<_, String>("unused: the glue runs the provider") })
}

fn harness(config: Config) -> Harness {
    let mut h = Harness::new(config);
    h.d.set_wall_clock_offset_ms(EPOCH_MS);
    h
}

/// The serial of the only [`Effect::FetchToken`] among `effects`.
fn fetch(effects: &[Effect]) -> u64 {
    let serials: Vec<u64> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::FetchToken { serial } => Some(*serial),
            _ => None,
        })
        .collect();
    assert_eq!(serials.len(), 1, "one fetch in {effects:?}");
    serials[0]
}

fn opens(effects: &[Effect]) -> Vec<(u64, Option<Token>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::OpenSocket {
                generation, token, ..
            } => Some((*generation, token.clone())),
            _ => None,
        })
        .collect()
}

fn fetched(h: &mut Harness, serial: u64, result: Result<&str, &str>) -> Vec<Effect> {
    let result = result.map(Token::new).map_err(ErrorCause::from);
    h.input(Input::TokenFetched { serial, result })
}

/// Starts, gets token `t1`, opens.
fn token_open(config: Config) -> Harness {
    let mut h = harness(config);
    let serial = fetch(&h.start());
    fetched(&mut h, serial, Ok("t1"));
    h.opened();
    h
}

fn token_welcome(exp: u64) -> ServerMessage {
    ServerMessage::Welcome {
        client_id: "c".into(),
        push_interval_ms: 0,
        session: None,
        token: None,
        protocol: shared::PROTOCOL_VERSION,
        exp: Some(exp),
    }
}

fn close_with(h: &mut Harness, code: u16, reason: &str) -> Vec<Effect> {
    let generation = h.generation();
    h.input(Input::Closed {
        generation,
        code,
        reason: reason.into(),
        was_clean: true,
    })
}

#[test]
fn each_connect_fetches_a_token_first_and_opens_with_it() {
    let mut h = harness(token_config().with_connect_timeout_ms(3000));
    let effects = h.start();
    let serial = fetch(&effects);
    assert!(opens(&effects).is_empty(), "no socket before the token");
    // The connect timeout covers the fetch.
    assert_eq!(h.delay(TimerKind::ConnectTimeout), Some(3000));
    let effects = fetched(&mut h, serial, Ok("t1"));
    assert_eq!(opens(&effects), [(1, Some(Token::new("t1")))]);
    h.opened();
    assert_eq!(h.d.state(), State::Open);
    // A lost connection: the retry fetches a new token before it opens.
    h.closed(ABNORMAL);
    assert!(h.effects().is_empty());
    let effects = h.fire(TimerKind::Retry);
    let serial = fetch(&effects);
    assert!(opens(&effects).is_empty());
    let effects = fetched(&mut h, serial, Ok("t2"));
    assert_eq!(opens(&effects)[0].1, Some(Token::new("t2")));
}

#[test]
fn without_a_provider_the_socket_opens_at_once_without_a_token() {
    let mut h = harness(config());
    let effects = h.start();
    assert_eq!(opens(&effects), [(1, None)]);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::FetchToken { .. }))
    );
}

#[test]
fn a_provider_failure_is_reported_and_retried_with_the_backoff() {
    let mut h = harness(token_config());
    let serial = fetch(&h.start());
    let effects = fetched(&mut h, serial, Err("no session cookie"));
    let events = events(&effects);
    assert_eq!(
        events[0],
        Event::Auth(AuthError::Provider("no session cookie".into()))
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Close(CloseInfo { code: ABNORMAL, reason, .. }) if reason == "token provider failed"
    )));
    assert!(opens(&effects).is_empty());
    // No tight loop: nothing until the backoff's timer fires.
    assert_eq!(
        h.d.state(),
        State::Reconnecting {
            attempt: 1,
            delay_ms: Some(1000)
        }
    );
    assert_eq!(h.delay(TimerKind::Retry), Some(1000));
    let serial = fetch(&h.fire(TimerKind::Retry));
    fetched(&mut h, serial, Err("still none"));
    // The delay grows like any failed attempt's.
    assert_eq!(h.delay(TimerKind::Retry), Some(2000));
}

#[test]
fn a_provider_that_hangs_fails_the_attempt_at_the_connect_timeout_and_its_late_token_is_ignored() {
    let mut h = harness(token_config().with_connect_timeout_ms(500));
    let serial = fetch(&h.start());
    h.fire(TimerKind::ConnectTimeout);
    assert!(matches!(h.d.state(), State::Reconnecting { .. }));
    // The first fetch answers late: no socket for it.
    let effects = fetched(&mut h, serial, Ok("late"));
    assert!(effects.is_empty(), "{effects:?}");
    let next = fetch(&h.fire(TimerKind::Retry));
    assert_ne!(next, serial);
    // A stale serial is ignored while the new fetch runs, too.
    assert!(fetched(&mut h, serial, Ok("late")).is_empty());
    assert_eq!(opens(&fetched(&mut h, next, Ok("t2"))).len(), 1);
}

#[test]
fn a_close_4401_without_a_provider_stops_and_reports() {
    let mut h = harness(config()).open();
    let effects = close_with(&mut h, UNAUTHORIZED, "missing token");
    assert_eq!(h.d.state(), State::Closed);
    assert!(has(&effects, &Effect::DropSocket));
    assert_eq!(h.delay(TimerKind::Retry), None);
    assert_eq!(
        events(&effects),
        [
            Event::Close(CloseInfo {
                url: OPENED.into(),
                code: UNAUTHORIZED,
                reason: "missing token".into(),
                was_clean: true
            }),
            Event::Auth(AuthError::Unauthorized {
                reason: "missing token".into(),
                retrying: false
            }),
            Event::StateChanged(State::Closed),
        ]
    );
    // reconnect() still works: the application may have fixed it.
    h.d.reconnect(h.now);
    assert!(matches!(h.d.state(), State::Connecting { .. }));
}

#[test]
fn a_close_4401_with_a_provider_fetches_a_new_token_after_the_backoff() {
    let mut h = token_open(token_config());
    let effects = close_with(&mut h, UNAUTHORIZED, "invalid token");
    assert!(
        events(&effects).contains(&Event::Auth(AuthError::Unauthorized {
            reason: "invalid token".into(),
            retrying: true
        }))
    );
    assert_eq!(h.delay(TimerKind::Retry), Some(1000));
    let serial = fetch(&h.fire(TimerKind::Retry));
    let effects = fetched(&mut h, serial, Ok("t2"));
    assert_eq!(opens(&effects)[0].1, Some(Token::new("t2")));
    // Refused again at once: the backoff grows, no tight loop.
    h.opened();
    close_with(&mut h, UNAUTHORIZED, "invalid token");
    assert_eq!(h.delay(TimerKind::Retry), Some(2000));
}

#[test]
fn a_close_4003_reconnects_with_a_new_token_and_resumes_in_reliable_mode() {
    let mut h = token_open(token_config().with_reliable(true));
    h.receive_server(&welcome("s1"));
    h.send("a").unwrap();
    h.effects();
    let effects = close_with(&mut h, TOKEN_EXPIRED, "token expired");
    assert!(matches!(h.d.state(), State::Reconnecting { .. }));
    assert!(
        !events(&effects).iter().any(|e| matches!(e, Event::Auth(_))),
        "an expiry is no refusal"
    );
    let serial = fetch(&h.fire(TimerKind::Retry));
    let effects = fetched(&mut h, serial, Ok("t2"));
    assert_eq!(opens(&effects)[0].1, Some(Token::new("t2")));
    let effects = h.opened();
    assert!(matches!(
        client(&writes(&effects))[..],
        [ClientMessage::Resume { ref session, last_seq: 0, .. }] if session == "s1"
    ));
    h.receive_server(&welcome("s2"));
    let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 0 });
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "a".into()
        }]
    );
}

#[test]
fn the_welcome_exp_schedules_a_refresh_that_goes_out_unnumbered() {
    let mut h = token_open(token_config().with_reliable(true));
    // 20 s left: refresh after 15 s (5 s before exp).
    h.receive_server(&ServerMessage::Welcome {
        client_id: "c".into(),
        push_interval_ms: 0,
        session: Some("s1".into()),
        token: Some("s1-token".into()),
        protocol: shared::PROTOCOL_VERSION,
        exp: Some(EPOCH_S + 20),
    });
    assert_eq!(h.delay(TimerKind::Refresh), Some(15_000));
    h.send("a").unwrap();
    h.effects();
    let queued = h.d.queue_len();
    let sent = h.d.stats(h.now);
    let serial = fetch(&h.fire(TimerKind::Refresh));
    let effects = fetched(&mut h, serial, Ok("t2"));
    // A plain refresh frame, not a `msg`: no seq, no queue, no unacked.
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Refresh { token: "t2".into() }]
    );
    assert!(matches!(
        effects[..],
        [Effect::Write {
            hand_back: false,
            ..
        }]
    ));
    let after = h.d.stats(h.now);
    assert_eq!(after.unacked, sent.unacked);
    assert_eq!(h.d.queue_len(), queued);
    // The next application message keeps its numbering.
    h.send("b").unwrap();
    assert_eq!(
        client(&writes(&h.effects())),
        [ClientMessage::Msg {
            seq: 2,
            data: "b".into()
        }]
    );
    // Refreshed: reported, and the next refresh is scheduled from the new exp.
    let exp = EPOCH_S + 15 + 3600;
    let effects = h.receive_server(&ServerMessage::Refreshed { exp });
    assert!(events(&effects).contains(&Event::TokenRefreshed { exp }));
    assert_eq!(h.delay(TimerKind::Refresh), Some(2_880_000));
}

#[test]
fn a_refused_refresh_is_reported_and_the_connection_goes_on_until_4003() {
    let mut h = token_open(token_config());
    h.receive_server(&token_welcome(EPOCH_S + 10));
    let serial = fetch(&h.fire(TimerKind::Refresh));
    fetched(&mut h, serial, Ok("other user's"));
    let effects = h.receive_server(&ServerMessage::Error {
        code: ErrorCode::BadToken,
        message: "the token is for another user".into(),
        channel: None,
        id: None,
    });
    // The message is delivered, then reported.
    let events = events(&effects);
    assert!(matches!(events[0], Event::Message(_)));
    assert_eq!(
        events[1],
        Event::Auth(AuthError::RefreshRefused(
            "the token is for another user".into()
        ))
    );
    assert_eq!(h.d.state(), State::Open);
    assert_eq!(h.delay(TimerKind::Refresh), None);
    close_with(&mut h, TOKEN_EXPIRED, "token expired");
    assert!(matches!(h.d.state(), State::Reconnecting { .. }));
}

#[test]
fn a_rate_limited_refresh_is_reported_and_tried_again_after_the_interval_while_before_exp() {
    let mut h = token_open(token_config());
    h.receive_server(&token_welcome(EPOCH_S + 60));
    let serial = fetch(&h.fire(TimerKind::Refresh));
    fetched(&mut h, serial, Ok("t2"));
    let limited = || ServerMessage::Error {
        code: ErrorCode::RateLimited,
        message: "one refresh per 5s at most".into(),
        channel: None,
        id: None,
    };
    let effects = h.receive_server(&limited());
    assert_eq!(
        events(&effects)[1],
        Event::Auth(AuthError::RefreshRefused(
            "one refresh per 5s at most".into()
        ))
    );
    assert_eq!(h.d.state(), State::Open);
    assert_eq!(h.delay(TimerKind::Refresh), Some(5_000));
    // Tried again: a fetch, then the refresh written.
    let serial = fetch(&h.fire(TimerKind::Refresh));
    let effects = fetched(&mut h, serial, Ok("t3"));
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Refresh { token: "t3".into() }]
    );
    // Too close to exp for another try: the 4003 reconnect takes over.
    h.now = 55_000.0;
    h.receive_server(&limited());
    assert_eq!(h.delay(TimerKind::Refresh), None);
}

#[test]
fn a_provider_failure_before_a_refresh_retries_after_the_backoff_while_before_exp() {
    let mut h = token_open(token_config());
    h.receive_server(&token_welcome(EPOCH_S + 10));
    let serial = fetch(&h.fire(TimerKind::Refresh));
    assert_eq!(h.now, 5000.0);
    let effects = fetched(&mut h, serial, Err("offline"));
    assert_eq!(
        events(&effects),
        [Event::Auth(AuthError::Provider("offline".into()))]
    );
    assert!(writes(&effects).is_empty());
    assert_eq!(h.delay(TimerKind::Refresh), Some(1000));
    let serial = fetch(&h.fire(TimerKind::Refresh));
    fetched(&mut h, serial, Err("offline"));
    assert_eq!(h.delay(TimerKind::Refresh), Some(2000));
    // Past what is left before exp (4 s at 6 s): no retry; the 4003 reconnect takes over.
    let serial = fetch(&h.fire(TimerKind::Refresh));
    h.now = 9500.0;
    fetched(&mut h, serial, Err("offline"));
    assert_eq!(h.delay(TimerKind::Refresh), None);
    assert_eq!(h.d.state(), State::Open);
}

#[test]
fn a_close_stops_the_refresh_and_a_late_token_is_not_written() {
    let mut h = token_open(token_config());
    h.receive_server(&token_welcome(EPOCH_S + 10));
    let serial = fetch(&h.fire(TimerKind::Refresh));
    h.closed(ABNORMAL);
    assert_eq!(h.delay(TimerKind::Refresh), None);
    assert!(fetched(&mut h, serial, Ok("t2")).is_empty());
    // A welcome without exp (a server not in token mode) schedules nothing.
    let serial = fetch(&h.fire(TimerKind::Retry));
    fetched(&mut h, serial, Ok("t3"));
    h.opened();
    h.receive_server(&welcome("x"));
    assert_eq!(h.delay(TimerKind::Refresh), None);
}

#[test]
fn without_a_provider_an_exp_schedules_nothing() {
    let mut h = harness(config()).open();
    let effects = h.receive_server(&token_welcome(EPOCH_S + 10));
    assert_eq!(h.delay(TimerKind::Refresh), None);
    assert_eq!(events(&effects).len(), 1);
}

#[test]
fn tokens_never_show_in_the_effects_debug_output() {
    let mut h = harness(token_config());
    let serial = fetch(&h.start());
    let effects = fetched(&mut h, serial, Ok("s3cr3t.jwt"));
    let input = Input::TokenFetched {
        serial,
        result: Ok(Token::new("s3cr3t.jwt")),
    };
    let printed = format!("{effects:?} {input:?} {:?}", h.d.config());
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn in_token_mode_nothing_of_the_application_goes_out_before_the_welcome() {
    let mut h = harness(token_config());
    let serial = fetch(&h.start());
    assert_eq!(h.send("a"), Ok(SendOutcome::Queued));
    fetched(&mut h, serial, Ok("bad"));
    let effects = h.opened();
    assert_eq!(h.d.state(), State::Open);
    assert!(writes(&effects).is_empty(), "{effects:?}");
    assert!(!events(&effects).contains(&Event::Open));
    assert_eq!(h.send("b"), Ok(SendOutcome::Queued));
    // Refused before the welcome: both stay queued for the next connection.
    close_with(&mut h, UNAUTHORIZED, "invalid token");
    assert_eq!(h.d.queue_len(), 2);
    let serial = fetch(&h.fire(TimerKind::Retry));
    fetched(&mut h, serial, Ok("good"));
    h.opened();
    let effects = h.receive_server(&token_welcome(EPOCH_S + 600));
    assert_eq!(writes(&effects), [text("a"), text("b")]);
    let events = events(&effects);
    assert!(matches!(events[0], Event::Message(_)), "the welcome first");
    assert_eq!(events.last(), Some(&Event::Open));
    assert_eq!(h.send("c"), Ok(SendOutcome::Sent));
}

#[test]
fn in_reliable_token_mode_the_session_starts_at_once_and_messages_follow_the_welcome() {
    let mut h = harness(token_config().with_reliable(true));
    let serial = fetch(&h.start());
    h.send("a").unwrap();
    fetched(&mut h, serial, Ok("t1"));
    let effects = h.opened();
    // The session's first message is the connection's, not the application's.
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 0 }]);
    let effects = h.receive_server(&welcome("s1"));
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "a".into()
        }]
    );
}
