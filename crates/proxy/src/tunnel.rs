//! Upgraded connections (WebSocket and other `Upgrade` protocols) after the `101`: the
//! client's and the upstream's streams are joined and bytes copied both ways until
//! either side closes.
//!
//! A tunnel is a first-class connection: it keeps its client connection's
//! [`Admitted`](crate::admit::Admitted) hold (so it counts in
//! `snirouter_active_connections` and in the connection limits), it is counted per
//! service (`snirouter_tunnels`, `snirouter status`), shutdown waits for open tunnels
//! within the grace period ([`Tunnels::drained`]), a reload leaves it alone (it holds
//! its own copy of the service), and `timeouts.tunnel_idle`, when set, closes one on
//! which nothing moved for that long.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::conn_info::ConnInfo;
use crate::idle;
use crate::routes::ServicePolicy;

/// The open tunnels of a router.
#[derive(Debug)]
pub(crate) struct Tunnels {
    open: watch::Sender<usize>,
    idle_limit: Option<Duration>,
}

/// One open tunnel; uncounted when dropped.
#[derive(Debug)]
struct Open {
    tunnels: Arc<Tunnels>,
    service: Arc<ServicePolicy>,
}

impl Tunnels {
    /// No tunnels yet; `idle_limit` is `timeouts.tunnel_idle`.
    pub(crate) fn new(idle_limit: Option<Duration>) -> Arc<Tunnels> {
        Arc::new(Tunnels { open: watch::Sender::new(0), idle_limit })
    }

    /// Tunnels open right now.
    pub(crate) fn count(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves when no tunnel is open.
    pub(crate) async fn drained(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives in `self`: the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn open(self: &Arc<Self>, service: &Arc<ServicePolicy>) -> Open {
        self.open.send_modify(|n| *n += 1);
        service.stats.tunnel_opened();
        Open { tunnels: Arc::clone(self), service: Arc::clone(service) }
    }

    /// Joins the two sides of an upgrade once both complete, on a task of its own.
    /// `conn` keeps the client connection's admission while the tunnel is open.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        service: &Arc<ServicePolicy>,
        conn: Arc<ConnInfo>,
    ) {
        let open = self.open(service);
        let idle_limit = self.idle_limit;
        tokio::spawn(async move {
            let service = &open.service.name;
            match tokio::join!(client, upstream) {
                (Ok(client), Ok(upstream)) => copy(client, upstream, idle_limit, service, &conn).await,
                (c, u) => tracing::info!(
                    service = %service,
                    client = %conn.client,
                    client_ok = c.is_ok(),
                    upstream_ok = u.is_ok(),
                    "upgrade did not complete"
                ),
            }
            drop(conn);
        });
    }
}

/// Copies both ways until one side closes or, with `idle_limit`, nothing moves.
async fn copy(
    client: hyper::upgrade::Upgraded,
    upstream: hyper::upgrade::Upgraded,
    idle_limit: Option<Duration>,
    service: &str,
    conn: &ConnInfo,
) {
    let activity = idle::Activity::new();
    let mut client = idle::Tracked::new(TokioIo::new(client), Arc::clone(&activity));
    let mut upstream = TokioIo::new(upstream);
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let quiet = async {
        match idle_limit {
            Some(limit) => idle::expired(&activity, limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = copied => match result {
            Ok((up, down)) => tracing::debug!(service = %service, client = %conn.client, bytes_up = up, bytes_down = down, "tunnel closed"),
            Err(e) => tracing::debug!(service = %service, client = %conn.client, error = %e, "tunnel ended with an error"),
        },
        () = quiet => tracing::info!(
            service = %service,
            client = %conn.client,
            idle_secs = idle_limit.unwrap_or_default().as_secs(),
            "closing tunnel: no data moved for timeouts.tunnel_idle"
        ),
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.service.stats.tunnel_closed();
        self.tunnels.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
