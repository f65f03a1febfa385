//! The validated configuration model. Values of these types only come out of
//! [`crate::parse`] / [`crate::load`] (or are built by hand in tests), so consumers can rely on
//! the invariants documented on each field.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::units::duration_str;

/// Default path of tailscaled's LocalAPI unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";

/// Default certificate cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/snirouter";

/// Default path of snirouter's admin socket (read by `snirouter status`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/snirouter/admin.sock";

/// The whole, validated configuration.
///
/// `Default` fills every table with its defaults but has no listeners and no services, so it
/// is a starting point for hand-built configs in tests, not a valid configuration by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Config {
    /// `[tailscale]`: how to reach tailscaled.
    pub tailscale: Tailscale,
    /// `[listen]`: listening sockets (at least one TLS listener).
    pub listen: Listen,
    /// `[cache]`: certificate cache.
    pub cache: Cache,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[limits]`.
    pub limits: Limits,
    /// `[log]`.
    pub log: Log,
    /// `[admin]`: the admin socket and the optional metrics listener.
    pub admin: Admin,
    /// `[defaults]`: settings every service inherits (already folded into each
    /// [`Service`]; kept here for display and reload comparison).
    pub defaults: Defaults,
    /// `[domains."DOMAIN"]` in file order: domains whose names take their certificate from
    /// PEM files.
    pub domains: Vec<Domain>,
    /// `[services.NAME]` in file order (at least one).
    pub services: Vec<Service>,
    /// The file name the configuration was read from, used in diagnostics such as those of
    /// [`Config::check_fqdns`]. Not serialized.
    #[serde(skip)]
    pub origin: String,
}

/// `[tailscale]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tailscale {
    /// LocalAPI unix socket (default [`DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// MagicDNS suffix override such as `tailnet-1234.ts.net` (lowercase, no leading/trailing
    /// dot). Normally `None`: the suffix is read from tailscaled's status.
    pub magic_dns_suffix: Option<String>,
    /// Apply the Tailscale Services sync (`snirouter services sync`) when `run` starts
    /// (default `false`).
    pub manage_services: bool,
    /// `[tailscale.api]`: optional control-API credentials used to define the services
    /// (`None`: the admin-console steps are printed instead).
    pub api: Option<TailscaleApi>,
}

impl Default for Tailscale {
    fn default() -> Self {
        Tailscale { socket: PathBuf::from(DEFAULT_SOCKET), magic_dns_suffix: None, manage_services: false, api: None }
    }
}

/// Default control API base URL.
pub const DEFAULT_API_BASE_URL: &str = "https://api.tailscale.com";

/// `[tailscale.api]`: an OAuth client for the Tailscale control API (scope `services`,
/// plus `devices:core` to read the hosts). The secrets themselves stay in files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TailscaleApi {
    /// File holding the OAuth client id (surrounding whitespace ignored).
    pub client_id_file: PathBuf,
    /// File holding the OAuth client secret (surrounding whitespace ignored).
    pub client_secret_file: PathBuf,
    /// Tailnet name for API paths; `-` (the default) is the OAuth client's own tailnet.
    pub tailnet: String,
    /// API origin without trailing `/` (default [`DEFAULT_API_BASE_URL`]); `http://` only
    /// for loopback hosts (tests).
    pub base_url: String,
    /// Tags put on each service definition, each `tag:NAME` (default none).
    pub tags: Vec<String>,
}

