//! The report: `docs/BENCHMARKS.md` (tables, ratios against the targets of
//! issue 6, and for each missed target its explanation and next step) and
//! `docs/benchmarks.json` (every figure, every round). Every number written
//! comes from the results of the run, except [`FIRST_PAGE`], measured by hand
//! and written as such; the prose in [`MISSED`] has none.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::harness::stats::num;

/// One target of issue 6 and what this run measured for it.
struct Target {
    key: &'static str,
    what: String,
    goal: &'static str,
    measured: Option<f64>,
    unit: &'static str,
    met: Option<bool>,
    note: String,
}

/// The time from a clean clone to the page served by `cargo xtask run`: too
/// long and too machine-bound to run with every benchmark, so it was measured
/// by hand (a clean clone of the tree, `cargo xtask run`, a poll of the page)
/// and the report quotes it with its date. Keep it in step with the README.
const FIRST_PAGE: &str = "Measured by hand on 2026-11-30, not by this run: from a clean \
     clone with the tools already installed (trunk, wasm-bindgen-cli; wasm-opt comes from \
     npm in the run) to the page being served by `cargo xtask run`, 14 min 45 s on these \
     2-core machines while other builds shared the cores (load average 7 to 11): xtask \
     3 min 14 s, the UI 5 min 0 s, the release server 6 min 0 s. Before xtask left out its \
     test server (wasm-pack was installed either way), the same measurement took 19 min 11 s (the UI \
     2 min 4 s and the server 5 min 23 s of it). A fresh machine adds the one-off compile \
     of trunk and wasm-bindgen-cli, not re-measured (the machine was too loaded for a fair \
     figure).";

/// The console's wasm budget and its check (xtask/src/bundle.rs).
const BUNDLE_BUDGET: &str = "Target: the console's wasm at most 140 KiB (143,360 bytes) gzip -9, the channel panel of \
     the channels and presence issues included. Not reached: `cargo xtask test` enforces a \
     ceiling of 172,700 bytes (171,226 by `cargo xtask bundle` on 2026-12-07 after a fourth \
     round of cuts with presence shared across tabs, and about 1,500 of room; 175,934 once \
     presence was shared across tabs, before the round; 173,356 once channels were shared \
     across tabs; raised a second time, from 163,100, for that: the tab wire's channel \
     messages and the leader's rules, 11,753 bytes; 161,603 after the third round of cuts \
     below; 171,179 once the console had its channel panel, 149,970 after the first two \
     rounds and before the panel; raised once from 151,500 to 172,700 for the panel, whose \
     wrapper channel code came into the wasm with it: about 19.6 KB of the 21.2 KB; 160,000 \
     when the check landed at 158,550), on the UI it builds (the wasm that `dist/index.html` \
     loads, `gzip -9 -c` as measured here, so the same build gives the same figure), and \
     fails above it, saying how to profile; the ceiling comes down with the size until it is \
     the target. `cargo xtask bundle` builds the UI and runs the check alone.";

