//! Wiring: config → LocalAPI client → certificate store and manager → listeners, plus
//! the operational side: admin socket, upstream checks, systemd watchdog and reload.
//!
//! Start order matters for availability: cached certificates are loaded and the
//! listeners bound *before* tailscaled is asked for anything, so a restart while
//! tailscaled is slow or down still serves every name that has a valid cache.
//!
//! **Reload** ([`Daemon::reload`], SIGHUP, `POST /reload` on the admin socket) re-reads
//! the file the config came from. A config that does not validate is refused with its
//! diagnostics logged and the running one keeps serving. Otherwise: new listeners are
//! bound first (a bind failure refuses the whole reload), then the served names, the
//! route table and the certificate tasks are swapped, then listeners no longer
//! configured stop accepting and drain in the background. Connections and requests
//! in flight are never interrupted: a request holds its service's routes until it
//! ends, and a connection to a removed name gets `421` only for its *next* request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use snirouter_certs::{CertManager, CertStore, DiskCache, FileCerts, ManagerOptions};
use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use snirouter_proxy::{ListenerKind, ProxyOptions, RouteTable, Server};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::health::Upstreams;
use crate::reload::{bind, file_sources, log_warnings, service_names, spawn_listener, wanted_listeners};
use crate::shared::{Live, Shared, UNKNOWN_SUFFIX};

pub use crate::reload::{BindError, ReloadError, ReloadReport};

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
    #[error("{0}")]
    Bind(#[from] BindError),
    /// The data path could not be set up (TLS, the access log file).
    #[error("{0}")]
    Server(#[from] snirouter_proxy::ServerError),
    /// Signal handling could not be installed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// A running router.
pub struct Daemon {
    /// The listeners bound at start, with their kind (see [`Daemon::listeners`] for the
    /// current set after reloads).
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    /// The certificate store.
    pub store: Arc<CertStore>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    background: JoinSet<()>,
}

impl Daemon {
    /// Starts everything described by `config`.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let client = LocalClient::new(&config.tailscale.socket)?;
        let cache = DiskCache::open(&config.cache.dir)?;
        // Known now (config, cache) or later (tailscaled): nothing waits for it.
        let (suffix, pending) = known_suffix(&config, &cache);
        if let Some(suffix) = &suffix {
            config.check_fqdns(suffix).map_err(StartError::Names)?;
        }
        log_warnings(&config);

        let store = Arc::new(CertStore::new());
        let names = service_names(&config, suffix.as_deref());
        store.set_names(&names);

        let opts = ManagerOptions { request_timeout: config.timeouts.cert_request, ..ManagerOptions::default() };
        let manager = CertManager::new(Arc::clone(&store), client.clone(), Some(cache), opts);
        let cached = manager.load_cache();
        let files = FileCerts::new(Arc::clone(&store));
        files.set_sources(file_sources(&config));

        let table = RouteTable::from_config(&config, suffix.as_deref().unwrap_or(UNKNOWN_SUFFIX), None);
        let router = Server::new(table, Arc::clone(&store), ProxyOptions::from_config(&config), Some(client.clone()))?;
        let grace = config.timeouts.idle.min(Duration::from_secs(30));

        let mut handles = Vec::new();
        for (kind, addr) in wanted_listeners(&config) {
            let listener = bind(addr).await?;
            handles.push(spawn_listener(&router, listener, kind, addr, grace));
        }
        let listeners: Vec<(ListenerKind, SocketAddr)> = handles.iter().map(|l| (l.kind, l.local)).collect();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let admin = config.admin.clone();
        let shared = Arc::new(Shared {
            router: Arc::clone(&router),
            manager: Arc::clone(&manager),
            store: Arc::clone(&store),
            files,
            client,
            suffix: std::sync::RwLock::new(suffix.clone()),
            started: SystemTime::now(),
            upstreams: Arc::new(Upstreams::default()),
            last_reload: Mutex::new(None),
            reloads_ok: Default::default(),
            reloads_refused: Default::default(),
            control: Mutex::new(None),
            live: tokio::sync::Mutex::new(Live { config: Arc::new(config), listeners: handles, draining: Vec::new() }),
            grace,
            history: Default::default(),
            tcp_status: Default::default(),
            reloaded: Default::default(),
        });

        let mut background = spawn_background(&shared, &admin, &shutdown_rx).await;
        // Tailscale Services kept in sync in the background (read each round: reloads
        // count); errors are logged, never fatal.
        let current = Arc::clone(&shared);
        background.spawn(snirouter_services::keep_in_sync(
            move || {
                let shared = Arc::clone(&current);
                async move { shared.config().await }
            },
            Arc::clone(&shared.reloaded),
            shutdown_rx.clone(),
        ));
        background.spawn(watch_tailscaled(Arc::clone(&shared), pending, shutdown_rx.clone()));

        manager.start();
        for (kind, addr) in &listeners {
            tracing::info!(address = %addr, kind = ?kind, "listening");
        }
        tracing::info!(
            services = names.len(),
            cached_certificates = cached,
            suffix = suffix.as_deref().unwrap_or("(waiting for tailscaled)"),
            "snirouter ready"
        );
        crate::sdnotify::ready();
        Ok(Daemon { listeners, store, shared, shutdown, background })
    }

    /// The first listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Re-reads the config file this daemon was started from and applies it (see the
    /// module docs). On error the running configuration is untouched.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        crate::reload::reload(&self.shared).await
    }

    /// Stops accepting, lets open connections finish within the grace period, stops
    /// certificate work.
    pub async fn shutdown(mut self) {
        crate::sdnotify::stopping();
        let _ = self.shutdown.send(true);
        let (tasks, draining) = {
            let mut live = self.shared.live.lock().await;
            for l in &live.listeners {
                let _ = l.stop.send(true);
            }
            let tasks: Vec<JoinHandle<()>> = live.listeners.drain(..).map(|l| l.task).collect();
            (tasks, std::mem::take(&mut live.draining))
        };
        for task in tasks.into_iter().chain(draining) {
            let _ = task.await;
        }
        self.shared.manager.shutdown();
        let grace = self.shared.grace;
        let _ = tokio::time::timeout(grace, async { while self.background.join_next().await.is_some() {} }).await;
        self.background.abort_all();
    }
}

