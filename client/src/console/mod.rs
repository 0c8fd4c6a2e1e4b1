//! The app state and its reducer: pure Rust, unit-tested natively.
//!
//! Socket events are not dispatched one by one: the `use_console` hook
//! collects them into a [`Batch`] (see [`collect`]) and dispatches it on a
//! timer, so a burst of 100,000 messages costs a handful of renders, not
//! 100,000. The same timer refreshes the clock the reconnection countdown
//! ([`countdown`]) is computed from.
//!
//! The channel panel's feed is a second list of [`Line`]s
//! ([`Console::channel_log`]), filled by [`Action::ChannelEvent`] as its
//! subscription's events come (a chat's pace: one action each), which also
//! keep its member set ([`Console::members`]) with the wrapper's own rule,
//! [`Presence::apply`].

mod channel;
mod collect;
mod countdown;
mod fixed;

use std::collections::VecDeque;
use std::rc::Rc;

use buffered_socket::{ChannelEvent, Presence, SendError, SendOutcome, Stats};
use yew::Reducible;

pub use channel::member_text;
pub use collect::{Batch, StateChange};
pub use countdown::{Retry, state_class, state_text};
pub use fixed::fixed;

/// Log lines kept; older ones fall off.
pub const LOG_LINES: usize = 300;
/// Seconds of history in the rate chart.
pub const CHART_SECONDS: usize = 60;

/// The kind of a log line, shown as its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The socket opened.
    Open,
    /// The socket closed.
    Close,
    /// The app sent or queued a message.
    Send,
    /// An answer to something we sent.
    Response,
    /// A push from the server.
    Push,
    /// Something went wrong.
    Error,
    /// Reliable mode: the session resumed on a new connection.
    Resume,
    /// Reliable mode: server messages were lost (a gap), or a resume
    /// failed; in the channel feed, publications lost.
    Gap,
    /// Channel feed: the server subscribed us.
    Subscribed,
    /// Channel feed: a publication.
    Publication,
    /// Channel feed: the channel's stream started over (a new epoch).
    Reset,
    /// Channel feed: the subscription ended.
    Unsubscribed,
    /// Channel feed: someone subscribed.
    Join,
    /// Channel feed: someone's subscription ended.
    Leave,
}

impl Kind {
    /// The prefix shown in the log.
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Close => "CLOSE",
            Self::Send => "SEND",
            Self::Response => "RESPONSE",
            Self::Push => "PUSH",
            Self::Error => "ERROR",
            Self::Resume => "RESUME",
            Self::Gap => "GAP",
            Self::Subscribed => "SUB",
            Self::Publication => "PUB",
            Self::Reset => "RESET",
            Self::Unsubscribed => "UNSUB",
            Self::Join => "JOIN",
            Self::Leave => "LEAVE",
        }
    }

    /// The log line's CSS class: the label in lower case. Written out
    /// rather than `label().to_lowercase()`, whose Unicode case tables
    /// weighed 12 KB in the wasm.
    pub fn class(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Close => "close",
            Self::Send => "send",
            Self::Response => "response",
            Self::Push => "push",
            Self::Error => "error",
            Self::Resume => "resume",
            Self::Gap => "gap",
            Self::Subscribed => "sub",
            Self::Publication => "pub",
            Self::Reset => "reset",
            Self::Unsubscribed => "unsub",
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Milliseconds since the Unix epoch.
    pub at_ms: f64,
    /// What kind.
    pub kind: Kind,
    /// The text.
    pub text: String,
}

impl Line {
    /// The line for echo number `id` with `body`, given what the socket did with it.
    pub fn echo(at_ms: f64, id: u64, body: &str, outcome: &Result<SendOutcome, SendError>) -> Self {
        let (kind, text) = match outcome {
            Ok(SendOutcome::Queued) => (Kind::Send, format!("#{id} {body} (queued)")),
            Ok(SendOutcome::Forwarded) => {
                (Kind::Send, format!("#{id} {body} (via the leader tab)"))
            }
            Ok(_) => (Kind::Send, format!("#{id} {body}")),
            Err(err) => (Kind::Error, format!("#{id} not sent: {err}")),
        };
        Self { at_ms, kind, text }
    }

