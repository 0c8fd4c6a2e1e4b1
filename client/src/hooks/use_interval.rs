//! `setInterval` owned by a component: cleared when it unmounts or `ms` changes.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use yew::prelude::*;

type Tick = Rc<dyn Fn()>;

/// Calls the latest `callback` every `ms` milliseconds; `ms == 0` stops it.
#[hook]
pub fn use_interval<F: Fn() + 'static>(callback: F, ms: u32) {
    let latest: Rc<RefCell<Option<Tick>>> = use_mut_ref(|| None);
    *latest.borrow_mut() = Some(Rc::new(callback));
    use_effect_with(ms, move |&ms| {
        let window = web_sys::window();
        let closure = Closure::<dyn FnMut()>::new(move || {
            let current = latest.borrow().clone();
            if let Some(callback) = current {
                callback();
            }
        });
        let id = (ms > 0)
            .then(|| {
                window
                    .as_ref()?
                    .set_interval_with_callback_and_timeout_and_arguments_0(
                        closure.as_ref().unchecked_ref(),
                        i32::try_from(ms).unwrap_or(i32::MAX),
                    )
                    .ok()
            })
            .flatten();
        move || {
            if let (Some(window), Some(id)) = (window, id) {
                window.clear_interval_with_handle(id);
            }
            drop(closure);
        }
    });
}
