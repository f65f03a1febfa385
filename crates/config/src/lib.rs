//! Configuration for snirouter.
//!
//! This crate owns the TOML configuration file: its schema ([`Config`] and friends), parsing
//! ([`parse`], [`load`]) and validation. Validation walks the span-preserving `toml_edit`
//! tree and reports *every* problem in one pass as [`Diagnostics`], each with the file,
//! line, column, key path (`services.grafana.routes[1].upstream`), what is wrong and how to
//! fix it. It also owns the small unit parsers for durations and sizes
//! ([`parse_duration`], [`parse_size`]).
//!
//! Everything the rest of snirouter needs is decided here: defaults, the route order
//! (longest path first), upstream normalization and how a service's FQDN is derived
//! ([`Service::fqdn`], [`Config::check_fqdns`] once the MagicDNS suffix is known).
//!
//! ```
//! let cfg = snirouter_config::parse(
//!     r#"
//!     [listen]
//!     https = ["0.0.0.0:443"]
//!     [services.grafana]
//!     upstream = "http://127.0.0.1:3000"
//!     "#,
//!     "example.toml",
//! )
//! .expect("valid");
//! assert_eq!(cfg.services[0].fqdn("tailnet-1234.ts.net"), "grafana.tailnet-1234.ts.net");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod checks;
mod clients;
mod diag;
mod domains;
mod headers;
mod schema;
mod services;
mod tcp_ports;
mod units;
mod validate;

pub use diag::{Diagnostic, Diagnostics};
pub use schema::{
    AccessFormat, Admin, Cache, Config, Cors, DEFAULT_ADMIN_SOCKET, DEFAULT_CACHE_DIR, DEFAULT_SOCKET, Defaults,
    Domain, ForwardAuth, HeaderRules, HostPort, Limits, Listen, Log, LogFormat, MAX_HEADER_BYTES, MIN_HEADER_BYTES,
    Principal, Route, Scheme, Service, Tailscale, TcpPort, TcpTarget, Timeouts, Upstream,
};
pub use schema::{DEFAULT_API_BASE_URL, TailscaleApi};
pub use units::{format_duration, parse_duration, parse_size};

/// Parses and validates a configuration file's contents.
///
/// `origin` names the source in diagnostics (usually the file path). On error every problem
/// found is returned, sorted by position; the list is never empty. When
/// `tailscale.magic_dns_suffix` is set, [`Config::check_fqdns`] runs as part of validation.
pub fn parse(source: &str, origin: &str) -> Result<Config, Diagnostics> {
    parse_with_warnings(source, origin).0
}

/// [`parse`], plus the warnings of whatever could be read of the file — also when it has
/// errors, so that `check` shows both at once instead of the warnings only after every
/// error is fixed.
pub fn parse_with_warnings(source: &str, origin: &str) -> (Result<Config, Diagnostics>, Vec<Diagnostic>) {
    let mut sink = diag::Sink::new(origin, source);
    let doc = match toml_edit::Document::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span();
            let (message, help) = match span.as_ref().and_then(|s| duplicate_table(source, s.start)) {
                Some(found) => found,
                None => (
                    format!("TOML syntax error: {}", e.message().trim_end()),
                    "fix the TOML syntax at this position; see https://toml.io".to_owned(),
                ),
            };
            sink.error(span.as_ref(), "", message, Some(help));
            return (Err(Diagnostics(sink.finish())), Vec::new());
        }
    };
    let mut validator = validate::Validator { sink };
    let config = validator.config(doc.as_table(), origin);
    let mut problems = validator.sink.finish();
    if let Some(suffix) = &config.tailscale.magic_dns_suffix
        && let Err(more) = config.check_fqdns(suffix)
    {
        problems.extend(more.0);
        problems.sort_by_key(|d| (d.line == 0, d.line, d.column));
    }
    let mut warnings = trailing_dots(doc.as_table(), source, origin);
    warnings.extend(config.warnings());
    (if problems.is_empty() { Ok(config) } else { Err(Diagnostics(problems)) }, warnings)
}

