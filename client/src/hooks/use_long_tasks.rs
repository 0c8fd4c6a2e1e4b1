//! Reports main-thread long tasks (50 ms or more) with a `PerformanceObserver`.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{PerformanceObserver, PerformanceObserverEntryList, PerformanceObserverInit};
use yew::prelude::*;

/// Calls `on_task` with the duration in ms of every long task while mounted.
/// Browsers without the `longtask` entry type simply report nothing.
#[hook]
pub fn use_long_tasks(on_task: Callback<f64>) {
    use_effect_with((), move |()| {
        let closure = Closure::<dyn FnMut(PerformanceObserverEntryList)>::new(
            move |list: PerformanceObserverEntryList| {
                for entry in list.get_entries().iter() {
                    if let Ok(entry) = entry.dyn_into::<web_sys::PerformanceEntry>() {
                        on_task.emit(entry.duration());
                    }
                }
            },
        );
        let observer = PerformanceObserver::new(closure.as_ref().unchecked_ref()).ok();
        if let Some(observer) = &observer {
            let init =
                PerformanceObserverInit::new(&js_sys::Array::of1(&JsValue::from_str("longtask")));
            observer.observe(&init);
        }
        move || {
            if let Some(observer) = observer {
                observer.disconnect();
            }
            drop(closure);
        }
    });
}
