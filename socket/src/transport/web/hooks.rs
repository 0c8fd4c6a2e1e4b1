//! The window's `online`, `offline` and `visibilitychange` listeners, as
//! driver inputs. Owned: removed from the window on drop.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{VisibilityState, Window};

use crate::driver::Input;

/// The three listeners; each reports its input through `report`.
pub(crate) struct WindowHooks {
    window: Window,
    on_online: Closure<dyn FnMut()>,
    on_offline: Closure<dyn FnMut()>,
    on_visible: Closure<dyn FnMut()>,
}

impl WindowHooks {
    /// Installs the listeners; `None` outside a browser window.
    pub(crate) fn install(report: impl Fn(Input) + Clone + 'static) -> Option<Self> {
        let window = web_sys::window()?;
        let hook = |input: fn() -> Option<Input>| {
            let report = report.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let Some(input) = input() {
                    report(input);
                }
            })
        };
        let on_online = hook(|| Some(Input::Online));
        let on_offline = hook(|| Some(Input::Offline));
        // Only becoming visible matters: a hidden tab's retries keep their schedule.
        let on_visible = hook(|| {
            let visible = web_sys::window()
                .and_then(|w| w.document())
                .is_some_and(|d| d.visibility_state() == VisibilityState::Visible);
            visible.then_some(Input::Visible)
        });
        // Adding a listener only fails for a non-function callback: ours are functions.
        let _ =
            window.add_event_listener_with_callback("online", on_online.as_ref().unchecked_ref());
        let _ =
            window.add_event_listener_with_callback("offline", on_offline.as_ref().unchecked_ref());
        if let Some(document) = window.document() {
            let _ = document.add_event_listener_with_callback(
                "visibilitychange",
                on_visible.as_ref().unchecked_ref(),
            );
        }
        Some(Self {
            window,
            on_online,
            on_offline,
            on_visible,
        })
    }
}

impl Drop for WindowHooks {
    fn drop(&mut self) {
        let w = &self.window;
        let _ = w
            .remove_event_listener_with_callback("online", self.on_online.as_ref().unchecked_ref());
        let _ = w.remove_event_listener_with_callback(
            "offline",
            self.on_offline.as_ref().unchecked_ref(),
        );
        if let Some(document) = w.document() {
            let _ = document.remove_event_listener_with_callback(
                "visibilitychange",
                self.on_visible.as_ref().unchecked_ref(),
            );
        }
    }
}
