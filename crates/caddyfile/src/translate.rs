//! Caddyfile directives → snirouter services.
//!
//! Each site block becomes one `[services.NAME]`: NAME comes from `bind tailscale/NAME`, else
//! from the first label of a `*.ts.net` address, else from the first label of the first
//! address. Sites that resolve to the same name are merged when they say the same thing.
//! Settings shared by every service that uses them are hoisted into `[defaults]`
//! (`forward_auth` — services without it get `bypass_auth = true` — and `error_pages`).

use crate::Error;
pub use crate::model::Finding;
use crate::model::{Auth, Headers, Model, Route, Service};
use crate::parser::{Address, Caddyfile, Directive, Site, Snippet, parse};

/// How deep snippet imports may nest (guards against import cycles).
const MAX_IMPORT_DEPTH: usize = 8;

/// The result of [`translate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The generated snirouter configuration (TOML, with the findings as comments).
    pub toml: String,
    /// Service names in output order.
    pub services: Vec<String>,
    /// Directives that need no equivalent in snirouter, with the reason (informational).
    pub notes: Vec<Finding>,
    /// Directives (or parts) that were **not** translated: the output lacks their effect
    /// until someone acts on the message.
    pub untranslated: Vec<Finding>,
}

/// Reads `src` (named `source_name` in the output's header) and translates it.
///
/// # Errors
/// Only when the file cannot be read as a Caddyfile at all ([`Error`], with its line);
/// directives it cannot translate are reported in [`Translation::untranslated`].
pub fn translate(src: &str, source_name: &str) -> Result<Translation, Error> {
    let file = parse(src)?;
    let mut t = Translator { file: &file, model: Model { source_name: source_name.to_owned(), ..Model::default() } };
    t.global();
    t.snippets();
    for site in &file.sites {
        t.site(site);
    }
    crate::public::attach(&mut t.model);
    t.hoist_defaults();
    t.check_placeholders();
    let model = t.model;
    Ok(Translation {
        toml: crate::render::render(&model),
        services: model.services.iter().map(|s| s.name.clone()).collect(),
        notes: model.notes,
        untranslated: model.untranslated,
    })
}

struct Translator<'a> {
    file: &'a Caddyfile,
    model: Model,
}

/// Where a finding goes while a site is being translated.
#[derive(Default)]
struct SiteFindings {
    notes: Vec<Finding>,
    untranslated: Vec<Finding>,
}

impl SiteFindings {
    fn note(&mut self, d: &Directive, message: impl Into<String>) {
        self.notes.push(d.finding(message));
    }

    fn flag(&mut self, d: &Directive, message: impl Into<String>) {
        self.untranslated.push(d.finding(message));
    }
}

