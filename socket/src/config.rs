//! Options of the wrapper, each with its documented default.

use std::fmt;
use std::sync::Arc;

use crate::cause::DynError;
use crate::message::CloseInfo;
use crate::token::{MaybeSend, MaybeSendSync, Token, TokenProvider};

/// What to do when a message does not fit in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse the new message with [`crate::SendError::QueueFull`] (default).
    #[default]
    RejectNew,
    /// Drop the oldest queued messages to make room, raising
    /// [`crate::Event::Dropped`] for each.
    DropOldest,
}

/// The reconnection schedule: exponential backoff with full jitter.
///
/// The delay before attempt `n` (from 1) is a uniformly random value in
/// `[0, min(max_ms, initial_ms * factor^(n-1))]`, so many clients that lost
/// the same server do not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Upper bound of the first delay. Default 1000 ms.
    pub initial_ms: u64,
    /// Growth per attempt. Default 2.
    pub factor: f64,
    /// Cap of the delay. Default 30 000 ms.
    pub max_ms: u64,
    /// Full jitter (default `true`); `false` waits the upper bound exactly.
    pub jitter: bool,
    /// Attempts after which the wrapper gives up and closes. Default `None`: never.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 1000,
            factor: 2.0,
            max_ms: 30_000,
            jitter: true,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before attempt `attempt` (1 for the first retry).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(64);
        let grown = self.initial_ms as f64 * self.factor.max(1.0).powi(exponent as i32);
        grown.min(self.max_ms as f64).max(0.0) as u64
    }

    /// The delay before attempt `attempt`, given a uniform random `unit` in `[0, 1)`.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let ceiling = self.ceiling_ms(attempt);
        if self.jitter {
            (ceiling as f64 * unit.clamp(0.0, 1.0)).round() as u64
        } else {
            ceiling
        }
    }
}

/// An application heartbeat: browsers cannot send WebSocket pings, so the
/// wrapper sends the protocol's `ping` after `interval_ms` without any
/// inbound message, and takes the connection as dead (closing it and
/// reconnecting) when nothing at all arrives within `timeout_ms` after a
/// ping. Any inbound message counts as alive. Times are wall-clock, and a
/// late timer tick in a throttled background tab only delays the ping, so it
/// never causes a false timeout (see [`crate::liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Silence after which a ping is sent. Suggested: 10 000 ms.
    pub interval_ms: u32,
    /// How long after a ping, with nothing received, the connection is taken as dead. Suggested: 30 000 ms.
    pub timeout_ms: u32,
}

/// Decides per close whether to reconnect.
///
/// `Send + Sync`, so a native transport can run the driver on any thread.
pub type ReconnectPolicy = Arc<dyn Fn(&CloseInfo) -> bool + Send + Sync>;

/// The default policy: reconnect after every close except a kick by the
/// server (4000), a policy violation (1008) and a replacement by a newer
/// connection with the same client id (4002). A token that expired (4003)
/// reconnects with a new one; a refused token (4401) reconnects only with a
/// token provider (the driver stops without one, whatever the policy says).
pub fn default_should_reconnect(close: &CloseInfo) -> bool {
    use shared::close_code::{KICKED, POLICY_VIOLATION, REPLACED};
    !matches!(close.code, KICKED | POLICY_VIOLATION | REPLACED)
}

