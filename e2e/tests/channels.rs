//! The console's channel panel (issue 24): two browser sessions (two
//! ChromeDriver sessions, two browsers: nothing shared, as two people) in
//! one channel, against the real server with `cargo xtask run`'s own
//! development config (its `chat` namespace), on a port the test picks.
//!
//! The server's own answers are the judge: the admin API's presence
//! (`GET /api/channels/{channel}/presence`) says who is subscribed, its
//! history (`…/history`) which offset a publication got and from whom. The
//! pages are read through the panel's `data-testid`s: `channel-status`,
//! `members` (one member's client id a line, kept by the wrapper's
//! `Channel::follow_presence`), `channel-log` (the feed, newest first:
//! `PUB #7 {"text":"…"} from <id>`, `JOIN <id>`, `LEAVE <id>`), and each
//! page's client id from the `welcome` in its log.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::{Browser, artefact_dir, click, start_dev_server, text, type_into};
use serde_json::Value;
use testbed::TestServer;

const STEP: Duration = Duration::from_secs(30);
const CHANNEL: &str = "chat:lobby";
const ADMIN_TOKEN: &str = "e2e-channels-admin-token";

/// `GET path` on the admin API, as JSON.
async fn admin_get(server: &TestServer, path: &str) -> Result<Value> {
    e2e::admin_get(server, ADMIN_TOKEN, path).await
}

/// Waits until the server's presence lists exactly `want`.
async fn presence_becomes(server: &TestServer, want: &[&str]) -> Result<()> {
    let want: BTreeSet<String> = want.iter().map(|id| (*id).to_owned()).collect();
    let what = format!("the server's presence to be {want:?}");
    e2e::server_presence_is((server, ADMIN_TOKEN, CHANNEL), &what, STEP, |now| {
        *now == want
    })
    .await
    .map(drop)
}

/// Waits until the element `id` satisfies `ok`; returns its text.
async fn wait_text(
    browser: &Browser,
    id: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    e2e::wait_text(browser, id, what, STEP, ok).await
}

/// The page's client id, from the `welcome` in its log.
async fn client_id(browser: &Browser) -> Result<String> {
    let log = wait_text(browser, "log", "the welcome", |log| {
        welcome_client_id(log).is_some()
    })
    .await?;
    welcome_client_id(&log).context("the welcome went away")
}

