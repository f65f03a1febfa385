//! State shared by the daemon, the admin socket and the background tasks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use snirouter_certs::{CertManager, CertStore, FileCerts};
use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use snirouter_proxy::{ListenerKind, Server};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::Upstreams;
use crate::status::LastReload;

/// One running listener.
pub(crate) struct ListenerHandle {
    pub(crate) kind: ListenerKind,
    /// The address as configured (port 0 stays 0 here).
    pub(crate) configured: SocketAddr,
    /// The address actually bound.
    pub(crate) local: SocketAddr,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: JoinHandle<()>,
}

/// Mutable state, changed only by reload and shutdown.
pub(crate) struct Live {
    pub(crate) config: Arc<Config>,
    pub(crate) listeners: Vec<ListenerHandle>,
    /// Listeners removed by a reload, still draining their connections.
    pub(crate) draining: Vec<JoinHandle<()>>,
}

/// Stands in for the MagicDNS suffix while it is unknown (see [`Shared::names_suffix`]).
pub(crate) const UNKNOWN_SUFFIX: &str = "tailnet-suffix-unknown.invalid";

/// State shared by the daemon, the admin socket and the background tasks.
pub(crate) struct Shared {
    pub(crate) router: Arc<Server>,
    pub(crate) manager: Arc<CertManager>,
    pub(crate) store: Arc<CertStore>,
    /// The certificates of `[domains]`, from their files.
    pub(crate) files: Arc<FileCerts>,
    /// For LocalAPI reads on behalf of the admin socket.
    pub(crate) client: LocalClient,
    /// The tailnet's MagicDNS suffix; `None` until tailscaled (or the cache, or the
    /// config) has told it: tailnet names without an `fqdn` wait for it.
    pub(crate) suffix: std::sync::RwLock<Option<String>>,
    pub(crate) started: SystemTime,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) last_reload: Mutex<Option<LastReload>>,
    pub(crate) reloads_ok: std::sync::atomic::AtomicU64,
    pub(crate) reloads_refused: std::sync::atomic::AtomicU64,
    /// The control API client `status` reads Services with, kept so that its OAuth
    /// token is reused; replaced when `[tailscale.api]` or its credentials change.
    pub(crate) control: Mutex<Option<Arc<snirouter_services::ControlClient>>>,
    pub(crate) live: tokio::sync::Mutex<Live>,
    pub(crate) grace: Duration,
    /// Requests and errors per service over the last minutes (the status page's charts).
    pub(crate) history: crate::history::History,
    /// The last status document served over `[admin] metrics_listen`, and when it was
    /// built (reused for a few seconds: `admin::tcp_status`).
    pub(crate) tcp_status: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// Woken by every applied reload, so the Services follow the new config at once.
    pub(crate) reloaded: Arc<tokio::sync::Notify>,
}

impl Shared {
    /// The MagicDNS suffix, if known yet.
    pub(crate) fn suffix(&self) -> Option<String> {
        self.suffix.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The suffix names are built from: the real one, or one no client can send while it
    /// is unknown (`.invalid`, RFC 2606), so that tailnet names stay out of every lookup.
    pub(crate) fn names_suffix(&self) -> String {
        self.suffix().unwrap_or_else(|| UNKNOWN_SUFFIX.to_owned())
    }

    /// A control API client for `api`, reused while `api` and its credentials stay the
    /// same (`None` when the credential files cannot be read; `doctor` explains that).
    pub(crate) fn control_client(
        &self,
        api: &snirouter_config::TailscaleApi,
    ) -> Option<Arc<snirouter_services::ControlClient>> {
        let mut kept = self.control.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = kept.as_ref().filter(|c| c.matches(api)) {
            return Some(Arc::clone(client));
        }
        let client = Arc::new(snirouter_services::ControlClient::from_config(api).ok()?);
        *kept = Some(Arc::clone(&client));
        Some(client)
    }

    /// The configuration being served.
    pub(crate) async fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live.lock().await.config)
    }

    /// The bound listeners.
    pub(crate) async fn listeners(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.live.lock().await.listeners.iter().map(|l| (l.kind, l.local)).collect()
    }
}
