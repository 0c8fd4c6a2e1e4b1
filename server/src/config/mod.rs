//! The server's configuration: one clap struct, so `--help` is the manual.
//! Every option has a flag, an environment variable and a default, and may
//! be set in the config file (`--config`, `file.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::channels::namespace::Namespaces;
use crate::duration::parse_duration;

mod credentials;
mod file;
pub use file::{FileError, LoadError};

/// The shortest `--admin-token` the server starts with, in bytes.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Command-line and environment configuration of the server.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "server",
    version,
    about = "WebSocket server: echo, pushes, heartbeats, limits, client registry.",
    args_override_self = true
)]
#[non_exhaustive]
pub struct Config {
    /// A TOML file of flags (their long names in snake_case) and channel
    /// namespaces (`[default_namespace]`, `[[namespace]]`); the command
    /// line and the environment take precedence over it. An unknown key
    /// fails start-up.
    #[arg(long, env = "SERVER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "SERVER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Directory of the built UI (trunk's dist/), served at `/`.
    #[arg(long, env = "SERVER_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// Period of timed pushes to every /ws client (e.g. `1s`, `250ms`); `0` turns them off.
    #[arg(long, env = "SERVER_PUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub push_interval: Duration,

    /// Period of WebSocket pings to every client; `0` turns them off.
    #[arg(long, env = "SERVER_PING_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A connection that sends nothing (no pong, no message) for this long is closed with 4001.
    #[arg(long, env = "SERVER_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Origins allowed besides same-host ones (repeatable; `*` allows any).
    /// Without it, a browser upgrade is accepted when it has no `Origin`
    /// header or the origin's host equals the `Host` header.
    #[arg(
        long = "allowed-origin",
        env = "SERVER_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Largest message accepted on /ws, in bytes; larger closes with 1009.
    #[arg(long, env = "SERVER_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Largest message accepted on /echo, in bytes; larger closes with 1009.
    #[arg(long, env = "SERVER_ECHO_MAX_MESSAGE_SIZE", default_value_t = 16 * 1024 * 1024)]
    pub echo_max_message_size: usize,

    /// Bytes held in unfinished messages (fragments not yet followed by
    /// their last one, or a large frame not yet complete) by every /ws and
    /// /echo connection together, beyond 8 KiB per connection; the
    /// connection whose next read would pass it is closed with 1013. It
    /// bounds what clients that start large messages and never finish them
    /// can hold: at the default, 16 /echo messages of 16 MiB in progress at
    /// once. `0` turns it off.
    #[arg(long, env = "SERVER_MAX_PARTIAL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_partial_bytes: usize,

    /// Consecutive undecodable messages on /ws after which the connection is closed with 1008.
    #[arg(long, env = "SERVER_MAX_BAD_MESSAGES", default_value_t = 10)]
    pub max_bad_messages: u32,

    /// Capacity of each connection's outbound queue, in messages.
    #[arg(long, env = "SERVER_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Bound of each connection's outbound queue in bytes (0: none). A single
    /// message always enters an empty queue; what waits behind it is bounded.
    /// A client that reads too slowly to drain it is closed with 1013 (after
    /// --write-timeout) and counted as a slow consumer; /echo flushes its
    /// replies once this many bytes are written.
    #[arg(long, env = "SERVER_SEND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// Largest body of an admin push or broadcast, in bytes; larger is
    /// answered 413 (0: no limit). The default is --max-message-size's: a
    /// push is no larger than what a client may send.
    #[arg(long, env = "SERVER_MAX_PUSH_SIZE", default_value_t = 64 * 1024)]
    pub max_push_size: usize,

    /// A connection whose batch of writes (up to 256 queued messages or 512
    /// burst pushes, one flush) does not complete within this long (it
    /// stopped reading) is closed with 1013 and counted as a slow consumer.
    #[arg(long, env = "SERVER_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Largest burst one request may ask for.
    #[arg(long, env = "SERVER_MAX_BURST", default_value_t = 1_000_000)]
    pub max_burst: u32,

