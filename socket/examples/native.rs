//! A native client (feature `native`): three echoes sent from another task
//! before the socket is open (queued, then flushed in order on open), the
//! replies printed, then a final close. Against a running server:
//!
//! ```sh
//! cargo run -p server &
//! cargo run -p buffered-socket --features native --example native -- ws://127.0.0.1:8080/ws
//! ```
//!
//! Against a server in token mode, with the token in `TOKEN` (the example's
//! provider hands it to every connect and refresh):
//!
//! ```sh
//! cargo run -p server -- --jwt-secret dev-secret &
//! TOKEN=$(cargo run -q -p server -- --jwt-secret dev-secret token --sub alice --ttl 1h) \
//!   cargo run -p buffered-socket --features native --example native
//! ```

#[cfg(not(target_arch = "wasm32"))]
#[tokio::main]
#[allow(clippy::print_stdout, reason = "an example shows what it gets")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use buffered_socket::{AppSocket, Config, Event, Socket, State};
    use futures_util::StreamExt;
    use shared::{ClientMessage, ServerMessage};

    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let mut config = Config::new(url);
    if let Ok(token) = std::env::var("TOKEN") {
        config = config.with_token(move || {
            std::future::ready(Ok::<_, std::convert::Infallible>(token.clone()))
        });
    }
    let socket = Socket::new(config)?;
    let mut events = socket.events();
    // The handle is Send + Sync: clone it into any task.
    let sender = socket.clone();
    tokio::spawn(async move {
        for id in 1..=3 {
            let echo = ClientMessage::Echo {
                id,
                body: "hi".into(),
            };
            // Not open yet: queued, and sent first thing on open.
            let outcome = sender.send(echo.to_json());
            println!("echo {id}: {outcome:?}");
        }
    })
    .await?;
    let mut echoes = 0;
    while let Some(event) = events.next().await {
        match event {
            Event::StateChanged(state) => {
                println!("state: {}", state.name());
                // Refused for good (a 4401 without a token, say): nothing more comes.
                if state == State::Closed {
                    break;
                }
            }
            Event::Auth(error) => println!("auth: {error}"),
            Event::Message(message) => {
                let decoded = AppSocket::decode(&message);
                println!("received: {decoded:?}");
                if matches!(decoded, Ok(ServerMessage::Echo { .. })) {
                    echoes += 1;
                    if echoes == 3 {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    socket.close(1000, "done")?;
    Ok(())
}

#[cfg(target_arch = "wasm32")]
fn main() {}
