//! The public half of a gateway Caddyfile: sites under the owner's own domain with
//! `tls CERT KEY`, the `*.DOMAIN` catch-all and the apex `redir`.
//!
//! * A site whose names are not tailnet names and that has `tls CERT KEY` gives its
//!   service those `names`, and the files become `[domains."DOMAIN"]` (DOMAIN: the
//!   name minus its first label). Its routes must be the tailnet site's; its
//!   `forward_auth`, shared by the public sites of the domain, becomes the domain's
//!   (a public site without one gets `bypass_auth = true`).
//! * `*.DOMAIN { tls CERT KEY; … }` needs nothing: names under a domain that no service
//!   has get snirouter's 404 page with the wildcard certificate.
//! * `DOMAIN { redir https://www.DOMAIN{uri} }` becomes the domain's `apex_redirect`.

use crate::model::{Auth, DomainOut, Finding, Model, Service};
use crate::parser::{Address, Directive, Site};

/// What kind of site this is, judged by its addresses and directives.
pub(crate) enum Kind {
    /// `*.DOMAIN`.
    CatchAll(String),
    /// A site that only redirects (`redir`, no `reverse_proxy`).
    Apex(String),
    /// Anything else: a service.
    Service,
}

/// Classifies `site` (its directives after snippet expansion).
pub(crate) fn kind(site: &Site, directives: &[Directive]) -> Kind {
    let addresses: Vec<Address> = site.addresses.iter().filter_map(|a| Address::parse(&a.text)).collect();
    if let Some(domain) = addresses.iter().find_map(|a| a.host.strip_prefix("*.")) {
        return Kind::CatchAll(domain.to_owned());
    }
    let proxies = |ds: &[Directive]| {
        ds.iter().any(|d| matches!(d.name.text.as_str(), "reverse_proxy" | "handle" | "handle_path"))
    };
    let redirects = directives.iter().any(|d| d.name.text == "redir");
    match addresses.as_slice() {
        [a] if redirects && !proxies(directives) && !a.is_tailnet() => Kind::Apex(a.host.clone()),
        _ => Kind::Service,
    }
}

/// The domain a public service name is under: the name minus its first label.
pub(crate) fn domain_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, rest)| rest)
}

/// The files of `tls CERT KEY` (no block), if that is what `d` says.
pub(crate) fn cert_key(d: &Directive) -> Option<(String, String)> {
    match d.arg_texts().as_slice() {
        [cert, key] if d.block.is_none() => Some(((*cert).to_owned(), (*key).to_owned())),
        _ => None,
    }
}

/// `tls CERT KEY`, if that is what the site says.
fn tls_files(directives: &[Directive]) -> Option<(String, String)> {
    directives.iter().find(|d| d.name.text == "tls").and_then(cert_key)
}

/// Records `domain`'s certificate files (a second, different pair is flagged).
pub(crate) fn register_domain(model: &mut Model, domain: &str, files: &(String, String), at: &Directive) {
    match model.domains.iter().find(|d| d.name == domain) {
        Some(d) if (&d.cert, &d.key) == (&files.0, &files.1) => {}
        Some(d) => {
            let message = format!(
                "domain {domain} already has the certificate {} (line {}); one pair per domain is translated",
                d.cert, d.line
            );
            model.untranslated.push(at.finding(message));
        }
        None => model.domains.push(DomainOut {
            name: domain.to_owned(),
            cert: files.0.clone(),
            key: files.1.clone(),
            line: at.line(),
            ..DomainOut::default()
        }),
    }
}

/// `*.DOMAIN { tls CERT KEY; respond|error|abort …; handle_errors … }`.
pub(crate) fn catch_all(model: &mut Model, site: &Site, domain: &str, directives: &[Directive]) {
    let at = site.as_directive();
    match tls_files(directives) {
        Some(files) => register_domain(model, domain, &files, &at),
        None => model.untranslated.push(at.finding(
            format!("catch-all for {domain} without `tls CERT KEY`: write [domains.\"{domain}\"] with its wildcard certificate by hand"),
        )),
    }
    for d in directives {
        match d.name.text.as_str() {
            "tls" => {}
            "respond" | "error" | "abort" | "handle_errors" | "handle" => model.notes.push(d.finding(
                format!("names under {domain} that no service has get snirouter's 404 page (with the wildcard certificate; [defaults] error_pages 404.html if set)"),
            )),
            _ => model.untranslated.push(d.finding("not translated in the catch-all site; it answers 404")),
        }
    }
}

