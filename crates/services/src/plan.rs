//! Desired state, the typed list of changes between it and what tailscaled (and the
//! control API) have, and [`plan`], which computes it without touching anything.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use snirouter_config::Config;
use snirouter_localapi::{BackendState, LocalClient, Status};

use crate::control::{ControlClient, ServiceInfo};
use crate::definition::{self, Host};
pub use crate::desired::Desired;
use crate::error::Error;
use crate::ownership::Ownership;
use crate::seen::Seen;
use crate::serve::{self, SERVICE_PORT};

/// One change to apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Control API: create the service definition.
    DefineService {
        /// `svc:NAME`.
        service: String,
        /// Ports (`tcp:443`).
        ports: Vec<String>,
        /// Service tags.
        tags: Vec<String>,
    },
    /// Control API: add ports/tags to an existing definition (its `addrs` are kept).
    UpdateDefinition {
        /// `svc:NAME`.
        service: String,
        /// Ports added.
        add_ports: Vec<String>,
        /// Tags added.
        add_tags: Vec<String>,
    },
    /// serve-config: add the handler.
    AddHandler {
        /// `svc:NAME`.
        service: String,
        /// The TCP port (443, or a `tcp` port).
        port: u16,
        /// The handler.
        handler: Value,
    },
    /// serve-config: replace a handler snirouter added earlier (e.g. the listener moved).
    UpdateHandler {
        /// `svc:NAME`.
        service: String,
        /// The TCP port.
        port: u16,
        /// The handler now.
        from: Value,
        /// The new handler.
        handler: Value,
    },
    /// serve-config: remove the handler snirouter added for a service or port no longer
    /// configured.
    RemoveHandler {
        /// `svc:NAME`.
        service: String,
        /// The TCP port.
        port: u16,
        /// The handler removed.
        handler: Value,
    },
    /// prefs: add the name to `AdvertiseServices`.
    Advertise {
        /// `svc:NAME`.
        service: String,
    },
    /// prefs: remove a name snirouter added to `AdvertiseServices`.
    Unadvertise {
        /// `svc:NAME`.
        service: String,
    },
}

impl Change {
    /// Whether it changes this node's tailscaled (serve config or prefs), not the control API.
    pub fn is_local(&self) -> bool {
        !matches!(self, Change::DefineService { .. } | Change::UpdateDefinition { .. })
    }

    /// The service the change is about.
    pub fn service(&self) -> &str {
        match self {
            Change::DefineService { service, .. }
            | Change::UpdateDefinition { service, .. }
            | Change::AddHandler { service, .. }
            | Change::UpdateHandler { service, .. }
            | Change::RemoveHandler { service, .. }
            | Change::Advertise { service }
            | Change::Unadvertise { service } => service,
        }
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::DefineService { service, ports, tags } => {
                write!(f, "+ control       define {service} (ports {}", ports.join(", "))?;
                if !tags.is_empty() {
                    write!(f, ", tags {}", tags.join(", "))?;
                }
                write!(f, ")")
            }
            Change::UpdateDefinition { service, add_ports, add_tags } => {
                write!(f, "~ control       update {service}:")?;
                if !add_ports.is_empty() {
                    write!(f, " ports += {}", add_ports.join(", "))?;
                }
                if !add_tags.is_empty() {
                    write!(f, " tags += {}", add_tags.join(", "))?;
                }
                write!(f, " (addrs kept)")
            }
            Change::AddHandler { service, port, handler } => {
                write!(f, "+ serve-config  Services[\"{service}\"].TCP[\"{port}\"] = {}", compact(handler))
            }
            Change::UpdateHandler { service, port, from, handler } => write!(
                f,
                "~ serve-config  Services[\"{service}\"].TCP[\"{port}\"]: {} -> {}",
                compact(from),
                compact(handler)
            ),
            Change::RemoveHandler { service, port, handler } => write!(
                f,
                "- serve-config  Services[\"{service}\"].TCP[\"{port}\"] = {} (added by snirouter, no longer configured)",
                compact(handler)
            ),
            Change::Advertise { service } => write!(f, "+ prefs         AdvertiseServices += {service}"),
            Change::Unadvertise { service } => {
                write!(f, "- prefs         AdvertiseServices -= {service} (added by snirouter, no longer configured)")
            }
        }
    }
}

