//! Installs what the project needs, only when it is missing or at the wrong
//! version, and says exactly what to install by hand when it cannot.
//!
//! | tool | source | version | needed by |
//! |---|---|---|---|
//! | `wasm32-unknown-unknown` | rustup | the toolchain's | run, test, bench |
//! | `wasm-bindgen` | `cargo install wasm-bindgen-cli` | exactly the `wasm-bindgen` of Cargo.lock | run, test, bench |
//! | `trunk` | `cargo install trunk` | 0.21.x (0.22 needs a newer rustc) | run, test, bench |
//! | `wasm-opt` | npm package `binaryen`, into `target/tools` | the `[tools] wasm_opt` of Trunk.toml | run, test, bench |
//! | rustfmt, clippy | rustup | the toolchain's | test |
//! | `wasm-pack` | `cargo install wasm-pack` | any | test (the socket's browser tests) |
//! | `chromium`, `chromedriver` | Debian packages (needs root) | matching pair | test, bench |
//! | `redis-server` | Debian package `redis-server` (needs root) | Debian's (7.0 on bookworm) | test (the cluster tests) |
//! | `go`, gorilla/websocket | Debian packages `golang-go`, `golang-github-gorilla-websocket-dev` (needs root) | Debian's | bench |
//! | socket.io, `@socket.io/redis-adapter`, `redis` | npm, into `target/tools/socketio` | [`SOCKETIO_PACKAGES`] | bench (`--channels`, `--presence`) |
//! | `sockudo` | `cargo install sockudo --features redis`, into `target/tools/sockudo` (needs Debian's `protobuf-compiler`) | [`SOCKUDO_VERSION`] | bench (`--channels --peers sockudo`) |
//!
//! `run` installs only its four: on a fresh machine the time to the first
//! page is the compile time of wasm-bindgen-cli and trunk, not of wasm-pack
//! too.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, command, output};

/// trunk is pinned to the 0.21 series: 0.22 needs a newer rustc than 1.95.
const TRUNK_VERSION: &str = "0.21.14";

/// What a task needs beyond the tools that build and serve the UI (the
/// wasm32 target, wasm-bindgen, trunk, wasm-opt), which every task needs.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// rustfmt and clippy (the checks) and wasm-pack (the socket's browser tests).
    pub checks: bool,
    /// Chromium and ChromeDriver for the browser tests.
    pub browser: bool,
}

impl Needs {
    /// `cargo xtask run`: build the UI and serve it, nothing more.
    pub const RUN: Self = Self {
        checks: false,
        browser: false,
    };
    /// `cargo xtask test`: everything.
    pub const TEST: Self = Self {
        checks: true,
        browser: true,
    };
}

/// Where the browser tools are, once set up.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The ChromeDriver binary (`None` unless [`Needs::browser`]).
    pub chromedriver: Option<PathBuf>,
}

/// The directory npm installs `wasm-opt` into.
fn tools_dir() -> PathBuf {
    cmd::root().join("target").join("tools")
}

/// `PATH` with the project's own tool directory in front, if it exists.
pub fn path_with_tools() -> Option<OsString> {
    let bin = tools_dir().join("node_modules").join(".bin");
    if !bin.is_dir() {
        return None;
    }
    let mut paths = vec![bin];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).ok()
}

/// Makes sure every tool in [`Needs`] is present at the right version.
///
/// # Errors
///
/// When a tool is missing and cannot be installed here; the message says
/// what to install by hand.
pub fn ensure(needs: Needs) -> Result<Tools> {
    ensure_rustup_parts(needs.checks)?;
    let bindgen = locked_version("wasm-bindgen")?;
    check_trunk_toml(&bindgen)?;
    ensure_cargo_tool("wasm-bindgen", "wasm-bindgen-cli", Some(&bindgen), |v| {
        v.split_whitespace().nth(1) == Some(bindgen.as_str())
    })?;
    ensure_cargo_tool("trunk", "trunk", Some(TRUNK_VERSION), |v| {
        v.split_whitespace()
            .nth(1)
            .is_some_and(|v| v.starts_with("0.21."))
    })?;
    ensure_wasm_opt()?;
    if needs.checks {
        ensure_cargo_tool("wasm-pack", "wasm-pack", None, |_| true)?;
    }
    let chromedriver = if needs.browser {
        Some(ensure_browser()?)
    } else {
        None
    };
    eprintln!("setup: all tools present");
    Ok(Tools { chromedriver })
}