    /// Pushes per second a connection's bursts make at most (0: no limit,
    /// the default). Checked once per batch of pushes (a twentieth of a
    /// second of the rate, at most 512), so a limited burst costs a timer
    /// per batch, never one per push. Bursts are also bounded by
    /// --send-queue-bytes, and to one in progress and one waiting per
    /// connection (more get `burst_busy`).
    #[arg(long, env = "SERVER_MAX_BURST_RATE", default_value_t = 0)]
    pub max_burst_rate: u32,

    /// The most one read of a WebSocket takes, in bytes: `/echo`'s read buffer
    /// (tungstenite's default is 128 KiB); `/ws` keeps a 512-byte one and
    /// reads ahead through a per-thread buffer, so an idle connection is cheap.
    #[arg(long, env = "SERVER_READ_BUFFER", default_value_t = 4096)]
    pub read_buffer: usize,

    /// Reliable mode: how long a session outlives its last connection, waiting
    /// for a `resume`; after it the resume fails with `unknown_session`.
    #[arg(long, env = "SERVER_SESSION_TTL", default_value = "2m", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// Reliable mode: unacknowledged server messages kept per session. Bursts
    /// and timed pushes wait for acks at half of it; a connected client that
    /// fills it is closed with 1013 (and resumes); while the client is away
    /// the oldest are evicted and reported as a `gap`.
    #[arg(long, env = "SERVER_HISTORY_MAX", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max: u64,

    /// Reliable mode: bytes of unacknowledged server messages kept per
    /// session, with the same rules as `--history-max`.
    #[arg(long, env = "SERVER_HISTORY_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub history_max_bytes: usize,

    /// Reliable mode: sessions held at most (connected or waiting for a
    /// resume); a new reliable connection beyond it is closed with 1013.
    #[arg(long, env = "SERVER_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,

    /// Reliable mode: sessions held at most per client address (an IPv6 one
    /// per /64; behind `--trusted-proxy`, the forwarded one), so that one
    /// client cannot take every session; a new reliable connection of that
    /// client beyond it is closed with 1013 when its session would be
    /// stored. `0` turns it off.
    #[arg(long, env = "SERVER_MAX_SESSIONS_PER_IP", default_value_t = 100)]
    pub max_sessions_per_ip: usize,

    /// Reliable mode, token mode: sessions held at most per user, for the
    /// same reason (a user's sessions live on after their connections, up
    /// to `--session-ttl`). `0` turns it off. With Redis, this cap and the
    /// two above count the sessions of every node together.
    #[arg(long, env = "SERVER_MAX_SESSIONS_PER_USER", default_value_t = 100)]
    pub max_sessions_per_user: usize,

    /// Reliable mode: bytes of every session's history together. Over it,
    /// the oldest messages of clients that are away are evicted first (a
    /// `gap` on their resume); a connected client whose message would not
    /// fit once they are gone is closed with 1013, as at its own history
    /// bound, and resumes with nothing lost. Timed and burst pushes wait
    /// once half of it is used. `0` turns it off.
    #[arg(long, env = "SERVER_HISTORY_TOTAL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub history_total_bytes: usize,

    /// Reliable mode: unacknowledged server messages older than this are
    /// evicted once their client is away, by a periodic sweep (every quarter
    /// of the shorter of this and the TTL, 100 ms to 15 s), and reported as
    /// a `gap` on resume.
    #[arg(long, env = "SERVER_HISTORY_MAX_AGE", default_value = "2m", value_parser = parse_duration)]
    pub history_max_age: Duration,

    /// Accept `?client_id=` on /ws: the client chooses its id, and a second
    /// connection with the same id replaces the first (4002). For development
    /// and tests only: a self-chosen id is not authentication, anyone can
    /// take it. Without it such a connection is upgraded and closed at once
    /// with 1008. Refused at start-up in token mode.
    #[arg(long, env = "SERVER_ALLOW_CLIENT_IDS", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_client_ids: bool,

    /// Token mode: serve /echo without a token. By default /echo needs a
    /// valid token in token mode as /ws does (refused: 4401 and the cause):
    /// its 16 MiB messages make it the costliest endpoint to leave open.
    /// No effect in anonymous mode, where nothing needs a token.
    #[arg(long, env = "SERVER_PUBLIC_ECHO", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub public_echo: bool,