    /// An error line.
    pub fn error(at_ms: f64, text: String) -> Self {
        Self {
            at_ms,
            kind: Kind::Error,
            text,
        }
    }
}

/// The wire id of this tab's echo number `n`: the tab id
/// ([`buffered_socket::Socket::tab_id`], below 2^31) in the high half, so
/// that tabs sharing one connection tell their replies apart.
pub fn echo_id(tab: u32, n: u64) -> u64 {
    (u64::from(tab) << 32) | (n & 0xffff_ffff)
}

/// The tab an echo id belongs to ([`echo_id`]).
pub fn echo_tab(id: u64) -> u32 {
    // The high half of a u64 fits a u32.
    u32::try_from(id >> 32).unwrap_or(u32::MAX)
}

/// Reads a burst size typed by the user.
///
/// # Errors
///
/// The error line to log when `text` is not a whole number from 0 to `u32::MAX`.
pub fn parse_burst_count(text: &str, now_ms: f64) -> Result<u32, Line> {
    text.trim()
        .parse()
        .map_err(|_| Line::error(now_ms, format!("\"{text}\" is not a burst size")))
}

/// A burst in progress or done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// How many pushes were asked for.
    pub requested: u32,
    /// Pushes that arrived since it was asked for (timed pushes included).
    pub received: u64,
    /// When it was asked for.
    pub started_ms: f64,
    /// Once `burst_done` arrived: its count and the messages per second
    /// from the request to it.
    pub done: Option<(u32, f64)>,
}

impl Burst {
    /// The progress bar's value, from 0 to 1.
    pub fn progress(&self) -> f64 {
        match self.done {
            Some(_) => 1.0,
            None => self.arrived() as f64 / f64::from(self.requested.max(1)),
        }
    }

    /// `"n / requested"` while it runs, `"count received, rate msg/s"` once done.
    pub fn status(&self) -> String {
        match self.done {
            Some((count, rate)) => format!("{count} received, {} msg/s", fixed(rate, 0)),
            None => format!("{} / {}", self.arrived(), self.requested),
        }
    }

    /// Pushes counted towards it: timed pushes may push the count past the request.
    fn arrived(&self) -> u64 {
        self.received.min(u64::from(self.requested))
    }
}

/// Actions of the reducer.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Events collected since the last flush, at time `now_ms`.
    Flush {
        /// The events (boxed: the largest variant by far).
        batch: Box<Batch>,
        /// The socket's counters now.
        stats: Stats,
        /// The time.
        now_ms: f64,
    },
    /// A line from the UI itself (SEND, ERROR).
    Log(Line),
    /// A burst was requested.
    BurstRequested {
        /// Its size.
        count: u32,
        /// When.
        now_ms: f64,
    },
    /// The longest main-thread task seen during the current burst.
    LongTask(f64),
    /// A line of the channel panel's feed (from the panel itself).
    Channel(Line),
    /// One of the subscription's events, at a time: a line of the feed,
    /// and the member set patched.
    ChannelEvent(f64, ChannelEvent),
    /// The channel now subscribed to (`None`: none); its member set starts
    /// empty, until the server's answer.
    Subscription(Option<String>),
}

