//! `[services.NAME]` tables and their routes.

use std::path::PathBuf;

use toml_edit::{Item, TableLike, Value};

use crate::checks;
use crate::schema::{Cors, Defaults, Domain, ForwardAuth, HostPort, Route, Scheme, Service, Upstream};
use crate::validate::{Entry, Span, Validator, describe, describe_value, entries, find};

const SERVICE_KEYS: &[&str] = &[
    "upstream",
    "routes",
    "fqdn",
    "upstream_host",
    "access_log",
    "insecure_skip_verify",
    "forward_auth",
    "bypass_auth",
    "cors",
    "cors_origins",
    "error_pages",
    "max_body_bytes",
    "tailscale_identity",
    "allow",
    "deny",
    "accept_app_caps",
    "passthrough",
    "names",
    "request_headers",
    "response_headers",
    "error_pages_upstream",
    "tcp",
];
const ROUTE_KEYS: &[&str] = &["path", "upstream", "strip_prefix"];
const DEFAULTS_KEYS: &[&str] =
    &["forward_auth", "error_pages", "error_pages_upstream", "request_headers", "response_headers"];
const FORWARD_AUTH_KEYS: &[&str] = &["url", "copy_headers"];

/// Keys that only make sense when the router terminates TLS and sees HTTP; a
/// `passthrough` service rejects them.
const HTTP_ONLY_KEYS: &[&str] = &[
    "upstream_host",
    "insecure_skip_verify",
    "forward_auth",
    "cors",
    "cors_origins",
    "error_pages",
    "max_body_bytes",
    "tailscale_identity",
    "allow",
    "deny",
    "accept_app_caps",
    "names",
    "request_headers",
    "response_headers",
    "error_pages_upstream",
];

/// Keys of the old Caddy/NixOS gateway that snirouter does not implement, with what to
/// do instead; they get a clearer help than a bare "unknown key".
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "funnel",
        "Tailscale Services cannot be exposed through Funnel (`tailscale funnel` has no --service); serve the public half of the service under your own domain, through a tunnel or the LAN, and drop the key",
    ),
    ("headers", "write request_headers = { remove = [...], set = { ... } } and response_headers = { ... } instead"),
    (
        "insecure_tls",
        "it is called insecure_skip_verify here: write insecure_skip_verify = true with an https:// upstream",
    ),
    (
        "insecureTls",
        "it is called insecure_skip_verify here: write insecure_skip_verify = true with an https:// upstream",
    ),
    ("bypassAuth", "it is called bypass_auth here: write bypass_auth = true"),
];

/// The statuses `error_pages` has pages for (`404.html`, …).
const PAGE_STATUSES: [u16; 5] = [404, 500, 502, 503, 504];

/// Header names that must never be copied from an auth answer.
const FORBIDDEN_COPY: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive"];

const BOTH_FORMS: &str = "use upstream = \"http://127.0.0.1:3000\" for a single backend, or routes = [{ path = \"/\", upstream = \"http://127.0.0.1:8080\" }] to route by path";

/// One route table (inline or `[[…routes]]`) with where it is written.
struct RouteItem<'a> {
    table: Option<&'a dyn TableLike>,
    span: Span,
    found: String,
}

