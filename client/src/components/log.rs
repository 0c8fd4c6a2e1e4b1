//! The log, newest line first (also the channel panel's feed).

use std::collections::VecDeque;
use std::rc::Rc;

use yew::prelude::*;

use crate::console::Line;

/// Properties of [`Log`].
#[derive(Properties)]
pub struct LogProps {
    /// The lines, newest first.
    pub lines: Rc<VecDeque<Line>>,
    /// Its `data-testid`: the console's log, or the channel panel's feed.
    #[prop_or(AttrValue::Static("log"))]
    pub testid: AttrValue,
}

/// The same lines when they are the same `Rc`: the reducer adds lines with
/// `Rc::make_mut` on a log that the previous state still holds, so new
/// lines always come in a new `Rc`, and an unchanged log keeps its own.
/// Comparing the `Rc`s, not the up to 300 lines in them, spares the page a
/// deep comparison at every flush and the wasm its code.
impl PartialEq for LogProps {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.lines, &other.lines) && self.testid == other.testid
    }
}

fn clock(at_ms: f64) -> String {
    let date = js_sys::Date::new(&at_ms.into());
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds(),
        date.get_milliseconds()
    )
}

/// The last few hundred lines.
///
/// A line's class is set as the `className` property (`~className`): html!
/// makes a `class={…}` that is not a literal into yew's `Classes`, an
/// `IndexSet` whose hashing and table code the console need not carry for
/// one word (see the connection bar's state badge).
#[component]
pub fn Log(props: &LogProps) -> Html {
    html! {
        <ol data-testid={props.testid.clone()} class="log">
            { for props.lines.iter().map(|line| html! {
                <li ~className={line.kind.class()}>
                    <time>{ clock(line.at_ms) }</time>
                    <b>{ line.kind.label() }</b>
                    <span>{ &line.text }</span>
                </li>
            }) }
        </ol>
    }
}