impl Translator<'_> {
    fn note(&mut self, d: &Directive, message: impl Into<String>) {
        self.model.notes.push(d.finding(message));
    }

    fn flag(&mut self, d: &Directive, message: impl Into<String>) {
        self.model.untranslated.push(d.finding(message));
    }

    /// The global options block.
    fn global(&mut self) {
        let Some(global) = &self.file.global else { return };
        for d in global {
            match d.name.text.as_str() {
                "servers" => self.servers(d),
                "tailscale" => self.note(
                    d,
                    "caddy-tailscale node settings have no equivalent: snirouter runs no tsnet nodes; it uses the host's tailscaled and Tailscale Services (docs/migration-from-caddy.md)",
                ),
                "email" | "acme_ca" | "acme_dns" | "acme_eab" | "cert_issuer" | "local_certs" | "skip_install_trust" => {
                    self.note(d, "ACME settings have no equivalent: tailscaled issues every certificate")
                }
                "auto_https" => self.note(
                    d,
                    "snirouter never obtains certificates itself; for HTTP→HTTPS redirects add [listen] redirect_http = [\"0.0.0.0:80\"]",
                ),
                "admin" => self.note(d, "snirouter has its own admin socket ([admin] socket, default /run/snirouter/admin.sock)"),
                "order" => self.note(d, "directive order is fixed in snirouter (forward_auth, then CORS, then the upstream)"),
                "debug" => self.model.log_level = Some("debug".to_owned()),
                _ => self.flag(d, "global option not supported by snirouter"),
            }
        }
    }

    /// `servers [addr] { max_header_size …; timeouts { read_header …; idle … } }`.
    fn servers(&mut self, d: &Directive) {
        if !d.args.is_empty() {
            self.note(d, "per-listener server options apply to every snirouter listener");
        }
        for c in d.children() {
            match (c.name.text.as_str(), c.arg_texts().as_slice()) {
                ("max_header_size", [size]) => match caddy_size(size) {
                    Some(n) => self.model.max_header_size = Some(((*size).to_owned(), n)),
                    None => self.flag(c, "cannot read this size; write [limits] max_header_bytes by hand"),
                },
                ("timeouts", []) => {
                    for t in c.children() {
                        match (t.name.text.as_str(), t.arg_texts().as_slice()) {
                            ("read_header", [v]) => self.model.request_header_timeout = Some((*v).to_owned()),
                            ("idle", [v]) => self.model.idle_timeout = Some((*v).to_owned()),
                            _ => self.flag(t, "server timeout not supported; see [timeouts] in docs"),
                        }
                    }
                }
                ("protocols", _) => self.note(c, "snirouter serves HTTP/1.1 and HTTP/2 (ALPN) on every TLS listener"),
                ("trusted_proxies", _) => self.note(
                    c,
                    "snirouter trusts only PROXY v2 headers on [listen] proxy_protocol listeners (tailscaled's serve handler)",
                ),
                _ => self.flag(c, "server option not supported by snirouter"),
            }
        }
    }

    /// Snippets that are never imported are reported, so nothing vanishes unseen.
    fn snippets(&mut self) {
        for s in &self.file.snippets {
            let used = self.file.sites.iter().any(|site| imports(&site.directives, &s.name))
                || self.file.snippets.iter().any(|o| o.name != s.name && imports(&o.directives, &s.name));
            if used && s.name.eq_ignore_ascii_case("cors") {
                self.model.notes.push(Finding {
                    line: s.line,
                    directive: format!("({})", s.name),
                    message: "each `import cors` becomes cors = true: snirouter's built-in CORS echoes an allowed Origin, allows credentials and answers preflight OPTIONS with 204 (restrict origins with cors_origins)".to_owned(),
                });
            }
            if !used {
                self.model.notes.push(Finding {
                    line: s.line,
                    directive: format!("({})", s.name),
                    message: "snippet is never imported; nothing to translate".to_owned(),
                });
            }
        }
    }

    fn snippet(&self, name: &str) -> Option<&Snippet> {
        self.file.snippets.iter().find(|s| s.name == name)
    }

    /// One site block → one service (merged with an earlier one of the same name).
    fn site(&mut self, site: &Site) {
        let mut f = SiteFindings::default();
        let mut svc = Service { line: site.line(), ..Service::default() };
        let mut bind_name: Option<String> = None;
        let mut directives = Vec::new();
        self.expand(&site.directives, &mut directives, &mut svc, &mut f, 0);
        match crate::public::kind(site, &directives) {
            crate::public::Kind::CatchAll(domain) => {
                crate::public::catch_all(&mut self.model, site, &domain, &directives);
                self.model.untranslated.append(&mut f.untranslated);
                return;
            }
            crate::public::Kind::Apex(host) => {
                crate::public::apex(&mut self.model, site, &host, &directives);
                self.model.untranslated.append(&mut f.untranslated);
                return;
            }
            crate::public::Kind::Service => {}
        }
        for d in &directives {
            self.directive(d, &mut svc, &mut bind_name, &mut f);
        }
        let bind_is_none = bind_name.is_none();
        self.addresses(site, &mut svc, bind_name, &mut f);
        if svc.routes.is_empty() {
            f.untranslated.push(Finding {
                line: site.line(),
                directive: site.addresses.iter().map(|a| a.text.as_str()).collect::<Vec<_>>().join(", "),
                message: format!(
                    "site has no reverse_proxy snirouter can use, so service {:?} is not written; add upstream = \"http://HOST:PORT\" under [services.{}] by hand",
                    svc.name, svc.name
                ),
            });
        }
        f.untranslated.sort_by_key(|x| x.line);
        svc.untranslated.clone_from(&f.untranslated);
        self.model.notes.append(&mut f.notes);
        self.model.untranslated.append(&mut f.untranslated);
        if svc.routes.is_empty() {
            return;
        }
        if let Some(files) = svc.tls_files.clone() {
            let at = site.as_directive();
            for name in &svc.names {
                crate::public::register_domain(&mut self.model, crate::public::domain_of(name), &files, &at);
            }
            if bind_is_none && !svc.addresses.iter().any(|a| Address::parse(a).is_some_and(|a| a.is_tailnet())) {
                // The public half of a service: merged with its tailnet site afterwards.
                self.model.public_sites.push(svc);
                return;
            }
        }
        if let Some(prev) = self.model.services.iter_mut().find(|s| s.name == svc.name) {
            let summary = svc.addresses_summary();
            if prev.same_settings(&svc) {
                prev.addresses.extend(svc.addresses);
                prev.untranslated.extend(svc.untranslated);
                self.model.notes.push(Finding {
                    line: svc.line,
                    directive: format!("site {summary}"),
                    message: format!(
                        "same service as the site at line {}; merged into [services.{}]",
                        prev.line, prev.name
                    ),
                });
            } else {
                self.model.untranslated.push(Finding {
                    line: svc.line,
                    directive: format!("site {summary}"),
                    message: format!(
                        "also names service {:?} (site at line {}) but with other settings; only the first is written — rename one with bind tailscale/OTHER",
                        svc.name, prev.line
                    ),
                });
            }
            return;
        }
        self.model.services.push(svc);
    }

    /// Expands `import SNIPPET` (except `import cors`, which becomes `cors = true`).
    fn expand(
        &self,
        input: &[Directive],
        out: &mut Vec<Directive>,
        svc: &mut Service,
        f: &mut SiteFindings,
        depth: usize,
    ) {
        for d in input {
            if d.name.text != "import" {
                out.push(d.clone());
                continue;
            }
            let args = d.arg_texts();
            let Some(name) = args.first() else {
                f.flag(d, "import without a snippet name");
                continue;
            };
            if name.eq_ignore_ascii_case("cors") {
                if args.len() > 1 {
                    f.flag(d, "arguments to the cors snippet are not translated; list allowed origins in cors_origins")
                }
                svc.cors = true;
                continue;
            }
            match self.snippet(name) {
                Some(_) if depth >= MAX_IMPORT_DEPTH => f.flag(d, "snippet imports nest too deeply (an import cycle?)"),
                Some(s) => {
                    let with: Vec<Directive> = s.directives.iter().map(|d| d.with_args(&args[1..])).collect();
                    self.expand(&with, out, svc, f, depth + 1);
                }
                None => f.flag(d, "import of files or unknown snippets is not supported; inline the imported text"),
            }
        }
    }

    /// One site-level directive.
    fn directive(&self, d: &Directive, svc: &mut Service, bind_name: &mut Option<String>, f: &mut SiteFindings) {
        match d.name.text.as_str() {
            "bind" => {
                for a in &d.args {
                    match a.text.strip_prefix("tailscale/") {
                        Some(n) if bind_name.is_none() && !n.is_empty() => *bind_name = Some(n.to_ascii_lowercase()),
                        Some(_) => f.flag(
                            d,
                            format!("a second tailscale bind {:?} is not translated; one site is one service", a.text),
                        ),
                        None => f.flag(d, format!("bind {:?}: snirouter listens where [listen] says", a.text)),
                    }
                }
                if d.args.is_empty() {
                    f.flag(d, "bind without an address");
                }
            }
            "tls" => self.tls(d, svc, f),
            "reverse_proxy" => self.reverse_proxy(d, None, false, svc, f),
            "handle" | "handle_path" => self.handle(d, svc, f),
            "forward_auth" => match forward_auth(d, f) {
                Some(a) if svc.forward_auth.is_none() => svc.forward_auth = Some(a),
                Some(_) => f.flag(d, "a second forward_auth in one site is not translated"),
                None => {}
            },
            "handle_errors" => {
                if let Some(dir) = error_pages(d, f) {
                    svc.error_pages = Some(dir);
                }
            }
            "request_body" => {
                for c in d.children() {
                    match (c.name.text.as_str(), c.arg_texts().as_slice()) {
                        ("max_size", [size]) if caddy_size(size).is_some() => svc.max_body = Some((*size).to_owned()),
                        _ => f.flag(c, "request_body option not supported; snirouter has max_body_bytes only"),
                    }
                }
                if !d.args.is_empty() {
                    f.flag(d, "request matchers are not supported; the body limit applies to the whole service");
                }
            }
            "log" => {
                svc.access_log = true;
                if !d.args.is_empty() || d.block.is_some() {
                    f.note(d, "access_log = true; lines go to the journal, or to [log] access_file, as JSON with Caddy's fields or [log] access_format = \"combined\"");
                }
            }
            "encode" => {
                f.flag(d, "snirouter does not compress responses; the backend's own compression passes through")
            }
            "header" => header_rules(d, &mut svc.response_headers, f),
            "request_header" => header_rules(d, &mut svc.request_headers, f),
            _ => f.flag(d, "directive not supported by snirouter"),
        }
    }

    /// `tls { get_certificate tailscale }` is what snirouter does anyway.
    /// `tls CERT KEY` gives the site's public names that certificate ([domains]).
    fn tls(&self, d: &Directive, svc: &mut Service, f: &mut SiteFindings) {
        match crate::public::cert_key(d) {
            Some(files) => svc.tls_files = Some(files),
            None if d.args.is_empty() => {}
            None => f.flag(
                d,
                "other certificate sources (`tls internal`, ACME options, client auth) are not supported; `tls CERT KEY` becomes a [domains] entry",
            ),
        }
        for c in d.children() {
            match (c.name.text.as_str(), c.arg_texts().as_slice()) {
                ("get_certificate", ["tailscale"]) => {}
                _ => f.flag(
                    c,
                    "TLS option not supported; snirouter serves TLS 1.2/1.3 with certificates from tailscaled",
                ),
            }
        }
    }

    /// `handle /path* { reverse_proxy … }` and `handle_path` (strips the prefix).
    fn handle(&self, d: &Directive, svc: &mut Service, f: &mut SiteFindings) {
        let strip = d.name.text == "handle_path";
        let path = match d.arg_texts().as_slice() {
            [] if !strip => Some("/".to_owned()),
            [m] => path_matcher(m),
            _ => None,
        };
        let Some(path) = path else {
            f.flag(d, "only a path-prefix matcher such as /sonarr* is supported here");
            return;
        };
        let mut routed = false;
        for c in d.children() {
            if c.name.text == "reverse_proxy" && !routed {
                self.reverse_proxy(c, Some(path.clone()), strip, svc, f);
                routed = true;
            } else {
                f.flag(c, format!("inside {}: only one reverse_proxy is translated", d.name.text));
            }
        }
        if !routed {
            f.flag(d, "no reverse_proxy inside; nothing to route");
        }
    }

    /// `reverse_proxy [matcher] UPSTREAM { transport http { … } header_up … }`.
    fn reverse_proxy(&self, d: &Directive, path: Option<String>, strip: bool, svc: &mut Service, f: &mut SiteFindings) {
        let mut args: &[crate::lexer::Token] = &d.args;
        let mut path = path;
        if let Some(first) = args.first()
            && (first.text.starts_with('/') || first.text.starts_with('@') || first.text == "*")
        {
            if path.is_some() {
                f.flag(d, "a matcher inside handle is not translated");
                return;
            }
            match path_matcher(&first.text) {
                Some(p) => path = Some(p),
                None => {
                    f.flag(d, "only path-prefix matchers such as /sonarr* are supported");
                    return;
                }
            }
            args = &args[1..];
        }
        let ProxyBlock { to, tls, insecure, upstream_host, page_statuses } = proxy_block(d, args, f);
        if !page_statuses.is_empty() {
            let chosen = svc.error_pages_upstream.get_or_insert_with(Vec::new);
            for code in page_statuses {
                if !chosen.contains(&code) {
                    chosen.push(code);
                }
            }
        }
        let Some(first) = to.first() else {
            f.flag(d, "reverse_proxy without an upstream");
            return;
        };
        if to.len() > 1 {
            f.flag(d, format!("load balancing is not supported; only the first upstream {first:?} is used"));
        }
        let Some(upstream) = upstream_url(first, tls) else {
            f.flag(d, format!("upstream {first:?} is not host:port, http:// or https://"));
            return;
        };
        if let Some(h) = upstream_host {
            let value = if h == "{upstream_hostport}" {
                upstream.split_once("://").map_or(upstream.clone(), |(_, hp)| hp.to_owned())
            } else {
                h
            };
            svc.upstream_host = Some(value);
        }
        if insecure {
            svc.insecure_skip_verify = true;
        }
        let path = path.unwrap_or_else(|| "/".to_owned());
        if svc.routes.iter().any(|r| r.path == path) {
            f.flag(d, format!("a second route for path {path:?} is not translated"));
            return;
        }
        svc.routes.push(Route { path, upstream, strip_prefix: strip, line: d.line() });
    }

    /// Service name and FQDN from the site addresses and `bind tailscale/NAME`.
    fn addresses(&self, site: &Site, svc: &mut Service, bind_name: Option<String>, f: &mut SiteFindings) {
        let mut ts_hosts: Vec<String> = Vec::new();
        let mut other_hosts: Vec<String> = Vec::new();
        for a in &site.addresses {
            let pseudo = Directive::bare(a.clone());
            let Some(addr) = Address::parse(&a.text) else {
                f.flag(&pseudo, "site address not understood");
                continue;
            };
            svc.addresses.push(a.text.clone());
            if addr.scheme.as_deref() == Some("http") {
                f.flag(&pseudo, "plain-HTTP site: snirouter serves HTTPS only (redirects: [listen] redirect_http)");
            }
            if addr.port.is_some_and(|p| p != 443) {
                f.flag(&pseudo, "site on a port other than 443: snirouter serves each name on the [listen] sockets");
            }
            if addr.path.is_some() {
                f.flag(&pseudo, "a path in the site address is not supported; use routes");
            }
            if addr.host.is_empty() || addr.host.contains('*') {
                f.flag(&pseudo, "catch-all and wildcard sites are not supported; every service has one name");
            } else if addr.is_tailnet() {
                ts_hosts.push(addr.host);
            } else {
                other_hosts.push(addr.host);
            }
        }
        let first_label = |h: &str| h.split('.').next().unwrap_or(h).to_owned();
        svc.name = bind_name
            .or_else(|| ts_hosts.first().map(|h| first_label(h)))
            .or_else(|| other_hosts.first().map(|h| first_label(h)))
            .unwrap_or_else(|| format!("site-line-{}", site.line()));
        for (i, h) in ts_hosts.iter().enumerate() {
            let pseudo = || Directive::bare(crate::lexer::Token::plain(h, site.line()));
            if first_label(h) != svc.name {
                if i == 0 && svc.fqdn.is_none() {
                    svc.fqdn = Some(h.clone());
                } else {
                    f.flag(&pseudo(), format!("a second tailnet name for service {:?} is not translated", svc.name));
                }
            }
        }
        if svc.tls_files.is_some() {
            svc.names.extend(other_hosts);
            return;
        }
        for h in other_hosts {
            f.notes.push(Finding {
                line: site.line(),
                directive: h.clone(),
                message: format!(
                    "not a tailnet name: service {:?} is served as {}.<tailnet>.ts.net (a Tailscale Service); a certificate for {h} cannot come from tailscaled — this mismatch was the original failure (docs/root-cause.md)",
                    svc.name,
                    svc.fqdn.as_deref().map_or(svc.name.as_str(), |f| f.split('.').next().unwrap_or(f))
                ),
            });
        }
    }

    /// `[defaults]`: one shared forward_auth (others bypass) and one shared error_pages.
    fn hoist_defaults(&mut self) {
        let mut auths: Vec<&Auth> = self.model.services.iter().filter_map(|s| s.forward_auth.as_ref()).collect();
        auths.sort();
        auths.dedup();
        if let [only] = auths.as_slice() {
            let shared = (*only).clone();
            for s in &mut self.model.services {
                if s.forward_auth.take().is_none() {
                    s.bypass_auth = true;
                }
            }
            self.model.defaults_auth = Some(shared);
        }
        let pages: Vec<Option<&String>> = self.model.services.iter().map(|s| s.error_pages.as_ref()).collect();
        if let Some(Some(first)) = pages.first()
            && pages.iter().all(|p| *p == Some(*first))
        {
            let shared = (*first).clone();
            for s in &mut self.model.services {
                s.error_pages = None;
            }
            self.model.defaults_error_pages = Some(shared);
        }
    }

    /// `{$ENV}` and `{placeholder}` texts were kept verbatim; every emitted one is reported.
    fn check_placeholders(&mut self) {
        let mut found = Vec::new();
        let mut check = |line: usize, what: &str, value: &str| {
            if value.contains('{') {
                found.push(Finding {
                    line,
                    directive: value.to_owned(),
                    message: format!(
                        "{what} contains a Caddy placeholder, kept verbatim; replace it with its value (environment placeholders {{$VAR}} are not expanded)"
                    ),
                });
            }
        };
        for s in &self.model.services {
            for r in &s.routes {
                check(r.line, "upstream", &r.upstream);
            }
            for (what, v) in [("upstream_host", &s.upstream_host), ("error_pages", &s.error_pages), ("fqdn", &s.fqdn)] {
                if let Some(v) = v {
                    check(s.line, what, v);
                }
            }
            if let Some(a) = &s.forward_auth {
                check(s.line, "forward_auth url", &a.url);
            }
        }
        if let Some(a) = &self.model.defaults_auth {
            check(0, "[defaults] forward_auth url", &a.url);
        }
        if let Some(p) = &self.model.defaults_error_pages {
            check(0, "[defaults] error_pages", p);
        }
        self.model.untranslated.extend(found);
    }
}

