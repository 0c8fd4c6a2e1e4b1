//! `wss://` (feature `native-rustls`): the rustls client config of a socket.
//!
//! Built once per socket, in [`super::Socket::new`], rather than left to
//! tokio-tungstenite's default: that default trusts the webpki roots alone
//! and takes the process's default crypto provider, which rustls can only
//! guess when exactly one provider is compiled in (an application that also
//! enables aws-lc-rs would make every connect panic). Here the provider is
//! ring, named, and the application's extra roots
//! ([`Config::with_root_certificate`](crate::Config::with_root_certificate))
//! join the webpki ones; a root that is not a certificate is refused when
//! the socket is made.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::Connector;

use crate::Error;
use crate::cause::ErrorCause;

/// A connector that trusts the webpki roots and `extra` (DER), on ring.
///
/// # Errors
///
/// [`Error::InvalidRootCertificate`] for the first of `extra` that rustls
/// cannot take as a root.
pub(super) fn connector(extra: &[Vec<u8>]) -> Result<Connector, Error> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (index, der) in extra.iter().enumerate() {
        roots
            .add(CertificateDer::from(der.as_slice()))
            .map_err(|err| Error::InvalidRootCertificate {
                index,
                cause: ErrorCause::new(err),
            })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring's provider supports rustls's default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_that_is_not_a_certificate_is_refused_with_its_index() {
        assert!(connector(&[]).is_ok());
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let Err(Error::InvalidRootCertificate { index, cause }) = connector(&[pem]) else {
            panic!("PEM text is not DER");
        };
        assert_eq!(index, 0);
        assert!(cause.downcast_ref::<rustls::Error>().is_some(), "{cause:?}");
    }
}
