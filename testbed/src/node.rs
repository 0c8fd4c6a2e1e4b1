//! [`NodeProcess`]: the server binary as a child process, for tests and
//! tools that must kill a node for real.
//!
//! A node in-process cannot crash: dropping its runtime runs `Drop` code
//! and closes its sockets cleanly. A child killed with SIGKILL
//! ([`NodeProcess::kill`]) stops between any two instructions, as a
//! crashed machine does. The caller passes the binary (a test has it in
//! `env!("CARGO_BIN_EXE_server")`, a tool in `target/release/server`).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A server child process listening on a free loopback port; killed when
/// dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    addr: SocketAddr,
}

impl NodeProcess {
    /// Starts `binary` with `args` and `--addr 127.0.0.1:0`, and returns
    /// once it logged the address it listens on. Its log is read (so that it
    /// never blocks on a full pipe) and dropped, unless `echo_log` is set,
    /// which prints it to stderr.
    ///
    /// # Errors
    ///
    /// When the binary does not start, or exits before it logs its address.
    pub fn start<S: AsRef<OsStr>>(binary: &Path, args: &[S], echo_log: bool) -> Result<Self> {
        Self::start_with_env(binary, args, &[], echo_log)
    }

    /// As [`NodeProcess::start`], with more environment variables.
    ///
    /// # Errors
    ///
    /// As [`NodeProcess::start`].
    pub fn start_with_env<S: AsRef<OsStr>>(
        binary: &Path,
        args: &[S],
        env: &[(&str, &str)],
        echo_log: bool,
    ) -> Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .args(["--addr", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(if echo_log {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the child's stdout was asked to be piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let status = child.wait()?;
                bail!("{} exited before it listened: {status}", binary.display());
            };
            let line = line?;
            if echo_log {
                eprintln!("{line}");
            }
            if let Some(rest) = line.split("listening on http://").nth(1)
                && let Some(addr) = rest.split_whitespace().next()
            {
                break addr
                    .parse()
                    .with_context(|| format!("the address in {line:?}"))?;
            }
        };
        // Keeps draining its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if echo_log {
                    eprintln!("{line}");
                }
            }
        });
        Ok(Self { child, addr })
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and been reaped).
    ///
    /// # Errors
    ///
    /// When its status cannot be read.
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// SIGKILL, then waits for it: no `Drop`, no close frame, no flush.
    ///
    /// # Errors
    ///
    /// When it cannot be killed or waited for.
    pub fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
