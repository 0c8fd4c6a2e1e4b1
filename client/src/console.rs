//! The app state and its reducer: pure Rust, unit-tested natively.
//!
//! Socket events are not dispatched one by one: the `use_console` hook
//! collects them into a [`Batch`] and dispatches it on a timer, so a burst of
//! 100,000 messages costs a handful of renders, not 100,000.

use std::collections::VecDeque;
use std::rc::Rc;

use yew::Reducible;

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
    /// Reliable mode: server messages were lost (a gap), or a resume failed.
    Gap,
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

/// What happened since the last flush, collected outside the reducer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// Messages received.
    pub messages: u64,
    /// Of which pushes.
    pub pushes: u64,
    /// A `burst_done` arrived (its count).
    pub burst_done: Option<u32>,
    /// The newest log lines (at most [`LOG_LINES`]), oldest first.
    pub lines: VecDeque<Line>,
}

impl Batch {
    /// Adds a line, keeping only the newest [`LOG_LINES`].
    pub fn line(&mut self, line: Line) {
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// Figures read from the socket on every flush.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SocketFigures {
    /// Queued messages.
    pub queue_len: usize,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Dropped from the queue.
    pub dropped: u64,
    /// Successful reconnections.
    pub reconnects: u64,
    /// Reliable mode: sent messages not yet acknowledged.
    pub unacked: usize,
    /// Reliable mode: sent messages the server acknowledged.
    pub acked: u64,
    /// Reliable mode: server messages delivered (each once).
    pub delivered: u64,
    /// Reliable mode: gaps reported.
    pub gaps: u64,
}

/// Actions of the reducer.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Events collected since the last flush, at time `now_ms`.
    Flush {
        /// The events.
        batch: Batch,
        /// The socket's figures now.
        figures: SocketFigures,
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
    /// The socket's figures at the last flush.
    pub figures: SocketFigures,
    /// The log, newest first.
    pub log: VecDeque<Line>,
    /// The last burst.
    pub burst: Option<Burst>,
    /// Longest main-thread task during the last burst, in ms (long tasks are 50 ms or more).
    pub longest_task_ms: Option<f64>,
}

impl Console {
    fn add_line(&mut self, line: Line) {
        self.log.push_front(line);
        self.log.truncate(LOG_LINES);
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

impl Reducible for Console {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut next = (*self).clone();
        match action {
            Action::Flush {
                batch,
                figures,
                now_ms,
            } => {
                next.count(batch.messages, now_ms);
                next.figures = figures;
                for line in batch.lines {
                    next.add_line(line);
                }
                if let Some(burst) = &mut next.burst {
                    burst.received += batch.pushes;
                    if let Some(count) = batch.burst_done {
                        let seconds = ((now_ms - burst.started_ms) / 1000.0).max(0.001);
                        burst.done = Some((count, f64::from(count) / seconds));
                    }
                }
            }
            Action::Log(line) => next.add_line(line),
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
        }
        Rc::new(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: Kind, text: &str) -> Line {
        Line {
            at_ms: 0.0,
            kind,
            text: text.into(),
        }
    }

    fn flush(console: Rc<Console>, messages: u64, now_ms: f64) -> Rc<Console> {
        console.reduce(Action::Flush {
            batch: Batch {
                messages,
                ..Batch::default()
            },
            figures: SocketFigures::default(),
            now_ms,
        })
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
    fn a_batch_keeps_only_the_newest_lines() {
        let mut batch = Batch::default();
        for i in 0..LOG_LINES + 10 {
            batch.line(line(Kind::Push, &i.to_string()));
        }
        assert_eq!(batch.lines.len(), LOG_LINES);
        assert_eq!(batch.lines[0].text, "10");
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
        console = console.reduce(Action::Flush {
            batch: Batch {
                messages: 101,
                pushes: 100,
                burst_done: Some(100),
                ..Batch::default()
            },
            figures: SocketFigures::default(),
            now_ms: 500.0,
        });
        let burst = console.burst.unwrap();
        assert_eq!(burst.received, 100);
        assert_eq!(burst.done, Some((100, 200.0)));
    }
}
