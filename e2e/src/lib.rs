//! End-to-end test support: the built UI (`dist/`, from `trunk build`) served
//! by the real server (the `testbed` crate) and driven in headless Chromium
//! through ChromeDriver with fantoccini.
//!
//! `cargo xtask test` builds the UI and runs these tests with `CHROMEDRIVER`
//! set; by hand: `trunk build --release && cargo test -p e2e`.
//!
//! Layout: [`Browser`] owns a ChromeDriver process and a WebDriver session;
//! [`wait_for`] polls a condition with a deadline (never a fixed sleep);
//! [`dist_dir`] finds the built UI; [`by_id`], [`text`], [`click`] and
//! [`type_into`] reach the console's `data-testid` elements, [`wait_in`]
//! one of them in a given window; [`start_dev_server`] and [`admin_get`]
//! are the server of the channel tests and its admin API, the judge.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let testbed = testbed::Testbed::start(Some(&e2e::dist_dir()?)).await?;
//! let browser = e2e::Browser::start().await?;
//! browser.client.goto(&testbed.http_base).await?;
//! browser.close().await?;
//! testbed.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;
use testbed::{TestServer, config_with_namespaces};

/// Chrome's arguments: headless, and no network of its own (only loopback is
/// reachable here and Chrome's background requests would fail). The
/// benchmarks use the same.
pub const CHROME_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
];

/// The built UI directory, `dist/` at the workspace root.
///
/// # Errors
///
/// When it has not been built, with the command that builds it.
pub fn dist_dir() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("e2e/ has a parent")?;
    let dist = root.join("dist");
    if !dist.join("index.html").is_file() {
        bail!(
            "{} has no built UI: run `trunk build --release` at the root (cargo xtask test does)",
            dist.display()
        );
    }
    Ok(dist)
}

/// Where end-to-end artefacts (screenshots) go: `target/e2e/`.
///
/// # Errors
///
/// When the directory cannot be created.
pub fn artefact_dir() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("e2e/ has a parent")?;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("e2e");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A ChromeDriver process and a WebDriver session in headless Chromium.
/// Dropping it kills ChromeDriver's whole process group: killing
/// ChromeDriver alone (a test that panics never reaches [`Browser::close`])
/// leaves the browser running, orphaned, its pages still reconnecting and
/// burning CPU for the tests after it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    killed: bool,
}

impl Browser {
    /// Starts ChromeDriver (`$CHROMEDRIVER`, else `chromedriver` on PATH) on a
    /// free port and opens a session.
    ///
    /// # Errors
    ///
    /// When ChromeDriver cannot be started or does not answer within 20 s.
    pub async fn start() -> Result<Self> {
        let driver_path = std::env::var_os("CHROMEDRIVER").unwrap_or_else(|| "chromedriver".into());
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {}: install chromium-driver or set CHROMEDRIVER",
                    Path::new(&driver_path).display()
                )
            })?;
        Ok(Self {
            client: connect(port).await?,
            driver,
            killed: false,
        })
    }

    /// Ends the session and stops ChromeDriver.
    ///
    /// # Errors
    ///
    /// When the session cannot be closed cleanly.
    pub async fn close(mut self) -> Result<()> {
        let closed = self.client.clone().close().await;
        self.kill();
        closed.context("closing the WebDriver session")
    }

    /// Kills ChromeDriver and every browser process it started (its group).
    fn kill(&mut self) {
        if self.killed {
            return; // reaped already: its id may belong to another process now
        }
        self.killed = true;
        // Before any wait: while a process of the group lives (or the
        // unreaped leader), the group's id cannot be given to another.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connect(port: u16) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": CHROME_ARGS }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last_err = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Ok(client),
            Err(err) => last_err = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("ChromeDriver on port {port} did not answer: {last_err:?}")
}