/// Options of a [`crate::Socket`]. Build with [`Config::new`] and the
/// `with_*` methods; every option has the default documented on it.
#[derive(Clone)]
pub struct Config {
    /// The `ws:` or `wss:` URL.
    pub url: String,
    /// Messages queued while not open. Default 100; 0 means never queue.
    pub queue_capacity: usize,
    /// Optional limit on queued payload bytes. Default none.
    pub queue_max_bytes: Option<usize>,
    /// What to do when the queue is full. Default [`Overflow::RejectNew`].
    pub overflow: Overflow,
    /// The reconnection schedule. Default [`Backoff::default`].
    pub backoff: Backoff,
    /// A connection attempt not open after this long is abandoned and retried. Default 10 000 ms.
    pub connect_timeout_ms: u32,
    /// The attempt counter resets only after a connection stayed open this long,
    /// so a server that accepts and drops at once still backs off. Default 5000 ms.
    pub min_uptime_ms: u32,
    /// Optional application heartbeat. Default none.
    pub heartbeat: Option<Heartbeat>,
    /// Whether to reconnect after a close. Default [`default_should_reconnect`].
    pub should_reconnect: ReconnectPolicy,
    /// Reliable mode (the `shared` protocol's acknowledged, resumable
    /// delivery; see [`crate::reliable`]). Default off.
    pub reliable: bool,
    /// Token mode: the source of connection tokens ([`Config::with_token`]).
    /// Default none: connect without a token.
    pub token: Option<TokenProvider>,
    /// One connection for all tabs ([`Config::with_shared_across_tabs`]):
    /// the name tabs of one origin share it under. Default none: a
    /// connection of this socket's own.
    pub shared_across_tabs: Option<String>,
    /// Natively with `native-rustls`: roots trusted for `wss://` besides the
    /// webpki roots ([`Config::with_root_certificate`]), each the DER of a
    /// certificate. Default none. Not in the browser, where trust is the
    /// browser's.
    #[cfg(all(feature = "native-rustls", not(target_arch = "wasm32")))]
    pub root_certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Config");
        f.field("url", &self.url)
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("overflow", &self.overflow)
            .field("backoff", &self.backoff)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("min_uptime_ms", &self.min_uptime_ms)
            .field("heartbeat", &self.heartbeat)
            .field("reliable", &self.reliable)
            .field("token", &self.token)
            .field("shared_across_tabs", &self.shared_across_tabs);
        // A count: the certificates' bytes would only fill the output.
        #[cfg(all(feature = "native-rustls", not(target_arch = "wasm32")))]
        f.field("root_certificates", &self.root_certificates.len());
        f.finish_non_exhaustive()
    }
}

