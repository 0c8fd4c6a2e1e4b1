//! Token mode's rules ([`crate::Config::with_token`]): a fresh token before
//! every connection attempt, an in-band `refresh` ahead of expiry, and what
//! to do when the server refuses a token.
//!
//! * **Connect.** Each attempt first fetches a token
//!   ([`Effect::FetchToken`]); the socket is opened with it once it comes
//!   ([`Effect::OpenSocket`]'s `token`). The connect timeout covers the
//!   fetch too, so a provider that hangs fails the attempt like a socket
//!   that never opens. A provider error fails the attempt at once
//!   ([`crate::AuthError::Provider`], then a close 1006 "token provider
//!   failed" and the backoff).
//! * **Welcome.** The server completes the upgrade and then refuses a bad
//!   token with 4401, before its `welcome`: so in token mode nothing of
//!   the application (queue, open hook, new sends) goes out until the
//!   `welcome` has come, and a refused connection loses nothing.
//!   [`crate::Event::Open`] comes then too (the state is `Open` at the
//!   socket's open, as always).
//! * **Refresh.** The `welcome` of token mode carries the token's `exp`
//!   (seconds since the epoch). The driver fetches a new token at
//!   [`refresh_delay_ms`] and writes `refresh` un-numbered (never through
//!   the queue or reliable mode's numbering, like the heartbeat's `ping`).
//!   `refreshed` reschedules with its new `exp`
//!   ([`crate::Event::TokenRefreshed`]). `error` `bad_token` is reported
//!   ([`crate::AuthError::RefreshRefused`]) and the connection goes on until
//!   `exp`; then the server closes it with 4003 and the wrapper reconnects
//!   with a new token. `error` `rate_limited` (a refresh sooner than the
//!   server's `--refresh-interval` after the previous one: short tokens
//!   are refreshed often) is reported the same way and the refresh tried
//!   again [`RATE_LIMITED_RETRY_MS`] later, if that is still before `exp`.
//!   A provider error before a refresh is reported and the fetch retried
//!   after the backoff's delay, if that is still before `exp`.
//! * **4401** (refused at connect): with a provider, a new token and a retry
//!   with the backoff (the reconnect policy still decides); without one,
//!   no reconnect: the wrapper reports it and stays closed.
//! * **4003** (expired unrefreshed): the default policy reconnects, with a
//!   new token; reliable mode resumes its session.
//!
//! `exp` is wall-clock time, so the driver turns its `now` into epoch
//! milliseconds with an offset the glue sets
//! ([`Driver::set_wall_clock_offset_ms`]); the server's and the client's
//! clocks may differ by a little, which the margin before `exp` absorbs.

use shared::close_code::UNAUTHORIZED;
use shared::{ClientMessage, ErrorCode, ServerMessage};

use super::machine::Input as Step;
use super::reliable::Reliable;
use super::{Driver, Effect, TimerKind};
use crate::cause::ErrorCause;
use crate::message::{CloseInfo, Event, State};
use crate::token::{AuthError, Token};

/// The refresh comes at this share of the token's remaining lifetime...
pub const REFRESH_AT: f64 = 0.8;
/// ...but at least this long before `exp`...
pub const REFRESH_MARGIN_MS: f64 = 5_000.0;
/// ...and never before this share of it (a token with less than twice the
/// margin left is refreshed at half of what remains).
pub const REFRESH_AT_LEAST: f64 = 0.5;

/// A refresh the server answered `rate_limited` (sooner than its
/// `--refresh-interval` after the previous one, 5 s by default) is tried
/// again this much later, if that is still before `exp`.
pub const RATE_LIMITED_RETRY_MS: f64 = 5_000.0;

/// Milliseconds from `now_epoch_ms` until the refresh of a token that
/// expires at `exp_s` (seconds since the epoch): at [`REFRESH_AT`] of the
/// remaining lifetime, but at least [`REFRESH_MARGIN_MS`] before `exp`, and
/// not before [`REFRESH_AT_LEAST`] of it. For a 1 h token that is after
/// 48 min; for 10 s, after 5 s; for 4 s, after 2 s. `None` when the token
/// has expired already (the server's 4003 follows).
pub fn refresh_delay_ms(exp_s: u64, now_epoch_ms: f64) -> Option<u64> {
    let remaining = exp_s as f64 * 1000.0 - now_epoch_ms;
    if remaining <= 0.0 {
        return None;
    }
    let delay = (remaining * REFRESH_AT)
        .min(remaining - REFRESH_MARGIN_MS)
        .max(remaining * REFRESH_AT_LEAST);
    Some(delay.round() as u64)
}

/// What a fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Connection attempt `generation` waits for it.
    Connect,
    /// Open connection `generation` refreshes with it.
    Refresh,
}

