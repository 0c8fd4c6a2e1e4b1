//! The root component and the page.

use buffered_socket::yew::SocketProvider;
use buffered_socket::{Config, Heartbeat};
use yew::prelude::*;

use crate::components::{BurstPanel, ConnectionBar, Counters, Log, RateChart, Sender};
use crate::hooks::use_console;

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

fn config(url: &str, reliable: bool) -> Config {
    Config::new(url)
        .with_heartbeat(Heartbeat {
            interval_ms: 10_000,
            timeout_ms: 30_000,
        })
        .with_reliable(reliable)
}

#[derive(Properties, PartialEq)]
struct PageProps {
    url: AttrValue,
    on_connect: Callback<String>,
    reliable: bool,
    on_reliable: Callback<bool>,
}

#[component]
fn Page(props: &PageProps) -> Html {
    let handle = use_console();
    let console = handle.console.clone();
    html! {
        <main>
            <header><h1>{ "Socket console" }</h1></header>
            <ConnectionBar url={props.url.clone()} on_connect={props.on_connect.clone()}
                retry_at_ms={handle.retry_at_ms} reliable={props.reliable}
                on_reliable={props.on_reliable.clone()} />
            <Sender console={console.clone()} figures={console.figures} />
            <BurstPanel console={console.clone()} />
            <Counters console={console.clone()} reliable={props.reliable} />
            <RateChart console={console.clone()} />
            <Log {console} />
        </main>
    }
}

/// The root: one socket provider, keyed by URL.
#[component]
pub fn App() -> Html {
    let url = use_state(default_url);
    let reliable = use_state(|| false);
    let on_connect = {
        let url = url.clone();
        Callback::from(move |new: String| url.set(new))
    };
    let on_reliable = {
        let reliable = reliable.clone();
        Callback::from(move |on: bool| reliable.set(on))
    };
    // A new URL or mode means a new socket: the key replaces the provider.
    let key = format!("{}|{}", *url, *reliable);
    html! {
        <SocketProvider {key} config={config(&url, *reliable)}>
            <Page url={(*url).clone()} {on_connect} reliable={*reliable} {on_reliable} />
        </SocketProvider>
    }
}
