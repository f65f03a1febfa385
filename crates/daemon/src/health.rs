//! Upstream reachability: a cheap TCP connect to every distinct upstream of the
//! current route table, every [`PERIOD`] (and right after a reload), for
//! `snirouter status` and the `snirouter_upstream_up` metric.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use snirouter_proxy::Server;
use tokio::sync::{Notify, watch};

/// How often every upstream is checked.
pub(crate) const PERIOD: Duration = Duration::from_secs(10);
/// How long one connect may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The last result for one upstream (`host:port`).
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    /// Whether the TCP connect succeeded.
    pub reachable: bool,
    /// When it was checked.
    pub checked_at: SystemTime,
    /// Why it failed.
    pub error: Option<String>,
}

/// Results by upstream authority.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    results: Mutex<BTreeMap<String, Reach>>,
    wake: Notify,
}

impl Upstreams {
    /// The last result for `authority`, if checked yet.
    pub(crate) fn get(&self, authority: &str) -> Option<Reach> {
        self.results.lock().unwrap_or_else(|p| p.into_inner()).get(authority).cloned()
    }

    /// Checks again now (after a reload).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// One TCP connect to `authority` (`host:port`), bounded by [`CONNECT_TIMEOUT`].
pub(crate) async fn probe(authority: &str) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no TCP answer within {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// The checker task.
pub(crate) async fn run(state: Arc<Upstreams>, router: Arc<Server>, mut shutdown: watch::Receiver<bool>) {
    loop {
        // authority -> services using it
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for svc in router.routes().services() {
            for r in &svc.routes {
                wanted.entry(r.upstream.authority.to_string()).or_default().insert(svc.name.clone());
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for authority in wanted.keys().cloned() {
            set.spawn(async move {
                let result = probe(&authority).await;
                (authority, result)
            });
        }
        let mut fresh = BTreeMap::new();
        while let Some(Ok((authority, result))) = set.join_next().await {
            let services: Vec<&String> = wanted.get(&authority).map(|s| s.iter().collect()).unwrap_or_default();
            let was = state.get(&authority).map(|r| r.reachable);
            match &result {
                Err(e) if was != Some(false) => {
                    for service in &services {
                        tracing::warn!(service = %service, upstream = %authority, cause = %e, "upstream not reachable; fix: start the backend or correct its address in the config");
                    }
                }
                Ok(()) if was == Some(false) => {
                    for service in &services {
                        tracing::info!(service = %service, upstream = %authority, "upstream reachable again");
                    }
                }
                _ => {}
            }
            fresh.insert(
                authority,
                Reach { reachable: result.is_ok(), checked_at: SystemTime::now(), error: result.err() },
            );
        }
        *state.results.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = state.wake.notified() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
