//! [`sync`]: apply the plan — control API definitions, the serve config (with `If-Match`,
//! re-read and retried on 412), then `AdvertiseServices` — recording ownership as it goes.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::json;
use snirouter_config::Config;
use snirouter_localapi::{LocalClient, Status};

use crate::control::{ControlClient, ServiceInfo};
use crate::definition;
use crate::error::Error;
use crate::plan::{self, Change, Conflict, Desired};
use crate::serve;

/// Serve-config write attempts before giving up on concurrent changes.
const MAX_ATTEMPTS: u32 = 5;

/// Comment put on service definitions snirouter creates.
const COMMENT: &str = "managed by snirouter";

/// What [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncReport {
    /// Changes applied, in order.
    pub applied: Vec<Change>,
    /// Services left alone because someone else's handler is in the way.
    pub conflicts: Vec<Conflict>,
    /// Control-API failures per service (cause and fix); the local side was still applied.
    pub errors: Vec<String>,
    /// Serve-config writes retried after a 412.
    pub retries: u32,
    /// Informational lines.
    pub notes: Vec<String>,
    /// Whether the control API was used.
    pub control_api: bool,
    /// The local side was changed although the config is the one the last sync was for:
    /// something else changed it (recorded in [`crate::Ownership::drift`]).
    pub drift: bool,
}

impl SyncReport {
    /// `true` when nothing was changed.
    pub fn is_noop(&self) -> bool {
        self.applied.is_empty()
    }

    /// `true` when there were no conflicts and no errors.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty() && self.errors.is_empty()
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.applied {
            writeln!(f, "  {c}")?;
        }
        for c in &self.conflicts {
            writeln!(f, "  {c}")?;
        }
        for e in &self.errors {
            writeln!(f, "! error         {e}")?;
        }
        for n in &self.notes {
            writeln!(f, "  · {n}")?;
        }
        if self.retries > 0 {
            writeln!(f, "  · the serve config changed concurrently; re-read and retried {} time(s)", self.retries)?;
        }
        if self.applied.is_empty() {
            writeln!(f, "No changes: tailscaled already has everything snirouter manages.")
        } else {
            writeln!(f, "Applied {} change(s).", self.applied.len())
        }
    }
}

/// Applies the desired Tailscale Services state. Idempotent: a second run applies nothing
/// and says so. Refuses to start (touching nothing) when the host is untagged or has no
/// tailnet session; stops with [`Error::ConfigLocked`] when tailscaled runs from a locked
/// config file. Control-API failures are reported per service without stopping the
/// local side.
pub async fn sync(config: &Config, local: &LocalClient, control: Option<&ControlClient>) -> Result<SyncReport, Error> {
    let desired = Desired::from_config(config)?;
    let status = definition::read_status(local, control).await?;
    if let Some(e) = plan::blocking_error(&status) {
        return Err(e);
    }
    let mut report = SyncReport { control_api: control.is_some(), ..SyncReport::default() };
    // 1. Control API: the service must exist before hosts advertise it.
    if let Some(api) = control {
        define_all(api, &desired, &status, &mut report).await;
    }
    // 2. serve-config, under If-Match, re-read on every 412.
    let dir = &config.cache.dir;
    let mut owned = crate::Ownership::load(dir)?;
    let conflicts = sync_serve_config(local, &desired, dir, &mut owned, &mut report).await?;
    for c in &conflicts {
        tracing::warn!(service = %c.service, existing = %c.existing, reason = %c.reason, "Tailscale Service left alone: its serve-config entry was not added by snirouter");
    }
    report.conflicts = conflicts;
    // 3. AdvertiseServices: read, merge, PATCH.
    sync_prefs(local, &desired, dir, &mut owned, &mut report).await?;
    record(dir, &desired, &mut owned, &mut report)?;
    Ok(report)
}

/// Records what this sync was for and, when it put back local changes to the same
/// config, the drift.
fn record(dir: &Path, desired: &Desired, owned: &mut crate::Ownership, report: &mut SyncReport) -> Result<(), Error> {
    let same_config = owned.is_synced_for(desired);
    let local: Vec<String> = report.applied.iter().filter(|c| c.is_local()).map(ToString::to_string).collect();
    report.drift = same_config && !local.is_empty();
    if same_config && !report.drift {
        return Ok(());
    }
    if report.drift {
        let last_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let healed = owned.drift.as_ref().map_or(0, |d| d.healed) + 1;
        owned.drift = Some(crate::ownership::Drift { healed, last_at, last_changes: local });
    }
    owned.synced_for = Some(desired.local_fingerprint());
    owned.save(dir)
}

/// Defines every desired service that is missing in the tailnet; failures are reported
/// per service.
async fn define_all(api: &ControlClient, desired: &Desired, status: &Status, report: &mut SyncReport) {
    for service in &desired.services {
        match define(api, desired, service, status).await {
            Ok(Some(change)) => {
                tracing::info!(service = %service, change = %change, "Tailscale Service definition changed");
                report.applied.push(change);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(service = %service, cause = %e, fix = %e.fix(), "cannot define the Tailscale Service");
                report.errors.push(e.report_line(service));
            }
        }
    }
}