/// `[listen]`. No address appears twice and no wildcard overlaps a specific address on the
/// same port (port 0 excepted). `https` and `proxy_protocol` are not both empty in a
/// validated config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listen {
    /// Plain TLS listeners.
    pub https: Vec<SocketAddr>,
    /// TLS listeners that require a PROXY protocol v2 header before the ClientHello.
    pub proxy_protocol: Vec<SocketAddr>,
    /// Plain-HTTP listeners that answer `308` redirects to `https://`.
    pub redirect_http: Vec<SocketAddr>,
    /// Peers whose PROXY headers `proxy_protocol` listeners accept (addresses or CIDR
    /// ranges); `None`: loopback only ([`Listen::LOOPBACK`]). A validated config never
    /// has `Some` of an empty list, nor a non-loopback `proxy_protocol` address with `None`.
    pub proxy_protocol_from: Option<Vec<IpNet>>,
    /// `trusted_proxies`: peers (the TCP peer, or the PROXY header's source) whose
    /// [`Listen::client_ip_headers`] name the real client, e.g. a tunnel on this host
    /// (`127.0.0.1/32`). Empty (the default): no header is ever believed. Never holds a
    /// range that trusts every address (`0.0.0.0/0`, `::/0`).
    pub trusted_proxies: Vec<IpNet>,
    /// `client_ip_headers`: the headers, in order, that a trusted proxy names the client
    /// in (lowercase; default `x-forwarded-for`). `forwarded` is read as RFC 7239 `for=`.
    pub client_ip_headers: Vec<String>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            https: Vec::new(),
            proxy_protocol: Vec::new(),
            redirect_http: Vec::new(),
            proxy_protocol_from: None,
            trusted_proxies: Vec::new(),
            client_ip_headers: vec![Listen::DEFAULT_CLIENT_IP_HEADER.to_owned()],
        }
    }
}

impl Listen {
    /// The header a trusted proxy names the client in unless `client_ip_headers` says
    /// otherwise.
    pub const DEFAULT_CLIENT_IP_HEADER: &'static str = "x-forwarded-for";

