//! What the burst panel's and the channel panel's fields hold between
//! renders: the burst size, the channel's name and the text to publish.
//!
//! The page holds them and hands each panel its own, so that these panels
//! are view functions and not components: each component type costs about
//! 1 KB of yew's generic code in the wasm (its create runner, props
//! comparison, mounting), and these are all `String` states, a type the
//! page has anyway. The page renders the fields again at every flush
//! (100 ms), so each field writes its state on every input and on every
//! change (`components::text_field`: a change that comes with no input
//! event, a WebDriver clear say, would otherwise be undone). The connection
//! bar and the sender stay components: the URL field starts filled and is
//! often replaced, and the sender's capacity field is written on change
//! only and its series field keeps the last valid count, so a render while
//! they are typed in would put the old value back.

use yew::prelude::*;

/// The panels' fields; see the [module docs](self).
pub struct Drafts {
    /// The burst size field.
    pub burst_count: UseStateHandle<String>,
    /// The channel name field.
    pub channel: UseStateHandle<String>,
    /// The publish field.
    pub channel_text: UseStateHandle<String>,
}

/// The channel the name field starts with: `cargo xtask run`'s development
/// config lets anyone subscribe, publish and see presence in `chat:`.
const DEFAULT_CHANNEL: &str = "chat:lobby";

/// The fields.
#[hook]
pub fn use_drafts() -> Drafts {
    Drafts {
        burst_count: use_state(|| "100000".to_owned()),
        channel: use_state(|| DEFAULT_CHANNEL.to_owned()),
        channel_text: use_state(String::new),
    }
}
