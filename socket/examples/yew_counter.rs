//! The crate doc's Yew example, compiled by clippy for wasm32 with feature
//! `yew` so it cannot rot. Build it into a page with trunk.

#[cfg(target_arch = "wasm32")]
mod app {
    use std::rc::Rc;

    use buffered_socket::yew::{SocketProvider, use_socket, use_socket_event};
    use buffered_socket::{Config, Event};
    use yew::prelude::*;

    /// Messages received; a reducer so that every message of a burst counts.
    #[derive(Default, PartialEq)]
    struct Received(u64);

    impl Reducible for Received {
        type Action = ();
        fn reduce(self: Rc<Self>, (): ()) -> Rc<Self> {
            Rc::new(Self(self.0 + 1))
        }
    }

    #[component]
    fn Counter() -> Html {
        let ctx = use_socket();
        let received = use_reducer(Received::default);
        let count = received.dispatcher();
        use_socket_event(move |e| {
            if let Event::Message(_) = e {
                count.dispatch(())
            }
        });
        let socket = ctx.socket.clone();
        let send = Callback::from(move |_| drop(socket.send("hi")));
        html! { <button onclick={send}>{ format!("{}: {} received", ctx.state.name(), received.0) }</button> }
    }

    #[component]
    pub fn App() -> Html {
        html! {
            <SocketProvider config={Config::new("ws://127.0.0.1:8080/ws")}>
                <Counter />
            </SocketProvider>
        }
    }
}

fn main() {
    #[cfg(target_arch = "wasm32")]
    yew::Renderer::<app::App>::new().render();
}