/// Why a target is missed and what to do next, by target key. Written from
/// profiling, not from a particular run's numbers, so it holds no figure.
const MISSED: &[(&str, &str)] = &[
    (
        "bundle",
        "The target is 140 KiB (143,360 bytes) gzip -9, the channel panel of the channels and \
         presence issues included; `cargo xtask test` enforces a ceiling just above the last \
         measured size (`cargo xtask bundle` alone), so CI fails if the console grows while the \
         target is missed. The UI is built with its own Cargo profile (`ui`: release with \
         opt-level `z`, through trunk's `data-cargo-profile-release`) and `wasm-opt -Oz \
         --converge`; the console formats its decimals without core's float formatting; \
         `ServerMessage` and the tab wire are decoded type first (`shared::object`) and encoded \
         by hand, so serde's buffering of tagged enums (its `Content` tree) and its serializer \
         are out of the wasm; the log's CSS classes no longer call `to_lowercase` (12 KB of \
         Unicode tables). Issue 22's round, measured by `cargo xtask bundle` and the same build \
         by hand, gzip -9: the console's allocator is talc (`talc::wasm::WasmDynamicTalc`, a safe \
         constructor) instead of std's dlmalloc (-2.8 KB); the tab coordinator's roster and \
         `accepted` are a sorted `TabMap` instead of two `BTreeMap` instantiations, in the same \
         order on the wire (-3.1 KB); the driver decodes control frames with \
         `ServerMessage::control_if_any`, which makes no error text where the driver dropped it \
         (-0.5 KB); the dispatcher's sending to streams is reached through a function pointer \
         that the first stream sets, so an app that never asks for a stream carries none of it \
         (-0.6 KB); wasm-opt's `--converge` (-0.1 KB). A second round, measured by `cargo xtask \
         bundle`'s build, gzip -9, from 151,328 (the size after the presence wrapper landed): the \
         tab wire writes every number through one `u64` path and reads every number as a `u64` \
         checked into its field's range, and its arrays (the roster, `accepted`, a binary frame's \
         bytes) element by element through `shared::object::elements`, so serde's decoders for \
         `u32`, `usize`, `Vec<u32>`, `Vec<(u32, u64)>` and `Vec<u8>` are out of the wasm, with \
         the same bytes on the wire and the same posts refused (-1.1 KB: -773 bytes for the \
         numbers, -373 for a frame's bytes); the sender's series count is a `String` state like \
         the drafts' instead of a `u32` one (-54 bytes: the other `use_state` types left are \
         `String` and `bool`, shared with the page, so this was the last distinct one outside \
         `app.rs`) and its capacity is read with the `u32` parser the counts already have instead \
         of one for `usize` (-82 bytes); the auto-sender's label and the chart's `viewBox` are \
         constants instead of a `format!` at each render (-76 bytes). A third round, measured the \
         same way, from 171,161 (the channel panel in) to 161,603: nothing the console runs \
         formats a `serde_json::Error` any more (an error inside a nested object of a channel \
         message is `FieldError::Nested`, whose text, the same as before, is made only when \
         shown, where `channel_if_any` made and dropped it; `EncodeError`'s text no longer \
         repeats its source; the panel's publish does not format the parse error of a text \
         `JSON.stringify` wrote), so serde_json's error code texts and `std::io::Error`'s kind \
         texts are out (-855 bytes); the state badge's and the log lines' classes are set as the \
         `className` property, since html! makes a `class={…}` that is not a literal into yew's \
         `Classes`, an `IndexSet` with a hashbrown of its own (-3,258 bytes); the channel table \
         keeps its subscriptions in one sorted vector instead of a `BTreeMap`, in the same order \
         (-2,715 bytes); the counters and the rate chart are view functions the page calls \
         (-1,228 bytes), and so are the burst panel and the channel panel, their fields held by \
         the page (`use_drafts`, each written on input and on change, since the page renders them \
         again at every flush; -1,502 bytes): each component type carries about 1 KB of yew's \
         generic code. Tried in that round and left: the connection bar as a view function too \
         (-1,487 bytes more, but its URL field starts filled, and a render at the next flush put \
         the old URL back after a WebDriver clear: the end-to-end token test failed); following \
         presence without a stream (-37 bytes: every subscription makes its first stream, so the \
         stream code stays); the sender and the log as view functions (the sender's capacity and \
         series fields keep a value of their own while typed in, which a render at every flush \
         would put back; the log's 300 lines would be rendered again at every flush). Tried and \
         left: opt-level `s` (+16.6 KB), wasm-opt's `-Os`, `-iit`, `-tnh` and `--gufa` (within \
         0.3 KB either way), shorter panic paths (`--remap-path-prefix`: gzip already compresses \
         the repeated prefix to about 30 bytes); splitting the pump into `#[inline(never)]` \
         functions changes nothing, since wasm-opt merges a function into its one caller again: \
         the pump is large because the driver, the runner and the tab coordinator are, not by \
         duplication. What remains, by size of code (twiggy, names kept): yew's renderer and the \
         console's views (about 117 KB of about 382 KB after wasm-opt, the seven components' \
         views about 38 KB of it, most in the page's), the tab coordinator (before wasm-opt its \
         `handle` alone is about 10 KB), the driver, drop glue and collections instantiated for \
         many types, and serde_json's parser with the error texts its `custom` and `invalid_type` \
         errors format (used by `shared::object`; with them come `str`'s Debug and its Unicode \
         tables, and float formatting for `floating point` errors). A fourth round, measured by \
         `cargo xtask bundle`, gzip -9, from 173,356 (channels shared across tabs): the console's \
         eight buttons, eleven labelled fields and three checkboxes are made by one function each \
         (`components/controls.rs`) from static descriptions (-323 bytes); the log's props \
         compare the `Rc` of its lines instead of the up to 300 lines in it, which also spares a \
         deep comparison at every flush (-303); the query's flags (`?share=1`, `?reliable=1`) are \
         read by the browser's `URLSearchParams` (-249); the buttons take a `Callback<()>` and \
         the checkboxes a `Callback<bool>`, adapted to the event once (-81); `shared::object` has \
         a scanner and a serde `Deserializer` over one value's text of its own instead of \
         serde_json's parser (every value and error compared with serde_json's in its tests; a \
         field of the wrong type is worded as serde_json words it, without the position in the \
         field's own text), and the tab wire reads its numbers with `str::parse` once `elements` \
         has checked them as JSON, so serde_json's parser and number parsing are out of the wasm \
         (-3,821 on the merged tree, 175,047 to 171,226; alone, with the tab wire still calling \
         serde_json, the scanner added 2,759). Presence shared across tabs came in the same round \
         (+2,578, with the tab wire's channel news now the server's own frames, read by the \
         driver's decoder: alone that adds 688, but with presence shared it is 1,389 smaller than \
         the tab wire's own messages with presence frames beside them). The finding of that \
         round: the views compress far better than the rest of the wasm (a cut of 2,938 bytes of \
         the wasm took 323 out of its gzip, 11%, where the wasm as a whole gzips to 42%): the \
         console's views, about 35 KB of code, are worth perhaps 4 KB of the gzip, so rewriting \
         them cannot close the gap; the bytes that count are code and tables that gzip cannot \
         shrink. Next steps, by yield: `Object::parse` and `elements` reporting an error type of \
         their own instead of making a `serde_json::Error` by its `custom` (about 2.9 KB of code \
         before gzip); float formatting (zmij, about 1 KB of code and tables after wasm-opt), in \
         the wasm only for the heartbeat's `ping`, whose `t` is a whole number of milliseconds in \
         a browser but has a fraction natively (a decision about the wire, not a cut); `str`'s \
         Debug and `char::escape_debug` (about 2 KB) while any `{:?}` of a string is in the wasm; \
         and the tab coordinator and the runner, which wasm-opt inlines into the glue's pump \
         (about 34 KB after wasm-opt).",
    ),
    (
        "echo",
        "The echo figures are within a few percent of each other whenever the load generator \
         is the bottleneck (its column above reads about 1.0 of a core while the server's does \
         not): msg/s then measures the load generator as much as the server, and the \
         per-server-CPU-second ratio is the fairer comparison. `/echo` has always been one \
         task owning its socket, as `/ws` is since issue 21; where ours is below the raw \
         server per CPU-second, the difference is axum/hyper's upgrade path and the metrics \
         kept per message. Next step: profile the server under `echo` with `perf record -g` \
         (server core only).",
    ),
    (
        "typed",
        "Callgrind counts the server's user-space instructions per message (the slope \
         between a 2 s and a 6 s run of this load, so start-up cancels out; kernel time is \
         not counted): ours 11,500 against the raw server's 7,100, down from 14,800 at the \
         start of this round. What went: a canonical echo request is its own reply byte for \
         byte, so a plain connection sends the request's own bytes back with no decode into \
         a `String`, no encode and no copy (about 2,900 instructions), and close requests \
         and the shutdown now wake a connection through its queue instead of a shutdown \
         token and a close `Notify` polled at every turn (about 500). What remains above \
         the raw server, by function: the check that the request is a canonical echo \
         (1,500: an SSE2 scan of the 1 KiB body for characters a JSON string escapes), the \
         read-ahead that keeps an idle connection's read buffer at 512 bytes (its copy out \
         of the per-thread scratch buffer, about 800), `malloc`/`free` (about 1,000) and \
         the connection loop's own turn (about 900); tungstenite's parsing and unmasking, \
         UTF-8 validation and tokio's I/O registration cost both servers the same. Next \
         step: read straight into tungstenite's buffer when it asks for more than the \
         read-ahead holds (no scratch copy for a frame of 1 KiB or more), then a timed \
         run of 7 interleaved rounds on a quiet machine for the ratio.",
    ),
    (
        "large",
        "Callgrind counts ours at about 64k user-space instructions per 16 KiB message \
         against the raw server's 57k: close. In both, 43% is tungstenite zero-filling its \
         read buffer before every read, so the gap in a timed run is mostly outside user \
         space: syscalls and how replies are batched. Ours reads into a 512-byte tungstenite \
         buffer on `/ws` but keeps `--read-buffer` (4 KiB) on `/echo`, and flushes its replies \
         per batch of `--send-queue-bytes`; the raw server writes each reply from the reading \
         task. Next step: syscall counts per message (`strace -c -f` or `perf trace -s` on \
         the server) on a quiet machine for both servers, then the same one-task, \
         write-at-once path as the typed echo's next step; and an upstream tungstenite \
         change to stop the zero-fill.",
    ),
    (
        "gorilla",
        "Against gorilla the comparison is made with the same load generator, which is the \
         bottleneck for both servers at this size (see the CPU columns): at parity in msg/s, \
         the messages per server CPU-second decide. Next step: profile ours under `echo` \
         with `perf record -g` (server core only).",
    ),
    (
        "burst",
        "Both servers encode each push with `shared::PushEncoder` and feed it with one flush \
         per 512; since issue 21 ours has no `BiLock` (one task owns the unsplit socket), but \
         each batch now goes back through the connection's loop (its `select!`, a `yield_now`, \
         the checks of the queue), so reads, kicks and shutdown get their turn. What remains, \
         from earlier `perf record` runs: axum's `Sink` layer over hyper's boxed, upgraded \
         I/O, and more syscalls, because our tungstenite write buffer is 8 KiB where the raw \
         server keeps tungstenite's 128 KiB, so a batch of 512 pushes takes several `sendto`s \
         instead of one. A larger buffer closed most of the gap in side-by-side checks, but \
         tungstenite never shrinks it, so every connection that once took a burst would keep \
         it. Next step: a write buffer released after a burst (or a burst written as one \
         pre-framed buffer), and several batches per turn of the loop while nothing else is \
         ready.",
    ),
    (
        "idle",
        "heaptrack with 2,000 idle connections on the one-task connection (this round): \
         about 3.2 KiB of each connection's heap is its task, the future hyper spawns for \
         the upgrade around ours (our `serve` future alone is 1,768 bytes: the connection's \
         state and every branch of its `select!`, whose timers and queue wait are held \
         inline); 0.6 KiB tungstenite's buffers; 0.5 KiB what the connection allocates at \
         its start (its queue, the state it shares with the registry, the registry's entry) \
         and about 0.8 KiB of vectors grown to their first size; 0.25 KiB tokio's I/O \
         registration (the raw server's too); 0.2 KiB the two tickers of timed pushes and \
         pings. Next step: one server-wide ticker for timed pushes and pings instead of two \
         per connection (a connection would hold no timer of its own while idle), and the \
         reliable-only parts of the loop's state behind the boxed link.",
    ),
    (
        "browser",
        "Our wrapper does more per message than the raw page: it copies each text frame from \
         JavaScript into a Rust `String` (UTF-16 to UTF-8), wraps it in an `Event`, delivers it \
         through the dispatcher (re-entrancy-safe, so each event is queued and drained) and \
         updates the stats. Next step: profile with the browser's performance panel (a trace \
         through ChromeDriver's `goog:loggingPrefs`) and avoid the per-message queueing when \
         no callback is running.",
    ),
    (
        "yew",
        "The Yew page batches a burst's messages and renders on a timer, so its longest task \
         is a render or a batch of message callbacks. Next step: record a performance trace of \
         the burst and split the longest batch.",
    ),
];

