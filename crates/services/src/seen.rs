//! The Services' definitions as this node sees them without an API key
//! (`GET /localapi/v0/services`, tailscaled ≥ 1.98): for `plan`, `status` and `doctor`,
//! whether each configured service's definition lists every port this host serves.
//!
//! The list holds only the Services this node may reach itself, so a missing entry means
//! "not defined yet, or the policy grants this host no access to it" — never more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use snirouter_localapi::{Error as LocalError, LocalClient, ServiceDetails};

use crate::desired::Desired;

/// What `/localapi/v0/services` says about one configured service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Seen {
    /// Listed, with every port this host serves.
    Complete,
    /// Listed, but its definition lacks these ports: connections to them never reach
    /// this host.
    MissingPorts {
        /// `tcp:22`, …
        ports: Vec<String>,
    },
    /// Not listed: not defined yet, or this node may not reach it.
    NotVisible,
}

/// The Services this node sees; `None` when tailscaled is older than 1.98 (no endpoint)
/// or cannot say (no netmap yet, or unreachable).
pub async fn visible_services(local: &LocalClient) -> Option<BTreeMap<String, ServiceDetails>> {
    match local.services().await {
        Ok(m) => Some(m),
        Err(LocalError::NotSupported { .. }) => None,
        Err(e) => {
            tracing::debug!(cause = %e, "tailscaled's list of Services unavailable");
            None
        }
    }
}

/// Each desired service compared with what this node sees of its definition.
pub fn compare_definitions(desired: &Desired, visible: &BTreeMap<String, ServiceDetails>) -> Vec<(String, Seen)> {
    desired
        .services
        .iter()
        .map(|service| {
            let seen = match visible.get(service) {
                None => Seen::NotVisible,
                Some(details) => {
                    let missing = desired.ports_not_allowed(service, |port| details.allows_tcp(port));
                    if missing.is_empty() { Seen::Complete } else { Seen::MissingPorts { ports: missing } }
                }
            };
            (service.clone(), seen)
        })
        .collect()
}

/// For a service whose definition lacks ports: what is wrong and the fix; `None` otherwise.
pub fn missing_ports(service: &str, seen: &Seen) -> Option<(String, String)> {
    let Seen::MissingPorts { ports } = seen else { return None };
    let (one, them) = if ports.len() == 1 { ("that port", "it") } else { ("those ports", "them") };
    Some((
        format!(
            "the definition of {service} does not list {} (tailscaled's /localapi/v0/services), so connections to \
             {one} never reach this host",
            ports.join(", ")
        ),
        format!(
            "add {them} to the service in the admin console (Services → {service}), or run `snirouter services sync` \
             with [tailscale.api]"
        ),
    ))
}

/// The line for the services tailscaled does not list for this node.
pub fn not_visible_line(services: &[&str]) -> String {
    format!(
        "not among the Services tailscaled lists for this node (/localapi/v0/services): {} — not defined yet, or \
         the policy does not let this host reach them",
        services.join(", ")
    )
}

/// [`missing_ports`] as one line.
pub fn missing_ports_line(service: &str, seen: &Seen) -> Option<String> {
    missing_ports(service, seen).map(|(what, fix)| format!("{what}: {fix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn definitions_compared_with_the_ports_served() {
        let d = Desired {
            services: vec!["svc:git".into(), "svc:web".into(), "svc:new".into()],
            target: "127.0.0.1:8443".into(),
            handler: crate::serve::desired_handler("127.0.0.1:8443"),
            tcp: [("svc:git".to_owned(), [(22, json!({"TCPForward": "127.0.0.1:2222"}))].into())].into(),
            tags: vec![],
        };
        let details = |ports: &[&str]| ServiceDetails {
            ports: ports.iter().map(|p| (*p).to_owned()).collect(),
            ..ServiceDetails::default()
        };
        let visible: BTreeMap<String, ServiceDetails> =
            [("svc:git".to_owned(), details(&["tcp:443"])), ("svc:web".to_owned(), details(&["tcp:443"]))].into();
        let seen = compare_definitions(&d, &visible);
        assert_eq!(seen[0].1, Seen::MissingPorts { ports: vec!["tcp:22".into()] });
        assert_eq!(seen[1].1, Seen::Complete);
        assert_eq!(seen[2].1, Seen::NotVisible);
        let line = missing_ports_line("svc:git", &seen[0].1).expect("a line");
        assert!(line.contains("tcp:22") && line.contains("Services → svc:git"), "{line}");
        assert!(missing_ports_line("svc:web", &seen[1].1).is_none());
    }
}
