//! Per-service state for `snirouter status`: what tailscaled, the control API and the
//! ownership record say about each configured service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snirouter_config::Config;
use snirouter_localapi::{Error as LocalError, LocalClient, ServeBytes, Status};

use crate::control::ControlClient;
use crate::definition::{self, Host};
use crate::ownership::Ownership;
use crate::plan::{self, Desired};
use crate::seen::Seen;
use crate::serve::{self, SERVICE_PORT};

/// The serve-config handler of a service compared with what snirouter wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HandlerState {
    /// The serve config could not be read.
    Unknown,
    /// No handler at the port.
    Missing,
    /// Exactly the PROXY v2 forward to snirouter's listener.
    Correct,
    /// A handler snirouter added earlier that no longer matches the config (sync updates it).
    Outdated {
        /// The handler found.
        handler: Value,
    },
    /// Someone else's handler (a conflict; sync leaves it alone).
    Foreign {
        /// The handler found.
        handler: Value,
    },
}

/// One `tcp` port of a service and its serve-config handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortState {
    /// The Service's port (`22`).
    pub port: u16,
    /// Where tailscaled forwards it (`127.0.0.1:2222`, `unix:/run/app.sock`).
    pub to: String,
    /// The handler compared with the config.
    pub handler: HandlerState,
    /// Whether snirouter added it (ownership record).
    pub managed: bool,
}

/// Everything known about one configured service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceState {
    /// The config name (`grafana`).
    pub name: String,
    /// The Tailscale Service (`svc:grafana`).
    pub service: String,
    /// `grafana.TAILNET.ts.net`, when the MagicDNS suffix is known.
    pub fqdn: Option<String>,
    /// Defined in the tailnet (control API); `None` without API credentials or on API errors.
    pub defined: Option<bool>,
    /// This host's approval level from the API (`approved:auto`, …), when known.
    pub approval_level: Option<String>,
    /// Every node hosting the service, this one included, as the control API lists
    /// them (named from tailscaled's status); `None` without API credentials or when
    /// the service is not defined.
    pub hosts: Option<Vec<Host>>,
    /// In the node's `AdvertiseServices` pref; `None` if prefs could not be read.
    pub advertised: Option<bool>,
    /// The serve-config handler of TCP 443.
    pub handler: HandlerState,
    /// Whether snirouter added the handler (ownership record).
    pub managed: bool,
    /// The service's `tcp` ports, each with its handler.
    pub tcp: Vec<PortState>,
    /// Bytes tailscaled forwarded for the Service since it started (tailscaled ≥ 1.102).
    pub bytes: Option<ServeBytes>,
    /// Listed by tailscaled's `/localapi/v0/services` (≥ 1.98) with every port this host
    /// serves; `None` when the daemon cannot say.
    pub definition: Option<Seen>,
    /// Listed in `Self.CapMap["service-host"]` (the host is approved); `None` if status failed.
    pub approved: Option<bool>,
    /// The service's VIPs from `service-host`.
    pub vips: Vec<IpAddr>,
    /// The FQDN is in `CertDomains`; `None` if status failed or the suffix is unknown.
    pub in_cert_domains: Option<bool>,
    /// Whether a certificate is being served; left `None` here, for the caller to fill from
    /// its certificate store.
    pub certificate: Option<bool>,
    /// What is missing, each with the next step; empty when everything is in place.
    pub problems: Vec<String>,
}

/// Observes every configured service, given tailscaled's `status` as the caller read it
/// (`snirouter status` and `doctor` need it themselves). Never fails: what cannot be read
/// is `None` / [`HandlerState::Unknown`] and the reason is in `problems`.
pub async fn observe(
    config: &Config,
    local: &LocalClient,
    status: Result<&Status, &LocalError>,
    control: Option<&ControlClient>,
) -> Vec<ServiceState> {
    let node = Observed::read(config, local, status, control).await;
    // The hosts of each service are named from the peers, asked for only when there
    // are hosts to name (`status` is the caller's, without peers).
    let with_peers = match control {
        Some(_) => local.status_with_peers().await.ok(),
        None => None,
    };
    let names = with_peers.as_ref().or(status.ok());
    let mut out = Vec::with_capacity(config.services.len());
    for svc in &config.services {
        out.push(node.service(svc, control, names).await);
    }
    out
}