/// The result of `server` in a list with one per server (burst, idle).
fn find<'a>(list: &'a Value, server: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|r| r["server"] == server)
}

/// The echo result of `server` at `conns` x `bytes`.
fn find_echo<'a>(echo: &'a Value, server: &str, conns: u64, bytes: u64) -> Option<&'a Value> {
    echo.as_array()?.iter().find(|r| {
        r["server"] == server
            && r["conns"].as_u64() == Some(conns)
            && r["bytes"].as_u64() == Some(bytes)
    })
}

fn ratio(a: Option<&Value>, b: Option<&Value>, key: &str) -> Option<f64> {
    let (a, b) = (num(a?, key), num(b?, key));
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// The spread of the ratio `a / b` over their interleaved rounds (the
/// summaries' `rounds_` + `key`, in round order): "min–max", or "n/a".
fn spread(a: Option<&Value>, b: Option<&Value>, key: &str) -> String {
    let rounds = |v: Option<&Value>| -> Vec<f64> {
        v.and_then(|v| v[format!("rounds_{key}")].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_f64)
            .collect()
    };
    let ratios: Vec<f64> = rounds(a)
        .iter()
        .zip(rounds(b))
        .filter(|(_, b)| *b > 0.0)
        .map(|(a, b)| a / b)
        .filter(|r| r.is_finite())
        .collect();
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if ratios.is_empty() {
        "n/a".into()
    } else {
        format!("{min:.2}–{max:.2}x over {} rounds", ratios.len())
    }
}

/// Which side limits a closed-loop echo run, from the CPU each used.
fn bottleneck(r: &Value) -> &'static str {
    let (server, load) = (num(r, "server_cpu"), num(r, "loadgen_cpu"));
    if server >= 0.9 {
        "server"
    } else if load >= 0.9 {
        "load generator"
    } else {
        "neither (latency)"
    }
}

