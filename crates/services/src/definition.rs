//! One service's definition in the control API, which every host of the service shares
//! (a Tailscale Service may be hosted by several nodes: failover, or a service moving
//! between hosts). What this host needs of it, and who else hosts it.
//!
//! The rule that keeps several snirouter hosts from fighting over it: a host creates a
//! missing definition, and extends an existing one (adds its ports, adds its tags) only
//! while no *other* node hosts the service. With another host present a difference is a
//! [`Error::SharedDefinition`] naming both, and nothing is written: each host's sync then
//! converges on the first definition instead of rewriting it in turn.

use std::fmt;

use serde::{Deserialize, Serialize};
use snirouter_localapi::{LocalClient, Status};

use crate::control::{ControlClient, ServiceHost, ServiceInfo};
use crate::desired::Desired;
use crate::error::Error;

/// What this host needs of a service's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Needed {
    /// It is defined as this host needs.
    Nothing,
    /// It is not defined.
    Create,
    /// It lacks `tcp:443` (or a `tcp` port) or some of this host's tags.
    Extend {
        /// Ports to add (`tcp:443`, `tcp:22`).
        add_ports: Vec<String>,
        /// Tags to add.
        add_tags: Vec<String>,
    },
}

/// Compares the definition of `service` (`None`: not defined) with the ports this host
/// serves for it and its `[tailscale.api] tags`.
pub(crate) fn needed(desired: &Desired, service: &str, info: Option<&ServiceInfo>) -> Needed {
    let Some(info) = info else { return Needed::Create };
    let add_ports = desired.ports_not_allowed(service, |port| info.allows_tcp(port));
    let add_tags: Vec<String> = desired.tags.iter().filter(|t| !info.tags.contains(t)).cloned().collect();
    if add_ports.is_empty() && add_tags.is_empty() { Needed::Nothing } else { Needed::Extend { add_ports, add_tags } }
}

/// One host of a service, as the control API lists it, named from tailscaled's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The stable node ID.
    pub node_id: String,
    /// Its MagicDNS name (or hostname) when this node's tailscaled knows the node.
    pub name: Option<String>,
    /// This node.
    pub this_host: bool,
    /// `approved:auto`, `approved:manual`, `not-approved` (empty if not given).
    pub approval_level: String,
    /// Online as tailscaled's status says; `None` when it does not know the node.
    pub online: Option<bool>,
}

impl Host {
    /// Names the API's hosts from `status` (this node and its peers).
    pub(crate) fn resolve(hosts: Vec<ServiceHost>, status: Option<&Status>) -> Vec<Host> {
        let self_id = status.and_then(|s| s.self_node.as_ref()).map(|n| n.id.as_str());
        hosts
            .into_iter()
            .map(|h| {
                let node = status.and_then(|s| s.node(&h.node_id));
                let name = node
                    .map(|n| if n.dns_name.is_empty() { n.host_name.clone() } else { n.dns_name.clone() })
                    .filter(|n| !n.is_empty());
                Host {
                    this_host: self_id == Some(h.node_id.as_str()),
                    online: node.map(|n| n.online),
                    name,
                    approval_level: h.approval_level,
                    node_id: h.node_id,
                }
            })
            .collect()
    }

    /// The name's first label (`backup`), else the node ID.
    pub fn label(&self) -> &str {
        match &self.name {
            Some(n) => n.split('.').next().unwrap_or(n),
            None => &self.node_id,
        }
    }
}