/// A configured service port whose serve-config entry belongs to someone else.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    /// `svc:NAME`.
    pub service: String,
    /// The TCP port (443 for the whole service, as in TUN mode).
    pub port: u16,
    /// The entry found (`Services[svc]`, or its handler at `port`).
    pub existing: Value,
    /// Why it conflicts.
    pub reason: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "! conflict      {} TCP {}: {}; found {} — left alone. fix: remove that handler (the `off` form of the \
             `tailscale serve --service={}` command that added it) and sync again, or rename the snirouter service",
            self.service,
            self.port,
            self.reason,
            compact(&self.existing),
            self.service
        )
    }
}

/// A reason nothing can be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// What [`crate::sync`] would do, computed by [`plan`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The desired state.
    pub desired: Desired,
    /// Changes in the order sync applies them (control, serve-config, prefs).
    pub changes: Vec<Change>,
    /// Services left alone because someone else's handler is in the way.
    pub conflicts: Vec<Conflict>,
    /// Definitions sync would not change, each with its cause and fix (another node hosts
    /// the service and its definition differs); the rest is still applied.
    pub errors: Vec<String>,
    /// Reasons sync would refuse to run.
    pub blockers: Vec<Blocker>,
    /// Informational lines.
    pub notes: Vec<String>,
    /// Whether the control API was consulted (`[tailscale.api]` configured).
    pub control_api: bool,
}

impl Plan {
    /// `true` when sync would change nothing.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Tailscale Services: {} configured, TCP 443 of each forwarded to {} with PROXY v2",
            self.desired.services.len(),
            self.desired.target
        )?;
        for (service, ports) in &self.desired.tcp {
            for (port, handler) in ports {
                let to = handler.get("TCPForward").and_then(Value::as_str).unwrap_or_default();
                writeln!(f, "  {service} TCP {port} forwarded to {to} (tcp)")?;
            }
        }
        for b in &self.blockers {
            writeln!(f, "! blocked       {}\n                fix: {}", b.message, b.fix)?;
        }
        for c in &self.changes {
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
        if !self.control_api {
            writeln!(f, "  · control API: not configured ([tailscale.api]); service definitions not checked")?;
        }
        if self.changes.is_empty() {
            writeln!(f, "No changes: tailscaled already has everything snirouter manages.")
        } else {
            writeln!(f, "{} change(s).", self.changes.len())
        }
    }
}

/// Everything read from tailscaled (and the control API) for a plan or a sync.
pub(crate) struct Observed {
    pub status: Status,
    pub serve_config: Value,
    pub advertised: Vec<String>,
    pub owned: Ownership,
    /// Per desired service, its definition (`None`: not defined); `None` without an API client.
    pub control: Option<ControlView>,
}

/// Per desired service, its definition and — when this host would extend it — its hosts
/// (else empty); `None`: not defined.
pub(crate) type ControlView = BTreeMap<String, Option<(ServiceInfo, Vec<Host>)>>;

pub(crate) async fn observe_all(
    config: &Config,
    desired: &Desired,
    local: &LocalClient,
    control: Option<&ControlClient>,
) -> Result<Observed, Error> {
    let status = definition::read_status(local, control).await?;
    let (serve_config, _) = local.serve_config().await.map_err(Error::local("reading the serve config"))?;
    let prefs = local.prefs().await.map_err(Error::local("reading tailscaled's prefs"))?;
    let owned = Ownership::load(&config.cache.dir)?;
    let control = match control {
        Some(api) => Some(control_view(api, desired, &status).await?),
        None => None,
    };
    Ok(Observed { status, serve_config, advertised: advertised(&prefs), owned, control })
}

/// The definitions of the desired services; the hosts of those this host would extend.
async fn control_view(api: &ControlClient, desired: &Desired, status: &Status) -> Result<ControlView, Error> {
    let mut view: ControlView = desired.services.iter().map(|s| (s.clone(), None)).collect();
    for info in api.list_services().await? {
        let Some(slot) = view.get_mut(&info.name) else { continue };
        let hosts = match definition::needed(desired, &info.name, Some(&info)) {
            definition::Needed::Extend { .. } => definition::hosts(api, &info.name, Some(status)).await?,
            _ => Vec::new(),
        };
        *slot = Some((info, hosts));
    }
    Ok(view)
}