/// Equal when every option is, and the policy is the same function object.
impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && self.queue_capacity == other.queue_capacity
            && self.queue_max_bytes == other.queue_max_bytes
            && self.overflow == other.overflow
            && self.backoff == other.backoff
            && self.connect_timeout_ms == other.connect_timeout_ms
            && self.min_uptime_ms == other.min_uptime_ms
            && self.heartbeat == other.heartbeat
            && self.reliable == other.reliable
            && self.shared_across_tabs == other.shared_across_tabs
            && same_roots(self, other)
            && Arc::ptr_eq(&self.should_reconnect, &other.should_reconnect)
            && match (&self.token, &other.token) {
                (Some(a), Some(b)) => a.ptr_eq(b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Config {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue_capacity: 100,
            queue_max_bytes: None,
            overflow: Overflow::RejectNew,
            backoff: Backoff::default(),
            connect_timeout_ms: 10_000,
            min_uptime_ms: 5_000,
            heartbeat: None,
            should_reconnect: Arc::new(default_should_reconnect),
            reliable: false,
            token: None,
            shared_across_tabs: None,
            #[cfg(all(feature = "native-rustls", not(target_arch = "wasm32")))]
            root_certificates: Vec::new(),
        }
    }

    /// Natively with the feature `native-rustls`: trusts `der` (the DER of a
    /// certificate, a private CA's say) as a root for `wss://`, besides the
    /// webpki roots (Mozilla's list, built in: the system's store is not
    /// read). Call it once per root. Services behind a private CA need it,
    /// and so do tests against a certificate made for them.
    ///
    /// The roots are checked by [`crate::Socket::new`], which refuses one
    /// that is not a certificate with
    /// [`crate::Error::InvalidRootCertificate`] rather than failing every
    /// attempt later. A server whose certificate no trusted root vouches for
    /// fails each attempt with [`crate::TransportError::Socket`], whose
    /// cause is the `tungstenite::Error::Io` holding rustls's
    /// `InvalidCertificate` error (retried with the backoff, as any failed
    /// handshake is).
    ///
    /// There is no such method in the browser (a compile error, not an
    /// option silently ignored): a page cannot add a root, the browser
    /// trusts what its own store and the system's trust, so a private CA
    /// must be installed there.
    ///
    /// ```
    /// # #[cfg(all(feature = "native-rustls", not(target_arch = "wasm32")))] {
    /// use buffered_socket::Config;
    ///
    /// # let my_ca_der = Vec::<u8>::new();
    /// let config = Config::new("wss://internal.example:8443/ws").with_root_certificate(my_ca_der);
    /// assert_eq!(config.root_certificates.len(), 1);
    /// # }
    /// ```
    #[cfg(all(feature = "native-rustls", not(target_arch = "wasm32")))]
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(der.into());
        self
    }

    /// Token mode: `provider` is an async function that returns a fresh
    /// token (a JWT of the server's token mode), or an error.
    ///
    /// It is called before every connection attempt (the browser sends the
    /// token as `?token=`, a native client as `Authorization: Bearer`) and,
    /// when the server's `welcome` says when the token expires, ahead of that
    /// `exp` for an in-band `refresh` (see [`crate::driver::auth`] for the
    /// timing), which extends the connection without a reconnect.
    ///
    /// * A provider failure is reported ([`crate::AuthError::Provider`]) and
    ///   retried with the backoff, never in a tight loop.
    /// * A close 4401 (the server refused the token) leads to a new token and
    ///   a retry with the backoff; without a provider the wrapper does not
    ///   reconnect and reports [`crate::AuthError::Unauthorized`].
    /// * A close 4003 (the token expired unrefreshed) leads to a reconnect
    ///   with a new token, which in reliable mode resumes the session.
    ///
    /// In the browser the future may be `!Send` (it runs with
    /// `spawn_local`); natively it must be `Send` (it runs on tokio).
    #[must_use]
    pub fn with_token<F, Fut, T, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + MaybeSendSync + 'static,
        Fut: Future<Output = Result<T, E>> + MaybeSend + 'static,
        T: Into<Token>,
        E: Into<Box<DynError>>,
    {
        self.token = Some(TokenProvider::new(provider));
        self
    }

    /// Token mode with a provider made earlier (shared between sockets).
    #[must_use]
    pub fn with_token_provider(mut self, provider: TokenProvider) -> Self {
        self.token = Some(provider);
        self
    }

    /// Turns reliable mode on or off. On, the wrapper speaks the `shared`
    /// protocol's reliable mode: it adds `reliable=1` to the URL's query
    /// (unless a `reliable` parameter is there), numbers every text it
    /// writes and keeps it until the server acknowledges it (kept messages
    /// count against the queue's capacity and byte limit), resumes its
    /// session after a reconnect and resends them first, delivers each
    /// server message once and in order, and reports what it cannot
    /// guarantee ([`crate::Event::ResumeFailed`], [`crate::Event::Gap`]).
    /// Binary messages are refused in this mode
    /// ([`crate::SendError::BinaryNotReliable`]).
    #[must_use]
    pub fn with_reliable(mut self, reliable: bool) -> Self {
        self.reliable = reliable;
        self
    }

    /// One connection for all tabs: browser tabs of one origin whose
    /// sockets use the same `name` share one WebSocket. A leader tab
    /// (elected with the Web Locks API) holds it; the others send and
    /// receive through it over a `BroadcastChannel`. Every tab keeps the
    /// same API: a follower's [`crate::Socket::send`] gives
    /// [`crate::SendOutcome::Forwarded`], every inbound message reaches
    /// every tab (tag requests with [`crate::Socket::tab_id`] to tell your
    /// replies apart), and [`crate::Stats::tab_role`] and
    /// [`crate::Stats::tabs`] say where the tab stands. When the leader
    /// leaves, another tab takes over; in reliable mode the handoff loses
    /// and duplicates nothing.
    ///
    /// Tabs sharing a name must use the same URL, mode and token provider
    /// (presence): a tab whose config differs from the leader's keeps a
    /// socket of its own and gets [`crate::Event::NotShared`], as does a
    /// tab in a browser without Web Locks or `BroadcastChannel`.
    ///
    /// Default off. A browser feature: the native transport has no tabs and
    /// ignores it (its sockets are always [`crate::TabRole::Alone`]).
    ///
    /// ```
    /// use buffered_socket::Config;
    ///
    /// let config = Config::new("wss://example.org/ws")
    ///     .with_reliable(true)
    ///     .with_shared_across_tabs("my-app");
    /// assert_eq!(config.shared_across_tabs.as_deref(), Some("my-app"));
    /// ```
    #[must_use]
    pub fn with_shared_across_tabs(mut self, name: impl Into<String>) -> Self {
        self.shared_across_tabs = Some(name.into());
        self
    }

    /// The URL to open: `url`, plus `reliable=1` in reliable mode and
    /// `protocol=2` (the newest version of the `shared` protocol, which the
    /// server answers with the version it speaks), unless `url` sets them.
    pub fn connect_url(&self) -> String {
        let mut url = self.url.clone();
        if self.reliable && !has_param(&url, "reliable") {
            append_param(&mut url, "reliable=1");
        }
        if !has_param(&url, "protocol") {
            append_param(&mut url, &format!("protocol={}", shared::PROTOCOL_VERSION));
        }
        url
    }

    /// Sets the queue capacity in messages.
    #[must_use]
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets a limit on queued bytes.
    #[must_use]
    pub fn with_queue_max_bytes(mut self, max: usize) -> Self {
        self.queue_max_bytes = Some(max);
        self
    }

    /// Sets the overflow policy.
    #[must_use]
    pub fn with_overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Sets the reconnection schedule.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn with_connect_timeout_ms(mut self, ms: u32) -> Self {
        self.connect_timeout_ms = ms;
        self
    }

    /// Sets the minimum uptime that resets the attempt counter.
    #[must_use]
    pub fn with_min_uptime_ms(mut self, ms: u32) -> Self {
        self.min_uptime_ms = ms;
        self
    }

    /// Turns the application heartbeat on.
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Sets the reconnect policy.
    #[must_use]
    pub fn with_should_reconnect(
        mut self,
        policy: impl Fn(&CloseInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.should_reconnect = Arc::new(policy);
        self
    }
}

