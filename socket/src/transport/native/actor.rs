//! The socket's task: owns the tungstenite stream and the timers, feeds
//! what happens to the driver and performs the driver's effects in order.
//!
//! Its loop: perform every pending effect (the pump), then wait for the
//! first of a wake from a handle (a user call queued effects), an input
//! from the connection, or a timer; feed it; repeat. Only this task feeds
//! transport inputs and delivers events, so both keep their order. The
//! driver's lock is taken for one call at a time, never across an `.await`
//! and never while application code (callbacks, the open hook) runs.

use std::future::{Future, pending, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::UrlError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{Core, Shared, Socket};

/// tungstenite's read buffer, and the most one read takes (see `connect`).
const READ_BUFFER: usize = 16 * 1024;
use crate::cause::ErrorCause;
use crate::dispatch::lock;
use crate::driver::{Effect, Input, TimerId, TimerKind};
use crate::message::Message;
use crate::token::{Token, TokenProvider};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Ws, tungstenite::Error>> + Send>>;

/// How long a closing connection may take to finish its handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The close code reported when a connection ends without a close frame.
const ABNORMAL: u16 = 1006;

/// The task of one socket; ends when every handle is gone.
pub(super) async fn run(core: Arc<Core>, shared: Weak<Shared>, mut woken: mpsc::Receiver<()>) {
    let mut conn = Conn::None;
    let mut timers = Timers::default();
    let mut fetch = Fetch::default();
    loop {
        pump(&core, &shared, &mut conn, &mut timers, &mut fetch).await;
        let inputs = tokio::select! {
            wake = woken.recv() => match wake {
                Some(()) => continue,
                None => break,
            },
            inputs = conn.next() => inputs,
            id = timers.next() => vec![Input::TimerFired(id)],
            input = fetch.next() => vec![input],
        };
        feed(&core, inputs);
    }
    // The last handle is gone: nobody can observe the driver any more. Let
    // the streams end now, then close the connection politely.
    drop(core);
    if let Conn::Open { ws, .. } = conn {
        finish(*ws, None).await;
    }
}

/// Feeds `inputs` to the driver at one `now`.
fn feed(core: &Core, inputs: Vec<Input>) {
    if inputs.is_empty() {
        return;
    }
    let now = core.now();
    let mut driver = core.driver();
    for input in inputs {
        driver.handle(input, now);
    }
}

/// Performs every pending effect, in order, including those that the
/// effects themselves (callbacks, the hook, a failed write) add.
async fn pump(
    core: &Core,
    shared: &Weak<Shared>,
    conn: &mut Conn,
    timers: &mut Timers,
    fetch: &mut Fetch,
) {
    let mut unflushed = false;
    loop {
        let effect = core.driver().poll_effect();
        let Some(effect) = effect else {
            // Out of effects: flush the batch of writes, then report a
            // broken connection, which may queue more effects.
            if std::mem::take(&mut unflushed) {
                conn.flush().await;
            }
            match conn.take_broken() {
                Some(inputs) => {
                    feed(core, inputs);
                    continue;
                }
                None => return,
            }
        };
        match effect {
            Effect::OpenSocket {
                generation,
                url,
                token,
            } => conn.open(generation, url, token, core.connector.clone()),
            Effect::FetchToken { serial } => {
                let provider = core.driver().config().token.clone();
                fetch.start(serial, provider);
            }
            Effect::Write {
                generation,
                message,
                hand_back,
            } => {
                if let Some(message) = conn.write(generation, message).await {
                    if hand_back {
                        let input = Input::WriteFailed {
                            generation,
                            message,
                        };
                        feed(core, vec![input]);
                    }
                } else {
                    unflushed = true;
                }
            }
            Effect::CloseSocket {
                generation,
                code,
                reason,
            } => {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                };
                conn.close(Some(generation), Some(frame));
            }
            Effect::DropSocket => conn.close(None, None),
            Effect::StartTimer { id, delay_ms } => timers.start(id, delay_ms),
            Effect::StopTimer(kind) => timers.0[kind as usize] = None,
            Effect::RunOpenHook { generation } => {
                let hook = lock(&core.on_open).clone();
                if let (Some(hook), Some(shared)) = (hook, shared.upgrade()) {
                    let socket = Socket { shared };
                    // A panicking hook must not take the socket's task down.
                    let _ = catch_unwind(AssertUnwindSafe(|| hook(&socket)));
                }
                core.driver().open_hook_done(generation);
            }
            Effect::Emit(event) => core.dispatcher.emit([event]),
        }
    }
}

