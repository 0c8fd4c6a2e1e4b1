//! The gorilla/websocket reference (`bench/go/server.go`), the original
//! design of the server: built by [`crate::harness::builds::gorilla`].

use std::path::Path;

/// The gorilla server at `binary`: its echo at `/echo`, bursts at `/echo?burst=`.
pub fn server(binary: &Path) -> super::Server {
    super::Server {
        name: "gorilla",
        program: super::owned(binary),
        args: vec![],
        addr_flag: "-addr",
        echo_path: "/echo",
        typed: false,
        burst_path: "/echo?burst=",
    }
}
