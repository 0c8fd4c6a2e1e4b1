//! A fault-injecting TCP proxy on loopback, for reliable mode's tests.
//!
//! Each connection through it gets a random byte budget (both directions
//! together, drawn from [`Faults`]); when the budget runs out the proxy
//! forwards only the bytes that fit (so the cut usually lands mid-frame),
//! then resets both sides: no close frame, no FIN, as when a network drops.
//! [`FaultProxy::hold`] refuses new connections (they are reset at once),
//! [`FaultProxy::cut_all`] cuts every live one now.
//!
//! [`FaultProxy::silence`] makes the path go dead without a word, as when a
//! NAT entry expires or a mobile network drops a route: while it is on, the
//! proxy reads what either side sends and throws it away. Nothing is
//! forwarded and nothing is closed (no FIN, no RST, not even when a side
//! closes: its FIN is swallowed too), so each end sees a connection that
//! looks open and never hears back; only an end's own timeout (a heartbeat)
//! can tell. New connections made meanwhile are accepted and swallowed the
//! same way, without reaching an upstream: an upgrade sent there gets no
//! answer. A connection that lost bytes stays dead after the silence ends
//! (its stream has a hole, which a real path could not resume from either),
//! until a side gives up on it or [`FaultProxy::cut_all`]; a connection that
//! sent nothing during the silence carries on, and new ones are forwarded
//! again. [`FaultProxy::swallowed`] counts the bytes thrown away.
//!
//! In front of a cluster ([`FaultProxy::start_many`]) it is also the load
//! balancer: each new connection, so each reconnect, goes to the next node in
//! turn (round robin). When that node does not accept (it was killed), the
//! connection goes to the one after it, as nginx's `proxy_next_upstream`
//! does; only when none accepts is the client reset. A node started again on
//! another port takes its place with [`FaultProxy::set_upstream`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Result, bail};
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
    /// Draws the byte budgets, from [`Faults::seed`] or [`FaultProxy::reseed`].
    rng: Mutex<StdRng>,
    min_bytes: AtomicU64,
    max_bytes: AtomicU64,
    cuts: AtomicU64,
    connections: AtomicU64,
    holding: AtomicBool,
    /// [`FaultProxy::silence`]: bytes are swallowed, nothing is closed.
    silent: AtomicBool,
    /// Bytes swallowed so far, both directions together.
    swallowed: AtomicU64,
    /// The nodes, in round-robin order (one for a single server).
    upstreams: Mutex<Vec<SocketAddr>>,
    /// Connections forwarded to each upstream, by index.
    forwarded: Vec<AtomicU64>,
    /// The upstream of the newest forwarded connection (`usize::MAX`: none yet).
    last: AtomicUsize,
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
        Self::start_many(vec![upstream], faults).await
    }

    /// Listens on a free loopback port and sends each new connection to the
    /// next of `upstreams` in turn (the next again when that one refuses).
    ///
    /// # Errors
    ///
    /// When `upstreams` is empty or no port can be bound.
    pub async fn start_many(upstreams: Vec<SocketAddr>, faults: Faults) -> Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstreams, faults).await
    }

    /// [`FaultProxy::start_many`] on a given address (`cargo xtask cluster`
    /// fronts its nodes on `127.0.0.1:8080` with it).
    ///
    /// # Errors
    ///
    /// When `upstreams` is empty or `listen` cannot be bound.
    pub async fn start_on(
        listen: SocketAddr,
        upstreams: Vec<SocketAddr>,
        faults: Faults,
    ) -> Result<Self> {
        if upstreams.is_empty() {
            bail!("a fault proxy needs at least one upstream");
        }
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rng: Mutex::new(StdRng::seed_from_u64(faults.seed)),
            min_bytes: AtomicU64::new(faults.min_bytes),
            max_bytes: AtomicU64::new(faults.max_bytes),
            cuts: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            swallowed: AtomicU64::new(0),
            forwarded: upstreams.iter().map(|_| AtomicU64::new(0)).collect(),
            last: AtomicUsize::new(usize::MAX),
            upstreams: Mutex::new(upstreams),
            generation: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
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

    /// Connections forwarded to upstream `index` so far (0 past the end).
    pub fn forwarded_to(&self, index: usize) -> u64 {
        self.shared
            .forwarded
            .get(index)
            .map_or(0, |n| n.load(Relaxed))
    }

    /// The upstream the newest connection went to: with one client that
    /// reconnects, the node holding it now.
    pub fn last_upstream(&self) -> Option<usize> {
        Some(self.shared.last.load(Relaxed)).filter(|&i| i != usize::MAX)
    }

    /// Where upstream `index` is now.
    pub fn upstream(&self, index: usize) -> Option<SocketAddr> {
        self.shared.upstreams().get(index).copied()
    }

    /// Points upstream `index` at `addr` from the next connection on (a node
    /// started again on another port); live connections stay where they are.
    ///
    /// # Errors
    ///
    /// When there is no upstream `index`.
    pub fn set_upstream(&self, index: usize, addr: SocketAddr) -> Result<()> {
        let mut upstreams = self
            .shared
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = upstreams.get_mut(index) else {
            bail!("no upstream {index} (there are {})", upstreams.len());
        };
        *slot = addr;
        Ok(())
    }

    /// While `true`, new connections are reset as soon as they arrive.
    pub fn hold(&self, holding: bool) {
        self.shared.holding.store(holding, Relaxed);
    }

    /// While `true`, the path is dead without a word: every byte either side
    /// sends is read and thrown away, nothing is forwarded or closed, and new
    /// connections are accepted and swallowed too (see the module docs, also
    /// for what happens to a connection after the silence).
    pub fn silence(&self, silent: bool) {
        self.shared.silent.store(silent, Relaxed);
    }

    /// Bytes thrown away by [`FaultProxy::silence`] so far.
    pub fn swallowed(&self) -> u64 {
        self.shared.swallowed.load(Relaxed)
    }

    /// Changes the byte budgets of connections from now on.
    pub fn set_budget(&self, min_bytes: u64, max_bytes: u64) {
        self.shared.min_bytes.store(min_bytes, Relaxed);
        self.shared
            .max_bytes
            .store(max_bytes.max(min_bytes), Relaxed);
    }

    /// Draws the byte budgets of connections from now on from `seed` (a
    /// test that prints its seed can be replayed).
    pub fn reseed(&self, seed: u64) {
        *self
            .shared
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = StdRng::seed_from_u64(seed);
    }

    /// Cuts every live connection now.
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl Shared {
    fn upstreams(&self) -> Vec<SocketAddr> {
        // A poisoned lock still holds a valid list: a panic cannot leave it
        // half-written (every write is one assignment).
        self.upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut_all();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let mut turn = 0usize;
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
        if shared.silent.load(Relaxed) {
            tokio::spawn(swallow(client, shared.clone()));
            continue;
        }
        let (min, max) = (
            shared.min_bytes.load(Relaxed),
            shared.max_bytes.load(Relaxed),
        );
        let budget = if min >= max {
            min
        } else {
            shared
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .random_range(min..=max)
        };
        let first = turn;
        turn = turn.wrapping_add(1);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(server) = connect_from(&shared, first).await else {
                reset(client);
                return;
            };
            let cut = forward(client, server, budget, &shared).await;
            if cut {
                shared.cuts.fetch_add(1, Relaxed);
            }
        });
    }
}

