//! `allow` and `accept_app_caps`: who may use a service, by tailnet identity.
//!
//! `allow` lists [`Principal`]s; a request is admitted when its client matches any of
//! them (the decision itself is the proxy's `access` stage). What a node can learn
//! about a client is what tailscaled's `whois` answers: the user's login, the node's
//! tags, and the application capabilities the tailnet policy grants it. Tailnet
//! groups are not part of that answer, so `group:` entries are refused with the way
//! to express them (a capability granted to the group).

use crate::checks::{Problem, check_acl_tag};
use crate::schema::{Principal, Service};
use crate::validate::{Entry, Validator, find};

const ALLOW_FORMS: &str = "write a login (\"alice@example.com\"), every user of a domain (\"*@example.com\"), a tag (\"tag:monitoring\"), a capability granted toward the service (\"cap:example.com/cap/grafana\"), \"*\" for every tailnet node, \"local\" for clients on this host, or a network (\"192.168.1.0/24\", \"fd00::/8\")";

/// Parses one `allow` entry; `service` names the service in the help texts.
pub(crate) fn parse_principal(raw: &str, service: &str) -> Result<Principal, Problem> {
    let entry = raw.trim();
    match entry {
        "" => return Err(Problem::new("an allow entry is empty", Some(ALLOW_FORMS.to_owned()))),
        "*" => return Ok(Principal::AnyNode),
        "local" => return Ok(Principal::Local),
        _ => {}
    }
    if entry.starts_with("tag:") {
        check_acl_tag(entry)?;
        return Ok(Principal::Tag(entry.to_owned()));
    }
    if let Some(cap) = entry.strip_prefix("cap:") {
        check_capability(cap)?;
        return Ok(Principal::Capability(cap.to_owned()));
    }
    if entry.starts_with("group:") || entry.starts_with("autogroup:") {
        return Err(group_problem(entry, service));
    }
    let network_like = entry.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'));
    if network_like && entry.contains(['.', ':']) {
        return crate::checks::parse_ip_net(entry).map(Principal::Network);
    }
    if let Some(domain) = entry.strip_prefix("*@") {
        if domain.is_empty() || domain.contains(['@', '*']) || domain.contains(char::is_whitespace) {
            return Err(Problem::new(format!("allow entry {raw:?} is not a domain"), Some(ALLOW_FORMS.to_owned())));
        }
        return Ok(Principal::Domain(domain.to_ascii_lowercase()));
    }
    match entry.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && !domain.is_empty() && !domain.contains('@') && !entry.contains(['*', ' ', '\t']) =>
        {
            Ok(Principal::User(entry.to_ascii_lowercase()))
        }
        _ => Err(Problem::new(
            format!("allow entry {raw:?} is not a login, tag, capability, network, \"*\" or \"local\""),
            Some(ALLOW_FORMS.to_owned()),
        )),
    }
}

/// Groups are policy-side only: say how to express one.
fn group_problem(entry: &str, service: &str) -> Problem {
    let cap = format!("example.com/cap/{service}");
    Problem::new(
        format!(
            "allow entry {entry:?}: tailnet groups cannot be checked here (tailscaled's whois tells a node a client's login, tags and capabilities, not its groups)"
        ),
        Some(format!(
            "grant the group a capability toward the service in the tailnet policy, e.g. {{\"src\": [\"{entry}\"], \"dst\": [\"svc:{service}\"], \"app\": {{\"{cap}\": [{{}}]}}}}, and write allow = [\"cap:{cap}\"]{}",
            if entry == "autogroup:member" { "; or \"*@yourdomain\" for every user of a domain" } else { "" }
        )),
    )
}

/// An application capability name as the tailnet policy writes it: `domain/path`.
pub(crate) fn check_capability(cap: &str) -> Result<(), Problem> {
    let help = || Some("capability names are a domain and a path, e.g. \"example.com/cap/grafana\"".to_owned());
    if cap.is_empty() {
        return Err(Problem::new("the capability name is empty", help()));
    }
    let printable = cap.bytes().all(|b| b.is_ascii_graphic());
    let Some((domain, path)) = cap.split_once('/') else {
        return Err(Problem::new(format!("capability {cap:?} has no path after its domain"), help()));
    };
    if !printable || domain.is_empty() || !domain.contains('.') || path.is_empty() {
        return Err(Problem::new(format!("capability {cap:?} is not a domain/path name"), help()));
    }
    Ok(())
}