/// `DOMAIN { tls CERT KEY; redir https://www.DOMAIN{uri} [code] }`.
pub(crate) fn apex(model: &mut Model, site: &Site, host: &str, directives: &[Directive]) {
    let at = site.as_directive();
    if let Some(files) = tls_files(directives) {
        register_domain(model, host, &files, &at);
    }
    for d in directives {
        match (d.name.text.as_str(), d.arg_texts().as_slice()) {
            ("tls", _) => {}
            ("redir", [target, ..]) if d.args.len() <= 2 => {
                match target.strip_suffix("{uri}") {
                    Some(base) if !base.contains('{') && base.starts_with("http") => {
                        if !model.domains.iter().any(|x| x.name == host) {
                            model.untranslated.push(d.finding(format!("the redirect needs [domains.\"{host}\"] with a certificate for {host}: add `tls CERT KEY`")));
                            continue;
                        }
                        if let Some(dom) = model.domains.iter_mut().find(|x| x.name == host) {
                            dom.apex_redirect = Some(base.trim_end_matches('/').to_owned());
                        }
                        if d.args.len() == 2 {
                            model.notes.push(d.finding("snirouter's apex_redirect answers 302"));
                        }
                    }
                    _ => model
                        .untranslated
                        .push(d.finding("only `redir https://HOST{uri}` (a fixed target) becomes apex_redirect")),
                }
            }
            _ => model.untranslated.push(d.finding("not translated in a redirect-only site")),
        }
    }
}

/// Merges the public-only sites into their services (or makes them services).
pub(crate) fn attach(model: &mut Model) {
    for public in std::mem::take(&mut model.public_sites) {
        let auth = public.forward_auth.clone();
        let domains: Vec<String> = public.names.iter().map(|n| domain_of(n).to_owned()).collect();
        let Some(i) = model.services.iter().position(|s| s.name == public.name) else {
            let mut svc = public;
            svc.forward_auth = None;
            let note = format!(
                "only a public site names service {:?}; it also gets the tailnet name {}.<tailnet>.ts.net",
                svc.name, svc.name
            );
            model.notes.push(Finding { line: svc.line, directive: svc.addresses.join(", "), message: note });
            domain_auth(model, &domains, auth.as_ref(), &mut svc);
            model.services.push(svc);
            continue;
        };
        if !model.services[i].same_routes(&public) {
            let message = format!(
                "the public site of service {:?} routes differently from its tailnet site (line {}); only the tailnet site's routes are written",
                public.name, model.services[i].line
            );
            model.untranslated.push(Finding { line: public.line, directive: public.addresses.join(", "), message });
        }
        let mut svc = std::mem::take(&mut model.services[i]);
        svc.names.extend(public.names.iter().cloned());
        svc.addresses.extend(public.addresses.iter().cloned());
        svc.untranslated.extend(public.untranslated.iter().cloned());
        domain_auth(model, &domains, auth.as_ref(), &mut svc);
        model.services[i] = svc;
    }
}

/// A public site's forward auth becomes its domain's; without one, the service bypasses it.
fn domain_auth(model: &mut Model, domains: &[String], auth: Option<&Auth>, svc: &mut Service) {
    for domain in domains {
        let Some(d) = model.domains.iter_mut().find(|d| &d.name == domain) else { continue };
        match (auth, &d.forward_auth) {
            // The service's own forward_auth covers all its names already.
            (None, _) if svc.forward_auth.is_some() => {}
            (None, _) => svc.bypass_auth = true,
            (Some(a), None) => d.forward_auth = Some(a.clone()),
            (Some(a), Some(existing)) if a == existing => {}
            (Some(_), Some(_)) => model.untranslated.push(Finding {
                line: svc.line,
                directive: svc.addresses.join(", "),
                message: format!("another forward_auth than the other sites of {domain}; the domain's is used"),
            }),
        }
    }
}