/// The one connection of a socket, if any.
enum Conn {
    None,
    Connecting {
        generation: u64,
        connect: Connecting,
    },
    Open {
        generation: u64,
        /// Boxed: a stream is large, and the other states are small.
        ws: Box<Ws>,
    },
    /// A write or flush failed: later writes of this generation are handed
    /// back in order, then the close is reported at the end of the pump.
    Broken {
        generation: u64,
        error: tungstenite::Error,
    },
}

impl Conn {
    fn generation(&self) -> Option<u64> {
        match self {
            Self::None => None,
            Self::Connecting { generation, .. }
            | Self::Open { generation, .. }
            | Self::Broken { generation, .. } => Some(*generation),
        }
    }

    /// Starts connection `generation`; in token mode with the token in an
    /// `Authorization: Bearer` header (the server also takes `?token=`, for
    /// browsers, but a header keeps it out of URLs and logs); `wss://`
    /// through `connector` (the socket's rustls config).
    fn open(
        &mut self,
        generation: u64,
        url: String,
        token: Option<Token>,
        connector: Option<Connector>,
    ) {
        self.close(None, None);
        let connect = async move {
            let mut request = url.into_client_request()?;
            if let Some(token) = token {
                let value =
                    HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                        tungstenite::Error::Url(UrlError::UnableToConnect(
                            "the token is not a valid header value".into(),
                        ))
                    })?;
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            // tungstenite zero-fills its read buffer up to its size before
            // every read: with its default of 128 KiB a client that reads
            // one small message at a time spent most of its CPU in
            // `memset` (61% for the bench's subscribers, see
            // `bench::harness::ws`), and every connection held 128 KiB.
            // 16 KiB keeps a burst's reads large (hundreds of small
            // messages each); a larger message is still read whole.
            let config = Some(
                tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER),
            );
            // Nagle off, as browsers do for WebSockets: a small message
            // (an echo, an ack) goes out at once instead of waiting up to a
            // delayed-ACK timeout (tens of ms) behind the previous one.
            #[cfg(feature = "native-rustls")]
            let connected =
                tokio_tungstenite::connect_async_tls_with_config(request, config, true, connector)
                    .await;
            // No TLS to configure: a `wss` URL fails with `TlsFeatureNotEnabled`.
            #[cfg(not(feature = "native-rustls"))]
            let connected = {
                let _ = connector;
                tokio_tungstenite::connect_async_with_config(request, config, true).await
            };
            connected.map(|(ws, _response)| ws)
        };
        *self = Self::Connecting {
            generation,
            connect: Box::pin(connect),
        };
    }

    /// Closes the connection (of `generation` only, if given) in the
    /// background, with `frame`, and forgets it: its events are not fed.
    fn close(&mut self, generation: Option<u64>, frame: Option<CloseFrame>) {
        if generation.is_some_and(|g| self.generation() != Some(g)) {
            return;
        }
        if let Self::Open { ws, .. } = std::mem::replace(self, Self::None) {
            tokio::spawn(finish(*ws, frame));
        }
    }

    /// Writes `message` if connection `generation` is open; gives it back
    /// if not, or if the write failed (the connection is broken then).
    async fn write(&mut self, generation: u64, message: Message) -> Option<Message> {
        let Self::Open { generation: g, ws } = self else {
            return Some(message);
        };
        if *g != generation {
            return Some(message);
        }
        let frame = match message {
            Message::Text(text) => Frame::text(text),
            Message::Binary(data) => Frame::binary(data),
        };
        // Cloning a frame only counts a reference to its bytes.
        match ws.feed(frame.clone()).await {
            Ok(()) => None,
            Err(err) => {
                *self = Self::Broken {
                    generation,
                    error: err,
                };
                Some(match frame {
                    Frame::Binary(data) => Message::Binary(data.into()),
                    other => Message::Text(other.to_text().unwrap_or_default().to_owned()),
                })
            }
        }
    }

    async fn flush(&mut self) {
        if let Self::Open { generation, ws } = self
            && let Err(err) = ws.flush().await
        {
            *self = Self::Broken {
                generation: *generation,
                error: err,
            };
        }
    }

    /// The inputs that report a broken connection, once.
    fn take_broken(&mut self) -> Option<Vec<Input>> {
        if !matches!(self, Self::Broken { .. }) {
            return None;
        }
        let Self::Broken { generation, error } = std::mem::replace(self, Self::None) else {
            return None;
        };
        Some(lost(generation, Some(error)))
    }

    /// The next inputs from the connection; pending while there is none.
    /// Cancel-safe: it only polls futures it owns, by reference.
    async fn next(&mut self) -> Vec<Input> {
        match self {
            Self::None | Self::Broken { .. } => pending().await,
            Self::Connecting {
                generation,
                connect,
            } => {
                let generation = *generation;
                match connect.as_mut().await {
                    Ok(ws) => {
                        *self = Self::Open {
                            generation,
                            ws: Box::new(ws),
                        };
                        vec![Input::Opened { generation }]
                    }
                    Err(err) => {
                        *self = Self::None;
                        connect_failed(generation, err)
                    }
                }
            }
            Self::Open { generation, ws } => {
                let generation = *generation;
                let (inputs, closed) = loop {
                    let message = match ws.next().await {
                        Some(Ok(Frame::Text(text))) => Message::Text(text.as_str().to_owned()),
                        Some(Ok(Frame::Binary(data))) => Message::Binary(data.into()),
                        // Pings are answered by tungstenite.
                        Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => continue,
                        Some(Ok(Frame::Close(frame))) => {
                            let (code, reason) = frame.map_or((1005, String::new()), |f| {
                                (f.code.into(), f.reason.as_str().to_owned())
                            });
                            let input = Input::Closed {
                                generation,
                                code,
                                reason,
                                was_clean: true,
                            };
                            break (vec![input], true);
                        }
                        Some(Err(err)) => break (lost(generation, Some(err)), false),
                        None => break (lost(generation, None), false),
                    };
                    return vec![Input::Message {
                        generation,
                        message,
                    }];
                };
                // The peer closed: finish its handshake in the background.
                if let Self::Open { ws, .. } = std::mem::replace(self, Self::None)
                    && closed
                {
                    tokio::spawn(finish(*ws, None));
                }
                inputs
            }
        }
    }
}