impl Validator<'_> {
    /// `allow`, `deny` and `accept_app_caps` of one service (none applies to
    /// passthrough, which `HTTP_ONLY_KEYS` reports).
    pub(crate) fn access_options(&mut self, known: &[Entry<'_>], service: &mut Service) {
        if service.passthrough.is_some() {
            return;
        }
        if let Some(a) = find(known, "allow") {
            service.allow = self.allow(a, &service.name);
        }
        if let Some(d) = find(known, "deny") {
            service.deny = self.strings(d, "deny entry", |raw| parse_principal(raw, &service.name));
            if d.item.as_array().is_some_and(|a| a.is_empty()) {
                self.error(
                    d.value_span(),
                    &d.path,
                    "deny = [] refuses nobody",
                    Some("remove deny, or list the networks and identities to refuse".to_owned()),
                );
            }
        }
        if let Some(c) = find(known, "accept_app_caps") {
            service.accept_app_caps = self.strings(c, "capability", |cap| match cap.strip_prefix("cap:") {
                Some(bare) => Err(Problem::new(
                    format!("accept_app_caps takes capability names without \"cap:\": {cap:?}"),
                    Some(format!("write \"{bare}\"")),
                )),
                None => check_capability(cap).map(|()| cap.to_owned()),
            });
        }
    }

    /// `allow = [...]`: at least one valid entry.
    fn allow(&mut self, e: &Entry<'_>, service: &str) -> Option<Vec<Principal>> {
        let rules = self.strings(e, "allow entry", |raw| parse_principal(raw, service));
        if rules.is_empty() && e.item.as_array().is_some_and(|a| a.is_empty()) {
            self.error(
                e.value_span(),
                &e.path,
                format!("allow = [] admits nobody to service {service:?}"),
                Some(format!("remove allow to admit every client, or {ALLOW_FORMS}")),
            );
        }
        (!rules.is_empty()).then_some(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> Principal {
        parse_principal(raw, "grafana").unwrap_or_else(|p| panic!("{raw}: {}", p.message))
    }

    fn err(raw: &str) -> Problem {
        parse_principal(raw, "grafana").expect_err(raw)
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        for (raw, want) in [
            ("Alice@Example.com", Principal::User("alice@example.com".into())),
            ("alice@github", Principal::User("alice@github".into())),
            ("*@Example.com", Principal::Domain("example.com".into())),
            ("tag:monitoring", Principal::Tag("tag:monitoring".into())),
            ("cap:example.com/cap/grafana", Principal::Capability("example.com/cap/grafana".into())),
            ("*", Principal::AnyNode),
            (" local ", Principal::Local),
            ("192.168.1.0/24", Principal::Network("192.168.1.0/24".parse().expect("net"))),
            ("203.0.113.7", Principal::Network("203.0.113.7/32".parse().expect("net"))),
            ("fd00::/8", Principal::Network("fd00::/8".parse().expect("net"))),
        ] {
            let p = ok(raw);
            assert_eq!(p, want, "{raw}");
            assert_eq!(ok(&p.to_string()), p, "round trip of {raw}");
        }
    }

    #[test]
    fn wrong_entries_say_what_to_write() {
        let g = err("group:admins");
        assert!(g.message.contains("groups cannot be checked"), "{}", g.message);
        let help = g.help.unwrap_or_default();
        assert!(help.contains("\"dst\": [\"svc:grafana\"]") && help.contains("cap:example.com/cap/grafana"), "{help}");
        assert!(err("autogroup:member").help.unwrap_or_default().contains("*@yourdomain"));
        for bad in [
            "",
            "alice",
            "tag:",
            "tag:a b",
            "cap:grafana",
            "cap:example.com/",
            "cap:/x",
            "*@",
            "a@b@c",
            "*x",
            "10.0.0.1/8",
            "300.1.2.3",
        ] {
            let p = err(bad);
            assert!(p.help.is_some(), "{bad:?}: {}", p.message);
        }
    }
}