/// The whole UI state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Console {
    /// Every message received.
    pub received: u64,
    /// Messages per second over the last full second.
    pub rate: u64,
    /// Counts per second, oldest first, at most [`CHART_SECONDS`].
    pub history: VecDeque<u64>,
    /// Messages counted in the current second.
    pub this_second: u64,
    /// The second `this_second` belongs to.
    pub second: i64,
    /// The socket's counters at the last flush.
    pub stats: Stats,
    /// The time of the last flush (ms since the epoch): the clock of the
    /// countdown, so that it is a pure function of the state.
    pub now_ms: f64,
    /// The next reconnection attempt, as the last state change scheduled it.
    pub retry: Option<Retry>,
    /// The log, newest first. Shared, so that a render that passes it to a
    /// component does not copy it.
    pub log: Rc<VecDeque<Line>>,
    /// The last burst.
    pub burst: Option<Burst>,
    /// Longest main-thread task during the last burst, in ms (long tasks are 50 ms or more).
    pub longest_task_ms: Option<f64>,
    /// Pushes received.
    pub pushes: u64,
    /// This tab's echo replies, checked against their order.
    pub echoes: EchoCheck,
    /// The pushes' seqs, checked against their order (from the first one
    /// this tab saw: a tab that joins a shared connection starts mid-way).
    pub push_order: EchoCheck,
    /// The channel panel's feed, newest first (shared, as the log).
    pub channel_log: Rc<VecDeque<Line>>,
    /// The channel the panel is subscribed to.
    pub channel: Option<String>,
    /// Its members while subscribed: the server's answer to the query that
    /// `Channel::follow_presence` makes after each (re)subscription,
    /// patched by the joins and leaves after it.
    pub members: Option<Presence>,
}

/// This tab's echo replies against the order they were sent in (each tab
/// numbers its echoes 1, 2...: a reply should be the next one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoCheck {
    /// Replies received.
    pub replies: u64,
    /// The highest number received.
    pub last: u64,
    /// Replies at or below `last` (received twice, or late).
    pub repeated: u64,
    /// Replies past `last + 1` (some skipped).
    pub skipped: u64,
}

impl EchoCheck {
    /// Checks `n`, the first one seen setting the start.
    pub fn follow(&mut self, n: u64) {
        if self.replies == 0 {
            self.last = n.saturating_sub(1);
        }
        self.reply(n);
    }

    /// Checks reply number `n`.
    pub fn reply(&mut self, n: u64) {
        self.replies += 1;
        if n <= self.last {
            self.repeated += 1;
            return;
        }
        if n > self.last + 1 {
            self.skipped += 1;
        }
        self.last = n;
    }
}

/// `300 in order`, or `299 (1 repeated, 0 skipped)`.
impl std::fmt::Display for EchoCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.repeated == 0 && self.skipped == 0 {
            write!(f, "{} in order", self.replies)
        } else {
            write!(
                f,
                "{} ({} repeated, {} skipped)",
                self.replies, self.repeated, self.skipped
            )
        }
    }
}

impl Console {
    fn add_lines(&mut self, lines: impl IntoIterator<Item = Line>) {
        add_lines(&mut self.log, lines);
    }

    fn count(&mut self, messages: u64, now_ms: f64) {
        let second = (now_ms / 1000.0).floor() as i64;
        if second != self.second {
            if self.second != 0 {
                // Close the finished second and any silent ones after it.
                let gap = (second - self.second).clamp(1, CHART_SECONDS as i64) as usize;
                self.history.push_back(self.this_second);
                for _ in 1..gap {
                    self.history.push_back(0);
                }
                while self.history.len() > CHART_SECONDS {
                    self.history.pop_front();
                }
                self.rate = if gap == 1 { self.this_second } else { 0 };
            }
            self.second = second;
            self.this_second = 0;
        }
        self.this_second += messages;
        self.received += messages;
    }
}

/// Puts `lines` newest first into `log`, which keeps [`LOG_LINES`]; a
/// `log` that gets no line is not copied.
fn add_lines(log: &mut Rc<VecDeque<Line>>, lines: impl IntoIterator<Item = Line>) {
    let mut lines = lines.into_iter().peekable();
    if lines.peek().is_none() {
        return;
    }
    let log = Rc::make_mut(log);
    for line in lines {
        log.push_front(line);
    }
    log.truncate(LOG_LINES);
}

