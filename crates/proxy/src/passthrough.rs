//! TLS passthrough (`passthrough = "host:port"`): the connection is routed by the
//! ClientHello's SNI only and forwarded untouched to a backend that terminates TLS
//! itself. The bytes already read for the ClientHello (kept by [`crate::hello`]) are
//! replayed first, then both directions are copied until either side closes or nothing
//! moves for `timeouts.idle`. No certificate is needed (or requested) for such a name.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::idle;
use crate::routes::ServicePolicy;

/// Why a passthrough connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassthroughError {
    /// The backend could not be reached.
    #[error(
        "cannot connect to passthrough backend {target}: {source}; fix: start the backend or correct passthrough in the config"
    )]
    Connect {
        /// `host:port`.
        target: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The backend did not accept the connection in time.
    #[error("passthrough backend {target} did not accept the connection within {secs}s (timeouts.upstream_connect)")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The timeout.
        secs: u64,
    },
    /// Replaying the ClientHello failed.
    #[error("passthrough backend {target} closed the connection while the ClientHello was replayed: {source}")]
    Replay {
        /// `host:port`.
        target: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Connects to the service's backend, replays `hello`, then copies both ways.
pub(crate) async fn run(
    mut client: TcpStream,
    hello: Vec<u8>,
    svc: Arc<ServicePolicy>,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<(u64, u64), PassthroughError> {
    let Some(target) = svc.passthrough.as_ref() else { return Ok((0, 0)) };
    let name = target.to_string();
    let mut backend =
        match tokio::time::timeout(connect_timeout, TcpStream::connect((target.host.as_str(), target.port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(PassthroughError::Connect { target: name, source }),
            Err(_) => return Err(PassthroughError::Timeout { target: name, secs: connect_timeout.as_secs() }),
        };
    let _ = backend.set_nodelay(true);
    backend.write_all(&hello).await.map_err(|source| PassthroughError::Replay { target: name.clone(), source })?;
    let activity = idle::Activity::new();
    let mut tracked = idle::Tracked::new(&mut client, Arc::clone(&activity));
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut tracked, &mut backend) => {
            match copied {
                Ok((up, down)) => Ok((up + hello.len() as u64, down)),
                Err(e) => {
                    tracing::debug!(service = %svc.name, backend = %name, error = %e, "passthrough connection ended with an error");
                    Ok((hello.len() as u64, 0))
                }
            }
        }
        _ = idle::expired(&activity, idle_timeout) => {
            tracing::debug!(service = %svc.name, backend = %name, idle_secs = idle_timeout.as_secs(), "closing idle passthrough connection (timeouts.idle)");
            Ok((hello.len() as u64, 0))
        }
    }
}
