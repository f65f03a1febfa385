//! The server's TLS settings: TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`, session
//! tickets with rotating keys, certificates resolved by SNI from the `CertStore`, and
//! the cipher suite order.
//!
//! **Cipher suites.** Only AEAD suites with forward secrecy are offered. The server
//! prefers AES-128-GCM, like Go's `crypto/tls` (Caddy) on CPUs with AES instructions:
//! OpenSSL clients list AES-256-GCM-SHA384 first, and following them made SHA-384
//! (HKDF and the transcript hash) 20 % of a full handshake's instructions, while AES-256
//! costs 40 % more rounds per byte than AES-128 for no practical gain. A client whose
//! first choice is ChaCha20-Poly1305 — the sign of a device without AES hardware, as
//! Go also reads it — gets its own order instead.

use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as suite;
use rustls::server::ClientHello;
use rustls::{CipherSuite, ServerConfig};
use snirouter_certs::CertStore;

/// The server's cipher suite preference, most preferred first.
fn preferred_suites() -> Vec<rustls::SupportedCipherSuite> {
    vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The two server configurations: one that applies the server's suite order, one that
/// follows the client's. They share the certificate resolver, the ticket keys and the
/// session cache, so a session resumes whichever one it was made with.
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    server_order: Arc<ServerConfig>,
    client_order: Arc<ServerConfig>,
}

impl ServerTls {
    /// The settings for certificates from `certs`.
    pub(crate) fn new(certs: Arc<CertStore>) -> Result<ServerTls, rustls::Error> {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = preferred_suites();
        let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let client_order = Arc::new(cfg.clone());
        cfg.ignore_client_order = true;
        Ok(ServerTls { server_order: Arc::new(cfg), client_order })
    }

    /// The configuration to finish the handshake of `hello` with.
    pub(crate) fn for_hello(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        if prefers_chacha(hello.cipher_suites()) {
            Arc::clone(&self.client_order)
        } else {
            Arc::clone(&self.server_order)
        }
    }
}

/// Whether the client lists ChaCha20-Poly1305 before any AES-GCM suite.
fn prefers_chacha(offered: &[CipherSuite]) -> bool {
    offered
        .iter()
        .find_map(|s| match *s {
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(true),
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha_first_means_follow_the_client() {
        use CipherSuite as C;
        assert!(prefers_chacha(&[C::TLS13_CHACHA20_POLY1305_SHA256, C::TLS13_AES_128_GCM_SHA256]));
        assert!(!prefers_chacha(&[C::TLS13_AES_256_GCM_SHA384, C::TLS13_CHACHA20_POLY1305_SHA256]));
        // Signalling values such as GREASE and the renegotiation SCSV are skipped.
        assert!(prefers_chacha(&[C::Unknown(0x0a0a), C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]));
        assert!(!prefers_chacha(&[C::TLS_EMPTY_RENEGOTIATION_INFO_SCSV]));
    }

    #[test]
    fn preferred_suites_are_the_rustls_defaults_with_aes_128_first() {
        let suites = preferred_suites();
        assert_eq!(suites[0].suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
        let default = rustls::crypto::ring::default_provider().cipher_suites;
        assert_eq!(suites.len(), default.len(), "the same suites as rustls' defaults, reordered");
        for s in &default {
            assert!(suites.iter().any(|p| p.suite() == s.suite()), "{:?} kept", s.suite());
        }
    }
}
