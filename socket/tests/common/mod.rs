//! Helpers shared by the browser tests (`tests/web.rs`, `tests/yew.rs`):
//! the testbed's addresses, handed in at compile time by `cargo xtask test`
//! (or by hand, see `cargo xtask testbed`), waiting with a deadline, and the
//! testbed's control API.
#![allow(
    dead_code,
    reason = "each test binary uses the helpers it needs, not all of them"
)]

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The server's WebSocket base, `ws://127.0.0.1:port`.
pub fn ws_base() -> &'static str {
    option_env!("BUFFERED_SOCKET_TEST_WS")
        .expect("BUFFERED_SOCKET_TEST_WS is set at build time by `cargo xtask test`")
}

/// The WebSocket base of the testbed's second server, in token mode (its
/// tokens come from the control API's `POST /token`).
pub fn auth_ws_base() -> &'static str {
    option_env!("BUFFERED_SOCKET_TEST_WS_AUTH")
        .expect("BUFFERED_SOCKET_TEST_WS_AUTH is set at build time by `cargo xtask test`")
}

/// The fault proxy's WebSocket base, in front of the same server.
pub fn proxy_base() -> &'static str {
    option_env!("BUFFERED_SOCKET_TEST_PROXY")
        .expect("BUFFERED_SOCKET_TEST_PROXY is set at build time by `cargo xtask test`")
}

/// The round-robin proxy in front of the testbed's two cluster nodes
/// (one Redis): each reconnect goes to the other node.
pub fn cluster_base() -> &'static str {
    option_env!("BUFFERED_SOCKET_TEST_CLUSTER")
        .expect("BUFFERED_SOCKET_TEST_CLUSTER is set at build time by `cargo xtask test`")
}

/// The control API's base, `http://127.0.0.1:port`.
pub fn control_base() -> &'static str {
    option_env!("BUFFERED_SOCKET_TEST_CONTROL")
        .expect("BUFFERED_SOCKET_TEST_CONTROL is set at build time by `cargo xtask test`")
}

/// A name no other test uses (a `client_id`, say).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

/// Yields to the browser for `ms`: between polls, never to wait for a condition.
pub async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Polls `condition` every 10 ms until it holds; panics after `timeout_ms`.
pub async fn wait_for(what: &str, timeout_ms: f64, condition: impl Fn() -> bool) {
    let deadline = js_sys::Date::now() + timeout_ms;
    while !condition() {
        assert!(
            js_sys::Date::now() < deadline,
            "timed out waiting for {what}"
        );
        sleep_ms(10).await;
    }
}

/// POSTs to the testbed's control API and returns the status.
pub async fn control(path: &str) -> u16 {
    control_text(path).await.0
}

/// POSTs to the testbed's control API and returns the status and the body.
pub async fn control_text(path: &str) -> (u16, String) {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let url = format!("{}{path}", control_base());
    let promise = web_sys::window()
        .unwrap()
        .fetch_with_str_and_init(&url, &init);
    let response: web_sys::Response = JsFuture::from(promise).await.unwrap().dyn_into().unwrap();
    let text = JsFuture::from(response.text().unwrap()).await.unwrap();
    (response.status(), text.as_string().unwrap_or_default())
}

/// Waits until the server no longer has `client_id` (its connection is
/// closed): kicking it then answers 404. Meant for a wrapper that was
/// dropped; a kick that still finds the connection closes it with 1012.
pub async fn wait_until_the_server_forgets(client_id: &str) {
    let deadline = js_sys::Date::now() + 10_000.0;
    while control(&format!("/kick/{client_id}?code=1012")).await != 404 {
        assert!(
            js_sys::Date::now() < deadline,
            "the server still has {client_id}"
        );
        sleep_ms(20).await;
    }
}