/// The `client_id` of the newest `welcome` line of a log (newest first).
fn welcome_client_id(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(r#""type":"welcome""#))?;
    let key = r#""client_id":""#;
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Opens the console, waits for its connection, and returns its client id.
async fn open_console(browser: &Browser, server: &TestServer, path: &str) -> Result<String> {
    browser.client.goto(&server.http_url(path)).await?;
    wait_text(browser, "state", "the connection", |s| s == "open").await?;
    client_id(browser).await
}

/// Clicks Subscribe (the name field starts with `chat:lobby`) and waits for
/// the server's `subscribed` in the feed.
async fn subscribe(browser: &Browser) -> Result<()> {
    click(browser, "subscribe").await?;
    wait_text(browser, "channel-status", "the status", |s| {
        s == format!("subscribed to {CHANNEL}")
    })
    .await?;
    wait_text(browser, "channel-log", "the SUB line", |log| {
        log.lines()
            .any(|l| l.contains("SUB") && l.ends_with("subscribed"))
    })
    .await
    .map(drop)
}

/// Waits until the page's member list is exactly `want` (and says so in
/// its count).
async fn members_become(browser: &Browser, want: &[&str]) -> Result<()> {
    let want: BTreeSet<&str> = want.iter().copied().collect();
    let count = want.len().to_string();
    let what = format!("the member list {want:?}");
    wait_text(browser, "members", &what, |list| {
        list.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<BTreeSet<_>>()
            == want
    })
    .await?;
    wait_text(browser, "member-count", "the member count", |n| n == count)
        .await
        .map(drop)
}

/// The publication whose data is `{"text": text}` in the server's history:
/// its offset and its publisher's client id.
async fn in_history(server: &TestServer, text: &str) -> Result<(u64, String)> {
    let history = admin_get(server, &format!("/api/channels/{CHANNEL}/history")).await?;
    let publications = history["publications"]
        .as_array()
        .with_context(|| format!("no publications in {history}"))?;
    let found = publications
        .iter()
        .find(|p| p["data"]["text"] == text)
        .with_context(|| format!("{text:?} is not in the history: {history}"))?;
    let offset = found["offset"].as_u64().context("no offset")?;
    let publisher = found["info"]["client_id"]
        .as_str()
        .context("no publisher")?;
    Ok((offset, publisher.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_in_a_channel_see_each_others_publications_and_presence() -> Result<()> {
    let server = start_dev_server(ADMIN_TOKEN).await?;
    let alice = Browser::start().await?;
    let bob = Browser::start().await?;
    let alice_id = open_console(&alice, &server, "/").await?;
    let bob_id = open_console(&bob, &server, "/").await?;
    assert_ne!(alice_id, bob_id);

    // Both subscribe: the server lists both in the channel's presence.
    subscribe(&alice).await?;
    subscribe(&bob).await?;
    presence_becomes(&server, &[&alice_id, &bob_id]).await?;
    // Each page lists both, the other among them; Alice, subscribed first,
    // saw Bob join.
    members_become(&alice, &[&alice_id, &bob_id]).await?;
    members_become(&bob, &[&alice_id, &bob_id]).await?;
    wait_text(&alice, "channel-log", "bob's JOIN", |log| {
        log.lines()
            .any(|l| l.contains("JOIN") && l.ends_with(bob_id.as_str()))
    })
    .await?;

    // Alice publishes: her panel shows the offset the server answered, the
    // server's history has it at that offset from her, and Bob's feed shows
    // it with that offset and her id.
    let message = "hello from alice";
    type_into(&alice, "channel-text", message).await?;
    click(&alice, "publish").await?;
    let feed = wait_text(&alice, "channel-log", "the publish's answer", |log| {
        log.contains("published to chat:lobby at offset ")
    })
    .await?;
    let answered: u64 = feed
        .lines()
        .find_map(|l| l.split("published to chat:lobby at offset ").nth(1))
        .context("no offset in the answer")?
        .trim()
        .parse()?;
    let (offset, publisher) = in_history(&server, message).await?;
    assert_eq!(
        (answered, publisher.as_str()),
        (offset, alice_id.as_str()),
        "the offset alice was answered and her id, against the server's history"
    );
    let shown = format!(r#"#{offset} {{"text":"{message}"}} from {alice_id}"#);
    wait_text(&bob, "channel-log", "alice's publication at bob's", |log| {
        log.lines()
            .any(|l| l.contains("PUB") && l.ends_with(&shown))
    })
    .await?;
    // And in her own feed too (a subscriber gets its own publications).
    wait_text(&alice, "channel-log", "her own publication", |log| {
        log.lines().any(|l| l.ends_with(&shown))
    })
    .await?;

    // Alice's browser closes: the server's presence shrinks to Bob, and so
    // does Bob's list, with her LEAVE in his feed.
    alice.close().await?;
    presence_becomes(&server, &[&bob_id]).await?;
    members_become(&bob, &[&bob_id]).await?;
    wait_text(&bob, "channel-log", "alice's LEAVE", |log| {
        log.lines()
            .any(|l| l.contains("LEAVE") && l.ends_with(alice_id.as_str()))
    })
    .await?;

    let png = bob.client.screenshot().await?;
    let path = artefact_dir()?.join("channels.png");
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("screenshot: {}", path.display());

    // Unsubscribe: the server's presence is empty, and the list is gone.
    click(&bob, "unsubscribe").await?;
    wait_text(&bob, "channel-status", "not subscribed", |s| {
        s == "not subscribed"
    })
    .await?;
    presence_becomes(&server, &[]).await?;
    assert!(
        text(&bob, "members").await.is_err(),
        "a member list unsubscribed"
    );

    // Sharing across tabs: `tab_channels.rs` (several windows of one
    // browser, which this test's separate browsers are not).
    bob.close().await?;
    server.shutdown().await
}