impl Service {
    fn addresses_summary(&self) -> String {
        self.addresses.join(", ")
    }
}

/// Whether `directives` (recursively) import snippet `name`.
fn imports(directives: &[Directive], name: &str) -> bool {
    directives.iter().any(|d| {
        (d.name.text == "import" && d.args.first().is_some_and(|a| a.text == name)) || imports(d.children(), name)
    })
}

/// What snirouter's forward auth sends anyway (`header_up` of these needs nothing).
const SENT_TO_AUTH: [&str; 8] = [
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-for",
    "x-original-url",
    "x-original-method",
    "x-real-ip",
];

/// `forward_auth UPSTREAM { uri /path?query; copy_headers A B … }`.
fn forward_auth(d: &Directive, f: &mut SiteFindings) -> Option<Auth> {
    let args = d.arg_texts();
    let upstream = match args.as_slice() {
        [u] => *u,
        [m, _, ..] if m.starts_with('/') || m.starts_with('@') || *m == "*" => {
            f.flag(d, "matchers on forward_auth are not supported; it applies to the whole service");
            return None;
        }
        _ => {
            f.flag(d, "forward_auth needs exactly one upstream");
            return None;
        }
    };
    let mut uri: Option<String> = None;
    let mut copy: Vec<String> = Vec::new();
    for c in d.children() {
        match c.name.text.as_str() {
            "uri" => match c.arg_texts().as_slice() {
                [u] if u.starts_with('/') => uri = Some((*u).to_owned()),
                _ => f.flag(c, "uri must be one path starting with /"),
            },
            "copy_headers" => {
                let names =
                    c.args.iter().map(|a| a.text.clone()).chain(c.children().iter().flat_map(|h| {
                        std::iter::once(h.name.text.clone()).chain(h.args.iter().map(|a| a.text.clone()))
                    }));
                for n in names {
                    if n.contains('>') {
                        f.flag(c, format!("header renaming {n:?} is not supported; copied headers keep their names"));
                    } else if !copy.iter().any(|h| h.eq_ignore_ascii_case(&n)) {
                        copy.push(n);
                    }
                }
            }
            "header_up" if c.args.first().is_some_and(|h| SENT_TO_AUTH.contains(&h.text.to_ascii_lowercase().as_str())) => f.note(
                c,
                "snirouter sends X-Forwarded-Method/-Proto/-Host/-Uri/-For and X-Original-URL/-Method to the auth server itself",
            ),
            "header_up" | "trusted_proxies" | "transport" => f.flag(
                c,
                "forward_auth option not supported (snirouter sends the original method, URI and X-Forwarded-* itself)",
            ),
            _ => f.flag(c, "forward_auth option not supported"),
        }
    }
    let base = upstream_url(upstream, false).or_else(|| {
        f.flag(d, format!("auth upstream {upstream:?} is not host:port, http:// or https://"));
        None
    })?;
    let url = format!("{base}{}", uri.unwrap_or_else(|| "/".to_owned()));
    Some(Auth { url, copy_headers: copy })
}