    /// Caddy's `private_ranges`: the networks that shorthand stands for.
    pub const PRIVATE_RANGES: [IpNet; 6] = [
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16)),
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12)),
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8)),
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8)),
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
    ];

    /// The default senders of PROXY headers: tailscaled's serve forwards from loopback.
    pub const LOOPBACK: [IpNet; 2] = [
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
    ];

    /// The peers `proxy_protocol` listeners take PROXY headers from.
    pub fn proxy_senders(&self) -> Vec<IpNet> {
        match &self.proxy_protocol_from {
            Some(nets) => nets.clone(),
            None => Self::LOOPBACK.to_vec(),
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cache {
    /// Certificate cache directory (default [`DEFAULT_CACHE_DIR`]).
    pub dir: PathBuf,
}

impl Default for Cache {
    fn default() -> Self {
        Cache { dir: PathBuf::from(DEFAULT_CACHE_DIR) }
    }
}

/// `[timeouts]`; every value is greater than zero. Serialized as strings like `"5s"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeouts {
    /// Reading the PROXY v2 header (default 5s).
    #[serde(serialize_with = "duration_str::serialize")]
    pub proxy_header: Duration,
    /// Completing the TLS handshake (default 10s).
    #[serde(serialize_with = "duration_str::serialize")]
    pub tls_handshake: Duration,
    /// Reading a request's header (default 30s).
    #[serde(serialize_with = "duration_str::serialize")]
    pub request_header: Duration,
    /// A client connection, or a request or response body, on which no byte moved for
    /// this long is closed (default 5m). A body may take as long in total as it keeps
    /// moving.
    #[serde(serialize_with = "duration_str::serialize")]
    pub idle: Duration,
    /// Connecting to an upstream (default 5s).
    #[serde(serialize_with = "duration_str::serialize")]
    pub upstream_connect: Duration,
    /// Waiting for an upstream's response header, counted from the moment the whole
    /// request body has been sent (default 5m: longer than the long-polls of Syncthing,
    /// SignalR and the like). An upload may take as long as it keeps moving.
    #[serde(serialize_with = "duration_str::serialize")]
    pub upstream_response: Duration,
    /// An upgraded connection (WebSocket) on which no byte moved for this long is
    /// closed; `None` (the default) never closes a tunnel for being quiet.
    #[serde(serialize_with = "duration_str::serialize_opt")]
    pub tunnel_idle: Option<Duration>,
    /// One certificate request to tailscaled; first issuance can take minutes (default 10m).
    #[serde(serialize_with = "duration_str::serialize")]
    pub cert_request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            proxy_header: Duration::from_secs(5),
            tls_handshake: Duration::from_secs(10),
            request_header: Duration::from_secs(30),
            idle: Duration::from_secs(5 * 60),
            upstream_connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(5 * 60),
            tunnel_idle: None,
            cert_request: Duration::from_secs(10 * 60),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Largest accepted request header, in bytes; within 1 KiB ..= 64 MiB (default 65536).
    pub max_header_bytes: usize,
    /// Concurrent client connections (default 20000, at least 1; an idle TLS
    /// connection costs about 16 KiB, see docs/reliability.md).
    pub max_connections: usize,
    /// Concurrent connections from one client address (the PROXY v2 source on
    /// `proxy_protocol` listeners); default 1024, at least 1.
    pub max_connections_per_client: usize,
    /// Requests in flight to one upstream address at once, across the whole router,
    /// i.e. the busy connections to it: an opt-in cap for upstreams that cannot take
    /// more. `None` (the default, like Caddy) never makes a request wait for another;
    /// when set (at least 1), more requests wait for a free connection for at most
    /// `timeouts.upstream_response`, then get a `504` naming this key.
    pub max_upstream_connections: Option<usize>,
    /// HTTP/2 streams one connection may have open at once (default 250, as Caddy
    /// and Go; 1 ..= 1000). Clients queue more until one ends.
    pub max_streams_per_connection: u32,
    /// Answer bytes one connection may hold that its client has not read yet (default
    /// 1 MiB): the connection's bodies wait for the client beyond it.
    pub buffer_per_connection: usize,
    /// The same across all connections of one client address, plus 128 KiB per request
    /// in flight (default 32 MiB; `trusted_proxies` peers have no limit of their own).
    pub buffer_per_client: usize,
    /// The same across the process (default 256 MiB); beyond it, connections holding
    /// more than 256 KiB wait, the others go on.
    pub buffer_total: usize,
}

/// Smallest accepted `limits.buffer_*` value.
pub(crate) const MIN_BUFFER_BYTES: usize = 64 * 1024;
/// Largest accepted `limits.buffer_*` value.
pub(crate) const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024 * 1024;
/// Largest accepted `limits.max_streams_per_connection`.
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// Smallest accepted `limits.max_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 1024;
/// Largest accepted `limits.max_header_bytes`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 65536,
            max_connections: 20_000,
            max_connections_per_client: 1024,
            max_upstream_connections: None,
            max_streams_per_connection: 250,
            buffer_per_connection: 1024 * 1024,
            buffer_per_client: 32 * 1024 * 1024,
            buffer_total: 256 * 1024 * 1024,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Log {
    /// Output format (default [`LogFormat::Auto`]).
    pub format: LogFormat,
    /// Level or `tracing` filter directive (default `"info"`; never empty).
    pub level: String,
    /// Access log for every service (one line per request); a service's `access_log`
    /// overrides it (default `false`).
    pub access: bool,
    /// `access_format`: how access lines are written (default [`AccessFormat::Json`]).
    pub access_format: AccessFormat,
    /// `access_file`: the file access lines are appended to (reopened on SIGUSR1 and
    /// reload, for logrotate); `None` (the default): standard error.
    pub access_file: Option<PathBuf>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Auto,
            level: "info".to_owned(),
            access: false,
            access_format: AccessFormat::Json,
            access_file: None,
        }
    }
}

/// `log.access_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// One JSON object per request, with Caddy's field names where one exists.
    #[default]
    Json,
    /// The combined log format of Apache and nginx (what log tools and fail2ban read).
    Combined,
}

