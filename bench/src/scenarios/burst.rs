//! `bench load burst`: the time from the first to the last of N pushes sent
//! on connect, every push checked in order.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::ws::{check_loopback, connect};

/// The `"seq":N` of a push, read without a full JSON parse.
fn seq_of(text: &str) -> Option<u64> {
    let rest = &text[text.find(r#""seq":"#)? + 6..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
}

/// The burst mode: connect to a URL that pushes `count` messages on connect.
pub async fn burst(url: &str, count: u64) -> Result<serde_json::Value> {
    check_loopback(url)?;
    let mut ws = connect(url).await?;
    let mut first = None;
    let mut expected = 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    while expected <= count {
        let message = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .context("the burst did not finish in 120 s")?
            .context("the server closed")??;
        let Message::Text(text) = message else {
            continue;
        };
        if let Some(seq) = seq_of(&text) {
            first.get_or_insert_with(Instant::now);
            if seq != expected {
                bail!("push {seq} arrived where {expected} was expected");
            }
            expected += 1;
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed()).as_secs_f64();
    let _ = ws.close(None).await;
    Ok(json!({
        "mode": "burst", "url": url, "count": count, "first_to_last_ms": elapsed * 1000.0,
        "msgs_per_s": count as f64 / elapsed.max(1e-9),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_read_from_a_push() {
        assert_eq!(
            seq_of(r#"{"type":"push","seq":42,"sent_at_ms":1,"body":"b"}"#),
            Some(42)
        );
        assert_eq!(seq_of(r#"{"type":"welcome"}"#), None);
    }
}