/// `AdvertiseServices` from a prefs JSON (`null` = empty).
pub(crate) fn advertised(prefs: &Value) -> Vec<String> {
    prefs
        .get("AdvertiseServices")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Why nothing may be touched: no tailnet session, or an untagged host.
pub(crate) fn blocking_error(status: &Status) -> Option<Error> {
    if status.backend_state != BackendState::Running {
        return Some(Error::NotRunning { state: status.backend_state.to_string() });
    }
    match &status.self_node {
        Some(node) if node.tags.is_empty() => Some(Error::NotTagged { node: node.dns_name.clone() }),
        _ => None,
    }
}

/// [`blocking_error`] as plan lines.
pub(crate) fn blockers(status: &Status) -> Vec<Blocker> {
    blocking_error(status).map(|e| Blocker { message: e.to_string(), fix: e.fix() }).into_iter().collect()
}

/// The control-API changes for the desired services, and the definitions this host may
/// not extend because other nodes host them too (`view` carries their hosts).
pub(crate) fn control_changes(
    desired: &Desired,
    status: &Status,
    view: &ControlView,
) -> (Vec<Change>, Vec<(String, Error)>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for service in &desired.services {
        let (info, hosts) = match view.get(service) {
            Some(Some((info, hosts))) => (Some(info), hosts.as_slice()),
            _ => (None, &[][..]),
        };
        match definition::needed(desired, service, info) {
            definition::Needed::Nothing => {}
            definition::Needed::Create => out.push(Change::DefineService {
                service: service.clone(),
                ports: desired.definition_ports(service),
                tags: desired.tags.clone(),
            }),
            need @ definition::Needed::Extend { .. } => {
                let Some(info) = info else { continue };
                match definition::may_extend(info, &need, hosts, status) {
                    Err(e) => refused.push((service.clone(), e)),
                    Ok(()) => {
                        let definition::Needed::Extend { add_ports, add_tags } = need else { continue };
                        out.push(Change::UpdateDefinition { service: service.clone(), add_ports, add_tags });
                    }
                }
            }
        }
    }
    (out, refused)
}

/// The serve-config changes, conflicts and notes, given the current serve config and the
/// ownership record. Also returns the ownership record as it will be once they are applied.
pub(crate) fn serve_changes(
    desired: &Desired,
    cfg: &Value,
    owned: &Ownership,
) -> (Vec<Change>, Vec<Conflict>, Vec<String>, Ownership) {
    let mut out = ServeDiff { next: owned.clone(), ..ServeDiff::default() };
    for service in &desired.services {
        if serve::is_tun(cfg, service) {
            out.conflicts.push(Conflict {
                service: service.clone(),
                port: SERVICE_PORT,
                existing: serve::service_entry(cfg, service).cloned().unwrap_or(Value::Null),
                reason: "the service is in TUN mode (\"Tun\": true)".to_owned(),
            });
            continue;
        }
        for (port, want) in desired.handlers(service) {
            out.port(cfg, owned, service, port, want);
        }
    }
    for (service, o) in &owned.services {
        for port in o.ports() {
            if !desired.wants(service, port) {
                out.release(cfg, owned, service, port);
            }
        }
    }
    (out.changes, out.conflicts, out.notes, out.next)
}

/// What [`serve_changes`] collects.
#[derive(Default)]
struct ServeDiff {
    changes: Vec<Change>,
    conflicts: Vec<Conflict>,
    notes: Vec<String>,
    next: Ownership,
}

impl ServeDiff {
    /// One wanted handler: add it, update the one snirouter wrote, or report who is in the way.
    fn port(&mut self, cfg: &Value, owned: &Ownership, service: &str, port: u16, want: &Value) {
        let owned_entry = owned.get(service);
        let mine = owned_entry.handler(port);
        match serve::handler_of(cfg, service, port) {
            None => {
                self.changes.push(Change::AddHandler { service: service.to_owned(), port, handler: want.clone() });
                self.next.entry(service).set_handler(port, Some(want.clone()));
            }
            Some(h) if serve::same_handler(h, want) => {
                if mine.is_none() {
                    self.notes.push(format!(
                        "{service} TCP {port}: the handler is already in place but was not added by snirouter; it will not be removed with the service"
                    ));
                }
            }
            Some(h) if mine.is_some_and(|m| serve::same_handler(m, h)) => {
                self.changes.push(Change::UpdateHandler {
                    service: service.to_owned(),
                    port,
                    from: h.clone(),
                    handler: want.clone(),
                });
                self.next.entry(service).set_handler(port, Some(want.clone()));
            }
            Some(h) => self.conflicts.push(Conflict {
                service: service.to_owned(),
                port,
                existing: h.clone(),
                reason: format!("TCP {port} already has a handler that snirouter did not add"),
            }),
        }
    }

    /// A handler snirouter wrote that is no longer configured: removed while unchanged.
    fn release(&mut self, cfg: &Value, owned: &Ownership, service: &str, port: u16) {
        let owned_entry = owned.get(service);
        let Some(mine) = owned_entry.handler(port) else { return };
        match serve::handler_of(cfg, service, port) {
            Some(h) if serve::same_handler(h, mine) => {
                self.changes.push(Change::RemoveHandler { service: service.to_owned(), port, handler: h.clone() });
            }
            Some(h) => self.notes.push(format!(
                "{service} TCP {port}: its handler was changed by someone else since snirouter added it ({}); left alone and no longer owned",
                compact(h)
            )),
            None => self.notes.push(format!("{service} TCP {port}: the handler snirouter added is already gone")),
        }
        self.next.entry(service).set_handler(port, None);
    }
}

/// The prefs changes: advertise every desired service without a conflict, and withdraw the
/// names snirouter added for services no longer configured. Returns the new list and the
/// ownership record updated accordingly.
pub(crate) fn prefs_changes(
    desired: &Desired,
    advertised: &[String],
    conflicts: &[Conflict],
    owned: &Ownership,
) -> (Vec<Change>, Vec<String>, Ownership) {
    let mut changes = Vec::new();
    let mut list = advertised.to_vec();
    let mut next = owned.clone();
    for service in &desired.services {
        let blocked = conflicts.iter().any(|c| &c.service == service && c.port == SERVICE_PORT);
        if blocked || list.contains(service) {
            continue;
        }
        changes.push(Change::Advertise { service: service.clone() });
        list.push(service.clone());
        next.entry(service).advertised = true;
    }
    for (service, o) in &owned.services {
        if !o.advertised || desired.services.contains(service) {
            continue;
        }
        if list.contains(service) {
            changes.push(Change::Unadvertise { service: service.clone() });
            list.retain(|s| s != service);
        }
        next.entry(service).advertised = false;
    }
    (changes, list, next)
}

/// Computes what [`crate::sync`] would change. Reads tailscaled (status, serve config,
/// prefs), the ownership record and, with `control`, the service definitions; writes nothing.
pub async fn plan(config: &Config, local: &LocalClient, control: Option<&ControlClient>) -> Result<Plan, Error> {
    let desired = Desired::from_config(config)?;
    let seen = observe_all(config, &desired, local, control).await?;
    let blockers = blockers(&seen.status);
    let (mut changes, refused) = match &seen.control {
        Some(view) => control_changes(&desired, &seen.status, view),
        None => (Vec::new(), Vec::new()),
    };
    let errors = refused.iter().map(|(service, e)| e.report_line(service)).collect();
    let (serve, conflicts, notes, owned) = serve_changes(&desired, &seen.serve_config, &seen.owned);
    changes.extend(serve);
    let (prefs, _, _) = prefs_changes(&desired, &seen.advertised, &conflicts, &owned);
    changes.extend(prefs);
    let mut notes = notes;
    if control.is_none() {
        notes.extend(definition_notes(&desired, local).await);
    }
    Ok(Plan { desired, changes, conflicts, errors, blockers, notes, control_api: seen.control.is_some() })
}

/// Without the control API: what tailscaled (1.98+) shows of the definitions.
async fn definition_notes(desired: &Desired, local: &LocalClient) -> Vec<String> {
    let Some(visible) = crate::seen::visible_services(local).await else { return Vec::new() };
    let seen = crate::seen::compare_definitions(desired, &visible);
    let mut notes: Vec<String> = seen.iter().filter_map(|(svc, s)| crate::seen::missing_ports_line(svc, s)).collect();
    let hidden: Vec<&str> = seen.iter().filter(|(_, s)| *s == Seen::NotVisible).map(|(svc, _)| svc.as_str()).collect();
    if !hidden.is_empty() {
        notes.push(crate::seen::not_visible_line(&hidden));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(names: &[&str]) -> Desired {
        Desired {
            services: names.iter().map(|n| format!("svc:{n}")).collect(),
            target: "127.0.0.1:8443".into(),
            handler: serve::desired_handler("127.0.0.1:8443"),
            tcp: BTreeMap::new(),
            tags: vec![],
        }
    }

    #[test]
    fn add_conflict_update_remove() {
        let d = desired(&["a", "b", "c", "t"]);
        let old = serve::desired_handler("127.0.0.1:9000");
        let cfg = json!({"Services": {
            "svc:b": {"TCP": {"443": {"HTTPS": true}}},
            "svc:c": {"TCP": {"443": old.clone()}},
            "svc:t": {"Tun": true},
            "svc:gone": {"TCP": {"443": d.handler.clone()}},
            "svc:other": {"TCP": {"443": d.handler.clone()}}
        }});
        let mut owned = Ownership::default();
        owned.entry("svc:c").handler = Some(old.clone());
        owned.entry("svc:gone").handler = Some(d.handler.clone());
        owned.entry("svc:gone").advertised = true;
        let (changes, conflicts, _notes, next) = serve_changes(&d, &cfg, &owned);
        assert_eq!(
            changes,
            vec![
                Change::AddHandler { service: "svc:a".into(), port: 443, handler: d.handler.clone() },
                Change::UpdateHandler { service: "svc:c".into(), port: 443, from: old, handler: d.handler.clone() },
                Change::RemoveHandler { service: "svc:gone".into(), port: 443, handler: d.handler.clone() },
            ]
        );
        let names: Vec<_> = conflicts.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(names, ["svc:b", "svc:t"]);
        assert!(next.get("svc:a").handler.is_some() && next.get("svc:gone").handler.is_none());

        let (prefs, list, next) =
            prefs_changes(&d, &["svc:other".into(), "svc:gone".into(), "svc:c".into()], &conflicts, &next);
        assert_eq!(
            prefs,
            vec![Change::Advertise { service: "svc:a".into() }, Change::Unadvertise { service: "svc:gone".into() }]
        );
        assert_eq!(list, ["svc:other", "svc:c", "svc:a"]);
        assert!(next.get("svc:a").advertised && !next.get("svc:c").advertised && !next.get("svc:gone").advertised);
    }

    #[test]
    fn control_changes_define_and_update() {
        let mut d = desired(&["a", "b", "c"]);
        d.tags = vec!["tag:svc".into()];
        let info = |ports: &[&str], tags: &[&str]| ServiceInfo {
            name: String::new(),
            addrs: vec!["100.100.0.1".into(), "fd7a:115c:a1e0::1".into()],
            comment: String::new(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            extra: Default::default(),
        };
        let view: ControlView = [
            ("svc:a".to_owned(), None),
            ("svc:b".to_owned(), Some((info(&["tcp:80"], &[]), vec![]))),
            ("svc:c".to_owned(), Some((info(&["tcp:443"], &["tag:svc"]), vec![]))),
        ]
        .into();
        let (c, refused) = control_changes(&d, &Status::default(), &view);
        assert!(refused.is_empty());
        assert_eq!(c.len(), 2);
        assert!(matches!(&c[0], Change::DefineService { service, .. } if service == "svc:a"));
        assert!(
            matches!(&c[1], Change::UpdateDefinition { service, add_ports, add_tags } if service == "svc:b" && add_ports == &["tcp:443"] && add_tags == &["tag:svc"])
        );
        for change in &c {
            assert!(!change.to_string().is_empty());
        }
    }

    #[test]
    fn tcp_ports_are_added_healed_conflicted_and_released_on_their_own() {
        let mut d = desired(&["git", "mqtt"]);
        let ssh = json!({"TCPForward": "127.0.0.1:2222"});
        let mqtt = json!({"TCPForward": "127.0.0.1:1883", "ProxyProtocol": 2});
        d.tcp.insert("svc:git".into(), [(22, ssh.clone())].into());
        d.tcp.insert("svc:mqtt".into(), [(1883, mqtt.clone())].into());
        let old_http = json!({"TCPForward": "127.0.0.1:8080"});
        // git: 443 in place, 22 wiped; mqtt: someone else's 1883; git's old port 8080 still ours.
        let cfg = json!({"Services": {
            "svc:git": {"TCP": {"443": d.handler.clone(), "8080": old_http.clone()}},
            "svc:mqtt": {"TCP": {"1883": {"TCPForward": "127.0.0.1:9999"}}}
        }});
        let mut owned = Ownership::default();
        owned.entry("svc:git").handler = Some(d.handler.clone());
        owned.entry("svc:git").set_handler(22, Some(ssh.clone()));
        owned.entry("svc:git").set_handler(8080, Some(old_http.clone()));
        let (changes, conflicts, _notes, next) = serve_changes(&d, &cfg, &owned);
        assert_eq!(
            changes,
            vec![
                Change::AddHandler { service: "svc:git".into(), port: 22, handler: ssh.clone() },
                Change::AddHandler { service: "svc:mqtt".into(), port: 443, handler: d.handler.clone() },
                Change::RemoveHandler { service: "svc:git".into(), port: 8080, handler: old_http },
            ]
        );
        assert_eq!(conflicts.len(), 1);
        assert_eq!((conflicts[0].service.as_str(), conflicts[0].port), ("svc:mqtt", 1883));
        assert_eq!(next.get("svc:git").ports(), [443, 22]);
        // A conflict on a further port does not keep the service from being advertised.
        let (prefs, _, _) = prefs_changes(&d, &[], &conflicts, &next);
        assert_eq!(prefs.len(), 2, "{prefs:?}");
        assert!(changes[0].to_string().contains("TCP[\"22\"]"), "{}", changes[0]);
    }
}
