//! Loopback plumbing of the hostile run: sockets bound to a chosen
//! 127.0.0.N (one process holds at most 20,000 descriptors, and the server's
//! per-client limits count per address), raw HTTP, a raw WebSocket upgrade
//! and raw frames (a real client library cannot send broken ones), the
//! server's `/metrics`, its RSS from `/proc`, and one Redis command.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;

/// A connect, an upgrade or an HTTP answer within this long, or it failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain WebSocket client over a socket we bound ourselves.
pub type Ws = WebSocketStream<TcpStream>;

/// A TCP connection to `server` from `127.0.0.<src>`.
pub async fn tcp_from(src: u8, server: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, src], 0)))?;
    let tcp = tokio::time::timeout(IO_TIMEOUT, socket.connect(server))
        .await
        .context("connect timed out")??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A WebSocket upgrade on `path` from `127.0.0.<src>`: the socket, or the
/// HTTP status and `Retry-After` of a refusal.
pub async fn ws_from(
    src: u8,
    server: SocketAddr,
    path: &str,
) -> Result<std::result::Result<Ws, (u16, Option<String>)>> {
    let tcp = tcp_from(src, server).await?;
    let url = format!("ws://{server}{path}");
    match tokio::time::timeout(IO_TIMEOUT, tokio_tungstenite::client_async(url, tcp))
        .await
        .context("upgrade timed out")?
    {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(WsError::Http(response)) => Ok(Err((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))),
        Err(other) => Err(other.into()),
    }
}

/// One raw HTTP/1.1 request with `Connection: close` from 127.0.0.1: the
/// status and the body. `target` is sent as is (no normalisation).
pub async fn http(
    server: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
) -> Result<(u16, String)> {
    http_from(1, server, method, target, headers).await
}

/// [`http`] from `127.0.0.<src>`.
pub async fn http_from(
    src: u8,
    server: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
) -> Result<(u16, String)> {
    let mut tcp = tcp_from(src, server).await?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {server}\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, tcp.read_to_end(&mut out))
        .await
        .context("no HTTP answer in time")??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {:?}", text.get(..80)))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// The server's `/metrics`, each line `name{labels} value` as a map.
pub async fn metrics(server: SocketAddr) -> Result<HashMap<String, f64>> {
    let (status, body) = http(server, "GET", "/metrics", "").await?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// One metric, 0 when absent.
pub fn metric(all: &HashMap<String, f64>, name: &str) -> f64 {
    all.get(name).copied().unwrap_or(0.0)
}

/// The kernel's system-wide TCP counters (`TcpExt` in `/proc/net/netstat`),
/// e.g. `ListenOverflows`; empty where unreadable.
pub fn tcp_ext() -> HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    match rows.as_slice() {
        [names, values] => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
            .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Sends a WebSocket upgrade for `path` over `tcp` and reads the answer's
/// head; the status. Whatever followed the head is lost (the callers read
/// frames only after sending theirs, and skip every frame but a close).
pub async fn raw_upgrade(tcp: &mut TcpStream, server: SocketAddr, path: &str) -> Result<u16> {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so no frame after it is consumed.
    while !got.ends_with(b"\r\n\r\n") {
        if got.len() > 16 * 1024 {
            bail!("an upgrade answer over 16 KiB");
        }
        let n = tokio::time::timeout(IO_TIMEOUT, tcp.read(&mut byte))
            .await
            .context("no upgrade answer in time")??;
        if n == 0 {
            bail!("closed during the upgrade");
        }
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:?}"))
}

/// One frame as a client writes it: `first` is FIN, RSV and opcode; masked
/// with a fixed key when `mask`.
pub fn frame(first: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![first];
    let bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// How the server ended a raw WebSocket connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// A close frame with this code (0: a close frame without a code).
    Close(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
    /// Still open after the time given.
    Open,
}

/// Reads server frames (unmasked) until a close frame, EOF or `within`.
pub async fn ending(tcp: &mut (impl AsyncRead + Unpin), within: Duration) -> Ending {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Parse as many whole frames as the buffer holds.
        loop {
            if buf.len() < 2 {
                break;
            }
            let opcode = buf[0] & 0x0f;
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buf.len() < at + len {
                break;
            }
            if opcode == 8 {
                return Ending::Close(if len >= 2 {
                    u16::from_be_bytes([buf[at], buf[at + 1]])
                } else {
                    0
                });
            }
            buf.drain(..at + len);
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return Ending::Open,
            Ok(Ok(0) | Err(_)) => return Ending::Dropped,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One Redis command whose answer is an integer (`ZCARD`, say), over a
/// connection of its own (RESP by hand: one command needs no client).
pub async fn redis_integer(redis: SocketAddr, args: &[&str]) -> Result<i64> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let mut tcp = TcpStream::connect(redis).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        let n = tokio::time::timeout(IO_TIMEOUT, tcp.read(&mut byte))
            .await
            .context("no answer from Redis in time")??;
        if n == 0 {
            bail!("Redis closed before answering");
        }
        answer.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix(':')
        .and_then(|n| n.trim_end().parse().ok())
        .with_context(|| format!("not an integer answer from Redis: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_encoded_as_rfc_6455_says() {
        assert_eq!(frame(0x81, b"hi", false), vec![0x81, 2, b'h', b'i']);
        let masked = frame(0x81, b"hi", true);
        assert_eq!(masked[1], 0x82);
        assert_eq!(masked[6] ^ 0x12, b'h');
        let long = frame(0x82, &[0u8; 300], false);
        assert_eq!(&long[1..4], &[126, 1, 44]);
        let huge = frame(0x82, &vec![0u8; 70_000], false);
        assert_eq!(huge[1], 127);
    }
}