/// A connection that ended without a close frame: an error (if there is
/// one; it stays the cause, for the application to downcast), then a close
/// with 1006, as a browser reports it.
fn lost(generation: u64, error: Option<tungstenite::Error>) -> Vec<Input> {
    let mut inputs = Vec::with_capacity(2);
    if let Some(error) = error {
        inputs.push(Input::Error {
            generation,
            error: ErrorCause::new(error),
        });
    }
    inputs.push(Input::Closed {
        generation,
        code: ABNORMAL,
        reason: String::new(),
        was_clean: false,
    });
    inputs
}

/// A connection attempt that failed: a URL tungstenite cannot open (a
/// `wss` URL without the `native-rustls` feature) could not even be
/// created; anything else (refused, handshake, TLS) is a lost connection.
fn connect_failed(generation: u64, err: tungstenite::Error) -> Vec<Input> {
    match err {
        err @ tungstenite::Error::Url(_) => vec![Input::OpenFailed {
            generation,
            error: ErrorCause::new(err),
        }],
        err => lost(generation, Some(err)),
    }
}

/// Closes `ws` with `frame` (none: no code) and waits a little for the
/// peer's answer, so the server sees a clean close.
async fn finish(mut ws: Ws, frame: Option<CloseFrame>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(frame).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The token fetch in flight, at most one: starting another drops (cancels)
/// the earlier one, whose result the driver would ignore anyway.
#[derive(Default)]
struct Fetch(Option<Pin<Box<dyn Future<Output = Input> + Send>>>);

impl Fetch {
    fn start(&mut self, serial: u64, provider: Option<TokenProvider>) {
        // A provider that panics must not take the socket's task down: it
        // counts as a failed call.
        let call = provider.map(|provider| catch_unwind(AssertUnwindSafe(|| provider.call())));
        self.0 = Some(Box::pin(async move {
            let result = match call {
                Some(Ok(call)) => AssertUnwindSafe(call)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err("the token provider panicked".into())),
                Some(Err(_)) => Err("the token provider panicked".into()),
                None => Err("no token provider configured".into()),
            };
            Input::TokenFetched { serial, result }
        }));
    }

    /// The fetch's result (it is then done); pending while none runs.
    async fn next(&mut self) -> Input {
        poll_fn(|cx| {
            let Some(call) = self.0.as_mut() else {
                return Poll::Pending;
            };
            let input = std::task::ready!(call.as_mut().poll(cx));
            self.0 = None;
            Poll::Ready(input)
        })
        .await
    }
}

/// The driver's timers, at most one per kind, each one-shot.
#[derive(Default)]
struct Timers([Option<(TimerId, Pin<Box<Sleep>>)>; TimerKind::COUNT]);

impl Timers {
    fn start(&mut self, id: TimerId, delay_ms: u64) {
        let sleep = tokio::time::sleep(Duration::from_millis(delay_ms));
        self.0[id.kind as usize] = Some((id, Box::pin(sleep)));
    }

    /// The next timer to fire (it is disarmed); pending while none runs.
    async fn next(&mut self) -> TimerId {
        poll_fn(|cx| {
            for slot in &mut self.0 {
                if let Some((id, sleep)) = slot
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    let id = *id;
                    *slot = None;
                    return Poll::Ready(id);
                }
            }
            Poll::Pending
        })
        .await
    }
}
