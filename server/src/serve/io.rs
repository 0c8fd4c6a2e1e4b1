//! The connection's socket, with the deadlines of the HTTP phases between requests.
//!
//! hyper has one header timer, and it runs from the moment hyper waits for a
//! request head: idle keep-alive time and header time count as one. To keep
//! `--handshake-timeout` (headers) apart from `--keepalive-timeout` (idle),
//! the socket itself knows the phase and fails a read that waits past the
//! phase's deadline; hyper then drops the connection.
//!
//! | phase | entered when | deadline |
//! |---|---|---|
//! | head | accepted; or the first bytes arrive while idle | `--handshake-timeout` from then |
//! | busy | the service got a request (its head is complete) | none (bodies: `--body-timeout`) |
//! | idle | the service answered (not 101) | `--keepalive-timeout` from then, pushed back by every write (a long download is not idle) |
//! | upgraded | the service answered 101 | none: the WebSocket has its own timeouts |
//!
//! The service tells the phase through [`ConnShared`]'s epoch; the socket
//! reads it on every read and write, so nothing runs between them (no timer
//! task per connection). After the upgrade the wrapper costs one atomic load
//! per read and holds no timer.
//!
//! After the upgrade it also reads ahead: tungstenite allocates its read
//! buffer up front and keeps it for the connection's life, so `/ws` gives it
//! a small one (an idle connection is cheap), and a read asking for less
//! than `--read-buffer` bytes is served from one read of up to
//! `--read-buffer` into a scratch buffer of the worker thread. What does not
//! fit is kept until tungstenite asks again, in a buffer allocated only then
//! and freed once drained: a syscall still takes up to `--read-buffer`
//! bytes, and an idle connection holds no read buffer of its own beyond
//! tungstenite's small one.
//!
//! It tells the connection when there may be something to read, and
//! writes through the connection's [`SocketLink`], which a channel's fan-out
//! also writes through (see `link.rs`).
//!
//! And it counts: every byte an upgraded socket hands to tungstenite goes to
//! the connection's [`PartialMeter`], which charges `--max-partial-bytes`
//! for the message in progress (see `crate::partial`). A read the budget
//! cannot take is refused with [`OverBudget`](crate::partial::OverBudget)
//! inside the `io::Error`, and so is every read after it: tungstenite never
//! sees the bytes, and the connection closes with 1013.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, Sleep};

use crate::limits::Slot;
use crate::metrics::{Dropped, Metrics};
use crate::partial::{OverBudget, PartialMeter};

use super::link::SocketLink;

/// The epoch after a 101: the connection is a WebSocket now.
const UPGRADED: u32 = u32::MAX;

/// What one connection's service and socket share.
#[derive(Debug)]
pub struct ConnShared {
    /// Odd while the service answers a request, even between requests,
    /// [`UPGRADED`] after a 101.
    epoch: AtomicU32,
    /// What an upgraded connection holds: its place under the connection
    /// caps (freed with the socket) and its meter of unfinished messages.
    upgrade: OnceLock<Upgrade>,
    metrics: Arc<Metrics>,
}

impl ConnShared {
    /// A new connection's, counted in `tcp_connections_open` until dropped.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Metrics::add(&metrics.tcp_open, 1);
        Metrics::add(&metrics.tcp_total, 1);
        Self {
            epoch: AtomicU32::new(0),
            upgrade: OnceLock::new(),
            metrics,
        }
    }

    /// The service got a request.
    pub fn begin(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// The service answered; `upgraded` when it answered 101, with what the
    /// WebSocket holds.
    pub fn end(&self, upgraded: bool, upgrade: Option<Upgrade>) {
        if let Some(upgrade) = upgrade.filter(|_| upgraded) {
            let _ = self.upgrade.set(upgrade);
        }
        if upgraded {
            self.epoch.store(UPGRADED, Ordering::Release);
        } else {
            self.epoch.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        Metrics::sub(&self.metrics.tcp_open, 1);
    }
}

/// What an upgrade request was given before it was routed, kept by the
/// connection if it is answered 101.
#[derive(Debug)]
pub struct Upgrade {
    /// Its place under the connection caps, held for its `Drop`.
    _slot: Slot,
    /// Its meter of unfinished messages; the handler has a clone (a request
    /// extension) for the connection's task.
    partial: Arc<PartialMeter>,
    /// Its read gate and write side; the handler has a clone (a request
    /// extension) for the connection's task.
    link: Arc<SocketLink>,
}

impl Upgrade {
    /// What an admitted upgrade holds: `slot` under the caps, `partial` its
    /// meter, `link` its read gate and write side.
    pub fn new(slot: Slot, partial: Arc<PartialMeter>, link: Arc<SocketLink>) -> Self {
        Self {
            _slot: slot,
            partial,
            link,
        }
    }
}

/// The timeouts between requests; `None` is off.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--handshake-timeout`.
    pub handshake: Option<Duration>,
    /// `--keepalive-timeout`.
    pub keepalive: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Head,
    Busy,
    Idle,
    Upgraded,
}

