//! The validator: walks the span-preserving `toml_edit` tree, converts every value into the
//! [`crate::schema`] model and records every problem it finds (it never stops at the first).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml_edit::{Item, Key, TableLike, Value};

use crate::checks::{self, Problem};
use crate::diag::Sink;
use crate::schema::{
    AccessFormat, Admin, Cache, Config, Limits, Listen, Log, LogFormat, MAX_BUFFER_BYTES, MAX_HEADER_BYTES,
    MAX_STREAMS_PER_CONNECTION, MIN_BUFFER_BYTES, MIN_HEADER_BYTES, Tailscale, TailscaleApi, Timeouts,
};
use crate::units;

pub(crate) type Span = Option<Range<usize>>;

/// Keys accepted at the top level.
pub(crate) const TOP_KEYS: &[&str] =
    &["tailscale", "listen", "cache", "timeouts", "limits", "log", "admin", "defaults", "domains", "services"];
const TAILSCALE_KEYS: &[&str] = &["socket", "magic_dns_suffix", "manage_services", "api"];
const TAILSCALE_API_KEYS: &[&str] = &["client_id_file", "client_secret_file", "tailnet", "base_url", "tags"];
const LISTEN_KEYS: &[&str] =
    &["https", "proxy_protocol", "redirect_http", "proxy_protocol_from", "trusted_proxies", "client_ip_headers"];
/// The `[listen]` keys that hold socket addresses.
const LISTEN_ADDR_KEYS: &[&str] = &["https", "proxy_protocol", "redirect_http"];
const CACHE_KEYS: &[&str] = &["dir"];
const TIMEOUT_KEYS: &[&str] = &[
    "proxy_header",
    "tls_handshake",
    "request_header",
    "idle",
    "upstream_connect",
    "upstream_response",
    "tunnel_idle",
    "cert_request",
];
const LIMIT_KEYS: &[&str] = &[
    "max_header_bytes",
    "max_connections",
    "max_connections_per_client",
    "max_upstream_connections",
    "max_streams_per_connection",
    "buffer_per_connection",
    "buffer_per_client",
    "buffer_total",
];
const LOG_KEYS: &[&str] = &["format", "level", "access", "access_format", "access_file"];
const ADMIN_KEYS: &[&str] = &["socket", "metrics_listen"];

/// A key/value pair of a table together with its full key path.
pub(crate) struct Entry<'a> {
    pub(crate) name: &'a str,
    pub(crate) key: &'a Key,
    pub(crate) item: &'a Item,
    pub(crate) path: String,
}

impl Entry<'_> {
    /// Where the key is written (falls back to the value).
    pub(crate) fn key_span(&self) -> Span {
        self.key.span().or_else(|| self.item.span())
    }

    /// Where the value is written (falls back to the key).
    pub(crate) fn value_span(&self) -> Span {
        self.item.span().or_else(|| self.key.span())
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if parent.is_empty() { key } else { format!("{parent}.{key}") }
}

/// The entries of a table in file order.
pub(crate) fn entries<'a>(table: &'a dyn TableLike, parent: &str) -> Vec<Entry<'a>> {
    table
        .iter()
        .filter_map(|(name, _)| {
            let (key, item) = table.get_key_value(name)?;
            Some(Entry { name, key, item, path: join(parent, name) })
        })
        .collect()
}

/// Finds an entry by key.
pub(crate) fn find<'e, 'a>(entries: &'e [Entry<'a>], name: &str) -> Option<&'e Entry<'a>> {
    entries.iter().find(|e| e.name == name)
}

/// "the string \"x\"", "an integer 5", "a table", … for type-mismatch messages.
pub(crate) fn describe(item: &Item) -> String {
    match item {
        Item::None => "nothing".to_owned(),
        Item::Table(_) => "a table".to_owned(),
        Item::ArrayOfTables(_) => "an array of tables".to_owned(),
        Item::Value(v) => describe_value(v),
    }
}

/// Like [`describe`] for a plain value.
pub(crate) fn describe_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {:?}", s.value()),
        Value::Integer(i) => format!("the integer {}", i.value()),
        Value::Float(f) => format!("the float {}", f.value()),
        Value::Boolean(b) => format!("the boolean {}", b.value()),
        Value::Datetime(_) => "a date-time".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::InlineTable(_) => "an inline table".to_owned(),
    }
}

