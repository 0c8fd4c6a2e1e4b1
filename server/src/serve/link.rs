//! What an upgraded socket shares with its connection's task: the read
//! gate, and the write side that lets a channel's fan-out write into an
//! idle subscriber's socket itself.
//!
//! **The read gate.** The connection's loop polls its WebSocket's read side
//! only when the socket may have something to read. A connection that only
//! receives (a channel's subscriber) is woken once per publication, and
//! polling the read side at each of those wake-ups went through
//! tokio-tungstenite's waker proxy, tungstenite's read path and tokio's
//! readiness check to find nothing: about a tenth of the server's CPU per
//! delivery in a fan-out to 10,000 subscribers (perf).
//!
//! **Direct writes.** A publication to 10,000 subscribers used to be queued
//! 10,000 times, each queue waking its connection's task, which then took
//! the frame, framed it again through tungstenite and wrote it. Most of that
//! cost was memory, not work: each delivery touched the queue, the task's
//! header, its future, tungstenite's state and tokio's registration of the
//! socket, each cold at that scale (perf: the queue and the wake-up alone
//! were a third of the server's CPU per delivery). When the subscriber's
//! connection is idle, with nothing queued and nothing being written, the
//! fan-out now writes the frame into the socket itself, in one `sendmsg`
//! (the header on the stack, the payload shared by every subscriber), and
//! touches the task not at all. Node's socket.io does the same, from its
//! one thread. The link holds the socket's write half from the upgrade;
//! the socket's reads keep tokio's own path.
//!
//! The rules that keep the byte stream whole and in order:
//!
//! - Every write of the socket, the connection's own (through
//!   [`TimedIo`](super::io::TimedIo)) and a direct one, is made under this
//!   link's lock, so no two interleave within a syscall.
//! - tungstenite hands the socket its whole buffer at each write, so a
//!   write that does not take all it is given leaves a frame unfinished:
//!   no direct write is made until a later one takes everything.
//! - A direct write that the socket takes only in part keeps its rest
//!   here (the frame itself, whose payload every subscriber shares: never a
//!   copy); every later write of the socket, and its flush, writes that rest
//!   first. The fan-out then queues a [`Rest`](crate::queue::Outbound::Rest)
//!   marker, so that the connection's task wakes and flushes it within
//!   `--write-timeout` (or closes a slow consumer, as for anything queued).
//! - Only an idle connection is written to directly: its queue is empty and
//!   its task waits with everything written (the `idle` flag, set under the
//!   queue's lock by the receive that found nothing, cleared by the task
//!   before anything it does, and by any write of its own: tungstenite
//!   finishes a close reply inside a read, and no frame may follow that).
//!   Whatever the connection writes of its own, a `subscribed` before the
//!   live publications of its channel say, therefore comes after a direct
//!   write or goes through the queue, where the fan-out queues behind it.
//!
//! The cost: a fan-out's writes are made by the thread that delivers the
//! publication, under the hub's lock (as its queue pushes were before), so
//! on a machine with many cores a large fan-out no longer spreads its
//! writes over the runtime's workers. Per delivery it costs less CPU
//! wherever it runs. A frame over [`DIRECT_MAX`] goes through the queue,
//! so that no large copy is made under the hub's lock; sharding the hub
//! per channel, so that a long fan-out holds no other channel, is the next
//! step where that matters.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use axum::extract::ws::Message;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// The largest payload the fan-out writes directly: a larger frame goes
/// through the queue, since each subscriber's copy into its socket is made
/// under the hub's lock, which holds every channel of the node meanwhile.
pub const DIRECT_MAX: usize = 16 * 1024;

/// An upgraded socket's read gate and write side (see the module doc),
/// shared by the socket and the connection's task.
#[derive(Debug)]
pub struct SocketLink {
    /// Whether the socket may have something to read.
    open: AtomicBool,
    /// The waker of the task whose read found nothing.
    task: futures_util::task::AtomicWaker,
    /// The connection's task waits with nothing to write and nothing
    /// queued: a direct write may go in (see the module doc).
    idle: AtomicBool,
    /// The socket's own writer did not get all it handed over to the
    /// socket: a frame of it is unfinished (written under the lock).
    unfinished: AtomicBool,
    /// The write side, under the lock every write of the socket takes.
    out: Mutex<Out>,
}