impl AccessFormat {
    /// The names accepted in the config file.
    pub const NAMES: [&'static str; 2] = ["json", "combined"];

    /// Parses a config-file name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(AccessFormat::Json),
            "combined" => Some(AccessFormat::Combined),
            _ => None,
        }
    }
}

/// `[admin]`: the read-only admin socket (`snirouter status`, `/metrics`) and an optional
/// TCP listener that serves only `/metrics` (for Prometheus).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    /// Unix socket path (default [`DEFAULT_ADMIN_SOCKET`]); created mode 0660.
    pub socket: PathBuf,
    /// TCP address serving the read-only endpoints — `GET /metrics`, the status page
    /// `GET /` and `GET /status` — never reload (default none: no TCP admin port).
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { socket: PathBuf::from(DEFAULT_ADMIN_SOCKET), metrics_listen: None }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, logfmt otherwise (the CLI decides).
    #[default]
    Auto,
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
    /// `key=value` pairs.
    Logfmt,
}

impl LogFormat {
    /// The names accepted in the config file, in declaration order.
    pub const NAMES: [&'static str; 4] = ["auto", "human", "json", "logfmt"];

    /// Parses a config-file name (`"auto"`, `"human"`, `"json"`, `"logfmt"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(LogFormat::Auto),
            "human" => Some(LogFormat::Human),
            "json" => Some(LogFormat::Json),
            "logfmt" => Some(LogFormat::Logfmt),
            _ => None,
        }
    }

    /// The config-file name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Human => "human",
            LogFormat::Json => "json",
            LogFormat::Logfmt => "logfmt",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[defaults]`: settings inherited by every service that does not set its own.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Defaults {
    /// Forward authentication for every service except those with `bypass_auth = true`
    /// (and those with their own `forward_auth`).
    pub forward_auth: Option<ForwardAuth>,
    /// Custom error pages directory for every service without its own `error_pages`.
    pub error_pages: Option<PathBuf>,
    /// `error_pages_upstream` for every service without its own.
    pub error_pages_upstream: Option<Vec<u16>>,
    /// `request_headers` every service starts from.
    pub request_headers: HeaderRules,
    /// `response_headers` every service starts from.
    pub response_headers: HeaderRules,
}

/// `request_headers` / `response_headers`: header names (lowercase) removed, then
/// headers set (replacing any of that name). Names snirouter decides itself (`Host`,
/// framing, `Tailscale-*` identity) are refused when the file is read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HeaderRules {
    /// Removed.
    pub remove: Vec<String>,
    /// Set, in file order: `(name, value)`.
    pub set: Vec<(String, String)>,
}

impl HeaderRules {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }
}

/// `forward_auth = { url = "...", copy_headers = [...] }`: ask an authentication server
/// (Authelia, Authentik, …) about every request before it reaches the upstream, like
/// Caddy's `forward_auth` directive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardAuth {
    /// `http://` or `https://` URL with path and query, e.g.
    /// `http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/`.
    #[serde(serialize_with = "crate::units::display_str::serialize")]
    pub url: http::Uri,
    /// Response headers of a 2xx auth answer copied onto the upstream request, as
    /// written in the file (validated header names, no duplicates). Client-sent headers
    /// of these names are always removed.
    pub copy_headers: Vec<String>,
}

/// `cors = true` (with optional `cors_origins`).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Cors {
    /// Allowed origins (`scheme://host[:port]`, lowercase); empty = echo any origin.
    pub origins: Vec<String>,
}

impl Cors {
    /// Whether `origin` (as sent in the `Origin` header) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// `host:port` of a backend that is not an HTTP upstream: a `passthrough` target (the TLS
/// connection is forwarded untouched to a backend that terminates TLS itself, routed by
/// the ClientHello's SNI only) or a [`TcpPort`]'s target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPort {
    /// Lowercase host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (always explicit in the file).
    pub port: u16,
}

