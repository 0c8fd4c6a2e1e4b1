//! Heartbeat death, natively: the fault proxy's path goes silent (it swallows
//! every byte both ways and closes nothing, as a dead NAT entry or route
//! would), so no error and no close ever reaches the wrapper. Only its
//! heartbeat can tell: a ping that gets no answer. Reliable mode then
//! resumes once the path carries bytes again, and what was sent into the
//! silence arrives once.

use buffered_socket::{CloseInfo, Heartbeat};

use super::*;

/// Short periods, so the test takes about a second: a ping after 100 ms
/// without a message, death 300 ms after an unanswered ping.
const HEARTBEAT: Heartbeat = Heartbeat {
    interval_ms: 100,
    timeout_ms: 300,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_path_is_found_dead_by_the_heartbeat_and_what_was_sent_meanwhile_arrives_once() {
    with_testbed(|tb| async move {
        let h = Native(tb);
        let socket = Socket::new(
            Config::new(format!("{}/ws", h.proxy_base()))
                .with_reliable(true)
                .with_heartbeat(HEARTBEAT)
                // An attempt during the silence gets no upgrade answer: it
                // is abandoned at this timeout and retried.
                .with_connect_timeout_ms(500)
                .with_backoff(fast_backoff()),
        )
        .unwrap();
        let rec = Recorder::new(&socket);
        wait_for("open", LONG, || socket.state() == State::Open).await;
        assert_eq!(socket.send(echo(1)), Ok(SendOutcome::Sent));
        wait_for("echo 1", LONG, || rec.echo_ids() == [1]).await;

        assert_eq!(h.control("/proxy/silent?on=1").await.0, 200);
        // Written into the silence: the wrapper still sees an open
        // connection (unless the heartbeat was already quicker than this
        // test, on a loaded machine: then they are queued, which is fine too).
        let into_the_silence: Vec<_> = (2..=4).map(|id| socket.send(echo(id))).collect();
        eprintln!("sent into the silence: {into_the_silence:?}");
        assert!(into_the_silence.iter().all(Result::is_ok));
        let written = into_the_silence
            .iter()
            .filter(|outcome| **outcome == Ok(SendOutcome::Sent))
            .count();

        let closes = || {
            rec.events()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Close(close) => Some(close),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        wait_for("the heartbeat's close", LONG, || !closes().is_empty()).await;
        // The close is the heartbeat's: the transport itself saw nothing
        // (no error, no close frame, no FIN).
        assert_eq!(
            closes()[0],
            CloseInfo {
                url: socket.url(),
                code: 1006,
                reason: "heartbeat timeout".into(),
                was_clean: false,
            }
        );
        assert_eq!(rec.count(|e| matches!(e, Event::Error(_))), 0);
        assert!(
            h.control("/proxy/swallowed")
                .await
                .1
                .parse::<u64>()
                .unwrap()
                > 0,
            "the proxy swallowed nothing"
        );

        // Reconnect attempts fail while the path is silent: the first is
        // abandoned at the connect timeout, and what is sent now is queued.
        wait_for("a failed attempt during the silence", LONG, || {
            socket.stats().attempt >= 2
        })
        .await;
        assert_ne!(socket.state(), State::Open);
        for id in 5..=7 {
            assert_eq!(socket.send(echo(id)), Ok(SendOutcome::Queued));
        }

        assert_eq!(h.control("/proxy/silent?on=0").await.0, 200);
        wait_for("the resume", LONG, || {
            rec.count(|e| matches!(e, Event::Resumed { .. })) >= 1
        })
        .await;
        wait_for("echoes 1 to 7", LONG, || rec.echo_ids().len() >= 7).await;
        // A last echo after everything else: a duplicate of an earlier one
        // would have come before it (one connection, in order).
        socket.send(echo(8)).unwrap();
        wait_for("echo 8", LONG, || rec.echo_ids().contains(&8)).await;
        assert_eq!(rec.echo_ids(), (1..=8).collect::<Vec<_>>());
        assert_eq!(
            rec.count(|e| matches!(e, Event::Gap { .. } | Event::ResumeFailed { .. })),
            0,
            "{:?}",
            rec.events()
        );
        // What was written into the silence was never acknowledged: resent.
        let resent: usize = rec
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Resumed { resent } => Some(*resent),
                _ => None,
            })
            .sum();
        assert!(resent >= written, "resent {resent}, written {written}");
        assert_eq!(socket.state(), State::Open);
    })
    .await;
}
