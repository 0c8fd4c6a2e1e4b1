//! The browser benchmark: headless Chromium (driven by ChromeDriver through
//! WebDriver, which, unlike Playwright's page API, does not turn on network
//! events for every frame) receives a burst of 100,000 pushes from our server,
//! once through our wasm wrapper and once through the browser's raw
//! `WebSocket` from plain JavaScript, alternating, timed inside the page
//! with `performance.now()` from the first push to the last. Then the Yew
//! console takes the same burst while a `PerformanceObserver` records the
//! longest main-thread task and a `requestAnimationFrame` loop the longest
//! gap between frames. Before all that, the console is loaded a few times
//! in a fresh browser to time its first paint.
//!
//! The assets are served by our server itself (`--static-dir`): the UI from
//! `trunk build --release`, and the two burst pages written here.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::CHROME_ARGS;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::tabs;
use crate::harness::builds;
use crate::harness::procs::{Core, Guard, pinned};
use crate::harness::stats::median;

/// The raw JavaScript page: the browser's ceiling. It checks each `seq`
/// with the same substring scan as the wasm page.
const JS_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>burst: raw JavaScript WebSocket</title>
<script>
window.__bench = null;
const count = Number(new URLSearchParams(location.search).get("count"));
const ws = new WebSocket(`ws://${location.host}/ws?burst=${count}`);
let first = null, expected = 1, finished = false;
function done(result) { finished = true; window.__bench = JSON.stringify(result); ws.close(1000, "done"); }
ws.onmessage = (event) => {
  if (finished) return;
  const text = event.data;
  const at = text.indexOf('"seq":');
  if (at < 0) return;
  const seq = parseInt(text.slice(at + 6), 10);
  const t = performance.now();
  if (first === null) first = t;
  if (seq !== expected) { done({ ok: false, error: `push ${seq} arrived where ${expected} was expected` }); return; }
  if (seq === count) done({ ok: true, count, ms: t - first });
  expected++;
};
ws.onclose = (event) => { if (!finished) done({ ok: false, error: `closed with ${event.code} after ${expected - 1} pushes` }); };
</script>
"#;

/// The wasm page: our wrapper (`examples/browser.rs`).
const WASM_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>burst: buffered-socket (wasm)</title>
<script type="module">
import init, { burst, finish } from "./bench_browser.js";
window.__bench = null;
await init();
const count = Number(new URLSearchParams(location.search).get("count"));
burst(`ws://${location.host}/ws?burst=${count}`, count, (result) => { window.__bench = result; setTimeout(finish, 0); });
</script>
"#;

/// Installed in the Yew page before the burst: the longest task (the Long
/// Tasks API reports tasks of 50 ms or more) and the longest gap between
/// animation frames (which also sees shorter stalls).
const OBSERVE: &str = r#"
window.__longest = 0; window.__frame_gap = 0; window.__observing = true;
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
  .observe({ type: "longtask" });
let last = performance.now();
const frame = (t) => { window.__frame_gap = Math.max(window.__frame_gap, t - last); last = t; if (window.__observing) requestAnimationFrame(frame); };
requestAnimationFrame(frame);
"#;

/// Read after a load of the console, null until its first render is painted:
/// the first contentful paint (`index.html`'s body is empty, so the first
/// content painted is the console's first render) and, for the split, when
/// the wasm finished downloading and when the HTML was parsed, all in ms
/// from the start of the navigation.
const PAINTED: &str = r#"
const paint = performance.getEntriesByName("first-contentful-paint")[0];
if (!paint || !document.querySelector('[data-testid="state"]')) return null;
const wasm = performance.getEntriesByType("resource").find((e) => e.name.endsWith(".wasm"));
const nav = performance.getEntriesByType("navigation")[0];
return { fcp_ms: paint.startTime, wasm_loaded_ms: wasm ? wasm.responseEnd : null,
         dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : null };
"#;

