//! `[services.NAME]` tables and their routes.

use toml_edit::{Item, TableLike, Value};

use crate::checks;
use crate::schema::{Route, Service, Upstream};
use crate::validate::{Entry, Span, Validator, describe, describe_value, entries, find};

const SERVICE_KEYS: &[&str] = &["upstream", "routes", "fqdn", "upstream_host", "access_log"];
const ROUTE_KEYS: &[&str] = &["path", "upstream", "strip_prefix"];

/// Keys of the old Caddy gateway that snirouter does not implement (yet); they get a
/// clearer help than a bare "unknown key".
const NOT_IMPLEMENTED: &[&str] =
    &["forward_auth", "bypass_auth", "cors", "funnel", "insecure_tls", "error_pages", "headers"];

const BOTH_FORMS: &str = "use upstream = \"http://127.0.0.1:3000\" for a single backend, or routes = [{ path = \"/\", upstream = \"http://127.0.0.1:8080\" }] to route by path";

/// One route table (inline or `[[…routes]]`) with where it is written.
struct RouteItem<'a> {
    table: Option<&'a dyn TableLike>,
    span: Span,
    found: String,
}

impl Validator<'_> {
    /// `[services]`: at least one service, valid names, unique explicit FQDNs.
    pub(crate) fn services(&mut self, entry: Option<&Entry<'_>>) -> Vec<Service> {
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
            let Some((service, fqdn_span)) = self.service(e) else { continue };
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

    /// One service; also returns the span of its `fqdn` value for duplicate reports.
    fn service(&mut self, e: &Entry<'_>) -> Option<(Service, Span)> {
        let line = self.line(&e.key_span());
        if let Err(p) = checks::check_service_name(e.name) {
            self.report(e.key_span(), &e.path, p);
        }
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
            if !SERVICE_KEYS.contains(&f.name) && NOT_IMPLEMENTED.contains(&f.name) {
                self.error(
                    f.key_span(),
                    &f.path,
                    format!("unknown key {:?} {label}: snirouter does not implement {} (yet)", f.name, f.name),
                    Some(format!("remove it; valid keys {label}: {}", SERVICE_KEYS.join(", "))),
                );
            }
        }
        let known: Vec<Entry<'_>> = fields.into_iter().filter(|f| !NOT_IMPLEMENTED.contains(&f.name)).collect();
        self.check_keys(&known, SERVICE_KEYS, &label);

        let upstream = find(&known, "upstream");
        let routes_entry = find(&known, "routes");
        let mut routes = Vec::new();
        match (upstream, routes_entry) {
            (Some(_), Some(r)) => self.error(
                r.key_span(),
                &e.path,
                format!("service {:?} has both upstream and routes; it needs exactly one of them", e.name),
                Some(format!("move the upstream into routes as {{ path = \"/\", upstream = ... }}, or {BOTH_FORMS}")),
            ),
            (None, None) => self.error(
                e.key_span(),
                &e.path,
                format!("service {:?} has neither upstream nor routes", e.name),
                Some(BOTH_FORMS.to_owned()),
            ),
            _ => {}
        }
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

        let mut fqdn = None;
        let mut fqdn_span = None;
        if let Some(f) = find(&known, "fqdn")
            && let Some(s) = self.string(f, &format!("\"{}.example.ts.net\"", checks::suggest_label(e.name)))
        {
            fqdn_span = f.value_span();
            match checks::normalize_dns_name(s, 2, "fqdn") {
                Ok(name) => fqdn = Some(name),
                Err(p) => self.report(f.value_span(), &f.path, p),
            }
        }
        let mut upstream_host = None;
        if let Some(h) = find(&known, "upstream_host")
            && let Some(s) = self.string(h, "\"grafana.internal\"")
        {
            match check_upstream_host(s) {
                Ok(()) => upstream_host = Some(s.to_owned()),
                Err(p) => self.report(h.value_span(), &h.path, p),
            }
        }
        let access_log = find(&known, "access_log").and_then(|a| self.boolean(a));
        let service = Service { name: e.name.to_owned(), fqdn, upstream_host, routes, access_log, line };
        Some((service, fqdn_span))
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
            let path = format!("{}[{i}]", r.path);
            let span = item.span.clone().or_else(|| r.value_span());
            let Some(table) = item.table else {
                self.error(
                    span,
                    &path,
                    format!("expected a route table, found {}", item.found),
                    Some("write each route as { path = \"/app\", upstream = \"http://127.0.0.1:8080\" }".to_owned()),
                );
                continue;
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
                Some(p) => self.route_path(p, &mut seen, i),
            };
            let upstream = match find(&fields, "upstream") {
                None => {
                    self.error(
                        span,
                        &path,
                        "route has no upstream",
                        Some("add upstream = \"http://127.0.0.1:8080\"".to_owned()),
                    );
                    None
                }
                Some(u) => self.upstream(u),
            };
            let strip_prefix = find(&fields, "strip_prefix").and_then(|s| self.boolean(s)).unwrap_or(false);
            if let (Some(path), Some(upstream)) = (route_path, upstream) {
                out.push(Route { path, upstream, strip_prefix });
            }
        }
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
