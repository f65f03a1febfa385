//! # snirouter-tls — what snirouter's TLS clients trust
//!
//! Every outgoing TLS connection snirouter makes gets its [`rustls::ClientConfig`] from
//! [`client_config`]: `https://` upstreams (crate `snirouter-proxy`), the Tailscale
//! control API (`snirouter-services`) and the demo's probes (the cli). One function
//! means one crypto provider (ring), rustls' safe protocol versions, and a [`Trust`]
//! value that says, in the type, what is verified:
//!
//! * [`Trust::MozillaRoots`] — the roots compiled in from `webpki-roots`, independent of
//!   the host's `/etc/ssl` (which a NixOS sandbox or a minimal container may not have);
//! * [`Trust::Roots`] — only the given roots (a private or test CA; [`roots_from_pem`]);
//! * [`Trust::AnyCertificate`] — `insecure_skip_verify`: any certificate is accepted,
//!   handshake signatures are still checked, like Caddy's `tls_insecure_skip_verify`.
//!
//! Server-side TLS (certificates by SNI) is `snirouter-certs`' job, not this crate's.

#![forbid(unsafe_code)]

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What a TLS client accepts as the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Chains to a Mozilla root (`webpki-roots`) and names the server.
    MozillaRoots,
    /// Chains to one of these roots and names the server.
    Roots(Arc<RootCertStore>),
    /// Anything: for upstreams with self-signed certificates (`insecure_skip_verify`).
    /// The handshake's signatures are still verified against the presented key.
    AnyCertificate,
}

/// A client configuration with the ring provider, rustls' safe default protocol
/// versions (TLS 1.2 and 1.3), no client certificate, `trust` and the ALPN protocols
/// `alpn` (in preference order; empty offers none).
pub fn client_config(trust: Trust, alpn: &[&[u8]]) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::MozillaRoots => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Roots(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        Trust::AnyCertificate => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))).with_no_client_auth()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A PEM bundle that cannot be used as trust anchors.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// A `CERTIFICATE` block is not valid PEM/base64.
    #[error("bad CA PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// A certificate could not be parsed as a trust anchor.
    #[error("bad CA certificate: {0}")]
    Certificate(#[from] rustls::Error),
    /// The bundle has no `CERTIFICATE` block.
    #[error("the CA bundle holds no certificate")]
    Empty,
}

/// Trust anchors from every `CERTIFICATE` block of a PEM bundle.
pub fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, RootsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err(RootsError::Empty);
    }
    Ok(Arc::new(roots))
}

/// Accepts any server certificate; handshake signatures are still verified, so the
/// connection is encrypted to whoever holds the key.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_and_trust_are_as_asked() {
        let c = client_config(Trust::MozillaRoots, &[b"h2", b"http/1.1"]).expect("config");
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let c = client_config(Trust::AnyCertificate, &[]).expect("config");
        assert!(c.alpn_protocols.is_empty());
    }

    #[test]
    fn pem_bundles_are_checked() {
        assert!(matches!(roots_from_pem(""), Err(RootsError::Empty)));
        assert!(matches!(
            roots_from_pem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            Err(RootsError::Pem(_))
        ));
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(roots_from_pem(junk), Err(RootsError::Certificate(_))), "{:?}", roots_from_pem(junk));
    }
}