/// What the browser part needs on disk, with the UI's bundle sizes.
pub struct Assets {
    /// The directory our server serves: the UI plus the burst pages.
    pub www: PathBuf,
    /// Whether the Yew UI built (else `index.html` is a placeholder).
    pub ui: bool,
    /// Bundle sizes (JSON) or why they are missing.
    pub bundle: Value,
}

fn gzip_size(path: &Path) -> Result<u64> {
    let output = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .context("running gzip")?;
    if !output.status.success() {
        bail!("gzip {} failed", path.display());
    }
    Ok(output.stdout.len() as u64)
}

/// Builds the UI with `trunk build --release` into `out/www` and the wasm
/// burst page next to it; measures the UI's bundle.
///
/// # Errors
///
/// When the wasm burst page cannot be built (the UI may fail: it is then
/// reported as missing and the Yew part skipped).
pub fn prepare(root: &Path, target: &Path, out: &Path) -> Result<Assets> {
    let www = out.join("www");
    let _ = std::fs::remove_dir_all(&www);
    let built = builds::ui(root, target, &www);
    let (ui, bundle) = match built.and_then(|()| bundle_sizes(&www)) {
        Ok(bundle) => (true, bundle),
        Err(err) => {
            eprintln!(
                "bench: the UI did not build, its bundle and the Yew page are skipped: {err:#}"
            );
            std::fs::create_dir_all(&www)?;
            std::fs::write(
                www.join("index.html"),
                "<!doctype html><title>no UI</title>",
            )?;
            (false, json!({ "error": format!("{err:#}") }))
        }
    };
    builds::wasm_burst_page(root, target, &www)?;
    std::fs::write(www.join("bench-js.html"), JS_PAGE)?;
    std::fs::write(www.join("bench-wasm.html"), WASM_PAGE)?;
    Ok(Assets { www, ui, bundle })
}

fn bundle_sizes(www: &Path) -> Result<Value> {
    let mut files = Vec::new();
    let (mut raw, mut gz) = ([0u64; 2], [0u64; 2]);
    for entry in std::fs::read_dir(www)? {
        let path = entry?.path();
        let kind = match path.extension().and_then(|e| e.to_str()) {
            Some("wasm") => 0,
            Some("js") => 1,
            _ => continue,
        };
        let size = std::fs::metadata(&path)?.len();
        let gzip = gzip_size(&path)?;
        raw[kind] += size;
        gz[kind] += gzip;
        files.push(json!({
            "file": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "bytes": size, "gzip_bytes": gzip,
        }));
    }
    if raw[0] == 0 {
        bail!("no .wasm in {}", www.display());
    }
    Ok(json!({
        "wasm_bytes": raw[0], "wasm_gzip_bytes": gz[0],
        "js_bytes": raw[1], "js_gzip_bytes": gz[1],
        "files": files,
    }))
}

