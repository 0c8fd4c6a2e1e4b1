//! The message box, the queue figure and capacity, and the auto-sender.

use yew::prelude::*;

use super::{Check, Field, Listen, button, checkbox, field, input_value};
use crate::hooks::use_interval;

/// What the original page sent every 3 s.
const AUTO_TEXT: &str = "web browser setInterval";

/// The auto-sender's label, written out: a constant needs no `format!` at
/// each render (the test below checks it against [`AUTO_TEXT`]).
const AUTO_LABEL: &str = "send \"web browser setInterval\" every 3 s";

/// The message field.
const MESSAGE: Field = Field {
    placeholder: Some("type and press Enter"),
    ..Field::text("Message", "message")
};

/// The series length field.
const SERIES: Field = Field {
    title: Some(
        "echoes `series 1`, `series 2`... one every 10 ms, waiting while the queue is full",
    ),
    ..Field::number("series", "series-count", "1")
};

/// The queue capacity field.
const CAPACITY: Field = Field::number("capacity", "capacity", "0");

/// The auto-sender's checkbox (a click changes it).
const AUTO: Check = Check {
    label: AUTO_LABEL,
    testid: "auto-send",
    class: "toggle",
    title: None,
};

/// Properties of [`Sender`].
#[derive(Properties, PartialEq)]
pub struct SenderProps {
    /// Messages waiting in the queue.
    pub queue_len: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Send a message.
    pub on_send: Callback<String>,
    /// Change the queue's capacity.
    pub on_capacity: Callback<usize>,
    /// Send a numbered series of echoes of this length.
    pub on_series: Callback<u32>,
}

/// The sending controls.
#[component]
pub fn Sender(props: &SenderProps) -> Html {
    let draft = use_state(String::new);
    let auto = use_state(|| false);

    let send = {
        let (on_send, draft) = (props.on_send.clone(), draft.clone());
        Callback::from(move |()| {
            if !draft.is_empty() {
                on_send.emit((*draft).clone());
            }
        })
    };
    {
        let on_send = props.on_send.clone();
        use_interval(
            move || on_send.emit(AUTO_TEXT.to_owned()),
            if *auto { 3000 } else { 0 },
        );
    }
    let onkeydown = {
        let send = send.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Enter" {
                send.emit(());
            }
        })
    };
    let oninput = {
        let draft = draft.clone();
        Callback::from(move |e: InputEvent| draft.set(input_value(&e)))
    };
    let on_capacity = {
        let on_capacity = props.on_capacity.clone();
        Callback::from(move |e: Event| {
            // Read as a u32 (the parse the counts already have; on wasm32 a
            // usize is one) rather than a parser of its own for usize.
            let capacity = input_value(&e).trim().parse::<u32>().ok();
            if let Some(capacity) = capacity.and_then(|c| usize::try_from(c).ok()) {
                on_capacity.emit(capacity);
            }
        })
    };
    let toggle = {
        let auto = auto.clone();
        Callback::from(move |on: bool| auto.set(on))
    };
    // The last valid count as its text: a `String` state like the drafts',
    // since each distinct state type costs about 1 KB of yew code.
    let series_count = use_state(|| 300u32.to_string());
    let on_series_count = {
        let series_count = series_count.clone();
        Callback::from(move |e: InputEvent| {
            if let Ok(count) = input_value(&e).trim().parse::<u32>() {
                series_count.set(count.to_string());
            }
        })
    };
    let series = {
        let on_series = props.on_series.clone();
        let count = series_count.parse::<u32>().unwrap_or(300);
        Callback::from(move |()| on_series.emit(count))
    };
    let (queue_len, queue_capacity) = (props.queue_len, props.queue_capacity);
    html! {
        <section class="panel sender">
            { field(&MESSAGE, (*draft).clone(),
                Listen { input: Some(oninput), keydown: Some(onkeydown), ..Listen::default() }) }
            { button("send", "Send", &send) }
            { field(&SERIES, (*series_count).clone(), Listen { input: Some(on_series_count), ..Listen::default() }) }
            { button("series", "Send series", &series) }
            <div class="queue">
                <span>{ "queue " }<b data-testid="queue">{ format!("{queue_len}/{queue_capacity}") }</b></span>
                { field(&CAPACITY, queue_capacity.to_string(), Listen { change: Some(on_capacity), ..Listen::default() }) }
                { checkbox(&AUTO, *auto, &toggle) }
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_label_names_the_auto_text() {
        assert_eq!(AUTO_LABEL, format!("send \"{AUTO_TEXT}\" every 3 s"));
    }
}