impl fmt::Display for Host {
    /// `backup (approved:auto, offline)`, `storage (this host, approved:auto)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut notes: Vec<&str> = Vec::new();
        if self.this_host {
            notes.push("this host");
        }
        if !self.approval_level.is_empty() {
            notes.push(&self.approval_level);
        }
        match self.online {
            Some(false) => notes.push("offline"),
            None if !self.this_host => notes.push("not seen by this node"),
            _ => {}
        }
        write!(f, "{}", self.label())?;
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

/// tailscaled's status for a plan or a sync: with the peers when there is a control API
/// (they name the other hosts of a shared definition), else without (smaller).
pub(crate) async fn read_status(local: &LocalClient, control: Option<&ControlClient>) -> Result<Status, Error> {
    match control {
        Some(_) => local.status_with_peers().await,
        None => local.status().await,
    }
    .map_err(Error::local("reading tailscaled's status"))
}

/// The service's hosts, named.
pub(crate) async fn hosts(api: &ControlClient, service: &str, status: Option<&Status>) -> Result<Vec<Host>, Error> {
    Ok(Host::resolve(api.service_hosts(service).await?, status))
}

/// `Ok` when this host may extend `info` as `needed` says: no other node hosts the
/// service. Otherwise the conflict, naming this host and the others.
pub(crate) fn may_extend(info: &ServiceInfo, needed: &Needed, hosts: &[Host], status: &Status) -> Result<(), Error> {
    let others: Vec<String> = hosts.iter().filter(|h| !h.this_host).map(|h| h.label().to_owned()).collect();
    let Needed::Extend { add_ports, add_tags } = needed else { return Ok(()) };
    if others.is_empty() {
        return Ok(());
    }
    let this_host = status.self_node.as_ref().map_or_else(|| "this host".to_owned(), |n| n.host_name.clone());
    let mut wants = Vec::new();
    if !add_ports.is_empty() {
        wants.push(format!("ports {}", add_ports.join(", ")));
    }
    if !add_tags.is_empty() {
        wants.push(format!("tags {}", add_tags.join(", ")));
    }
    Err(Error::SharedDefinition {
        service: info.name.clone(),
        this_host,
        others,
        defined: format!("ports [{}], tags [{}]", info.ports.join(", "), info.tags.join(", ")),
        wanted: wants.join(" and "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(tags: &[&str]) -> Desired {
        Desired {
            services: vec!["svc:grafana".into()],
            target: "127.0.0.1:8443".into(),
            handler: crate::serve::desired_handler("127.0.0.1:8443"),
            tcp: [("svc:git".to_owned(), [(22, serde_json::json!({"TCPForward": "127.0.0.1:2222"}))].into())].into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn needed(d: &Desired, info: Option<&ServiceInfo>) -> Needed {
        super::needed(d, "svc:grafana", info)
    }

    fn info(ports: &[&str], tags: &[&str]) -> ServiceInfo {
        ServiceInfo {
            name: "svc:grafana".into(),
            addrs: vec!["100.100.5.2".into(), "fd7a:115c:a1e0::5:1".into()],
            comment: String::new(),
            ports: ports.iter().map(|p| (*p).to_owned()).collect(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            extra: Default::default(),
        }
    }

    fn status() -> Status {
        serde_json::from_str(
            r#"{"Self":{"ID":"nStorageCNTRL","HostName":"storage","DNSName":"storage.t.ts.net.","Online":true},
                "Peer":{"k":{"ID":"nBackupCNTRL","HostName":"backup","DNSName":"backup.t.ts.net.","Online":false}}}"#,
        )
        .expect("status")
    }

    fn host(id: &str) -> ServiceHost {
        ServiceHost { node_id: id.into(), approval_level: "approved:auto".into(), configured: "ready".into() }
    }

    #[test]
    fn what_a_host_needs_of_a_definition() {
        assert_eq!(needed(&desired(&["tag:svc"]), None), Needed::Create);
        assert_eq!(needed(&desired(&["tag:svc"]), Some(&info(&["tcp:443"], &["tag:svc", "tag:x"]))), Needed::Nothing);
        assert_eq!(needed(&desired(&[]), Some(&info(&["do-not-validate"], &[]))), Needed::Nothing);
        assert_eq!(
            needed(&desired(&["tag:svc"]), Some(&info(&["tcp:80"], &[]))),
            Needed::Extend { add_ports: vec!["tcp:443".into()], add_tags: vec!["tag:svc".into()] }
        );
        let mut git = desired(&[]);
        git.services = vec!["svc:git".into()];
        assert_eq!(
            super::needed(&git, "svc:git", Some(&info(&["tcp:443"], &[]))),
            Needed::Extend { add_ports: vec!["tcp:22".into()], add_tags: vec![] }
        );
        assert_eq!(super::needed(&git, "svc:git", Some(&info(&["tcp:1-1024"], &[]))), Needed::Nothing);
    }

    #[test]
    fn hosts_are_named_from_status() {
        let st = status();
        let hosts = Host::resolve(vec![host("nStorageCNTRL"), host("nBackupCNTRL"), host("nGoneCNTRL")], Some(&st));
        let shown: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "storage (this host, approved:auto)",
                "backup (approved:auto, offline)",
                "nGoneCNTRL (approved:auto, not seen by this node)"
            ]
        );
        assert_eq!(hosts[1].name.as_deref(), Some("backup.t.ts.net"));
    }

    #[test]
    fn only_a_sole_host_extends_a_definition() {
        let st = status();
        let defined = info(&["tcp:443"], &["tag:storage-svc"]);
        let need = needed(&desired(&["tag:backup-svc"]), Some(&defined));
        let alone = Host::resolve(vec![host("nStorageCNTRL")], Some(&st));
        assert!(may_extend(&defined, &need, &alone, &st).is_ok());
        assert!(may_extend(&defined, &need, &[], &st).is_ok(), "nobody hosts it yet");
        let shared = Host::resolve(vec![host("nStorageCNTRL"), host("nBackupCNTRL")], Some(&st));
        let e = may_extend(&defined, &need, &shared, &st).expect_err("conflict");
        let text = format!("{e} fix: {}", e.fix());
        for needle in
            ["svc:grafana", "storage", "backup", "tag:backup-svc", "tags [tag:storage-svc]", "[tailscale.api] tags"]
        {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(may_extend(&defined, &Needed::Nothing, &shared, &st).is_ok());
    }
}