/// A TCP stream that fails reads waiting past the phase's deadline.
#[derive(Debug)]
pub struct TimedIo {
    /// Read through tokio's own path (a short read forgets the readiness,
    /// so the next read costs no syscall).
    read: OwnedReadHalf,
    /// Until the upgrade: once upgraded, the link holds it (every write,
    /// the connection's and the fan-out's, goes through the link's lock),
    /// and lets go of it at this wrapper's drop.
    write: Option<OwnedWriteHalf>,
    shared: Arc<ConnShared>,
    timeouts: Timeouts,
    phase: Phase,
    /// The epoch last seen.
    seen: u32,
    deadline: Option<Instant>,
    /// Created on the first wait, reset when the deadline moves.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline passed (counted once, and every later read fails).
    expired: bool,
    /// `--read-buffer`: an upgraded socket's smaller reads are served from
    /// one read of this many bytes.
    read_ahead: usize,
    /// Bytes read ahead and not handed out yet, from `ahead_at` (empty, with
    /// no allocation, once drained).
    ahead: Vec<u8>,
    ahead_at: usize,
    /// Once upgraded: the connection's meter of unfinished messages.
    partial: Option<Arc<PartialMeter>>,
    /// A read was refused for `--max-partial-bytes`: so is every later one.
    over_budget: bool,
    /// Once upgraded: the link (read gate and write side), and a waker
    /// that opens its gate.
    link: Option<(Arc<SocketLink>, Waker)>,
}