async fn connect(port: u16) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": CHROME_ARGS, "binary": "/usr/bin/chromium" }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() >= deadline => {
                bail!("ChromeDriver on port {port} did not answer in 20 s: {err}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Polls `script` (which returns null until ready) every 20 ms, for at most `timeout`.
async fn poll(client: &Client, what: &str, script: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = client.execute(script, vec![]).await?;
        if !value.is_null() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One burst page, timed inside the page.
async fn page_burst(client: &Client, base: &str, page: &str, count: u32) -> Result<f64> {
    client.goto(&format!("{base}/{page}?count={count}")).await?;
    let result = poll(
        client,
        &format!("{page} to receive {count} pushes"),
        "return window.__bench;",
        Duration::from_secs(120),
    )
    .await?;
    let result: Value = serde_json::from_str(result.as_str().unwrap_or("{}"))?;
    if result["ok"] != true {
        bail!("{page}: {}", result["error"]);
    }
    result["ms"].as_f64().context("no ms in the page's result")
}

/// A script that returns the text of the element `data-testid=id` once
/// `ready` (a JS expression over that text, `t`) holds, else null.
fn text_when(id: &str, ready: &str) -> String {
    format!(
        "const e = document.querySelector('[data-testid=\"{id}\"]'); \
         const t = e ? e.textContent : null; return t !== null && ({ready}) ? t : null;"
    )
}

/// The Yew console takes one burst of `count` while the page's longest task is observed.
async fn yew_burst(client: &Client, base: &str, count: u32) -> Result<Value> {
    client.goto(base).await?;
    // The console connects on load.
    poll(
        client,
        "the console's socket to open",
        &text_when("state", "t === 'open'"),
        Duration::from_secs(30),
    )
    .await?;
    // Set the size the way typing would end (WebDriver's `clear` fires no
    // `input` event, so Yew kept its state and the keys were appended to it).
    client
        .execute(
            "const e = document.querySelector('[data-testid=\"burst-count\"]'); \
             e.value = String(arguments[0]); \
             e.dispatchEvent(new Event('input', { bubbles: true }));",
            vec![json!(count)],
        )
        .await?;
    poll(
        client,
        "the burst size to be set",
        &format!(
            "const e = document.querySelector('[data-testid=\"burst-count\"]'); \
             return e && e.value === '{count}' ? true : null;"
        ),
        Duration::from_secs(5),
    )
    .await?;
    client.execute(OBSERVE, vec![]).await?;
    client
        .find(Locator::Css("[data-testid=\"burst\"]"))
        .await?
        .click()
        .await?;
    let status = match poll(
        client,
        "the console's burst to finish",
        &text_when("burst-status", "t.includes('msg/s')"),
        Duration::from_secs(120),
    )
    .await
    {
        Ok(status) => status,
        Err(err) => {
            // Say what the page showed, so a failed run explains itself.
            let shown = client
                .execute(
                    "return ['state', 'burst-count', 'burst-status', 'received'].map((id) => { \
                     const e = document.querySelector(`[data-testid=\"${id}\"]`); \
                     return `${id}: ${e ? (e.value ?? e.textContent) : 'missing'}`; }).join('; ');",
                    vec![],
                )
                .await
                .unwrap_or_default();
            bail!("{err:#} (the page showed {shown})");
        }
    };
    let received = poll(
        client,
        "the console to count every push",
        &text_when("received", &format!("Number(t) >= {count}")),
        Duration::from_secs(30),
    )
    .await?;
    let figures = client
        .execute(
            "window.__observing = false; return [window.__longest, window.__frame_gap];",
            vec![],
        )
        .await?;
    Ok(json!({
        "burst_status": status,
        "received": received,
        "longest_task_ms": figures[0],
        "longest_frame_gap_ms": figures[1],
    }))
}

/// Loads the console `loads` times, from `about:blank` each time, and reads
/// its paint timing. The first load of the session is cold (empty HTTP cache,
/// no compiled wasm cached); the others are what a returning visitor sees.
async fn first_paint(client: &Client, base: &str, loads: usize) -> Result<Value> {
    let mut all = Vec::new();
    for _ in 0..loads {
        client.goto("about:blank").await?;
        client.goto(base).await?;
        let timing = poll(
            client,
            "the console's first contentful paint",
            PAINTED,
            Duration::from_secs(30),
        )
        .await?;
        eprintln!("browser console first paint {timing}");
        all.push(timing);
    }
    let fcp: Vec<f64> = all
        .iter()
        .map(|t| t["fcp_ms"].as_f64().unwrap_or(f64::NAN))
        .collect();
    let (cold, mut warm) = match fcp.split_first() {
        Some((cold, warm)) => (*cold, warm.to_vec()),
        None => bail!("no load of the console was timed"),
    };
    Ok(json!({
        "cold_fcp_ms": cold,
        "warm_fcp_ms": median(&mut warm),
        "loads": all,
    }))
}

/// Runs the browser part against our server at `addr`, serving `assets`.
///
/// # Errors
///
/// When ChromeDriver cannot be started or a page fails (wrong order, closed, timeout).
/// `server_pid` is our server's process, whose memory the ten tabs read.
pub fn run(
    addr: &str,
    assets: &Assets,
    rounds: usize,
    count: u32,
    server_pid: u32,
) -> Result<Value> {
    with_browser(async |client, driver| {
        measure(client, addr, assets, (rounds, count), (server_pid, driver)).await
    })
}

/// Only the ten tabs with and without sharing (`bench tabs`), `rounds` of each.
///
/// # Errors
///
/// When ChromeDriver cannot be started or the tabs do not settle.
pub fn run_tabs(addr: &str, server_pid: u32, rounds: usize) -> Result<Value> {
    let base = format!("http://{addr}");
    with_browser(async |client, driver| {
        tabs::measure(client, &base, server_pid, driver, rounds).await
    })
}

/// Runs `f` with a WebDriver client of a fresh ChromeDriver (and its pid),
/// then closes the client; the driver and its browser are killed after.
fn with_browser(f: impl AsyncFnOnce(&Client, u32) -> Result<Value>) -> Result<Value> {
    let (driver, port) = start_driver()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connect(port).await?;
        let result = f(&client, driver.pid()).await;
        let _ = client.close().await;
        result
    })
}