impl Reducible for Console {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut next = (*self).clone();
        match action {
            Action::Flush {
                batch,
                stats,
                now_ms,
            } => {
                next.count(batch.messages, now_ms);
                next.pushes += batch.pushes;
                for n in &batch.own_echoes {
                    next.echoes.reply(*n);
                }
                for seq in &batch.push_seqs {
                    next.push_order.follow(*seq);
                }
                next.stats = stats;
                next.now_ms = now_ms;
                if let Some(change) = batch.state_change {
                    next.retry = Retry::scheduled_by(change);
                }
                next.add_lines(batch.lines);
                if let Some(burst) = &mut next.burst {
                    burst.received += batch.pushes;
                    if let Some(count) = batch.burst_done {
                        let seconds = ((now_ms - burst.started_ms) / 1000.0).max(0.001);
                        burst.done = Some((count, f64::from(count) / seconds));
                    }
                }
            }
            Action::Log(line) => next.add_lines([line]),
            Action::BurstRequested { count, now_ms } => {
                next.burst = Some(Burst {
                    requested: count,
                    received: 0,
                    started_ms: now_ms,
                    done: None,
                });
                next.longest_task_ms = None;
            }
            Action::LongTask(ms) => {
                next.longest_task_ms = Some(next.longest_task_ms.map_or(ms, |m: f64| m.max(ms)));
            }
            Action::Channel(line) => add_lines(&mut next.channel_log, [line]),
            Action::ChannelEvent(at_ms, event) => {
                if let Some(line) = Line::channel(at_ms, &event) {
                    add_lines(&mut next.channel_log, [line]);
                }
                if let Some(members) = &mut next.members {
                    members.apply(&event);
                }
            }
            Action::Subscription(channel) => {
                next.members = channel.is_some().then(Presence::default);
                next.channel = channel;
            }
        }
        Rc::new(next)
    }
}

#[cfg(test)]
mod tests {
    use buffered_socket::{Message, State};

    use super::*;

