//! Client connections of the load generator: loopback only, opened within a
//! bounded time, optionally from a chosen 127.0.0.x source address (one
//! source address gives at most about 28,000 ports towards one server).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::TcpSocket;

/// A connection opened within this long, or the run fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails unless `url` targets a loopback host: load is only ever sent there.
///
/// # Errors
///
/// When the host is not loopback.
pub fn check_loopback(url: &str) -> Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    if !(host == "localhost" || host.starts_with("127.") || host == "[") {
        bail!("load tests only target loopback addresses, not {host:?}");
    }
    Ok(())
}

/// A client WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` (within [`CONNECT_TIMEOUT`]), with `TCP_NODELAY`.
///
/// # Errors
///
/// When the connection or the upgrade fails or times out.
pub async fn connect(url: &str) -> Result<Ws> {
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .context("connect timed out")??;
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_nodelay(true)?;
    }
    Ok(ws)
}

/// The read buffer of the load generator's subscribers (channels, presence,
/// scale), 4 KiB in place of tungstenite's 128 KiB. tungstenite zero-fills
/// its read buffer up to that size before every read, so a subscriber that
/// reads one publication of about 150 bytes at a time spent 61% of its CPU
/// in `memset` (perf, 5,000 subscribers of one channel): the reader, not
/// the server, bounded the delays of every peer. A larger frame is still
/// read whole (tungstenite reserves its length), in reads of this size.
pub const SUBSCRIBER_READ_BUFFER: usize = 4 * 1024;

/// Upgrades `tcp` (from [`tcp_from`]) to a client WebSocket on `url`, with
/// [`SUBSCRIBER_READ_BUFFER`]. Not bounded in time here: the caller bounds
/// the whole opening.
///
/// # Errors
///
/// When the upgrade fails.
pub async fn subscriber(
    url: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(SUBSCRIBER_READ_BUFFER);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
    Ok(ws)
}

/// A TCP connection to `addr` from `127.0.0.src` (a port of its own),
/// with `TCP_NODELAY`, ready for a client upgrade. Not bounded in time
/// here: the caller bounds the whole opening.
///
/// # Errors
///
/// When `addr` is not loopback, or the bind or the connection fails.
pub async fn tcp_from(src: u8, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
    if !addr.ip().is_loopback() {
        bail!("load tests only target loopback addresses, not {addr}");
    }
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, src], 0)))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_a_target() {
        assert!(check_loopback("ws://127.0.0.1:1/ws").is_ok());
        assert!(check_loopback("ws://localhost:1/ws").is_ok());
        assert!(check_loopback("ws://10.0.0.1:1/ws").is_err());
        assert!(check_loopback("ws://example.com/ws").is_err());
    }
}
