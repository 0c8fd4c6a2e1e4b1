//! [`TlsFront`]: `wss://` in front of a real server, for the native
//! wrapper's TLS tests, as a TLS-terminating load balancer would be.
//!
//! It listens on a loopback port of its own (`127.0.0.1:0`), terminates TLS
//! with rustls (ring) and forwards the plaintext to the server, byte for
//! byte. Its certificates are made when it starts (with rcgen): a CA of its
//! own, which no system trusts, and a certificate for `localhost` and
//! `127.0.0.1` signed by it. A client connects only if it trusts that CA
//! ([`TlsFront::root_certificate`], DER), which is what a private CA looks
//! like to an application; without it the handshake fails on an unknown
//! issuer. [`TlsFront::cut_all`] resets every live connection (no TLS
//! `close_notify`, no close frame), as a crashed balancer would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The TLS front; dropping it stops it and resets every connection.
pub struct TlsFront {
    /// Where clients connect (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    root: CertificateDer<'static>,
    handshakes: Arc<AtomicU64>,
    /// Bumped by `cut_all`; every connection watches it.
    generation: Arc<watch::Sender<u64>>,
    stop: CancellationToken,
}

impl TlsFront {
    /// Makes the certificates, listens on a free loopback port and forwards
    /// every connection, once its TLS handshake is done, to `upstream`.
    ///
    /// # Errors
    ///
    /// When the certificates cannot be made or no port can be bound.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let (root, chain, key) = certificates()?;
        // ring, named here as the socket wrapper names it: the tree holds no
        // other provider, and naming it keeps the choice away from the
        // process default.
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS front's certificate")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let handshakes = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(watch::channel(0).0);
        let stop = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            acceptor,
            upstream,
            handshakes.clone(),
            generation.clone(),
            stop.clone(),
        ));
        Ok(Self {
            addr,
            root,
            handshakes,
            generation,
            stop,
        })
    }

    /// `wss://127.0.0.1:PORT` followed by `path` (`/ws`, say).
    pub fn wss_url(&self, path: &str) -> String {
        format!("wss://{}{path}", self.addr)
    }

    /// The DER of the CA that signed the front's certificate: the one root a
    /// client must trust to connect.
    pub fn root_certificate(&self) -> &[u8] {
        &self.root
    }

    /// TLS handshakes completed so far (a client that refused the
    /// certificate completed none).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Relaxed)
    }

    /// Resets every live connection now, both sides: no TLS `close_notify`.
    pub fn cut_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut_all();
    }
}

/// A CA made now, and a server certificate for `localhost` and `127.0.0.1`
/// signed by it: the CA's DER, the chain to serve, the server's key.
fn certificates() -> Result<(
    CertificateDer<'static>,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "testbed TLS front CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "testbed TLS front");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    Ok((ca_cert.der().clone(), vec![server_cert.der().clone()], key))
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    handshakes: Arc<AtomicU64>,
    generation: Arc<watch::Sender<u64>>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        tokio::spawn(serve(
            client,
            acceptor.clone(),
            upstream,
            handshakes.clone(),
            generation.subscribe(),
        ));
    }
}

/// One connection: the handshake, then bytes both ways until a side closes
/// or a `cut_all` (both sides reset).
async fn serve(
    client: TcpStream,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    handshakes: Arc<AtomicU64>,
    mut cut_all: watch::Receiver<u64>,
) {
    let _ = client.set_nodelay(true);
    let mut tls = tokio::select! {
        // A handshake under way is dropped (the accept owns the stream).
        _ = cut_all.changed() => return,
        // A failed handshake (the client refused the certificate) just ends.
        accepted = acceptor.accept(client) => match accepted {
            Ok(tls) => tls,
            Err(_) => return,
        },
    };
    handshakes.fetch_add(1, Relaxed);
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let (client, _) = tls.into_inner();
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = cut_all.changed() => {
            let (client, _) = tls.into_inner();
            reset(client);
            reset(server);
        }
        _ = tokio::io::copy_bidirectional(&mut tls, &mut server) => {}
    }
}

/// Drops a socket with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    // Linger 0: close sends RST (and does not block).
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls::client::danger::ServerCertVerifier;

    use super::*;

    #[test]
    fn the_server_certificate_chains_to_the_root_for_both_names() {
        let (root, chain, _) = certificates().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(
                    &chain[0],
                    &[],
                    &name,
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap();
        }
    }
}
