//! Browser test of the Yew layer: a real app rendered in headless Chrome,
//! against the real server started by `cargo xtask test` (addresses handed
//! in at compile time, as for `tests/web.rs`). The feature `yew` is on for
//! these tests through the crate's dev-dependency on itself.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::option_env_unwrap)]

use std::cell::RefCell;

use buffered_socket::yew::{SocketProvider, use_socket, use_socket_event, use_socket_stats};
use buffered_socket::{Config, Event, Message, Socket, State};
use common::{unique, wait_for, wait_until_the_server_forgets, ws_base};
use shared::ServerMessage;
use wasm_bindgen_test::*;
use yew::prelude::*;

mod common;

wasm_bindgen_test_configure!(run_in_browser);

const BURST: u64 = 2_000;

/// What each probe saw: its socket handle and the push `seq`s in order.
#[derive(Default)]
struct Seen {
    sockets: Vec<Socket>,
    seqs: Vec<Vec<u64>>,
    burst_done: usize,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::default();
}

#[derive(Properties, PartialEq)]
struct ProbeProps {
    index: usize,
}

/// A component that records every push it is given and shows state and stats.
#[component]
fn Probe(props: &ProbeProps) -> Html {
    let ctx = use_socket();
    let stats = use_socket_stats(20);
    let index = props.index;
    {
        let socket = ctx.socket.clone();
        use_effect_with((), move |()| {
            SEEN.with(|seen| seen.borrow_mut().sockets.push(socket));
        });
    }
    use_socket_event(move |event| {
        if let Event::Message(Message::Text(text)) = event {
            match ServerMessage::from_json(text) {
                Ok(ServerMessage::Push { seq, .. }) => {
                    SEEN.with(|seen| seen.borrow_mut().seqs[index].push(seq));
                }
                Ok(ServerMessage::BurstDone { .. }) => {
                    SEEN.with(|seen| seen.borrow_mut().burst_done += 1);
                }
                _ => {}
            }
        }
    });
    html! {
        <p class="probe">
            <span class="state">{ ctx.state.name() }</span>
            { " " }
            <span class="received">{ stats.messages_received }</span>
        </p>
    }
}

#[derive(Properties, PartialEq)]
struct RootProps {
    config: Config,
}

#[component]
fn Root(props: &RootProps) -> Html {
    html! {
        <SocketProvider config={props.config.clone()}>
            <Probe index={0} />
            <Probe index={1} />
        </SocketProvider>
    }
}

fn texts(root: &web_sys::Element, class: &str) -> Vec<String> {
    let list = root.get_elements_by_class_name(class);
    (0..list.length())
        .filter_map(|i| list.item(i))
        .filter_map(|e| e.text_content())
        .collect()
}

#[wasm_bindgen_test]
async fn one_socket_per_app_delivers_every_message_to_every_component() {
    SEEN.with(|seen| seen.borrow_mut().seqs = vec![Vec::new(), Vec::new()]);
    let client_id = unique("yew");
    let document = web_sys::window().unwrap().document().unwrap();
    let root = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&root).unwrap();
    let url = format!("{}/ws?burst={BURST}&client_id={client_id}", ws_base());
    let app = yew::Renderer::<Root>::with_root_and_props(
        root.clone(),
        RootProps {
            config: Config::new(url),
        },
    )
    .render();

    wait_for("both probes to see the whole burst", 20_000.0, || {
        SEEN.with(|seen| seen.borrow().burst_done == 2)
    })
    .await;
    SEEN.with(|seen| {
        let seen = seen.borrow();
        // One socket for the app, shared by both components.
        assert_eq!(seen.sockets.len(), 2);
        assert!(seen.sockets[0].ptr_eq(&seen.sockets[1]));
        assert_eq!(seen.sockets[0].state(), State::Open);
        // Every push reached every component, in order: nothing collapsed between renders.
        for seqs in &seen.seqs {
            assert!(seqs.len() as u64 >= BURST, "only {} pushes", seqs.len());
            assert!(
                seqs.iter().zip(1..).all(|(&seq, want)| seq == want),
                "pushes out of order or missing"
            );
        }
    });
    // The state and the stats reach the components' output.
    wait_for("state and stats rendered", 10_000.0, || {
        texts(&root, "state") == ["open", "open"]
            && texts(&root, "received")
                .iter()
                .all(|n| n.parse::<u64>().is_ok_and(|n| n >= BURST + 2))
    })
    .await;

    // Unmounting the app drops its socket: the server forgets the client.
    app.destroy();
    SEEN.with(|seen| seen.borrow_mut().sockets.clear());
    wait_until_the_server_forgets(&client_id).await;
}