impl fmt::Display for HostPort {
    /// `host:port` (IPv6 hosts in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One entry of a service's `tcp` table: `22 = "127.0.0.1:2222"` or
/// `1883 = { to = "unix:/run/mosquitto.sock", proxy_protocol = 2 }`. tailscaled forwards the
/// Service's TCP port to `target` itself (`TCPForward` in its serve config); the router
/// only writes, heals and reports that handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpPort {
    /// The Service's port (1-65535, not 443, which is the router's).
    pub port: u16,
    /// Where tailscaled connects.
    pub target: TcpTarget,
    /// PROXY protocol version tailscaled sends first (1 or 2), `None` for none.
    pub proxy_protocol: Option<u8>,
}

impl TcpPort {
    /// The `TCPForward` value tailscaled expects: `host:port` or `unix:/path`.
    pub fn forward(&self) -> String {
        match &self.target {
            TcpTarget::Address(a) => a.to_string(),
            TcpTarget::Unix(path) => format!("unix:{}", path.display()),
        }
    }
}

/// Where tailscaled forwards a [`TcpPort`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpTarget {
    /// A TCP address on this host (or one tailscaled can reach).
    Address(HostPort),
    /// A unix socket (absolute path). tailscaled accepts such a handler only from root or
    /// its operator with `sudo` rights (the rule for `unix:` handlers).
    Unix(PathBuf),
}

/// `[services.NAME]`: one name served over HTTPS and routed to local backends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// The table key: a lowercase DNS label; also the Tailscale Service name `svc:NAME`.
    pub name: String,
    /// Explicit FQDN override (lowercase, no trailing dot, at least two labels).
    pub fqdn: Option<String>,
    /// `Host` header sent upstream; `None` forwards the client's `Host`.
    pub upstream_host: Option<String>,
    /// Routes sorted longest path first (`upstream = X` is one route with path `/`); no two
    /// with the same path; empty only for a [`Service::passthrough`] service.
    pub routes: Vec<Route>,
    /// Per-service access log switch; `None` follows `[log] access`.
    pub access_log: Option<bool>,
    /// Skip certificate verification of `https://` upstreams (self-signed backends).
    pub insecure_skip_verify: bool,
    /// The forward authentication in effect: the service's own, else `[defaults]`'s
    /// unless `bypass_auth`.
    pub forward_auth: Option<ForwardAuth>,
    /// `bypass_auth = true`: `[defaults] forward_auth` does not apply.
    pub bypass_auth: bool,
    /// CORS answers (`cors = true`).
    pub cors: Option<Cors>,
    /// Custom error pages directory in effect (the service's own, else `[defaults]`'s);
    /// an existing directory when validated.
    pub error_pages: Option<PathBuf>,
    /// `error_pages_upstream`: the upstream answer statuses that get the custom page
    /// (`None`: every status with a page); answers of snirouter itself always do.
    pub error_pages_upstream: Option<Vec<u16>>,
    /// Largest accepted request body in bytes (`None`: unlimited); larger ⇒ 413.
    pub max_body_bytes: Option<u64>,
    /// Send `Tailscale-User-*` identity headers from LocalAPI `whois`.
    pub tailscale_identity: bool,
    /// `allow`: only clients matching one of these may use the service (`None`: everyone
    /// who reaches it). Never empty when set.
    pub allow: Option<Vec<Principal>>,
    /// `deny`: clients matching one of these are refused before anything else, whatever
    /// `allow` and `forward_auth` say (default empty).
    pub deny: Vec<Principal>,
    /// `accept_app_caps`: application capabilities sent to the upstream in
    /// `Tailscale-App-Capabilities`, like `tailscale serve --accept-app-caps`.
    pub accept_app_caps: Vec<String>,
    /// TLS passthrough backend; when set, `routes` is empty and no certificate is needed.
    pub passthrough: Option<HostPort>,
    /// `tcp`: further TCP ports of the service's Tailscale Service, each forwarded by
    /// tailscaled straight to an app (never through the router), sorted by port; never 443.
    pub tcp: Vec<TcpPort>,
    /// `names`: further names the service answers to (lowercase), each under one of the
    /// [`Config::domains`], whose certificate it takes.
    pub names: Vec<String>,
    /// Headers removed from / set on the request sent upstream (`[defaults]`' merged in).
    pub request_headers: HeaderRules,
    /// Headers removed from / set on every answer of the service (`[defaults]`' merged in).
    pub response_headers: HeaderRules,
    /// 1-based line of the service's table header (or key) in the file; 0 if built by hand.
    pub line: usize,
}