fn targets(results: &Value) -> Vec<Target> {
    let echo = &results["echo"];
    let mut targets = Vec::new();
    for (conns, bytes) in [(100u64, 20u64), (10, 1024)] {
        let raw = find_echo(echo, "raw 4 KiB", conns, bytes);
        let gorilla = find_echo(echo, "gorilla", conns, bytes);
        for (ours, key) in [("ours /echo", "echo"), ("ours /ws", "typed")] {
            let r = find_echo(echo, ours, conns, bytes);
            let measured = ratio(r, raw, "msgs_per_s");
            let per_cpu = ratio(r, raw, "msgs_per_server_cpu_s");
            targets.push(Target {
                key,
                what: format!("{ours} echo vs raw 4 KiB, {conns} x {bytes} B"),
                goal: "≥ 0.95x",
                measured,
                unit: "x",
                met: measured.map(|m| m >= 0.95),
                note: format!(
                    "per server CPU-second: {}; bottleneck: {}",
                    per_cpu.map_or("n/a".into(), |p| format!("{p:.2}x")),
                    r.map_or("n/a", bottleneck)
                ),
            });
            let measured = ratio(r, gorilla, "msgs_per_s");
            let per_cpu = ratio(r, gorilla, "msgs_per_server_cpu_s");
            targets.push(Target {
                key: "gorilla",
                what: format!("{ours} echo vs gorilla, {conns} x {bytes} B"),
                goal: "> 1.00x",
                measured,
                unit: "x",
                met: measured.map(|m| m > 1.0),
                note: if gorilla.is_none() {
                    "gorilla not built (see above)".into()
                } else {
                    format!(
                        "per server CPU-second: {}",
                        per_cpu.map_or("n/a".into(), |p| format!("{p:.2}x"))
                    )
                },
            });
        }
    }
    // Issue 16: the typed echo per server CPU-second, where a saturated load
    // generator cannot hide the server's cost.
    let (typed, raw) = (
        find_echo(echo, "ours /ws", 10, 1024),
        find_echo(echo, "raw 4 KiB", 10, 1024),
    );
    let measured = ratio(typed, raw, "msgs_per_server_cpu_s");
    targets.push(Target {
        key: "typed",
        what: "ours /ws typed echo vs raw 4 KiB per server CPU-second, 10 x 1024 B".into(),
        goal: "≥ 0.90x",
        measured,
        unit: "x",
        met: measured.map(|m| m >= 0.9),
        note: format!(
            "issues 16 and 21; spread: {}",
            spread(typed, raw, "msgs_per_server_cpu_s")
        ),
    });
    // Issue 21: reliable mode's cost, side by side with the typed echo.
    let reliable = &results["reliable_echo"];
    let measured = reliable["ratio"].as_f64();
    targets.push(Target {
        key: "reliable",
        what: "ours /ws reliable echo (v2, memory) vs the typed echo per server CPU-second, 10 x 1024 B".into(),
        goal: "≥ 0.60x",
        measured,
        unit: "x",
        met: measured.map(|m| m >= 0.6),
        note: match (reliable["ratio_min"].as_f64(), reliable["ratio_max"].as_f64()) {
            (Some(min), Some(max)) => format!(
                "issue 21; spread: {min:.2}–{max:.2}x over {} rounds",
                reliable["ratios"].as_array().map_or(0, Vec::len)
            ),
            _ => "issue 21; not measured".into(),
        },
    });
    // Issue 16: the large echo, in msg/s and in its tail.
    let (ours, raw) = (
        find_echo(echo, "ours /echo", 100, 16 * 1024),
        find_echo(echo, "raw 4 KiB", 100, 16 * 1024),
    );
    let measured = ratio(ours, raw, "msgs_per_s");
    targets.push(Target {
        key: "large",
        what: "ours /echo vs raw 4 KiB, 100 x 16 KiB".into(),
        goal: "≥ 0.95x",
        measured,
        unit: "x",
        met: measured.map(|m| m >= 0.95),
        note: format!(
            "per server CPU-second: {}; bottleneck: {}",
            ratio(ours, raw, "msgs_per_server_cpu_s").map_or("n/a".into(), |p| format!("{p:.2}x")),
            ours.map_or("n/a", bottleneck)
        ),
    });
    let measured = ratio(ours, raw, "p99_us");
    targets.push(Target {
        key: "large",
        what: "ours /echo p99 against raw 4 KiB's, 100 x 16 KiB".into(),
        goal: "≤ 1.50x",
        measured,
        unit: "x",
        met: measured.map(|m| m <= 1.5),
        note: format!(
            "p99 {} µs against {} µs",
            ours.map_or(Value::Null, |r| r["p99_us"].clone()),
            raw.map_or(Value::Null, |r| r["p99_us"].clone())
        ),
    });
    let burst = &results["burst"];
    let measured = ratio(
        find(burst, "ours /ws"),
        find(burst, "raw 4 KiB"),
        "msgs_per_s",
    );
    targets.push(Target {
        key: "burst",
        what: "burst of 100,000 to a native client vs raw feed + one flush per batch".into(),
        goal: "≥ 0.95x",
        measured,
        unit: "x",
        met: measured.map(|m| m >= 0.95),
        note: String::new(),
    });
    let idle = find(&results["idle"], "ours /ws");
    let measured = idle.map(|r| num(r, "kib_per_conn"));
    targets.push(Target {
        key: "idle",
        what: format!(
            "server RSS per idle connection, {} connections",
            idle.map_or(Value::Null, |r| r["conns"].clone())
        ),
        goal: "≤ 5 KiB",
        measured,
        unit: " KiB",
        met: measured.map(|m| m <= 5.0),
        note: "issue 21 (issue 16's line was 6 KiB)".into(),
    });
    let browser = &results["browser"];
    let measured = (browser["js_ms"].is_number() && browser["wasm_ms"].is_number())
        .then(|| num(browser, "js_ms") / num(browser, "wasm_ms"));
    targets.push(Target {
        key: "browser",
        what: "browser: our wasm wrapper vs raw JavaScript, burst of 100,000".into(),
        goal: "≥ 0.95x",
        measured,
        unit: "x",
        met: measured.map(|m| m >= 0.95),
        note: browser["error"]
            .as_str()
            .map_or_else(|| browser_spread(browser), |e| format!("not measured: {e}")),
    });
    let bundle = &results["bundle"];
    // In KiB, as the budget (140 KiB = 143,360 bytes) that `cargo xtask
    // test` checks (xtask/src/bundle.rs).
    let measured = bundle["wasm_gzip_bytes"].as_f64().map(|b| b / 1024.0);
    targets.push(Target {
        key: "bundle",
        what: "UI bundle: the console's wasm, gzip -9".into(),
        goal: "≤ 140 KiB",
        measured,
        unit: " KiB",
        met: measured.map(|m| m <= 140.0),
        note: bundle["error"]
            .as_str()
            .map(|e| format!("not measured: {e}"))
            .unwrap_or_default(),
    });
    let yew = &browser["yew"];
    let measured = yew["longest_task_ms"].as_f64();
    targets.push(Target {
        key: "yew",
        what: "Yew page: longest main-thread task during the burst".into(),
        goal: "< 100 ms",
        measured,
        unit: " ms",
        met: measured.map(|m| m < 100.0),
        note: match (yew["error"].as_str(), measured) {
            (Some(e), _) => format!("not measured: {e}"),
            (None, Some(0.0)) => format!(
                "no long task (the Long Tasks API reports tasks of 50 ms or more); longest gap between frames {:.0} ms",
                num(yew, "longest_frame_gap_ms")
            ),
            _ => format!(
                "longest gap between frames {:.0} ms",
                num(yew, "longest_frame_gap_ms")
            ),
        },
    });
    targets
}