/// Connects to the upstream `first` (modulo their number), or to the ones
/// after it in turn when it refuses; `None` when none accepts.
async fn connect_from(shared: &Shared, first: usize) -> Option<TcpStream> {
    let upstreams = shared.upstreams();
    for step in 0..upstreams.len() {
        let index = first.wrapping_add(step) % upstreams.len();
        if let Ok(server) = TcpStream::connect(upstreams[index]).await {
            shared.forwarded[index].fetch_add(1, Relaxed);
            shared.last.store(index, Relaxed);
            return Some(server);
        }
    }
    None
}

/// Drops a socket with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    // Linger 0: close sends RST (and does not block).
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Pumps both ways until one side closes (`false`) or the budget runs out or
/// a `cut_all` comes (`true`: both sides reset). Once a byte or a close was
/// swallowed by [`FaultProxy::silence`], the connection is dead: it swallows
/// everything until both sides have closed (`false`, each side's close
/// swallowed) or a `cut_all`.
async fn forward(client: TcpStream, server: TcpStream, mut budget: u64, shared: &Shared) -> bool {
    let mut cut_all = shared.generation.subscribe();
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let mut dead = false;
    // Sides whose close was swallowed: not read again.
    let (mut client_gone, mut server_gone) = (false, false);
    let cut = loop {
        let pass = tokio::select! {
            _ = cut_all.changed() => break true,
            read = client_read.read(&mut up), if !client_gone => {
                match silenced(&read, shared, &mut dead) {
                    Some(open) => {
                        client_gone = !open;
                        Pass::Go
                    }
                    None => pass(read, &up, &mut server_write, &mut budget).await,
                }
            }
            read = server_read.read(&mut down), if !server_gone => {
                match silenced(&read, shared, &mut dead) {
                    Some(open) => {
                        server_gone = !open;
                        Pass::Go
                    }
                    None => pass(read, &down, &mut client_write, &mut budget).await,
                }
            }
        };
        match pass {
            Pass::Go if client_gone && server_gone => break false,
            Pass::Go => {}
            Pass::Closed => break false,
            Pass::Cut => break true,
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

/// When the proxy is silent or the connection already `dead`, swallows what
/// `read` got and makes the connection dead: `Some(true)` for bytes (the
/// side is still open), `Some(false)` for a close or an error (the side is
/// gone; the other end is not told). `None`: forward as usual.
fn silenced(read: &std::io::Result<usize>, shared: &Shared, dead: &mut bool) -> Option<bool> {
    if !*dead && !shared.silent.load(Relaxed) {
        return None;
    }
    *dead = true;
    match read {
        Ok(0) | Err(_) => Some(false),
        Ok(n) => {
            shared.swallowed.fetch_add(*n as u64, Relaxed);
            Some(true)
        }
    }
}

/// A connection accepted while the proxy is silent: it reaches no upstream,
/// and what it sends is thrown away until it closes or a `cut_all` (a reset).
async fn swallow(mut client: TcpStream, shared: Arc<Shared>) {
    let mut cut_all = shared.generation.subscribe();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = cut_all.changed() => {
                reset(client);
                return;
            }
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    shared.swallowed.fetch_add(n as u64, Relaxed);
                }
            },
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An upstream that answers each connection with its name and closes.
    async fn named(name: u8) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(&[name]).await;
            }
        });
        (addr, task)
    }

    /// The name of the upstream a new connection through `proxy` reaches.
    async fn reached(proxy: &FaultProxy) -> Vec<u8> {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got).await;
        got
    }

    #[tokio::test]
    async fn each_connection_goes_to_the_next_node_and_skips_a_dead_one() {
        let (a, _task_a) = named(b'a').await;
        let (b, task_b) = named(b'b').await;
        let (c, _task_c) = named(b'c').await;
        let proxy = FaultProxy::start_many(vec![a, b, c], Faults::none())
            .await
            .unwrap();
        let mut order = Vec::new();
        for _ in 0..6 {
            order.extend(reached(&proxy).await);
        }
        assert_eq!(order, b"abcabc");
        assert_eq!(proxy.last_upstream(), Some(2));
        assert_eq!(
            (0..3).map(|i| proxy.forwarded_to(i)).collect::<Vec<_>>(),
            [2, 2, 2]
        );

        // b dies: its turn goes to c, as a load balancer's next upstream.
        // Its slot points at a port bound but not listening: it refuses,
        // and no other test running beside this one can take it, as one
        // could take b's freed port and answer in its place.
        let dead = tokio::net::TcpSocket::new_v4().unwrap();
        dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        proxy.set_upstream(1, dead.local_addr().unwrap()).unwrap();
        task_b.abort();
        let _ = task_b.await;
        let mut order = Vec::new();
        for _ in 0..3 {
            order.extend(reached(&proxy).await);
        }
        assert_eq!(order, b"acc");

        // b comes back on another port and takes its place.
        let (b2, _task_b2) = named(b'B').await;
        proxy.set_upstream(1, b2).unwrap();
        assert_eq!(proxy.upstream(1), Some(b2));
        let mut order = Vec::new();
        for _ in 0..3 {
            order.extend(reached(&proxy).await);
        }
        assert_eq!(order, b"aBc");
        assert!(proxy.set_upstream(3, b2).is_err());
        drop(dead);
        assert!(
            FaultProxy::start_many(Vec::new(), Faults::none())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn with_every_node_dead_the_client_is_reset() {
        let (a, task) = named(b'a').await;
        let proxy = FaultProxy::start_many(vec![a], Faults::none())
            .await
            .unwrap();
        task.abort();
        let _ = task.await;
        assert_eq!(reached(&proxy).await, b"");
        assert_eq!(proxy.connections(), 1);
        assert_eq!(proxy.forwarded_to(0), 0);
        assert_eq!(proxy.last_upstream(), None);
    }

    /// An upstream that echoes every connection's bytes back.
    async fn echoing() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Polls until `proxy` swallowed `bytes` in all (10 s at most).
    async fn swallowed(proxy: &FaultProxy, bytes: u64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while proxy.swallowed() != bytes {
            assert!(
                tokio::time::Instant::now() < deadline,
                "swallowed {} bytes, not {bytes}",
                proxy.swallowed()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) {
        stream.write_all(bytes).await.unwrap();
        let mut got = vec![0; bytes.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes);
    }

    #[tokio::test]
    async fn a_silent_path_swallows_everything_and_the_connections_that_lost_bytes_stay_dead() {
        let proxy = FaultProxy::start(echoing().await, Faults::none())
            .await
            .unwrap();
        let mut live = TcpStream::connect(proxy.addr).await.unwrap();
        round_trip(&mut live, b"a").await;
        let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
        round_trip(&mut idle, b"i").await;

        proxy.silence(true);
        // Swallowed, not forwarded: the count rises in place of a write.
        live.write_all(b"bb").await.unwrap();
        swallowed(&proxy, 2).await;
        // A new connection is accepted, reaches no upstream, and is swallowed too.
        let mut newcomer = TcpStream::connect(proxy.addr).await.unwrap();
        newcomer.write_all(b"ccc").await.unwrap();
        swallowed(&proxy, 5).await;
        assert_eq!(proxy.connections(), 3);
        assert_eq!(proxy.forwarded_to(0), 2);

        proxy.silence(false);
        // The connection that lost bytes stays dead: its stream has a hole.
        live.write_all(b"d").await.unwrap();
        swallowed(&proxy, 6).await;
        // One that sent nothing during the silence carries on, and new ones
        // are forwarded again.
        round_trip(&mut idle, b"j").await;
        let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
        round_trip(&mut fresh, b"e").await;
        assert_eq!(proxy.forwarded_to(0), 3);
        assert_eq!(proxy.cuts(), 0);

        // A cut still resets the dead ones.
        proxy.cut_all();
        let mut rest = Vec::new();
        assert!(live.read_to_end(&mut rest).await.is_err(), "{rest:?}");
        assert!(rest.is_empty());
    }
}