/// What one observation read from tailscaled, the control API and the ownership
/// record, shared by every service; `general` holds the problems that concern them all.
struct Observed {
    desired: Result<Desired, crate::Error>,
    serve_config: Result<Value, snirouter_localapi::Error>,
    owned: Ownership,
    suffix: Option<String>,
    /// `Self.CapMap["service-host"]`: approved services and their VIPs.
    service_host: Option<BTreeMap<String, Vec<IpAddr>>>,
    cert_domains: Option<Vec<String>>,
    advertised: Option<Vec<String>>,
    defined: Option<BTreeSet<String>>,
    /// Per-Service byte counters (empty before tailscaled 1.102).
    bytes: BTreeMap<String, ServeBytes>,
    /// `/localapi/v0/services` compared with the config (`None`: the daemon cannot say).
    seen: Option<BTreeMap<String, Seen>>,
    general: Vec<String>,
}

impl Observed {
    async fn read(
        config: &Config,
        local: &LocalClient,
        status: Result<&Status, &LocalError>,
        control: Option<&ControlClient>,
    ) -> Observed {
        let desired = Desired::from_config(config);
        let serve_config = local.serve_config().await.map(|(v, _)| v);
        let prefs = local.prefs().await;
        let mut general = Vec::new();
        if let Err(e) = &desired {
            general.push(format!("{e} (fix: {})", e.fix()));
        }
        let status = status.map_err(|e| general.push(format!("tailscaled status: {e}"))).ok();
        if let Some(e) = status.and_then(plan::blocking_error) {
            general.push(format!("{e} (fix: {})", e.fix()));
        }
        if let Err(e) = &serve_config {
            general.push(format!("serve config: {e}"));
        }
        let advertised = prefs.map(|p| plan::advertised(&p)).map_err(|e| general.push(format!("prefs: {e}"))).ok();
        let defined = match control {
            Some(api) => api
                .list_services()
                .await
                .map(|list| list.into_iter().map(|i| i.name).collect())
                .map_err(|e| general.push(format!("control API: {e} (fix: {})", e.fix())))
                .ok(),
            None => None,
        };
        let suffix = config.tailscale.magic_dns_suffix.clone();
        let self_node = status.and_then(|s| s.self_node.as_ref());
        let seen = match (&desired, crate::seen::visible_services(local).await) {
            (Ok(d), Some(visible)) => Some(crate::seen::compare_definitions(d, &visible).into_iter().collect()),
            _ => None,
        };
        Observed {
            bytes: local.serve_bytes().await.unwrap_or_default(),
            seen,
            suffix: suffix.or_else(|| status.and_then(|s| s.magic_dns_suffix().map(str::to_owned))),
            service_host: status.map(|_| self_node.map(|n| n.service_host()).unwrap_or_default()),
            cert_domains: status.map(|s| s.cert_domains.clone()),
            owned: Ownership::load(&config.cache.dir).unwrap_or_default(),
            desired,
            serve_config,
            advertised,
            defined,
            general,
        }
    }