/// The token bookkeeping of a driver in token mode.
#[derive(Debug, Default)]
pub(super) struct Auth {
    next_serial: u64,
    /// The latest fetch: its serial, connection and purpose; any other
    /// result is stale.
    pending: Option<(u64, u64, Purpose)>,
    /// The current connection's token expiry, in seconds since the epoch.
    exp: Option<u64>,
    /// Refresh fetches that failed in a row on this connection.
    refresh_failures: u32,
}

impl Driver {
    /// Token mode: converts the driver's `now` to wall-clock time, epoch
    /// milliseconds = `now + offset_ms`. 0 by default (the browser's `now`
    /// is `Date.now()`); a glue with a monotonic clock sets it once.
    pub fn set_wall_clock_offset_ms(&mut self, offset_ms: f64) {
        self.wall_clock_offset_ms = offset_ms;
    }

    /// Connection attempt `generation` begins: open at once, or in token
    /// mode fetch a token first.
    pub(super) fn begin_connect(&mut self, generation: u64) {
        if let Some(auth) = self.auth.as_mut() {
            auth.next_serial += 1;
            let serial = auth.next_serial;
            auth.pending = Some((serial, generation, Purpose::Connect));
            self.effects.push_back(Effect::FetchToken { serial });
        } else {
            self.open_socket(generation, None);
        }
    }

    pub(super) fn open_socket(&mut self, generation: u64, token: Option<Token>) {
        self.live = Some(generation);
        self.writable = false;
        let url = self.connect_url.clone();
        self.effects.push_back(Effect::OpenSocket {
            generation,
            url,
            token,
        });
    }

    /// [`super::Input::TokenFetched`].
    pub(super) fn token_fetched(
        &mut self,
        serial: u64,
        result: Result<Token, ErrorCause>,
        now: f64,
    ) {
        let Some(auth) = self.auth.as_mut() else {
            return;
        };
        let Some((_, generation, purpose)) = auth.pending.filter(|p| p.0 == serial) else {
            return;
        };
        auth.pending = None;
        if generation != self.machine.generation() {
            return;
        }
        let state = self.machine.state();
        match (purpose, result) {
            (Purpose::Connect, Ok(token)) if matches!(state, State::Connecting { .. }) => {
                self.open_socket(generation, Some(token));
            }
            (Purpose::Connect, Err(reason)) if matches!(state, State::Connecting { .. }) => {
                self.events.push(Event::Auth(AuthError::Provider(reason)));
                let reason = "token provider failed";
                self.step(Step::Dead { generation, reason }, now);
            }
            (Purpose::Refresh, Ok(token)) if state == State::Open => {
                auth.refresh_failures = 0;
                let token = token.expose().to_owned();
                self.write_control(ClientMessage::Refresh { token }.to_json());
            }
            (Purpose::Refresh, Err(reason)) if state == State::Open => {
                auth.refresh_failures += 1;
                let attempt = auth.refresh_failures;
                let exp = auth.exp;
                self.events.push(Event::Auth(AuthError::Provider(reason)));
                let delay = self.config.backoff.delay_ms(attempt, self.rng.next_unit());
                let remaining = exp.map_or(0.0, |exp| exp as f64 * 1000.0 - self.wall_ms(now));
                if (delay as f64) < remaining {
                    self.start_timer(TimerKind::Refresh, delay);
                }
            }
            _ => {}
        }
    }

    /// The refresh timer of connection `generation` fired: fetch a token.
    pub(super) fn refresh_due(&mut self, generation: u64) {
        if generation != self.machine.generation() || self.machine.state() != State::Open {
            return;
        }
        if let Some(auth) = self.auth.as_mut() {
            auth.next_serial += 1;
            let serial = auth.next_serial;
            auth.pending = Some((serial, generation, Purpose::Refresh));
            self.effects.push_back(Effect::FetchToken { serial });
        }
    }

