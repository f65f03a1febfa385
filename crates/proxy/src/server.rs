//! The server: the state every connection of every listener shares — the route table
//! (swappable at runtime), the certificate store, the TLS setup, the forwarder, the
//! limits and the counters. The stages a connection goes through are in
//! [`crate::listener`] (accept, the stage sequence), [`crate::handshake`] and
//! [`crate::serve_http`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use snirouter_certs::CertStore;

use crate::access_log::{AccessLog, OpenError};
use crate::admit::Admission;
use crate::budget::ProcessBudget;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::options::ProxyOptions;
use crate::refusals::Refusals;
use crate::routes::RouteTable;
use crate::tls::ServerTls;
use crate::workers::Workers;

/// The data path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The access log file could not be opened.
    #[error("{0}")]
    AccessLog(#[from] OpenError),
}

/// The shared state of the data path.
pub struct Server {
    pub(crate) routes: ArcSwap<RouteTable>,
    pub(crate) certs: Arc<CertStore>,
    pub(crate) tls: ServerTls,
    pub(crate) forwarder: Forwarder,
    pub(crate) opts: ProxyOptions,
    pub(crate) admission: Admission,
    /// The process-wide memory budget for unread answers.
    pub(crate) budget: Arc<ProcessBudget>,
    /// Refused and closed connections, for the summarizing log and the metrics.
    pub(crate) refusals: Arc<Refusals>,
    pub(crate) metrics: Metrics,
    /// The access log (`[log] access`, per service `access_log`).
    pub(crate) access_log: Arc<AccessLog>,
    /// Thread-per-core connection workers; `None` runs connections on the caller's
    /// runtime (used when the worker threads cannot be started).
    pub(crate) workers: Option<Workers>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("active", &self.admission.active()).finish()
    }
}

impl Server {
    /// A router serving `routes` with certificates from `certs`; `whois` (tailscaled's
    /// LocalAPI) answers `tailscale_identity` lookups (`None`: nobody is known).
    pub fn new(
        routes: RouteTable,
        certs: Arc<CertStore>,
        opts: ProxyOptions,
        whois: Option<snirouter_localapi::LocalClient>,
    ) -> Result<Arc<Server>, ServerError> {
        let tls = ServerTls::new(Arc::clone(&certs))?;
        let access_log = AccessLog::new(opts.access_format, opts.access_file.clone())?;
        let workers = match Workers::per_core() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start worker threads; serving connections on the main runtime");
                None
            }
        };
        Ok(Arc::new(Server {
            routes: ArcSwap::from_pointee(routes),
            certs,
            tls,
            forwarder: Forwarder::new(&opts, whois)?,
            admission: Admission::new(opts.max_connections, opts.max_connections_per_client, opts.buffer_per_client),
            budget: ProcessBudget::new(opts.buffer_total),
            refusals: Refusals::new(),
            opts,
            metrics: Metrics::default(),
            access_log,
            workers,
        }))
    }

    /// The access log, to reopen (SIGUSR1) or reconfigure (reload).
    pub fn access_log(&self) -> &AccessLog {
        &self.access_log
    }

    /// Replaces the route table; requests already routed are unaffected.
    pub fn set_routes(&self, routes: RouteTable) {
        self.routes.store(Arc::new(routes));
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// Appends the data-path metrics (connections, handshake failures, per-service
    /// requests, errors and latency) to `out`.
    pub fn render_metrics(&self, out: &mut crate::metrics::Exposition) {
        crate::metrics::render_router(&self.metrics, self.active_connections(), &self.routes.load(), out);
        crate::metrics::render_access_log(self.access_log.counters(), out);
        self.budget.render(out);
        self.refusals.render(out);
    }

    /// Server-wide counters (handshake failures).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Connections open right now, WebSocket tunnels included.
    pub fn active_connections(&self) -> usize {
        self.admission.active()
    }

    /// Tells the data path this node's own tailnet addresses (from tailscaled's status):
    /// a PROXY source among them is this host, which `allow = ["local"]` admits.
    pub fn set_own_addresses(&self, addresses: Vec<std::net::IpAddr>) {
        self.forwarder.set_own_addresses(addresses);
    }

    /// WebSocket (upgraded) tunnels open right now.
    pub fn tunnels(&self) -> usize {
        self.forwarder.tunnels().count()
    }
}

impl Server {
    /// The options the data path runs with.
    pub(crate) fn options(&self) -> &ProxyOptions {
        &self.opts
    }

    /// The request forwarder (per-request policy and upstreams).
    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }
}
