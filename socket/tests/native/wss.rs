//! `wss://` end to end (feature `native-rustls`): the wrapper through the
//! testbed's TLS front (rustls, with a CA made when the test starts) to the
//! real server. The front's CA is trusted with
//! `Config::with_root_certificate`, as an application behind a private CA
//! would trust its own; without it the handshake fails, and the reported
//! cause says it was the certificate.

use buffered_socket::CloseInfo;
use testbed::{TestServer, TlsFront, quiet_config};

use super::*;

/// The real server (no timed pushes, no pings) and a TLS front before it.
async fn server_behind_tls() -> (TestServer, TlsFront) {
    let server = TestServer::start(quiet_config(&[]).unwrap()).await.unwrap();
    let front = TlsFront::start(server.addr).await.unwrap();
    (server, front)
}

/// The rustls error under a transport error's cause: tokio-tungstenite
/// reports a failed TLS handshake as `tungstenite::Error::Io`, holding
/// rustls's error.
fn rustls_error(error: &TransportError) -> Option<&rustls::Error> {
    let TransportError::Socket(cause) = error else {
        return None;
    };
    let tungstenite::Error::Io(io) = cause.downcast_ref::<tungstenite::Error>()? else {
        return None;
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn errors(rec: &Recorder) -> Vec<TransportError> {
    rec.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Error(err) => Some(err),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_over_wss_through_the_tls_front_whose_root_it_trusts() {
    let (server, front) = server_behind_tls().await;
    let socket = Socket::new(
        Config::new(front.wss_url("/ws")).with_root_certificate(front.root_certificate()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    assert_eq!(socket.send(echo(1)), Ok(SendOutcome::Sent));
    assert_eq!(socket.send(vec![1u8, 2, 3]), Ok(SendOutcome::Sent));
    wait_for("the echoes", LONG, || {
        rec.echo_ids() == [1]
            && rec.count(|e| matches!(e, Event::Message(Message::Binary(b)) if b == &[1, 2, 3]))
                == 1
    })
    .await;
    assert_eq!(front.handshakes(), 1);
    assert_eq!(errors(&rec), []);
    drop(socket);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_front_cuts_the_connection_it_reconnects_over_wss_and_resumes() {
    let (server, front) = server_behind_tls().await;
    let socket = Socket::new(
        Config::new(front.wss_url("/ws"))
            .with_root_certificate(front.root_certificate())
            .with_reliable(true)
            .with_backoff(fast_backoff()),
    )
    .unwrap();
    let rec = Recorder::new(&socket);
    wait_for("open", LONG, || socket.state() == State::Open).await;
    assert_eq!(socket.send(echo(1)), Ok(SendOutcome::Sent));
    wait_for("echo 1", LONG, || rec.echo_ids() == [1]).await;

    front.cut_all();
    // Sent whether or not the wrapper has heard of the cut yet: reliable
    // mode resends or flushes it on the next connection.
    socket.send(echo(2)).unwrap();
    wait_for("the resume", LONG, || {
        rec.count(|e| matches!(e, Event::Resumed { .. })) >= 1
    })
    .await;
    wait_for("echo 2", LONG, || rec.echo_ids().len() >= 2).await;
    socket.send(echo(3)).unwrap();
    wait_for("echo 3", LONG, || rec.echo_ids().contains(&3)).await;
    assert_eq!(rec.echo_ids(), [1, 2, 3]);

    // The cut is a reset, with no close frame and no TLS close_notify.
    let closes: Vec<CloseInfo> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Close(close) => Some(close),
            _ => None,
        })
        .collect();
    assert!(!closes.is_empty());
    assert!(
        closes.iter().all(|c| c.code == 1006 && !c.was_clean),
        "{closes:?}"
    );
    // A new TLS handshake for each connection, each with the trusted root.
    assert!(front.handshakes() >= 2, "{} handshakes", front.handshakes());
    assert!(
        errors(&rec).iter().all(|e| rustls_error(e).is_none()),
        "{:?}",
        errors(&rec)
    );
    assert_eq!(
        rec.count(|e| matches!(e, Event::Gap { .. } | Event::ResumeFailed { .. })),
        0
    );
    drop(socket);
    server.shutdown().await.unwrap();
}

/// Without the front's root the handshake fails on the certificate: the
/// first attempt's error says so (the retries that follow, with the
/// default backoff, are not waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_root_the_handshake_fails_on_an_unknown_issuer() {
    let (server, front) = server_behind_tls().await;
    let socket = Socket::new(Config::new(front.wss_url("/ws"))).unwrap();
    let rec = Recorder::new(&socket);
    wait_for("an error", LONG, || !errors(&rec).is_empty()).await;
    let first = errors(&rec).remove(0);
    eprintln!("the certificate failure: {first}");
    assert_eq!(
        rustls_error(&first),
        Some(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        )),
        "{first:?}"
    );
    assert_ne!(socket.state(), State::Open);
    assert_eq!(front.handshakes(), 0);
    drop(socket);
    server.shutdown().await.unwrap();
}

/// A root that is not a certificate is refused when the socket is made,
/// with its index, rather than failing every attempt later.
#[tokio::test(flavor = "current_thread")]
async fn a_root_that_is_not_a_certificate_is_refused_by_new() {
    // Only the front's root is needed: its upstream, a listener of the
    // test's own, is never reached.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = TlsFront::start(upstream.local_addr().unwrap())
        .await
        .unwrap();
    let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let config = Config::new(front.wss_url("/ws"))
        .with_root_certificate(front.root_certificate())
        .with_root_certificate(pem.as_slice());
    let Err(Error::InvalidRootCertificate { index, cause }) = Socket::new(config) else {
        panic!("a PEM text was taken as a DER certificate");
    };
    assert_eq!(index, 1);
    assert!(
        matches!(
            cause.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{cause:?}"
    );
    // The good root alone is fine (the socket is dropped before it connects anywhere).
    let config = Config::new(front.wss_url("/ws")).with_root_certificate(front.root_certificate());
    assert!(Socket::new(config).is_ok());
}
