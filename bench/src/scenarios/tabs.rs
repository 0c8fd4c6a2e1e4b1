//! Ten tabs, with sharing and without (issue 15): ten windows of the console
//! in one headless Chromium against our server, once at `/?share=1` (one
//! leader tab holds the socket, the others share it) and once at `/` (a
//! socket per tab), in alternating order. For each: the server's own count of
//! open WebSocket connections (`ws_connections_open` in `/metrics`), its
//! resident memory before and after, and the browser's memory (the sum of
//! the proportional set sizes of ChromeDriver's descendants, so pages shared
//! between Chromium's processes count once).
//!
//! Every window opened here is closed again, on success and on error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::Client;
use fantoccini::wd::WindowHandle;
use serde_json::{Value, json};

use crate::harness::proc_stats::{rss_kib, settled};

/// How long the tabs may take to settle (ten loads of the wasm on two cores).
const SETTLE: Duration = Duration::from_secs(30);

/// Each tab's `tab-role` (or null when not shown) and `state` texts.
const ROLE_AND_STATE: &str = r#"
const text = (id) => { const e = document.querySelector(`[data-testid="${id}"]`); return e ? e.textContent : null; };
return [text("tab-role"), text("state")];
"#;

/// The server's own count of open WebSocket connections.
async fn open_connections(base: &str) -> Result<u64> {
    let body = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    body.lines()
        .find_map(|line| line.strip_prefix("ws_connections_open "))
        .context("no ws_connections_open in /metrics")?
        .trim()
        .parse()
        .context("ws_connections_open is not a number")
}