    /// Token mode with HS256: the secret that signs connection tokens. Every
    /// /ws and /echo connection then needs a valid JWT (`?token=` or
    /// `Authorization: Bearer`; /echo not with `--public-echo`); see
    /// `--jwt-secret-file` to keep it out of the process list.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// Token mode with HS256: a file holding the secret (a final newline is
    /// not part of it).
    #[arg(long, env = "JWT_SECRET_FILE", global = true)]
    pub jwt_secret_file: Option<PathBuf>,

    /// Token mode with a public key: a PEM file (`BEGIN PUBLIC KEY`) of an
    /// RSA key (tokens signed RS256) or a P-256 EC key (ES256).
    #[arg(long, env = "JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<PathBuf>,

    /// Token mode: the `iss` every token must carry (else `wrong issuer`).
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Token mode: the `aud` every token must carry (else `wrong audience`).
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// Token mode: how long past its `exp` a token is still accepted, and a
    /// connection not refreshed is still served (whole seconds; for clock
    /// skew between the token issuer and the server).
    #[arg(long, env = "JWT_LEEWAY", default_value = "5s", value_parser = parse_duration, global = true)]
    pub jwt_leeway: Duration,

    /// Token mode: a token whose `exp` is further than this from now is
    /// refused (4401 `token lifetime too long` at connect, `bad_token` at a
    /// refresh): keep tokens short-lived, they are not revoked. `0` turns
    /// the bound off.
    #[arg(long, env = "JWT_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration, global = true)]
    pub jwt_max_lifetime: Duration,

    /// Token mode: at most one `refresh` per connection per this long; one
    /// sooner gets `error` `rate_limited` (unchecked), and three refused or
    /// rate-limited refreshes in a row close the connection with 4401. `0`
    /// turns the rate limit off (three refused in a row still close).
    #[arg(long, env = "SERVER_REFRESH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// Bearer token of the admin API under /api, at least 16 bytes (a
    /// shorter one is refused at start-up); without one the API answers
    /// 403. An address with 10 failed authentications within 10 s gets 429
    /// with `Retry-After` until the 10 s end.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// How long a graceful shutdown waits for clients to close. WebSockets
    /// get 1001 at once, HTTP connections finish their request; whatever is
    /// still open after this long (a half-sent request, say) is dropped and
    /// the server exits.
    #[arg(long, env = "SERVER_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// A connection whose first request's headers (a WebSocket upgrade
    /// included) are not complete this long after it was accepted is dropped
    /// without an answer (slowloris); so is one that started the next request
    /// on a keep-alive connection and has not finished its headers within it.
    /// `0` turns it off.
    #[arg(long, env = "SERVER_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// A keep-alive HTTP connection idle this long after a response (no new
    /// request started) is closed. `0` turns it off.
    #[arg(long, env = "SERVER_KEEPALIVE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

    /// A request body (an admin push, say) not received in full this long
    /// after its headers is answered 408 and the connection closed. `0` turns
    /// it off.
    #[arg(long, env = "SERVER_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// WebSocket connections (/ws and /echo) open at once; beyond it an
    /// upgrade is answered 503 with `Retry-After`. Default: the descriptor
    /// limit (raised to its hard limit at start) less a reserve of a tenth
    /// of it (32 to 1024), which keeps /healthz, /metrics and /api reachable
    /// during a flood. `0` turns it off.
    #[arg(long, env = "SERVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// WebSocket connections open at once per client address (an IPv6 one
    /// per /64); beyond it an upgrade is answered 503 with `Retry-After`.
    /// `0` turns it off.
    #[arg(long, env = "SERVER_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// TCP connections from one peer address (an IPv6 one per /64) that are
    /// not (yet) WebSockets: requests in flight, idle keep-alive, half-sent
    /// headers. Beyond it a new connection is closed at once, before
    /// anything is read, so that one address cannot hold the descriptors
    /// for `--handshake-timeout` at a time. A `--trusted-proxy` is exempt.
    /// `0` turns it off.
    #[arg(
        long,
        env = "SERVER_MAX_HTTP_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    pub max_http_connections_per_ip: usize,

