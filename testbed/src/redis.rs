//! [`RedisServer`]: a throwaway `redis-server` on a free port, for the
//! cluster tests.
//!
//! It runs without persistence (`--save ''`, `--appendonly no`) in its own
//! temporary directory, answers PING before [`RedisServer::start`]
//! returns, and is killed when dropped. [`RedisServer::stop`] and
//! [`RedisServer::restart`] let a test take Redis away and bring it back
//! on the same port. [`RedisServer::start_persistent`] runs it with
//! `appendonly yes` and `appendfsync always` instead: every write is in
//! its append-only file before Redis answers it, so a restart (even after
//! SIGKILL) loads everything it acknowledged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long `redis-server` may take to answer its first PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// `appendonly yes`, `appendfsync always`.
    persistent: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// When `redis-server` is not installed (`cargo xtask test` installs
    /// it), does not start, or does not answer within 10 s.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// As [`RedisServer::start`], with `appendonly yes` and `appendfsync
    /// always`: what Redis acknowledged survives [`RedisServer::restart`].
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`].
    pub fn start_persistent() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Result<Self> {
        // A free port: bind port 0, read it, let it go. Another process
        // could take it in between; Redis then fails to bind and start
        // reports it.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!(
            "testbed-redis-{}-{port}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut redis = Self {
            port,
            dir,
            child: None,
            persistent,
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"].as_slice()
            } else {
                ["--appendonly", "no"].as_slice()
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting redis-server: is it installed? (`cargo xtask test` installs it; \
                 Debian: `apt-get install redis-server`)",
            )?;
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if ping(self.addr()) {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "redis-server on port {} exited at start: {status}",
                    self.port
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
                    self.port
                );
            }
            // Polls again; a connect to a port not yet bound fails at once.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL for `--redis-url`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it: nothing answers on the
    /// port until [`RedisServer::restart`].
    ///
    /// # Errors
    ///
    /// When the process cannot be killed or waited for.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]):
    /// empty, unless it was started with [`RedisServer::start_persistent`],
    /// which loads its append-only file.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when something on `addr` answers `PING` with `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_stops_and_restarts_on_the_same_port() -> Result<()> {
        let mut redis = RedisServer::start()?;
        assert!(ping(redis.addr()));
        redis.stop()?;
        assert!(!ping(redis.addr()), "nothing answers once stopped");
        redis.restart()?;
        assert!(ping(redis.addr()));
        let addr = redis.addr();
        drop(redis);
        assert!(!ping(addr), "dropped: killed");
        Ok(())
    }
}
