//! Who a request comes from, and to which host: the client address behind
//! `--trusted-proxy` and the `--allowed-host` list.
//!
//! Behind a load balancer every client shares the balancer's address, so the
//! per-client limits would count them all as one. From a peer inside a
//! `--trusted-proxy` network only, the client address is taken from
//! `X-Forwarded-For`: its entries are read from the right (the hop nearest to
//! us), trusted proxies are skipped, and the first other address is the
//! client. From any other peer the header is ignored, since anyone can send it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use ipnet::IpNet;

/// The client's address: the TCP peer's or, from a `--trusted-proxy`, the one
/// in `X-Forwarded-For` (with its port when the header gives one, else 0).
///
/// Inserted into every request's extensions by the accept loop; as an
/// extractor it falls back to `ConnectInfo<SocketAddr>` (routers served
/// some other way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(client) = parts.extensions.get::<Self>() {
            return Ok(*client);
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| Self(*peer))
            .ok_or((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the client address is unknown",
            ))
    }
}

/// The `--trusted-proxy` networks.
#[derive(Debug, Default)]
pub struct Proxies(Vec<IpNet>);

impl Proxies {
    /// Trusts these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is in a `--trusted-proxy` network.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer` with these headers.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return ClientAddr(peer);
        }
        let mut client = peer;
        // Several headers count as one list, in order.
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.to_str().unwrap_or(""))
            .collect::<Vec<_>>();
        for entry in entries.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(hop) = parse_hop(entry.trim()) else {
                // Garbage: the nearest address we can vouch for stands.
                tracing::debug!(
                    entry = %crate::logsafe::escape(entry),
                    %peer,
                    "X-Forwarded-For entry is not an address"
                );
                break;
            };
            client = hop;
            if !self.trusts(hop.ip()) {
                break;
            }
        }
        ClientAddr(client)
    }
}

/// `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1` or `[2001:db8::1]:5`.
fn parse_hop(entry: &str) -> Option<SocketAddr> {
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

/// The `--allowed-host` list; empty allows every host.
#[derive(Debug, Default)]
pub struct Hosts(Vec<(String, Option<u16>)>);

impl Hosts {
    /// Allows these hosts (`name` allows any port, `name:port` that one).
    pub fn new(hosts: &[String]) -> Self {
        Self(
            hosts
                .iter()
                .map(|h| split_host(h.trim()))
                .map(|(name, port)| (name.to_ascii_lowercase(), port))
                .collect(),
        )
    }

    /// Whether a request for `host` (its `Host` header, or the authority of
    /// an absolute URI) is served.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        let (name, port) = split_host(host.trim());
        let name = name.trim_end_matches('.');
        self.0.iter().any(|(allowed, allowed_port)| {
            allowed.trim_end_matches('.').eq_ignore_ascii_case(name)
                && allowed_port.is_none_or(|p| Some(p) == port)
        })
    }
}

/// `name[:port]`, `[v6][:port]` or a bare IPv6 address.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        return match host.rsplit_once("]:") {
            Some((name, port)) => (&host[..=name.len()], port.parse().ok()),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        // More than one colon: a bare IPv6 address.
        Some((name, _)) if name.contains(':') => (host, None),
        Some((name, port)) => (name, port.parse().ok()),
        None => (host, None),
    }
}

/// The host a request names: its `Host` header, else its URI's authority.
pub fn host_of<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = Proxies::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let client = |peer, h: &[&str]| proxies.client(peer, &xff(h)).0.to_string();
        assert_eq!(client(proxy, &["198.51.100.1"]), "198.51.100.1:0");
        // The rightmost untrusted hop wins: the left part is the client's to forge.
        assert_eq!(
            client(proxy, &["6.6.6.6, 198.51.100.1, 10.1.2.3"]),
            "198.51.100.1:0"
        );
        assert_eq!(
            client(proxy, &["6.6.6.6", "198.51.100.1:443"]),
            "198.51.100.1:443"
        );
        assert_eq!(client(proxy, &["[2001:db8::5]:80"]), "[2001:db8::5]:80");
        assert_eq!(client(proxy, &["2001:db8::5"]), "[2001:db8::5]:0");
        // Every hop trusted: the farthest one.
        assert_eq!(client(proxy, &["10.0.0.2, 10.0.0.3"]), "10.0.0.2:0");
        // Garbage stops the walk at the nearest address we trust.
        assert_eq!(client(proxy, &["198.51.100.1, junk"]), "127.0.0.1:5000");
        assert_eq!(client(proxy, &[]), "127.0.0.1:5000");
        // Not from a proxy: the header is ignored.
        assert_eq!(client(stranger, &["198.51.100.1"]), "192.0.2.7:5000");
        assert_eq!(
            Proxies::default().client(proxy, &xff(&["198.51.100.1"])).0,
            proxy
        );
    }

    #[test]
    fn hosts_match_by_name_and_optional_port() {
        let hosts = Hosts::new(&[
            "Example.test".into(),
            "api.test:8443".into(),
            "[::1]:80".into(),
        ]);
        assert!(hosts.allows(Some("example.test")));
        assert!(hosts.allows(Some("EXAMPLE.test:8080")));
        assert!(hosts.allows(Some("example.test.")));
        assert!(hosts.allows(Some("api.test:8443")));
        assert!(!hosts.allows(Some("api.test:8444")));
        assert!(!hosts.allows(Some("api.test")));
        assert!(hosts.allows(Some("[::1]:80")));
        assert!(!hosts.allows(Some("[::1]:81")));
        assert!(!hosts.allows(Some("evil.example")));
        assert!(!hosts.allows(Some("example.test.evil.example")));
        assert!(!hosts.allows(None));
        assert!(Hosts::new(&[]).allows(None));
        assert!(Hosts::new(&[]).allows(Some("anything")));
    }
}
