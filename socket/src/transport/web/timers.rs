//! Browser timers as owned values: `setTimeout` and `setInterval` whose
//! callback `Closure` lives in the value and which are cleared on drop, so
//! a timer never outlives its owner and no closure is leaked.
//!
//! The driver's timers ([`TimerKind`]) are one-shot: [`Timers`] holds at
//! most one [`Timeout`] per kind, replaced by a start and dropped by a stop.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::driver::TimerKind;

/// A `setTimeout`, cleared on drop (harmless once it fired).
pub(crate) struct Timeout {
    id: i32,
    _callback: Closure<dyn FnMut()>,
}

impl Timeout {
    /// Calls `f` once after `ms`; `None` without a window or if the browser
    /// refused the timer.
    pub(crate) fn once(ms: u64, f: impl FnOnce() + 'static) -> Option<Self> {
        let callback = Closure::once(f);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = web_sys::window()?
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok()?;
        Some(Self {
            id,
            _callback: callback,
        })
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_timeout_with_handle(self.id);
        }
    }
}

/// A `setInterval`, cleared on drop (the Yew layer's stats refresh, the
/// tabs' heartbeat).
pub(crate) struct Interval {
    id: i32,
    _callback: Closure<dyn FnMut()>,
}

impl Interval {
    /// Calls `f` every `ms`; `None` without a window or if the browser
    /// refused the timer.
    pub(crate) fn every(ms: u32, f: impl FnMut() + 'static) -> Option<Self> {
        let callback = Closure::<dyn FnMut()>::new(f);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let id = web_sys::window()?
            .set_interval_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok()?;
        Some(Self {
            id,
            _callback: callback,
        })
    }
}

impl Drop for Interval {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_interval_with_handle(self.id);
        }
    }
}

/// The driver's running timers, one slot per [`TimerKind`].
#[derive(Default)]
pub(crate) struct Timers {
    slots: [Option<Timeout>; TimerKind::COUNT],
}

impl Timers {
    /// Starts timer `kind` to call `fire` after `delay_ms`, replacing (and
    /// clearing) a running one.
    pub(crate) fn start(&mut self, kind: TimerKind, delay_ms: u64, fire: impl FnOnce() + 'static) {
        // Dropping the previous one clears it: its fire never comes.
        self.slots[slot(kind)] = Timeout::once(delay_ms, fire);
    }

    /// Stops timer `kind`, if running.
    pub(crate) fn stop(&mut self, kind: TimerKind) {
        self.slots[slot(kind)] = None;
    }
}

fn slot(kind: TimerKind) -> usize {
    match kind {
        TimerKind::Retry => 0,
        TimerKind::ConnectTimeout => 1,
        TimerKind::Heartbeat => 2,
        TimerKind::Ack => 3,
        TimerKind::Refresh => 4,
    }
}