/// Polls until the server counts `want` open connections, at most `timeout`.
async fn connections_become(base: &str, want: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let open = open_connections(base).await?;
        if open == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the server counts {open} open connection(s), not {want}, after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's count once it has stopped moving: three equal reads 100 ms
/// apart, at most 5 s. Connections of pages loaded before (the first-paint
/// loads) may linger on the server after their pages are gone: the figures
/// are counted from this baseline.
async fn settled_connections(base: &str) -> Result<u64> {
    settled(Duration::from_secs(5), || open_connections(base)).await
}

/// The resident memory of `pid` once it has stopped moving: three equal
/// samples 100 ms apart, at most 3 s (as the idle scenario reads it).
async fn settled_rss(pid: u32) -> Result<u64> {
    settled(Duration::from_secs(3), || async { rss_kib(pid) }).await
}

/// The summed proportional set size (KiB) of every descendant of `root`
/// (ChromeDriver: the browser's processes are its descendants), `None` where
/// `/proc` cannot tell.
fn browser_pss_kib(root: u32) -> Option<u64> {
    let mut parent = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid ...`: the comm may hold spaces, so split after its `)`.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let descends = |mut pid: u32| {
        // Bounded: a pid's ancestry is at most as long as the process table.
        for _ in 0..parent.len() {
            match parent.get(&pid) {
                Some(&up) if up == root => return true,
                Some(&up) if up > 1 => pid = up,
                _ => return false,
            }
        }
        false
    };
    let mut total = 0;
    let mut seen = 0;
    for &pid in parent.keys().filter(|&&pid| descends(pid)) {
        // A process may exit between the listing and the read: skipped.
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        if let Some(kib) = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += kib;
            seen += 1;
        }
    }
    (seen > 0).then_some(total)
}

/// Polls until the `tabs` windows are settled: all open and, with `share`,
/// one leader and the others following, each counting every tab; without,
/// each tab's own socket open. Returns the roles last seen.
async fn settle(client: &Client, tabs: &[WindowHandle], share: bool) -> Result<Vec<Value>> {
    let count = format!("of {} tab(s)", tabs.len());
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut seen = Vec::with_capacity(tabs.len());
        for tab in tabs {
            client.switch_to_window(tab.clone()).await?;
            seen.push(client.execute(ROLE_AND_STATE, vec![]).await?);
        }
        let roles: Vec<&str> = seen.iter().map(|s| s[0].as_str().unwrap_or("")).collect();
        let all_open = seen.iter().all(|s| s[1] == "open");
        let settled = if share {
            let leaders = roles.iter().filter(|r| r.starts_with("leader")).count();
            let followers = roles.iter().filter(|r| r.starts_with("follower")).count();
            all_open
                && roles.iter().all(|r| r.ends_with(count.as_str()))
                && leaders == 1
                && followers == tabs.len() - 1
        } else {
            all_open
        };
        if settled {
            return Ok(seen);
        }
        if Instant::now() >= deadline {
            bail!("the tabs did not settle in {SETTLE:?}; (role, state) of each: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `n` windows at `url` (their handles pushed to `opened` as they
/// come, so that the caller closes them even when this fails), waits until
/// they are settled, and reads the figures.
async fn open_and_measure(
    client: &Client,
    base: &str,
    share: bool,
    n: usize,
    pids: (u32, u32),
    opened: &mut Vec<WindowHandle>,
) -> Result<Value> {
    let (server, driver) = pids;
    let baseline = settled_connections(base).await?;
    let rss_before = settled_rss(server).await?;
    let browser_before = browser_pss_kib(driver);
    let url = if share {
        format!("{base}/?share=1")
    } else {
        format!("{base}/")
    };
    let started = Instant::now();
    for _ in 0..n {
        let new = client.new_window(false).await?;
        opened.push(new.handle.clone());
        client.switch_to_window(new.handle).await?;
        client.goto(&url).await?;
    }
    let roles = settle(client, opened, share).await?;
    let want = if share { 1 } else { n as u64 };
    // The server's count is the judge: it must agree with what the tabs show.
    connections_become(base, baseline + want, Duration::from_secs(10)).await?;
    let settled_ms = started.elapsed().as_secs_f64() * 1000.0;
    let connections = open_connections(base).await?.saturating_sub(baseline);
    let rss_after = settled_rss(server).await?;
    let browser_after = browser_pss_kib(driver);
    let leader = roles
        .iter()
        .find_map(|r| r[0].as_str().filter(|r| r.starts_with("leader")))
        .map(str::to_owned);
    Ok(json!({
        "share": share, "tabs": n, "connections": connections,
        "server_connections_before": baseline,
        "server_rss_before_kib": rss_before, "server_rss_after_kib": rss_after,
        "server_rss_delta_kib": rss_after as i64 - rss_before as i64,
        "browser_pss_before_kib": browser_before, "browser_pss_after_kib": browser_after,
        "browser_pss_delta_kib": browser_before.zip(browser_after).map(|(b, a)| a as i64 - b as i64),
        "settled_ms": settled_ms, "leader_role": leader,
    }))
}

/// Closes every window in `opened` and returns to `home`.
async fn close_all(client: &Client, opened: &mut Vec<WindowHandle>, home: &WindowHandle) {
    for tab in opened.drain(..) {
        if client.switch_to_window(tab).await.is_ok() {
            let _ = client.close_window().await;
        }
    }
    let _ = client.switch_to_window(home.clone()).await;
}

/// Runs the ten tabs with and without sharing, `rounds` times each in
/// alternating order, against our server at `base` (process `server_pid`;
/// ChromeDriver is `driver_pid`). The browser's current window is left on
/// `about:blank`; every window opened here is closed.
///
/// # Errors
///
/// When the tabs do not settle, or the server's count is not the expected one.
pub async fn measure(
    client: &Client,
    base: &str,
    server_pid: u32,
    driver_pid: u32,
    rounds: usize,
) -> Result<Value> {
    const TABS: usize = 10;
    let home = client.window().await?;
    // Unmeasured: one console loaded in the current window, so that the
    // server's first serving of the UI and first connection are not counted
    // in the first measured mode. It is left for `about:blank` after (which
    // also closes a console this window may have held from before).
    client.goto(&format!("{base}/?share=1")).await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        let seen = client.execute(ROLE_AND_STATE, vec![]).await?;
        if seen[1] == "open" {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the console did not open its socket in {SETTLE:?}: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.goto("about:blank").await?;
    let mut runs = Vec::new();
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for share in order {
            let mut opened = Vec::new();
            let result = open_and_measure(
                client,
                base,
                share,
                TABS,
                (server_pid, driver_pid),
                &mut opened,
            )
            .await;
            close_all(client, &mut opened, &home).await;
            let result = result.with_context(|| {
                format!(
                    "{TABS} tabs {}",
                    if share { "sharing" } else { "not sharing" }
                )
            })?;
            eprintln!(
                "browser {TABS} tabs {:<12} {} connection(s), server RSS added {} KiB, browser PSS added {} KiB, settled in {:.0} ms",
                if share { "sharing" } else { "not sharing" },
                result["connections"],
                result["server_rss_delta_kib"],
                result["browser_pss_delta_kib"],
                result["settled_ms"].as_f64().unwrap_or(f64::NAN),
            );
            runs.push(result);
        }
    }
    // Summary: per mode, the median of the rounds.
    let summary = |share: bool| {
        let of: Vec<&Value> = runs.iter().filter(|r| r["share"] == share).collect();
        let med = |key: &str| {
            let mut v: Vec<f64> = of.iter().filter_map(|r| r[key].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        json!({
            "connections": med("connections"),
            "server_rss_delta_kib": med("server_rss_delta_kib"),
            "browser_pss_delta_kib": med("browser_pss_delta_kib"),
            "settled_ms": med("settled_ms"),
        })
    };
    Ok(json!({
        "tabs": TABS, "rounds": rounds.max(1),
        "shared": summary(true), "separate": summary(false), "runs": runs,
    }))
}