impl Validator<'_> {
    /// `[services]`: at least one service, valid names, unique explicit FQDNs.
    pub(crate) fn services(
        &mut self,
        entry: Option<&Entry<'_>>,
        defaults: &Defaults,
        domains: &[Domain],
    ) -> Vec<Service> {
        let example = "add a section such as\n        [services.grafana]\n        upstream = \"http://127.0.0.1:3000\"";
        let Some(entry) = entry else {
            self.error(None, "services", "no services configured", Some(example.to_owned()));
            return Vec::new();
        };
        let Some(table) = entry.item.as_table_like() else {
            self.error(
                entry.value_span(),
                &entry.path,
                format!("expected a table of services, found {}", describe(entry.item)),
                Some(example.to_owned()),
            );
            return Vec::new();
        };
        let fields = entries(table, &entry.path);
        if fields.is_empty() {
            self.error(
                entry.key_span(),
                &entry.path,
                "no services configured: [services] is empty",
                Some(example.to_owned()),
            );
        }
        let mut services = Vec::new();
        // (fqdn, service name, line) of explicit FQDNs seen so far.
        let mut fqdns: Vec<(String, String, usize)> = Vec::new();
        for e in &fields {
            let Some((service, fqdn_span)) = self.service(e, defaults, domains) else { continue };
            if let Some(fqdn) = &service.fqdn {
                if let Some((_, other, line)) = fqdns.iter().find(|(f, _, _)| f == fqdn) {
                    self.error(
                        fqdn_span,
                        &join_key(&e.path, "fqdn"),
                        format!("fqdn {fqdn:?} is already used by service {other:?} (line {line})"),
                        Some(
                            "a name can be routed to only one service; change or remove one of the fqdn overrides"
                                .to_owned(),
                        ),
                    );
                } else {
                    fqdns.push((fqdn.clone(), service.name.clone(), service.line));
                }
            }
            services.push(service);
        }
        services
    }

    /// `[defaults]`: `forward_auth` and `error_pages` inherited by every service.
    pub(crate) fn defaults(&mut self, entry: Option<&Entry<'_>>) -> Defaults {
        let fields = self.section(entry, DEFAULTS_KEYS);
        Defaults {
            forward_auth: find(&fields, "forward_auth").and_then(|e| self.forward_auth(e)),
            error_pages: find(&fields, "error_pages").and_then(|e| self.error_pages(e)),
            error_pages_upstream: find(&fields, "error_pages_upstream").map(|e| self.page_statuses(e)),
            request_headers: find(&fields, "request_headers").map(|e| self.header_rules(e)).unwrap_or_default(),
            response_headers: find(&fields, "response_headers").map(|e| self.header_rules(e)).unwrap_or_default(),
        }
    }

    /// One service; also returns the span of its `fqdn` value for duplicate reports.
    fn service(&mut self, e: &Entry<'_>, defaults: &Defaults, domains: &[Domain]) -> Option<(Service, Span)> {
        let line = self.line(&e.key_span());
        if let Err(p) = checks::check_service_name(e.name) {
            self.report(e.key_span(), &e.path, p);
        }
        let known = self.service_fields(e)?;
        let routes = self.service_routes(e, &known);
        let mut service = Service::new(e.name, routes);
        service.line = line;
        let fqdn_span = self.service_names(e, &known, &mut service);
        service.access_log = find(&known, "access_log").and_then(|a| self.boolean(a));
        self.passthrough_option(e, &known, defaults.forward_auth.is_some(), &mut service);
        self.auth_options(e, &known, defaults, &mut service);
        self.http_options(e, &known, defaults, &mut service);
        self.access_options(&known, &mut service);
        if let Some(n) = find(&known, "names") {
            service.names = self.service_extra_names(n, domains);
        }
        self.header_options(&known, defaults, domains, &mut service);
        if let Some(t) = find(&known, "tcp") {
            service.tcp = self.tcp_ports(t);
        }
        Some((service, fqdn_span))
    }

    /// The service's keys, with unknown and not-implemented ones reported.
    fn service_fields<'a>(&mut self, e: &Entry<'a>) -> Option<Vec<Entry<'a>>> {
        let Some(table) = e.item.as_table_like() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a service table, found {}", describe(e.item)),
                Some(format!(
                    "write it as a section:\n        [{}]\n        upstream = \"http://127.0.0.1:3000\"",
                    e.path
                )),
            );
            return None;
        };
        let fields = entries(table, &e.path);
        let label = format!("in [{}]", e.path);
        for f in &fields {
            if let Some((_, instead)) = NOT_IMPLEMENTED.iter().find(|(k, _)| *k == f.name) {
                self.error(
                    f.key_span(),
                    &f.path,
                    format!("unknown key {:?} {label}: snirouter does not implement {}", f.name, f.name),
                    Some((*instead).to_owned()),
                );
            }
        }
        let known: Vec<Entry<'_>> =
            fields.into_iter().filter(|f| !NOT_IMPLEMENTED.iter().any(|(k, _)| *k == f.name)).collect();
        self.check_keys(&known, SERVICE_KEYS, &label);
        Some(known)
    }

    /// `upstream` or `routes` (exactly one, unless `passthrough`), longest path first.
    fn service_routes(&mut self, e: &Entry<'_>, known: &[Entry<'_>]) -> Vec<Route> {
        let upstream = find(known, "upstream");
        let routes_entry = find(known, "routes");
        match (upstream, routes_entry, find(known, "passthrough")) {
            (_, _, Some(p)) if upstream.is_some() || routes_entry.is_some() => self.error(
                p.key_span(),
                &p.path,
                format!(
                    "service {:?} has passthrough and {}; a passthrough service forwards TLS untouched and cannot also route HTTP",
                    e.name,
                    if upstream.is_some() { "upstream" } else { "routes" }
                ),
                Some("remove passthrough to terminate TLS here, or remove upstream/routes to pass TLS through".to_owned()),
            ),
            (Some(_), Some(r), None) => self.error(
                r.key_span(),
                &e.path,
                format!("service {:?} has both upstream and routes; it needs exactly one of them", e.name),
                Some(format!("move the upstream into routes as {{ path = \"/\", upstream = ... }}, or {BOTH_FORMS}")),
            ),
            (None, None, None) => self.error(
                e.key_span(),
                &e.path,
                format!("service {:?} has neither upstream nor routes", e.name),
                Some(format!("{BOTH_FORMS}; or passthrough = \"127.0.0.1:8920\" to forward TLS untouched")),
            ),
            _ => {}
        }
        let mut routes = Vec::new();
        if let Some(u) = upstream
            && let Some(up) = self.upstream(u)
        {
            routes.push(Route { path: "/".to_owned(), upstream: up, strip_prefix: false });
        }
        if let Some(r) = routes_entry {
            self.routes(r, &mut routes);
        }
        // Longest path first; the sort is stable, so equal lengths keep file order.
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        routes
    }

    /// `fqdn` and `upstream_host`; returns the span of the `fqdn` value.
    fn service_names(&mut self, e: &Entry<'_>, known: &[Entry<'_>], service: &mut Service) -> Span {
        let mut fqdn_span = None;
        if let Some(f) = find(known, "fqdn")
            && let Some(s) = self.string(f, &format!("\"{}.example.ts.net\"", checks::suggest_label(e.name)))
        {
            fqdn_span = f.value_span();
            match checks::normalize_dns_name(s, 2, "fqdn") {
                Ok(name) => service.fqdn = Some(name),
                Err(p) => self.report(f.value_span(), &f.path, p),
            }
        }
        if let Some(h) = find(known, "upstream_host")
            && let Some(s) = self.string(h, "\"grafana.internal\"")
        {
            match check_upstream_host(s) {
                Ok(()) => service.upstream_host = Some(s.to_owned()),
                Err(p) => self.report(h.value_span(), &h.path, p),
            }
        }
        fqdn_span
    }

    /// `passthrough`: the target, the HTTP-only keys it makes meaningless, and the
    /// `[defaults]` forward_auth it cannot honour (unless `bypass_auth`).
    fn passthrough_option(&mut self, e: &Entry<'_>, known: &[Entry<'_>], default_auth: bool, service: &mut Service) {
        let Some(p) = find(known, "passthrough") else { return };
        if let Some(raw) = self.string(p, "\"127.0.0.1:8920\"") {
            match parse_host_port(raw, "passthrough", "127.0.0.1:8920") {
                Ok(target) => service.passthrough = Some(target),
                Err(problem) => self.report(p.value_span(), &p.path, problem),
            }
            for f in known.iter().filter(|f| HTTP_ONLY_KEYS.contains(&f.name)) {
                self.error(
                    f.key_span(),
                    &f.path,
                    format!(
                        "{} has no effect on passthrough service {:?}: the router never decrypts its traffic",
                        f.name, e.name
                    ),
                    Some(format!("remove {} (the backend at {raw} handles TLS and HTTP itself)", f.name)),
                );
            }
        }
        let bypass = find(known, "bypass_auth").and_then(|b| b.item.as_bool()).unwrap_or(false);
        if default_auth && !bypass {
            self.error(
                p.key_span(),
                &p.path,
                format!(
                    "passthrough service {:?} cannot be protected by [defaults] forward_auth: its requests are encrypted end to end",
                    e.name
                ),
                Some("add bypass_auth = true to this service to acknowledge that its backend authenticates users itself".to_owned()),
            );
        }
    }

    /// `bypass_auth`, `forward_auth` (own or from `[defaults]`) and `insecure_skip_verify`.
    fn auth_options(&mut self, e: &Entry<'_>, known: &[Entry<'_>], defaults: &Defaults, service: &mut Service) {
        if let Some(b) = find(known, "bypass_auth") {
            service.bypass_auth = self.boolean(b).unwrap_or(false);
            if service.bypass_auth && find(known, "forward_auth").is_some() {
                self.error(
                    b.key_span(),
                    &b.path,
                    format!("service {:?} sets both forward_auth and bypass_auth = true", e.name),
                    Some("remove one: bypass_auth only switches off the [defaults] forward_auth".to_owned()),
                );
            }
        }
        if let Some(i) = find(known, "insecure_skip_verify") {
            service.insecure_skip_verify = self.boolean(i).unwrap_or(false);
            if service.insecure_skip_verify
                && service.passthrough.is_none()
                && !service.routes.is_empty()
                && !service.routes.iter().any(|r| r.upstream.scheme == Scheme::Https)
            {
                self.error(
                    i.key_span(),
                    &i.path,
                    format!("insecure_skip_verify applies to https:// upstreams, and service {:?} has none", e.name),
                    Some("remove it, or point the upstream at the backend's TLS port with https://".to_owned()),
                );
            }
        }
        let own_auth = find(known, "forward_auth").and_then(|f| self.forward_auth(f));
        if service.passthrough.is_none() {
            service.forward_auth = match own_auth {
                Some(a) => Some(a),
                None if service.bypass_auth => None,
                None => defaults.forward_auth.clone(),
            };
        }
    }

    /// The HTTP options: CORS, error pages, body limit, identity headers (none of them
    /// applies to a passthrough service).
    fn http_options(&mut self, e: &Entry<'_>, known: &[Entry<'_>], defaults: &Defaults, service: &mut Service) {
        let cors_on = find(known, "cors").and_then(|c| self.boolean(c)).unwrap_or(false);
        let mut origins = Vec::new();
        if let Some(o) = find(known, "cors_origins") {
            origins = self.cors_origins(o);
            if !cors_on {
                self.error(
                    o.key_span(),
                    &o.path,
                    format!("cors_origins is set but CORS is off for service {:?}", e.name),
                    Some("add cors = true, or remove cors_origins".to_owned()),
                );
            }
        }
        if cors_on && service.passthrough.is_none() {
            service.cors = Some(Cors { origins });
        }
        let own_pages = find(known, "error_pages").and_then(|p| self.error_pages(p));
        let own_statuses = find(known, "error_pages_upstream").map(|p| self.page_statuses(p));
        if service.passthrough.is_none() {
            service.error_pages = own_pages.or_else(|| defaults.error_pages.clone());
            service.error_pages_upstream = own_statuses.or_else(|| defaults.error_pages_upstream.clone());
        }
        if let Some(m) = find(known, "max_body_bytes") {
            service.max_body_bytes = self.body_limit(m);
        }
        if let Some(t) = find(known, "tailscale_identity") {
            service.tailscale_identity = self.boolean(t).unwrap_or(false) && service.passthrough.is_none();
        }
    }

    /// `request_headers` and `response_headers` over `[defaults]`' (not for passthrough).
    fn header_options(&mut self, known: &[Entry<'_>], defaults: &Defaults, domains: &[Domain], service: &mut Service) {
        if service.passthrough.is_some() {
            return;
        }
        let own = |v: &mut Self, key: &str| find(known, key).map(|e| v.header_rules(e)).unwrap_or_default();
        let request = own(self, "request_headers");
        service.request_headers = crate::headers::merged(&defaults.request_headers, request);
        let response = own(self, "response_headers");
        service.response_headers = crate::headers::merged(&defaults.response_headers, response);
        if let Some(e) = find(known, "request_headers") {
            self.check_request_rules(e, service, domains);
        }
    }

    /// `forward_auth = { url = "...", copy_headers = [...] }` (inline or a sub-table).
    pub(crate) fn forward_auth(&mut self, e: &Entry<'_>) -> Option<ForwardAuth> {
        let example = "forward_auth = { url = \"http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/\", copy_headers = [\"Remote-User\", \"Remote-Groups\", \"Remote-Name\", \"Remote-Email\"] }";
        let Some(table) = e.item.as_table_like() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a table with url and copy_headers, found {}", describe(e.item)),
                Some(format!("write {example}")),
            );
            return None;
        };
        let fields = entries(table, &e.path);
        self.check_keys(&fields, FORWARD_AUTH_KEYS, &format!("in {}", e.path));
        let url =
            match find(&fields, "url") {
                None => {
                    self.error(e.value_span(), &e.path, "forward_auth has no url", Some(format!("write {example}")));
                    None
                }
                Some(u) => self
                    .string(u, "\"http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/\"")
                    .and_then(|raw| match parse_auth_url(raw) {
                        Ok(uri) => Some(uri),
                        Err(p) => {
                            self.report(u.value_span(), &u.path, p);
                            None
                        }
                    }),
            };
        let mut copy_headers: Vec<String> = Vec::new();
        let mut ok = true;
        if let Some(c) = find(&fields, "copy_headers") {
            let Some(array) = c.item.as_array() else {
                self.error(
                    c.value_span(),
                    &c.path,
                    format!("expected an array of header names, found {}", describe(c.item)),
                    Some("write copy_headers = [\"Remote-User\", \"Remote-Groups\"]".to_owned()),
                );
                return None;
            };
            for (i, value) in array.iter().enumerate() {
                let path = format!("{}[{i}]", c.path);
                let span = value.span().or_else(|| c.value_span());
                let Some(name) = value.as_str() else {
                    self.error(
                        span,
                        &path,
                        format!("expected a header name string, found {}", describe_value(value)),
                        Some("write header names as strings, e.g. \"Remote-User\"".to_owned()),
                    );
                    ok = false;
                    continue;
                };
                match check_copy_header(name, &copy_headers) {
                    Ok(()) => copy_headers.push(name.to_owned()),
                    Err(p) => {
                        self.report(span, &path, p);
                        ok = false;
                    }
                }
            }
        }
        let url = url?;
        ok.then_some(ForwardAuth { url, copy_headers })
    }

    /// `error_pages = "/dir"`: an absolute path to an existing directory.
    /// `error_pages_upstream = [500, 503]`: statuses that can have a page.
    fn page_statuses(&mut self, e: &Entry<'_>) -> Vec<u16> {
        let Some(array) = e.item.as_array() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected an array of statuses, found {}", describe(e.item)),
                Some("write error_pages_upstream = [500, 503]".to_owned()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            match v.as_integer().and_then(|n| u16::try_from(n).ok()).filter(|n| PAGE_STATUSES.contains(n)) {
                Some(n) => out.push(n),
                None => self.error(
                    v.span().or_else(|| e.value_span()),
                    &format!("{}[{i}]", e.path),
                    format!("{} is not a status with an error page", describe_value(v)),
                    Some(format!("use some of {PAGE_STATUSES:?}")),
                ),
            }
        }
        out
    }

    fn error_pages(&mut self, e: &Entry<'_>) -> Option<PathBuf> {
        let raw = self.string(e, "\"/etc/snirouter/errors\"")?;
        let help = "error_pages is a directory holding 404.html, 500.html, 502.html, 503.html and/or 504.html (missing files fall back to the built-in text)";
        let path = PathBuf::from(raw);
        if raw.trim().is_empty() || path.is_relative() {
            self.error(
                e.value_span(),
                &e.path,
                format!("error_pages {raw:?} must be an absolute path"),
                Some(format!("{help}; write e.g. error_pages = \"/etc/snirouter/errors\"")),
            );
            return None;
        }
        // Whether it exists is a question for the host it runs on (`check` and `doctor`
        // look), not for parsing: the same file is checked at a NixOS build elsewhere.
        Some(path)
    }

    /// `cors_origins = ["https://app.example.com"]`.
    fn cors_origins(&mut self, e: &Entry<'_>) -> Vec<String> {
        let help = "write cors_origins = [\"https://app.example.com\"] (scheme://host[:port], no path)";
        let Some(array) = e.item.as_array() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected an array of origins, found {}", describe(e.item)),
                Some(help.to_owned()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let path = format!("{}[{i}]", e.path);
            let span = value.span().or_else(|| e.value_span());
            match value.as_str().map(normalize_origin) {
                Some(Ok(o)) => out.push(o),
                Some(Err(p)) => self.report(span, &path, p),
                None => self.error(
                    span,
                    &path,
                    format!("expected an origin string, found {}", describe_value(value)),
                    Some(help.to_owned()),
                ),
            }
        }
        out
    }

    /// `max_body_bytes`: a byte count or size string, at least 1.
    fn body_limit(&mut self, e: &Entry<'_>) -> Option<u64> {
        let (bytes, _) = self.size(
            e,
            "write a byte count or a size, e.g. max_body_bytes = 1048576, \"10MB\" or \"1GiB\"",
            "\"10MB\"",
        )?;
        match bytes {
            Some(n) if n >= 1 => Some(n),
            _ => {
                self.error(
                    e.value_span(),
                    &e.path,
                    "max_body_bytes must be at least 1 byte",
                    Some("remove the key for no limit, or write e.g. max_body_bytes = \"10MB\"".to_owned()),
                );
                None
            }
        }
    }

    /// An upstream URL value.
    fn upstream(&mut self, e: &Entry<'_>) -> Option<Upstream> {
        let s = self.string(e, "\"http://127.0.0.1:3000\"")?;
        match checks::parse_upstream(s) {
            Ok(u) => Some(u),
            Err(p) => {
                self.report(e.value_span(), &e.path, p);
                None
            }
        }
    }

    /// `routes = [...]` or `[[services.NAME.routes]]`; appends valid routes.
    fn routes(&mut self, r: &Entry<'_>, out: &mut Vec<Route>) {
        let items: Vec<RouteItem<'_>> = match r.item {
            Item::Value(Value::Array(array)) => array
                .iter()
                .map(|v| RouteItem {
                    table: v.as_inline_table().map(|t| t as &dyn TableLike),
                    span: v.span(),
                    found: describe_value(v),
                })
                .collect(),
            Item::ArrayOfTables(aot) => aot
                .iter()
                .map(|t| RouteItem {
                    table: Some(t as &dyn TableLike),
                    span: t.span().or_else(|| t.iter().find_map(|(k, _)| t.key(k).and_then(|k| k.span()))),
                    found: "a table".to_owned(),
                })
                .collect(),
            other => {
                self.error(
                    r.value_span(),
                    &r.path,
                    format!("expected an array of routes, found {}", describe(other)),
                    Some("write routes = [{ path = \"/\", upstream = \"http://127.0.0.1:8080\" }]".to_owned()),
                );
                return;
            }
        };
        if items.is_empty() {
            self.error(
                r.value_span(),
                &r.path,
                "routes is empty; the service would answer every request with 404",
                Some(
                    "add at least one route, e.g. routes = [{ path = \"/\", upstream = \"http://127.0.0.1:8080\" }]"
                        .to_owned(),
                ),
            );
            return;
        }
        // (normalized path, route index, line) of the routes seen so far.
        let mut seen: Vec<(String, usize, usize)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(route) = self.route(r, i, item, &mut seen) {
                out.push(route);
            }
        }
    }

    /// Route `i` of `routes`; `None` when it is unusable (every problem reported).
    fn route(
        &mut self,
        r: &Entry<'_>,
        i: usize,
        item: &RouteItem<'_>,
        seen: &mut Vec<(String, usize, usize)>,
    ) -> Option<Route> {
        let path = format!("{}[{i}]", r.path);
        let span = item.span.clone().or_else(|| r.value_span());
        let Some(table) = item.table else {
            self.error(
                span,
                &path,
                format!("expected a route table, found {}", item.found),
                Some("write each route as { path = \"/app\", upstream = \"http://127.0.0.1:8080\" }".to_owned()),
            );
            return None;
        };
        let fields = entries(table, &path);
        self.check_keys(&fields, ROUTE_KEYS, &format!("in {path}"));
        let route_path = match find(&fields, "path") {
            None => {
                self.error(
                    span.clone(),
                    &path,
                    "route has no path",
                    Some("add path = \"/\" (matches everything) or e.g. path = \"/sonarr\"".to_owned()),
                );
                None
            }
            Some(p) => self.route_path(p, seen, i),
        };
        let upstream = match find(&fields, "upstream") {
            None => {
                let help = Some("add upstream = \"http://127.0.0.1:8080\"".to_owned());
                self.error(span, &path, "route has no upstream", help);
                None
            }
            Some(u) => self.upstream(u),
        };
        let strip_prefix = find(&fields, "strip_prefix").and_then(|s| self.boolean(s)).unwrap_or(false);
        Some(Route { path: route_path?, upstream: upstream?, strip_prefix })
    }

    /// A route's `path`: normalized, and not a duplicate of an earlier route.
    fn route_path(&mut self, p: &Entry<'_>, seen: &mut Vec<(String, usize, usize)>, index: usize) -> Option<String> {
        let raw = self.string(p, "\"/app\"")?;
        let normalized = match checks::normalize_route_path(raw) {
            Ok(n) => n,
            Err(problem) => {
                self.report(p.value_span(), &p.path, problem);
                return None;
            }
        };
        let line = self.line(&p.value_span());
        if let Some((_, first, first_line)) = seen.iter().find(|(n, _, _)| *n == normalized) {
            self.error(
                p.value_span(),
                &p.path,
                format!(
                    "route can never match: path {raw:?} is the same as routes[{first}] (line {first_line}); routes match by longest prefix on '/' boundaries, so only an identical path (ignoring a trailing '/') hides a route"
                ),
                Some("remove one of the two routes or give this one a different path".to_owned()),
            );
            return None;
        }
        seen.push((normalized.clone(), index, line));
        Some(normalized)
    }
}

