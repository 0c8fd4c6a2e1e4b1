//! Limits on WebSocket connections: the descriptor limit, the caps and the
//! per-client connect rate.
//!
//! - At start the soft `RLIMIT_NOFILE` is raised to the hard limit (as Go's
//!   runtime does) and logged; `--max-connections` defaults to that limit
//!   minus a reserve (a tenth of it, 32 to 1024 descriptors), so that a
//!   WebSocket flood is refused before descriptors run out and `/healthz`,
//!   `/metrics` and `/api` stay reachable.
//! - Every WebSocket upgrade takes a [`Slot`] before it is answered: one of
//!   `--max-connections` and one of its client's `--max-connections-per-ip`
//!   (beyond either: 503 with `Retry-After`), after a token from its client's
//!   `--connect-rate` bucket (none left: 429 with `Retry-After`). The slot is
//!   held by the upgraded connection and freed when its socket closes.
//! - Clients are keyed by address, IPv6 ones by their /64 (one host usually
//!   has a whole /64); the address is the one `peer` resolved (behind a
//!   `--trusted-proxy`, from `X-Forwarded-For`).
//!
//! Every limit is off at 0.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics::{Metrics, Rejection};

/// `Retry-After` of a 503 at a connection cap: other clients must leave first.
pub const CAP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit
/// now in force (`None` where there is no such limit or it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let (before, hard) = match rlimit::Resource::NOFILE.get() {
            Ok(limits) => limits,
            Err(err) => {
                tracing::warn!("cannot read the descriptor limit: {err}");
                return None;
            }
        };
        match rlimit::increase_nofile_limit(hard) {
            Ok(now) => {
                tracing::info!("descriptor limit {now} (soft limit was {before}, hard {hard})");
                Some(now)
            }
            Err(err) => {
                tracing::warn!("descriptor limit {before}: cannot raise it to {hard}: {err}");
                Some(before)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The default of `--max-connections`: the descriptor limit less a reserve
/// of a tenth of it, at least 32 and at most 1024 descriptors; no cap when
/// the limit is unknown.
pub fn default_max_connections(nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else {
        return 0;
    };
    let reserve = (nofile / 10).clamp(32, 1024);
    usize::try_from(nofile.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// `--max-connections` reached: 503.
    MaxConnections,
    /// The client's `--max-connections-per-ip` reached: 503.
    MaxConnectionsPerIp,
    /// The client's `--connect-rate` bucket is empty: 429, retry after this long.
    ConnectRate(Duration),
}

impl Refusal {
    /// The counter this refusal goes to.
    pub fn rejection(self) -> Rejection {
        match self {
            Self::MaxConnections => Rejection::MaxConnections,
            Self::MaxConnectionsPerIp => Rejection::MaxConnectionsPerIp,
            Self::ConnectRate(_) => Rejection::ConnectRate,
        }
    }
}

/// The caps and buckets of every client.
#[derive(Debug)]
pub struct Limits {
    max_connections: usize,
    per_ip: usize,
    /// Tokens per second and bucket size; `None` when off.
    rate: Option<(f64, f64)>,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// `--max-http-connections-per-ip`; 0: off.
    http_per_ip: usize,
    /// TCP connections not (yet) upgraded, by peer address.
    http_by_ip: Mutex<HashMap<IpAddr, usize>>,
    buckets: Mutex<Buckets>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<IpAddr, Bucket>,
    /// The map is pruned of full (idle) buckets when it reaches this size.
    prune_at: usize,
}

/// A token bucket: `rate` tokens a second, `burst` at most (the connect
/// rate per address; a connection's publications).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One WebSocket connection's place under the caps; freed on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    /// The client's key in `by_ip`, when that cap is on.
    ip: Option<IpAddr>,
}

impl Limits {
    /// The limits of `config`; `nofile` is the descriptor limit, for the
    /// default of `--max-connections`.
    pub fn new(config: &Config, nofile: Option<u64>, metrics: Arc<Metrics>) -> Self {
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| default_max_connections(nofile));
        let rate = (config.connect_rate > 0.0 && config.connect_burst > 0)
            .then_some((config.connect_rate, f64::from(config.connect_burst)));
        Metrics::set(
            &metrics.ws_connections_limit,
            u64::try_from(max_connections).unwrap_or(u64::MAX),
        );
        Metrics::set(&metrics.open_files_limit, nofile.unwrap_or(0));
        tracing::info!(
            "WebSocket caps: {} in all, {} per client address, connect rate {}",
            cap_text(max_connections),
            cap_text(config.max_connections_per_ip),
            rate.map_or_else(
                || "off".to_owned(),
                |(rate, burst)| format!("{rate}/s (burst {burst})")
            )
        );
        Self {
            max_connections,
            per_ip: config.max_connections_per_ip,
            rate,
            open: AtomicUsize::new(0),
            by_ip: Mutex::default(),
            http_per_ip: config.max_http_connections_per_ip,
            http_by_ip: Mutex::default(),
            buckets: Mutex::default(),
            metrics,
        }
    }

    /// Admits one more WebSocket connection from `client`, or says why not.
    ///
    /// # Errors
    ///
    /// The [`Refusal`]; nothing is held then.
    pub fn admit(self: &Arc<Self>, client: IpAddr, now: Instant) -> Result<Slot, Refusal> {
        let key = key(client);
        if let Some((rate, burst)) = self.rate {
            let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
            buckets.take(key, now, rate, burst)?;
        }
        let open = self.open.fetch_add(1, Relaxed);
        if self.max_connections > 0 && open >= self.max_connections {
            self.open.fetch_sub(1, Relaxed);
            return Err(Refusal::MaxConnections);
        }
        let mut ip = None;
        if self.per_ip > 0 {
            if !take(&self.by_ip, key, self.per_ip) {
                self.open.fetch_sub(1, Relaxed);
                return Err(Refusal::MaxConnectionsPerIp);
            }
            ip = Some(key);
        }
        Metrics::add(&self.metrics.ws_slots, 1);
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Limits {
    /// Admits one more TCP connection from `peer` until it is upgraded or
    /// ends (`--max-http-connections-per-ip`); `None` when that address
    /// holds its share already. Always admitted when the cap is off.
    pub fn admit_http(self: &Arc<Self>, peer: IpAddr) -> Option<HttpSlot> {
        if self.http_per_ip == 0 {
            return Some(HttpSlot {
                limits: None,
                ip: peer,
            });
        }
        let ip = key(peer);
        take(&self.http_by_ip, ip, self.http_per_ip).then(|| HttpSlot {
            limits: Some(self.clone()),
            ip,
        })
    }
}

/// One TCP connection's place under `--max-http-connections-per-ip`; freed
/// on drop (when the connection ends or is upgraded).
#[derive(Debug)]
pub struct HttpSlot {
    /// `None` when the cap is off.
    limits: Option<Arc<Limits>>,
    ip: IpAddr,
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        if let Some(limits) = &self.limits {
            give_back(&limits.http_by_ip, self.ip);
        }
    }
}

/// Counts one more for `key` unless it holds `cap` already.
fn take(counts: &Mutex<HashMap<IpAddr, usize>>, key: IpAddr, cap: usize) -> bool {
    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
    let count = counts.entry(key).or_insert(0);
    if *count >= cap {
        return false;
    }
    *count += 1;
    true
}

/// Counts one less for `key`, forgetting it at zero.
fn give_back(counts: &Mutex<HashMap<IpAddr, usize>>, key: IpAddr) {
    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let limits = &self.limits;
        if let Some(ip) = self.ip {
            give_back(&limits.by_ip, ip);
        }
        Metrics::sub(&limits.metrics.ws_slots, 1);
        limits.open.fetch_sub(1, Relaxed);
    }
}

impl Buckets {
    fn take(&mut self, key: IpAddr, now: Instant, rate: f64, burst: f64) -> Result<(), Refusal> {
        if self.map.len() >= self.prune_at.max(1024) {
            // Forget the clients whose bucket has refilled: they lose nothing.
            self.map.retain(|_, b| b.level(now, rate, burst) < burst);
            self.prune_at = self.map.len() * 2;
        }
        let bucket = self
            .map
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now));
        bucket.take(now, rate, burst).map_err(Refusal::ConnectRate)
    }
}

