//! The load generator's modes (echo, burst, idle) against our server and
//! against fixtures that misbehave: a wrong echo or a push out of order
//! fails the run.

use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use shared::PushEncoder;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::burst::burst;
use super::echo::echo;
use super::idle::idle;

/// Our server on a free loopback port, pushes and pings off, as the benchmarks run it.
async fn our_server() -> Result<(String, testbed::TestServer)> {
    let server = testbed::TestServer::start(testbed::quiet_config(&[])?).await?;
    Ok((server.ws_url(""), server))
}

/// A loopback server that answers each connection with `serve`.
async fn fixture<F, Fut>(serve: F) -> Result<String>
where
    F: Fn(WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serve = std::sync::Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    let _ = serve(ws).await;
                }
            });
        }
    });
    Ok(format!("ws://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_measures_our_server_and_checks_what_it_gets() -> Result<()> {
    let (base, server) = our_server().await?;
    let short = Duration::from_millis(300);
    for (path, typed) in [("/echo", false), ("/ws", true)] {
        let r = echo(
            &format!("{base}{path}"),
            4,
            20,
            Duration::ZERO,
            short,
            typed,
            None,
        )
        .await?;
        assert!(r["messages"].as_u64() > Some(0), "{r}");
        assert!(r["p50_us"].as_u64() > Some(0), "{r}");
    }
    let r = burst(&format!("{base}/ws?burst=5000"), 5000).await?;
    assert_eq!(r["count"], 5000);
    assert!(r["first_to_last_ms"].as_f64() > Some(0.0), "{r}");
    // The server runs in this process: its RSS is ours.
    let r = idle(&format!("{base}/ws"), 50, std::process::id()).await?;
    assert_eq!(r["conns"], 50);
    assert!(
        r["rss_after_kib"].as_u64() >= r["rss_before_kib"].as_u64(),
        "{r}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_server_echoes_and_bursts_in_order() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("ws://{}", listener.local_addr()?);
    let server = tokio::spawn(crate::peers::raw::serve_on(
        listener,
        4096,
        crate::peers::raw::BurstWrite::Feed,
    ));
    let r = echo(
        &format!("{base}/"),
        2,
        1024,
        Duration::ZERO,
        Duration::from_millis(200),
        false,
        None,
    )
    .await?;
    assert!(r["messages"].as_u64() > Some(0), "{r}");
    let r = burst(&format!("{base}/?burst=3000"), 3000).await?;
    assert_eq!(r["count"], 3000);
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_echo_or_a_push_out_of_order_fails_the_run() -> Result<()> {
    let altering = fixture(|mut ws| async move {
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            ws.send(Message::text(format!("{text}!"))).await?;
        }
        Ok(())
    })
    .await?;
    let err = echo(
        &altering,
        1,
        20,
        Duration::ZERO,
        Duration::from_millis(200),
        false,
        None,
    )
    .await
    .expect_err("an altered echo must fail the run");
    assert!(format!("{err:#}").contains("differs"), "{err:#}");

    let skipping = fixture(|mut ws| async move {
        for seq in [1, 2, 4, 3] {
            ws.send(Message::text(PushEncoder::new(0, "b").encode(seq)))
                .await?;
        }
        while ws.next().await.is_some() {}
        Ok(())
    })
    .await?;
    let err = burst(&skipping, 4)
        .await
        .expect_err("a push out of order must fail the run");
    assert!(
        format!("{err:#}").contains("push 4 arrived where 3 was expected"),
        "{err:#}"
    );
    Ok(())
}
