//! Child processes that cannot outlive the benchmark: killed on drop (so on
//! every error path too) and, where `setpriv` exists, killed by the kernel
//! when the orchestrator dies (`--pdeathsig KILL`), even by SIGKILL.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// Which core a process is pinned to with `taskset`.
#[derive(Debug, Clone, Copy)]
pub enum Core {
    /// Servers.
    Server,
    /// The load generator and the browser.
    Load,
}

impl Core {
    fn cpu(self) -> &'static str {
        match self {
            Self::Server => "0",
            Self::Load => "1",
        }
    }
}

/// A command pinned to `core`, with its open-files limit raised to `nofile`
/// (at most the hard limit) and, where possible, a parent-death signal.
pub fn pinned(core: Core, nofile: u64, program: impl AsRef<OsStr>) -> Command {
    let mut command;
    if Path::new("/usr/bin/setpriv").is_file() {
        command = Command::new("/usr/bin/setpriv");
        command.args(["--pdeathsig", "KILL", "prlimit"]);
    } else {
        command = Command::new("prlimit");
    }
    command
        .arg(format!("--nofile={nofile}:{}", hard_nofile()))
        .args(["taskset", "-c", core.cpu()])
        .arg(program);
    command
}

/// The hard limit of open files, which an unprivileged process may raise its soft limit to.
pub fn hard_nofile() -> u64 {
    Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1024)
}

/// A running child, killed (with its whole process group when it leads one) on drop.
pub struct Guard {
    child: Child,
    group: bool,
}

impl Guard {
    /// Spawns `command` with stdout and stderr discarded. With `group`, the
    /// child leads a new process group, killed as a whole (for ChromeDriver,
    /// whose browser processes are its children).
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn spawn(name: &str, mut command: Command, group: bool) -> Result<Self> {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        if group {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self { child, group })
    }

    /// Spawns `command` with stdin and stdout piped (stderr inherited), for
    /// a child that is talked to line by line.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn spawn_piped(
        name: &str,
        mut command: Command,
    ) -> Result<(Self, std::process::ChildStdin, std::process::ChildStdout)> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            anyhow::bail!("{name}: no pipes");
        };
        let guard = Self {
            child,
            group: false,
        };
        Ok((guard, stdin, stdout))
    }

    /// The process id of the program itself: `setpriv`, `prlimit` and
    /// `taskset` exec it in place, so it keeps the child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
