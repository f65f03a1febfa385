//! For `run` with `[tailscale] manage_services = true`: the Services stay in sync for as
//! long as the router runs, not only at start.
//!
//! * A sync that fails (tailscaled not up yet at boot, still connecting to control) is
//!   retried, 1 s after the first failure and at most [`RETRY_MAX`] apart; the first
//!   failure is logged with cause and fix, the repeats only when the cause changes.
//! * Once in sync, the local side (serve-config handlers and the advertisement) is
//!   checked again every [`HEAL_INTERVAL`], and at once when tailscaled announces new prefs
//!   on its IPN bus (the serve config it does not announce): when something else removed or changed what
//!   the router owns — `tailscale serve reset`, `tailscale serve set-config --all`,
//!   NixOS' `services.tailscale.serve` at boot — it is put back (everything else kept,
//!   as [`sync`] always does), logged with the changes and likely causes, and counted
//!   ([`heals`]; [`sync`] records it in the ownership file, [`crate::Ownership::drift`]).
//! * The control API (service definitions) is used at the first sync and again when the
//!   configured services or their ports change (a reload, which also wakes the loop at
//!   once), not on every check. What a reload changes is applied, never counted as drift.
//!
//! Never fatal: the router serves whatever tailscaled already routes to it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use tokio::sync::{Notify, watch};

use crate::control::ControlClient;
use crate::desired::Desired;
use crate::sync::{SyncReport, sync};

/// How often the local side is checked once in sync.
pub const HEAL_INTERVAL: Duration = Duration::from_secs(15);
/// The longest wait between two attempts while a sync fails.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(30);

static HEALS: AtomicU64 = AtomicU64::new(0);

/// Times this process put back something else's change to the serve config or the
/// advertisement (the record across restarts is [`crate::Ownership::drift`]).
pub fn heals() -> u64 {
    HEALS.load(Ordering::Relaxed)
}

/// Keeps the Services of `current()` (the running config, read each round so that
/// reloads count) in sync until `shutdown` turns true; `reloaded` wakes it at once, and so
/// does every new set of prefs tailscaled announces on its IPN bus (a reset
/// `AdvertiseServices` among them; the serve config is not announced, the check finds it).
pub async fn keep_in_sync<F, Fut>(current: F, reloaded: Arc<Notify>, mut shutdown: watch::Receiver<bool>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<Config>>,
{
    let prefs_changed = Arc::new(Notify::new());
    // Watched only once there is something to keep (a router that may not write never is).
    let mut watcher = None;
    let mut state = State::default();
    let mut woken_by = "start";
    loop {
        let config = current().await;
        if config.tailscale.manage_services && watcher.is_none() {
            let socket = config.tailscale.socket.clone();
            watcher = Some(tokio::spawn(watch_prefs(socket, Arc::clone(&prefs_changed))));
        }
        let wait = if config.tailscale.manage_services { state.round(&config, woken_by).await } else { HEAL_INTERVAL };
        woken_by = tokio::select! {
            () = tokio::time::sleep(wait) => "check",
            () = reloaded.notified() => "reload",
            () = prefs_changed.notified() => "tailscaled's prefs changed",
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break } else { "check" },
        };
    }
    if let Some(w) = watcher {
        w.abort();
    }
}

/// Wakes `changed` for every notification with prefs on tailscaled's IPN bus, watching
/// again (at most 30 s apart) whenever the watch ends or cannot start.
async fn watch_prefs(socket: std::path::PathBuf, changed: Arc<Notify>) {
    let mut retry = Duration::from_secs(1);
    loop {
        if let Ok(local) = LocalClient::new(&socket)
            && let Ok(mut bus) = local.watch_ipn_bus(0).await
        {
            retry = Duration::from_secs(1);
            while let Ok(Some(n)) = bus.next().await {
                if n.get("Prefs").is_some_and(|p| !p.is_null()) {
                    changed.notify_one();
                }
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// What the loop remembers between rounds.
#[derive(Default)]
struct State {
    /// What the control API was last synced for (`None`: not yet in sync).
    synced: Option<Option<Desired>>,
    /// The last failure logged, so that repeats stay quiet.
    last_error: Option<String>,
    failures: u32,
}

impl State {
    /// One sync (`woken_by` says what started it, for the drift log line); returns how long
    /// to wait before the next.
    async fn round(&mut self, config: &Config, woken_by: &str) -> Duration {
        let desired = Desired::from_config(config).ok();
        let with_control = self.synced.as_ref() != Some(&desired);
        match sync_once(config, with_control).await {
            Ok(report) => {
                self.report(config, &report, with_control, woken_by);
                self.synced = Some(desired);
                self.last_error = None;
                self.failures = 0;
                HEAL_INTERVAL
            }
            Err((cause, fix)) => {
                self.failures += 1;
                if self.last_error.as_deref() != Some(cause.as_str()) {
                    tracing::error!(cause = %cause, fix = %fix, "Tailscale Services sync failed; serving anyway, retrying");
                    self.last_error = Some(cause);
                }
                let backoff = Duration::from_secs(1) * 2u32.saturating_pow(self.failures.saturating_sub(1).min(5));
                backoff.min(RETRY_MAX)
            }
        }
    }

    fn report(&self, config: &Config, report: &SyncReport, first_or_changed: bool, woken_by: &str) {
        for e in &report.errors {
            tracing::error!(problem = %e, "Tailscale Services sync problem");
        }
        if report.is_noop() {
            if first_or_changed {
                tracing::info!(services = config.services.len(), "Tailscale Services in sync");
            }
            return;
        }
        if report.drift {
            HEALS.fetch_add(1, Ordering::Relaxed);
            let changes: Vec<String> = report.applied.iter().map(ToString::to_string).collect();
            tracing::warn!(
                changes = %changes.join("; "),
                noticed = woken_by,
                likely = "tailscale serve reset, tailscale serve set-config --all, or NixOS services.tailscale.serve",
                "Tailscale Services drifted: something else changed tailscaled's serve config or advertisement; put back what snirouter owns"
            );
            return;
        }
        if self.failures > 0 {
            tracing::info!(attempts = self.failures + 1, "Tailscale Services synced after tailscaled answered");
        }
        tracing::info!(
            applied = report.applied.len(),
            conflicts = report.conflicts.len(),
            errors = report.errors.len(),
            retries = report.retries,
            "Tailscale Services synced"
        );
    }
}

/// One sync: the local side always, the control API when `with_control`. A failure is
/// its cause and fix.
async fn sync_once(config: &Config, with_control: bool) -> Result<SyncReport, (String, String)> {
    let local = LocalClient::new(&config.tailscale.socket).map_err(|e| (e.to_string(), e.fix().unwrap_or_default()))?;
    let control = match (&config.tailscale.api, with_control) {
        (Some(api), true) => match ControlClient::from_config(api) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(cause = %e, fix = %e.fix(), "control API unavailable; syncing the local side only");
                None
            }
        },
        _ => None,
    };
    sync(config, &local, control.as_ref()).await.map_err(|e| (e.to_string(), e.fix()))
}
