//! The demo's HTTPS probe: one `GET` over a fresh connection to a given address with a
//! given SNI, verified against given roots (the simulated tailscaled's CA), through
//! reqwest with the TLS settings of `snirouter-tls`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::RootCertStore;
use snirouter_tls::Trust;

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// Time from connect to the end of the body.
    pub latency: Duration,
}

/// `GET https://NAME{path}` on `addr` (SNI and Host `name`), within `timeout`.
pub(crate) async fn get(
    addr: SocketAddr,
    name: &str,
    path: &str,
    roots: Arc<RootCertStore>,
    timeout: Duration,
) -> Result<Answer, String> {
    let tls = snirouter_tls::client_config(Trust::Roots(roots), &[b"http/1.1"]).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(name, addr)
        .no_proxy()
        .timeout(timeout)
        .build()
        .map_err(|e| chain(&e))?;
    let started = Instant::now();
    let answer = async {
        let resp = client.get(format!("https://{name}:{}{path}", addr.port())).send().await?;
        let status = resp.status().as_u16();
        Ok(Answer { status, body: resp.bytes().await?, latency: started.elapsed() })
    };
    answer.await.map_err(
        |e: reqwest::Error| {
            if e.is_timeout() { format!("no answer within {}s", timeout.as_secs()) } else { chain(&e) }
        },
    )
}

/// An error and its causes, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let causes = std::iter::successors(Some(e), |e| e.source());
    causes.map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
