//! Without control-API credentials: the exact admin-console steps and policy snippet for
//! the configured services (reference `tailscale-services.md` §5).

/// The policy-file (HuJSON) snippet for `services` (`svc:NAME`) hosted by a node tagged
/// `host_tag`: `tagOwners`, per-service `autoApprovers.services`, and a grant to `tcp:443`.
pub fn policy_snippet(services: &[String], host_tag: &str) -> String {
    let mut s = String::new();
    s.push_str("{\n  \"tagOwners\": {\n");
    s.push_str(&format!("    \"{host_tag}\": [\"autogroup:admin\"],\n"));
    s.push_str("  },\n  \"autoApprovers\": {\n    \"services\": {\n");
    for svc in services {
        s.push_str(&format!("      \"{svc}\": [\"{host_tag}\"],\n"));
    }
    s.push_str("    },\n  },\n  \"grants\": [\n");
    s.push_str("    {\n      \"src\": [\"autogroup:member\"],\n      \"dst\": [\n");
    for svc in services {
        s.push_str(&format!("        \"{svc}\",\n"));
    }
    s.push_str("      ],\n      \"ip\": [\"tcp:443\"],\n    },\n  ],\n}\n");
    s
}

/// The steps to do by hand in the admin console when `[tailscale.api]` is not configured.
/// `host_tags` are the node's current tags (the first is used in the policy; `tag:storage`
/// when untagged); `suffix` the MagicDNS suffix, when known.
pub fn manual_steps(services: &[String], host_tags: &[String], suffix: Option<&str>) -> String {
    let host_tag = host_tags.first().map(String::as_str).unwrap_or("tag:storage");
    let mut s = String::new();
    s.push_str("The control API is not configured ([tailscale.api]), so snirouter cannot define the services.\n");
    s.push_str("Do this once at https://login.tailscale.com/admin :\n");
    s.push_str("  1. DNS: enable MagicDNS and HTTPS Certificates.\n");
    s.push_str(&format!(
        "  2. Services → Advertise → \"Define a Service\", once per name, with endpoint/port tcp:443 ({} services):\n",
        services.len()
    ));
    for svc in services {
        let name = svc.strip_prefix("svc:").unwrap_or(svc);
        match suffix {
            Some(sfx) => s.push_str(&format!("       {svc}   ({name}.{sfx})\n")),
            None => s.push_str(&format!("       {svc}\n")),
        }
    }
    s.push_str("  3. Access controls: merge this into the policy file:\n");
    for line in policy_snippet(services, host_tag).lines() {
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
    fn snippet_names_every_service() {
        let svcs = vec!["svc:grafana".to_owned(), "svc:jellyfin".to_owned()];
        let p = policy_snippet(&svcs, "tag:storage");
        assert!(p.contains("\"svc:grafana\": [\"tag:storage\"]"));
        assert!(p.contains("\"ip\": [\"tcp:443\"]"));
        assert!(p.contains("\"tag:storage\": [\"autogroup:admin\"]"));
        let m = manual_steps(&svcs, &[], Some("x.ts.net"));
        assert!(m.contains("jellyfin.x.ts.net"));
        assert!(m.contains("--advertise-tags=tag:storage"));
    }
}