impl Bucket {
    /// A bucket holding `burst` tokens at `now`.
    pub(crate) fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub(crate) fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), Duration> {
        self.tokens = self.level(now, rate, burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::try_from_secs_f64((1.0 - self.tokens) / rate).unwrap_or(Duration::MAX))
        }
    }

    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

/// The key a client is counted under: its address, an IPv6 one cut to its /64
/// (`--max-sessions-per-ip` counts the same way).
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn cap_text(cap: usize) -> String {
    if cap == 0 {
        "no cap".to_owned()
    } else {
        cap.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limits(args: &[&str]) -> Arc<Limits> {
        let mut all = vec!["server"];
        all.extend_from_slice(args);
        let config = Config::try_parse_from(all).unwrap();
        Arc::new(Limits::new(&config, Some(4096), Arc::default()))
    }

    #[test]
    fn the_default_cap_leaves_a_reserve() {
        assert_eq!(default_max_connections(Some(1024)), 1024 - 102);
        assert_eq!(default_max_connections(Some(200)), 200 - 32);
        assert_eq!(default_max_connections(Some(1 << 20)), (1 << 20) - 1024);
        assert_eq!(default_max_connections(Some(10)), 1);
        assert_eq!(default_max_connections(None), 0);
    }

    #[test]
    fn slots_are_capped_in_all_and_per_client_and_freed_on_drop() {
        let limits = limits(&[
            "--max-connections",
            "3",
            "--max-connections-per-ip",
            "2",
            "--connect-rate",
            "0",
        ]);
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a, now).unwrap();
        let _a2 = limits.admit(a, now).unwrap();
        assert_eq!(
            limits.admit(a, now).unwrap_err(),
            Refusal::MaxConnectionsPerIp
        );
        let _b1 = limits.admit(b, now).unwrap();
        assert_eq!(limits.admit(b, now).unwrap_err(), Refusal::MaxConnections);
        drop(a1);
        let _a3 = limits.admit(a, now).unwrap();
        assert_eq!(limits.metrics.ws_slots.load(Relaxed), 3);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_v4_as_v4() {
        let limits = limits(&["--max-connections-per-ip", "1", "--connect-rate", "0"]);
        let now = Instant::now();
        let _one = limits.admit("2001:db8::1".parse().unwrap(), now).unwrap();
        assert!(limits.admit("2001:db8::2".parse().unwrap(), now).is_err());
        assert!(
            limits
                .admit("2001:db8:0:1::1".parse().unwrap(), now)
                .is_ok()
        );
        let _v4 = limits.admit("10.1.1.1".parse().unwrap(), now).unwrap();
        assert!(
            limits
                .admit("::ffff:10.1.1.1".parse().unwrap(), now)
                .is_err()
        );
    }

    #[test]
    fn the_connect_rate_is_a_token_bucket() {
        let limits = limits(&[
            "--connect-rate",
            "2",
            "--connect-burst",
            "3",
            "--max-connections-per-ip",
            "0",
        ]);
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| limits.admit(ip, t0).unwrap()).collect();
        match limits.admit(ip, t0) {
            Err(Refusal::ConnectRate(wait)) => assert_eq!(wait, Duration::from_millis(500)),
            other => panic!("expected a rate refusal, got {other:?}"),
        }
        // Another client has its own bucket.
        assert!(limits.admit("10.0.0.10".parse().unwrap(), t0).is_ok());
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limits.admit(ip, t1).is_ok());
        assert!(limits.admit(ip, t1).is_err());
        drop(held);
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let mut buckets = Buckets::default();
        let t0 = Instant::now();
        for i in 0..1024u32 {
            buckets
                .take(IpAddr::from(i.to_be_bytes()), t0, 10.0, 5.0)
                .unwrap();
        }
        // A second later every bucket is full again: all are forgotten but the new one.
        let t1 = t0 + Duration::from_secs(1);
        buckets
            .take("10.9.9.9".parse().unwrap(), t1, 10.0, 5.0)
            .unwrap();
        assert_eq!(buckets.map.len(), 1);
    }
}