/// Collects problems while converting the document.
pub(crate) struct Validator<'s> {
    pub(crate) sink: Sink<'s>,
}

impl Validator<'_> {
    /// Records a problem.
    pub(crate) fn report(&mut self, span: Span, path: &str, problem: Problem) {
        self.sink.error(span.as_ref(), path, problem.message, problem.help);
    }

    /// Records a problem given as message and help.
    pub(crate) fn error(&mut self, span: Span, path: &str, message: impl Into<String>, help: Option<String>) {
        self.sink.error(span.as_ref(), path, message, help);
    }

    /// Line of a span (0 without one).
    pub(crate) fn line(&self, span: &Span) -> usize {
        self.sink.pos(span.as_ref()).0
    }

    /// Reports every key of `fields` that is not in `allowed`.
    pub(crate) fn check_keys(&mut self, fields: &[Entry<'_>], allowed: &[&str], table_label: &str) {
        for f in fields {
            if allowed.contains(&f.name) {
                continue;
            }
            let mut help = String::new();
            if let Some(guess) = checks::did_you_mean(f.name, allowed) {
                help.push_str(&format!("did you mean {guess:?}? "));
            }
            help.push_str(&format!("valid keys {table_label}: {}", allowed.join(", ")));
            self.error(f.key_span(), &f.path, format!("unknown key {:?} {table_label}", f.name), Some(help));
        }
    }

    /// The entries of an optional section table after checking its keys; empty when the
    /// section is missing or is not a table.
    pub(crate) fn section<'a>(&mut self, entry: Option<&Entry<'a>>, allowed: &[&str]) -> Vec<Entry<'a>> {
        let Some(entry) = entry else { return Vec::new() };
        let Some(table) = entry.item.as_table_like() else {
            self.error(
                entry.value_span(),
                &entry.path,
                format!("expected a table, found {}", describe(entry.item)),
                Some(format!("write it as a [{}] section with keys {}", entry.path, allowed.join(", "))),
            );
            return Vec::new();
        };
        let fields = entries(table, &entry.path);
        self.check_keys(&fields, allowed, &format!("in [{}]", entry.path));
        fields
    }

    /// A string value, or a type error.
    pub(crate) fn string<'a>(&mut self, e: &Entry<'a>, example: &str) -> Option<&'a str> {
        match e.item.as_str() {
            Some(s) => Some(s),
            None => {
                self.error(
                    e.value_span(),
                    &e.path,
                    format!("expected a string, found {}", describe(e.item)),
                    Some(format!("write {} = {example}", e.name)),
                );
                None
            }
        }
    }

    /// A boolean value, or a type error.
    pub(crate) fn boolean(&mut self, e: &Entry<'_>) -> Option<bool> {
        match e.item.as_bool() {
            Some(b) => Some(b),
            None => {
                let help = match e.item.as_str() {
                    Some(s @ ("true" | "false")) => format!("remove the quotes: {} = {s}", e.name),
                    _ => format!("write {} = true or {} = false", e.name, e.name),
                };
                self.error(
                    e.value_span(),
                    &e.path,
                    format!("expected a boolean (true or false), found {}", describe(e.item)),
                    Some(help),
                );
                None
            }
        }
    }

    /// An array of strings, each checked by `parse` (problems reported at the element).
    pub(crate) fn strings<T>(
        &mut self,
        e: &Entry<'_>,
        what: &str,
        parse: impl Fn(&str) -> Result<T, Problem>,
    ) -> Vec<T> {
        let Some(array) = e.item.as_array() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected an array of {what}s, found {}", describe(e.item)),
                Some(format!("write {} = [\"...\"]", e.name)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let path = format!("{}[{i}]", e.path);
            let span = value.span().or_else(|| e.value_span());
            match value.as_str().map(&parse) {
                Some(Ok(v)) => out.push(v),
                Some(Err(p)) => self.report(span, &path, p),
                None => self.error(
                    span,
                    &path,
                    format!("expected a string, found {}", describe_value(value)),
                    Some(format!("write each {what} as a string")),
                ),
            }
        }
        out
    }

    /// A non-empty path string.
    pub(crate) fn path_buf(&mut self, e: &Entry<'_>, example: &str) -> Option<PathBuf> {
        let s = self.string(e, example)?;
        if s.trim().is_empty() {
            self.error(e.value_span(), &e.path, "path is empty", Some(format!("write {} = {example}", e.name)));
            return None;
        }
        Some(PathBuf::from(s))
    }

    /// Converts the whole document.
    pub(crate) fn config(&mut self, root: &dyn TableLike, origin: &str) -> Config {
        let top = entries(root, "");
        self.check_keys(&top, TOP_KEYS, "at the top level");
        let defaults = self.defaults(find(&top, "defaults"));
        let domains = self.domains(find(&top, "domains"));
        Config {
            tailscale: self.tailscale(find(&top, "tailscale")),
            listen: self.listen(find(&top, "listen")),
            cache: self.cache(find(&top, "cache")),
            timeouts: self.timeouts(find(&top, "timeouts")),
            limits: self.limits(find(&top, "limits")),
            log: self.log(find(&top, "log")),
            admin: self.admin(find(&top, "admin")),
            services: self.services(find(&top, "services"), &defaults, &domains),
            domains,
            defaults,
            origin: origin.to_owned(),
        }
    }

    fn tailscale(&mut self, entry: Option<&Entry<'_>>) -> Tailscale {
        let fields = self.section(entry, TAILSCALE_KEYS);
        let mut ts = Tailscale::default();
        if let Some(e) = find(&fields, "socket")
            && let Some(p) = self.path_buf(e, &format!("{:?}", crate::DEFAULT_SOCKET))
        {
            ts.socket = p;
        }
        if let Some(e) = find(&fields, "magic_dns_suffix")
            && let Some(s) = self.string(e, "\"tailnet-1234.ts.net\"")
        {
            match checks::normalize_dns_name(s, 2, "magic_dns_suffix") {
                Ok(name) => ts.magic_dns_suffix = Some(name),
                Err(p) => self.report(e.value_span(), &e.path, p),
            }
        }
        if let Some(e) = find(&fields, "manage_services")
            && let Some(b) = self.boolean(e)
        {
            ts.manage_services = b;
        }
        if let Some(e) = find(&fields, "api") {
            ts.api = self.tailscale_api(e);
        }
        ts
    }

    /// `[tailscale.api]`; `None` when it is unusable (every problem reported).
    fn tailscale_api(&mut self, entry: &Entry<'_>) -> Option<TailscaleApi> {
        if entry.item.as_table_like().is_none() {
            self.section(Some(entry), TAILSCALE_API_KEYS); // reports the type error
            return None;
        }
        let fields = self.section(Some(entry), TAILSCALE_API_KEYS);
        let mut ok = true;
        let file = |v: &mut Self, name: &str, example: &str| -> Option<PathBuf> {
            match find(&fields, name) {
                Some(e) => v.path_buf(e, example),
                None => {
                    v.error(
                        entry.key_span(),
                        &entry.path,
                        format!("[tailscale.api] needs {name}"),
                        Some(format!(
                            "add {name} = {example} (a file readable only by snirouter), or remove [tailscale.api] to set the services up in the admin console"
                        )),
                    );
                    None
                }
            }
        };
        let client_id_file = file(self, "client_id_file", "\"/run/secrets/ts-oauth-id\"");
        let client_secret_file = file(self, "client_secret_file", "\"/run/secrets/ts-oauth-secret\"");
        let mut tailnet = "-".to_owned();
        if let Some(e) = find(&fields, "tailnet")
            && let Some(s) = self.string(e, "\"-\"")
        {
            match checks::check_tailnet(s) {
                Ok(()) => tailnet = s.to_owned(),
                Err(p) => {
                    self.report(e.value_span(), &e.path, p);
                    ok = false;
                }
            }
        }
        let mut base_url = crate::schema::DEFAULT_API_BASE_URL.to_owned();
        if let Some(e) = find(&fields, "base_url")
            && let Some(s) = self.string(e, "\"https://api.tailscale.com\"")
        {
            match checks::normalize_api_base_url(s) {
                Ok(u) => base_url = u,
                Err(p) => {
                    self.report(e.value_span(), &e.path, p);
                    ok = false;
                }
            }
        }
        let tags = match find(&fields, "tags") {
            Some(e) => self.api_tags(e).unwrap_or_else(|| {
                ok = false;
                Vec::new()
            }),
            None => Vec::new(),
        };
        let (client_id_file, client_secret_file) = (client_id_file?, client_secret_file?);
        ok.then_some(TailscaleApi { client_id_file, client_secret_file, tailnet, base_url, tags })
    }

    /// `[tailscale.api] tags`: ACL tags for the services snirouter defines; `None` when
    /// any of them is wrong (each reported).
    fn api_tags(&mut self, e: &Entry<'_>) -> Option<Vec<String>> {
        let help = || Some("write tags = [\"tag:storage-svc\"]".to_owned());
        let Some(array) = e.item.as_array() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected an array of tags, found {}", describe(e.item)),
                help(),
            );
            return None;
        };
        let mut tags = Vec::new();
        let mut ok = true;
        for (i, value) in array.iter().enumerate() {
            let path = format!("{}[{i}]", e.path);
            let span = value.span().or_else(|| e.value_span());
            match value.as_str() {
                Some(tag) => match checks::check_acl_tag(tag) {
                    Ok(()) => tags.push(tag.to_owned()),
                    Err(p) => {
                        self.report(span, &path, p);
                        ok = false;
                    }
                },
                None => {
                    self.error(span, &path, format!("expected a tag string, found {}", describe_value(value)), help());
                    ok = false;
                }
            }
        }
        ok.then_some(tags)
    }

    fn listen(&mut self, entry: Option<&Entry<'_>>) -> Listen {
        let fields = self.section(entry, LISTEN_KEYS);
        let mut listen = Listen::default();
        // Every parsed address with its key path and span, for overlap checks.
        let mut seen: Vec<(SocketAddr, String, Span)> = Vec::new();
        let mut tls_entries = 0usize;
        for name in LISTEN_ADDR_KEYS {
            let Some(e) = find(&fields, name) else { continue };
            let Some(array) = e.item.as_array() else {
                let help = match e.item.as_str() {
                    Some(s) => format!("wrap it in brackets: {name} = [{s:?}]"),
                    None => format!("write {name} = [\"0.0.0.0:443\"]"),
                };
                self.error(
                    e.value_span(),
                    &e.path,
                    format!("expected an array of socket addresses, found {}", describe(e.item)),
                    Some(help),
                );
                continue;
            };
            if *name != "redirect_http" {
                tls_entries += array.len();
            }
            let addrs = self.listen_addrs(e, array, &mut seen);
            match *name {
                "https" => listen.https = addrs,
                "proxy_protocol" => listen.proxy_protocol = addrs,
                _ => listen.redirect_http = addrs,
            }
        }
        match find(&fields, "proxy_protocol_from") {
            Some(e) => listen.proxy_protocol_from = self.proxy_senders(e),
            None => {
                if let Some(e) = find(&fields, "proxy_protocol") {
                    self.untrusted_proxy_listeners(e, &listen.proxy_protocol);
                }
            }
        }
        self.client_trust(&fields, &mut listen);
        if tls_entries == 0 {
            let (span, path) = match entry {
                Some(e) => (e.key_span(), e.path.clone()),
                None => (None, "listen".to_owned()),
            };
            self.error(
                span,
                &path,
                "no TLS listener configured: listen.https and listen.proxy_protocol are both missing or empty",
                Some(
                    "add e.g. https = [\"0.0.0.0:443\"] (plain TLS) or proxy_protocol = [\"127.0.0.1:8443\"] (behind tailscale serve with PROXY v2) under [listen]"
                        .to_owned(),
                ),
            );
        }
        listen
    }

    /// The addresses of one `[listen]` list, each checked and compared with those `seen`
    /// so far (which it joins).
    fn listen_addrs(
        &mut self,
        e: &Entry<'_>,
        array: &toml_edit::Array,
        seen: &mut Vec<(SocketAddr, String, Span)>,
    ) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let path = format!("{}[{i}]", e.path);
            let span = value.span().or_else(|| e.value_span());
            let Some(raw) = value.as_str() else {
                self.error(
                    span,
                    &path,
                    format!("expected a socket address string, found {}", describe_value(value)),
                    Some("write addresses as strings such as \"0.0.0.0:443\" or \"[::]:443\"".to_owned()),
                );
                continue;
            };
            let addr = match checks::parse_socket_addr(raw) {
                Ok(a) => a,
                Err(p) => {
                    self.report(span, &path, p);
                    continue;
                }
            };
            if let Some(problem) = self.overlap(addr, seen) {
                self.report(span.clone(), &path, problem);
            }
            seen.push((addr, path, span));
            addrs.push(addr);
        }
        addrs
    }

    /// `listen.proxy_protocol_from`: IP addresses or CIDR ranges, at least one.
    fn proxy_senders(&mut self, e: &Entry<'_>) -> Option<Vec<IpNet>> {
        let help =
            "list the peers that may send PROXY headers, e.g. proxy_protocol_from = [\"127.0.0.1\", \"100.64.0.0/10\"]";
        let Some(array) = e.item.as_array() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected an array of addresses or CIDR ranges, found {}", describe(e.item)),
                Some(help.to_owned()),
            );
            return None;
        };
        if array.is_empty() {
            self.error(
                e.value_span(),
                &e.path,
                "an empty list trusts no peer, so every PROXY listener would refuse all connections",
                Some(format!("{help}, or remove the key (default: loopback only)")),
            );
            return None;
        }
        let mut nets = Vec::new();
        for (i, value) in array.iter().enumerate() {
            let path = format!("{}[{i}]", e.path);
            let span = value.span().or_else(|| e.value_span());
            match value.as_str().map(checks::parse_ip_net) {
                Some(Ok(net)) => nets.push(net),
                Some(Err(problem)) => self.report(span, &path, problem),
                None => self.error(
                    span,
                    &path,
                    format!("expected an address string, found {}", describe_value(value)),
                    Some(help.to_owned()),
                ),
            }
        }
        (nets.len() == array.len()).then_some(nets)
    }

    /// Without `proxy_protocol_from`, PROXY headers are taken from loopback peers only,
    /// so a PROXY listener reachable from elsewhere must say whom it trusts.
    fn untrusted_proxy_listeners(&mut self, e: &Entry<'_>, addrs: &[SocketAddr]) {
        for (i, addr) in addrs.iter().enumerate() {
            if addr.ip().is_loopback() {
                continue;
            }
            let value = e.item.as_array().and_then(|a| a.get(i));
            let span = value.and_then(|v| v.span()).or_else(|| e.value_span());
            self.error(
                span,
                &format!("{}[{i}]", e.path),
                format!("PROXY listener {addr} is reachable from other hosts, and any peer that reaches it could claim any client address (X-Forwarded-For, per-client limits, Tailscale-User-* identity)"),
                Some("bind it to loopback (tailscaled's serve forwards from 127.0.0.1: proxy_protocol = [\"127.0.0.1:8443\"]) or list the peers that may send PROXY headers under [listen]: proxy_protocol_from = [\"ADDRESS\" or \"CIDR\"]".to_owned()),
            );
        }
    }

    /// A problem when `addr` collides with an address already configured.
    fn overlap(&self, addr: SocketAddr, seen: &[(SocketAddr, String, Span)]) -> Option<Problem> {
        if addr.port() == 0 {
            return None; // port 0 asks the OS for a fresh port each time
        }
        for (other, other_path, other_span) in seen {
            if other.port() != addr.port() || other.is_ipv4() != addr.is_ipv4() {
                continue;
            }
            let at = format!("{other_path}, line {}", self.line(other_span));
            if *other == addr {
                return Some(Problem::new(
                    format!("listener {addr} is configured twice (also at {at})"),
                    Some("remove one of them; an address can be bound only once".to_owned()),
                ));
            }
            let (wild, specific) = match (other.ip().is_unspecified(), addr.ip().is_unspecified()) {
                (true, false) => (*other, addr),
                (false, true) => (addr, *other),
                _ => continue,
            };
            return Some(Problem::new(
                format!(
                    "listener {addr} overlaps {other} ({at}): the wildcard {wild} already accepts connections to {specific} on port {}",
                    addr.port()
                ),
                Some(format!(
                    "keep only the wildcard {wild}, or replace it with specific addresses; binding both fails with \"address in use\""
                )),
            ));
        }
        None
    }

    fn cache(&mut self, entry: Option<&Entry<'_>>) -> Cache {
        let fields = self.section(entry, CACHE_KEYS);
        let mut cache = Cache::default();
        if let Some(e) = find(&fields, "dir")
            && let Some(p) = self.path_buf(e, &format!("{:?}", crate::schema::DEFAULT_CACHE_DIR))
        {
            cache.dir = p;
        }
        cache
    }

    fn timeouts(&mut self, entry: Option<&Entry<'_>>) -> Timeouts {
        let fields = self.section(entry, TIMEOUT_KEYS);
        let mut t = Timeouts::default();
        let defaults = Timeouts::default();
        let slots: [(&str, &mut Duration, Duration); 7] = [
            ("proxy_header", &mut t.proxy_header, defaults.proxy_header),
            ("tls_handshake", &mut t.tls_handshake, defaults.tls_handshake),
            ("request_header", &mut t.request_header, defaults.request_header),
            ("idle", &mut t.idle, defaults.idle),
            ("upstream_connect", &mut t.upstream_connect, defaults.upstream_connect),
            ("upstream_response", &mut t.upstream_response, defaults.upstream_response),
            ("cert_request", &mut t.cert_request, defaults.cert_request),
        ];
        for (name, slot, default) in slots {
            if let Some(e) = find(&fields, name)
                && let Some(d) = self.duration(e, Some(default))
            {
                *slot = d;
            }
        }
        if let Some(e) = find(&fields, "tunnel_idle") {
            t.tunnel_idle = self.duration(e, None);
        }
        t
    }

    /// A positive duration written as a string. `default` is shown in the fixes;
    /// `None` for optional keys, whose fix is to remove the key.
    fn duration(&mut self, e: &Entry<'_>, default: Option<Duration>) -> Option<Duration> {
        let typical = default.unwrap_or(Duration::from_secs(60 * 60));
        let example = format!("{} = \"{}\"", e.name, units::format_duration(typical));
        let Some(raw) = e.item.as_str() else {
            let help = match e.item.as_integer() {
                Some(n) => format!("durations need a unit: write {} = \"{n}s\" (units: ms, s, m, h)", e.name),
                None => format!("write e.g. {example}"),
            };
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a duration string such as \"10s\", found {}", describe(e.item)),
                Some(help),
            );
            return None;
        };
        match units::parse_duration(raw) {
            Ok(d) if d.is_zero() => {
                let help = match default {
                    Some(_) => format!("use a positive duration (the default is {example})"),
                    None => format!("remove {} for no limit, or use a positive duration such as {example}", e.name),
                };
                self.error(e.value_span(), &e.path, format!("timeout {raw:?} must be greater than zero"), Some(help));
                None
            }
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(e.value_span(), &e.path, msg, Some(format!("write e.g. {example}")));
                None
            }
        }
    }

    fn limits(&mut self, entry: Option<&Entry<'_>>) -> Limits {
        let fields = self.section(entry, LIMIT_KEYS);
        let mut limits = Limits::default();
        if let Some(e) = find(&fields, "max_header_bytes")
            && let Some(n) = self.max_header_bytes(e)
        {
            limits.max_header_bytes = n;
        }
        if let Some(e) = find(&fields, "max_connections")
            && let Some(n) = self.connection_count(e, "max_connections = 20000 (the default)")
        {
            limits.max_connections = n;
        }
        if let Some(e) = find(&fields, "max_connections_per_client")
            && let Some(n) = self.connection_count(e, "max_connections_per_client = 1024 (the default)")
        {
            limits.max_connections_per_client = n;
        }
        if let Some(e) = find(&fields, "max_upstream_connections") {
            // Opt-in: the example is a typical cap, not a default.
            limits.max_upstream_connections =
                self.connection_count(e, "max_upstream_connections = 32, or remove the key for no limit (the default)");
        }
        if let Some(e) = find(&fields, "max_streams_per_connection")
            && let Some(n) = self.connection_count(e, "max_streams_per_connection = 250 (the default)")
        {
            match u32::try_from(n) {
                Ok(n) if n <= MAX_STREAMS_PER_CONNECTION => limits.max_streams_per_connection = n,
                _ => self.error(
                    e.value_span(),
                    &e.path,
                    format!("max_streams_per_connection = {n} is out of range: it must be between 1 and {MAX_STREAMS_PER_CONNECTION}"),
                    Some("write e.g. max_streams_per_connection = 250 (the default, as in Caddy; nginx uses 128)".to_owned()),
                ),
            }
        }
        for (key, default, slot) in [
            ("buffer_per_connection", "\"1MiB\"", &mut limits.buffer_per_connection),
            ("buffer_per_client", "\"32MiB\"", &mut limits.buffer_per_client),
            ("buffer_total", "\"256MiB\"", &mut limits.buffer_total),
        ] {
            if let Some(e) = find(&fields, key)
                && let Some(n) = self.buffer_size(e, key, default)
            {
                *slot = n;
            }
        }
        limits
    }

    /// A `limits.buffer_*` size, within [`MIN_BUFFER_BYTES`] ..= [`MAX_BUFFER_BYTES`].
    fn buffer_size(&mut self, e: &Entry<'_>, key: &str, default: &str) -> Option<usize> {
        let help = format!("write a byte count or a size, e.g. {key} = {default} (the default)");
        let (bytes, shown) = self.size(e, &help, default)?;
        match bytes.and_then(|n| usize::try_from(n).ok()) {
            Some(n) if (MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&n) => Some(n),
            _ => {
                self.error(
                    e.value_span(),
                    &e.path,
                    format!("{key} = {shown} is out of range: it must be between 64 KiB and 64 GiB"),
                    Some(help),
                );
                None
            }
        }
    }

    /// A connection count: an integer of at least 1 (`example` is the help text).
    fn connection_count(&mut self, e: &Entry<'_>, example: &str) -> Option<usize> {
        let key = e.path.rsplit('.').next().unwrap_or(&e.path).to_owned();
        let help = Some(format!("write e.g. {example}"));
        match e.item.as_integer() {
            Some(n) if n >= 1 => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(e.value_span(), &e.path, format!("{key} = {n} is too large"), None);
                    None
                }
            },
            Some(n) => {
                self.error(e.value_span(), &e.path, format!("{key} = {n} must be at least 1"), help);
                None
            }
            None => {
                self.error(e.value_span(), &e.path, format!("expected an integer, found {}", describe(e.item)), help);
                None
            }
        }
    }

    /// A size value: an integer byte count or a string such as `"64KiB"` / `"5MB"`.
    /// Returns the byte count (`None` when it does not fit, e.g. negative) and the value
    /// as written, for range messages; `None` after reporting a wrong type or a bad
    /// size string. `help` is the fix shown for those; `sample` the example string.
    pub(crate) fn size(&mut self, e: &Entry<'_>, help: &str, sample: &str) -> Option<(Option<u64>, String)> {
        if let Some(n) = e.item.as_integer() {
            return Some((u64::try_from(n).ok(), n.to_string()));
        }
        let Some(s) = e.item.as_str() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a size (integer or string such as {sample}), found {}", describe(e.item)),
                Some(help.to_owned()),
            );
            return None;
        };
        match units::parse_size(s) {
            Ok(n) => Some((u64::try_from(n).ok(), format!("{s:?}"))),
            Err(msg) => {
                self.error(e.value_span(), &e.path, msg, Some(help.to_owned()));
                None
            }
        }
    }

    fn max_header_bytes(&mut self, e: &Entry<'_>) -> Option<usize> {
        let (bytes, shown) = self.size(
            e,
            "write a byte count or a size, e.g. max_header_bytes = 65536, \"64KiB\" or \"5MB\"",
            "\"64KiB\"",
        )?;
        let bytes = bytes.and_then(|n| usize::try_from(n).ok());
        match bytes {
            Some(n) if (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) => Some(n),
            _ => {
                self.error(
                    e.value_span(),
                    &e.path,
                    format!(
                        "max_header_bytes = {shown} is out of range: it must be between 1 KiB ({MIN_HEADER_BYTES}) and 64 MiB ({MAX_HEADER_BYTES}) bytes"
                    ),
                    Some("use e.g. \"64KiB\" (the default) or \"5MB\" (Caddy's max_header_size 5MB)".to_owned()),
                );
                None
            }
        }
    }

    fn log(&mut self, entry: Option<&Entry<'_>>) -> Log {
        let fields = self.section(entry, LOG_KEYS);
        let mut log = Log::default();
        if let Some(e) = find(&fields, "format")
            && let Some(s) = self.string(e, "\"auto\"")
        {
            match LogFormat::from_name(s) {
                Some(f) => log.format = f,
                None => {
                    let mut help = String::new();
                    if let Some(guess) = checks::did_you_mean(s, &LogFormat::NAMES) {
                        help.push_str(&format!("did you mean {guess:?}? "));
                    }
                    help.push_str(&format!("use one of {}", LogFormat::NAMES.join(", ")));
                    self.error(e.value_span(), &e.path, format!("unknown log format {s:?}"), Some(help));
                }
            }
        }
        if let Some(e) = find(&fields, "level")
            && let Some(s) = self.string(e, "\"info\"")
        {
            if s.trim().is_empty() {
                self.error(
                    e.value_span(),
                    &e.path,
                    "log level is empty",
                    Some(
                        "use trace, debug, info, warn or error, or a filter such as \"info,snirouter=debug\""
                            .to_owned(),
                    ),
                );
            } else {
                log.level = s.trim().to_owned();
            }
        }
        if let Some(e) = find(&fields, "access")
            && let Some(b) = self.boolean(e)
        {
            log.access = b;
        }
        if let Some(e) = find(&fields, "access_format")
            && let Some(s) = self.string(e, "\"json\"")
        {
            match AccessFormat::from_name(s) {
                Some(f) => log.access_format = f,
                None => self.error(
                    e.value_span(),
                    &e.path,
                    format!("unknown access log format {s:?}"),
                    Some(format!(
                        "use one of {} (combined is what fail2ban and log analysers read)",
                        AccessFormat::NAMES.join(", ")
                    )),
                ),
            }
        }
        if let Some(e) = find(&fields, "access_file") {
            log.access_file = self.path_buf(e, "\"/var/log/snirouter/access.log\"");
            if log.access_file.as_ref().is_some_and(|p| p.is_relative()) {
                self.error(
                    e.value_span(),
                    &e.path,
                    "access_file must be an absolute path",
                    Some("write e.g. access_file = \"/var/log/snirouter/access.log\"".to_owned()),
                );
                log.access_file = None;
            }
        }
        log
    }

    /// `[admin]`: the admin socket path and the optional TCP metrics listener.
    fn admin(&mut self, entry: Option<&Entry<'_>>) -> Admin {
        let fields = self.section(entry, ADMIN_KEYS);
        let mut admin = Admin::default();
        if let Some(e) = find(&fields, "socket")
            && let Some(p) = self.path_buf(e, &format!("{:?}", crate::schema::DEFAULT_ADMIN_SOCKET))
        {
            if p.is_relative() {
                self.error(
                    e.value_span(),
                    &e.path,
                    format!("admin socket path {:?} is relative", p.display().to_string()),
                    Some(format!(
                        "use an absolute path so `snirouter status` finds it from any directory, e.g. socket = {:?}",
                        crate::schema::DEFAULT_ADMIN_SOCKET
                    )),
                );
            } else if p.as_os_str().len() > 107 {
                self.error(
                    e.value_span(),
                    &e.path,
                    format!(
                        "admin socket path is {} bytes long; unix socket paths are limited to 107",
                        p.as_os_str().len()
                    ),
                    Some("choose a shorter path, e.g. socket = \"/run/snirouter/admin.sock\"".to_owned()),
                );
            } else {
                admin.socket = p;
            }
        }
        if let Some(e) = find(&fields, "metrics_listen")
            && let Some(raw) = self.string(e, "\"127.0.0.1:9469\"")
        {
            match checks::parse_socket_addr(raw) {
                Ok(addr) => admin.metrics_listen = Some(addr),
                Err(p) => self.report(e.value_span(), &e.path, p),
            }
        }
        admin
    }
}
