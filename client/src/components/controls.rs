//! The page's repeated controls (its buttons, its labelled fields and its
//! checkboxes), each made by one function from a static description.
//!
//! Each `html!` element is built inline where it is written: its tag, its
//! attributes, its listeners and its children are stored field by field
//! into a `VTag` at the call site, a few hundred bytes of wasm per element.
//! The console has eleven fields, eight buttons and three checkboxes of the
//! same few shapes, so each shape is written once here and the panels
//! describe theirs as data ([`Field`], [`Check`]) and call it.

use yew::prelude::*;

/// A labelled `<input>` for text or a number.
pub struct Field {
    /// The label's text, before the input.
    pub label: &'static str,
    /// The input's `data-testid`.
    pub testid: &'static str,
    /// The input's `type`: `text`, `number` or `password`.
    pub kind: &'static str,
    /// The label's class (empty: none), set as the `className` property:
    /// html! makes a `class={…}` that is not a literal into yew's
    /// `Classes` (see the connection bar's state badge).
    pub class: &'static str,
    /// The label's `title`.
    pub title: Option<&'static str>,
    /// The input's `placeholder`.
    pub placeholder: Option<&'static str>,
    /// The input's `min`, for a number.
    pub min: Option<&'static str>,
    /// The input's `autocomplete`.
    pub autocomplete: Option<&'static str>,
}

impl Field {
    /// A text field in a label of class `grow`, with nothing else set.
    pub const fn text(label: &'static str, testid: &'static str) -> Self {
        Self {
            label,
            testid,
            kind: "text",
            class: "grow",
            title: None,
            placeholder: None,
            min: None,
            autocomplete: None,
        }
    }

    /// A number field of at least `min`, in a label of no class.
    pub const fn number(label: &'static str, testid: &'static str, min: &'static str) -> Self {
        Self {
            label,
            testid,
            kind: "number",
            class: "",
            title: None,
            placeholder: None,
            min: Some(min),
            autocomplete: None,
        }
    }
}

/// The events a [`field`] listens to (none by default).
#[derive(Default)]
pub struct Listen {
    /// On each input.
    pub input: Option<Callback<InputEvent>>,
    /// On a change (the value committed).
    pub change: Option<Callback<Event>>,
    /// On a key pressed.
    pub keydown: Option<Callback<KeyboardEvent>>,
}

/// The field `spec` showing `value`.
pub fn field(spec: &Field, value: String, listen: Listen) -> Html {
    let Listen {
        input,
        change,
        keydown,
    } = listen;
    html! {
        <label ~className={spec.class} title={spec.title}>{ spec.label }
            <input data-testid={spec.testid} type={spec.kind} min={spec.min}
                placeholder={spec.placeholder} autocomplete={spec.autocomplete} {value}
                oninput={input} onchange={change} onkeydown={keydown} />
        </label>
    }
}

/// A labelled checkbox, its text after the box.
pub struct Check {
    /// The text after the box.
    pub label: &'static str,
    /// The input's `data-testid`.
    pub testid: &'static str,
    /// The label's class, set as the `className` property (see [`Field::class`]).
    pub class: &'static str,
    /// The label's `title`.
    pub title: Option<&'static str>,
}

/// The checkbox `spec`, checked or not; `on_toggle` gets the other state
/// on each change (a click).
pub fn checkbox(spec: &Check, checked: bool, on_toggle: &Callback<bool>) -> Html {
    let onchange = on_toggle.reform(move |_: Event| !checked);
    html! {
        <label ~className={spec.class} title={spec.title}>
            <input data-testid={spec.testid} type="checkbox" {checked} {onchange} />
            { spec.label }
        </label>
    }
}

/// A button: its `data-testid`, its text, what a click does (the callbacks
/// take no event, so that the page's commands are passed as they are).
pub fn button(testid: &'static str, label: &'static str, onclick: &Callback<()>) -> Html {
    let onclick = onclick.reform(|_: MouseEvent| ());
    html! { <button data-testid={testid} {onclick}>{ label }</button> }
}