/// ChromeDriver on a free port, pinned to the load core, in its own process
/// group so that the browser processes are killed with it when the guard drops.
fn start_driver() -> Result<(Guard, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let driver = std::env::var_os("CHROMEDRIVER").unwrap_or_else(|| "/usr/bin/chromedriver".into());
    let mut command = pinned(Core::Load, 4096, &driver);
    command.arg(format!("--port={port}"));
    Ok((Guard::spawn("chromedriver", command, true)?, port))
}

async fn measure(
    client: &Client,
    addr: &str,
    assets: &Assets,
    (rounds, count): (usize, u32),
    (server_pid, driver_pid): (u32, u32),
) -> Result<Value> {
    let base = format!("http://{addr}");
    // First, while the browser is fresh: the console's first paint.
    let paint = if assets.ui {
        match first_paint(client, &base, 6).await {
            Ok(paint) => paint,
            Err(err) => json!({ "error": format!("{err:#}") }),
        }
    } else {
        json!({ "error": "the UI did not build" })
    };
    // Ten tabs with and without sharing (issue 15): one round each in the
    // quick run, two in the full one.
    let tabs = if assets.ui {
        match tabs::measure(
            client,
            &base,
            server_pid,
            driver_pid,
            (rounds / 3).clamp(1, 2),
        )
        .await
        {
            Ok(tabs) => tabs,
            Err(err) => {
                eprintln!("browser: the ten tabs failed: {err:#}");
                json!({ "error": format!("{err:#}") })
            }
        }
    } else {
        json!({ "error": "the UI did not build" })
    };
    // A first load of each page, unmeasured: compiles the wasm, warms the caches.
    page_burst(client, &base, "bench-js.html", 1000).await?;
    page_burst(client, &base, "bench-wasm.html", 1000).await?;
    let (mut js, mut wasm) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_js in order {
            let page = if is_js {
                "bench-js.html"
            } else {
                "bench-wasm.html"
            };
            let ms = page_burst(client, &base, page, count).await?;
            eprintln!("browser {page:<16} {ms:>8.1} ms");
            if is_js { &mut js } else { &mut wasm }.push(ms);
        }
    }
    let rate = |ms: f64| f64::from(count) / (ms / 1000.0);
    let (js_all, wasm_all) = (js.clone(), wasm.clone());
    let (js_ms, wasm_ms) = (median(&mut js), median(&mut wasm));
    let yew = if assets.ui {
        match yew_burst(client, &base, count).await {
            Ok(yew) => yew,
            Err(err) => json!({ "error": format!("{err:#}") }),
        }
    } else {
        json!({ "error": "the UI did not build" })
    };
    eprintln!("browser yew console {yew}");
    Ok(json!({
        "mode": "browser", "count": count, "rounds": rounds,
        "js_ms": js_ms, "js_msgs_per_s": rate(js_ms), "js_ms_all": js_all,
        "wasm_ms": wasm_ms, "wasm_msgs_per_s": rate(wasm_ms), "wasm_ms_all": wasm_all,
        "yew": yew, "first_paint": paint, "tabs": tabs,
    }))
}
