//! Wiring: config → LocalAPI client → certificate store and manager → listeners.
//!
//! Start order matters for availability: cached certificates are loaded and the
//! listeners bound *before* tailscaled is asked for anything, so a restart while
//! tailscaled is slow or down still serves every name that has a valid cache.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use snirouter_certs::{CertManager, CertStore, DiskCache, ManagerOptions};
use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use snirouter_proxy::{ListenerKind, ProxyOptions, RouteTable, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The LocalAPI client could not be built.
    #[error("LocalAPI client: {0}")]
    LocalApi(#[from] snirouter_localapi::Error),
    /// The cache directory is unusable.
    #[error(
        "certificate cache: {0}\n  fix: create the directory owned by the user snirouter runs as, or set [cache] dir"
    )]
    Cache(#[from] snirouter_certs::cache::CacheError),
    /// Two services end up with the same name once the tailnet suffix is known.
    #[error("{0}")]
    Names(snirouter_config::Diagnostics),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}\n  fix: {fix}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        fix: &'static str,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// Signal handling could not be installed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// A running router.
pub struct Daemon {
    /// Every bound listener with its kind.
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    /// The certificate store.
    pub store: Arc<CertStore>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    manager: Arc<CertManager>,
    #[allow(dead_code)]
    router: Arc<Router>,
}

impl Daemon {
    /// Starts everything described by `config`.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let client = LocalClient::new(&config.tailscale.socket)?;
        let cache = DiskCache::open(&config.cache.dir)?;
        let suffix = magic_dns_suffix(&config, &client, &cache).await;
        config.check_fqdns(&suffix).map_err(StartError::Names)?;

        let store = Arc::new(CertStore::new());
        let names: Vec<(String, String)> = config.services.iter().map(|s| (s.fqdn(&suffix), s.name.clone())).collect();
        store.set_names(&names);

        let opts = ManagerOptions { request_timeout: config.timeouts.cert_request, ..ManagerOptions::default() };
        let manager = CertManager::new(Arc::clone(&store), client, Some(cache), opts);
        let cached = manager.load_cache();

        let table = RouteTable::from_config(&config, &suffix, None);
        let router = Router::new(table, Arc::clone(&store), ProxyOptions::from_config(&config))?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut listeners = Vec::new();
        let wanted = config
            .listen
            .https
            .iter()
            .map(|a| (ListenerKind::Tls, *a))
            .chain(config.listen.proxy_protocol.iter().map(|a| (ListenerKind::ProxyV2, *a)));
        for (kind, addr) in wanted {
            let listener = bind(addr).await?;
            let local = listener.local_addr().unwrap_or(addr);
            tracing::info!(address = %local, kind = ?kind, "listening");
            listeners.push((kind, local));
            let grace = config.timeouts.idle.min(Duration::from_secs(30));
            tasks.spawn(Arc::clone(&router).serve(listener, kind, shutdown_rx.clone(), grace));
        }

        manager.start();
        tracing::info!(
            services = names.len(),
            cached_certificates = cached,
            suffix = %suffix,
            "snirouter ready"
        );
        crate::sdnotify::notify("READY=1");
        Ok(Daemon { listeners, store, shutdown, tasks, manager, router })
    }

    /// The first listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Stops accepting, lets open connections finish within the grace period, stops
    /// certificate work.
    pub async fn shutdown(mut self) {
        crate::sdnotify::notify("STOPPING=1");
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.manager.shutdown();
    }
}

/// `run`: start, then serve until SIGINT or SIGTERM.
pub async fn run_until_signal(config: Config) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let daemon = Daemon::start(config).await?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; draining connections"),
        _ = term.recv() => tracing::info!("SIGTERM; draining connections"),
    }
    daemon.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The suffix names are built from: the config's override, else the one cached from
/// the last run (so a restart does not wait for tailscaled), else tailscaled's status —
/// waited for, with a log line per failure naming the cause and the fix.
async fn magic_dns_suffix(config: &Config, client: &LocalClient, cache: &DiskCache) -> String {
    if let Some(s) = &config.tailscale.magic_dns_suffix {
        return s.clone();
    }
    if let Some(s) = cache.state().magic_dns_suffix {
        // Confirm in the background; a renamed tailnet needs a restart to rename names.
        let client = client.clone();
        let cached = s.clone();
        tokio::spawn(async move {
            if let Ok(status) = client.status().await
                && let Some(live) = status.magic_dns_suffix()
                && live != cached
            {
                tracing::error!(cached = %cached, tailscaled = %live, "the tailnet's MagicDNS suffix changed; restart snirouter to serve the new names");
            }
        });
        return s;
    }
    let mut delay = Duration::from_secs(1);
    loop {
        match client.status().await {
            Ok(status) => match status.magic_dns_suffix() {
                Some(s) => {
                    let s = s.to_owned();
                    if let Err(e) = cache.update_state(|st| st.magic_dns_suffix = Some(s.clone())) {
                        tracing::warn!(error = %e, "cannot remember the MagicDNS suffix in the cache");
                    }
                    return s;
                }
                None => tracing::warn!(
                    backend_state = ?status.backend_state,
                    "tailscaled has no tailnet yet; fix: log in with `tailscale up` (or set [tailscale] magic_dns_suffix)"
                ),
            },
            Err(e) => tracing::warn!(
                cause = %e,
                fix = e.fix().unwrap_or_default(),
                "waiting for tailscaled to learn the tailnet's MagicDNS suffix"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let fix = match source.kind() {
            std::io::ErrorKind::AddrInUse => "another process (an old Caddy?) already listens there; stop it or change [listen]",
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities in the systemd unit)",
            std::io::ErrorKind::AddrNotAvailable => "the address is not on this host (a tailnet IP before tailscaled is up?); listen on 0.0.0.0 or [::] instead",
            _ => "check the address in [listen]",
        };
        StartError::Bind { addr, source, fix }
    })
}
