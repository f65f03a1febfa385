//! The admin socket's `GET /status` document (schema 1). `snirouter status --json`
//! prints exactly this; the schema is documented in `docs/operations.md`. Fields are
//! only ever added, never renamed or removed, within one `schema` number.

use serde::{Deserialize, Serialize};

/// The schema number of [`StatusReport`].
pub const SCHEMA: u32 = 1;

/// The whole state of a running router.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// snirouter version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Unix seconds when the process started.
    pub started_at: u64,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// The config file being served.
    pub config: String,
    /// The tailnet's MagicDNS suffix names are built from; empty while tailscaled has not
    /// told it yet (the tailnet names wait, the public names serve).
    pub magic_dns_suffix: String,
    /// Bound TLS listeners.
    pub listeners: Vec<ListenerInfo>,
    /// Client connections open now, WebSocket tunnels included.
    pub active_connections: u64,
    /// WebSocket (upgraded) tunnels open now.
    #[serde(default)]
    pub tunnels: u64,
    /// tailscaled's `CertDomains` as last read (`null` when unknown).
    pub cert_domains: Option<Vec<String>>,
    /// Why `cert_domains` is unknown.
    pub cert_domains_error: Option<String>,
    /// tailscaled's health warnings (its `status` `Health`), e.g. `Fetching TLS certificate
    /// via ACME for: grafana.TAILNET.ts.net` while a first certificate is issued; empty when
    /// healthy or when tailscaled did not answer within 2 s.
    #[serde(default)]
    pub tailscaled_health: Vec<String>,
    /// The last reload, if any.
    pub last_reload: Option<LastReload>,
    /// Something else changed tailscaled's serve config or advertisement and a sync put
    /// back what snirouter owns: how often (across restarts), when last, what (`null`: never).
    #[serde(default)]
    pub services_drift: Option<snirouter_services::Drift>,
    /// True when every service is serving.
    pub serving: bool,
    /// One entry per configured service, in config-file order.
    pub services: Vec<ServiceStatus>,
}

/// One listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// `tls` or `proxy_protocol`.
    pub kind: String,
    /// The bound address.
    pub address: String,
}

/// One service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name (`grafana`).
    pub name: String,
    /// The name clients use (`grafana.TAILNET.ts.net`).
    pub fqdn: String,
    /// True when it has a certificate and no upstream is known to be down.
    pub serving: bool,
    /// Why it is not serving (empty when serving).
    pub problems: Vec<String>,
    /// Routes, longest path first, with upstream reachability.
    pub routes: Vec<RouteStatus>,
    /// The certificate being served, `null` when there is none.
    pub certificate: Option<CertificateInfo>,
    /// Certificate fetching state.
    pub fetch: FetchInfo,
    /// Whether the FQDN is in tailscaled's `CertDomains` (`null` when unknown).
    pub in_cert_domains: Option<bool>,
    /// Requests since start (kept across reloads).
    pub requests: RequestCounts,
    /// Whether requests are access-logged.
    pub access_log: bool,
    /// `allow` as written (who may use the service); `null` when everyone who reaches
    /// it may.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// The service's further names (`names`, under a `[domains]` entry), each with the
    /// certificate its domain's files give it.
    #[serde(default)]
    pub names: Vec<NameStatus>,
    /// Requests and 5xx answers per interval over the last minutes (the status page).
    #[serde(default)]
    pub history: RateHistory,
    /// Tailscale Service state from `snirouter_services::observe`: `service` (`svc:NAME`),
    /// `defined` (control API; `null` without `[tailscale.api]`), `approval_level`,
    /// `advertised`, `handler` (`{"state": "correct"|"missing"|"outdated"|"foreign"|"unknown"}`),
    /// `managed`, `approved`, `vips`, `in_cert_domains`, `certificate`, `problems`.
    /// `null` when it could not be observed within 5 s.
    pub tailscale_service: Option<serde_json::Value>,
}

/// One further name of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameStatus {
    /// `grafana.example.com`.
    pub fqdn: String,
    /// The domain whose files serve it.
    pub domain: String,
    /// The certificate being served, `null` when there is none.
    pub certificate: Option<CertificateInfo>,
    /// Why the files were not used the last time they were read (the last good
    /// certificate keeps serving), with the fix.
    pub error: Option<String>,
    /// How to fix `error`.
    pub fix: Option<String>,
}

/// One route and its upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Path prefix.
    pub path: String,
    /// `http://host:port`.
    pub upstream: String,
    /// TCP connect result; `null` until first checked.
    pub reachable: Option<bool>,
    /// Unix seconds of the last check.
    pub checked_at: Option<u64>,
    /// Why the connect failed.
    pub error: Option<String>,
}

/// The served certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Leaf notBefore, unix seconds.
    pub not_before: u64,
    /// Leaf notAfter, unix seconds.
    pub not_after: u64,
    /// Seconds until notAfter (negative when expired).
    pub expires_in_seconds: i64,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, hex.
    pub serial: String,
    /// `tailscaled` (fetched by this process), `cache` (loaded from disk at start) or
    /// `file` (a `[domains]` entry's files).
    pub source: String,
}

/// Fetch state of the certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchInfo {
    /// A request to tailscaled is in flight.
    pub in_flight: bool,
    /// Consecutive failures.
    pub failures: u32,
    /// Failures since start.
    pub total_failures: u64,
    /// Unix seconds of the last request.
    pub last_attempt: Option<u64>,
    /// Unix seconds of the last success.
    pub last_success: Option<u64>,
    /// Unix seconds of the next planned request.
    pub next_attempt: Option<u64>,
    /// Machine-readable class of the last error (`not_in_cert_domains`, `cert_access_denied`, …).
    pub last_error_kind: Option<String>,
    /// The last error, with tailscaled's own text.
    pub last_error: Option<String>,
    /// How to fix it.
    pub fix: Option<String>,
}

/// Request counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Requests received.
    pub requests: u64,
    /// 2xx (and 101) answers.
    pub responses_2xx: u64,
    /// 3xx answers.
    pub responses_3xx: u64,
    /// 4xx answers.
    pub responses_4xx: u64,
    /// 5xx answers.
    pub responses_5xx: u64,
    /// Upstream connect failures, timeouts and stalled response bodies.
    pub upstream_errors: u64,
    /// WebSocket (upgraded) tunnels open now.
    #[serde(default)]
    pub tunnels: u64,
}

/// The outcome of the last reload, for `snirouter status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastReload {
    /// When it ran (unix seconds).
    pub at: u64,
    /// Whether the new configuration is serving.
    pub ok: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// A service's requests and 5xx answers per interval, oldest first (`crate::history`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RateHistory {
    /// Length of one interval.
    pub interval_seconds: u64,
    /// Intervals kept at most (the chart's width).
    pub capacity: usize,
    /// Requests received in each interval.
    pub requests: Vec<u64>,
    /// 5xx answers in each interval.
    pub errors: Vec<u64>,
}

/// `37d`, `5h`, `12m`, `expired`.
pub fn human_duration(secs: i64) -> String {
    if secs <= 0 {
        return "expired".to_owned();
    }
    match secs {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `5m ago`, `in 2h`, `-` for a unix time (`now` in unix seconds too).
pub fn ago(now: u64, t: Option<u64>) -> String {
    match t {
        None => "-".to_owned(),
        Some(t) if t <= now => format!("{} ago", human_duration((now - t).max(1) as i64)),
        Some(t) => format!("in {}", human_duration((t - now).max(1) as i64)),
    }
}