/// `run`: start, then serve until SIGINT or SIGTERM; SIGHUP reloads the config file,
/// SIGUSR1 reopens the access log file (logrotate).
pub async fn run_until_signal(config: Config) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signal)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(StartError::Signal)?;
    // A signal while starting (binding, loading caches) still stops the router cleanly.
    let daemon = tokio::select! {
        started = Daemon::start(config) => started?,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted while starting");
            return Ok(());
        }
        _ = term.recv() => {
            tracing::info!("SIGTERM while starting; stopped");
            return Ok(());
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; draining connections");
                break;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM; draining connections");
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP; reloading the configuration");
                // The outcome is logged by reload().
                let _ = daemon.reload().await;
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1; reopening the access log");
                daemon.shared.router.access_log().reopen();
            }
        }
    }
    daemon.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reads every service's counters into [`Shared::history`] each
/// [`crate::history::INTERVAL`] until `shutdown`.
async fn record_history(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::history::INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let config = shared.config().await;
                let table = shared.router.routes();
                let suffix = shared.names_suffix();
                let readings: Vec<(String, u64, u64)> = config
                    .services
                    .iter()
                    .filter_map(|svc| table.get(&svc.fqdn(&suffix)).map(|live| (svc, live.stats.snapshot())))
                    .map(|(svc, s)| (svc.name.clone(), s.requests, s.responses_5xx))
                    .collect();
                shared.history.record(&readings);
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// What is left to do about the MagicDNS suffix once tailscaled answers.
enum Suffix {
    /// Nothing: the config sets it, or tailscaled confirmed it.
    Settled,
    /// Cached from the last run: confirm it (a renamed tailnet needs a restart).
    Cached(String),
    /// Unknown: learn it, remember it in the cache, add the tailnet names.
    Learn(DiskCache),
}

/// The suffix tailnet names are built from, when it is known at start: the config's
/// override, else the one cached from the last run; and what [`watch_tailscaled`] still
/// has to do about it.
fn known_suffix(config: &Config, cache: &DiskCache) -> (Option<String>, Suffix) {
    if let Some(s) = &config.tailscale.magic_dns_suffix {
        return (Some(s.clone()), Suffix::Settled);
    }
    if let Some(s) = cache.state().magic_dns_suffix {
        return (Some(s.clone()), Suffix::Cached(s));
    }
    tracing::info!(
        "serving the public names now; the tailnet names join once tailscaled tells the tailnet's MagicDNS suffix"
    );
    (None, Suffix::Learn(cache.clone()))
}

/// The one task that polls tailscaled's status: it keeps the data path told this node's
/// own tailnet addresses (a PROXY source among them is this host: `local`) and settles the
/// suffix. Until the suffix is learned it asks every 1–5 s, logging each failure with its
/// cause and fix; afterwards every 5 minutes (10 s after a failure).
async fn watch_tailscaled(shared: Arc<Shared>, mut pending: Suffix, mut shutdown: watch::Receiver<bool>) {
    let mut delay = Duration::from_secs(1);
    loop {
        let learning = matches!(pending, Suffix::Learn(_));
        let wait = match shared.client.status().await {
            Ok(status) => {
                shared.router.set_own_addresses(status.tailscale_ips.clone());
                pending = settle_suffix(&shared, pending, &status).await;
                if matches!(pending, Suffix::Learn(_)) { delay } else { Duration::from_secs(300) }
            }
            Err(e) if learning => {
                tracing::warn!(
                    cause = %e,
                    fix = e.fix().unwrap_or_default(),
                    "waiting for tailscaled to learn the tailnet's MagicDNS suffix"
                );
                delay
            }
            Err(_) => Duration::from_secs(10),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // At most 5 s apart: the tailnet names join within seconds of tailscaled coming up.
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One status answer applied to what is left to do about the suffix.
async fn settle_suffix(shared: &Shared, pending: Suffix, status: &snirouter_localapi::Status) -> Suffix {
    match pending {
        Suffix::Settled => Suffix::Settled,
        Suffix::Cached(cached) => {
            if let Some(live) = status.magic_dns_suffix().filter(|live| *live != cached) {
                tracing::error!(cached = %cached, tailscaled = %live, "the tailnet's MagicDNS suffix changed; restart snirouter to serve the new names");
            }
            Suffix::Settled
        }
        Suffix::Learn(cache) => match status.magic_dns_suffix() {
            Some(s) => {
                let s = s.to_owned();
                if let Err(e) = cache.update_state(|st| st.magic_dns_suffix = Some(s.clone())) {
                    tracing::warn!(error = %e, "cannot remember the MagicDNS suffix in the cache");
                }
                add_tailnet_names(shared, s).await;
                Suffix::Settled
            }
            None => {
                tracing::warn!(
                    backend_state = ?status.backend_state,
                    "tailscaled has no tailnet yet; fix: log in with `tailscale up` (or set [tailscale] magic_dns_suffix)"
                );
                Suffix::Learn(cache)
            }
        },
    }
}

/// The suffix is known: the tailnet names get their certificates and routes, as a reload
/// would add them (names first, then routes).
async fn add_tailnet_names(shared: &Shared, suffix: String) {
    let live = shared.live.lock().await;
    if let Err(d) = live.config.check_fqdns(&suffix) {
        tracing::error!(suffix = %suffix, problems = %d, "the tailnet names collide; fix the config and restart");
        return;
    }
    *shared.suffix.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(suffix.clone());
    shared.store.set_names(&service_names(&live.config, Some(&suffix)));
    let table = RouteTable::from_config(&live.config, &suffix, Some(&shared.router.routes()));
    shared.router.set_routes(table);
    shared.manager.sync_names();
    tracing::info!(suffix = %suffix, "tailscaled answered: the tailnet names join");
}
/// The tasks beside the listeners: upstream health checks, the admin socket, `/metrics`
/// over TCP (when configured) and the systemd watchdog (when systemd asks for one).
async fn spawn_background(
    shared: &Arc<Shared>,
    admin: &snirouter_config::Admin,
    shutdown: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut background = JoinSet::new();
    let router = Arc::clone(&shared.router);
    background.spawn(crate::health::run(Arc::clone(&shared.upstreams), router, shutdown.clone()));
    background.spawn(record_history(Arc::clone(shared), shutdown.clone()));
    background.spawn(Arc::clone(&shared.files).watch(shutdown.clone()));
    if let Some(server) = crate::admin::bind_socket(&admin.socket).await {
        let socket = admin.socket.clone();
        background.spawn(crate::admin::serve_socket(server, socket, Arc::clone(shared), shutdown.clone()));
    }
    if let Some(addr) = admin.metrics_listen {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(address = %addr, "serving the status page, /status and /metrics over TCP ([admin] metrics_listen)");
                background.spawn(crate::admin::serve_metrics_tcp(l, Arc::clone(shared), shutdown.clone()));
            }
            Err(e) => {
                tracing::warn!(address = %addr, error = %e, "cannot listen for metrics; fix: change [admin] metrics_listen or stop the process holding it")
            }
        }
    }
    if let Some(period) = crate::sdnotify::watchdog_interval() {
        tracing::info!(interval_ms = period.as_millis() as u64, "systemd watchdog enabled");
        background.spawn(crate::sdnotify::watchdog(period, shutdown.clone()));
    }
    background
}
