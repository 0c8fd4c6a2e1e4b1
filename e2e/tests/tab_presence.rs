//! Presence shared across tabs (issue 24: "With shared tabs a browser's
//! tabs are one connection, so they count as one client"): two windows of
//! one browser run the console with sharing on (`/?share=1`), another
//! client (its own connection) comes and goes, against
//! the real server with `cargo xtask run`'s development config (its `chat`
//! namespace, presence with join and leave), on a port the test picks.
//! The other client (its own connection) speaks the server's protocol
//! from the test.
//!
//! The server's own word is the judge: the admin API's presence
//! (`GET /api/channels/{channel}/presence`) lists the members, one per
//! connection. The pages are read through the channel panel: `members`
//! (one client id a line) and `member-count`, kept by the wrapper's
//! `Channel::follow_presence` (its members query, in a follower asked on
//! the leader's connection and answered to it alone, patched by the joins
//! and leaves the leader passes on).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::{Browser, click, start_dev_server};
use fantoccini::wd::WindowHandle;
use futures_util::SinkExt;
use testbed::TestServer;
use tokio_tungstenite::tungstenite::Message;

const STEP: Duration = Duration::from_secs(30);
const CHANNEL: &str = "chat:lobby";
const ADMIN_TOKEN: &str = "e2e-tab-presence-admin-token";

/// Waits until the server's presence of [`CHANNEL`] satisfies `ok`; returns it.
async fn server_presence_is(
    server: &TestServer,
    what: &str,
    ok: impl Fn(&BTreeSet<String>) -> bool,
) -> Result<BTreeSet<String>> {
    e2e::server_presence_is((server, ADMIN_TOKEN, CHANNEL), what, STEP, ok).await
}

/// Waits until `id` in tab `tab` satisfies `ok`; returns the text.
async fn wait_in(
    browser: &Browser,
    tab: &WindowHandle,
    id: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    e2e::wait_in(browser, tab, id, STEP, ok).await
}

/// Waits until tab `tab`'s member list is exactly `want`, each once (and
/// its count says so).
async fn members_become(
    browser: &Browser,
    tab: &WindowHandle,
    want: &BTreeSet<String>,
) -> Result<()> {
    let count = want.len().to_string();
    wait_in(browser, tab, "members", |list| {
        let lines: Vec<&str> = list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines.len() == want.len() && lines.iter().all(|l| want.contains(*l))
    })
    .await
    .with_context(|| format!("the member list {want:?}"))?;
    wait_in(browser, tab, "member-count", |n| n == count)
        .await
        .map(drop)
}

/// Clicks Subscribe in tab `tab` and waits for the panel to say so.
async fn subscribe(browser: &Browser, tab: &WindowHandle) -> Result<()> {
    browser.client.switch_to_window(tab.clone()).await?;
    click(browser, "subscribe").await?;
    wait_in(browser, tab, "channel-status", |s| {
        s == format!("subscribed to {CHANNEL}")
    })
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_tabs_are_one_member_and_a_follower_follows_the_others() -> Result<()> {
    let _one = e2e::one_browser().await;
    scenario("/?share=1").await
}

/// The same in reliable mode: the leader's presence queries go unnumbered
/// beside the session, which the next leader resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_shared_tabs_are_one_member_and_a_follower_follows_the_others() -> Result<()> {
    let _one = e2e::one_browser().await;
    scenario("/?share=1&reliable=1").await
}

async fn scenario(path: &str) -> Result<()> {
    let server = start_dev_server(ADMIN_TOKEN).await?;
    let browser = Browser::start().await?;
    let a = browser.client.window().await?;
    browser.client.goto(&server.http_url(path)).await?;
    wait_in(&browser, &a, "tab-role", |r| r == "leader of 1 tab(s)").await?;
    let b = browser.client.new_window(false).await?.handle;
    browser.client.switch_to_window(b.clone()).await?;
    browser.client.goto(&server.http_url(path)).await?;
    wait_in(&browser, &b, "tab-role", |r| r == "follower of 2 tab(s)").await?;

    // The follower subscribes first, then the leader: one connection, one
    // member, listed once in each tab (the follower's list is the answer
    // to its members query, asked on the leader's connection).
    subscribe(&browser, &b).await?;
    subscribe(&browser, &a).await?;
    let shared = server_presence_is(&server, "one member", |p| p.len() == 1).await?;
    for tab in [&b, &a] {
        members_become(&browser, tab, &shared).await?;
    }

    // Another client subscribes: both tabs hear its join; it leaves (its
    // unsubscribe): both hear that too. The server's list is the judge.
    // The other client speaks the server's protocol itself (a console page
    // clicked the instant it opened was seen to miss the click now and
    // then, which this test is not about).
    let (mut other, _) = tokio_tungstenite::connect_async(server.ws_url("/ws?protocol=2")).await?;
    let subscribe = format!(r#"{{"type":"subscribe","channel":"{CHANNEL}","id":"s1"}}"#);
    other.send(Message::text(subscribe)).await?;
    let both = server_presence_is(&server, "two members", |p| p.len() == 2).await?;
    ensure!(both.is_superset(&shared), "{both:?} has {shared:?}");
    for tab in [&b, &a] {
        members_become(&browser, tab, &both).await?;
    }
    let unsubscribe = format!(r#"{{"type":"unsubscribe","channel":"{CHANNEL}","id":"u1"}}"#);
    other.send(Message::text(unsubscribe)).await?;
    server_presence_is(&server, "the other client gone", |p| *p == shared).await?;
    for tab in [&b, &a] {
        members_become(&browser, tab, &shared).await?;
    }
    let log = wait_in(&browser, &b, "channel-log", |log| log.contains("LEAVE")).await?;
    ensure!(
        log.contains("JOIN"),
        "the follower's feed has the join: {log}"
    );

    // The leader tab closes: the follower leads on a connection of its own
    // (another client id), subscribes again, and asks for the members
    // again: its list is the server's, the old connection gone from both.
    browser.client.switch_to_window(a).await?;
    browser.client.close_window().await?;
    wait_in(&browser, &b, "tab-role", |r| r == "leader of 1 tab(s)").await?;
    let after = server_presence_is(&server, "the new leader's connection", |p| {
        p.len() == 1 && *p != shared
    })
    .await?;
    members_become(&browser, &b, &after).await?;
    eprintln!(
        "{path}: one member per connection: {shared:?}, with another {both:?}, after the handoff {after:?}"
    );

    other.close(None).await?;
    browser.close().await?;
    server.shutdown().await
}
