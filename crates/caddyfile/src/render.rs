//! The translated model → TOML text, with every finding as a comment.

use std::fmt::Write as _;

use crate::model::{Auth, DomainOut, Finding, Headers, Model, Service, by_line};

/// Renders the whole configuration.
pub(crate) fn render(m: &Model) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# snirouter configuration imported from {} by `snirouter import-caddyfile`.", m.source_name);
    out.push_str("# Validate it with: snirouter check --config FILE\n");
    findings_block(&mut out, "NOT TRANSLATED — act on each before switching", &m.untranslated);
    findings_block(&mut out, "No equivalent needed in snirouter", &m.notes);

    out.push_str("\n[listen]\n");
    out.push_str("# tailscaled's serve handler of every Tailscale Service forwards TCP 443 here with a PROXY v2\n");
    out.push_str("# header (docs/tailnet-setup.md; `snirouter services plan` shows the steps).\n");
    out.push_str("proxy_protocol = [\"127.0.0.1:8443\"]\n");
    if !m.domains.is_empty() {
        out.push_str("# The public names under [domains] come in as Caddy's sites did: on port 443 (the LAN, a\n");
        out.push_str("# port forward, or a tunnel on this host); tailscaled forwards only Service names above.\n");
        out.push_str("https = [\"0.0.0.0:443\"]\n");
    }

    if let Some((size, _)) = &m.max_header_size {
        out.push_str("\n[limits]\n");
        let _ = writeln!(out, "max_header_bytes = {}  # servers {{ max_header_size {size} }}", string(size));
    }
    if m.request_header_timeout.is_some() || m.idle_timeout.is_some() {
        out.push_str("\n[timeouts]\n");
        if let Some(t) = &m.request_header_timeout {
            let _ = writeln!(out, "request_header = {}", string(t));
        }
        if let Some(t) = &m.idle_timeout {
            let _ = writeln!(out, "idle = {}", string(t));
        }
    }
    if let Some(level) = &m.log_level {
        out.push_str("\n[log]\n");
        let _ = writeln!(out, "level = {}", string(level));
    }
    if m.defaults_auth.is_some() || m.defaults_error_pages.is_some() {
        out.push_str("\n[defaults]\n");
        if let Some(a) = &m.defaults_auth {
            out.push_str("# every service below asks this server first, unless it says bypass_auth = true\n");
            let _ = writeln!(out, "forward_auth = {}", auth(a));
        }
        if let Some(p) = &m.defaults_error_pages {
            let _ = writeln!(out, "error_pages = {}", string(p));
        }
    }
    for d in &m.domains {
        domain(&mut out, d);
    }
    for s in &m.services {
        service(&mut out, s);
    }
    out
}

fn domain(out: &mut String, d: &DomainOut) {
    let _ = writeln!(out, "\n# line {}: the certificate of {} and the names under it", d.line, d.name);
    let _ = writeln!(out, "[domains.{}]", string(&d.name));
    let _ = writeln!(out, "cert = {}", string(&d.cert));
    let _ = writeln!(out, "key = {}", string(&d.key));
    if let Some(a) = &d.forward_auth {
        let _ = writeln!(out, "forward_auth = {}", auth(a));
    }
    if let Some(r) = &d.apex_redirect {
        let _ = writeln!(out, "apex_redirect = {}", string(r));
    }
}

fn findings_block(out: &mut String, title: &str, findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    let _ = writeln!(out, "#\n# {title} ({}):", findings.len());
    for items in by_line(findings).values() {
        for f in items {
            let _ = writeln!(out, "#   {}", one_line(&f.to_string()));
        }
    }
}

fn service(out: &mut String, s: &Service) {
    let _ = writeln!(out, "\n# line {}: {}", s.line, s.addresses.join(", "));
    for f in &s.untranslated {
        let _ = writeln!(out, "# NOT TRANSLATED {}", one_line(&f.to_string()));
    }
    let _ = writeln!(out, "[services.{}]", key(&s.name));
    if let Some(fqdn) = &s.fqdn {
        let _ = writeln!(out, "fqdn = {}", string(fqdn));
    }
    match s.routes.as_slice() {
        [r] if r.path == "/" && !r.strip_prefix => {
            let _ = writeln!(out, "upstream = {}", string(&r.upstream));
        }
        routes => {
            out.push_str("routes = [\n");
            for r in routes {
                let _ = write!(out, "  {{ path = {}, upstream = {}", string(&r.path), string(&r.upstream));
                if r.strip_prefix {
                    out.push_str(", strip_prefix = true");
                }
                out.push_str(" },\n");
            }
            out.push_str("]\n");
        }
    }
    if !s.names.is_empty() {
        let names: Vec<String> = s.names.iter().map(|n| string(n)).collect();
        let _ = writeln!(out, "names = [{}]", names.join(", "));
    }
    if let Some(h) = &s.upstream_host {
        let _ = writeln!(out, "upstream_host = {}", string(h));
    }
    if s.insecure_skip_verify {
        out.push_str("insecure_skip_verify = true\n");
    }
    if let Some(a) = &s.forward_auth {
        let _ = writeln!(out, "forward_auth = {}", auth(a));
    }
    if s.bypass_auth {
        out.push_str("bypass_auth = true\n");
    }
    if s.cors {
        out.push_str("cors = true\n");
    }
    if let Some(p) = &s.error_pages {
        let _ = writeln!(out, "error_pages = {}", string(p));
    }
    if let Some(codes) = &s.error_pages_upstream {
        let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
        let _ = writeln!(out, "error_pages_upstream = [{}]", codes.join(", "));
    }
    if let Some(b) = &s.max_body {
        let _ = writeln!(out, "max_body_bytes = {}", string(b));
    }
    if s.access_log {
        out.push_str("access_log = true\n");
    }
    for (key, rules) in [("request_headers", &s.request_headers), ("response_headers", &s.response_headers)] {
        if !rules.is_empty() {
            let _ = writeln!(out, "{key} = {}", headers(rules));
        }
    }
}

/// `{ remove = [...], set = { "Name" = "value" } }`.
fn headers(h: &Headers) -> String {
    let mut parts = Vec::new();
    if !h.remove.is_empty() {
        let names: Vec<String> = h.remove.iter().map(|n| string(n)).collect();
        parts.push(format!("remove = [{}]", names.join(", ")));
    }
    if !h.set.is_empty() {
        let pairs: Vec<String> = h.set.iter().map(|(n, v)| format!("{} = {}", string(n), string(v))).collect();
        parts.push(format!("set = {{ {} }}", pairs.join(", ")));
    }
    format!("{{ {} }}", parts.join(", "))
}

fn auth(a: &Auth) -> String {
    let headers: Vec<String> = a.copy_headers.iter().map(|h| string(h)).collect();
    format!("{{ url = {}, copy_headers = [{}] }}", string(&a.url), headers.join(", "))
}

/// A bare key when possible, else a quoted one.
fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        k.to_owned()
    } else {
        string(k)
    }
}

/// A TOML basic string.
pub(crate) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Comments are one line each.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_are_escaped() {
        assert_eq!(string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(key("grafana"), "grafana");
        assert_eq!(key("a.b"), "\"a.b\"");
    }
}
