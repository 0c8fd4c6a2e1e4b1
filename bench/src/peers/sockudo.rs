//! Sockudo 5.2 as a peer (issue 23): the Rust server of the Pusher
//! protocol, one process a node, its `local` adapter on one node and its
//! `redis` adapter on two; and the few Pusher protocol 7 frames our load
//! generator speaks to it, and the signed HTTP API that publishes.
//!
//! `cargo xtask bench --channels --peers sockudo` installs it with `cargo
//! install sockudo --locked --features redis` into `target/tools/sockudo`
//! (about 13 minutes on two cores, so only when asked); the version is
//! pinned there.
//!
//! Sockudo takes its address from `HOST` and `PORT` and logs the port it
//! was given, not the one bound, so it cannot be started on port 0 and
//! asked; like our server and the raw reference, it is given a free
//! loopback port ([`free_addr`]) and waited for until it accepts.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, ensure};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::harness::machine;
use crate::harness::procs::{Core, Guard, pinned};
use crate::harness::servers::{free_addr, spawn_listening};

/// The one app every node serves (`SOCKUDO_DEFAULT_APP_*`).
pub const APP_ID: &str = "bench";
/// Its key: clients connect to `/app/KEY`.
pub const APP_KEY: &str = "bench-key";
/// Its secret, which signs the HTTP API's requests.
const APP_SECRET: &str = "bench-secret";
/// The event name of the bench's publications.
pub const PUB_EVENT: &str = "pub";
/// Where `cargo xtask bench --channels --peers sockudo` installs it.
const INSTALL: &str = "target/tools/sockudo/bin/sockudo";

/// The WebSocket path of the Pusher protocol, version 7.
pub fn path() -> String {
    format!("/app/{APP_KEY}?protocol=7")
}

/// The binary, or why it is missing.
///
/// # Errors
///
/// When `cargo xtask bench --channels --peers sockudo` has not installed it.
pub fn binary() -> Result<PathBuf> {
    let path = machine::root().join(INSTALL);
    ensure!(
        path.is_file(),
        "Sockudo is not installed at {} (cargo xtask bench --channels --peers sockudo installs it)",
        path.display()
    );
    Ok(path)
}

/// `sockudo --version`, as it prints it (empty when missing).
pub fn version() -> String {
    binary()
        .map(|b| machine::sh(&format!("{} --version", b.display())))
        .unwrap_or_default()
}

/// A Sockudo node on a free loopback port, pinned to the server core with
/// `nofile` descriptors; with `redis`, on its redis adapter and cache. Returns once
/// it accepts connections.
///
/// Its rate limiter is off and its app's connection limit (100 by
/// default) raised to `nofile`: the bench measures the fan-out, not the
/// limits. Its metrics server is off (it binds a fixed port, 9601, which
/// two nodes would share). Its heartbeat is as it ships: an activity
/// timeout of 120 s, after which it sends `pusher:ping`, answered by the
/// load generator.
///
/// # Errors
///
/// When it is not installed, or does not listen within 10 s.
pub fn node(redis: Option<&str>, nofile: u64) -> Result<(Guard, SocketAddr)> {
    let addr = free_addr()?;
    let binary = binary()?;
    let mut command = pinned(Core::Server, nofile, &binary);
    // It reads `config/config.toml` (or `.json`) from its working directory
    // when there is one: run it where there is none, so that only the
    // environment below configures it.
    if let Some(dir) = binary.parent().and_then(std::path::Path::parent) {
        command.current_dir(dir);
    }
    command
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("SOCKUDO_DEFAULT_APP_ID", APP_ID)
        .env("SOCKUDO_DEFAULT_APP_KEY", APP_KEY)
        .env("SOCKUDO_DEFAULT_APP_SECRET", APP_SECRET)
        .env("SOCKUDO_DEFAULT_APP_ENABLED", "true")
        .env("SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS", nofile.to_string())
        .env("RATE_LIMITER_ENABLED", "false")
        .env("METRICS_ENABLED", "false")
        .env("SHUTDOWN_GRACE_PERIOD", "0")
        .env("RUST_LOG", "warn");
    match redis {
        // 5.2 refuses to start a clustered node on its node-local cache
        // ("clustered Ably compatibility and idempotency require
        // cache.driver=redis"): its cache goes to the same Redis.
        Some(url) => command
            .env("ADAPTER_DRIVER", "redis")
            .env("CACHE_DRIVER", "redis")
            .env("REDIS_URL", url),
        None => command.env("ADAPTER_DRIVER", "local"),
    };
    Ok((spawn_listening("sockudo", command, addr)?, addr))
}