    fn line(kind: Kind, text: &str) -> Line {
        Line {
            at_ms: 0.0,
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn a_lines_class_is_its_label_in_lower_case() {
        for kind in [
            Kind::Open,
            Kind::Close,
            Kind::Send,
            Kind::Response,
            Kind::Push,
            Kind::Error,
            Kind::Resume,
            Kind::Gap,
            Kind::Subscribed,
            Kind::Publication,
            Kind::Reset,
            Kind::Unsubscribed,
            Kind::Join,
            Kind::Leave,
        ] {
            assert_eq!(kind.class(), kind.label().to_lowercase());
        }
    }

    fn flush_batch(console: Rc<Console>, batch: Batch, now_ms: f64) -> Rc<Console> {
        console.reduce(Action::Flush {
            batch: Box::new(batch),
            stats: Stats::default(),
            now_ms,
        })
    }

    fn flush(console: Rc<Console>, messages: u64, now_ms: f64) -> Rc<Console> {
        let batch = Batch {
            messages,
            ..Batch::default()
        };
        flush_batch(console, batch, now_ms)
    }

    #[test]
    fn the_log_is_newest_first_and_bounded() {
        let mut console = Rc::new(Console::default());
        for i in 0..LOG_LINES + 50 {
            console = console.reduce(Action::Log(line(Kind::Send, &i.to_string())));
        }
        assert_eq!(console.log.len(), LOG_LINES);
        assert_eq!(console.log[0].text, (LOG_LINES + 49).to_string());
    }

    #[test]
    fn a_flush_puts_its_lines_newest_first_after_the_older_ones() {
        let mut console = Rc::new(Console::default());
        console = console.reduce(Action::Log(line(Kind::Send, "old")));
        let mut batch = Batch::default();
        batch.line(line(Kind::Push, "first"));
        batch.line(line(Kind::Push, "second"));
        console = flush_batch(console, batch, 1_000.0);
        let texts: Vec<&str> = console.log.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["second", "first", "old"]);
    }

    #[test]
    fn a_flush_without_lines_keeps_the_same_log() {
        let mut console = Rc::new(Console::default());
        console = console.reduce(Action::Log(line(Kind::Send, "kept")));
        let before = console.log.clone();
        console = flush(console, 3, 1_000.0);
        assert!(Rc::ptr_eq(&before, &console.log), "the log was copied");
    }

    /// The log component compares its lines by `Rc` (`components::log`):
    /// new lines come in a new `Rc`, in both logs, since the previous state
    /// (which yew holds while it reduces) still holds the old one.
    #[test]
    fn new_lines_come_in_a_new_log() {
        let first = Rc::new(Console::default()).reduce(Action::Log(line(Kind::Send, "first")));
        let second = first
            .clone()
            .reduce(Action::Log(line(Kind::Send, "second")));
        assert!(
            !Rc::ptr_eq(&first.log, &second.log),
            "the log changed in place"
        );
        let third = second
            .clone()
            .reduce(Action::Channel(line(Kind::Publication, "pub")));
        assert!(!Rc::ptr_eq(&second.channel_log, &third.channel_log));
        assert!(
            Rc::ptr_eq(&second.log, &third.log),
            "no new lines, the same log"
        );
    }

    #[test]
    fn a_flush_stores_the_socket_stats_and_the_clock() {
        let stats = Stats {
            queue_len: 3,
            queue_capacity: 100,
            dropped: 2,
            reconnects: 5,
            acked: 7,
            unacked: 1,
            delivered: 9,
            gaps: 1,
            ..Stats::default()
        };
        let console = Rc::new(Console::default()).reduce(Action::Flush {
            batch: Box::default(),
            stats,
            now_ms: 42_000.0,
        });
        assert_eq!(console.stats, stats);
        assert_eq!(console.now_ms, 42_000.0);
    }

    #[test]
    fn a_flush_records_the_retry_its_state_change_scheduled() {
        let reconnecting = State::Reconnecting {
            attempt: 2,
            delay_ms: Some(3_000),
        };
        let mut batch = Batch::default();
        batch.collect_in_tab(
            &buffered_socket::Event::StateChanged(reconnecting),
            10_000.0,
            None,
        );
        let mut console = flush_batch(Rc::new(Console::default()), batch, 10_050.0);
        assert_eq!(
            console.retry,
            Some(Retry {
                state: reconnecting,
                due_ms: Some(13_000.0)
            })
        );
        // A flush without a state change keeps it; the clock moves on.
        console = flush(console, 0, 10_150.0);
        assert!(console.retry.is_some());
        assert_eq!(
            state_text(&reconnecting, console.retry.as_ref(), console.now_ms),
            "reconnecting (attempt 2, next try in 2.9 s)"
        );
        // The next state change clears it.
        let mut batch = Batch::default();
        batch.collect_in_tab(
            &buffered_socket::Event::StateChanged(State::Open),
            10_200.0,
            None,
        );
        batch.collect_in_tab(
            &buffered_socket::Event::Message(Message::Text("x".into())),
            10_200.0,
            None,
        );
        console = flush_batch(console, batch, 10_250.0);
        assert_eq!(console.retry, None);
    }

    #[test]
    fn the_rate_is_the_last_full_second_and_the_history_is_bounded() {
        let mut console = Rc::new(Console::default());
        console = flush(console, 10, 1_000_000.0);
        console = flush(console, 5, 1_000_500.0);
        assert_eq!(console.rate, 0);
        console = flush(console, 1, 1_001_100.0);
        assert_eq!(console.rate, 15);
        assert_eq!(console.received, 16);
        // Three silent seconds later the rate is 0 and the chart shows the gap.
        console = flush(console, 0, 1_004_100.0);
        assert_eq!(console.rate, 0);
        assert_eq!(console.history, [15, 1, 0, 0]);
        for s in 0..100 {
            console = flush(console, 1, 1_005_000.0 + f64::from(s) * 1000.0);
        }
        assert_eq!(console.history.len(), CHART_SECONDS);
    }

    #[test]
    fn a_burst_tracks_progress_and_rate() {
        let mut console = Rc::new(Console::default());
        console = console.reduce(Action::BurstRequested {
            count: 100,
            now_ms: 0.0,
        });
        console = console.reduce(Action::LongTask(60.0));
        console = console.reduce(Action::LongTask(55.0));
        assert_eq!(console.longest_task_ms, Some(60.0));
        console = flush_batch(
            console,
            Batch {
                messages: 41,
                pushes: 40,
                ..Batch::default()
            },
            200.0,
        );
        let burst = console.burst.unwrap();
        assert_eq!(burst.status(), "40 / 100");
        assert_eq!(burst.progress(), 0.4);
        console = flush_batch(
            console,
            Batch {
                messages: 61,
                pushes: 60,
                burst_done: Some(100),
                ..Batch::default()
            },
            500.0,
        );
        let burst = console.burst.unwrap();
        assert_eq!(burst.received, 100);
        assert_eq!(burst.done, Some((100, 200.0)));
        assert_eq!(burst.status(), "100 received, 200 msg/s");
        assert_eq!(burst.progress(), 1.0);
    }

    #[test]
    fn timed_pushes_do_not_take_a_burst_past_its_size() {
        let burst = Burst {
            requested: 10,
            received: 12,
            started_ms: 0.0,
            done: None,
        };
        assert_eq!(burst.status(), "10 / 10");
        assert_eq!(burst.progress(), 1.0);
    }

    #[test]
    fn a_new_burst_forgets_the_longest_task_of_the_last_one() {
        let mut console = Rc::new(Console::default());
        console = console.reduce(Action::LongTask(80.0));
        console = console.reduce(Action::BurstRequested {
            count: 5,
            now_ms: 1.0,
        });
        assert_eq!(console.longest_task_ms, None);
        assert_eq!(console.burst.unwrap().status(), "0 / 5");
    }

    #[test]
    fn the_channel_feed_is_its_own_list_and_the_log_is_left_alone() {
        let mut console = Rc::new(Console::default());
        console = console.reduce(Action::Log(line(Kind::Send, "echo")));
        let log = console.log.clone();
        console = console.reduce(Action::Subscription(Some("chat:lobby".into())));
        console = console.reduce(Action::Channel(line(Kind::Subscribed, "subscribed")));
        console = console.reduce(Action::Channel(line(Kind::Publication, "#1 {}")));
        let feed: Vec<&str> = console
            .channel_log
            .iter()
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(feed, ["#1 {}", "subscribed"], "newest first");
        assert!(Rc::ptr_eq(&log, &console.log), "the log was copied");
        assert_eq!(console.channel.as_deref(), Some("chat:lobby"));
        console = console.reduce(Action::Subscription(None));
        assert_eq!(console.channel, None);
        for i in 0..LOG_LINES + 5 {
            console = console.reduce(Action::Channel(line(Kind::Publication, &i.to_string())));
        }
        assert_eq!(console.channel_log.len(), LOG_LINES);
    }

    #[test]
    fn the_member_set_is_the_answer_patched_by_joins_and_leaves_while_subscribed() {
        use buffered_socket::Member;
        let member = |id: &str| Member {
            client_id: id.into(),
            user: None,
            client_name: None,
        };
        let event = |event| Action::ChannelEvent(1.0, event);
        let mut console = Rc::new(Console::default());
        console = console.reduce(event(ChannelEvent::Join(member("early"))));
        assert_eq!(console.members, None, "not subscribed: no set");
        console = console.reduce(Action::Subscription(Some("chat:lobby".into())));
        assert_eq!(console.members, Some(Presence::default()));
        let mut answer = Presence::default();
        answer.apply(&ChannelEvent::Join(member("a")));
        answer.apply(&ChannelEvent::Join(member("b")));
        console = console.reduce(event(ChannelEvent::Presence(answer.clone())));
        assert_eq!(console.members.as_ref(), Some(&answer));
        console = console.reduce(event(ChannelEvent::Join(member("c"))));
        console = console.reduce(event(ChannelEvent::Leave(member("a"))));
        let ids: Vec<&str> = console
            .members
            .as_ref()
            .unwrap()
            .members
            .iter()
            .map(|m| m.client_id.as_str())
            .collect();
        assert_eq!(ids, ["c", "b"]);
        let feed: Vec<(Kind, &str)> = console
            .channel_log
            .iter()
            .map(|l| (l.kind, l.text.as_str()))
            .collect();
        assert_eq!(
            feed,
            [(Kind::Leave, "a"), (Kind::Join, "c"), (Kind::Join, "early")],
            "the answer is no line"
        );
        console = console.reduce(Action::Subscription(None));
        assert_eq!(console.members, None);
    }

    #[test]
    fn the_echo_check_counts_repeats_and_skips() {
        let mut check = EchoCheck::default();
        for n in [1, 2, 3] {
            check.reply(n);
        }
        assert_eq!(check.to_string(), "3 in order");
        check.reply(3);
        check.reply(5);
        assert_eq!(check.to_string(), "5 (1 repeated, 1 skipped)");
        let mut pushes = EchoCheck::default();
        for seq in [40, 41, 42] {
            pushes.follow(seq);
        }
        assert_eq!(pushes.to_string(), "3 in order");
    }

    #[test]
    fn echo_ids_carry_their_tab() {
        let id = echo_id(0x7fff_ffff, 3);
        assert_eq!((echo_tab(id), id & 0xffff_ffff), (0x7fff_ffff, 3));
        assert!(id < 1 << 63);
        let mut batch = Batch::default();
        let reply = |id: u64| {
            buffered_socket::Event::Message(Message::Text(format!(
                r#"{{"type":"echo","id":{id},"body":"b{id}"}}"#
            )))
        };
        batch.collect_in_tab(&reply(echo_id(5, 1)), 1.0, Some(5));
        batch.collect_in_tab(&reply(echo_id(6, 1)), 2.0, Some(5));
        assert_eq!(batch.messages, 2, "every reply counts");
        let lines: Vec<_> = batch
            .lines
            .iter()
            .map(|l| (l.kind, l.text.clone()))
            .collect();
        assert_eq!(lines.len(), 1, "only this tab's echo is logged: {lines:?}");
        assert!(lines[0].1.contains(&echo_id(5, 1).to_string()));
    }

    #[test]
    fn echo_lines_say_sent_queued_or_why_not() {
        let sent = Line::echo(1.0, 7, "hi", &Ok(SendOutcome::Sent));
        assert_eq!((sent.kind, sent.text.as_str()), (Kind::Send, "#7 hi"));
        let forwarded = Line::echo(1.0, 7, "hi", &Ok(SendOutcome::Forwarded));
        assert_eq!(forwarded.text, "#7 hi (via the leader tab)");
        let queued = Line::echo(1.0, 8, "hi", &Ok(SendOutcome::Queued));
        assert_eq!(
            (queued.kind, queued.text.as_str()),
            (Kind::Send, "#8 hi (queued)")
        );
        let full = Line::echo(
            1.0,
            9,
            "hi",
            &Err(SendError::QueueFull(Message::Text("hi".into()))),
        );
        assert_eq!(
            (full.kind, full.text.as_str()),
            (Kind::Error, "#9 not sent: the send queue is full")
        );
    }

    #[test]
    fn a_burst_size_is_a_whole_number() {
        assert_eq!(parse_burst_count(" 100000 ", 0.0), Ok(100_000));
        for bad in ["", "ten", "-1", "1.5", "99999999999"] {
            let line = parse_burst_count(bad, 5.0).unwrap_err();
            assert_eq!(line.kind, Kind::Error);
            assert_eq!(line.text, format!("\"{bad}\" is not a burst size"));
        }
    }
}
