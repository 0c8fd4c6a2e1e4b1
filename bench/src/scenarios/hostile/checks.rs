//! The protections that already held in the attack test, measured again:
//! broken frames, fuzzed messages, path traversal, admin authentication.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::net::{self, Ending, frame};
use super::{Outcome, Target};

/// One broken frame: its name, the route, the bytes, the close code the
/// server documents for it.
struct Broken {
    name: &'static str,
    path: &'static str,
    bytes: Vec<u8>,
    expected: u16,
}

fn broken_frames() -> Vec<Broken> {
    let mut list = Vec::new();
    for path in ["/echo", "/ws"] {
        let cases: [(&'static str, Vec<u8>, u16); 8] = [
            ("reserved opcode 0x3", frame(0x83, b"x", true), 1002),
            ("unmasked client frame", frame(0x81, b"hello", false), 1002),
            (
                "ping of 126 bytes (control over 125)",
                frame(0x89, &[b'p'; 126], true),
                1002,
            ),
            ("fragmented ping (FIN clear)", frame(0x09, b"p", true), 1002),
            (
                "continuation with nothing to continue",
                frame(0x80, b"orphan", true),
                1002,
            ),
            ("RSV1 set with no extension", frame(0xC1, b"x", true), 1002),
            (
                "invalid UTF-8 in a text frame",
                frame(0x81, &[0xff, 0xfe, 0x41], true),
                1007,
            ),
            (
                "message over the size limit",
                // /ws: 64 KiB; /echo: 16 MiB (the header alone announces it).
                if path == "/ws" {
                    frame(0x82, &vec![0u8; 64 * 1024 + 1], true)
                } else {
                    let mut head = vec![0x82, 0x80 | 127];
                    head.extend_from_slice(&(16u64 * 1024 * 1024 + 1).to_be_bytes());
                    head.extend_from_slice(&[0, 0, 0, 0]);
                    head
                },
                1009,
            ),
        ];
        for (name, bytes, expected) in cases {
            list.push(Broken {
                name,
                path,
                bytes,
                expected,
            });
        }
    }
    list
}

/// Each broken frame on a connection of its own (raw TCP, our own framing).
pub async fn frame_errors(t: &Target) -> Result<Outcome> {
    let mut lines = Vec::new();
    let mut wrong = 0;
    let cases = broken_frames();
    for case in &cases {
        let mut tcp = net::tcp_from(30, t.addr).await?;
        let status = net::raw_upgrade(&mut tcp, t.addr, case.path).await?;
        anyhow::ensure!(status == 101, "the upgrade on {} got {status}", case.path);
        tcp.write_all(&case.bytes).await?;
        let got = net::ending(&mut tcp, Duration::from_secs(5)).await;
        let ok = got == Ending::Close(case.expected);
        wrong += usize::from(!ok);
        lines.push(format!(
            "{} {}: {} (documented {}){}",
            case.path,
            case.name,
            match &got {
                Ending::Close(code) => format!("close {code}"),
                Ending::Dropped => "dropped without a close frame".into(),
                Ending::Open => "still open after 5 s".into(),
            },
            case.expected,
            if ok { "" } else { " **differs**" }
        ));
    }
    Ok(Outcome {
        tried: format!(
            "{} broken frames, each on a fresh raw connection to /echo or /ws (our own framing, so the frames are really broken): {}.",
            cases.len(),
            "reserved opcode, unmasked client frame, control frame over 125 bytes, fragmented control frame, orphan continuation, RSV1 without an extension, invalid UTF-8, a message over the size limit"
        ),
        held: format!(
            "{} of {} got the close code the server documents (1002 protocol error, 1007 invalid payload, 1009 too big). {}",
            cases.len() - wrong,
            cases.len(),
            lines.join("; ")
        ),
        holds: wrong == 0,
    })
}

/// A small deterministic generator (xorshift), so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One message the protocol refuses, of several kinds.
fn garbage(rng: &mut Rng) -> String {
    let len = 1 + rng.below(200) as usize;
    match rng.below(8) {
        // Printable noise that is not JSON.
        0 => {
            (0..len)
                .map(|_| char::from(b'!' + rng.below(90) as u8))
                .filter(|c| *c != '{' && *c != '[')
                .collect::<String>()
                + "!"
        }
        // Any Unicode scalar values.
        1 => {
            (0..len)
                .filter_map(|_| char::from_u32(1 + rng.below(0x2ffff) as u32))
                .collect::<String>()
                + "\u{7}"
        }
        // Valid JSON, unknown type.
        2 => format!(r#"{{"type":"x_{}"}}"#, rng.next()),
        // A known type with fields of the wrong types.
        3 => format!(
            r#"{{"type":"echo","id":"{}","body":{}}}"#,
            rng.next(),
            rng.next()
        ),
        // Cut short.
        4 => {
            let whole = format!(
                r#"{{"type":"echo","id":{},"body":"{}"}}"#,
                rng.next() >> 12,
                "y".repeat(len)
            );
            whole[..1 + rng.below(whole.len() as u64 - 1) as usize].to_owned()
        }
        // Deep nesting.
        5 => "[".repeat(len * 10) + &"]".repeat(len * 10),
        // Numbers out of range.
        6 => r#"{"type":"echo","id":1e999,"body":"x"}"#.to_owned(),
        // Not an object.
        _ => format!("[{},{}]", rng.next(), rng.next()),
    }
}

/// 5,000 garbage messages on /ws over 50 connections; after every fifth a
/// ping, since ten bad messages in a row are closed with 1008 by design.
pub async fn fuzz(t: &Target) -> Result<Outcome> {
    const CONNS: u64 = 50;
    const EACH: u64 = 100;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..CONNS {
        let addr = t.addr;
        set.spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c + 1));
            let mut ws = match net::ws_from(31, addr, "/ws").await? {
                Ok(ws) => ws,
                Err((status, _)) => anyhow::bail!("refused {status}"),
            };
            let _ = tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await; // welcome
            let (mut errors, mut other, mut closed) = (0u64, 0u64, None);
            let mut answer = async |ws: &mut net::Ws| -> Option<String> {
                match tokio::time::timeout(net::IO_TIMEOUT, ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => Some(text.as_str().to_owned()),
                    Ok(Some(Ok(Message::Close(frame)))) => {
                        closed = Some(frame.map_or(0, |f| u16::from(f.code)));
                        None
                    }
                    _ => None,
                }
            };
            for i in 0..EACH {
                if ws.send(Message::text(garbage(&mut rng))).await.is_err() {
                    break;
                }
                match answer(&mut ws).await {
                    Some(text) if text.starts_with(r#"{"type":"error""#) => errors += 1,
                    Some(_) => other += 1,
                    None => break,
                }
                if i % 5 == 4 {
                    let _ = ws.send(Message::text(r#"{"type":"ping","t":1}"#)).await;
                    if answer(&mut ws).await.is_none() {
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok((errors, other, closed))
        });
    }
    let (mut errors, mut other, mut closes, mut failed) = (0, 0, Vec::new(), Vec::new());
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok((e, o, c))) => {
                errors += e;
                other += o;
                closes.extend(c);
            }
            Ok(Err(why)) => failed.push(format!("{why:#}")),
            Err(why) => failed.push(why.to_string()),
        }
    }
    let (healthz, _) = net::http(t.addr, "GET", "/healthz", "").await?;
    let sent = CONNS * EACH;
    Ok(Outcome {
        tried: format!(
            "{sent} fuzzed messages on /ws over {CONNS} connections ({EACH} each; seeded generator: noise, random Unicode, unknown types, wrong field types, truncated JSON, deep nesting, out-of-range numbers, non-objects), each followed by reading its answer; a valid ping after every fifth (ten bad messages in a row close with 1008, by design). Took {:.1} s.",
            started.elapsed().as_secs_f64()
        ),
        held: format!(
            "{errors} of {sent} answered with exactly one `error`; {other} other answers; {} connections closed by the server{}; the process stayed up and `/healthz` answered {healthz} after.{}",
            closes.len(),
            if closes.is_empty() {
                String::new()
            } else {
                format!(" (codes {closes:?})")
            },
            if failed.is_empty() {
                String::new()
            } else {
                format!(" Failures: {}", failed.join("; "))
            }
        ),
        holds: errors == sent
            && other == 0
            && closes.is_empty()
            && failed.is_empty()
            && healthz == 200,
    })
}

/// Traversal attempts on the static files: none may reach the file beside
/// the static directory or `/etc/passwd`.
pub async fn traversal(t: &Target) -> Result<Outcome> {
    let deep = "../".repeat(20);
    let targets = [
        "/../secret.txt".to_owned(),
        "/%2e%2e/secret.txt".into(),
        "/%2e%2e%2fsecret.txt".into(),
        "/..%2fsecret.txt".into(),
        "/..%5csecret.txt".into(),
        "/..\\secret.txt".into(),
        "/%252e%252e/secret.txt".into(),
        "/./../secret.txt".into(),
        "/....//secret.txt".into(),
        "/%c0%ae%c0%ae/secret.txt".into(),
        format!("/{deep}etc/passwd"),
        format!("/{}etc/passwd", "%2e%2e/".repeat(20)),
        format!("/{}etc/passwd", "..%2f".repeat(20)),
        "//etc/passwd".into(),
        "/static/../../../../etc/passwd".into(),
    ];
    let mut lines = Vec::new();
    let mut leaked = 0;
    for target in &targets {
        let (status, body) = net::http(t.addr, "GET", target, "").await?;
        let leak = body.contains(&t.secret) || body.contains("root:x:");
        leaked += usize::from(leak);
        lines.push(format!(
            "`{target}` {status}{}",
            if leak { " **LEAKED**" } else { "" }
        ));
    }
    Ok(Outcome {
        tried: format!(
            "{} raw GETs (sent unnormalised) for a file beside the static directory and for /etc/passwd: `..`, percent-encoded and double-encoded dots and slashes, backslashes, overlong UTF-8, `....//`.",
            targets.len()
        ),
        held: format!(
            "{} of {} leaked nothing (neither the file's marker nor `root:x:` in any body). Statuses: {}. (A path outside the static files is answered with the UI's index.html, the single-page app's fallback.)",
            targets.len() - leaked,
            targets.len(),
            lines.join(", ")
        ),
        holds: leaked == 0,
    })
}

/// Rounds of [`admin_auth`] so far: each round comes from an address of its
/// own, since the previous round's address is locked out for 10 s.
static ADMIN_ROUNDS: AtomicU8 = AtomicU8::new(0);

/// The admin API with the right, without, and with wrong tokens. The right
/// one goes first: after 10 failures within 10 s an address gets 429 (with
/// `Retry-After`), whatever token it sends, so the wrong ones are answered
/// 401 and then 429. Each round (the phase repeats it) from another
/// address, 127.0.0.150 to 199: the lockout is per address and lasts 10 s.
pub async fn admin_auth(t: &Target) -> Result<Outcome> {
    let src = 150 + ADMIN_ROUNDS.fetch_add(1, Ordering::Relaxed) % 50;
    const REFUSED: &[u16] = &[401, 429];
    let token = "hostile-run-token-0123456789";
    let wrong_last = format!("{}X", &token[..token.len() - 1]);
    let cases: [(&str, String, &[u16]); 6] = [
        (
            "the right token",
            format!("Authorization: Bearer {token}\r\n"),
            &[200],
        ),
        ("no Authorization", String::new(), REFUSED),
        (
            "wrong token, same length, last byte differs",
            format!("Authorization: Bearer {wrong_last}\r\n"),
            REFUSED,
        ),
        (
            "a prefix of the token",
            format!("Authorization: Bearer {}\r\n", &token[..10]),
            REFUSED,
        ),
        (
            "the token with a byte more",
            format!("Authorization: Bearer {token}X\r\n"),
            REFUSED,
        ),
        (
            "the token as Basic",
            format!("Authorization: Basic {token}\r\n"),
            REFUSED,
        ),
    ];
    let mut lines = Vec::new();
    let mut wrong = 0;
    for (name, header, expected) in &cases {
        // 200 of each, timed, for what a timing attacker would see.
        let mut statuses = std::collections::BTreeSet::new();
        let started = Instant::now();
        for _ in 0..200 {
            statuses.insert(
                net::http_from(src, t.addr, "GET", "/api/clients", header)
                    .await?
                    .0,
            );
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / 200.0;
        let ok = statuses.iter().all(|status| expected.contains(status));
        wrong += usize::from(!ok);
        lines.push(format!(
            "{name}: {statuses:?} (expected {expected:?}; {per:.0} µs per request){}",
            if ok { "" } else { " **differs**" }
        ));
    }
    Ok(Outcome {
        tried: format!(
            "`GET /api/clients` 200 times each with {} kinds of `Authorization` against `--admin-token`, from 127.0.0.{src} (a server without a token answers 403 to all, as `server/tests/http.rs` checks).",
            cases.len()
        ),
        held: format!(
            "{}. The token is compared in constant time (`constant_time_eq` in `server/src/auth/mod.rs`: no early exit, every byte XORed and ORed), and an address gets 429 after 10 failures within 10 s; the per-request times above include a whole TCP connection each and say nothing finer than that.",
            lines.join("; ")
        ),
        holds: wrong == 0,
    })
}

/// The admin API of a server started without `--admin-token`: off.
pub async fn admin_off(t: &Target) -> Result<Outcome> {
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for header in ["", "Authorization: Bearer anything\r\n"] {
        for _ in 0..200 {
            let (status, _) = net::http(t.addr, "GET", "/api/clients", header).await?;
            *statuses.entry(status).or_default() += 1;
        }
    }
    Ok(Outcome {
        tried: "`GET /api/clients` 400 times, half without `Authorization` and half with a bearer token, against a server started without `--admin-token`.".into(),
        held: format!("Statuses: {statuses:?} (the API is off: 403 to everyone)."),
        holds: statuses.len() == 1 && statuses.contains_key(&403),
    })
}