    /// WebSocket upgrades per second per client address: a token bucket that
    /// refills at this rate and holds `--connect-burst` tokens; an upgrade
    /// finding it empty is answered 429 with `Retry-After`. `0` turns it off.
    #[arg(long, env = "SERVER_CONNECT_RATE", default_value_t = 50.0, value_parser = parse_rate)]
    pub connect_rate: f64,

    /// The size of the `--connect-rate` bucket: upgrades a client may make at
    /// once before the rate applies. `0` turns the rate limit off.
    #[arg(long, env = "SERVER_CONNECT_BURST", default_value_t = 100)]
    pub connect_burst: u32,

    /// Networks of proxies (repeatable CIDR, e.g. `10.0.0.0/8`, `::1/128`,
    /// or one address)
    /// whose `X-Forwarded-For` names the client; the per-client limits, the
    /// logs and the admin list use that address. From other peers the header
    /// is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "SERVER_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_net
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Host names served (repeatable; `name` for any port, `name:port` for
    /// one); a request with another `Host` gets 403 on every route, which
    /// stops DNS-rebinding pages. Off (every host served) by default.
    #[arg(
        long = "allowed-host",
        env = "SERVER_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Channels a connection may be subscribed to at once; beyond it a
    /// `subscribe` gets `too_many_subscriptions`. `0` turns it off.
    #[arg(long, env = "SERVER_MAX_SUBSCRIPTIONS", default_value_t = 128)]
    pub max_subscriptions: usize,

    /// Publications a connection may make per second (a token bucket that
    /// holds one second's worth); beyond it a `publish` gets
    /// `rate_limited`, unpublished. `0` turns it off.
    #[arg(long, env = "SERVER_PUBLISH_RATE", default_value_t = 100.0, value_parser = parse_rate)]
    pub publish_rate: f64,

    /// Client `subscribe`, `presence` and `presence_stats` requests a
    /// connection may make per second; beyond it they get `rate_limited`,
    /// not served. Each may cost the streams (a recovery reads the
    /// channel's history, a presence query runs a script on Redis), so an
    /// unbounded client could make one connection's requests a load on
    /// every node. The bucket holds a second's worth, or twice
    /// `--max-subscriptions` if that is more: a reconnecting client
    /// resubscribes every channel it holds and asks again for the presence
    /// it follows, all at once. Unsubscribing is never limited (it only
    /// frees). `0` turns it off.
    #[arg(long, env = "SERVER_CHANNEL_REQUEST_RATE", default_value_t = 50.0, value_parser = parse_rate)]
    pub channel_request_rate: f64,

    /// One node's channel history in memory mode, in bytes over every
    /// channel: past it the node's oldest publications are trimmed first
    /// (a subscriber recovering past them is told the exact gap). In a
    /// cluster Redis keeps the history, bounded per channel by its
    /// namespace. `0` keeps none.
    #[arg(long, env = "SERVER_CHANNEL_HISTORY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub channel_history_bytes: usize,

    /// How long a publication's id is remembered per channel: a `publish`
    /// (or an admin publish's `Idempotency-Key`) repeated within it is
    /// answered with the first one's offset and not published again.
    #[arg(long, env = "SERVER_PUBLISH_DEDUP_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub publish_dedup_window: Duration,

    /// Members a `presence` answer lists at most; past it the answer says
    /// `"truncated":true` (`presence_stats` counts them all).
    #[arg(long, env = "SERVER_MAX_PRESENCE_ANSWER", default_value_t = 1000)]
    pub max_presence_answer: usize,

    /// Scale-out on Redis (`--redis-url` and the cluster's flags).
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterConfig,

    /// Without a subcommand the server serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The channel namespaces, from the config file (the default namespace
    /// alone, with its safe defaults, without one).
    #[arg(skip)]
    pub namespaces: Namespaces,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Prints a connection token signed with the HS256 secret
    /// (`--jwt-secret`, `--jwt-secret-file` or `JWT_SECRET`), with the
    /// configured `--jwt-issuer` and `--jwt-audience`: for development, as
    /// Centrifugo's `gentoken`.
    Token {
        /// The user: the token's `sub`.
        #[arg(long)]
        sub: String,
        /// How long the token is valid (`90s`, `15m`, `1h`).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// A `client_name` claim, shown in the admin list.
        #[arg(long)]
        client_name: Option<String>,
    },
}

impl Config {
    /// The bounds of reliable mode.
    pub(crate) fn reliable_limits(&self) -> crate::reliable::Limits {
        crate::reliable::Limits {
            history_max: usize::try_from(self.history_max).unwrap_or(usize::MAX),
            history_max_age: self.history_max_age,
            history_max_bytes: self.history_max_bytes,
            ttl: self.session_ttl,
            caps: crate::reliable::Caps {
                total: self.max_sessions,
                per_ip: self.max_sessions_per_ip,
                per_user: self.max_sessions_per_user,
            },
            history_total_bytes: self.history_total_bytes,
        }
    }
}

/// A network in CIDR notation, or one address (a /32 or /128).
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not a network (try 10.0.0.0/8 or 127.0.0.1)"))
}