thread_local! {
    /// The worker thread's buffer for reads ahead (see the module doc).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl TimedIo {
    /// A just-accepted connection: its request head is due within the handshake timeout.
    /// `read_ahead` is `--read-buffer`.
    pub fn new(
        io: TcpStream,
        shared: Arc<ConnShared>,
        timeouts: Timeouts,
        read_ahead: usize,
    ) -> Self {
        let (read, write) = io.into_split();
        Self {
            read,
            write: Some(write),
            shared,
            timeouts,
            phase: Phase::Head,
            seen: 0,
            deadline: timeouts.handshake.map(|t| Instant::now() + t),
            sleep: None,
            expired: false,
            read_ahead,
            ahead: Vec::new(),
            ahead_at: 0,
            partial: None,
            over_budget: false,
            link: None,
        }
    }

    /// A read of the upgraded socket, counted by its meter: refused (the
    /// bytes taken back out of `buf`) when the budget cannot take them.
    fn poll_read_counted(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.over_budget {
            return Poll::Ready(Err(io::Error::other(OverBudget)));
        }
        let before = buf.filled().len();
        let read = self.poll_read_upgraded(cx, buf);
        if let (Poll::Ready(Ok(())), Some(meter)) = (&read, &self.partial) {
            let n = buf.filled().len().saturating_sub(before);
            if n > 0
                && let Err(over) = meter.read(n)
            {
                buf.set_filled(before);
                self.over_budget = true;
                return Poll::Ready(Err(io::Error::other(over)));
            }
        }
        read
    }

    /// A read of the upgraded socket: from what was read ahead, or straight
    /// into `buf` when it is large, or ahead into the thread's scratch.
    fn poll_read_upgraded(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.ahead_at < self.ahead.len() {
            let n = buf.remaining().min(self.ahead.len() - self.ahead_at);
            buf.put_slice(&self.ahead[self.ahead_at..self.ahead_at + n]);
            self.ahead_at += n;
            if self.ahead_at == self.ahead.len() {
                self.ahead = Vec::new();
                self.ahead_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= self.read_ahead || buf.remaining() == 0 {
            return self.poll_socket(cx, buf);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < self.read_ahead {
                scratch.resize(self.read_ahead, 0);
            }
            let mut ahead = ReadBuf::new(&mut scratch[..self.read_ahead]);
            match self.poll_socket(cx, &mut ahead) {
                Poll::Ready(Ok(())) => {
                    let read = ahead.filled();
                    let n = buf.remaining().min(read.len());
                    buf.put_slice(&read[..n]);
                    if n < read.len() {
                        self.ahead = read[n..].to_vec();
                    }
                    Poll::Ready(Ok(()))
                }
                other => other,
            }
        })
    }

    /// A read of the upgraded socket itself, through its link's read
    /// gate: closed before the read, open again if it got something (there
    /// may be more); when it finds nothing, tokio holds the gate's waker,
    /// which opens it at the next readiness and wakes the task of `cx`.
    fn poll_socket(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some((link, waker)) = &self.link else {
            return Pin::new(&mut self.read).poll_read(cx, buf);
        };
        link.close_for_read(cx);
        let read = Pin::new(&mut self.read).poll_read(&mut Context::from_waker(waker), buf);
        if read.is_ready() {
            link.reopen();
        }
        read
    }

    /// Follows the service's phase changes.
    fn observe(&mut self) {
        if self.phase == Phase::Upgraded {
            return;
        }
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if epoch == self.seen {
            return;
        }
        self.seen = epoch;
        if epoch == UPGRADED {
            self.phase = Phase::Upgraded;
            self.deadline = None;
            self.sleep = None;
            self.partial = self.shared.upgrade.get().map(|u| u.partial.clone());
            self.link = self.shared.upgrade.get().map(|u| {
                if let Some(half) = self.write.take() {
                    u.link.attach(half);
                }
                (u.link.clone(), Waker::from(u.link.clone()))
            });
        } else if epoch % 2 == 1 {
            self.phase = Phase::Busy;
            self.deadline = None;
        } else {
            self.phase = Phase::Idle;
            self.deadline = self.timeouts.keepalive.map(|t| Instant::now() + t);
        }
    }

    /// Pending until the deadline, then the error that makes hyper drop the connection.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if !self.expired && Instant::now() < deadline {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let (why, text) = if self.phase == Phase::Idle {
            (Dropped::KeepaliveTimeout, "idle past --keepalive-timeout")
        } else {
            (
                Dropped::HandshakeTimeout,
                "request headers not complete within --handshake-timeout",
            )
        };
        if !self.expired {
            self.expired = true;
            self.shared.metrics.dropped(why);
        }
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, text)))
    }

    /// After a write: one that made progress makes an idle connection not
    /// idle (its keep-alive deadline moves), and the task wakes at it.
    fn written(&mut self, cx: &mut Context<'_>, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written {
            if *n > 0 && self.phase == Phase::Idle {
                self.deadline = self.timeouts.keepalive.map(|t| Instant::now() + t);
            }
            self.arm(cx);
        }
    }

    /// Makes sure the task wakes at the deadline set by a write. hyper may
    /// have registered its read interest before the response (while busy,
    /// without a deadline) and not read again until the socket is readable;
    /// woken, it reads, and the read fails.
    fn arm(&mut self, cx: &mut Context<'_>) {
        let Some(deadline) = self.deadline else {
            return;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.observe();
        if this.phase == Phase::Upgraded {
            return this.poll_read_counted(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.read).poll_read(cx, buf) {
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                _ => Poll::Pending,
            },
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    // The next request has begun: its head is due in time.
                    this.phase = Phase::Head;
                    this.deadline = this.timeouts.handshake.map(|t| Instant::now() + t);
                }
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.observe();
        let written = match (&this.link, &mut this.write) {
            (Some((link, _)), _) => link.poll_write(cx, data.len(), |io| io.try_write(data)),
            (None, Some(write)) => Pin::new(write).poll_write(cx, data),
            (None, None) => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        };
        this.written(cx, &written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.observe();
        let written = match (&this.link, &mut this.write) {
            (Some((link, _)), _) => {
                let len = bufs.iter().map(|b| b.len()).sum();
                link.poll_write(cx, len, |io| io.try_write_vectored(bufs))
            }
            (None, Some(write)) => Pin::new(write).poll_write_vectored(cx, bufs),
            (None, None) => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        };
        this.written(cx, &written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.observe();
        this.arm(cx);
        match &this.link {
            Some((link, _)) => link.poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match (&this.link, &mut this.write) {
            (Some((link, _)), _) => link.poll_shutdown(cx),
            (None, Some(write)) => Pin::new(write).poll_shutdown(cx),
            (None, None) => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for TimedIo {
    /// The link may outlive the socket (the fan-out holds it a little
    /// longer): it lets go of the write half here, so the socket closes now.
    fn drop(&mut self) {
        if let Some((link, _)) = &self.link {
            link.detach();
        }
    }
}