fn ensure_rustup_parts(checks: bool) -> Result<()> {
    let installed = output(&mut command("rustup", &["target", "list", "--installed"])).context(
        "rustup is not on PATH: install Rust with rustup (https://rustup.rs), then run this again",
    )?;
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        cmd::run(&mut command(
            "rustup",
            &["target", "add", "wasm32-unknown-unknown"],
        ))?;
    }
    if !checks {
        return Ok(());
    }
    let has_fmt = output(&mut command("cargo", &["fmt", "--version"])).is_some();
    let has_clippy = output(&mut command("cargo", &["clippy", "--version"])).is_some();
    if !has_fmt || !has_clippy {
        cmd::run(&mut command(
            "rustup",
            &["component", "add", "rustfmt", "clippy"],
        ))?;
    }
    Ok(())
}

/// The version of `package` in Cargo.lock.
fn locked_version(package: &str) -> Result<String> {
    let path = cmd::root().join("Cargo.lock");
    let lock =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let name_line = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name_line
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            return Ok(version.to_owned());
        }
    }
    bail!("{package} is not in Cargo.lock")
}

/// trunk downloads its own wasm-bindgen unless Trunk.toml names the version on
/// PATH, and nothing can be downloaded here: keep the two in step.
fn check_trunk_toml(bindgen: &str) -> Result<()> {
    let path = cmd::root().join("Trunk.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let wanted = format!("wasm_bindgen = \"{bindgen}\"");
    if !text.lines().any(|l| l.trim() == wanted) {
        bail!(
            "Trunk.toml's [tools] must say `{wanted}` to match Cargo.lock; \
             update it together with the wasm-bindgen pin in Cargo.toml"
        );
    }
    Ok(())
}

/// The wasm-opt version trunk expects, from Trunk.toml (`version_132` -> `132`).
fn wanted_wasm_opt() -> Result<String> {
    let path = cmd::root().join("Trunk.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("wasm_opt = \"version_"))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
        .context("Trunk.toml has no `wasm_opt = \"version_N\"` under [tools]")
}

fn ensure_cargo_tool(
    binary: &str,
    package: &str,
    version: Option<&str>,
    accept: impl Fn(&str) -> bool,
) -> Result<()> {
    if let Some(found) = output(&mut command(binary, &["--version"])) {
        if accept(found.trim()) {
            return Ok(());
        }
        eprintln!(
            "setup: {binary} is {}, installing the right version",
            found.trim()
        );
    }
    eprintln!("setup: installing {package} (a few minutes, once)");
    let mut args = vec!["install", package];
    if let Some(version) = version {
        args.extend(["--version", version]);
    }
    // --locked reproduces the tool's own lock file; when the registry lags
    // behind it, a plain install resolves afresh and usually works.
    let mut locked = args.clone();
    locked.push("--locked");
    if cmd::run(&mut command("cargo", &locked)).is_err() {
        eprintln!("setup: `cargo install --locked` failed, retrying without --locked");
        cmd::run(&mut command("cargo", &args)).with_context(|| {
            format!("could not install {package}; install it by hand: cargo install {package}")
        })?;
    }
    Ok(())
}

fn ensure_wasm_opt() -> Result<()> {
    let wanted = wanted_wasm_opt()?;
    let ok = |out: &str| out.contains(&format!("version {wanted}"));
    if output(&mut command("wasm-opt", &["--version"])).is_some_and(|v| ok(&v)) {
        return Ok(());
    }
    // Debian's binaryen is too old for current rustc output; the npm package
    // ships a current one. It goes into target/tools, never the system.
    eprintln!("setup: installing wasm-opt {wanted} (npm package binaryen) into target/tools");
    let dir = tools_dir();
    npm_install(&dir, &[&format!("binaryen@{wanted}")]).with_context(|| {
        format!(
            "could not install wasm-opt: install Node.js and npm, or put wasm-opt {wanted} on PATH"
        )
    })?;
    if !output(&mut command("wasm-opt", &["--version"])).is_some_and(|v| ok(&v)) {
        bail!(
            "wasm-opt {wanted} was installed into {} but does not run",
            dir.display()
        );
    }
    Ok(())
}

