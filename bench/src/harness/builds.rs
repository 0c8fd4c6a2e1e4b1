//! Everything `bench` builds before it measures, in one place (`cargo xtask
//! bench` builds the server and this binary first; what is left here is
//! what depends on the run: the Go reference, the browser assets, and the
//! server again when `bench run` is started by hand). Builds are never
//! counted in a measured time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// `cargo`, as Cargo named it to this process when it runs it.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs a build step quietly; on failure, its last 15 lines of stderr.
fn run_tool(what: &str, command: &mut Command) -> Result<()> {
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("{what}: cannot start {command:?}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed:\n{}", tail.join("\n"));
    }
    Ok(())
}

/// Our server (and this binary) in release into `target`: a no-op when
/// `cargo xtask bench` has just built them; returns the server.
///
/// # Errors
///
/// When cargo fails.
pub fn release_server(root: &Path, target: &Path) -> Result<PathBuf> {
    eprintln!("bench: building the server in release");
    // The same packages as `cargo xtask bench` builds: `-p server` alone
    // unifies the dependencies' features differently, so it rebuilt the
    // server (fat LTO, minutes) after every xtask build, and back again.
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", "server", "-p", "bench"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build --release -p server -p bench failed");
    }
    Ok(target.join("release/server"))
}

/// The gorilla reference (`bench/go/server.go`) into `out/go-server`,
/// offline; `Err` says what to install.
pub fn gorilla(out: &Path) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/server.go");
    let binary = out.join("go-server");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        // Offline: GOPATH mode against Debian's packaged gorilla/websocket.
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .env("GOCACHE", out.join("go-cache"))
        .output();
    match output {
        Ok(output) if output.status.success() => Ok(binary),
        Ok(output) => Err(format!(
            "go build failed (install golang-github-gorilla-websocket-dev): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Err(format!("no go toolchain (install golang-go): {err}")),
    }
}

/// The UI with `trunk build --release` into `www`.
///
/// # Errors
///
/// When trunk fails (the browser part then skips the Yew console).
pub fn ui(root: &Path, target: &Path, www: &Path) -> Result<()> {
    run_tool(
        "trunk build --release",
        Command::new("trunk")
            .args(["build", "--release", "--dist"])
            .arg(www)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", target),
    )
}

/// The wasm burst page (`examples/browser.rs`, our wrapper) through
/// wasm-bindgen into `www`.
///
/// # Errors
///
/// When cargo or wasm-bindgen fails.
pub fn wasm_burst_page(root: &Path, target: &Path, www: &Path) -> Result<()> {
    run_tool(
        "building the wasm burst page",
        Command::new(cargo())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "bench",
                "--example",
                "browser",
            ])
            .current_dir(root)
            .env("CARGO_TARGET_DIR", target),
    )?;
    run_tool(
        "wasm-bindgen",
        Command::new("wasm-bindgen")
            .args([
                "--target",
                "web",
                "--no-typescript",
                "--out-name",
                "bench_browser",
                "--out-dir",
            ])
            .arg(www)
            .arg(target.join("wasm32-unknown-unknown/release/examples/browser.wasm")),
    )
}