/// `handle_errors { rewrite * /{err.status_code}.html; file_server { root DIR } }` (or
/// `root * DIR` + `file_server`) → the error pages directory.
fn error_pages(d: &Directive, f: &mut SiteFindings) -> Option<String> {
    if !d.args.is_empty() {
        f.note(d, "snirouter uses NNN.html from error_pages for 404, 500, 502, 503 and 504 answers");
    }
    let mut root: Option<String> = None;
    let mut ok = true;
    for c in d.children() {
        match (c.name.text.as_str(), c.arg_texts().as_slice()) {
            ("root", ["*", dir] | [dir]) => root = Some((*dir).to_owned()),
            ("rewrite", ["*", target] | [target])
                if ["/{err.status_code}.html", "/{http.error.status_code}.html"].contains(target) => {}
            ("file_server", []) => {
                for s in c.children() {
                    match (s.name.text.as_str(), s.arg_texts().as_slice()) {
                        ("root", [dir]) => root = Some((*dir).to_owned()),
                        _ => {
                            f.flag(s, "file_server option not supported in handle_errors");
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                f.flag(c, "inside handle_errors only root, rewrite * /{err.status_code}.html and file_server are translated (to error_pages)");
                ok = false;
            }
        }
    }
    match root {
        Some(dir) if ok => Some(dir),
        Some(_) => None,
        None => {
            f.flag(d, "handle_errors without a root directory: no error_pages to translate");
            None
        }
    }
}

/// `/sonarr*`, `/sonarr/*` → `/sonarr`; `*` or `/*` → `/`. Exact-path and named matchers
/// are not prefixes and give `None`.
fn path_matcher(m: &str) -> Option<String> {
    if m == "*" || m == "/*" {
        return Some("/".to_owned());
    }
    let p = m.strip_suffix('*')?;
    let p = p.strip_suffix('/').unwrap_or(p);
    if !p.starts_with('/') || p.contains(['*', '?', '#', '{']) || p.contains("//") {
        return None;
    }
    Some(p.to_owned())
}

/// `127.0.0.1:3000`, `:3000`, `http://h:p`, `https://h` → `scheme://host:port`.
fn upstream_url(raw: &str, tls: bool) -> Option<String> {
    let (scheme, rest) = match raw.split_once("://") {
        Some(("http", r)) => (if tls { "https" } else { "http" }, r),
        Some(("https", r)) => ("https", r),
        Some(_) => return None,
        None => (if tls { "https" } else { "http" }, raw),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let hostport = if let Some(port) = rest.strip_prefix(':') { format!("localhost:{port}") } else { rest.to_owned() };
    Some(format!("{scheme}://{hostport}"))
}

/// Caddy's sizes (`5MB`, `10MiB`, `1048576`): decimal and binary units, as go-humanize
/// reads them. `None` when unreadable.
pub(crate) fn caddy_size(s: &str) -> Option<usize> {
    // Caddy's units (`5MB`, `10MiB`, bare bytes) are the ones snirouter's sizes take.
    snirouter_config::parse_size(s).ok()
}

/// What a `reverse_proxy` block says besides its matcher: upstreams (`args` and `to`),
/// `transport http { tls | tls_insecure_skip_verify }` and `header_up Host`.
struct ProxyBlock {
    to: Vec<String>,
    tls: bool,
    insecure: bool,
    upstream_host: Option<String>,
    /// Upstream statuses a `handle_response` turns into error pages.
    page_statuses: Vec<u16>,
}

fn proxy_block(d: &Directive, args: &[crate::lexer::Token], f: &mut SiteFindings) -> ProxyBlock {
    let mut out = ProxyBlock {
        to: args.iter().map(|a| a.text.clone()).collect(),
        tls: false,
        insecure: false,
        upstream_host: None,
        page_statuses: Vec::new(),
    };
    let mut matchers: Vec<(String, Vec<u16>)> = Vec::new();
    for c in d.children() {
        match c.name.text.as_str() {
            "to" => out.to.extend(c.args.iter().map(|a| a.text.clone())),
            "transport" if c.arg_texts() != ["http"] => f.flag(c, "only transport http is supported"),
            "transport" => {
                for t in c.children() {
                    match (t.name.text.as_str(), t.args.is_empty()) {
                        ("tls", true) => out.tls = true,
                        ("tls_insecure_skip_verify", true) => (out.tls, out.insecure) = (true, true),
                        _ => f.flag(t, "transport option not supported (snirouter: insecure_skip_verify and [timeouts] only)"),
                    }
                }
            }
            "header_up" => match c.arg_texts().as_slice() {
                [name, value] if name.eq_ignore_ascii_case("host") => out.upstream_host = Some((*value).to_owned()),
                [name, _] if ["x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
                    .contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    f.note(c, "snirouter always sets X-Forwarded-For, X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host from the real client")
                }
                _ => f.flag(c, "only header_up Host is supported (as upstream_host)"),
            },
            "flush_interval" => f.note(c, "snirouter streams bodies frame by frame; no buffering to configure"),
            name if name.starts_with('@') => match c.arg_texts().as_slice() {
                ["status", codes @ ..] if !codes.is_empty() => {
                    matchers.push((name.to_owned(), codes.iter().filter_map(|s| s.parse().ok()).collect()))
                }
                _ => f.flag(c, "only `@name status CODE…` matchers are translated here (for handle_response)"),
            },
            "handle_response" => out.page_statuses.extend(handle_response(c, &matchers, f)),
            _ => f.flag(c, "reverse_proxy option not supported"),
        }
    }
    out
}

/// `handle_response @m { error … | respond … | rewrite …; file_server }` for a status
/// matcher `@m`: those upstream statuses get the error page (`error_pages_upstream`).
fn handle_response(d: &Directive, matchers: &[(String, Vec<u16>)], f: &mut SiteFindings) -> Vec<u16> {
    let codes = match d.arg_texts().as_slice() {
        [m] => matchers.iter().find(|(n, _)| n == m).map(|(_, c)| c.clone()),
        _ => None,
    };
    let Some(codes) = codes else {
        f.flag(d, "handle_response is translated only with a `@name status CODE…` matcher of this reverse_proxy");
        return Vec::new();
    };
    let pages: Vec<u16> = codes.iter().copied().filter(|c| [404, 500, 502, 503, 504].contains(c)).collect();
    if pages.len() != codes.len() {
        f.flag(d, "error pages exist for 404, 500, 502, 503 and 504 only; other statuses pass through");
    }
    for c in d.children() {
        if !matches!(c.name.text.as_str(), "error" | "respond" | "rewrite" | "file_server" | "root") {
            f.flag(c, "inside handle_response only the error page is translated (error_pages_upstream)");
        }
    }
    pages
}

/// `header` / `request_header`: `NAME VALUE` sets, `-NAME` removes, on one line or one
/// per line of a block. Matchers, `+` (add), `>`/`?` (defer, default) and replacements
/// have no equivalent.
fn header_rules(d: &Directive, rules: &mut Headers, f: &mut SiteFindings) {
    let mut one = |args: &[&str], at: &Directive| match args {
        [name] if name.starts_with('-') && name.len() > 1 && !name.contains('*') => {
            rules.remove.push(name[1..].to_owned());
        }
        [name, value] if plain_header(name) => rules.set.push(((*name).to_owned(), (*value).to_owned())),
        [] => {}
        _ => f.flag(at, "only `NAME VALUE` (set) and `-NAME` (remove) header rules are translated"),
    };
    let args = d.arg_texts();
    if args.first().is_some_and(|a| a.starts_with('@') || a.starts_with('/') || *a == "*") {
        f.flag(d, "header rules with a matcher are not translated; snirouter's apply to the whole service");
        return;
    }
    one(&args, d);
    for c in d.children() {
        let mut line = vec![c.name.text.as_str()];
        line.extend(c.arg_texts());
        one(&line, c);
    }
}

/// A header name to set as it is (no `+`, `>`, `?` operator prefix).
fn plain_header(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_matchers() {
        assert_eq!(path_matcher("/sonarr*").as_deref(), Some("/sonarr"));
        assert_eq!(path_matcher("/sonarr/*").as_deref(), Some("/sonarr"));
        assert_eq!(path_matcher("*").as_deref(), Some("/"));
        assert_eq!(path_matcher("/exact"), None);
        assert_eq!(path_matcher("@api"), None);
        assert_eq!(path_matcher("/a*/b*"), None);
    }

    #[test]
    fn upstreams() {
        assert_eq!(upstream_url("127.0.0.1:3000", false).as_deref(), Some("http://127.0.0.1:3000"));
        assert_eq!(upstream_url(":3000", false).as_deref(), Some("http://localhost:3000"));
        assert_eq!(upstream_url("https://10.0.0.2:8443", false).as_deref(), Some("https://10.0.0.2:8443"));
        assert_eq!(upstream_url("127.0.0.1:5001", true).as_deref(), Some("https://127.0.0.1:5001"));
        assert_eq!(upstream_url("h2c://x:1", false), None);
        assert_eq!(upstream_url("unix//run/x.sock", false), None);
        assert_eq!(upstream_url("http://x:1/path", false), None);
    }

    #[test]
    fn addresses() {
        let a = Address::parse("https://Grafana.tail-1234.ts.net").expect("address");
        assert_eq!((a.scheme.as_deref(), a.host.as_str(), a.port), (Some("https"), "grafana.tail-1234.ts.net", None));
        let a = Address::parse("grafana.example.com:8443/x").expect("address");
        assert_eq!((a.port, a.path.as_deref()), (Some(8443), Some("/x")));
        assert!(Address::parse("ftp://x").is_none());
        assert!(Address::parse("x:notaport").is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(caddy_size("5MB"), Some(5_000_000));
        assert_eq!(caddy_size("10MiB"), Some(10 << 20));
        assert_eq!(caddy_size("4096"), Some(4096));
        assert_eq!(caddy_size("5XB"), None);
    }
}
