//! The cluster's section of `docs/BENCHMARKS.md` (issue 14), from the
//! results of [`crate::scenarios::cluster`].

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::harness::stats::{list, num};

/// The section's first and last lines in `docs/BENCHMARKS.md`.
const BEGIN: &str = "<!-- kept:cluster -->";
const END: &str = "<!-- /kept:cluster -->";

/// Replaces (or appends) the section in `docs/BENCHMARKS.md`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_section(docs: &Path, md: &str) -> Result<()> {
    super::kept::write_kept(docs, BEGIN, END, md)
}

/// The section, from the cluster run's results.
pub fn markdown(result: &Value) -> String {
    let broadcast = &result["broadcast"];
    let resume = &result["resume"];
    let echo = |store: &str| {
        result["reliable_echo"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["store"] == store))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (redis, memory) = (echo("redis"), echo("memory"));
    let conns = broadcast["conns"].as_u64().unwrap_or(0);
    format!(
        "{BEGIN}\n## The cluster (issue 14)\n\n\
         Measured {date} by `cargo xtask bench` (`bench run`, after the rest;\n\
         `cargo xtask bench --cluster` alone): release nodes on core 0, two of\n\
         them sharing a `redis-server` (no persistence) on loopback and one in\n\
         memory, the load process on core 1.\n\n\
         | scenario | Redis | memory | Redis / memory |\n|---|---|---|---|\n\
         | reliable echo, 10 connections x 20 B, msg/s (median of rounds {redis_rounds} / {memory_rounds}) | {redis_rate:.0} | {memory_rate:.0} | {rate_ratio:.2}x |\n\
         | reliable echo, p99 | {redis_p99:.2} ms | {memory_p99:.2} ms | {p99_ratio:.2}x |\n\n\
         | scenario | result |\n|---|---|\n\
         | time to resume on another node: from a cut until `Resumed`, {resumes} resumes | median **{resume_median:.1} ms**, p99 {resume_p99:.1} ms, max {resume_max:.1} ms |\n\
         | one broadcast to {conns} clients, {per_node} on each of 2 nodes, asked of node A: until the last client read it | median **{median:.1} ms** (max {max:.1} ms; rounds {rounds}) |\n\n\
         The reliable echo runs the real wrapper (`buffered_socket::Socket`,\n\
         native, reliable mode) in a closed loop: on Redis each batch a\n\
         connection writes is stored first (one Lua script, write-through),\n\
         so the ratio is the price of surviving a node's death. The resume\n\
         runs one reliable client behind the round-robin fault proxy over the\n\
         two nodes: each cut sends its reconnect to the other node, which\n\
         loads the session from Redis (reconnect backoff 1 ms: the figure is\n\
         the cluster's, not the backoff's). The broadcast's time runs from the\n\
         request to node A until the load process has read the push on all\n\
         {conns} connections: node A's own delivery, the hand-over to node B\n\
         through B's Redis command stream, B's delivery, and the load process\n\
         reading them all on one core. Each answer counted {conns} delivered\n\
         and no node unanswered.\n\n\
         {END}\n",
        date = crate::harness::machine::date(),
        redis_rounds = list(&redis["rounds_msgs_per_s"]),
        memory_rounds = list(&memory["rounds_msgs_per_s"]),
        redis_rate = num(&redis, "msgs_per_s"),
        memory_rate = num(&memory, "msgs_per_s"),
        rate_ratio = num(&redis, "msgs_per_s") / num(&memory, "msgs_per_s"),
        redis_p99 = num(&redis, "p99_us") / 1000.0,
        memory_p99 = num(&memory, "p99_us") / 1000.0,
        p99_ratio = num(&redis, "p99_us") / num(&memory, "p99_us"),
        resumes = resume["rounds"],
        resume_median = num(resume, "median_ms"),
        resume_p99 = num(resume, "p99_ms"),
        resume_max = num(resume, "max_ms"),
        per_node = conns / 2,
        median = num(broadcast, "median_ms"),
        max = num(broadcast, "max_ms"),
        rounds = list(&broadcast["rounds_ms"]),
    )
}