impl Service {
    /// A plain service with `routes` and every option at its default (for tests and
    /// hand-built configs).
    pub fn new(name: &str, routes: Vec<Route>) -> Service {
        Service {
            name: name.to_owned(),
            fqdn: None,
            upstream_host: None,
            routes,
            access_log: None,
            insecure_skip_verify: false,
            forward_auth: None,
            bypass_auth: false,
            cors: None,
            error_pages: None,
            error_pages_upstream: None,
            max_body_bytes: None,
            tailscale_identity: false,
            allow: None,
            deny: Vec::new(),
            accept_app_caps: Vec::new(),
            passthrough: None,
            tcp: Vec::new(),
            names: Vec::new(),
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            line: 0,
        }
    }

    /// Whether the router needs a certificate for this service (not for passthrough).
    pub fn needs_certificate(&self) -> bool {
        self.passthrough.is_none()
    }

    /// The name this service answers to: the explicit `fqdn`, or `NAME.<magic_dns_suffix>`,
    /// lowercase and without leading/trailing dots on the suffix.
    pub fn fqdn(&self, magic_dns_suffix: &str) -> String {
        match &self.fqdn {
            Some(fqdn) => fqdn.to_ascii_lowercase(),
            None => {
                let suffix = magic_dns_suffix.trim_matches('.').to_ascii_lowercase();
                if suffix.is_empty() {
                    self.name.to_ascii_lowercase()
                } else {
                    format!("{}.{suffix}", self.name.to_ascii_lowercase())
                }
            }
        }
    }

    /// Whether requests to this service are access-logged under `log` settings.
    pub fn access_logged(&self, log: &Log) -> bool {
        self.access_log.unwrap_or(log.access)
    }

    /// Every name the service answers to: [`Service::fqdn`] first, then `names`.
    pub fn all_names(&self, magic_dns_suffix: &str) -> Vec<String> {
        std::iter::once(self.fqdn(magic_dns_suffix)).chain(self.names.iter().cloned()).collect()
    }

    /// The Tailscale Service name, `svc:NAME`.
    pub fn tailscale_service(&self) -> String {
        format!("svc:{}", self.name)
    }
}

/// `[domains."DOMAIN"]`: a domain (a public one, say) whose names take their certificate
/// from PEM files — NixOS `security.acme`, certbot, a wildcard — instead of tailscaled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Domain {
    /// The domain, lowercase (`example.com`); it covers itself and every name under it.
    pub name: String,
    /// The certificate chain, PEM, leaf first (`cert`, or `cert_dir`'s `fullchain.pem`).
    pub cert: PathBuf,
    /// The private key, PEM (`key`, or `cert_dir`'s `key.pem`).
    pub key: PathBuf,
    /// Forward authentication for the names under this domain, unless the service says
    /// `bypass_auth = true` or has forward_auth of its own (or from `[defaults]`).
    pub forward_auth: Option<ForwardAuth>,
    /// `apex_redirect`: where requests to the domain itself go (`https://www.example.com`,
    /// no trailing slash; the request's path and query are appended), when no service
    /// has the domain as a name.
    pub apex_redirect: Option<String>,
    /// 1-based line of the table header; 0 if built by hand.
    pub line: usize,
}

impl Domain {
    /// Whether `name` (lowercase) is this domain or under it.
    pub fn covers(&self, name: &str) -> bool {
        name == self.name || name.strip_suffix(self.name.as_str()).is_some_and(|head| head.ends_with('.'))
    }