/// `npm install` of `packages` (`name@version`) into `dir`, never the
/// system and never a package.json.
fn npm_install(dir: &std::path::Path, packages: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let prefix = dir.to_string_lossy().into_owned();
    let mut args = vec![
        "install",
        "--prefix",
        &prefix,
        "--no-save",
        "--no-audit",
        "--no-fund",
    ];
    args.extend(packages);
    cmd::run(&mut command("npm", &args))
}

fn which(names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .find_map(|name| output(&mut command("which", &[name])).map(|p| PathBuf::from(p.trim())))
}

/// socket.io, the channels benchmark's peer (issue 23), its Redis adapter
/// and the Redis client the adapter is given, pinned: the bench's figures
/// name the version they measured.
pub const SOCKETIO_PACKAGES: [&str; 3] = [
    "socket.io@4.8.1",
    "@socket.io/redis-adapter@8.3.0",
    "redis@4.7.0",
];

/// Installs [`SOCKETIO_PACKAGES`] with npm into `target/tools/socketio`
/// (its own prefix: npm prunes what another install into the same prefix
/// did not name), unless each is there at its version. Run by Node.js 20
/// (`/usr/bin/node`) with `NODE_PATH` pointing there.
///
/// # Errors
///
/// When npm is missing or the install fails.
pub fn ensure_socketio() -> Result<()> {
    let dir = tools_dir().join("socketio");
    let installed = |spec: &str| {
        let (name, version) = spec.rsplit_once('@').unwrap_or((spec, ""));
        std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json"))
            .is_ok_and(|json| json.contains(&format!("\"version\": \"{version}\"")))
    };
    if SOCKETIO_PACKAGES.iter().all(|p| installed(p)) {
        return Ok(());
    }
    eprintln!("setup: installing socket.io (npm) into target/tools/socketio");
    npm_install(&dir, &SOCKETIO_PACKAGES)
        .context("could not install socket.io: install Node.js 20 and npm (Debian: nodejs, npm)")?;
    if !SOCKETIO_PACKAGES.iter().all(|p| installed(p)) {
        bail!(
            "socket.io was installed into {} but is not at the pinned versions",
            dir.display()
        );
    }
    Ok(())
}

/// Sockudo, the channels benchmark's second peer (issue 23), pinned: the
/// bench's figures name the version they measured.
pub const SOCKUDO_VERSION: &str = "5.2.0";

/// Installs Sockudo [`SOCKUDO_VERSION`] with its redis adapter (`--features
/// redis`, for two nodes) into `target/tools/sockudo`, unless `sockudo
/// --version` there says that version. Its build needs `protoc` (Debian's
/// `protobuf-compiler`, installed with apt-get when missing) and takes about
/// 13 minutes on two cores, once.
///
/// # Errors
///
/// When `protoc` is missing and cannot be installed, or the install fails.
pub fn ensure_sockudo() -> Result<()> {
    let root = tools_dir().join("sockudo");
    let binary = root.join("bin").join("sockudo");
    let binary = binary.to_string_lossy().into_owned();
    let at_version = || {
        output(&mut command(&binary, &["--version"]))
            .is_some_and(|v| v.split_whitespace().any(|w| w == SOCKUDO_VERSION))
    };
    if at_version() {
        return Ok(());
    }
    ensure_protoc()?;
    eprintln!(
        "setup: installing sockudo {SOCKUDO_VERSION} into target/tools/sockudo (about 13 minutes, once)"
    );
    let root = root.to_string_lossy().into_owned();
    let mut args = vec!["install", "sockudo", "--version", SOCKUDO_VERSION];
    args.extend(["--features", "redis", "--root", &root]);
    // As for the other cargo tools: --locked first, then a fresh resolve.
    let mut locked = args.clone();
    locked.push("--locked");
    if cmd::run(&mut command("cargo", &locked)).is_err() {
        eprintln!("setup: `cargo install --locked` failed, retrying without --locked");
        cmd::run(&mut command("cargo", &args)).context("could not install sockudo")?;
    }
    if !at_version() {
        bail!("sockudo was installed into {root} but is not {SOCKUDO_VERSION}");
    }
    Ok(())
}

