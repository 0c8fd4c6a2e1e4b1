//! Hostile clients against the real server on port 0 (issue 12): slowloris,
//! bodies that never come, half-sent requests at shutdown, connection floods,
//! fast reconnects, silent and non-reading `/echo` clients, forged
//! `X-Forwarded-For`, foreign `Host`s, log injection, and reliable sessions:
//! one client taking them all, failed-resume probes, histories past their
//! total budget or their age. Each test asserts
//! the protection, bounded in count (hundreds of connections at most) and in
//! time (polling with deadlines).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use shared::close_code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The admin token of these tests (at least 16 bytes, as the server requires).
const ADMIN: &str = "hardening-admin-token";

/// How the server ended a raw connection, or that it did not within the time.
#[derive(Debug, PartialEq)]
enum Ended {
    /// EOF or reset, with what the server sent before.
    Closed(Vec<u8>),
    /// Still open after the time given.
    Open,
}

/// Reads (and optionally drips one byte every 100 ms) until the server ends
/// the connection or `within` passes.
async fn ended_within(tcp: &mut TcpStream, within: Duration, drip: bool) -> Ended {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if drip && tcp.write_all(b"X").await.is_err() {
            return Ended::Closed(got);
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ended::Closed(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    Ended::Open
}

async fn raw(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.addr).await.unwrap()
}

/// One request with `Connection: close` over raw TCP: the status and body.
async fn request(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out))
        .await
        .expect("an answer within the deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

async fn get(addr: std::net::SocketAddr, path: &str, host: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Connects to `path` with extra headers; the HTTP refusal if there is one.
async fn try_ws(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .expect("an answer to the upgrade within the deadline")
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(*response),
        Err(other) => panic!("unexpected upgrade failure: {other}"),
    }
}

fn retry_after(response: &tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- finding 1

#[tokio::test]
async fn slowloris_requests_are_dropped_after_the_handshake_timeout() {
    let server = start(&["--handshake-timeout", "300ms"]).await;
    // 200 half-sent requests, one of which keeps dripping a byte every 100 ms.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut tcp = raw(&server).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(tcp);
    }
    let started = Instant::now();
    let mut dripper = raw(&server).await;
    dripper
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(matches!(
        ended_within(&mut dripper, DEADLINE, true).await,
        Ended::Closed(_)
    ));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "dropped too early: {took:?}"
    );
    // Legitimate clients are served meanwhile and after.
    assert_eq!(get(server.addr, "/healthz", "x").await, (200, "ok".into()));
    for tcp in &mut held {
        assert!(matches!(
            ended_within(tcp, DEADLINE, false).await,
            Ended::Closed(_)
        ));
    }
    wait_until("every slowloris connection counted", || async {
        metric(&server, "http_dropped_total{reason=\"handshake_timeout\"}").await >= 201
    })
    .await;
    // Only the /metrics request itself is open.
    assert_eq!(metric(&server, "tcp_connections_open").await, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn keepalive_is_timed_apart_from_the_handshake() {
    // Headers due within 300 ms, but an idle keep-alive connection may wait 1.5 s.
    let server = start(&[
        "--handshake-timeout",
        "300ms",
        "--keepalive-timeout",
        "1500ms",
    ])
    .await;
    let mut tcp = raw(&server).await;
    let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(ask).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle for longer than the handshake timeout: still open.
    assert_eq!(
        ended_within(&mut tcp, Duration::from_millis(800), false).await,
        Ended::Open
    );
    tcp.write_all(ask).await.unwrap();
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(matches!(
        ended_within(&mut tcp, DEADLINE, false).await,
        Ended::Closed(_)
    ));
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(1200), "closed after {idle:?}");
    assert_eq!(
        metric(&server, "http_dropped_total{reason=\"keepalive_timeout\"}").await,
        1
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_keepalive_connections_close_after_the_keepalive_timeout() {
    let server = start(&["--handshake-timeout", "10s", "--keepalive-timeout", "300ms"]).await;
    let mut tcp = raw(&server).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    match ended_within(&mut tcp, DEADLINE, false).await {
        Ended::Closed(got) => assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}"),
        Ended::Open => panic!("an idle keep-alive connection stayed open"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_websocket_is_not_bound_by_the_http_timeouts() {
    let server = start(&[
        "--handshake-timeout",
        "200ms",
        "--keepalive-timeout",
        "200ms",
        "--body-timeout",
        "200ms",
    ])
    .await;
    let mut ws = server.connect("/echo").await;
    // Three times every timeout, silent: nothing happens.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), ws.next())
            .await
            .is_err()
    );
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("still here"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_that_never_comes_is_answered_408() {
    let server = start(&["--admin-token", ADMIN, "--body-timeout", "300ms"]).await;
    let mut tcp = raw(&server).await;
    tcp.write_all(
        b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hardening-admin-token\r\n\
          Content-Length: 10000000000\r\n\r\nonly this",
    )
    .await
    .unwrap();
    match ended_within(&mut tcp, DEADLINE, false).await {
        Ended::Closed(got) => {
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        }
        Ended::Open => panic!("the server still waits for the body"),
    }
    assert_eq!(
        metric(&server, "http_dropped_total{reason=\"body_timeout\"}").await,
        1
    );
    // A body that arrives in time is served as before.
    let (status, body) = request(
        server.addr,
        "POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hardening-admin-token\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- finding 2

#[tokio::test]
async fn shutdown_drops_a_half_sent_request_within_the_shutdown_timeout() {
    // No handshake timeout: only the shutdown bound can end this request.
    let server = start(&["--handshake-timeout", "0", "--shutdown-timeout", "500ms"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    let mut tcp = raw(&server).await;
    tcp.write_all(b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    wait_until("the half-sent request accepted", || async {
        metric(&server, "tcp_connections_open").await >= 3
    })
    .await;
    let started = Instant::now();
    server.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::GOING_AWAY);
    assert!(matches!(
        ended_within(&mut tcp, Duration::from_secs(2), false).await,
        Ended::Closed(_)
    ));
}

/// The server binary as a child process, its stdout drained into a buffer.
struct ServerProcess {
    child: Child,
    addr: std::net::SocketAddr,
    out: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts the binary under `sh -c '<prefix> exec server --addr 127.0.0.1:0 ...'`.
    async fn start(prefix: &str, args: &[&str]) -> Self {
        let script = format!("{prefix} exec \"$0\" \"$@\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_server"))
            .args(["--addr", "127.0.0.1:0", "--static-dir", "/nonexistent"])
            .args(["--push-interval", "0", "--ping-interval", "0"])
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let deadline = Instant::now() + DEADLINE;
        let addr = loop {
            let found = out.lock().unwrap().lines().find_map(|l| {
                let rest = l.split_once("listening on http://")?.1;
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start: {}",
                out.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { child, addr, out }
    }

    async fn metric(&self, name: &str) -> u64 {
        let (status, text) = get(self.addr, "/metrics", "x").await;
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// utime + stime of the process, in clock ticks (Linux).
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_exits_within_the_shutdown_timeout_while_a_request_is_half_sent() {
    let mut server = ServerProcess::start(
        "",
        &["--handshake-timeout", "0", "--shutdown-timeout", "500ms"],
    )
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while server.metric("tcp_connections_open").await < 2 {
        assert!(
            Instant::now() < deadline,
            "the half-sent request was not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    let out = server.out.lock().unwrap().clone();
    assert!(
        out.contains("descriptor limit"),
        "the limit is logged:\n{out}"
    );
}

// ---------------------------------------------------------------- finding 3

#[tokio::test]
async fn the_websocket_cap_answers_503_and_frees_on_close() {
    let server = start(&[
        "--max-connections",
        "3",
        "--max-connections-per-ip",
        "0",
        "--connect-rate",
        "0",
    ])
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(server.connect("/echo").await);
    }
    let refused = try_ws(&server.ws_url("/echo"), &[]).await.unwrap_err();
    assert_eq!(refused.status(), 503);
    assert!(retry_after(&refused) >= 1);
    // /ws counts against the same cap.
    assert_eq!(
        try_ws(&server.ws_url("/ws"), &[])
            .await
            .unwrap_err()
            .status(),
        503
    );
    assert_eq!(
        metric(
            &server,
            "ws_rejected_upgrades_total{reason=\"max_connections\"}"
        )
        .await,
        2
    );
    assert_eq!(metric(&server, "ws_connection_slots").await, 3);
    assert_eq!(get(server.addr, "/healthz", "x").await, (200, "ok".into()));
    // The others are still served.
    open[0].send(Message::text("a")).await.unwrap();
    assert_eq!(next_message(&mut open[0]).await, Message::text("a"));
    // A closed connection frees its place.
    let mut gone = open.pop().unwrap();
    gone.close(None).await.unwrap();
    let _ = expect_close(&mut gone).await;
    drop(gone);
    let deadline = Instant::now() + DEADLINE;
    let _again = loop {
        if let Ok(ws) = try_ws(&server.ws_url("/echo"), &[]).await {
            break ws;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_per_client_cap_counts_the_forwarded_client_only_from_trusted_proxies() {
    // Not trusted: X-Forwarded-For is ignored, every connection is 127.0.0.1's.
    let server = start(&["--max-connections-per-ip", "2", "--connect-rate", "0"]).await;
    let url = server.ws_url("/echo");
    let _a = try_ws(&url, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .unwrap();
    let _b = try_ws(&url, &[("x-forwarded-for", "198.51.100.2")])
        .await
        .unwrap();
    let refused = try_ws(&url, &[("x-forwarded-for", "198.51.100.3")])
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 503);
    assert!(retry_after(&refused) >= 1);
    assert_eq!(
        metric(
            &server,
            "ws_rejected_upgrades_total{reason=\"max_connections_per_ip\"}"
        )
        .await,
        1
    );
    server.shutdown().await.unwrap();

    // Behind a trusted proxy each forwarded client has its own count.
    let server = start(&[
        "--max-connections-per-ip",
        "2",
        "--connect-rate",
        "0",
        "--trusted-proxy",
        "127.0.0.1",
        "--admin-token",
        ADMIN,
    ])
    .await;
    let url = server.ws_url("/ws");
    let one = [("x-forwarded-for", "198.51.100.1")];
    let _a = try_ws(&url, &one).await.unwrap();
    let _b = try_ws(&url, &one).await.unwrap();
    assert_eq!(try_ws(&url, &one).await.unwrap_err().status(), 503);
    let mut other = try_ws(&url, &[("x-forwarded-for", "6.6.6.6, 198.51.100.2")])
        .await
        .unwrap();
    assert!(matches!(
        next_json(&mut other).await,
        shared::ServerMessage::Welcome { .. }
    ));
    // The admin list shows the forwarded address.
    let clients: serde_json::Value = reqwest::Client::new()
        .get(server.http_url("/api/clients"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let addrs: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["remote_addr"].as_str().unwrap())
        .collect();
    assert!(addrs.contains(&"198.51.100.2:0"), "{addrs:?}");
    assert!(
        addrs.iter().all(|a| a.starts_with("198.51.100.")),
        "{addrs:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_connect_rate_answers_429_with_retry_after() {
    let server = start(&[
        "--connect-rate",
        "0.5",
        "--connect-burst",
        "3",
        "--max-connections-per-ip",
        "0",
    ])
    .await;
    for _ in 0..3 {
        let mut ws = server.connect("/echo").await;
        ws.close(None).await.unwrap();
    }
    let refused = try_ws(&server.ws_url("/echo"), &[]).await.unwrap_err();
    assert_eq!(refused.status(), 429);
    // One token every two seconds.
    let wait = retry_after(&refused);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        metric(
            &server,
            "ws_rejected_upgrades_total{reason=\"connect_rate\"}"
        )
        .await,
        1
    );
    // Plain HTTP is not rate-limited.
    for _ in 0..5 {
        assert_eq!(get(server.addr, "/healthz", "x").await.0, 200);
    }
    server.shutdown().await.unwrap();
}

/// With 200 descriptors, a WebSocket flood is refused at the cap and
/// /healthz and /metrics stay reachable; a raw TCP flood that takes the
/// rest makes accept back off (without spinning) until descriptors free.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_flood_leaves_descriptors_for_health_and_metrics() {
    let server = ServerProcess::start(
        "ulimit -n 200 &&",
        &[
            "--max-connections-per-ip",
            "0",
            "--connect-rate",
            "0",
            "--handshake-timeout",
            "2s",
        ],
    )
    .await;
    assert_eq!(server.metric("process_open_files_limit").await, 200);
    let cap = server.metric("ws_connections_limit").await;
    assert_eq!(cap, 200 - 32);
    let url = format!("ws://{}/echo", server.addr);
    let mut flood = Vec::new();
    let mut refused = None;
    for _ in 0..300 {
        match try_ws(&url, &[]).await {
            Ok(ws) => flood.push(ws),
            Err(response) => {
                refused = Some(response.status());
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(tokio_tungstenite::tungstenite::http::StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(flood.len() as u64, cap);
    // During the flood health and metrics answer.
    assert_eq!(get(server.addr, "/healthz", "x").await, (200, "ok".into()));
    assert_eq!(server.metric("ws_connection_slots").await, cap);
    assert_eq!(
        server
            .metric("ws_rejected_upgrades_total{reason=\"max_connections\"}")
            .await,
        1
    );
    // Now take every descriptor left with connections that send nothing.
    let before = server.cpu_ticks();
    let mut raws = Vec::new();
    for _ in 0..40 {
        raws.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Over a second of exhaustion accept backs off instead of spinning.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticks = server.cpu_ticks() - before;
    // 100 ticks is a whole core for the second.
    assert!(
        ticks < 40,
        "{ticks} ticks of CPU while descriptors were out"
    );
    // The handshake timeout frees them, and the server answers again.
    assert_eq!(get(server.addr, "/healthz", "x").await, (200, "ok".into()));
    assert!(
        server
            .metric("accept_errors_total{reason=\"descriptors\"}")
            .await
            >= 1
    );
    // The flood's WebSockets are still served.
    flood[0].send(Message::text("after")).await.unwrap();
    assert_eq!(next_message(&mut flood[0]).await, Message::text("after"));
    drop(raws);
}

// ---------------------------------------------------------------- finding 4

#[tokio::test]
async fn a_silent_echo_client_is_closed_after_the_idle_timeout() {
    let server = start(&["--idle-timeout", "400ms"]).await;
    let mut ws = server.connect("/echo").await;
    let frame = expect_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), close_code::IDLE_TIMEOUT);
    wait_until("the connection gone", || async {
        metric(&server, "ws_connections_open").await == 0
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_pings_and_a_client_that_answers_stays() {
    let server = start(&["--ping-interval", "100ms", "--idle-timeout", "600ms"]).await;
    let mut ws = server.connect("/echo").await;
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    // Reading answers the pings (tungstenite sends the pongs).
    while let Ok(message) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), ws.next()).await
    {
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 1.5 s");
    ws.send(Message::text("alive")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("alive"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_echo_client_that_never_reads_is_dropped_after_the_write_timeout() {
    let server = start(&["--write-timeout", "300ms"]).await;
    let ws = server.connect("/echo").await;
    let (mut sink, stream) = ws.split();
    // 16 MiB messages, more than the loopback buffers hold, never read back.
    let writer = tokio::spawn(async move {
        for _ in 0..3 {
            if sink
                .send(Message::binary(vec![7u8; 16 * 1024 * 1024]))
                .await
                .is_err()
            {
                break;
            }
        }
        sink
    });
    wait_until("the slow consumer closed", || async {
        metric(&server, "ws_slow_consumer_closes_total").await == 1
            && metric(&server, "ws_connections_open").await == 0
    })
    .await;
    drop(stream);
    writer.abort();
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- finding 5

/// Sends up to `count` copies of `message` on `path` without ever reading,
/// until the server closes the connection as a slow consumer; returns the
/// largest `ws_send_queue_bytes` seen meanwhile.
async fn flood_without_reading(
    server: &TestServer,
    path: &str,
    message: Message,
    count: usize,
) -> u64 {
    let ws = server.connect(path).await;
    let (mut sink, stream) = ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..count {
            if sink.send(message.clone()).await.is_err() {
                break;
            }
        }
        sink
    });
    let max = std::sync::atomic::AtomicU64::new(0);
    wait_until("the slow consumer closed", || {
        let max = &max;
        async move {
            let queued = metric(server, "ws_send_queue_bytes").await;
            max.fetch_max(queued, std::sync::atomic::Ordering::Relaxed);
            metric(server, "ws_slow_consumer_closes_total").await == 1
                && metric(server, "ws_connections_open").await == 0
        }
    })
    .await;
    drop(stream);
    writer.abort();
    max.into_inner()
}

#[tokio::test]
async fn the_send_queue_is_bounded_in_bytes_and_a_reader_that_stalls_gets_1013() {
    const BOUND: u64 = 256 * 1024;
    let server = start(&["--send-queue-bytes", "262144", "--write-timeout", "500ms"]).await;
    let body = "x".repeat(60_000);
    let echo = Message::text(format!(r#"{{"type":"echo","id":1,"body":"{body}"}}"#));
    let max = flood_without_reading(&server, "/ws", echo, 2_000).await;
    // 1,024 queued messages of 60 KB would be 60 MB. The connection's one
    // task stops reading while its writes are blocked, so its replies in
    // flight (counted until flushed) stay within a batch under the bound.
    assert!(max <= BOUND + 60_100, "{max} bytes queued");
    assert!(max > 0, "nothing was ever counted");
    wait_until("the queue emptied", || async {
        metric(&server, "ws_send_queue_bytes").await == 0
    })
    .await;
    server.shutdown().await.unwrap();

    // A message larger than the bound still passes an empty queue.
    let server = start(&["--send-queue-bytes", "1000"]).await;
    let (mut ws, _) = server.connect_ws("/ws").await;
    for id in 0..3 {
        send_text(
            &mut ws,
            &format!(r#"{{"type":"echo","id":{id},"body":"{body}"}}"#),
        )
        .await;
    }
    for want in 0..3 {
        match next_json(&mut ws).await {
            shared::ServerMessage::Echo { id, body: got } => {
                assert_eq!((id, got.len()), (want, body.len()));
            }
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn echo_replies_waiting_for_a_flush_are_bounded_in_bytes() {
    const BOUND: u64 = 256 * 1024;
    let server = start(&["--send-queue-bytes", "262144", "--write-timeout", "500ms"]).await;
    let max =
        flood_without_reading(&server, "/echo", Message::binary(vec![1u8; 60_000]), 2_000).await;
    assert!(max <= BOUND + 60_000, "{max} bytes unflushed");
    assert!(max > 0, "nothing was ever counted");
    assert_eq!(metric(&server, "ws_send_queue_bytes").await, 0);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- finding 7

/// `POST /api{path}` with `body` and the admin token: the status and the JSON reply.
async fn admin_post(server: &TestServer, path: &str, body: String) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(server.http_url(&format!("/api{path}")))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn pushes_over_the_max_push_size_are_answered_413() {
    let server = start(&["--admin-token", ADMIN, "--max-push-size", "1000"]).await;
    let (mut ws, id) = server.connect_ws("/ws").await;
    for path in ["/broadcast".to_owned(), format!("/clients/{id}/push")] {
        assert_eq!(
            admin_post(&server, &path, "x".repeat(1001)).await.0,
            413,
            "{path}"
        );
        assert_eq!(
            admin_post(&server, &path, "x".repeat(1000)).await.0,
            200,
            "{path}"
        );
        match next_json(&mut ws).await {
            shared::ServerMessage::Push { body, .. } => assert_eq!(body.len(), 1000),
            other => panic!("expected the push, got {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broadcast_is_encoded_once_and_bounded_by_the_byte_queue() {
    const BOUND: u64 = 256 * 1024;
    const CLIENTS: u64 = 4;
    let server = start(&[
        "--admin-token",
        ADMIN,
        "--max-push-size",
        "100000",
        "--send-queue-bytes",
        "262144",
        "--write-timeout",
        "60s",
    ])
    .await;
    // One body, with what JSON escapes, to a plain and a reliable client.
    let (mut plain, _) = server.connect_ws("/ws").await;
    let (mut reliable, _) = server.connect_ws("/ws?reliable=1").await;
    // Its first ack stores the session (a push before that is refused); the
    // pong that follows says it was processed.
    send_text(&mut reliable, r#"{"type":"ack","seq":0}"#).await;
    send_text(&mut reliable, r#"{"type":"ping","t":1}"#).await;
    assert!(matches!(
        next_json(&mut reliable).await,
        shared::ServerMessage::Pong { .. }
    ));
    let body = "line\n \"quoted\" \u{1b}[31m ✓".to_owned();
    let (status, reply) = admin_post(&server, "/broadcast", body.clone()).await;
    assert_eq!((status, reply["delivered"].as_u64()), (200, Some(2)));
    match next_json(&mut plain).await {
        shared::ServerMessage::Push {
            seq: 1, body: got, ..
        } => assert_eq!(got, body),
        other => panic!("expected the push, got {other:?}"),
    }
    match next_json(&mut reliable).await {
        shared::ServerMessage::Msg { seq: 1, data } => {
            match shared::ServerMessage::from_json(&data) {
                Ok(shared::ServerMessage::Push {
                    seq: 1, body: got, ..
                }) => assert_eq!(got, body),
                other => panic!("expected the push, got {other:?}"),
            }
        }
        other => panic!("expected the numbered push, got {other:?}"),
    }
    drop((plain, reliable));
    wait_until("both gone", || async {
        metric(&server, "ws_connections_open").await == 0
    })
    .await;

    // Clients that never read: 60 KB broadcasts pile up to the byte bound, no further.
    let mut idle = Vec::new();
    for _ in 0..CLIENTS {
        idle.push(server.connect_ws("/ws").await.0);
    }
    let (mut dropped, mut max) = (0, 0);
    for _ in 0..300 {
        let (status, reply) = admin_post(&server, "/broadcast", "z".repeat(60_000)).await;
        assert_eq!(status, 200);
        dropped += reply["dropped"].as_u64().unwrap();
        max = max.max(metric(&server, "ws_send_queue_bytes").await);
        if dropped >= CLIENTS * 5 {
            break;
        }
    }
    assert!(
        dropped >= CLIENTS * 5,
        "the queues never filled: {dropped} dropped"
    );
    assert!(
        max <= CLIENTS * (BOUND + 60_100),
        "{max} bytes queued for {CLIENTS} clients"
    );
    assert!(max > BOUND, "{max}");
    drop(idle);
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- findings 8 and 9

/// Every log line of this test binary, captured (installed once).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("server=info")
            .with_writer(move || Capture(sink.clone()))
            .init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::Write::write(&mut *self.0.lock().unwrap(), buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_allowed_host_list_refuses_other_hosts_on_every_route() {
    let logs = captured_logs();
    let server = start(&["--allowed-host", "example.test", "--admin-token", ADMIN]).await;
    let local = server.addr.to_string();
    for path in ["/healthz", "/metrics", "/api/clients", "/", "/echo"] {
        assert_eq!(get(server.addr, path, &local).await.0, 403, "{path}");
        assert_eq!(
            get(server.addr, path, "evil.example").await.0,
            403,
            "{path}"
        );
    }
    assert_eq!(
        get(server.addr, "/healthz", "example.test").await,
        (200, "ok".into())
    );
    assert_eq!(
        get(server.addr, "/healthz", "EXAMPLE.test:8080").await.0,
        200
    );
    // A DNS-rebinding page: Origin and Host both say evil.example.
    let refused = try_ws(
        &server.ws_url("/ws"),
        &[("host", "evil.example"), ("origin", "http://evil.example")],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.status(), 403);
    let mut ws = try_ws(&server.ws_url("/echo"), &[("host", "example.test")])
        .await
        .unwrap();
    ws.send(Message::text("in")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("in"));
    let (_, metrics) = get(server.addr, "/metrics", "example.test").await;
    assert!(
        metrics.contains("http_dropped_total{reason=\"host\"} 11"),
        "{metrics}"
    );

    // Finding 8: a 60 KB Host with bytes that are not UTF-8 is logged escaped and cut.
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: hostmarker\xff".to_vec();
    head.extend_from_slice("h".repeat(60_000).as_bytes());
    head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let mut tcp = raw(&server).await;
    tcp.write_all(&head).await.unwrap();
    match ended_within(&mut tcp, DEADLINE, false).await {
        Ended::Closed(got) => assert!(got.starts_with(b"HTTP/1.1 "), "{got:?}"),
        Ended::Open => panic!("no answer"),
    }
    wait_until("the refusal logged", || async {
        String::from_utf8_lossy(&logs.lock().unwrap()).contains("hostmarker")
    })
    .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = text.lines().find(|l| l.contains("hostmarker")).unwrap();
    assert!(line.len() < 400, "a {}-byte log line", line.len());
    assert!(line.contains("…(+"), "{line}");
    assert!(line.contains("hostmarker\\xff"), "{line}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_an_allowed_host_list_every_host_is_served() {
    let server = start(&[]).await;
    assert_eq!(
        get(server.addr, "/healthz", "anything.example").await,
        (200, "ok".into())
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_supplied_strings_are_logged_escaped_and_cut() {
    let logs = captured_logs();
    let server = start(&[]).await;
    // A client id with a newline and an escape sequence.
    let (ws, id) = server.connect_ws("/ws?client_id=%0aFORGED7%1b%5b31m").await;
    assert_eq!(id, "\nFORGED7\u{1b}[31m");
    drop(ws);
    // A 60 KB session id, with a newline, in a failed resume.
    let (mut ws, _) = server.connect_ws("/ws?reliable=1").await;
    let session = format!("SESSION7\n{}", "s".repeat(60_000));
    let resume = shared::ClientMessage::Resume {
        session,
        token: "t".into(),
        last_seq: 0,
    };
    send_text(&mut ws, &resume.to_json()).await;
    assert!(matches!(
        next_json(&mut ws).await,
        shared::ServerMessage::ResumeFailed { .. }
    ));
    drop(ws);
    // A 50 KB Origin from another site.
    let origin = format!("http://ORIGIN7.example/{}", "o".repeat(50_000));
    let refused = try_ws(&server.ws_url("/ws"), &[("origin", origin.as_str())])
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 403);
    wait_until("the three logged", || async {
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        metric(&server, "ws_connections_open").await == 0
            && text.contains("disconnect")
            && ["FORGED7", "SESSION7", "ORIGIN7"]
                .iter()
                .all(|marker| text.contains(marker))
    })
    .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!text.contains('\u{1b}'), "a raw escape in the log");
    for marker in ["FORGED7", "SESSION7", "ORIGIN7"] {
        for line in text.lines().filter(|l| l.contains(marker)) {
            assert!(!line.starts_with(marker), "a forged line: {line}");
            assert!(line.len() < 400, "a {}-byte log line", line.len());
        }
    }
    assert!(text.contains("\\nFORGED7\\u{1b}[31m"), "{text}");
    assert!(text.contains("SESSION7\\nsss"));
    server.shutdown().await.unwrap();
}

#[test]
fn every_new_flag_is_in_help() {
    let help = Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--handshake-timeout",
        "--keepalive-timeout",
        "--body-timeout",
        "--max-connections",
        "--max-connections-per-ip",
        "--connect-rate",
        "--connect-burst",
        "--trusted-proxy",
        "--allowed-host",
        "--max-http-connections-per-ip",
        "--send-queue-bytes",
        "--max-push-size",
        "--max-sessions-per-ip",
        "--history-total-bytes",
        "--jwt-max-lifetime",
        "--refresh-interval",
        "--max-partial-bytes",
        "--public-echo",
        "--max-burst-rate",
    ] {
        assert!(help.contains(flag), "{flag} is not in --help");
    }
}

// ---------------------------------------------------------------- finding 6

/// A reliable connection (with extra headers): the socket and the welcome's
/// session id and token. Nothing is sent yet: the session is not stored.
async fn reliable(server: &TestServer, headers: &[(&str, &str)]) -> (Ws, String, String) {
    let mut ws = try_ws(&server.ws_url("/ws?reliable=1"), headers)
        .await
        .unwrap();
    match next_json(&mut ws).await {
        shared::ServerMessage::Welcome {
            session: Some(session),
            token: Some(token),
            ..
        } => (ws, session, token),
        other => panic!("expected a reliable welcome, got {other:?}"),
    }
}

fn resume(session: &str, token: &str, last_seq: u64) -> String {
    shared::ClientMessage::Resume {
        session: session.into(),
        token: token.into(),
        last_seq,
    }
    .to_json()
}

fn echo(id: u64, body: &str) -> String {
    shared::ClientMessage::Echo {
        id,
        body: body.into(),
    }
    .to_json()
}

#[tokio::test]
async fn sessions_are_capped_per_client_address() {
    let server = start(&[
        "--max-sessions-per-ip",
        "3",
        "--connect-rate",
        "0",
        "--trusted-proxy",
        "127.0.0.1",
    ])
    .await;
    let one = [("x-forwarded-for", "198.51.100.1")];
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut ws, _, _) = reliable(&server, &one).await;
        send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
        held.push(ws);
    }
    wait_until("three sessions stored", || async {
        metric(&server, "ws_reliable_sessions").await == 3
    })
    .await;
    // A fourth connection of that client is welcomed (the session is stored
    // only at its first numbered message), then closed with 1013 there.
    let (mut fourth, _, _) = reliable(&server, &one).await;
    send_text(&mut fourth, r#"{"type":"ack","seq":0}"#).await;
    let close = expect_close(&mut fourth).await.expect("a close frame");
    assert_eq!(u16::from(close.code), close_code::TRY_AGAIN_LATER);
    assert_eq!(close.reason.as_str(), "too many reliable sessions");
    // Another client address is served meanwhile.
    let (mut other, _, _) = reliable(&server, &[("x-forwarded-for", "198.51.100.2")]).await;
    send_text(&mut other, &echo(1, "still served")).await;
    assert!(matches!(
        next_json(&mut other).await,
        shared::ServerMessage::Msg { seq: 1, .. }
    ));
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 4);
    drop(held);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_resumes_and_silent_connections_store_no_session() {
    let server = start(&["--connect-rate", "0"]).await;
    let mut probes = Vec::new();
    for n in 0..50 {
        let (mut ws, _, _) = reliable(&server, &[]).await;
        send_text(&mut ws, &resume(&format!("s{n:016x}"), "wrong", 0)).await;
        assert_eq!(
            next_json(&mut ws).await,
            shared::ServerMessage::ResumeFailed {
                reason: shared::ResumeFailure::UnknownSession
            }
        );
        probes.push(ws);
    }
    // A ping is answered, unnumbered: still nothing to store.
    send_text(&mut probes[0], r#"{"type":"ping","t":1}"#).await;
    assert!(matches!(
        next_json(&mut probes[0]).await,
        shared::ServerMessage::Pong { .. }
    ));
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 0);
    // The first numbered message either way stores it: an ack...
    send_text(&mut probes[1], r#"{"type":"ack","seq":0}"#).await;
    wait_until("the acknowledging connection's session", || async {
        metric(&server, "ws_reliable_sessions").await == 1
    })
    .await;
    // ...or a numbered reply.
    send_text(&mut probes[2], &echo(1, "hi")).await;
    assert!(matches!(
        next_json(&mut probes[2]).await,
        shared::ServerMessage::Msg { seq: 1, .. }
    ));
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 2);
    drop(probes);
    // Bad-token probes against a stored session store nothing either.
    let (mut owner, session, _) = reliable(&server, &[]).await;
    send_text(&mut owner, r#"{"type":"ack","seq":0}"#).await;
    wait_until("the owner's session", || async {
        metric(&server, "ws_reliable_sessions").await == 3
    })
    .await;
    for _ in 0..20 {
        let (mut ws, _, _) = reliable(&server, &[]).await;
        send_text(&mut ws, &resume(&session, "wrong", 0)).await;
        assert_eq!(
            next_json(&mut ws).await,
            shared::ServerMessage::ResumeFailed {
                reason: shared::ResumeFailure::BadToken
            }
        );
    }
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 3);
    // A connection that only pinged left nothing to resume.
    let (mut silent, session, token) = reliable(&server, &[]).await;
    send_text(&mut silent, r#"{"type":"ping","t":1}"#).await;
    assert!(matches!(
        next_json(&mut silent).await,
        shared::ServerMessage::Pong { .. }
    ));
    drop(silent);
    let (mut again, _, _) = reliable(&server, &[]).await;
    send_text(&mut again, &resume(&session, &token, 0)).await;
    assert_eq!(
        next_json(&mut again).await,
        shared::ServerMessage::ResumeFailed {
            reason: shared::ResumeFailure::UnknownSession
        }
    );
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_only_receives_pushes_can_resume() {
    let server = start(&["--push-interval", "50ms"]).await;
    let (mut ws, session, token) = reliable(&server, &[]).await;
    // Its first message binds it; the first timed push stores the session.
    send_text(&mut ws, r#"{"type":"ping","t":1}"#).await;
    let mut pushed = 0;
    while pushed == 0 {
        if let shared::ServerMessage::Msg { seq, .. } = next_json(&mut ws).await {
            pushed = seq;
        }
    }
    assert_eq!(pushed, 1);
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 1);
    drop(ws);
    let (mut again, _, _) = reliable(&server, &[]).await;
    send_text(&mut again, &resume(&session, &token, 0)).await;
    assert!(matches!(
        next_json(&mut again).await,
        shared::ServerMessage::Resumed { last_seq: 0 }
    ));
    assert!(matches!(
        next_json(&mut again).await,
        shared::ServerMessage::Msg { seq: 1, .. }
    ));
    server.shutdown().await.unwrap();
}

/// Sends unnumbered echoes of `body` bytes without acknowledging, reading
/// the numbered replies, until `count` are sent or the server closes;
/// returns the replies' seqs and the close code, if it closed.
async fn echo_without_acks(ws: &mut Ws, count: u64, body: usize) -> (Vec<u64>, Option<u16>) {
    let body = "x".repeat(body);
    let mut seqs = Vec::new();
    for id in 1..=count {
        if ws.send(Message::text(echo(id, &body))).await.is_err() {
            break;
        }
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("an answer within the deadline")
        {
            Some(Ok(Message::Text(text))) => match shared::ServerMessage::from_json(&text).unwrap()
            {
                shared::ServerMessage::Msg { seq, .. } => seqs.push(seq),
                other => panic!("unexpected {other:?}"),
            },
            Some(Ok(Message::Close(frame))) => return (seqs, frame.map(|f| u16::from(f.code))),
            other => panic!("unexpected {other:?}"),
        }
    }
    (seqs, None)
}

#[tokio::test]
async fn the_total_history_budget_holds_and_losses_are_gaps() {
    const BUDGET: u64 = 20_000;
    let server = start(&[
        "--history-total-bytes",
        "20000",
        "--history-max-bytes",
        "1000000",
        "--history-max",
        "10000",
    ])
    .await;
    // A connected client that never acknowledges is closed with 1013 at the
    // budget, as at its own history bound.
    let (mut greedy, session, token) = reliable(&server, &[]).await;
    send_text(&mut greedy, r#"{"type":"ack","seq":0}"#).await;
    let (kept, close) = echo_without_acks(&mut greedy, 40, 1000).await;
    assert_eq!(close, Some(close_code::TRY_AGAIN_LATER));
    assert!(kept.len() > 10 && kept.len() < 20, "{}", kept.len());
    let held = metric(&server, "ws_reliable_history_bytes").await;
    assert!(held > BUDGET / 2 && held <= BUDGET, "{held}");
    drop(greedy);
    // Another client is served: the one that is away gives way, oldest first.
    let (mut next, _, _) = reliable(&server, &[]).await;
    send_text(&mut next, r#"{"type":"ack","seq":0}"#).await;
    let (seqs, close) = echo_without_acks(&mut next, 10, 1000).await;
    assert_eq!(close, None);
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    wait_until("the histories back within the budget", || async {
        metric(&server, "ws_reliable_history_bytes").await <= BUDGET
    })
    .await;
    // The client that was away learns what it lost: a gap, never silence.
    let (mut back, _, _) = reliable(&server, &[]).await;
    send_text(&mut back, &resume(&session, &token, 0)).await;
    assert!(matches!(
        next_json(&mut back).await,
        shared::ServerMessage::Resumed { .. }
    ));
    match next_json(&mut back).await {
        shared::ServerMessage::Gap { from: 1, to } => assert!(to >= 10, "{to}"),
        other => panic!("expected a gap, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_history_age_frees_memory_without_any_activity() {
    let server = start(&["--history-max-age", "300ms", "--session-ttl", "60s"]).await;
    let (mut ws, session, token) = reliable(&server, &[]).await;
    send_text(&mut ws, r#"{"type":"ack","seq":0}"#).await;
    let (seqs, close) = echo_without_acks(&mut ws, 5, 1000).await;
    assert_eq!((seqs.len(), close), (5, None));
    assert!(metric(&server, "ws_reliable_history_bytes").await > 5000);
    drop(ws);
    // Nobody does anything: the sweep alone evicts past the age.
    wait_until("the abandoned history freed", || async {
        metric(&server, "ws_reliable_history_bytes").await == 0
    })
    .await;
    assert_eq!(metric(&server, "ws_reliable_sessions").await, 1);
    let (mut back, _, _) = reliable(&server, &[]).await;
    send_text(&mut back, &resume(&session, &token, 0)).await;
    assert!(matches!(
        next_json(&mut back).await,
        shared::ServerMessage::Resumed { last_seq: 0 }
    ));
    assert_eq!(
        next_json(&mut back).await,
        shared::ServerMessage::Gap { from: 1, to: 5 }
    );
    server.shutdown().await.unwrap();
}

/// The server's listener holds a burst of connects it has not accepted yet:
/// the standard library's backlog of 128 would leave the rest waiting on SYN
/// retries (or reset) before the server could apply any limit.
#[tokio::test]
async fn the_listen_backlog_holds_a_burst_of_connects() {
    const CONNECTS: usize = 600;
    let listener = server::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: every connect must complete in the kernel's queue.
    let connects = (0..CONNECTS).map(|_| async move {
        tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(addr))
            .await
            .is_ok_and(|c| c.is_ok())
    });
    let done = futures_util::future::join_all(connects).await;
    let connected = done.iter().filter(|ok| **ok).count();
    assert_eq!(connected, CONNECTS, "connects that did not complete");
    drop(listener);
}

/// One address holds at most `--max-http-connections-per-ip` connections
/// that are not WebSockets: a raw-TCP flood from it cannot take the
/// descriptors for `--handshake-timeout` at a time. WebSockets do not count.
#[tokio::test]
async fn connections_not_yet_upgraded_are_capped_per_address() {
    let server = start(&["--max-http-connections-per-ip", "4"]).await;
    // Upgraded connections give their place back.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(server.connect_ws("/ws").await.0);
    }
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw(&server).await);
    }
    for tcp in &mut held {
        assert_eq!(
            ended_within(tcp, Duration::from_millis(200), false).await,
            Ended::Open
        );
    }
    // The fifth is closed at once, before anything is read.
    let mut fifth = raw(&server).await;
    assert_eq!(
        ended_within(&mut fifth, DEADLINE, false).await,
        Ended::Closed(Vec::new())
    );
    // A place freed is a place taken again; the WebSockets still answer.
    drop(held.pop());
    let metric_name = "http_dropped_total{reason=\"http_connections_per_ip\"}";
    let deadline = Instant::now() + DEADLINE;
    let metrics = loop {
        // The freed place is given back once the server sees the close.
        let mut tcp = raw(&server).await;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await;
        if !out.is_empty() {
            break String::from_utf8_lossy(&out).into_owned();
        }
        assert!(Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains(&format!("{metric_name} 1\n")), "{metrics}");
    for ws in &mut sockets {
        send_text(ws, r#"{"type":"ping","t":1}"#).await;
        assert!(matches!(
            next_json(ws).await,
            shared::ServerMessage::Pong { .. }
        ));
    }
    server.shutdown().await.unwrap();
}

// ------------------------------------------------- issue 25, item 11: admin token

#[tokio::test]
async fn an_admin_token_under_16_bytes_is_refused_at_start_up() {
    for short in ["", "t0k", "fifteen-bytes!!"] {
        // The server task ends at once with the error; shutdown returns it.
        let err = start(&["--admin-token", short])
            .await
            .shutdown()
            .await
            .expect_err(short);
        let text = format!("{err:#}");
        assert!(
            text.contains("--admin-token") && text.contains("at least 16"),
            "a clear error: {text}"
        );
    }
    let server = start(&["--admin-token", "sixteen-bytes!!!"]).await;
    server.shutdown().await.unwrap();
    // The binary says so and exits non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", "127.0.0.1:0", "--admin-token", "t0k"])
        .env_remove("ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
}

/// `GET /api/clients` with `token`, from `client` (an `X-Forwarded-For`
/// the server trusts): the status and `Retry-After`.
async fn admin_get(server: &TestServer, token: &str, client: &str) -> (u16, Option<u64>) {
    let response = reqwest::Client::new()
        .get(server.http_url("/api/clients"))
        .bearer_auth(token)
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), retry_after)
}

#[tokio::test]
async fn failed_admin_authentications_are_rate_limited_per_address() {
    let server = start(&["--admin-token", ADMIN, "--trusted-proxy", "127.0.0.1"]).await;
    let (attacker, other) = ("198.51.100.1", "198.51.100.2");
    for _ in 0..10 {
        assert_eq!(admin_get(&server, "guess", attacker).await, (401, None));
    }
    // The 11th attempt within 10 s, and even the right token, from there.
    for token in ["guess", ADMIN] {
        let (status, retry_after) = admin_get(&server, token, attacker).await;
        assert_eq!(status, 429, "{token}");
        let retry_after = retry_after.expect("a Retry-After");
        assert!((1..=10).contains(&retry_after), "{retry_after}");
    }
    // Another address is not locked out.
    assert_eq!(admin_get(&server, "guess", other).await, (401, None));
    assert_eq!(admin_get(&server, ADMIN, other).await, (200, None));
    server.shutdown().await.unwrap();
}

// -------------------------------------------- issue 25, item 5: flags as deadlines

#[test]
fn a_duration_flag_too_long_for_a_deadline_is_refused_at_start() {
    // `now + 10^19 s` overflows an Instant: the first connection to arm
    // this deadline panicked. Refused with a clear error instead.
    for flag in [
        "--handshake-timeout",
        "--keepalive-timeout",
        "--body-timeout",
        "--idle-timeout",
        "--write-timeout",
        "--session-ttl",
        "--cluster-command-timeout",
    ] {
        let err = testbed::quiet_config(&[flag, "10000000000000000000"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("at most 100 years"),
            "{flag}: {err:#}"
        );
        testbed::quiet_config(&[flag, "876000h"]).unwrap();
    }
}

// ------------------------------------------------------ issue 25, item 9: bursts

/// What a client read of its bursts: the pushes' seqs, each `burst_done`'s
/// count and `elapsed_ms`, and how many `burst_busy` errors.
#[derive(Debug, Default)]
struct Bursts {
    pushes: Vec<u64>,
    done: Vec<(u32, u64)>,
    busy: usize,
}

/// Reads until `bursts` `burst_done`s, then the pong of a ping sent after
/// them (so that nothing sent before is missed), acknowledging a reliable
/// connection's numbered messages every 100.
async fn read_bursts(ws: &mut Ws, bursts: usize) -> Bursts {
    use shared::{ClientMessage, ErrorCode, ServerMessage};
    let mut seen = Bursts::default();
    let (mut unacked, mut pinged) = (0, false);
    loop {
        let message = match next_json(ws).await {
            ServerMessage::Msg { seq, data } => {
                unacked += 1;
                if unacked == 100 {
                    send_text(ws, &ClientMessage::Ack { seq }.to_json()).await;
                    unacked = 0;
                }
                ServerMessage::from_json(&data).unwrap()
            }
            other => other,
        };
        match message {
            ServerMessage::Push { seq, .. } => seen.pushes.push(seq),
            ServerMessage::BurstDone { count, elapsed_ms } => seen.done.push((count, elapsed_ms)),
            ServerMessage::Error {
                code: ErrorCode::BurstBusy,
                ..
            } => seen.busy += 1,
            ServerMessage::Pong { .. } => return seen,
            ServerMessage::Ack { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
        if seen.done.len() == bursts && !pinged {
            send_text(ws, r#"{"type":"ping","t":1}"#).await;
            pinged = true;
        }
    }
}

/// A connection to /ws, reliable or not; a reliable one is bound to its
/// session by an `ack` fed (not yet flushed) after the welcome.
async fn burst_client(server: &TestServer, reliable: bool) -> Ws {
    let path = if reliable { "/ws?reliable=1" } else { "/ws" };
    let (mut ws, _) = server.connect_ws(path).await;
    if reliable {
        ws.feed(Message::text(r#"{"type":"ack","seq":0}"#))
            .await
            .unwrap();
    }
    ws
}

#[tokio::test]
async fn a_third_burst_while_one_runs_and_one_waits_is_busy_in_both_modes() {
    const N: u32 = 2_000;
    let burst = |count| shared::ClientMessage::Burst { count }.to_json();
    let server = start(&[]).await;
    for reliable in [false, true] {
        let mut ws = burst_client(&server, reliable).await;
        // Three requests in one write, read together: the third comes
        // while the first runs and the second waits.
        for _ in 0..3 {
            ws.feed(Message::text(burst(N))).await.unwrap();
        }
        ws.flush().await.unwrap();
        let seen = read_bursts(&mut ws, 2).await;
        assert_eq!(seen.busy, 1, "reliable: {reliable}");
        // The first two in full, one after the other.
        let counts: Vec<u32> = seen.done.iter().map(|&(count, _)| count).collect();
        assert_eq!(counts, [N, N], "reliable: {reliable}");
        assert_eq!(
            seen.pushes,
            (1..=2 * u64::from(N)).collect::<Vec<_>>(),
            "reliable: {reliable}"
        );
        // Done: a burst is welcome again.
        send_text(&mut ws, &burst(10)).await;
        let seen = read_bursts(&mut ws, 1).await;
        assert_eq!((seen.busy, seen.pushes.len()), (0, 10));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_burst_rate_slows_a_burst_to_its_rate_in_both_modes() {
    // 2,000 pushes a second: batches of 100, the first at once; the other
    // 2,900 pushes take at least 1.45 s.
    let server = start(&["--max-burst-rate", "2000"]).await;
    for reliable in [false, true] {
        let mut ws = burst_client(&server, reliable).await;
        ws.send(Message::text(
            shared::ClientMessage::Burst { count: 3_000 }.to_json(),
        ))
        .await
        .unwrap();
        let seen = read_bursts(&mut ws, 1).await;
        assert_eq!(seen.pushes.len(), 3_000, "reliable: {reliable}");
        let (count, elapsed_ms) = seen.done[0];
        assert_eq!(count, 3_000);
        // The server's own clock, and a lower bound only: a busy machine
        // makes a burst slower, never faster than its rate.
        assert!(
            elapsed_ms >= 1_200,
            "reliable: {reliable}: {elapsed_ms} ms at 2,000 a second"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bursts_batches_count_in_the_send_queue_bytes_within_its_bound() {
    // A push at its largest (a 20-digit seq) is under 100 bytes.
    const BOUND: u64 = 4096;
    let server = start(&["--send-queue-bytes", "4096"]).await;
    // The welcome, then nothing read: the burst's writes block, with a
    // batch in flight. It used to count as 0 bytes.
    let (ws, _) = server.connect_ws("/ws?burst=1000000").await;
    let deadline = Instant::now() + DEADLINE;
    let mut held = Vec::new();
    while held.len() < 10 {
        assert!(Instant::now() < deadline, "never counted: {held:?}");
        let bytes = metric(&server, "ws_send_queue_bytes").await;
        if bytes > 0 {
            held.push(bytes);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        held.iter().all(|&bytes| bytes <= BOUND + 100),
        "a burst held more than the bound: {held:?}"
    );
    drop(ws);
    wait_until("the queue emptied", || async {
        metric(&server, "ws_send_queue_bytes").await == 0
    })
    .await;
    server.shutdown().await.unwrap();
}

// ------------------------------------- issue 25, item 2: unfinished messages

use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const MIB: usize = 1024 * 1024;

/// The close reason of a connection past `--max-partial-bytes`
/// (`connection::end::PARTIAL_BUDGET_FULL`).
const PARTIAL_BUDGET_FULL: &str =
    "server busy: too many bytes of unfinished messages, try again later";

/// Sends 1 MiB of a binary message in 16 fragments and never its last one,
/// then a ping (allowed between fragments). The server reads in order, so
/// its pong says it read the whole MiB and kept the connection: `Ok`; its
/// close frame, if it refused the message, is the `Err`.
async fn one_mib_unfinished(ws: &mut Ws) -> Result<(), Option<CloseFrame>> {
    for i in 0..16 {
        let opcode = OpCode::Data(if i == 0 { Data::Binary } else { Data::Continue });
        let fragment = Frame::message(vec![7u8; 64 * 1024], opcode, false);
        // A refused connection may fail the writes: its close frame is read below.
        if ws.feed(Message::Frame(fragment)).await.is_err() {
            break;
        }
    }
    let _ = ws.send(Message::Ping(b"held?".to_vec().into())).await;
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a pong or a close within the deadline")
        {
            Some(Ok(Message::Pong(payload))) if payload.as_ref() == b"held?" => return Ok(()),
            Some(Ok(Message::Close(frame))) => return Err(frame),
            // /ws's welcome.
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

#[tokio::test]
async fn unfinished_messages_are_bounded_server_wide_and_the_budget_comes_back() {
    // 8 MiB for /ws and /echo together; 1 MiB of an unfinished message each
    // (beyond the 8 KiB free per connection, charged in 64 KiB chunks: 1 MiB).
    let server = start(&[
        "--max-partial-bytes",
        "8388608",
        "--max-message-size",
        "2097152",
    ])
    .await;
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let path = if i % 2 == 0 { "/echo" } else { "/ws" };
        let mut ws = server.connect(path).await;
        match one_mib_unfinished(&mut ws).await {
            Ok(()) => held.push(ws),
            Err(frame) => {
                let frame = frame.unwrap_or_else(|| {
                    panic!("connection {i} ({path}) ended without a close frame")
                });
                assert_eq!(u16::from(frame.code), close_code::TRY_AGAIN_LATER, "{path}");
                assert_eq!(frame.reason.as_str(), PARTIAL_BUDGET_FULL, "{path}");
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (8, 12));
    assert_eq!(metric(&server, "ws_partial_budget_closes_total").await, 12);
    assert_eq!(metric(&server, "ws_partial_bytes").await, 8 * MIB as u64);
    // The ones within the budget are still served (a pong between fragments).
    for ws in &mut held {
        ws.send(Message::Ping(b"still".to_vec().into()))
            .await
            .unwrap();
        loop {
            match next_any(ws).await {
                Message::Pong(payload) if payload.as_ref() == b"still" => break,
                Message::Close(frame) => panic!("a held connection was closed: {frame:?}"),
                _ => {}
            }
        }
    }
    // Gone, they give their bytes back.
    drop(held);
    wait_until("the budget to be free again", || async {
        metric(&server, "ws_partial_bytes").await == 0
    })
    .await;
    // And a new unfinished message is accepted, then completed: the echo of
    // the whole message, and the budget free again with the connection open.
    let mut ws = server.connect("/echo").await;
    one_mib_unfinished(&mut ws)
        .await
        .expect("the freed budget takes a new unfinished message");
    assert!(metric(&server, "ws_partial_bytes").await > 0);
    let last = Frame::message(vec![8u8; 10], OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(last)).await.unwrap();
    match next_message(&mut ws).await {
        Message::Binary(data) => assert_eq!(data.len(), MIB + 10),
        other => panic!("expected the echo, got {other:?}"),
    }
    assert_eq!(metric(&server, "ws_partial_bytes").await, 0);
    server.shutdown().await.unwrap();
}

/// The next frame of any kind (pongs included) within the deadline.
async fn next_any(ws: &mut Ws) -> Message {
    tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a frame within the deadline")
        .expect("the stream is open")
        .expect("no socket error")
}

/// A token-mode server (the testbed's secret), with `args`.
async fn token_mode(args: &[&str]) -> TestServer {
    let mut all = vec![
        "--allow-client-ids=false",
        "--jwt-secret",
        testbed::TEST_JWT_SECRET,
    ];
    all.extend_from_slice(args);
    start(&all).await
}

/// Sends a text on `/echo` and expects it back.
async fn echoes(ws: &mut Ws) {
    send_text(ws, "hello").await;
    match next_message(ws).await {
        Message::Text(text) => assert_eq!(text.as_str(), "hello"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_needs_a_token_in_token_mode() {
    let server = token_mode(&[]).await;
    // Refused as /ws refuses: upgraded, then 4401 and the cause, nothing echoed.
    for path in ["/echo", "/echo?token=forged"] {
        let mut ws = server.connect(path).await;
        let _ = ws.send(Message::text("hello")).await;
        match next_message(&mut ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), close_code::UNAUTHORIZED, "{path}");
                let cause = if path.contains("token=") {
                    "invalid token"
                } else {
                    "missing token"
                };
                assert_eq!(frame.reason.as_str(), cause, "{path}");
            }
            other => panic!("{path}: expected a close frame first, got {other:?}"),
        }
    }
    assert_eq!(
        metric(&server, "ws_rejected_upgrades_total{reason=\"token\"}").await,
        2
    );
    // A valid token, in the query or as a bearer header, is served.
    let token = testbed::mint_token("alice", Duration::from_secs(60));
    let mut ws = server.connect(&format!("/echo?token={token}")).await;
    echoes(&mut ws).await;
    let bearer = format!("Bearer {token}");
    let mut ws = try_ws(&server.ws_url("/echo"), &[("authorization", &bearer)])
        .await
        .unwrap();
    echoes(&mut ws).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn public_echo_serves_echo_without_a_token_in_token_mode() {
    let server = token_mode(&["--public-echo"]).await;
    let mut ws = server.connect("/echo").await;
    echoes(&mut ws).await;
    // /ws still needs one.
    let mut ws = server.connect("/ws").await;
    match next_message(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), close_code::UNAUTHORIZED);
        }
        other => panic!("expected a close frame first, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}
