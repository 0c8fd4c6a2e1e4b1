//! The connection's one task: it owns the unsplit socket, reads, dispatches
//! ([`dispatch`](super::dispatch)) and writes ([`Outbox`]). Everything from
//! outside arrives through one wake-up source, the outbound queue's: what
//! the registry queues (admin pushes, broadcasts) and close requests
//! (kicks, replacements, takeovers of the reliable session, the server's
//! shutdown), which the loop takes with one atomic load per turn. Its own
//! timers (timed pushes, pings, acks, the idle deadline and in token mode
//! the token's expiry) share the same `select!`. A `select!` that also
//! polled a shutdown token and a close `Notify` took two locks per turn:
//! about 5% of the typed echo's instructions.
//!
//! A reply is queued by the dispatch and written at the top of the next
//! turn of the loop, in the same task: no second task to wake, no lock
//! around the socket. Frames already readable are dispatched together
//! first, so that their replies share one flush. The loop reads only while
//! the outbound queue is under its bounds (`--send-queue`,
//! `--send-queue-bytes`), so that a client that sends without reading
//! waits for its replies to be written (or is closed as a slow consumer).
//!
//! A channel's publication to an idle connection does not wake it at all:
//! the fan-out writes it into the socket itself (see `serve::link`). The
//! loop marks its socket's link busy before anything it does once awake
//! (at the top of each turn, at a frame read, at a batch taken from the
//! queue) and idle only in the queue's receive that finds nothing, so what
//! it writes of its own never overtakes, nor is overtaken by, a direct
//! write within one channel's frames.
//!
//! Every deadline is checked at the top of every turn, whatever woke it: a
//! client that keeps the read side busy without pause cannot hold its
//! connection past the token's expiry.
//!
//! Generic over the transport (a `Stream` and `Sink` of messages), so it
//! runs on in-memory channels in the unit tests.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use shared::ClientMessage;

use super::burst::Pacer;
use super::outbound::Outbox;
use super::reliable::Link;
use super::{CLOSE_GRACE, Conn, End, Mode, app};
use crate::queue;
use crate::registry::Outbound;
use crate::state::AppState;
use crate::timer::{Due, tick, ticker};
use crate::wire::ReadError;

/// Frames read and dispatched at most before their replies are written.
const READ_BATCH: usize = 32;

/// One `/ws` connection: its socket, its queue and its state.
pub(super) struct Connection<'a, T> {
    pub(super) ws: T,
    /// The queue's sending side: the connection's own replies go in here
    /// (see [`queue::Sender::force_send`]), behind what the registry queued.
    pub(super) outbound: queue::Sender,
    outbox: Outbox,
    pub(super) state: &'a AppState,
    pub(super) conn: &'a Conn,
    pub(super) bad_in_a_row: u32,
    /// Reliable mode: the link to the session; `None` on a plain connection.
    pub(super) link: Option<Box<Link>>,
    /// A plain connection's `?burst=N`, queued after the welcome.
    burst: Option<u32>,
    /// The burst pacer, for both modes: a plain connection's bursts, and
    /// the size of every batch (the queue's byte bound, `--max-burst-rate`).
    pub(super) pacer: Pacer,
    /// Token mode: when the token (plus the leeway) runs out, unless refreshed.
    pub(super) expiry: Option<tokio::time::Instant>,
    /// A refresh moved `expiry`: the deadline timer is re-armed.
    pub(super) rearm: bool,
    /// When the last refresh was checked: one per `--refresh-interval`.
    pub(super) last_refresh: Option<tokio::time::Instant>,
    /// Refreshes refused or rate-limited in a row: the third closes with 4401.
    pub(super) bad_refreshes: u8,
    /// The last refusal logged, and how many were not logged since.
    pub(super) refusal_logged: (Option<tokio::time::Instant>, u32),
    /// Counted in `ws_bursting_connections` while a burst goes on.
    bursting: Bursting,
    /// Channels: the sink and the publish rate, once the connection used
    /// them (see `channels.rs`).
    pub(super) channels: Option<Box<super::channels::ChannelState>>,
    /// Token mode: the token's channel claims (replaced at a refresh).
    pub(super) claims: Option<std::sync::Arc<crate::channels::grants::ChannelClaims>>,
}