    /// One service's state; asks the control API for the service's hosts when it is defined.
    async fn service(
        &self,
        svc: &snirouter_config::Service,
        control: Option<&ControlClient>,
        status: Option<&Status>,
    ) -> ServiceState {
        let service = svc.tailscale_service();
        let fqdn = self.suffix.as_deref().map(|s| svc.fqdn(s));
        let owned = self.owned.get(&service);
        let managed = owned.handler.is_some();
        let handler =
            self.handler_state(&service, SERVICE_PORT, self.desired.as_ref().ok().map(|d| &d.handler), managed);
        let tcp = svc
            .tcp
            .iter()
            .map(|p| {
                let managed = owned.handler(p.port).is_some();
                let want = self.desired.as_ref().ok().and_then(|d| d.tcp.get(&service)?.get(&p.port));
                let handler = self.handler_state(&service, p.port, want, managed);
                PortState { port: p.port, to: p.forward(), handler, managed }
            })
            .collect();
        let defined = self.defined.as_ref().map(|d| d.contains(&service));
        let mut problems = self.general.clone();
        let seen = self.seen.as_ref().and_then(|m| m.get(&service));
        problems.extend(seen.and_then(|s| crate::seen::missing_ports_line(&service, s)));
        let definition = seen.cloned();
        let mut hosts = None;
        if defined == Some(true)
            && let Some(api) = control
        {
            match definition::hosts(api, &service, status).await {
                Ok(found) => hosts = Some(found),
                Err(e) => problems.push(format!("control API hosts of {service}: {e}")),
            }
        }
        let approval_level = hosts.iter().flatten().find(|h| h.this_host).map(|h| h.approval_level.clone());
        let in_cert_domains = match (&self.cert_domains, &fqdn) {
            (Some(d), Some(f)) => Some(d.iter().any(|c| c.trim_end_matches('.').eq_ignore_ascii_case(f))),
            _ => None,
        };
        let mut state = ServiceState {
            name: svc.name.clone(),
            defined,
            approval_level,
            hosts,
            advertised: self.advertised.as_ref().map(|a| a.contains(&service)),
            handler,
            managed,
            tcp,
            bytes: self.bytes.get(&service).copied(),
            definition,
            approved: self.service_host.as_ref().map(|m| m.contains_key(&service)),
            vips: self.service_host.as_ref().and_then(|m| m.get(&service).cloned()).unwrap_or_default(),
            in_cert_domains,
            certificate: None,
            problems,
            service,
            fqdn,
        };
        state.problems.extend(missing_steps(&state));
        state
    }
}

impl std::fmt::Display for HandlerState {
    /// `in place`, `missing`, … for `status`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerState::Unknown => write!(f, "unknown (the serve config could not be read)"),
            HandlerState::Missing => write!(f, "missing"),
            HandlerState::Correct => write!(f, "in place"),
            HandlerState::Outdated { .. } => write!(f, "outdated"),
            HandlerState::Foreign { handler } => write!(f, "someone else's handler: {handler}"),
        }
    }
}

impl Observed {
    /// The handler at `TCP[port]` compared with `want` (`None`: the config could not say).
    fn handler_state(&self, service: &str, port: u16, want: Option<&Value>, managed: bool) -> HandlerState {
        let (Ok(cfg), Some(want)) = (&self.serve_config, want) else { return HandlerState::Unknown };
        match serve::handler_of(cfg, service, port) {
            None => HandlerState::Missing,
            Some(h) if serve::same_handler(h, want) => HandlerState::Correct,
            Some(h) if managed => HandlerState::Outdated { handler: h.clone() },
            Some(h) => HandlerState::Foreign { handler: h.clone() },
        }
    }
}

/// What is missing for one service, each with its next step.
fn missing_steps(s: &ServiceState) -> Vec<String> {
    let service = &s.service;
    let mut problems = Vec::new();
    if s.defined == Some(false) {
        problems.push(format!(
            "{service} is not defined in the tailnet: run `snirouter services sync` (with [tailscale.api]) or define it in the admin console with port tcp:443"
        ));
    }
    let ports = std::iter::once((SERVICE_PORT, &s.handler)).chain(s.tcp.iter().map(|p| (p.port, &p.handler)));
    for (port, handler) in ports {
        match handler {
            HandlerState::Missing | HandlerState::Outdated { .. } => problems.push(format!(
                "the serve-config handler of TCP {port} is missing or outdated: run `snirouter services sync`"
            )),
            HandlerState::Foreign { handler } => problems.push(format!(
                "TCP {port} of {service} has a handler snirouter did not add ({handler}); remove it, then sync"
            )),
            HandlerState::Unknown | HandlerState::Correct => {}
        }
    }
    if s.advertised == Some(false) {
        problems.push(format!("{service} is not in AdvertiseServices: run `snirouter services sync`"));
    }
    if s.approved == Some(false) {
        problems.push(format!(
            "this host is not approved for {service} yet (Self.CapMap[\"service-host\"]): approve it under Services in the admin console, or add autoApprovers.services to the policy"
        ));
    }
    if s.in_cert_domains == Some(false) {
        problems.push(format!(
            "{} is not in CertDomains yet, so no certificate can be fetched; it appears once control lists the service for this host (see docs/tailnet-setup.md)",
            s.fqdn.as_deref().unwrap_or(service)
        ));
    }
    problems
}