/// The write side of an upgraded socket.
#[derive(Debug, Default)]
struct Out {
    /// The socket's write half, from the upgrade until the socket is
    /// dropped (never kept past it: the fan-out may hold this link a
    /// little longer).
    half: Option<OwnedWriteHalf>,
    /// What a direct write left unwritten (boxed: every idle connection
    /// holds this field).
    rest: Option<Box<Rest>>,
}

/// The unwritten end of a directly written frame: the frame itself (its
/// payload shared with every other subscriber's copy, not copied: a large
/// publication to many subscribers whose sockets took it in part would
/// otherwise be copied once for each) and how much of it went.
#[derive(Debug)]
struct Rest {
    head: [u8; MAX_HEAD],
    head_len: usize,
    frame: Message,
    /// Bytes of the header and then of the payload written so far.
    at: usize,
}

impl Rest {
    /// What is left of the header, and of the payload.
    fn left(&self) -> (&[u8], &[u8]) {
        let payload = payload_of(&self.frame).map_or(&[][..], |(_, payload)| payload);
        if self.at < self.head_len {
            (&self.head[self.at..self.head_len], payload)
        } else {
            let from = (self.at - self.head_len).min(payload.len());
            (&[], &payload[from..])
        }
    }
}

/// A data frame's opcode and payload; `None` for a control frame, which
/// the connection writes itself.
fn payload_of(frame: &Message) -> Option<(u8, &[u8])> {
    match frame {
        Message::Text(text) => Some((0x1, text.as_bytes())),
        Message::Binary(data) => Some((0x2, data)),
        _ => None,
    }
}

/// What became of a direct write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// All of it is in the socket.
    All,
    /// Part of it: the rest goes first at the connection's next write or
    /// flush, which must be made to happen.
    Part {
        /// The bytes left.
        rest: usize,
    },
    /// Nothing: the socket is busy, full, or gone (or the frame is not one
    /// that is written directly); the frame goes through the queue.
    Nothing,
}

