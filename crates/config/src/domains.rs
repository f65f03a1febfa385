//! `[domains."DOMAIN"]` — domains whose names take their certificate from PEM files — and
//! the `names` of a service, each of which must be under one of them.
//!
//! Only the file *paths* are checked here; whether the files exist, parse, match and
//! cover the names is for `snirouter check` and the running router to find out
//! (`snirouter-certs`, `files.rs`), since a config is also validated where they are not.

use std::path::PathBuf;

use crate::checks::{self, Problem};
use crate::schema::Domain;
use crate::validate::{Entry, Validator, describe, entries, find};

const DOMAIN_KEYS: &[&str] = &["cert", "key", "cert_dir", "forward_auth", "apex_redirect"];

/// The names tailscaled hands out certificates for; a domain there is a mistake.
const TAILNET_SUFFIX: &str = ".ts.net";

const CERT_EXAMPLE: &str = "cert_dir = \"/var/lib/acme/example.com\" (NixOS security.acme: fullchain.pem and key.pem), or cert = \"…/fullchain.pem\" and key = \"…/key.pem\"";

impl Validator<'_> {
    /// `[domains]`: a table of domain tables.
    pub(crate) fn domains(&mut self, entry: Option<&Entry<'_>>) -> Vec<Domain> {
        let Some(entry) = entry else { return Vec::new() };
        let Some(table) = entry.item.as_table_like() else {
            self.error(
                entry.value_span(),
                &entry.path,
                format!("expected a table of domains, found {}", describe(entry.item)),
                Some(format!("write it as a section: [domains.\"example.com\"] with {CERT_EXAMPLE}")),
            );
            return Vec::new();
        };
        let mut out: Vec<Domain> = Vec::new();
        for e in entries(table, &entry.path) {
            let Some(domain) = self.domain(&e) else { continue };
            if let Some(first) = out.iter().find(|d| d.name == domain.name) {
                self.error(
                    e.key_span(),
                    &e.path,
                    format!("domain {:?} is configured twice (first on line {})", domain.name, first.line),
                    Some("merge the two tables".to_owned()),
                );
                continue;
            }
            out.push(domain);
        }
        out
    }

    /// One `[domains."DOMAIN"]`.
    fn domain(&mut self, e: &Entry<'_>) -> Option<Domain> {
        let name = match checks::normalize_dns_name(e.name, 2, "the domain") {
            Ok(n) if n.ends_with(TAILNET_SUFFIX) => {
                self.error(
                    e.key_span(),
                    &e.path,
                    format!("{n:?} is a tailnet name: its certificates come from tailscaled, not from files"),
                    Some("remove this table; tailnet names are NAME.<MagicDNS suffix> or a service's fqdn".to_owned()),
                );
                return None;
            }
            Ok(n) => n,
            Err(p) => {
                self.report(e.key_span(), &e.path, p);
                return None;
            }
        };
        let line = self.line(&e.key_span());
        let fields = self.section(Some(e), DOMAIN_KEYS);
        let (cert, key) = self.cert_files(e, &fields)?;
        let forward_auth = find(&fields, "forward_auth").and_then(|f| self.forward_auth(f));
        let apex_redirect = find(&fields, "apex_redirect").and_then(|f| {
            let raw = self.string(f, "\"https://www.example.com\"")?;
            redirect_target(raw).map_err(|p| self.report(f.value_span(), &f.path, p)).ok()
        });
        Some(Domain { name, cert, key, forward_auth, apex_redirect, line })
    }

    /// `cert_dir`, or `cert` and `key`.
    fn cert_files(&mut self, e: &Entry<'_>, fields: &[Entry<'_>]) -> Option<(PathBuf, PathBuf)> {
        let path =
            |v: &mut Self, key: &str| find(fields, key).and_then(|f| v.path_buf(f, "\"/var/lib/acme/example.com\""));
        let dir = path(self, "cert_dir");
        let cert = path(self, "cert");
        let key = path(self, "key");
        let problem = match (&dir, &cert, &key) {
            (Some(dir), None, None) => return Some((dir.join("fullchain.pem"), dir.join("key.pem"))),
            (None, Some(c), Some(k)) => return Some((c.clone(), k.clone())),
            (None, None, None) if find(fields, "cert_dir").is_none() && find(fields, "cert").is_none() => {
                format!("domain {:?} has no certificate files", e.name)
            }
            (None, None, None) => return None, // a path already reported
            (Some(_), _, _) => format!("domain {:?} has cert_dir and cert/key; it needs one of them", e.name),
            (None, Some(_), None) => format!("domain {:?} has cert but no key", e.name),
            (None, None, Some(_)) => format!("domain {:?} has key but no cert", e.name),
        };
        self.error(e.key_span(), &e.path, problem, Some(format!("write {CERT_EXAMPLE}")));
        None
    }

    /// `names = [...]` of a service: DNS names under one of `domains`, not tailnet names.
    pub(crate) fn service_extra_names(&mut self, e: &Entry<'_>, domains: &[Domain]) -> Vec<String> {
        let names = self.strings(e, "name", |raw| extra_name(raw, domains));
        let mut out: Vec<String> = Vec::new();
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// `apex_redirect`: `http(s)://HOST[:PORT][/PATH]`, a fixed target (never taken from the
/// request), returned without a trailing slash.
fn redirect_target(raw: &str) -> Result<String, Problem> {
    let help =
        || Some("write the site to send visitors to, e.g. apex_redirect = \"https://www.example.com\"".to_owned());
    let Some(rest) = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://")) else {
        return Err(Problem::new(format!("apex_redirect {raw:?} is not an http(s):// URL"), help()));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, port)| if port.parse::<u16>().is_ok() { h } else { authority });
    if checks::normalize_dns_name(host, 1, "the host").is_err() || path.contains(['?', '#', ' ']) {
        return Err(Problem::new(format!("apex_redirect {raw:?} needs a host name and a plain path"), help()));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// One entry of `names`.
fn extra_name(raw: &str, domains: &[Domain]) -> Result<String, Problem> {
    let name = checks::normalize_dns_name(raw, 2, "the name")?;
    if name.ends_with(TAILNET_SUFFIX) {
        return Err(Problem::new(
            format!("{name:?} is a tailnet name; names lists names under [domains]"),
            Some("a service's tailnet name is NAME.<MagicDNS suffix>, or set fqdn = \"…\" to change it".to_owned()),
        ));
    }
    if domains.iter().any(|d| d.covers(&name)) {
        return Ok(name);
    }
    let parent = name.split_once('.').map_or(name.as_str(), |(_, rest)| rest);
    Err(Problem::new(
        format!("no [domains] entry covers {name:?}, so it has no certificate"),
        Some(format!("add [domains.\"{parent}\"] with {CERT_EXAMPLE}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> Domain {
        Domain {
            name: name.into(),
            cert: "c".into(),
            key: "k".into(),
            forward_auth: None,
            apex_redirect: None,
            line: 0,
        }
    }

    #[test]
    fn redirect_targets_are_fixed_urls() {
        assert_eq!(redirect_target("https://www.example.com/").expect("ok"), "https://www.example.com");
        assert_eq!(
            redirect_target("http://www.example.com:8080/site").expect("ok"),
            "http://www.example.com:8080/site"
        );
        for bad in ["www.example.com", "https://", "https://x/a?b=1", "ftp://x", "https://bad host"] {
            assert!(redirect_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_must_be_under_a_domain_and_not_tailnet_names() {
        let d = [domain("example.com")];
        assert_eq!(extra_name("Grafana.Example.com.", &d).expect("ok"), "grafana.example.com");
        assert_eq!(extra_name("example.com", &d).expect("apex"), "example.com");
        let p = extra_name("grafana.other.org", &d).expect_err("uncovered");
        assert!(p.help.as_deref().is_some_and(|h| h.contains("[domains.\"other.org\"]")), "{p:?}");
        assert!(extra_name("notexample.com", &d).is_err(), "a suffix is not a parent domain");
        assert!(extra_name("grafana.tail-1.ts.net", &d).expect_err("tailnet").message.contains("tailnet name"));
    }
}
