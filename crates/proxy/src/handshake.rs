//! Stages 3 and 4 of a connection: the ClientHello decides by SNI what happens to it —
//! refused with `unrecognized_name` (no SNI, a name no service has, or no certificate
//! yet), handed to a `passthrough` service untouched, or terminated here — and then
//! rustls finishes the handshake with the name's certificate ([`crate::tls`]).
//!
//! Works on any byte stream, so each outcome is tested with an in-memory one.

use std::sync::Arc;

use snirouter_certs::{CertStore, Lookup};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use crate::hello;
use crate::metrics::HandshakeFailure;
use crate::routes::{RouteTable, ServicePolicy};
use crate::tls::ServerTls;

/// Where the handshake leaves a connection.
pub(crate) enum Outcome<IO> {
    /// TLS terminated here, for this SNI name (lowercase, no trailing dot).
    Terminated(Box<TlsStream<IO>>, String),
    /// A passthrough service: the raw stream, the bytes read so far, the service.
    Passthrough(IO, Vec<u8>, Arc<ServicePolicy>),
}

/// Why a connection was refused before TLS was established, and what to log.
pub(crate) type Refusal = (HandshakeFailure, String);

/// What the handshake consults: the routes (passthrough), the certificates, the TLS setup.
pub(crate) struct Handshake<'a> {
    pub(crate) routes: &'a RouteTable,
    pub(crate) certs: &'a CertStore,
    pub(crate) tls: &'a ServerTls,
}

impl Handshake<'_> {
    /// Reads the ClientHello from `io` and finishes (or refuses, or hands over) the handshake.
    pub(crate) async fn run<IO: AsyncRead + AsyncWrite + Unpin>(&self, mut io: IO) -> Result<Outcome<IO>, Refusal> {
        let hello = hello::read(&mut io).await.map_err(|e| (HandshakeFailure::Protocol, e.to_string()))?;
        let Some(sni) = hello.accepted.client_hello().server_name().map(|s| s.to_ascii_lowercase()) else {
            hello::reject_unrecognized_name(&mut io).await;
            return Err((
                HandshakeFailure::UnknownSni,
                "no SNI in ClientHello (connect by name, not by IP address); sent unrecognized_name".to_owned(),
            ));
        };
        let sni = sni.strip_suffix('.').map(str::to_owned).unwrap_or(sni);
        if let Some(svc) = self.routes.get(&sni).filter(|s| s.passthrough.is_some()) {
            return Ok(Outcome::Passthrough(io, hello.raw, Arc::clone(svc)));
        }
        if let Err(refusal) = self.certificate_ready(&sni) {
            hello::reject_unrecognized_name(&mut io).await;
            return Err(refusal);
        }
        let config = self.tls.for_hello(&hello.accepted.client_hello());
        let tls = StartHandshake::from_parts(hello.accepted, io)
            .into_stream(config)
            .await
            .map_err(|e| (HandshakeFailure::Protocol, format!("TLS handshake with {sni} failed: {e}")))?;
        Ok(Outcome::Terminated(Box::new(tls), sni))
    }

    /// The certificate gate: a name is served only once it has a certificate.
    fn certificate_ready(&self, sni: &str) -> Result<(), Refusal> {
        match self.certs.lookup(sni) {
            Lookup::Ready(_) => Ok(()),
            Lookup::Unknown => Err((
                HandshakeFailure::UnknownSni,
                format!("unknown SNI {sni:?}: no service has this name; sent unrecognized_name"),
            )),
            Lookup::NotReady { service, reason } => Err((
                HandshakeFailure::NoCertificate,
                format!("no certificate yet for {sni} (service {service}): {reason}; sent unrecognized_name"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// Sends a ClientHello for `sni` from a rustls client over an in-memory stream and
    /// returns the server end plus a task yielding what the client received.
    fn client(sni: &'static str) -> (DuplexStream, tokio::task::JoinHandle<Vec<u8>>) {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let trust = snirouter_tls::Trust::Roots(Arc::new(rustls::RootCertStore::empty()));
            let config = snirouter_tls::client_config(trust, &[]).expect("client config");
            let name = rustls::pki_types::ServerName::try_from(sni).expect("name");
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
            let mut hello = Vec::new();
            conn.write_tls(&mut hello).expect("hello");
            tokio::io::AsyncWriteExt::write_all(&mut client, &hello).await.expect("send");
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        });
        (server, task)
    }

    /// A route table with `services` (TOML) besides a plain `grafana`.
    fn table(services: &str) -> RouteTable {
        let toml = format!(
            "[listen]\nhttps = [\"127.0.0.1:0\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n{services}"
        );
        let config = snirouter_config::parse(&toml, "t.toml").expect("config");
        RouteTable::from_config(&config, "x.ts.net", None)
    }

    async fn run(
        routes: &RouteTable,
        certs: &Arc<CertStore>,
        io: DuplexStream,
    ) -> Result<Outcome<DuplexStream>, Refusal> {
        let tls = ServerTls::new(Arc::clone(certs)).expect("tls");
        Handshake { routes, certs, tls: &tls }.run(io).await
    }

    #[tokio::test]
    async fn an_unknown_name_is_refused_with_unrecognized_name() {
        let (io, answer) = client("nobody.x.ts.net");
        let certs = Arc::new(CertStore::new());
        let Err((reason, cause)) = run(&table(""), &certs, io).await else { panic!("refused") };
        assert_eq!(reason, HandshakeFailure::UnknownSni);
        assert!(cause.contains("nobody.x.ts.net"), "{cause}");
        assert_eq!(answer.await.expect("client"), hello::UNRECOGNIZED_NAME_ALERT);
    }

    #[tokio::test]
    async fn a_configured_name_without_a_certificate_is_refused_too() {
        let (io, answer) = client("grafana.x.ts.net");
        let certs = Arc::new(CertStore::new());
        certs.set_names(&[snirouter_certs::ServedName::tailscaled("grafana.x.ts.net", "grafana")]);
        let Err((reason, cause)) = run(&table(""), &certs, io).await else { panic!("refused") };
        assert_eq!(reason, HandshakeFailure::NoCertificate);
        assert!(cause.contains("service grafana"), "{cause}");
        assert_eq!(answer.await.expect("client"), hello::UNRECOGNIZED_NAME_ALERT);
    }

    #[tokio::test]
    async fn a_passthrough_name_is_handed_over_with_the_hello_bytes() {
        let (io, _answer) = client("nas.x.ts.net");
        let routes = table("[services.nas]\npassthrough = \"127.0.0.1:5001\"\n");
        let certs = Arc::new(CertStore::new());
        let Ok(Outcome::Passthrough(_, raw, svc)) = run(&routes, &certs, io).await else { panic!("passthrough") };
        assert_eq!(svc.name, "nas");
        assert_eq!(raw.first(), Some(&0x16), "the ClientHello record, to replay");
    }
}
