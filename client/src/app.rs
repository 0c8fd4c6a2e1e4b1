//! The root component and the page.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use buffered_socket::yew::{SocketProvider, use_socket};
use buffered_socket::{Config, Heartbeat};
use yew::prelude::*;

use crate::components::{
    BurstPanel, ChannelPanel, ConnectionBar, Counts, Log, Sender, burst_panel, channel_panel,
    counters, rate_chart,
};
use crate::console::state_text;
use crate::hooks::{use_channel, use_commands, use_console, use_drafts};

/// `ws(s)://<this host>/ws`.
fn default_url() -> String {
    let location = web_sys::window().map(|w| w.location());
    let host = location
        .as_ref()
        .and_then(|l| l.host().ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let secure = location
        .and_then(|l| l.protocol().ok())
        .is_some_and(|p| p == "https:");
    format!("{}://{host}/ws", if secure { "wss" } else { "ws" })
}

/// Whether the page's query has `name=1` (`?share=1&reliable=1` opens the
/// console with those options on, as the end-to-end tests do for each tab),
/// read by the browser's `URLSearchParams` rather than by splitting the
/// text here (less code in the wasm).
fn query_flag(name: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|search| web_sys::UrlSearchParams::new_with_str(&search).ok())
        .and_then(|params| params.get(name))
        .is_some_and(|value| value == "1")
}

/// The name the console's tabs share their connection under.
const SHARE_NAME: &str = "socket-console";

/// The socket's options; `token`, when given, is the token field's value
/// at the last Connect, which the provider hands to every connect and refresh.
fn config(url: &str, reliable: bool, share: bool, token: Option<Rc<RefCell<String>>>) -> Config {
    let mut config = Config::new(url)
        .with_heartbeat(Heartbeat {
            interval_ms: 10_000,
            timeout_ms: 30_000,
        })
        .with_reliable(reliable);
    if share {
        config = config.with_shared_across_tabs(SHARE_NAME);
    }
    match token {
        Some(token) => config.with_token(move || {
            let token = token.borrow().clone();
            async move { Ok::<_, Infallible>(token) }
        }),
        None => config,
    }
}

#[derive(Properties, PartialEq)]
struct PageProps {
    url: AttrValue,
    /// Whether the socket has a token provider.
    with_token: bool,
    /// A new URL, or a token where there was none (or the reverse): a new socket.
    on_url: Callback<(String, bool)>,
    /// What the token provider returns (the token field at the last Connect).
    token: Rc<RefCell<String>>,
    reliable: bool,
    on_reliable: Callback<bool>,
    share: bool,
    on_share: Callback<bool>,
}

/// Everything below the provider: the console state, the socket commands
/// and the panels' fields, handed to the panels as data and callbacks.
#[component]
fn Page(props: &PageProps) -> Html {
    let state = use_socket().state;
    let console = use_console();
    let commands = use_commands(console.dispatcher());
    let channel = use_channel(console.dispatcher());
    let drafts = use_drafts();
    // Connect with the same URL replaces the connection (with the token now
    // in the field); a new URL, or a token where there was none, the socket.
    let on_connect = use_callback(
        (
            props.url.clone(),
            props.with_token,
            props.on_url.clone(),
            commands.reconnect.clone(),
            props.token.clone(),
        ),
        |(url, token): (String, String), (current, with_token, on_url, reconnect, cell)| {
            let wants_token = !token.is_empty();
            *cell.borrow_mut() = token;
            if url == current.as_str() && wants_token == *with_token {
                reconnect.emit(());
            } else {
                on_url.emit((url, wants_token));
            }
        },
    );
    let status = state_text(&state, console.retry.as_ref(), console.now_ms);
    let tab_role = props.share.then(|| {
        format!(
            "{} of {} tab(s)",
            console.stats.tab_role.name(),
            console.stats.tabs
        )
    });
    html! {
        <main>
            <header><h1>{ "Socket console" }</h1></header>
            <ConnectionBar url={props.url.clone()} {state} {status} reliable={props.reliable}
                {on_connect} on_disconnect={commands.disconnect.clone()}
                on_reliable={props.on_reliable.clone()} share={props.share}
                on_share={props.on_share.clone()} {tab_role} />
            <Sender queue_len={console.stats.queue_len} queue_capacity={console.stats.queue_capacity}
                on_send={commands.send.clone()} on_capacity={commands.set_capacity.clone()}
                on_series={commands.series.clone()} />
            { burst_panel(BurstPanel { count: &drafts.burst_count, burst: console.burst.as_ref(),
                longest_task_ms: console.longest_task_ms, on_burst: &commands.burst }) }
            { channel_panel(ChannelPanel { name: &drafts.channel, text: &drafts.channel_text,
                subscribed: console.channel.as_deref(), members: console.members.as_ref(),
                lines: &console.channel_log, on_subscribe: &channel.subscribe,
                on_unsubscribe: &channel.unsubscribe, on_publish: &channel.publish }) }
            { counters(&Counts { received: console.received, rate: console.rate,
                stats: console.stats, reliable: props.reliable, pushes: console.pushes,
                echoes: console.echoes, push_order: console.push_order }) }
            { rate_chart(&console.history) }
            <Log lines={console.log.clone()} />
        </main>
    }
}

/// The root: one socket provider, keyed by URL.
#[component]
pub fn App() -> Html {
    let url = use_state(default_url);
    let reliable = use_state(|| query_flag("reliable"));
    let share = use_state(|| query_flag("share"));
    let with_token = use_state(|| false);
    let token = use_mut_ref(String::new);
    let on_url = {
        let (url, with_token) = (url.clone(), with_token.clone());
        Callback::from(move |(new, token): (String, bool)| {
            url.set(new);
            with_token.set(token);
        })
    };
    let on_reliable = {
        let reliable = reliable.clone();
        Callback::from(move |on: bool| reliable.set(on))
    };
    let on_share = {
        let share = share.clone();
        Callback::from(move |on: bool| share.set(on))
    };
    // A new URL or mode means a new socket: the key replaces the provider.
    let key = format!("{}|{}|{}|{}", *url, *reliable, *with_token, *share);
    let provider = with_token.then(|| token.clone());
    html! {
        <SocketProvider {key} config={config(&url, *reliable, *share, provider)}>
            <Page url={(*url).clone()} with_token={*with_token} {on_url} {token}
                reliable={*reliable} {on_reliable} share={*share} {on_share} />
        </SocketProvider>
    }
}