/// `parent.key` for a bare key.
fn join_key(parent: &str, key: &str) -> String {
    format!("{parent}.{key}")
}

/// `upstream_host`: a `host[:port]` authority without user info.
fn check_upstream_host(raw: &str) -> Result<(), checks::Problem> {
    let help = Some("write a host name, optionally with a port, e.g. upstream_host = \"grafana.internal\"".to_owned());
    if raw.trim().is_empty() {
        return Err(checks::Problem::new("upstream_host is empty", help));
    }
    if raw.contains(['@', '/', '?', '#']) || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(checks::Problem::new(
            format!(
                "upstream_host {raw:?} is not a host name: it must not contain a scheme, path, user info or spaces"
            ),
            help,
        ));
    }
    match raw.parse::<http::uri::Authority>() {
        Ok(a) if !a.host().is_empty() && a.port().is_none_or(|_| a.port_u16().is_some()) => Ok(()),
        _ => Err(checks::Problem::new(format!("upstream_host {raw:?} is not a valid host[:port]"), help)),
    }
}

/// `host:port` with an explicit port, for the key `key` (`passthrough`, `tcp.22`);
/// `example` is a valid value for the help.
pub(crate) fn parse_host_port(raw: &str, key: &str, example: &str) -> Result<HostPort, checks::Problem> {
    let help = Some(format!("write the backend's address as host:port, e.g. {key} = \"{example}\""));
    let text = raw.trim();
    if text.contains("://") {
        return Err(checks::Problem::new(
            format!("{key} {raw:?} must be host:port without a scheme (the bytes are forwarded as they are)"),
            Some(format!("write {key} = {:?}", text.split_once("://").map_or(text, |(_, r)| r).trim_end_matches('/'))),
        ));
    }
    let not_host_port = || checks::Problem::new(format!("{key} {raw:?} is not host:port"), help.clone());
    if text.contains(['@', '/', '?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(not_host_port());
    }
    let Ok(authority) = text.parse::<http::uri::Authority>() else {
        return Err(not_host_port());
    };
    let Some(port) = authority.port_u16().filter(|p| *p != 0) else {
        return Err(checks::Problem::new(format!("{key} {raw:?} needs a port (1-65535)"), help));
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host.is_empty() {
        return Err(checks::Problem::new(format!("{key} {raw:?} has no host"), help));
    }
    Ok(HostPort { host, port })
}

/// A forward-auth URL: `http://` or `https://`, a host, any path and query, no user info
/// or fragment.
fn parse_auth_url(raw: &str) -> Result<http::Uri, checks::Problem> {
    let help = Some(
        "write the auth server's verify URL, e.g. url = \"http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/\""
            .to_owned(),
    );
    let text = raw.trim();
    if text.contains('#') {
        return Err(checks::Problem::new(format!("forward_auth url {raw:?} has a fragment ('#')"), help));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|e| checks::Problem::new(format!("forward_auth url {raw:?} is not a valid URL: {e}"), help.clone()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(checks::Problem::new(
                format!("forward_auth url {raw:?} has unsupported scheme {other:?}; use http:// or https://"),
                help,
            ));
        }
        None => return Err(checks::Problem::new(format!("forward_auth url {raw:?} has no scheme"), help)),
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => Err(checks::Problem::new(
            format!("forward_auth url {raw:?} contains user info ('user@'), which is not supported"),
            help,
        )),
        Some(a) if !a.host().is_empty() && a.port().is_none_or(|_| a.port_u16().is_some_and(|p| p != 0)) => Ok(uri),
        _ => Err(checks::Problem::new(format!("forward_auth url {raw:?} has no valid host[:port]"), help)),
    }
}

/// A `copy_headers` entry: a valid, non-hop-by-hop header name not listed before.
fn check_copy_header(name: &str, earlier: &[String]) -> Result<(), checks::Problem> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(checks::Problem::new(
            format!("copy_headers entry {name:?} is not a valid header name"),
            Some("header names are letters, digits and '-', e.g. \"Remote-User\"".to_owned()),
        ));
    }
    if FORBIDDEN_COPY.iter().any(|f| f.eq_ignore_ascii_case(name)) {
        return Err(checks::Problem::new(
            format!("copy_headers entry {name:?} describes the connection, not the user, and cannot be copied"),
            Some("copy identity headers such as Remote-User, Remote-Groups, Remote-Name, Remote-Email".to_owned()),
        ));
    }
    if earlier.iter().any(|e| e.eq_ignore_ascii_case(name)) {
        return Err(checks::Problem::new(
            format!("copy_headers lists {name:?} twice (header names are case-insensitive)"),
            Some("remove the duplicate".to_owned()),
        ));
    }
    Ok(())
}

/// A CORS origin: `scheme://host[:port]`, lowercased, without trailing `/`.
fn normalize_origin(raw: &str) -> Result<String, checks::Problem> {
    let help = Some("write an origin as the browser sends it, e.g. \"https://app.example.com\" (no path)".to_owned());
    let text = raw.trim().trim_end_matches('/');
    let uri: http::Uri = text
        .parse()
        .map_err(|_| checks::Problem::new(format!("CORS origin {raw:?} is not a valid origin"), help.clone()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a))
            if !a.as_str().contains('@') && matches!(uri.path(), "" | "/") && uri.query().is_none() =>
        {
            Ok(text.to_ascii_lowercase())
        }
        _ => Err(checks::Problem::new(
            format!("CORS origin {raw:?} must be scheme://host[:port] with http or https and no path"),
            help,
        )),
    }
}