impl SocketLink {
    /// An open gate, and no socket to write to until the upgrade attaches it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
            idle: AtomicBool::new(false),
            unfinished: AtomicBool::new(false),
            out: Mutex::new(Out::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // The read gate.

    /// Whether the socket may have something to read.
    pub fn may_read(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Ready once the socket may have something to read; until then the
    /// task of `cx` is woken when it may. For a loop that keeps one read
    /// future across its wake-ups (a `select!` branch): the waker the last
    /// socket read left belongs to that read, and a closed gate must still
    /// wake the loop.
    ///
    /// Also ready while a frame of the connection's own is unfinished: a
    /// pong or a close reply that tungstenite could not write whole inside
    /// a read is finished by its next read, which the socket's write
    /// readiness wakes the task for.
    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.may_read() || self.unfinished.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        // Opened between the check and the registration: its wake-up went
        // to the waker before.
        if self.may_read() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Before a read of the socket: the task of `cx` is the one to wake,
    /// and the gate is closed until the read gets something or the socket
    /// is ready again.
    pub(super) fn close_for_read(&self, cx: &Context<'_>) {
        self.task.register(cx.waker());
        self.open.store(false, Ordering::Release);
    }

    /// The read got something: there may be more.
    pub(super) fn reopen(&self) {
        self.open.store(true, Ordering::Release);
    }

    // The write side.

    /// The connection's task waits with everything written and nothing
    /// queued (set under the queue's lock, by the receive that found
    /// nothing).
    pub fn set_idle(&self) {
        self.idle.store(true, Ordering::Release);
    }

    /// The connection's task woke, or took something from its queue: no
    /// direct write until it waits idle again. Any write it then makes
    /// takes the lock a direct write holds, so a direct write that read the
    /// flag before this is in the socket before that write.
    pub fn set_busy(&self) {
        if self.idle.load(Ordering::Relaxed) {
            self.idle.store(false, Ordering::Release);
        }
    }

    /// The upgrade is done: the socket's writes go through `half`, and
    /// direct writes may go in.
    pub(super) fn attach(&self, half: OwnedWriteHalf) {
        self.lock().half = Some(half);
    }

    /// The socket is dropped: nothing more is written, and this link does
    /// not keep it open.
    pub(super) fn detach(&self) {
        let mut out = self.lock();
        out.half = None;
        out.rest = None;
    }

    /// The connection's own write of `len` bytes by `write`, after the rest
    /// of a direct write; notes whether it left a frame unfinished. Any
    /// write of its own makes the connection busy: a close reply that
    /// tungstenite finishes inside a read, while the task still counts as
    /// idle, is never followed by a direct write.
    pub(super) fn poll_write(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut out = self.lock();
        self.set_busy();
        let written = match out.poll_rest(cx) {
            Poll::Ready(Ok(())) => match &out.half {
                Some(half) => poll_write_to(half.as_ref(), cx, write),
                None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            },
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        };
        let unfinished = !matches!(written, Poll::Ready(Ok(n)) if n == len);
        self.unfinished.store(unfinished, Ordering::Release);
        written
    }

    /// The connection's flush: the rest of a direct write goes out.
    pub(super) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_rest(cx)
    }

    /// The connection's shutdown of its write side, after the rest of a
    /// direct write.
    pub(super) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = self.lock();
        ready!(out.poll_rest(cx))?;
        match &mut out.half {
            Some(half) => std::pin::Pin::new(half).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Writes `frame` into the socket now if the connection is idle and no
    /// frame of its own is unfinished; for the caller that holds the
    /// connection's queue's lock and found it empty (see the module doc).
    pub fn write_frame(&self, frame: &Message) -> Wrote {
        let Some((opcode, payload)) = payload_of(frame) else {
            return Wrote::Nothing;
        };
        let mut out = self.lock();
        if !self.idle.load(Ordering::Acquire)
            || self.unfinished.load(Ordering::Relaxed)
            || out.rest.is_some()
        {
            return Wrote::Nothing;
        }
        let Some(half) = &out.half else {
            return Wrote::Nothing;
        };
        let mut head = [0; MAX_HEAD];
        let head_len = frame_head(opcode, payload.len(), &mut head).len();
        let total = head_len + payload.len();
        // Straight to the socket, not through tokio's readiness (one cold
        // cache line less per delivery): a full socket says so, and the
        // connection's own write then learns it for tokio.
        let socket = socket2::SockRef::from(half.as_ref());
        let slices = [IoSlice::new(&head[..head_len]), IoSlice::new(payload)];
        let written = match socket.send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL) {
            // Full, or failed: the connection's own write meets it.
            Ok(0) | Err(_) => return Wrote::Nothing,
            Ok(n) => n,
        };
        if written >= total {
            return Wrote::All;
        }
        out.rest = Some(Box::new(Rest {
            head,
            head_len,
            frame: frame.clone(),
            at: written,
        }));
        Wrote::Part {
            rest: total - written,
        }
    }
}

impl Out {
    /// Writes the rest of a direct write, if any; ready once none is left.
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Self { half, rest: slot } = self;
        while let Some(rest) = slot {
            let Some(half) = half else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let io: &TcpStream = half.as_ref();
            let (head, payload) = rest.left();
            if head.is_empty() && payload.is_empty() {
                *slot = None;
                break;
            }
            let slices = [IoSlice::new(head), IoSlice::new(payload)];
            let n = ready!(poll_write_to(io, cx, |io| io.try_write_vectored(&slices)))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            rest.at += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl std::task::Wake for SocketLink {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// The socket is ready: the gate opens and the task that read wakes.
    fn wake_by_ref(self: &Arc<Self>) {
        self.reopen();
        self.task.wake();
    }
}

/// A write of `io` by `write` once it is writable (tokio's `try_write`
/// family, which forgets the readiness when the socket says it would block).
fn poll_write_to<T>(
    io: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(&TcpStream) -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(io.poll_write_ready(cx))?;
        match write(io) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
}

/// The longest header of a server's frame (unmasked, 64-bit length).
const MAX_HEAD: usize = 10;

/// The header of a final, unmasked frame of `opcode` with `len` bytes of
/// payload (RFC 6455, 5.2), written into `buf`.
fn frame_head(opcode: u8, len: usize, buf: &mut [u8; MAX_HEAD]) -> &[u8] {
    buf[0] = 0x80 | opcode;
    if let Ok(short) = u8::try_from(len)
        && short < 126
    {
        buf[1] = short;
        &buf[..2]
    } else if let Ok(medium) = u16::try_from(len) {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&medium.to_be_bytes());
        &buf[..4]
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        &buf[..10]
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A link attached to the server's side of a connected pair on
    /// loopback, as the upgrade attaches it; the server's read half (kept
    /// open) and the client.
    async fn pair() -> (Arc<SocketLink>, tokio::net::tcp::OwnedReadHalf, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (read, write) = accepted.unwrap().0.into_split();
        let link = SocketLink::new();
        link.attach(write);
        (link, read, client.unwrap())
    }

    /// The connection's own write of `data`, to the end.
    async fn write_all(link: &SocketLink, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            at +=
                std::future::poll_fn(|cx| link.poll_write(cx, rest.len(), |io| io.try_write(rest)))
                    .await
                    .unwrap();
        }
    }

    #[tokio::test]
    async fn a_direct_write_goes_in_only_while_idle_and_its_rest_goes_first() {
        let small = Message::Text("hi".into());
        assert_eq!(
            SocketLink::new().write_frame(&small),
            Wrote::Nothing,
            "no socket yet"
        );
        let (link, _read, mut client) = pair().await;
        assert_eq!(link.write_frame(&small), Wrote::Nothing, "not idle");
        link.set_idle();
        assert_eq!(link.write_frame(&small), Wrote::All);
        assert_eq!(
            link.write_frame(&Message::Ping(Default::default())),
            Wrote::Nothing,
            "a control frame is the connection's"
        );
        // More than loopback's buffers hold: written in part.
        let big = axum::body::Bytes::from(vec![7; 64 << 20]);
        let Wrote::Part { rest } = link.write_frame(&Message::Binary(big.clone())) else {
            panic!("a frame larger than the buffers goes in part");
        };
        assert!(rest > 0);
        assert!(!big.is_unique(), "the rest shares the payload, uncopied");
        assert_eq!(
            link.write_frame(&small),
            Wrote::Nothing,
            "not while a rest waits"
        );
        // The connection's own write: the rest first, then its bytes.
        let writer = {
            let link = link.clone();
            tokio::spawn(async move {
                link.set_busy();
                write_all(&link, b"own").await;
            })
        };
        let mut want = vec![0x81, 2, b'h', b'i', 0x82, 127];
        want.extend_from_slice(&(big.len() as u64).to_be_bytes());
        want.extend_from_slice(&big);
        want.extend_from_slice(b"own");
        let mut got = vec![0; want.len()];
        client.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == want, "the frames whole and in order");
        assert!(big.is_unique(), "the rest, written, is let go");
        assert_eq!(link.write_frame(&small), Wrote::Nothing, "busy");
        // A write of the connection's own makes it busy, idle or not (a
        // close reply finished inside a read is never followed).
        link.set_idle();
        write_all(&link, b"close").await;
        assert_eq!(link.write_frame(&small), Wrote::Nothing, "busy again");
        // Dropped by its socket, the link lets go of it: the client sees
        // the end of the stream.
        link.detach();
        let mut end = Vec::new();
        client.read_to_end(&mut end).await.unwrap();
        assert_eq!(end, b"close");
    }