/// A name written with the trailing dot of a fully qualified name (`grafana.example.com.`)
/// is served without it; said, not done silently.
fn trailing_dots(root: &toml_edit::Table, source: &str, origin: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut note = |span: Option<std::ops::Range<usize>>, key_path: String, raw: &str| {
        let at = span.map_or(0, |s| s.start).min(source.len());
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        out.push(Diagnostic {
            origin: origin.to_owned(),
            line: source[..at].matches('\n').count() + 1,
            column: source[line_start..at].chars().count() + 1,
            key_path,
            message: format!("{raw:?} is served as {:?}: the trailing dot is dropped", raw.trim_end_matches('.')),
            help: Some("write the name without the dot".to_owned()),
        });
    };
    if let Some(domains) = root.get("domains").and_then(toml_edit::Item::as_table_like) {
        for (name, _) in domains.iter().filter(|(name, _)| name.ends_with('.')) {
            let span = domains.key(name).and_then(toml_edit::Key::span);
            note(span, validate::join("domains", name), name);
        }
    }
    let Some(services) = root.get("services").and_then(toml_edit::Item::as_table_like) else { return out };
    for (service, item) in services.iter() {
        let Some(table) = item.as_table_like() else { continue };
        let path = validate::join("services", service);
        if let Some(fqdn) = table.get("fqdn").and_then(toml_edit::Item::as_value)
            && let Some(raw) = fqdn.as_str().filter(|s| s.ends_with('.'))
        {
            note(fqdn.span(), validate::join(&path, "fqdn"), raw);
        }
        let names = table.get("names").and_then(toml_edit::Item::as_array);
        for (i, v) in names.into_iter().flat_map(|a| a.iter().enumerate()) {
            if let Some(raw) = v.as_str().filter(|s| s.ends_with('.')) {
                note(v.span(), format!("{path}.names[{i}]"), raw);
            }
        }
    }
    out
}

