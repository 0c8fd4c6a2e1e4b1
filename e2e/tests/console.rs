//! The console page in headless Chromium against the real server.

use std::time::Duration;

use anyhow::{Context, Result};
use e2e::{Browser, artefact_dir, by_id, click, dist_dir, text, type_into};
use fantoccini::Locator;
use testbed::{Testbed, mint_token};

const STEP: Duration = Duration::from_secs(30);

/// Waits until the element `id` satisfies `ok`; returns its text.
async fn wait_text(
    browser: &Browser,
    id: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    e2e::wait_text(browser, id, what, STEP, ok).await
}

async fn log_has(browser: &Browser, needle: &str) -> Result<()> {
    wait_text(
        browser,
        "log",
        &format!("a log line with {needle:?}"),
        |log| log.lines().any(|l| l.contains(needle)),
    )
    .await
    .map(drop)
}

/// Types `message`, clicks Send and waits for its RESPONSE line.
async fn send_and_see_the_echo(browser: &Browser, message: &str) -> Result<()> {
    type_into(browser, "message", message).await?;
    click(browser, "send").await?;
    wait_text(browser, "log", &format!("the echo of {message:?}"), |log| {
        log.lines()
            .any(|l| l.contains("RESPONSE") && l.contains(message))
    })
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_connects_echoes_survives_a_restart_and_takes_a_burst() -> Result<()> {
    let testbed = Testbed::start(Some(&dist_dir()?)).await?;
    let browser = Browser::start().await?;
    browser.client.goto(&testbed.http_base).await?;
    assert_eq!(browser.client.title().await?, "Socket console");

    // Connect and see it open.
    wait_text(&browser, "state", "the page", |_| true).await?;
    click(&browser, "connect").await?;
    wait_text(&browser, "state", "open", |s| s == "open").await?;
    log_has(&browser, "OPEN").await?;

    // Send a message and see its RESPONSE line.
    send_and_see_the_echo(&browser, "hello from e2e").await?;

    // The auto-sender: checked, it sends its text every 3 s; unchecked again
    // before the restart below, which counts the queued messages.
    click(&browser, "auto-send").await?;
    wait_text(&browser, "log", "an automatic echo", |log| {
        log.lines()
            .any(|l| l.contains("RESPONSE") && l.contains("web browser setInterval"))
    })
    .await?;
    click(&browser, "auto-send").await?;
    let auto = browser
        .client
        .find(Locator::Css(&by_id("auto-send")))
        .await?;
    assert!(!auto.is_selected().await?, "the auto-sender is off again");

    // Stop the server, send while it is down: the message is queued.
    testbed.stop_server().await?;
    wait_text(&browser, "state", "reconnecting", |s| {
        s.starts_with("reconnecting")
    })
    .await?;
    log_has(&browser, "code 1001").await?;
    type_into(&browser, "message", "sent while down").await?;
    browser
        .client
        .find(Locator::Css(&by_id("message")))
        .await?
        .send_keys("\u{E007}") // Enter sends too.
        .await?;
    wait_text(&browser, "queue", "the queued message", |q| q == "1/100").await?;
    // Back up: it reconnects and the queued message gets its RESPONSE.
    testbed.start_server().await?;
    wait_text(&browser, "state", "open again", |s| s == "open").await?;
    wait_text(&browser, "log", "the queued message's echo", |log| {
        log.lines()
            .any(|l| l.contains("RESPONSE") && l.contains("sent while down"))
    })
    .await?;
    wait_text(&browser, "queue", "an empty queue", |q| q == "0/100").await?;
    // One for Connect on an open socket (it replaces it), one for the restart.
    assert_eq!(text(&browser, "reconnects").await?, "2");

    // A burst of 100,000: the counter reaches it.
    assert_eq!(
        browser
            .client
            .find(Locator::Css(&by_id("burst-count")))
            .await?
            .prop("value")
            .await?
            .as_deref(),
        Some("100000")
    );
    click(&browser, "burst").await?;
    wait_text(&browser, "burst-status", "the burst to finish", |s| {
        s.contains("msg/s")
    })
    .await?;
    let received: u64 = wait_text(&browser, "received", "100,000 received", |r| {
        r.parse::<u64>().is_ok_and(|n| n >= 100_000)
    })
    .await?
    .parse()?;
    assert!(received >= 100_000);
    let longest = text(&browser, "longest-task").await?;
    eprintln!(
        "burst: {}; longest task: {longest}",
        text(&browser, "burst-status").await?
    );

    // Reliable mode: the counters show delivered and acknowledged messages.
    click(&browser, "reliable").await?;
    wait_text(&browser, "state", "open in reliable mode", |s| s == "open").await?;
    send_and_see_the_echo(&browser, "reliable hello").await?;
    wait_text(&browser, "acked", "the server's ack", |a| {
        a.starts_with("1 ")
    })
    .await?;
    wait_text(&browser, "delivered", "a delivered message", |d| {
        d.parse::<u64>().is_ok_and(|n| n >= 1)
    })
    .await?;
    // A restarted server forgot the session: the page says so, never silent.
    testbed.stop_server().await?;
    testbed.start_server().await?;
    wait_text(&browser, "log", "the failed resume", |log| {
        log.lines()
            .any(|l| l.contains("GAP") && l.contains("unknown_session"))
    })
    .await?;
    wait_text(&browser, "state", "open after the restart", |s| s == "open").await?;

    let png = browser.client.screenshot().await?;
    let path = artefact_dir()?.join("console.png");
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("screenshot: {}", path.display());

    browser.close().await?;
    testbed.shutdown().await
}

/// The console's token field against the testbed's token-mode server: no
/// token is refused (4401, the wrapper stops and the log says why); a token
/// in the field is used on Connect (the welcome carries its `exp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_connects_with_the_token_field_and_shows_a_refusal() -> Result<()> {
    let testbed = Testbed::start(Some(&dist_dir()?)).await?;
    let browser = Browser::start().await?;
    browser.client.goto(&testbed.http_base).await?;
    wait_text(&browser, "state", "the page", |_| true).await?;

    let url = format!("{}/ws", testbed.auth_ws_base);
    type_into(&browser, "url", &url).await?;
    click(&browser, "connect").await?;
    log_has(&browser, "the server refused the token: missing token").await?;
    wait_text(&browser, "state", "closed", |s| s.starts_with("closed")).await?;

    type_into(
        &browser,
        "token",
        &mint_token("alice", Duration::from_secs(600)),
    )
    .await?;
    click(&browser, "connect").await?;
    wait_text(&browser, "state", "open with the token", |s| s == "open").await?;
    log_has(&browser, "\"exp\":").await?;
    send_and_see_the_echo(&browser, "hello with a token").await?;

    browser.close().await?;
    testbed.shutdown().await
}