/// Whether both trust the same extra roots.
#[cfg(all(feature = "native-rustls", not(target_arch = "wasm32")))]
fn same_roots(a: &Config, b: &Config) -> bool {
    a.root_certificates == b.root_certificates
}

/// Without `native-rustls` there are no extra roots.
#[cfg(not(all(feature = "native-rustls", not(target_arch = "wasm32"))))]
fn same_roots(_: &Config, _: &Config) -> bool {
    true
}

/// Whether the query of `url` has the parameter `name`.
fn has_param(url: &str, name: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    })
}

fn append_param(url: &mut String, pair: &str) {
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(pair);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliable_mode_and_the_protocol_version_go_in_the_query() {
        let plain = Config::new("ws://h/ws");
        assert_eq!(plain.connect_url(), "ws://h/ws?protocol=2");
        assert_eq!(
            plain.clone().with_reliable(true).connect_url(),
            "ws://h/ws?reliable=1&protocol=2"
        );
        assert_eq!(
            Config::new("ws://h/ws?client_id=a")
                .with_reliable(true)
                .connect_url(),
            "ws://h/ws?client_id=a&reliable=1&protocol=2"
        );
        // What the URL sets is left as it is.
        assert_eq!(
            Config::new("ws://h/ws?reliable=0&protocol=1")
                .with_reliable(true)
                .connect_url(),
            "ws://h/ws?reliable=0&protocol=1"
        );
        assert_eq!(
            Config::new("ws://h/ws?xprotocol=1").connect_url(),
            "ws://h/ws?xprotocol=1&protocol=2"
        );
    }

    #[test]
    fn the_ceiling_grows_by_the_factor_up_to_the_cap() {
        let b = Backoff::default();
        let ceilings: Vec<u64> = (1..=7).map(|n| b.ceiling_ms(n)).collect();
        assert_eq!(ceilings, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(b.ceiling_ms(1000), 30_000);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        let b = Backoff::default();
        for attempt in 1..10 {
            let ceiling = b.ceiling_ms(attempt);
            for unit in [0.0, 0.25, 0.5, 0.999_999] {
                let d = b.delay_ms(attempt, unit);
                assert!(d <= ceiling, "{d} > {ceiling}");
            }
            assert_eq!(b.delay_ms(attempt, 0.0), 0);
            // Out-of-range randomness is clamped, never beyond the ceiling.
            assert_eq!(b.delay_ms(attempt, 7.0), ceiling);
        }
        let exact = Backoff { jitter: false, ..b };
        assert_eq!(exact.delay_ms(3, 0.1), 4000);
    }

    #[test]
    fn the_default_policy_stops_after_kick_policy_violation_and_replacement() {
        let close = |code| CloseInfo {
            url: String::new(),
            code,
            reason: String::new(),
            was_clean: true,
        };
        for code in [4000, 1008, 4002] {
            assert!(!default_should_reconnect(&close(code)), "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 1012, 1013, 4001] {
            assert!(default_should_reconnect(&close(code)), "{code}");
        }
    }
}