/// Polls `check` until it returns `Ok(Some(value))`, failing after `timeout`
/// with the last observation in the message.
///
/// # Errors
///
/// When the deadline passes, or `check` itself fails.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The CSS selector of the element with `data-testid="id"` (the console
/// marks what the tests read and click that way).
#[must_use]
pub fn by_id(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

/// The text of the element `data-testid="id"`.
///
/// # Errors
///
/// When the element is missing or WebDriver fails.
pub async fn text(browser: &Browser, id: &str) -> Result<String> {
    let element = browser.client.find(Locator::Css(&by_id(id))).await?;
    Ok(element.text().await?)
}

/// Clicks the element `data-testid="id"`, by the element's own `click()`.
///
/// Not WebDriver's click, which finds where the element is, then sends the
/// mouse there: a page that moves in between (a panel above the element
/// changing height as its texts change, the connection's state as it
/// opens, say) gets the click somewhere else, with no error. A console
/// page clicked the instant it opened missed its Subscribe about once in
/// ten runs, with no error and no effect, as such a shift would. What
/// these tests check is the page's answer to the click, not
/// the browser's hit-testing; the element's `click()` dispatches the same
/// `click` event to it (and toggles a checkbox, firing `input` and
/// `change`), wherever it is.
///
/// # Errors
///
/// When the element is missing or WebDriver fails.
pub async fn click(browser: &Browser, id: &str) -> Result<()> {
    let element = browser.client.find(Locator::Css(&by_id(id))).await?;
    browser
        .client
        .execute(
            "arguments[0].click();",
            vec![serde_json::to_value(element)?],
        )
        .await?;
    Ok(())
}

/// Waits until the element `data-testid="id"` in window `tab` satisfies
/// `ok` (not rendered yet counts as not yet), within `timeout`; returns its
/// text.
///
/// # Errors
///
/// When the deadline passes (the message has the last text seen), or
/// WebDriver cannot switch to the window.
pub async fn wait_in(
    browser: &Browser,
    tab: &WindowHandle,
    id: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    let what = format!("{id} in a tab");
    wait_text_of(browser, Some(tab), id, (&what, timeout), ok).await
}

/// Waits until the element `data-testid="id"` of the current window
/// satisfies `ok` (not rendered yet counts as not yet), within `timeout`
/// (`what` names the wait in its error); returns its text.
///
/// # Errors
///
/// When the deadline passes (the message has the last text seen).
pub async fn wait_text(
    browser: &Browser,
    id: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    wait_text_of(browser, None, id, (what, timeout), ok).await
}

/// [`wait_text`], in window `tab` when given.
async fn wait_text_of(
    browser: &Browser,
    tab: Option<&WindowHandle>,
    id: &str,
    (what, timeout): (&str, Duration),
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    let last = std::cell::RefCell::new(String::new());
    let waited = wait_for(what, timeout, || async {
        if let Some(tab) = tab {
            browser.client.switch_to_window(tab.clone()).await?;
        }
        let now = text(browser, id).await.unwrap_or_default();
        let done = ok(&now);
        last.replace(now.clone());
        Ok(done.then_some(now))
    })
    .await;
    waited.with_context(|| format!("{id} was {:?}", last.borrow()))
}

/// The tests of one binary that start a browser take turns (the machine
/// has two cores): hold this while the browser runs.
pub async fn one_browser() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE_BROWSER.lock().await
}

/// The real server with `cargo xtask run`'s development config (its `chat`
/// namespace), serving the built UI, its admin API behind `admin_token`,
/// on a port it binds itself.
///
/// # Errors
///
/// When the UI is not built or the server does not start.
pub async fn start_dev_server(admin_token: &str) -> Result<TestServer> {
    let dist = dist_dir()?;
    let dist = dist.to_string_lossy();
    let config = config_with_namespaces(
        include_str!("../../config/development.toml"),
        &["--static-dir", &dist, "--admin-token", admin_token],
    )?;
    TestServer::start(config).await
}

/// `GET path` on `server`'s admin API with `admin_token`, as JSON.
///
/// # Errors
///
/// When the request fails, the answer is not a success, or not JSON.
pub async fn admin_get(server: &TestServer, admin_token: &str, path: &str) -> Result<Value> {
    let request = reqwest::Client::new().get(server.http_url(path));
    admin_answer(request, admin_token, &format!("GET {path}")).await
}

/// `POST path` with `body` on `server`'s admin API with `admin_token`; its
/// answer, as JSON.
///
/// # Errors
///
/// When the request fails, the answer is not a success, or not JSON.
pub async fn admin_post(
    server: &TestServer,
    admin_token: &str,
    path: &str,
    body: String,
) -> Result<Value> {
    let request = reqwest::Client::new()
        .post(server.http_url(path))
        .body(body);
    admin_answer(request, admin_token, &format!("POST {path}")).await
}

/// Sends an admin `request` with `admin_token`; its answer as JSON, or an
/// error that names `what`.
async fn admin_answer(
    request: reqwest::RequestBuilder,
    admin_token: &str,
    what: &str,
) -> Result<Value> {
    let response = request.bearer_auth(admin_token).send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{what}: {status} {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: {body}"))
}

/// The client ids `server` lists in `channel`'s presence (the admin API's
/// `GET /api/channels/{channel}/presence`, with `admin_token`).
///
/// # Errors
///
/// When the request fails or the answer has no `clients`.
pub async fn server_presence(
    server: &TestServer,
    admin_token: &str,
    channel: &str,
) -> Result<std::collections::BTreeSet<String>> {
    let path = format!("/api/channels/{channel}/presence");
    let answer = admin_get(server, admin_token, &path).await?;
    let clients = answer["clients"]
        .as_array()
        .with_context(|| format!("no clients in {answer}"))?;
    Ok(clients
        .iter()
        .filter_map(|member| member["client_id"].as_str().map(str::to_owned))
        .collect())
}

/// Waits, within `timeout`, until [`server_presence`] satisfies `ok`
/// (`what` names the wait in its error); returns it.
///
/// # Errors
///
/// When the deadline passes (the message has the last list seen).
pub async fn server_presence_is(
    (server, admin_token, channel): (&TestServer, &str, &str),
    what: &str,
    timeout: Duration,
    ok: impl Fn(&std::collections::BTreeSet<String>) -> bool,
) -> Result<std::collections::BTreeSet<String>> {
    let last = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let waited = wait_for(what, timeout, || async {
        let now = server_presence(server, admin_token, channel).await?;
        let done = ok(&now);
        last.replace(now.clone());
        Ok(done.then_some(now))
    })
    .await;
    waited.with_context(|| format!("the server listed {:?}", last.borrow()))
}

/// Replaces the value of the input `data-testid="id"` with `value`, typed.
///
/// # Errors
///
/// When the element is missing or WebDriver fails.
pub async fn type_into(browser: &Browser, id: &str, value: &str) -> Result<()> {
    let input = browser.client.find(Locator::Css(&by_id(id))).await?;
    input.clear().await?;
    input.send_keys(value).await?;
    Ok(())
}
