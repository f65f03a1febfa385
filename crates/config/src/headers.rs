//! `request_headers` and `response_headers` (in `[defaults]` and per service): headers
//! removed from and set on the request sent upstream, and the answer sent back — Caddy's
//! `request_header` and `header` directives.

use toml_edit::TableLike;

use crate::checks::Problem;
use crate::schema::{Domain, HeaderRules, Service};
use crate::validate::{Entry, Validator, describe, entries, find};

const RULE_KEYS: &[&str] = &["remove", "set"];

/// Headers snirouter itself decides, which no rule may touch.
const OWNED: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive"];

/// Identity headers snirouter sets from tailscaled (`tailscale_identity`), never a rule.
const IDENTITY_PREFIX: &str = "tailscale-";

const EXAMPLE: &str =
    "request_headers = { remove = [\"X-Middleware-Subrequest\"], set = { \"X-Frame-Options\" = \"DENY\" } }";

impl Validator<'_> {
    /// One `request_headers` / `response_headers` table.
    pub(crate) fn header_rules(&mut self, e: &Entry<'_>) -> HeaderRules {
        let mut rules = HeaderRules::default();
        let Some(table) = e.item.as_table_like() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a table, found {}", describe(e.item)),
                Some(format!("write {EXAMPLE}")),
            );
            return rules;
        };
        let fields = entries(table, &e.path);
        self.check_keys(&fields, RULE_KEYS, &format!("in {}", e.path));
        if let Some(r) = find(&fields, "remove") {
            rules.remove = self.strings(r, "header name", header_name);
        }
        if let Some(s) = find(&fields, "set") {
            rules.set = self.header_values(s);
        }
        rules
    }

    /// `set = { "Name" = "value", … }`.
    fn header_values(&mut self, e: &Entry<'_>) -> Vec<(String, String)> {
        let Some(table) = e.item.as_table_like() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a table of header names and values, found {}", describe(e.item)),
                Some("write set = { \"X-Frame-Options\" = \"DENY\" }".to_owned()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in entries(table as &dyn TableLike, &e.path) {
            let Some(value) = self.string(&f, "\"value\"") else { continue };
            match header_name(f.name).and_then(|n| header_value(value).map(|v| (n, v))) {
                Ok(pair) => out.push(pair),
                Err(p) => self.report(f.key_span(), &f.path, p),
            }
        }
        out
    }

    /// Refuses request rules that would set what this service's forward auth decides
    /// (`copy_headers` of its own, `[defaults]`' or its names' domains' auth).
    pub(crate) fn check_request_rules(&mut self, e: &Entry<'_>, service: &Service, domains: &[Domain]) {
        let auths = service.forward_auth.iter().chain(
            domains
                .iter()
                .filter(|d| service.names.iter().any(|n| d.covers(n)))
                .filter_map(|d| d.forward_auth.as_ref()),
        );
        let decided: Vec<String> = auths.flat_map(|a| a.copy_headers.iter()).map(|h| h.to_ascii_lowercase()).collect();
        for (name, _) in &service.request_headers.set {
            if decided.contains(name) {
                self.error(
                    e.key_span(),
                    &e.path,
                    format!(
                        "request_headers sets {name:?}, which forward_auth's copy_headers decide for service {:?}",
                        service.name
                    ),
                    Some("remove it from set: a fixed value would let every client in as that user".to_owned()),
                );
            }
        }
    }
}

/// A header name a rule may name, lowercase.
fn header_name(raw: &str) -> Result<String, Problem> {
    let name = raw.trim().to_ascii_lowercase();
    let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(Problem::new(
            format!("{raw:?} is not a header name"),
            Some("use letters, digits and '-'".to_owned()),
        ));
    }
    if OWNED.contains(&name.as_str()) || name.starts_with(IDENTITY_PREFIX) {
        return Err(Problem::new(
            format!("{raw:?} is set by snirouter itself and cannot be changed by a rule"),
            Some("remove it from the rule (Host: upstream_host; identity: tailscale_identity)".to_owned()),
        ));
    }
    Ok(name)
}

/// A header value: visible ASCII and spaces, no line breaks.
fn header_value(raw: &str) -> Result<String, Problem> {
    if raw.bytes().all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b)) {
        Ok(raw.to_owned())
    } else {
        Err(Problem::new(
            format!("header value {raw:?} has characters a header cannot carry"),
            Some("use printable ASCII without line breaks".to_owned()),
        ))
    }
}

/// `[defaults]` rules with the service's over them: removals add up, a service's `set`
/// replaces the default's value of the same name.
pub(crate) fn merged(defaults: &HeaderRules, own: HeaderRules) -> HeaderRules {
    let mut remove = defaults.remove.clone();
    remove.extend(own.remove.into_iter().filter(|n| !defaults.remove.contains(n)));
    let mut set: Vec<(String, String)> =
        defaults.set.iter().filter(|(n, _)| !own.set.iter().any(|(o, _)| o == n)).cloned().collect();
    set.extend(own.set);
    HeaderRules { remove, set }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(header_name("X-Middleware-Subrequest").expect("ok"), "x-middleware-subrequest");
        assert!(header_name("Host").is_err() && header_name("Tailscale-User-Login").is_err());
        assert!(header_name("bad name").is_err());
        assert!(header_value("max-age=63072000; includeSubDomains").is_ok());
        assert!(header_value("a\r\nInjected: 1").is_err());
    }

    #[test]
    fn service_rules_go_over_the_defaults() {
        let d = HeaderRules { remove: vec!["x-a".into()], set: vec![("x-frame-options".into(), "DENY".into())] };
        let own = HeaderRules {
            remove: vec!["x-a".into(), "x-b".into()],
            set: vec![("x-frame-options".into(), "SAMEORIGIN".into())],
        };
        let m = merged(&d, own);
        assert_eq!(m.remove, ["x-a", "x-b"]);
        assert_eq!(m.set, [("x-frame-options".to_owned(), "SAMEORIGIN".to_owned())]);
    }
}