/// `protoc`, which Sockudo's build needs: Debian's `protobuf-compiler`,
/// installed with apt-get when missing, as redis-server is.
fn ensure_protoc() -> Result<()> {
    if which(&["protoc"]).is_some() {
        return Ok(());
    }
    let is_root = output(&mut command("id", &["-u"])).is_some_and(|id| id.trim() == "0");
    if !is_root || which(&["apt-get"]).is_none() {
        bail!(
            "Sockudo's build needs protoc. Install it \
             (Debian/Ubuntu: `sudo apt-get install protobuf-compiler`), then run this again"
        );
    }
    eprintln!("setup: installing protobuf-compiler with apt-get");
    cmd::run(&mut command("apt-get", &["update"]))?;
    cmd::run(
        command("apt-get", &["install", "-y", "protobuf-compiler"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    which(&["protoc"])
        .map(|_| ())
        .context("protoc is still missing after apt-get install")
}

/// Where Debian's gorilla/websocket package puts its sources (GOPATH mode).
const GORILLA_SRC: &str = "/usr/share/gocode/src/github.com/gorilla/websocket";

/// Go and gorilla/websocket for the benchmarks' reference server: installed
/// with apt-get when possible; otherwise a warning, and the benchmarks run
/// without that server (never an error: it is one column of the report).
pub fn ensure_go() {
    let present = || which(&["go"]).is_some() && std::path::Path::new(GORILLA_SRC).is_dir();
    if present() {
        return;
    }
    let is_root = output(&mut command("id", &["-u"])).is_some_and(|id| id.trim() == "0");
    if !is_root || which(&["apt-get"]).is_none() {
        eprintln!(
            "setup: Go or gorilla/websocket is missing, so the gorilla reference server will be \
             skipped. Install them (Debian/Ubuntu: `sudo apt-get install golang-go \
             golang-github-gorilla-websocket-dev`) to measure it"
        );
        return;
    }
    eprintln!("setup: installing golang-go and golang-github-gorilla-websocket-dev with apt-get");
    let installed = cmd::run(&mut command("apt-get", &["update"])).and_then(|()| {
        cmd::run(
            command(
                "apt-get",
                &[
                    "install",
                    "-y",
                    "golang-go",
                    "golang-github-gorilla-websocket-dev",
                ],
            )
            .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    match installed {
        Ok(()) if present() => {}
        Ok(()) => eprintln!("setup: Go is still missing; the gorilla server will be skipped"),
        Err(err) => {
            eprintln!("setup: could not install Go ({err:#}); the gorilla server will be skipped");
        }
    }
}

/// `redis-server` for the cluster tests, `cargo xtask cluster` and the
/// cluster benchmark (`testbed::RedisServer` starts it on a free port):
/// installed with apt-get when missing, as Chromium is.
///
/// # Errors
///
/// When it is missing and cannot be installed here; the message says how.
pub fn ensure_redis() -> Result<()> {
    if which(&["redis-server"]).is_some() {
        return Ok(());
    }
    let is_root = output(&mut command("id", &["-u"])).is_some_and(|id| id.trim() == "0");
    let has_apt = which(&["apt-get"]).is_some();
    if !is_root || !has_apt {
        bail!(
            "the cluster tests need redis-server. Install it \
             (Debian/Ubuntu: `sudo apt-get install redis-server`), then run this again"
        );
    }
    eprintln!("setup: installing redis-server with apt-get");
    cmd::run(&mut command("apt-get", &["update"]))?;
    cmd::run(
        command("apt-get", &["install", "-y", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    which(&["redis-server"])
        .map(|_| ())
        .context("redis-server is still missing after apt-get install")
}

fn ensure_browser() -> Result<PathBuf> {
    let browsers = ["chromium", "chromium-browser", "google-chrome"];
    if let Some(driver) = std::env::var_os("CHROMEDRIVER").map(PathBuf::from)
        && driver.is_file()
        && which(&browsers).is_some()
    {
        return Ok(driver);
    }
    if let (Some(_), Some(driver)) = (which(&browsers), which(&["chromedriver"])) {
        return Ok(driver);
    }
    let is_root = output(&mut command("id", &["-u"])).is_some_and(|id| id.trim() == "0");
    let has_apt = which(&["apt-get"]).is_some();
    if !is_root || !has_apt {
        bail!(
            "the browser tests need Chromium and ChromeDriver. Install them \
             (Debian/Ubuntu: `sudo apt-get install chromium chromium-driver`) or set \
             CHROMEDRIVER to a chromedriver matching your Chrome, then run this again"
        );
    }
    eprintln!("setup: installing chromium and chromium-driver with apt-get");
    cmd::run(&mut command("apt-get", &["update"]))?;
    cmd::run(
        command("apt-get", &["install", "-y", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    which(&["chromedriver"]).context("chromedriver is still missing after apt-get install")
}
