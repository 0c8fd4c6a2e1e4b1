//! A fault-injecting TCP proxy on loopback, for reliable mode's tests.
//!
//! Each connection through it gets a random byte budget (both directions
//! together, drawn from [`Faults`]); when the budget runs out the proxy
//! forwards only the bytes that fit (so the cut usually lands mid-frame),
//! then resets both sides: no close frame, no FIN, as when a network drops.
//! [`FaultProxy::hold`] refuses new connections (they are reset at once),
//! [`FaultProxy::cut_all`] cuts every live one now.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// When connections are cut.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Seed of the byte budgets (printed by tests, so a failure can be replayed).
    pub seed: u64,
    /// Smallest budget in bytes; below the upgrade handshake (about 500
    /// bytes) a connection dies before it opens.
    pub min_bytes: u64,
    /// Largest budget in bytes.
    pub max_bytes: u64,
}

impl Faults {
    /// No cuts (until [`FaultProxy::cut_all`]).
    pub fn none() -> Self {
        Self {
            seed: 0,
            min_bytes: u64::MAX,
            max_bytes: u64::MAX,
        }
    }
}

/// The proxy; dropping it stops it and cuts everything.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    min_bytes: AtomicU64,
    max_bytes: AtomicU64,
    cuts: AtomicU64,
    connections: AtomicU64,
    holding: AtomicBool,
    /// Bumped by `cut_all`; every connection watches it.
    generation: watch::Sender<u64>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr, faults: Faults) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            min_bytes: AtomicU64::new(faults.min_bytes),
            max_bytes: AtomicU64::new(faults.max_bytes),
            cuts: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            generation: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            upstream,
            faults.seed,
            shared.clone(),
            stop.clone(),
        ));
        Ok(Self { addr, shared, stop })
    }

    /// Connections cut so far (by budget or by [`FaultProxy::cut_all`]).
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Relaxed)
    }

    /// Connections accepted so far (held ones included).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Relaxed)
    }

    /// While `true`, new connections are reset as soon as they arrive.
    pub fn hold(&self, holding: bool) {
        self.shared.holding.store(holding, Relaxed);
    }

    /// Changes the byte budgets of connections from now on.
    pub fn set_budget(&self, min_bytes: u64, max_bytes: u64) {
        self.shared.min_bytes.store(min_bytes, Relaxed);
        self.shared
            .max_bytes
            .store(max_bytes.max(min_bytes), Relaxed);
    }

    /// Cuts every live connection now.
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut_all();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    seed: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        shared.connections.fetch_add(1, Relaxed);
        if shared.holding.load(Relaxed) {
            reset(client);
            continue;
        }
        let (min, max) = (
            shared.min_bytes.load(Relaxed),
            shared.max_bytes.load(Relaxed),
        );
        let budget = if min >= max {
            min
        } else {
            rng.random_range(min..=max)
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(client);
                return;
            };
            let cut = forward(client, server, budget, shared.generation.subscribe()).await;
            if cut {
                shared.cuts.fetch_add(1, Relaxed);
            }
        });
    }
}

/// Drops a socket with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    // Linger 0: close sends RST (and does not block).
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Pumps both ways until one side closes (`false`) or the budget runs out or
/// a `cut_all` comes (`true`: both sides reset).
async fn forward(
    client: TcpStream,
    server: TcpStream,
    mut budget: u64,
    mut cut_all: watch::Receiver<u64>,
) -> bool {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let cut = loop {
        tokio::select! {
            _ = cut_all.changed() => break true,
            read = client_read.read(&mut up) => {
                match pass(read, &up, &mut server_write, &mut budget).await {
                    Pass::Go => {}
                    Pass::Closed => break false,
                    Pass::Cut => break true,
                }
            }
            read = server_read.read(&mut down) => {
                match pass(read, &down, &mut client_write, &mut budget).await {
                    Pass::Go => {}
                    Pass::Closed => break false,
                    Pass::Cut => break true,
                }
            }
        }
    };
    let client = client_read.reunite(client_write);
    let server = server_read.reunite(server_write);
    if cut {
        if let Ok(client) = client {
            reset(client);
        }
        if let Ok(server) = server {
            reset(server);
        }
    }
    cut
}

enum Pass {
    Go,
    Closed,
    Cut,
}

async fn pass(
    read: std::io::Result<usize>,
    buffer: &[u8],
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    budget: &mut u64,
) -> Pass {
    let n = match read {
        Ok(0) | Err(_) => return Pass::Closed,
        Ok(n) => n,
    };
    let allowed = usize::try_from(*budget).unwrap_or(usize::MAX).min(n);
    if to.write_all(&buffer[..allowed]).await.is_err() {
        return Pass::Closed;
    }
    *budget -= allowed as u64;
    if allowed < n || *budget == 0 {
        Pass::Cut
    } else {
        Pass::Go
    }
}