/// A connection's place in `ws_bursting_connections` while it bursts,
/// given back when the burst ends or the connection does (a drop, so a
/// panic cannot leave it counted).
#[derive(Debug, Default)]
struct Bursting(Option<std::sync::Arc<crate::metrics::Metrics>>);

impl Bursting {
    /// Counted when `on`, else not; returns how many connections burst now.
    fn set(&mut self, on: bool, metrics: &std::sync::Arc<crate::metrics::Metrics>) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        match (&self.0, on) {
            (None, true) => {
                metrics.bursting.fetch_add(1, Relaxed);
                self.0 = Some(metrics.clone());
            }
            (Some(_), false) => self.clear(),
            _ => {}
        }
        metrics.bursting.load(Relaxed)
    }

    fn clear(&mut self) {
        if let Some(metrics) = self.0.take() {
            metrics
                .bursting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Bursting {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The earlier of two instants, if either is.
fn earlier(
    a: Option<tokio::time::Instant>,
    b: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The socket's next frame, read once its link's gate says the socket may
/// have something (see `serve::link`); at every poll without a link. A
/// frame read marks the connection busy at once: what it leads to is
/// written after any direct write that came first.
async fn gated_next<T>(ws: &mut T, link: Option<&crate::serve::SocketLink>) -> Option<T::Item>
where
    T: Stream + Unpin,
{
    std::future::poll_fn(|cx| {
        let Some(link) = link else {
            return ws.poll_next_unpin(cx);
        };
        std::task::ready!(link.poll_open(cx));
        let next = std::task::ready!(ws.poll_next_unpin(cx));
        link.set_busy();
        std::task::Poll::Ready(next)
    })
    .await
}

/// A future that completes at `due`, or never.
///
/// Its timer is boxed: the `select!` keeps this future in every idle
/// connection's task, and inline its `Sleep` (112 bytes) was held by each
/// though only a reliable connection's ack or a held-back burst ever sets
/// `due`.
async fn at(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => Box::pin(tokio::time::sleep_until(due)).await,
        None => std::future::pending().await,
    }
}

impl<'a, T> Connection<'a, T>
where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    pub(super) fn new(
        ws: T,
        (outbound, outbox): (queue::Sender, Outbox),
        state: &'a AppState,
        conn: &'a Conn,
        mode: Mode,
    ) -> Self {
        let (link, burst) = match mode {
            Mode::Plain { burst } => (None, burst),
            Mode::Reliable(link) => (Some(link), None),
        };
        Self {
            ws,
            outbound,
            outbox,
            state,
            conn,
            bad_in_a_row: 0,
            link,
            burst,
            pacer: Pacer::new(state.config.max_burst_rate, tokio::time::Instant::now()),
            expiry: conn.expiry,
            rearm: false,
            last_refresh: None,
            bad_refreshes: 0,
            refusal_logged: (None, 0),
            bursting: Bursting::default(),
            channels: None,
            claims: conn.claims.clone(),
        }
    }

    /// Runs the connection (its welcome is already queued) to its end,
    /// then closes it.
    ///
    /// By `&mut self`: the caller's future holds the connection once. An
    /// `async fn` taking `self` by value keeps two copies in its future for
    /// the connection's whole life (the argument, and the local it is
    /// moved into), 632 bytes each.
    pub(super) async fn run(&mut self) -> End {
        let config = &self.state.config;
        if let Some(count) = self.burst.take() {
            self.deliver(app::serve(ClientMessage::Burst { count }, config.max_burst));
        }
        // Boxed: inline, the subscriptions' state (a recovery read from the
        // stream) would be held by the future of every connection.
        Box::pin(self.subscribe_claimed()).await;
        let mut push_tick = ticker(config.push_interval);
        let mut ping_tick = ticker(config.ping_interval);
        // One timer for the idle deadline and the token's expiry (timer::due).
        let idle = tokio::time::sleep_until(crate::timer::first(
            crate::timer::later(tokio::time::Instant::now(), config.idle_timeout),
            self.expiry,
        ));
        tokio::pin!(idle);
        let mut last_heard = tokio::time::Instant::now();
        let conn = self.conn;
        // A shutdown, a kick, a replacement or a takeover comes as a close
        // request, which wakes the connection through its queue (one
        // wake-up source for everything from outside; see `registry.rs`).
        // The shutdown asks every registered connection: one that
        // registered as it began finds the token cancelled here.
        if self.state.shutdown.is_cancelled() {
            conn.shared.request_close(End::shutdown_request());
        }

        let (end, written) = loop {
            // Awake: no direct write into the socket until the next idle
            // wait (see `serve::link`).
            if let Some(link) = &conn.link {
                link.set_busy();
            }
            if let Some(request) = conn.shared.take_close() {
                break (End::with(request.code, request.reason), true);
            }
            // Every deadline, whatever woke the loop: the deadline timer's
            // branch comes last in the biased `select!`, so a client that
            // keeps the read side busy would otherwise never meet it.
            match crate::timer::overdue(
                tokio::time::Instant::now(),
                last_heard,
                config.idle_timeout,
                self.expiry,
            ) {
                Due::NotYet => {}
                Due::Idle => {
                    tracing::info!("closing an idle connection after {:?}", config.idle_timeout);
                    break (End::idle(), true);
                }
                Due::Expired => break (End::token_expired(), true),
            }
            // Counted among the connections bursting before its batch is
            // sized, so that a burst's first batch takes its share too.
            let bursting = self.pacer.due().is_none()
                && (self.pacer.plain_running()
                    || self.link.as_ref().is_some_and(|l| l.burst_ready()));
            if bursting || self.bursting.0.is_some() {
                let now_bursting = self.bursting.set(bursting, &self.state.metrics);
                self.pacer.share(now_bursting);
            }
            if let Err(end) = self.pace() {
                break (end, true);
            }
            let queued = !self.outbound.is_empty();
            // A plain burst's next batch, unless the rate holds it back.
            let plain_burst = self.pacer.plain_running() && self.pacer.due().is_none();
            if self.outbox.busy() || queued || plain_burst {
                // Boxed: inline, a batch's state would be held by the future
                // of every idle connection.
                let write = self.outbox.write(
                    &mut self.ws,
                    self.state,
                    (&conn.shared, queued),
                    &mut self.pacer,
                );
                if let Err(failed) = Box::pin(write).await {
                    break (failed.end(self.state), false);
                }
            }
            let reading = self.has_room();
            let burst = self.pacer.due().is_none()
                && (self.pacer.plain_running()
                    || self.link.as_ref().is_some_and(|l| l.burst_ready()));
            let more = self.outbox.busy() || burst;
            tokio::select! {
                biased;
                // Through the read gate: a wake-up by the queue alone (a
                // subscriber's publication) does not poll the read side.
                frame = gated_next(&mut self.ws, conn.link.as_deref()), if reading => {
                    last_heard = tokio::time::Instant::now();
                    if let Err(end) = Box::pin(self.read(frame)).await {
                        break (end, true);
                    }
                    if self.rearm {
                        // A refresh: rare, so the timer may move here.
                        self.rearm = false;
                        let idle_at = crate::timer::later(last_heard, config.idle_timeout);
                        idle.as_mut().reset(crate::timer::first(idle_at, self.expiry));
                    }
                }
                // Something queued by the registry, or a close request:
                // written, or taken, at the top.
                () = self.outbox.ready(), if !more => {}
                // A burst goes on at the top, after whatever else is ready.
                () = std::future::ready(()), if more => {}
                // One timer for a reliable connection's ack and for a burst
                // the rate held back (every idle connection holds the
                // timers of this `select!`): whichever is due.
                () = at(earlier(self.link.as_ref().and_then(|link| link.ack_due()), self.pacer.due())) => {
                    let now = tokio::time::Instant::now();
                    if self.pacer.due().is_some_and(|due| due <= now) {
                        self.pacer.woke();
                    }
                    if let Some(link) = &mut self.link
                        && link.ack_due().is_some_and(|due| due <= now)
                    {
                        link.send_ack(&self.outbound);
                    }
                }
                Some(()) = tick(&mut push_tick) => {
                    // Boxed: once a second is rare next to a connection's life.
                    if let Err(end) = Box::pin(self.timed_push()).await {
                        break (end, true);
                    }
                }
                Some(()) = tick(&mut ping_tick) => {
                    // Skipped when the queue has no room: the peer is behind anyway.
                    let _ = self.outbound.try_send(Outbound::Frame(Message::Ping(Default::default())));
                }
                () = &mut idle => {
                    match crate::timer::due(idle.as_mut(), last_heard, config.idle_timeout, self.expiry) {
                        Due::NotYet => {}
                        Due::Idle => {
                            tracing::info!("closing an idle connection after {:?}", config.idle_timeout);
                            break (End::idle(), true);
                        }
                        Due::Expired => break (End::token_expired(), true),
                    }
                }
            }
        };
        if let Some(link) = &conn.link {
            link.set_busy();
        }
        if let Some(link) = &self.link {
            link.detach(self.state);
        }
        Box::pin(self.finish(end, written)).await
    }

    /// Whether the queue and the direct replies are under the queue's
    /// bounds: the loop reads from its client only then.
    fn has_room(&self) -> bool {
        let bound = self.state.config.send_queue_bytes;
        (bound == 0 || self.outbox.direct_bytes() < bound) && self.outbound.has_room()
    }

    /// A reply of the connection's own: written first at the next write when
    /// nothing waits before it (no trip through the queue's lock), else
    /// queued behind what waits.
    pub(super) fn reply(&mut self, message: Message) {
        if self.outbox.may_go_direct() && self.outbound.is_empty() {
            self.outbox.push_direct(message);
        } else {
            self.outbound.force_send(Outbound::Frame(message));
        }
    }

    /// Reliable mode: the next pushes of a burst, as the window and the
    /// pacer allow.
    fn pace(&mut self) -> Result<(), End> {
        match &self.link {
            Some(link) if self.pacer.due().is_none() && link.burst_ready() => {
                let room = self.outbox.burst_room(self.state);
                link.pace(&self.outbound, &mut self.pacer, room)
            }
            _ => Ok(()),
        }
    }

    /// Dispatches `frame`, then the frames already readable (up to
    /// [`READ_BATCH`], while the queue has room and no close was asked
    /// for), so that their replies share one flush.
    ///
    /// Each frame takes a unit of tokio's cooperative budget: frames that
    /// tungstenite already holds cost the socket no read, so a client that
    /// keeps it full would otherwise keep the worker thread from every
    /// other connection.
    async fn read(&mut self, frame: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        let mut next = frame;
        let mut read = 1;
        loop {
            match next {
                Some(Ok(message)) => {
                    // Out of --max-partial-bytes: the message is complete.
                    if let Some(partial) = &self.conn.partial {
                        partial.received(&message);
                    }
                    self.on_message(message).await?;
                    tokio::task::consume_budget().await;
                }
                // Past --max-partial-bytes among them: 1013.
                Some(Err(err)) => return Err(End::read(&ReadError::from(err))),
                None => return Err(End::gone("connection ended")),
            }
            // A close asked for by what was just read (a third refused
            // refresh, say) or from outside: the rest waits, and the loop
            // takes the close first.
            if read == READ_BATCH || !self.has_room() || self.conn.shared.close_pending() {
                return Ok(());
            }
            // `next` is cancel-safe: an unfinished read stays in the buffer.
            match self.ws.next().now_or_never() {
                Some(frame) => next = frame,
                None => return Ok(()),
            }
            read += 1;
        }
    }

    /// Writes what was queued before the close (unless writing is what
    /// failed), sends the close frame, then reads until the peer's close
    /// reply or the grace period ends.
    async fn finish(&mut self, end: End, write_queued: bool) -> End {
        let Some(code) = end.code else {
            return end;
        };
        if write_queued {
            self.outbox
                .write_before_close(&mut self.ws, CLOSE_GRACE)
                .await;
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(end.reason.clone()),
        };
        // A peer that does not read may never take it.
        let sent = tokio::time::timeout(CLOSE_GRACE, self.ws.send(Message::Close(Some(frame))));
        if matches!(sent.await, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
        end
    }
}