/// A finite, non-negative rate.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate per second (try 50 or 0.5)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::try_parse_from(["server"]).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.push_interval, Duration::from_secs(1));
        assert_eq!(config.ping_interval, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.max_message_size, 64 * 1024);
        assert_eq!(config.echo_max_message_size, 16 * 1024 * 1024);
        assert_eq!(config.max_partial_bytes, 256 * 1024 * 1024);
        assert!(!config.public_echo);
        assert_eq!(config.send_queue, 1024);
        assert_eq!(config.send_queue_bytes, 1024 * 1024);
        assert_eq!(config.max_push_size, 64 * 1024);
        assert_eq!(config.max_burst, 1_000_000);
        assert_eq!(config.max_burst_rate, 0);
        assert!(config.admin_token.is_none());
        assert_eq!(config.jwt_max_lifetime, Duration::from_secs(24 * 3600));
        assert_eq!(config.refresh_interval, Duration::from_secs(5));
        assert!(!config.allow_client_ids);
        let on = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("server").chain(args.iter().copied()))
                .unwrap()
                .allow_client_ids
        };
        assert!(on(&["--allow-client-ids"]));
        assert!(!on(&["--allow-client-ids", "--allow-client-ids=false"]));
        assert!(on(&["--allow-client-ids=true"]));
        assert!(!on(&["--allow-client-ids=0"]));
        assert!(
            Config::try_parse_from(["server", "--public-echo"])
                .unwrap()
                .public_echo
        );
        assert_eq!(config.session_ttl, Duration::from_secs(120));
        assert_eq!(config.history_max, 1000);
        assert_eq!(config.history_max_age, Duration::from_secs(120));
        assert_eq!(config.max_sessions, 10_000);
        assert_eq!(config.history_max_bytes, 1024 * 1024);
        assert_eq!(config.max_sessions_per_ip, 100);
        assert_eq!(config.max_sessions_per_user, 100);
        assert_eq!(config.history_total_bytes, 256 * 1024 * 1024);
        assert!(Config::try_parse_from(["server", "--history-max", "0"]).is_err());
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(config.handshake_timeout, Duration::from_secs(5));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(30));
        assert_eq!(config.body_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, None);
        assert_eq!(config.max_connections_per_ip, 1000);
        assert_eq!(config.max_http_connections_per_ip, 256);
        assert_eq!(config.connect_rate, 50.0);
        assert_eq!(config.connect_burst, 100);
        assert!(config.trusted_proxies.is_empty());
        assert!(config.allowed_hosts.is_empty());
        let config = Config::try_parse_from([
            "server",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1/128",
            "--allowed-host",
            "a.test",
        ])
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.allowed_hosts, ["a.test"]);
        let one = Config::try_parse_from(["server", "--trusted-proxy", "10.0.0.1"]).unwrap();
        assert_eq!(one.trusted_proxies[0].to_string(), "10.0.0.1/32");
        assert!(Config::try_parse_from(["server", "--trusted-proxy", "10.0.0/8"]).is_err());
        assert!(Config::try_parse_from(["server", "--connect-rate", "-1"]).is_err());
    }
}