fn fmt_measured(t: &Target) -> String {
    match (t.measured, t.unit) {
        (Some(m), "x") => format!("{m:.2}x"),
        (Some(m), unit) => format!("{m:.1}{unit}"),
        (None, _) => "not measured".into(),
    }
}

fn kib(bytes: &Value) -> String {
    bytes
        .as_f64()
        .map_or("n/a".into(), |b| format!("{:.1} KiB", b / 1024.0))
}

/// Writes the markdown and the JSON.
///
/// # Errors
///
/// When `docs` cannot be written.
pub fn write(root: &Path, docs: &Path, mut results: Value) -> Result<()> {
    let targets = targets(&results);
    results["targets"] = json!(
        targets
            .iter()
            .map(|t| json!({ "target": t.what, "goal": t.goal, "measured": t.measured, "met": t.met, "note": t.note }))
            .collect::<Vec<_>>()
    );
    let meta = &results["meta"];
    let plan = &meta["plan"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `{}` (from the workspace root) on {}: {} mode, measured in {:.0} s \
         (builds before it took {:.0} s). Every figure below comes from that one run; \
         `docs/benchmarks.json` holds them all, with every round. Absolute numbers drift on \
         these shared machines: read the ratios, which compare servers measured in the same run.\n",
        s(&meta["command"]),
        s(&meta["date"]),
        s(&meta["mode"]),
        num(meta, "run_seconds"),
        num(meta, "build_seconds"),
    );
    let _ = writeln!(w, "## Machine and versions\n");
    let m = &meta["machine"];
    let _ = writeln!(
        w,
        "- Machine: {} cores ({}), {}, {}.",
        s(&m["cores"]),
        s(&m["cpu"]),
        s(&m["memory"]),
        s(&m["kernel"])
    );
    let _ = writeln!(
        w,
        "- Load average (1, 5, 15 min) before: {}; after: {}. `uptime` at the end: `{}`.",
        s(&meta["load_before"]),
        s(&meta["load_after"]),
        s(&meta["uptime"])
    );
    let v = &meta["versions"];
    let _ = writeln!(
        w,
        "- {}; tokio-tungstenite {}; axum {}; {}; gorilla/websocket {}; {}; {}.\n",
        s(&v["rustc"]),
        s(&v["tokio-tungstenite"]),
        s(&v["axum"]),
        s(&v["go"]),
        s(&v["gorilla/websocket"]),
        s(&v["chromium"]),
        s(&v["trunk"])
    );
    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(
        w,
        "- Each server runs pinned to core 0 and the load generator (or the browser) to core 1 \
         with `taskset`, loopback only. Servers: **ours** (`server`, release, timed pushes and \
         pings off); **raw**: tokio + tokio-tungstenite with no framework (`bench raw-server`), \
         with a 4 KiB or the default 128 KiB read buffer, bursts written with `feed` and one \
         flush per 512 messages or with `send` per message; **gorilla**: the original Go design \
         on gorilla/websocket (`bench/go/server.go`, Debian's packages, 4 KiB buffers, one \
         `WriteMessage` per push).\n\
         - Echo: closed loop, each connection sends one message, waits for its echo (checked \
         byte for byte; any difference fails the run), repeats; {} s warm-up then {} s measured, \
         {} rounds with the servers' order rotated each round; medians. `/ws` speaks the typed \
         echo (`{{\"type\":\"echo\",\"id\":N,\"body\":...}}`). Server and load generator CPU \
         come from `/proc/<pid>/stat` over the measured window; \"msg per server CPU-s\" is the \
         messages divided by the server's CPU time, the fair figure when the load generator \
         uses its whole core.\n\
         - Burst: a native client connects to a URL that pushes {} messages on connect; the time \
         from the first push to the last, all checked in order; {} interleaved rounds, median.\n\
         - Idle: {} connections opened and held; the server's VmRSS (`/proc/<pid>/status`) \
         before, and after it stops changing, divided by the connections.\n\
         - Browser: headless Chromium driven by ChromeDriver (WebDriver, which does not record \
         network events per frame); pages served by our server; the time from the first push \
         to the last measured inside the page with `performance.now()`; our wasm wrapper \
         (`bench/examples/browser.rs`) and a raw JavaScript `WebSocket` page alternate, {} rounds \
         each after one unmeasured warm-up, medians. Then the Yew console (`dist/` of \
         `trunk build --release`) takes the same burst with a `PerformanceObserver` on long tasks.\n",
        plan["warmup_s"],
        plan["seconds"],
        plan["echo_rounds"],
        plan["burst_count"],
        plan["burst_rounds"],
        plan["idle_conns"],
        plan["browser_rounds"],
    );

    let _ = writeln!(w, "## Echo\n");
    let _ = writeln!(
        w,
        "| server | conns x bytes | msg/s | msg per server CPU-s | server CPU | load gen CPU | bottleneck | p50 µs | p99 µs | p99.9 µs |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in results["echo"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} x {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
            s(&r["server"]),
            r["conns"],
            r["bytes"],
            num(r, "msgs_per_s"),
            num(r, "msgs_per_server_cpu_s"),
            num(r, "server_cpu"),
            num(r, "loadgen_cpu"),
            bottleneck(r),
            r["p50_us"],
            r["p99_us"],
            r["p999_us"]
        );
    }
    let _ = writeln!(
        w,
        "\n## Burst of {} pushes to a native client\n",
        plan["burst_count"]
    );
    let _ = writeln!(w, "| server | first to last, ms | msg/s |\n|---|---|---|");
    for r in results["burst"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {:.0} |",
            s(&r["server"]),
            num(r, "first_to_last_ms"),
            num(r, "msgs_per_s")
        );
    }
    let _ = writeln!(w, "\n## Idle connections: server resident memory\n");
    let _ = writeln!(
        w,
        "| server | connections | RSS before, KiB | RSS after, KiB | KiB per connection |\n|---|---|---|---|---|"
    );
    for r in results["idle"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {:.1} |",
            s(&r["server"]),
            r["conns"],
            r["rss_before_kib"],
            r["rss_after_kib"],
            num(r, "kib_per_conn")
        );
    }
    let b = &results["browser"];
    let _ = writeln!(
        w,
        "\n## Browser: a burst of {} pushes in headless Chromium\n",
        plan["burst_count"]
    );
    if let Some(err) = b["error"].as_str() {
        let _ = writeln!(w, "Not measured in this run: {err}");
    } else {
        let _ = writeln!(
            w,
            "| page | first to last, ms (median) | msg/s | every round, ms |\n|---|---|---|---|"
        );
        for (name, key) in [
            ("raw JavaScript WebSocket", "js"),
            ("our wasm wrapper (buffered-socket)", "wasm"),
        ] {
            let _ = writeln!(
                w,
                "| {name} | {:.0} | {:.0} | {} |",
                num(b, &format!("{key}_ms")),
                num(b, &format!("{key}_msgs_per_s")),
                b[format!("{key}_ms_all")]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .map(|v| format!("{:.0}", v.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
        let yew = &b["yew"];
        if let Some(err) = yew["error"].as_str() {
            let _ = writeln!(w, "\nYew console: not measured in this run: {err}");
        } else {
            let _ = writeln!(
                w,
                "\nYew console during the same burst: longest task {:.0} ms (0: no task of 50 ms \
                 or more, the Long Tasks API's threshold), longest gap between animation frames \
                 {:.0} ms, all {} pushes counted; the page's own status line: \"{}\".",
                num(yew, "longest_task_ms"),
                num(yew, "longest_frame_gap_ms"),
                s(&yew["received"]),
                s(&yew["burst_status"])
            );
        }
        let paint = &b["first_paint"];
        if let Some(err) = paint["error"].as_str() {
            let _ = writeln!(w, "\nConsole first paint: not measured in this run: {err}");
        } else {
            let loads = paint["loads"].as_array().map_or(0, Vec::len);
            let first = &paint["loads"][0];
            let _ = writeln!(
                w,
                "\nConsole first paint (the page's `first-contentful-paint`: `index.html`'s body \
                 is empty, so it is the console's first render; from the start of the navigation, \
                 served by our server over loopback, before the bursts): {:.0} ms on the first \
                 load of a fresh browser (empty cache; the wasm downloaded by {:.0} ms), {:.0} ms \
                 median of the {} loads after it.",
                num(paint, "cold_fcp_ms"),
                num(first, "wasm_loaded_ms"),
                num(paint, "warm_fcp_ms"),
                loads.saturating_sub(1)
            );
        }
    }
    tabs_section(w, &b["tabs"]);
    let bundle = &results["bundle"];
    let _ = writeln!(w, "\n## UI bundle (`trunk build --release`)\n");
    if let Some(err) = bundle["error"].as_str() {
        let _ = writeln!(w, "Not measured in this run: {err}");
    } else {
        let _ = writeln!(
            w,
            "| part | raw | gzip -9 |\n|---|---|---|\n| wasm | {} | {} |\n| JS | {} | {} |",
            kib(&bundle["wasm_bytes"]),
            kib(&bundle["wasm_gzip_bytes"]),
            kib(&bundle["js_bytes"]),
            kib(&bundle["js_gzip_bytes"])
        );
    }
    let _ = writeln!(w, "\n{BUNDLE_BUDGET}");

    let _ = writeln!(w, "\n## Time to the first page\n\n{FIRST_PAGE}");

    let _ = writeln!(
        w,
        "\n## Targets of issues 6, 16 and 21 (ratios from this run)\n"
    );
    let _ = writeln!(
        w,
        "| target | goal | measured | met | note |\n|---|---|---|---|---|"
    );
    for t in &targets {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            t.what,
            t.goal,
            fmt_measured(t),
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            },
            t.note
        );
    }
    let mut missed: Vec<&str> = Vec::new();
    for t in targets.iter().filter(|t| t.met == Some(false)) {
        if !missed.contains(&t.key) {
            missed.push(t.key);
        }
    }
    if !missed.is_empty() {
        let _ = writeln!(w, "\n## Missed targets: why, and the next step\n");
        for key in missed {
            let which: Vec<String> = targets
                .iter()
                .filter(|t| t.key == key && t.met == Some(false))
                .map(|t| format!("{} ({})", t.what, fmt_measured(t)))
                .collect();
            let why = MISSED
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("", |(_, why)| why);
            let _ = writeln!(w, "- **{}**. {why}\n", which.join("; "));
        }
    }
    let docs = if docs.is_absolute() {
        docs.to_path_buf()
    } else {
        root.join(docs)
    };
    std::fs::create_dir_all(&docs)?;
    // Kept blocks (the scale run's section, hand-written findings) are carried over.
    if let Ok(old) = std::fs::read_to_string(docs.join("BENCHMARKS.md")) {
        for block in super::kept::kept(&old) {
            md = format!("{}\n\n{block}\n", md.trim_end());
        }
    }
    std::fs::write(docs.join("BENCHMARKS.md"), md)?;
    std::fs::write(
        docs.join("benchmarks.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    eprintln!("bench: wrote {}", docs.join("BENCHMARKS.md").display());
    Ok(())
}

/// Issue 15's figure: ten console tabs with sharing across tabs and without.
fn tabs_section(w: &mut String, tabs: &Value) {
    if tabs.is_null() {
        return;
    }
    let _ = writeln!(
        w,
        "\n## Ten tabs of the console: one shared connection against one per tab\n"
    );
    if let Some(err) = tabs["error"].as_str() {
        let _ = writeln!(w, "Not measured in this run: {err}");
        return;
    }
    let _ = writeln!(
        w,
        "| {} tabs | server connections | server RSS added, KiB | server RSS before → after, KiB | browser PSS, MiB | settled in, ms |\n|---|---|---|---|---|---|",
        tabs["tabs"]
    );
    for (name, key) in [
        ("shared (`/?share=1`)", "shared"),
        ("one socket per tab", "separate"),
    ] {
        let r = &tabs[key];
        // The first round's absolute figures, beside the median of the deltas.
        let first = tabs["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|run| run["share"] == (key == "shared")))
            .cloned()
            .unwrap_or(Value::Null);
        let _ = writeln!(
            w,
            "| {name} | {:.0} | {:.0} | {} → {} | {:.0} | {:.0} |",
            num(r, "connections"),
            num(r, "server_rss_delta_kib"),
            first["server_rss_before_kib"],
            first["server_rss_after_kib"],
            num(&first, "browser_pss_after_kib") / 1024.0,
            num(r, "settled_ms")
        );
    }
    let _ = writeln!(
        w,
        "\nTen windows of the console in one headless Chromium, opened one after the other, \
         with sharing on and off in alternating order (median of {} round(s) each); settled when \
         every tab shows its socket open and, with sharing, one leader and every tab counting \
         ten. Connections: the server's own `ws_connections_open` (`/metrics`), counted from its \
         value before the tabs opened. Server RSS: \
         resident memory after the tabs settled minus before they opened (allocator noise of \
         tens to hundreds of KiB either way, after an unmeasured console load; ten connections \
         weigh less than that, see the idle connections above). Browser PSS: the proportional \
         set size summed over Chromium's processes with the ten windows open (first round).",
        tabs["rounds"]
    );
}

/// The browser burst's ratio in each interleaved round (the JavaScript
/// page's time over ours), as a spread: one round's figure swings more than
/// the medians' ratio does.
fn browser_spread(browser: &Value) -> String {
    let times = |key: &str| -> Vec<f64> {
        browser[key]
            .as_array()
            .map(|all| all.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let ratios: Vec<f64> = times("js_ms_all")
        .iter()
        .zip(times("wasm_ms_all"))
        .filter(|(_, wasm)| *wasm > 0.0)
        .map(|(js, wasm)| js / wasm)
        .collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if ratios.is_empty() {
        "issue 22 (issue 15's line was 0.90x)".into()
    } else {
        format!(
            "issue 22 (issue 15's line was 0.90x); spread: {low:.2}–{high:.2}x over {} rounds",
            ratios.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_tabs_section_shows_both_modes_and_a_missing_run() {
        let run = |share: bool, conns: u64| {
            json!({ "share": share, "connections": conns, "server_rss_before_kib": 6624,
                    "server_rss_after_kib": 6752, "browser_pss_after_kib": 820_510 })
        };
        let tabs = json!({
            "tabs": 10, "rounds": 1,
            "shared": { "connections": 1.0, "server_rss_delta_kib": 128.0, "settled_ms": 5886.4 },
            "separate": { "connections": 10.0, "server_rss_delta_kib": 0.0, "settled_ms": 5778.0 },
            "runs": [run(true, 1), run(false, 10)],
        });
        let mut w = String::new();
        tabs_section(&mut w, &tabs);
        assert!(
            w.contains("| shared (`/?share=1`) | 1 | 128 | 6624 → 6752 | 801 | 5886 |"),
            "{w}"
        );
        assert!(
            w.contains("| one socket per tab | 10 | 0 | 6624 → 6752 | 801 | 5778 |"),
            "{w}"
        );

        let mut w = String::new();
        tabs_section(&mut w, &json!({ "error": "the UI did not build" }));
        assert!(w.contains("Not measured in this run: the UI did not build"));
        let mut w = String::new();
        tabs_section(&mut w, &Value::Null);
        assert!(
            w.is_empty(),
            "no section from a run without the browser part"
        );
    }
}
