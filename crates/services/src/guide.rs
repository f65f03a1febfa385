//! Without control-API credentials: the exact admin-console steps and policy snippet for
//! the configured services (reference `tailscale-services.md` §5).

use std::collections::BTreeMap;

use crate::desired::Desired;

/// Every desired service (`svc:NAME`) with its definition's ports (`tcp:443`, then its `tcp` ports).
fn services_and_ports(desired: &Desired) -> Vec<(&str, Vec<String>)> {
    desired.services.iter().map(|s| (s.as_str(), desired.definition_ports(s))).collect()
}

/// The policy-file (HuJSON) snippet for the desired services hosted by a node tagged
/// `host_tag`: `tagOwners`, per-service `autoApprovers.services`, and a grant to their
/// ports (one grant per set of ports, so that no service is granted a port it does not serve).
pub fn policy_snippet(desired: &Desired, host_tag: &str) -> String {
    let services = services_and_ports(desired);
    let mut s = String::new();
    s.push_str("{\n  \"tagOwners\": {\n");
    s.push_str(&format!("    \"{host_tag}\": [\"autogroup:admin\"],\n"));
    s.push_str("  },\n  \"autoApprovers\": {\n    \"services\": {\n");
    for (svc, _) in &services {
        s.push_str(&format!("      \"{svc}\": [\"{host_tag}\"],\n"));
    }
    s.push_str("    },\n  },\n  \"grants\": [\n");
    let mut by_ports: BTreeMap<&[String], Vec<&str>> = BTreeMap::new();
    for (svc, ports) in &services {
        by_ports.entry(ports).or_default().push(svc);
    }
    for (ports, svcs) in by_ports {
        s.push_str("    {\n      \"src\": [\"autogroup:member\"],\n      \"dst\": [\n");
        for svc in svcs {
            s.push_str(&format!("        \"{svc}\",\n"));
        }
        let ip: Vec<String> = ports.iter().map(|p| format!("\"{p}\"")).collect();
        s.push_str(&format!("      ],\n      \"ip\": [{}],\n    }},\n", ip.join(", ")));
    }
    s.push_str("  ],\n}\n");
    s
}

/// The steps to do by hand in the admin console when `[tailscale.api]` is not configured.
/// `host_tags` are the node's current tags (the first is used in the policy; `tag:storage`
/// when untagged); `suffix` the MagicDNS suffix, when known.
pub fn manual_steps(desired: &Desired, host_tags: &[String], suffix: Option<&str>) -> String {
    let services = services_and_ports(desired);
    let host_tag = host_tags.first().map(String::as_str).unwrap_or("tag:storage");
    let mut s = String::new();
    s.push_str("The control API is not configured ([tailscale.api]), so snirouter cannot define the services.\n");
    s.push_str("Do this once at https://login.tailscale.com/admin :\n");
    s.push_str("  1. DNS: enable MagicDNS and HTTPS Certificates.\n");
    s.push_str(&format!(
        "  2. Services → Advertise → \"Define a Service\", once per name, with the endpoints/ports shown ({} services):\n",
        services.len()
    ));
    for (svc, ports) in &services {
        let name = svc.strip_prefix("svc:").unwrap_or(svc);
        let ports = ports.join(", ");
        match suffix {
            Some(sfx) => s.push_str(&format!("       {svc}   {ports}   ({name}.{sfx})\n")),
            None => s.push_str(&format!("       {svc}   {ports}\n")),
        }
    }
    s.push_str("  3. Access controls: merge this into the policy file:\n");
    for line in policy_snippet(desired, host_tag).lines() {
        s.push_str("       ");
        s.push_str(line);
        s.push('\n');
    }
    if host_tags.is_empty() {
        s.push_str(&format!(
            "  4. Tag this host (it is untagged; services need a tagged host): tailscale up --advertise-tags={host_tag}\n"
        ));
    } else {
        s.push_str(&format!("  4. This host is tagged {} — nothing to do.\n", host_tags.join(", ")));
    }
    s.push_str("  5. Services: approve this host for each service (automatic with the autoApprovers above).\n");
    s.push_str("  Then run `snirouter services sync` again and check `tailscale status --json | jq '.Self.CapMap.\"service-host\"'`.\n");
    s.push_str(
        "  Or add [tailscale.api] with an OAuth client (scopes: services, devices:core) and snirouter defines them.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_names_every_service_and_its_ports() {
        let cfg = snirouter_config::parse(
            "[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n\
             [services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n\
             [services.jellyfin]\nupstream = \"http://127.0.0.1:8096\"\n\
             [services.git]\nupstream = \"http://127.0.0.1:3001\"\ntcp = { 22 = \"127.0.0.1:2222\" }\n",
            "t.toml",
        )
        .expect("valid");
        let desired = Desired::from_config(&cfg).expect("desired");
        let p = policy_snippet(&desired, "tag:storage");
        assert!(p.contains("\"svc:grafana\": [\"tag:storage\"]"));
        assert!(p.contains("\"ip\": [\"tcp:443\"]"));
        assert!(p.contains("\"ip\": [\"tcp:443\", \"tcp:22\"]"), "{p}");
        assert_eq!(p.matches("\"svc:git\",").count(), 1, "git is granted its ports only once: {p}");
        assert!(p.contains("\"tag:storage\": [\"autogroup:admin\"]"));
        let m = manual_steps(&desired, &[], Some("x.ts.net"));
        assert!(m.contains("jellyfin.x.ts.net"));
        assert!(m.contains("svc:git   tcp:443, tcp:22"), "{m}");
        assert!(m.contains("--advertise-tags=tag:storage"));
    }
}