    /// What a delivered server text means: a `welcome` ends the wait for it
    /// (token mode, a new reliable session); in token mode, for the token
    /// (a `welcome` or `refreshed` with an `exp`, a refused refresh).
    pub(super) fn inspect_welcome_and_auth(&mut self, text: &str, now: f64) {
        if (self.auth.is_none() && !self.awaiting_welcome) || !looks_like_auth(text) {
            return;
        }
        match ServerMessage::control_if_any(text) {
            Some(ServerMessage::Welcome { exp, .. }) => {
                if let Some(exp) = exp
                    && self.auth.is_some()
                {
                    self.expires_at(exp, now);
                }
                self.welcomed();
            }
            _ if self.auth.is_none() => {}
            Some(ServerMessage::Refreshed { exp }) => {
                self.events.push(Event::TokenRefreshed { exp });
                self.expires_at(exp, now);
            }
            Some(ServerMessage::Error {
                code: ErrorCode::BadToken,
                message,
                ..
            }) => self
                .events
                .push(Event::Auth(AuthError::RefreshRefused(message))),
            Some(ServerMessage::Error {
                code: ErrorCode::RateLimited,
                message,
                ..
            }) => {
                self.events
                    .push(Event::Auth(AuthError::RefreshRefused(message)));
                let exp = self.auth.as_ref().and_then(|auth| auth.exp);
                let remaining = exp.map_or(0.0, |exp| exp as f64 * 1000.0 - self.wall_ms(now));
                // Retried once the server's interval has passed, while
                // the margin before `exp` leaves time for it.
                if RATE_LIMITED_RETRY_MS + REFRESH_MARGIN_MS / 5.0 < remaining {
                    self.start_timer(TimerKind::Refresh, RATE_LIMITED_RETRY_MS as u64);
                }
            }
            _ => {}
        }
    }

    /// The welcome came (token mode: the token was accepted; reliable mode:
    /// it named the session): new messages may go out (in reliable mode,
    /// once a `resume` is answered as well).
    fn welcomed(&mut self) {
        if !std::mem::take(&mut self.awaiting_welcome) {
            return;
        }
        if self.reliable.as_ref().is_none_or(Reliable::ready) {
            let generation = self.machine.generation();
            self.ready(generation);
        }
    }

    /// The connection's token expires at `exp`: schedule its refresh.
    fn expires_at(&mut self, exp: u64, now: f64) {
        let wall = self.wall_ms(now);
        if let Some(auth) = self.auth.as_mut() {
            auth.exp = Some(exp);
            auth.refresh_failures = 0;
        }
        match refresh_delay_ms(exp, wall) {
            Some(delay) => self.start_timer(TimerKind::Refresh, delay),
            None => self.stop_timer(TimerKind::Refresh),
        }
    }

    /// The connection is no longer open: its token's schedule goes with it.
    pub(super) fn auth_closed(&mut self) {
        self.stop_timer(TimerKind::Refresh);
        if let Some(auth) = self.auth.as_mut() {
            auth.exp = None;
            auth.refresh_failures = 0;
        }
    }

    /// A close of the live socket: 4401 without a provider forbids the
    /// reconnect, and a 4401 is reported either way.
    pub(super) fn closed(&mut self, generation: u64, close: CloseInfo, now: f64) {
        let current = generation == self.machine.generation()
            && !matches!(self.machine.state(), State::Closed);
        if !current || close.code != UNAUTHORIZED {
            self.step(Step::Closed { generation, close }, now);
            return;
        }
        let reason = close.reason.clone();
        let from = self.events.len();
        if self.auth.is_some() {
            self.step(Step::Closed { generation, close }, now);
        } else {
            self.step(Step::Refused { generation, close }, now);
        }
        let retrying = !matches!(self.machine.state(), State::Closed);
        // Right after the close it explains, before the state it leads to.
        let at = self.events[from..]
            .iter()
            .position(|e| matches!(e, Event::Close(_)))
            .map_or(self.events.len(), |i| from + i + 1);
        self.events.insert(
            at,
            Event::Auth(AuthError::Unauthorized { reason, retrying }),
        );
    }

    fn wall_ms(&self, now: f64) -> f64 {
        now + self.wall_clock_offset_ms
    }
}

/// A cheap check before decoding (a `welcome`, or what token mode reads):
/// the server writes `type` first.
fn looks_like_auth(text: &str) -> bool {
    ["welcome", "refreshed", "error"]
        .iter()
        .any(|kind| text.starts_with(&format!(r#"{{"type":"{kind}""#)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_comes_at_80_percent_at_least_5_s_early_and_not_before_half() {
        let now = 1_000_000.0;
        let at = |lifetime_s: u64| refresh_delay_ms(1000 + lifetime_s, now);
        assert_eq!(at(3600), Some(2_880_000));
        assert_eq!(at(30), Some(24_000));
        assert_eq!(at(20), Some(15_000));
        assert_eq!(at(10), Some(5_000));
        assert_eq!(at(4), Some(2_000));
        assert_eq!(at(0), None);
        assert_eq!(refresh_delay_ms(999, now), None);
    }

    #[test]
    fn only_welcome_refreshed_and_error_are_decoded() {
        assert!(looks_like_auth(r#"{"type":"welcome","client_id":"c"}"#));
        assert!(looks_like_auth(r#"{"type":"refreshed","exp":1}"#));
        assert!(looks_like_auth(r#"{"type":"error","code":"bad_token"}"#));
        assert!(!looks_like_auth(r#"{"type":"push","seq":1}"#));
        assert!(!looks_like_auth("welcome"));
    }
}
