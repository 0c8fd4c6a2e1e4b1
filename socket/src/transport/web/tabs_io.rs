//! The browser side of one connection for all tabs: the Web Lock, the
//! `BroadcastChannel`, the heartbeat interval and the `pagehide` listener,
//! as owned values. Dropping [`TabsIo`] closes the channel, removes the
//! listeners, clears the interval, lets go of the lock and withdraws a
//! request still in line: nothing outlives it.
//!
//! Web Locks are called through `js-sys` (`Reflect`), not web-sys's
//! bindings: those sit behind `--cfg=web_sys_unstable_apis`, which would
//! have to reach every build of the crate (trunk, wasm-pack, clippy, and
//! every application that depends on it: a `.cargo/config.toml` only
//! applies inside this workspace, and a `RUSTFLAGS` in the environment
//! replaces it). Four property reads and one call are a small price for a
//! crate that builds anywhere as it is.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{AbortController, BroadcastChannel, MessageEvent, Window};

use super::timers::Interval;
use crate::tabs::{Envelope, HEARTBEAT_MS, Input};

/// How to ask for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// `ifAvailable`: granted now, or `null` (busy).
    IfFree,
    /// Wait in line (withdrawn with an `AbortSignal`).
    InLine,
    /// `steal`: take it from a holder that stopped answering.
    Steal,
}

/// A lock callback: called with the lock (or `null`), returns what holds it.
type LockCallback = Closure<dyn FnMut(JsValue) -> JsValue>;

/// The channel, the lock, the interval and the `pagehide` listener.
pub(super) struct TabsIo {
    name: String,
    locks: JsValue,
    request: Function,
    channel: BroadcastChannel,
    on_message: Closure<dyn FnMut(MessageEvent)>,
    window: Window,
    on_pagehide: Closure<dyn FnMut()>,
    _heartbeat: Interval,
    /// Resolving it lets go of the held lock.
    held: Rc<RefCell<Option<Function>>>,
    /// Aborting it withdraws the request in line.
    waiting: Option<AbortController>,
    /// The callback of the request in line (the others are one-shots).
    in_line: Option<LockCallback>,
    report: Rc<dyn Fn(Input)>,
}

impl TabsIo {
    /// Opens the channel `name` and installs the listeners; `None` when the
    /// browser lacks Web Locks (or the page is not a secure context) or
    /// `BroadcastChannel`. `report` gets the channel's envelopes, each
    /// heartbeat tick and each lock answer; `on_pagehide` runs when the page
    /// goes away.
    pub(super) fn install(
        name: &str,
        report: Rc<dyn Fn(Input)>,
        on_pagehide: impl FnMut() + 'static,
    ) -> Option<Self> {
        let window = web_sys::window()?;
        let locks = Reflect::get(&window.navigator(), &"locks".into()).ok()?;
        if locks.is_undefined() || locks.is_null() {
            return None;
        }
        let request = Reflect::get(&locks, &"request".into())
            .ok()?
            .dyn_into::<Function>()
            .ok()?;
        let channel = BroadcastChannel::new(name).ok()?;
        let on_message = {
            let report = report.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                // Parsed by the coordinator, which tells another wire
                // version from noise; every tab posts strings.
                if let Some(text) = event.data().as_string() {
                    report(Input::Posted(text));
                }
            })
        };
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let heartbeat = {
            let report = report.clone();
            // HEARTBEAT_MS is 1000: it fits.
            Interval::every(HEARTBEAT_MS as u32, move || report(Input::Tick))?
        };
        let on_pagehide = Closure::<dyn FnMut()>::new(on_pagehide);
        // Adding a listener only fails for a non-function callback: ours is one.
        let _ = window
            .add_event_listener_with_callback("pagehide", on_pagehide.as_ref().unchecked_ref());
        Some(Self {
            name: name.to_owned(),
            locks,
            request,
            channel,
            on_message,
            window,
            on_pagehide,
            _heartbeat: heartbeat,
            held: Rc::default(),
            waiting: None,
            in_line: None,
            report,
        })
    }

    /// Posts `envelope` to the other tabs.
    pub(super) fn post(&self, envelope: &Envelope) {
        // Fails only once the channel is closed (after drop): nothing to do.
        let _ = self
            .channel
            .post_message(&JsValue::from_str(&envelope.to_json()));
    }

    /// `navigator.locks.request(name, options, callback)`: a grant reports
    /// [`Input::LockAcquired`] and holds the lock until [`TabsIo::release`]
    /// or drop; a `null` lock (busy, `ifAvailable`) reports
    /// [`Input::LockBusy`].
    pub(super) fn ask(&mut self, ask: Ask) {
        let options = Object::new();
        let flag = |key: &str| {
            // Setting a property on a fresh plain object cannot fail.
            let _ = Reflect::set(&options, &key.into(), &JsValue::TRUE);
        };
        match ask {
            Ask::IfFree => flag("ifAvailable"),
            Ask::Steal => flag("steal"),
            Ask::InLine => {
                if let Ok(controller) = AbortController::new() {
                    let _ = Reflect::set(&options, &"signal".into(), &controller.signal());
                    if let Some(old) = self.waiting.replace(controller) {
                        old.abort();
                    }
                }
            }
        }
        let held = self.held.clone();
        let report = self.report.clone();
        let answer = move |lock: JsValue| -> JsValue {
            if lock.is_null() || lock.is_undefined() {
                report(Input::LockBusy);
                return JsValue::UNDEFINED;
            }
            // The lock is held until this promise settles: keep its resolve.
            let mut resolve = None;
            let holding = Promise::new(&mut |yes, _no| resolve = Some(yes));
            if let Some(old) = held.borrow_mut().replace(resolve.unwrap_or_default()) {
                // A stale hold (a steal over our own): let it go.
                let _ = old.call0(&JsValue::UNDEFINED);
            }
            report(Input::LockAcquired);
            holding.into()
        };
        // `ifAvailable` and `steal` are answered at once, whatever happens to
        // us: a one-shot the browser frees after the call. One in line may
        // never be answered (withdrawn): owned, and dropped with us, after
        // the withdrawal.
        let callback: JsValue = if ask == Ask::InLine {
            let owned = LockCallback::once(answer);
            let js = owned.as_ref().clone();
            self.in_line = Some(owned);
            js
        } else {
            Closure::once_into_js(answer)
        };
        let asked = self.request.call3(
            &self.locks,
            &JsValue::from_str(&self.name),
            &options,
            &callback,
        );
        match asked.map(JsCast::dyn_into::<Promise>) {
            // The request's promise rejects when it is withdrawn or the lock
            // stolen from us: expected, not an error of the page.
            Ok(Ok(promise)) => wasm_bindgen_futures::spawn_local(async move {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            }),
            _ => (self.report)(Input::Unsupported),
        }
    }

    /// Lets go of the lock, or withdraws the request in line.
    pub(super) fn release(&mut self) {
        if let Some(controller) = self.waiting.take() {
            controller.abort();
        }
        if let Some(resolve) = self.held.borrow_mut().take() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    }
}

impl Drop for TabsIo {
    fn drop(&mut self) {
        self.release();
        self.channel.set_onmessage(None);
        self.channel.close();
        let _ = self.window.remove_event_listener_with_callback(
            "pagehide",
            self.on_pagehide.as_ref().unchecked_ref(),
        );
        // `on_message` and the callbacks go with `self` (after the request
        // in line was withdrawn); the interval clears itself.
        let _ = &self.on_message;
    }
}