/// A table header at `at` that an earlier line already opened (`[services.grafana]`
/// twice): the message naming the table and its first line, and the fix.
fn duplicate_table(source: &str, at: usize) -> Option<(String, String)> {
    let header = |line: &str| {
        let t = line.trim();
        let inner = t.strip_prefix('[')?.split(']').next()?;
        (!inner.starts_with('['))
            .then(|| inner.split('.').map(|p| p.trim().trim_matches('"')).collect::<Vec<_>>().join("."))
    };
    let start = source[..at.min(source.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = source[start..].lines().next()?;
    let table = header(line)?;
    let first = source[..start].lines().position(|l| header(l).as_deref() == Some(table.as_str()))? + 1;
    let what = match table.strip_prefix("services.") {
        Some(name) => format!("service {name:?} is defined twice"),
        None => format!("table [{table}] is defined twice"),
    };
    Some((
        format!("{what}: [{table}] was already opened at line {first}"),
        format!("merge the two [{table}] tables into one, or give one of them another name"),
    ))
}

/// The `[admin] socket` set in `source`, read leniently: the rest of the file may be
/// invalid (so `snirouter status` still finds a running daemon while its config file is
/// being edited). `None` when `source` is not TOML or sets no socket.
pub fn admin_socket_in(source: &str) -> Option<std::path::PathBuf> {
    let doc = toml_edit::Document::parse(source).ok()?;
    let socket = doc.as_table().get("admin")?.as_table_like()?.get("socket")?.as_str()?;
    (!socket.trim().is_empty()).then(|| std::path::PathBuf::from(socket))
}

impl Config {
    /// Checks that no two services answer to the same name once the MagicDNS suffix is
    /// known (e.g. service `grafana` and another with `fqdn = "grafana.<suffix>"`), and that
    /// every derived name is a valid DNS name. Each collision is reported on the later
    /// service, naming the earlier one and its line.
    pub fn check_fqdns(&self, magic_dns_suffix: &str) -> Result<(), Diagnostics> {
        let mut problems = Vec::new();
        let mut seen: Vec<(String, &Service)> = Vec::new();
        let diag = |service: &Service, message: String, help: &str| Diagnostic {
            origin: self.origin.clone(),
            line: service.line,
            column: usize::from(service.line > 0),
            key_path: validate::join("services", &service.name),
            message,
            help: Some(help.to_owned()),
        };
        for service in &self.services {
            let fqdn = service.fqdn(magic_dns_suffix);
            if let Err(p) = checks::normalize_dns_name(&fqdn, 2, "the service's name") {
                problems.push(diag(
                    service,
                    format!(
                        "service {:?} would be served as {fqdn:?}, which is not a valid DNS name: {}",
                        service.name, p.message
                    ),
                    "shorten the service name or set a valid fqdn override",
                ));
                continue;
            }
            for name in std::iter::once(fqdn).chain(service.names.iter().cloned()) {
                match seen.iter().find(|(f, _)| *f == name) {
                    Some((_, first)) if first.name == service.name => {}
                    Some((_, first)) => problems.push(diag(
                        service,
                        format!(
                            "service {:?} and service {:?} (line {}) both answer to {name:?}",
                            service.name, first.name, first.line
                        ),
                        "a name can be routed to only one service; change the fqdn override or names, or rename one of the services",
                    )),
                    None => seen.push((name, service)),
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(Diagnostics(problems)) }
    }

    /// What is valid but probably not meant: `cors = true` without `cors_origins`
    /// (any web page may make credentialed requests, Caddy-compatible) on a service whose
    /// requests carry an identity (`tailscale_identity` or `forward_auth`); public names
    /// that a tunnel on this host would reach as a local client.
    pub fn warnings(&self) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = self.services.iter().filter_map(|s| self.any_origin_warning(s)).collect();
        out.extend(self.services.iter().filter_map(|s| self.tunnel_warning(s)));
        out.extend(self.unreachable_names_warning());
        out
    }

    /// Every `error_pages` directory with the key that names it (`defaults.error_pages`,
    /// `services.NAME.error_pages`), for the checks that look at the host's files.
    pub fn error_page_dirs(&self) -> Vec<(String, &std::path::Path)> {
        let mut out: Vec<(String, &std::path::Path)> =
            self.defaults.error_pages.iter().map(|p| ("defaults.error_pages".to_owned(), p.as_path())).collect();
        for s in &self.services {
            if let Some(p) = &s.error_pages
                && Some(p) != self.defaults.error_pages.as_ref()
            {
                out.push((format!("services.{}.error_pages", s.name), p.as_path()));
            }
        }
        out
    }

    /// Public names (`names` under `[domains]`) with no `[listen] https` listener: tailscaled
    /// forwards only Tailscale Service names to the PROXY listener, so nobody could reach them.
    fn unreachable_names_warning(&self) -> Option<Diagnostic> {
        if !self.listen.https.is_empty() {
            return None;
        }
        let first = self.services.iter().find(|s| !s.names.is_empty())?;
        let names: Vec<&str> = self.services.iter().flat_map(|s| s.names.iter().map(String::as_str)).collect();
        Some(self.warning(
            first,
            "names",
            format!(
                "no listener can reach the public names ({}): [listen] has no https listener, and tailscaled forwards only Tailscale Service names to the PROXY listener",
                names.join(", ")
            ),
            "add a TLS listener under [listen]: https = [\"0.0.0.0:443\"] for the LAN and a port forward, or https = [\"127.0.0.1:443\"] for a tunnel on this host (NixOS: services.snirouter.settings.listen.https)".to_owned(),
        ))
    }

    fn warning(&self, s: &Service, key: &str, message: String, help: String) -> Diagnostic {
        Diagnostic {
            origin: self.origin.clone(),
            line: s.line,
            column: usize::from(s.line > 0),
            key_path: validate::join(&validate::join("services", &s.name), key),
            message,
            help: Some(help),
        }
    }

    fn any_origin_warning(&self, s: &Service) -> Option<Diagnostic> {
        let any_origin = s.cors.as_ref().is_some_and(|c| c.origins.is_empty());
        if !any_origin || !(s.tailscale_identity || s.forward_auth.is_some()) {
            return None;
        }
        let who = if s.tailscale_identity { "tailscale_identity" } else { "forward_auth" };
        Some(self.warning(
            s,
            "cors",
            format!(
                "cors = true without cors_origins answers every Origin with credentials allowed, so any web page a visitor opens can call service {:?} as that visitor ({who})",
                s.name
            ),
            "list the origins that may call it: cors_origins = [\"https://app.example.com\"]".to_owned(),
        ))
    }

    /// Public names with no `trusted_proxies`: a tunnel on this host (cloudflared, an
    /// SSH or frp TCP tunnel) relays every visitor from loopback, so `local` would admit
    /// the whole internet, and an open service would see one client for everyone.
    fn tunnel_warning(&self, s: &Service) -> Option<Diagnostic> {
        if s.names.is_empty() || !self.listen.trusted_proxies.is_empty() {
            return None;
        }
        let local = s.allow.as_ref().is_some_and(|a| a.contains(&Principal::Local));
        let open = s.allow.is_none() && s.names.iter().all(|n| self.forward_auth_for(s, n).is_none());
        let fix = "if a tunnel or proxy on this host relays visitors to snirouter, list it under [listen]: trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"] (and client_ip_headers = [\"CF-Connecting-IP\"] for cloudflared)";
        let names = s.names.join(", ");
        if local {
            return Some(self.warning(
                s,
                "allow",
                format!(
                    "service {:?} admits \"local\" clients and has public names ({names}); a tunnel on this host that relays visitors without a forwarding header would pass as local and skip every check, and no visitor's real address is known",
                    s.name
                ),
                fix.to_owned(),
            ));
        }
        open.then(|| {
            self.warning(
                s,
                "names",
                format!(
                    "service {:?} has public names ({names}) and neither allow nor forward_auth; through a tunnel on this host every visitor would arrive as 127.0.0.1, so logs, the upstream and fail2ban could not tell visitors apart",
                    s.name
                ),
                fix.to_owned(),
            )
        })
    }
    /// The service answering to `fqdn` (case-insensitive, trailing dot ignored).
    pub fn service_for(&self, fqdn: &str, magic_dns_suffix: &str) -> Option<&Service> {
        let wanted = fqdn.trim_end_matches('.').to_ascii_lowercase();
        self.services.iter().find(|s| s.fqdn(magic_dns_suffix) == wanted)
    }
}