/// Writes the serve-config handlers under If-Match, re-reading on every 412 (at most
/// [`MAX_ATTEMPTS`] times). The ownership record is saved before each write and put
/// back when the write fails. Returns the services left alone.
async fn sync_serve_config(
    local: &LocalClient,
    desired: &Desired,
    dir: &Path,
    owned: &mut crate::Ownership,
    report: &mut SyncReport,
) -> Result<Vec<Conflict>, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut cfg, etag) = local.serve_config().await.map_err(Error::local("reading the serve config"))?;
        let (changes, conflicts, notes, next) = plan::serve_changes(desired, &cfg, owned);
        if changes.is_empty() {
            if next != *owned {
                next.save(dir)?;
                *owned = next;
            }
            report.notes.extend(notes);
            return Ok(conflicts);
        }
        for change in &changes {
            match change {
                Change::AddHandler { service, port, handler }
                | Change::UpdateHandler { service, port, handler, .. } => {
                    serve::set_handler(&mut cfg, service, *port, handler.clone())
                }
                Change::RemoveHandler { service, port, .. } => {
                    serve::remove_handler(&mut cfg, service, *port);
                }
                _ => {}
            }
        }
        // Record the intent first: a crash after the write must not leave entries that
        // snirouter added but does not know it owns.
        next.save(dir)?;
        match local.set_serve_config(&cfg, etag.as_deref()).await {
            Ok(()) => {
                for change in &changes {
                    tracing::info!(service = %change.service(), change = %change, "serve config changed");
                }
                *owned = next;
                report.applied.extend(changes);
                report.notes.extend(notes);
                return Ok(conflicts);
            }
            Err(snirouter_localapi::Error::PreconditionFailed) if attempt < MAX_ATTEMPTS => {
                owned.save(dir)?;
                report.retries += 1;
                tracing::info!(attempt, "the serve config changed concurrently (HTTP 412); re-reading and retrying");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(snirouter_localapi::Error::PreconditionFailed) => {
                owned.save(dir)?;
                return Err(Error::Contended { attempts: attempt });
            }
            Err(e) => {
                owned.save(dir)?;
                return Err(Error::local("writing the serve config")(e));
            }
        }
    }
}

/// Merges the desired services into `AdvertiseServices` and PATCHes the prefs when
/// anything changed.
async fn sync_prefs(
    local: &LocalClient,
    desired: &Desired,
    dir: &Path,
    owned: &mut crate::Ownership,
    report: &mut SyncReport,
) -> Result<(), Error> {
    let prefs = local.prefs().await.map_err(Error::local("reading tailscaled's prefs"))?;
    let current = plan::advertised(&prefs);
    let (changes, list, next) = plan::prefs_changes(desired, &current, &report.conflicts, owned);
    if changes.is_empty() {
        if next != *owned {
            next.save(dir)?;
            *owned = next;
        }
        return Ok(());
    }
    next.save(dir)?;
    let masked = json!({ "AdvertiseServicesSet": true, "AdvertiseServices": list });
    if let Err(e) = local.edit_prefs(&masked).await {
        owned.save(dir)?;
        return Err(Error::local("setting AdvertiseServices")(e));
    }
    for change in &changes {
        tracing::info!(service = %change.service(), change = %change, "prefs changed");
    }
    *owned = next;
    report.applied.extend(changes);
    Ok(())
}

/// Defines `service` if it is missing, or adds its ports/tags to its definition (reading
/// it first so its `addrs` are sent back) while no other node hosts it. `None` when
/// nothing had to change. Two hosts creating it at once: the second PUT is refused (it
/// carries no addresses), so the definition is read again and compared like any other.
async fn define(
    api: &ControlClient,
    desired: &Desired,
    service: &str,
    status: &Status,
) -> Result<Option<Change>, Error> {
    let info = match api.get_service(service).await? {
        Some(info) => info,
        None => {
            let info = ServiceInfo {
                name: service.to_owned(),
                addrs: Vec::new(),
                comment: COMMENT.to_owned(),
                ports: desired.definition_ports(service),
                tags: desired.tags.clone(),
                extra: Default::default(),
            };
            match api.put_service(&info).await {
                Ok(_) => {
                    return Ok(Some(Change::DefineService {
                        service: service.to_owned(),
                        ports: info.ports,
                        tags: info.tags,
                    }));
                }
                Err(e) => match api.get_service(service).await? {
                    Some(theirs) => {
                        tracing::info!(service = %service, "another host defined the Tailscale Service at the same time; using its definition");
                        theirs
                    }
                    None => return Err(e),
                },
            }
        }
    };
    let need = definition::needed(desired, service, Some(&info));
    let definition::Needed::Extend { add_ports, add_tags } = &need else { return Ok(None) };
    let hosts = definition::hosts(api, service, Some(status)).await?;
    definition::may_extend(&info, &need, &hosts, status)?;
    let mut info = info;
    info.ports.extend(add_ports.iter().cloned());
    info.tags.extend(add_tags.iter().cloned());
    api.put_service(&info).await?;
    Ok(Some(Change::UpdateDefinition {
        service: service.to_owned(),
        add_ports: add_ports.clone(),
        add_tags: add_tags.clone(),
    }))
}