    #[tokio::test]
    async fn an_unfinished_frame_of_the_connection_keeps_direct_writes_out() {
        let (link, _read, mut client) = pair().await;
        // The connection's writer hands over more than the socket takes.
        let own = vec![1; 64 << 20];
        let n = std::future::poll_fn(|cx| link.poll_write(cx, own.len(), |io| io.try_write(&own)))
            .await
            .unwrap();
        assert!(n < own.len());
        link.set_idle();
        assert_eq!(link.write_frame(&Message::Text("x".into())), Wrote::Nothing);
        // The read gate lets the task finish it.
        let waker = futures_util::task::noop_waker();
        link.close_for_read(&Context::from_waker(&waker));
        assert!(link.poll_open(&mut Context::from_waker(&waker)).is_ready());
        // Once its writes take everything they are given, direct writes go in again.
        let reader = tokio::spawn(async move {
            let mut got = vec![0; own.len() + 3];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        write_all(&link, &vec![1; 64 << 20][n..]).await;
        link.set_idle();
        assert_eq!(link.write_frame(&Message::Text("x".into())), Wrote::All);
        let got = reader.await.unwrap();
        assert!(got[..64 << 20].iter().all(|&b| b == 1));
        assert_eq!(&got[64 << 20..], &[0x81, 1, b'x']);
    }

    /// The header is tungstenite's own, at each length's boundaries.
    #[test]
    fn a_frame_head_is_the_one_tungstenite_writes() {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            for (opcode, data) in [(0x1, Data::Text), (0x2, Data::Binary)] {
                let payload = vec![b'x'; len];
                let frame = Frame::message(payload.clone(), OpCode::Data(data), true);
                let mut want = Vec::new();
                frame.format(&mut want).unwrap();
                let mut head = [0; MAX_HEAD];
                let mut got = frame_head(opcode, len, &mut head).to_vec();
                got.extend_from_slice(&payload);
                assert_eq!(got, want, "length {len}");
            }
        }
    }
}