/// `pusher:subscribe` to a public channel (no auth).
pub fn subscribe(channel: &str) -> String {
    format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#)
}

/// The answer to the server's `pusher:ping`.
pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// Whether a frame is the server's `pusher:ping`.
pub fn is_ping(frame: &str) -> bool {
    frame.contains(r#""event":"pusher:ping""#)
}

/// The event name of a frame (`pusher:connection_established`, `pub`, ...).
pub fn event_of(frame: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(frame).ok()?;
    value["event"].as_str().map(str::to_owned)
}

/// The `data` string of event `name` in a frame (`None` for any other).
pub fn data_of(frame: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(frame).ok()?;
    if value["event"].as_str() != Some(name) {
        return None;
    }
    match &value["data"] {
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The body and the signed URL of a publication of `data` (the payload,
/// sent as the Pusher event's data string) to `channel` on the node at
/// `addr`, signed at `timestamp` (Unix seconds): `POST
/// /apps/ID/events?auth_key=…&auth_timestamp=…&auth_version=1.0&body_md5=…&auth_signature=…`,
/// the signature HMAC-SHA256 of `POST\n/apps/ID/events\n{sorted query}`.
pub fn publication(
    addr: SocketAddr,
    channel: &str,
    data: &str,
    timestamp: u64,
) -> (String, String) {
    let body = serde_json::json!({"name": PUB_EVENT, "channel": channel, "data": data}).to_string();
    let path = format!("/apps/{APP_ID}/events");
    let body_md5 = format!("{:x}", md5::compute(body.as_bytes()));
    let query = format!(
        "auth_key={APP_KEY}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}"
    );
    let signature = sign(&format!("POST\n{path}\n{query}"));
    let url = format!("http://{addr}{path}?{query}&auth_signature={signature}");
    (url, body)
}

/// HMAC-SHA256 of `text` with the app's secret, in lower-case hex.
fn sign(text: &str) -> String {
    // A key of any length is accepted by HMAC.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()) else {
        return String::new();
    };
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_back() {
        let frame = r#"{"event":"pub","channel":"bench","data":"{\"n\":1,\"t\":2}"}"#;
        assert_eq!(
            data_of(frame, PUB_EVENT).as_deref(),
            Some(r#"{"n":1,"t":2}"#)
        );
        assert_eq!(data_of(frame, "other"), None);
        assert!(is_ping(r#"{"event":"pusher:ping","data":{}}"#));
        assert!(!is_ping(frame));
        assert_eq!(
            event_of(r#"{"event":"pusher_internal:subscription_succeeded","channel":"bench"}"#)
                .as_deref(),
            Some("pusher_internal:subscription_succeeded")
        );
        assert_eq!(
            subscribe("bench"),
            r#"{"event":"pusher:subscribe","data":{"channel":"bench"}}"#
        );
    }

    #[test]
    fn a_publication_is_signed_over_its_sorted_query() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 6001));
        let (url, body) = publication(addr, "bench", "x", 1_700_000_000);
        let md5 = format!("{:x}", md5::compute(body.as_bytes()));
        let query =
            format!("auth_key=bench-key&auth_timestamp=1700000000&auth_version=1.0&body_md5={md5}");
        let expected = sign(&format!("POST\n/apps/bench/events\n{query}"));
        assert_eq!(expected.len(), 64);
        assert_eq!(
            url,
            format!("http://127.0.0.1:6001/apps/bench/events?{query}&auth_signature={expected}")
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["data"], "x");
    }
}