    /// The longest of `domains` covering `name`.
    pub fn longest_for<'a>(domains: &'a [Domain], name: &str) -> Option<&'a Domain> {
        domains.iter().filter(|d| d.covers(name)).max_by_key(|d| d.name.len())
    }
}

impl Config {
    /// The domain whose certificate serves `name`: the longest one covering it.
    pub fn domain_for(&self, name: &str) -> Option<&Domain> {
        Domain::longest_for(&self.domains, name)
    }

    /// The forward authentication for requests to `service` under `name`: none with
    /// `bypass_auth`; else the service's own (or `[defaults]`'s); else, for a name under
    /// one of [`Config::domains`], that domain's.
    pub fn forward_auth_for<'a>(&'a self, service: &'a Service, name: &str) -> Option<&'a ForwardAuth> {
        if service.bypass_auth || service.passthrough.is_some() {
            return None;
        }
        service.forward_auth.as_ref().or_else(|| self.domain_for(name)?.forward_auth.as_ref())
    }
}

/// One `allow` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Principal {
    /// `alice@example.com`: that user's devices (login compared without case).
    User(String),
    /// `*@example.com`: every user whose login is at that domain.
    Domain(String),
    /// `tag:monitoring`: tagged nodes carrying that tag.
    Tag(String),
    /// `cap:example.com/cap/grafana`: clients the tailnet policy grants that application
    /// capability toward this service (`whois` with `svc_name=svc:NAME`).
    Capability(String),
    /// `*`: every node tailscaled identifies, users' and tagged.
    AnyNode,
    /// `local`: a client on this host acting for itself — a loopback source address,
    /// e.g. through the hairpin listener — never a request relayed by a proxy (one that
    /// carries a forwarding header such as `X-Forwarded-For`).
    Local,
    /// `192.168.1.0/24`, `fd00::/8`, `203.0.113.7`: clients whose real address (after
    /// `trusted_proxies`) is in that network.
    Network(IpNet),
}

impl fmt::Display for Principal {
    /// The entry as it is written in the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(login) => f.write_str(login),
            Principal::Domain(domain) => write!(f, "*@{domain}"),
            Principal::Tag(tag) => f.write_str(tag),
            Principal::Capability(cap) => write!(f, "cap:{cap}"),
            Principal::AnyNode => f.write_str("*"),
            Principal::Local => f.write_str("local"),
            Principal::Network(net) => write!(f, "{net}"),
        }
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.to_string()
    }
}

/// One `path -> upstream` route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Starts with `/`; no trailing `/` except for the root `/`; no `?`, `#` or `//`.
    pub path: String,
    /// Where matching requests go.
    pub upstream: Upstream,
    /// Remove `path` from the request path before forwarding (default `false`).
    pub strip_prefix: bool,
}

impl Route {
    /// True when `request_path` is `path` or lies below it on a segment boundary.
    pub fn matches(&self, request_path: &str) -> bool {
        if self.path == "/" {
            return true;
        }
        match request_path.strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
            None => false,
        }
    }
}

/// Upstream URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS; the backend's certificate is verified against the Mozilla roots
    /// unless the service sets `insecure_skip_verify`.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 for http, 443 for https.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A backend origin: `http://host:port` or `https://host:port`, no path, no query, no
/// userinfo.
///
/// Serialized as its display string, e.g. `"http://127.0.0.1:3000"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port` with the port always explicit (IPv6 hosts in brackets: `[::1]:8080`).
    pub authority: http::uri::Authority,
    /// Lowercase host name or IP address, IPv6 *without* brackets (ready for `connect((host, port))`).
    pub host: String,
    /// Port; 80 (http) or 443 (https) when the URL has none.
    pub port: u16,
}

impl fmt::Display for Upstream {
    /// `scheme://host:port` (IPv6 hosts in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme.as_str(), self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

impl Serialize for Upstream {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}
