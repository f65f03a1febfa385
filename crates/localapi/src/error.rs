//! Typed errors for every way a LocalAPI call can fail, and the classification of
//! tailscaled's answers (status code + Go `http.Error` body) into them.
//!
//! Each [`Error`] has a [`Display`](std::fmt::Display) naming the cause, a [`Error::fix`]
//! telling the operator what to do, a [`Error::kind`] for metrics, and
//! [`Error::retry_after`] when the daemon said when to come back.

use crate::go_quote::first_go_quoted;
pub use crate::go_quote::parse_go_string_list;
pub use crate::retry_after::parse_retry_after;
use crate::user::current_user;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong talking to tailscaled's LocalAPI.
///
/// Cheap to clone (the transport source error is behind an [`Arc`]), so one result can be
/// handed to several waiters.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket path does not exist (`ENOENT`/`ENOTDIR` on connect).
    #[error("tailscaled socket {} does not exist", path.display())]
    SocketMissing {
        /// The socket path that was tried.
        path: PathBuf,
    },

    /// The path exists but nobody listens on it (`ECONNREFUSED`): a stale socket, or a
    /// path that is not a socket at all.
    #[error("{}", refused_text(path, *not_a_socket))]
    SocketRefused {
        /// The socket path that was tried.
        path: PathBuf,
        /// What the path is instead of a socket ("a directory", "a regular file"), if so.
        not_a_socket: Option<&'static str>,
    },

    /// This process may not connect to the socket (`EACCES`/`EPERM`).
    #[error("permission denied connecting to tailscaled socket {} as {}", path.display(), current_user().label())]
    SocketPermission {
        /// The socket path that was tried.
        path: PathBuf,
    },

    /// Another I/O error while connecting to the socket.
    #[error("I/O error ({kind:?}) connecting to tailscaled socket {}: {detail}", path.display())]
    Io {
        /// The socket path that was tried.
        path: PathBuf,
        /// The `std::io::ErrorKind` found in the error chain.
        kind: io::ErrorKind,
        /// The innermost error text.
        detail: String,
        /// The original transport error.
        #[source]
        source: Arc<reqwest::Error>,
    },

    /// An HTTP-level transport failure (connection reset mid-response, malformed HTTP, ...).
    #[error("transport error during {what}: {detail}")]
    Transport {
        /// The request, e.g. `GET /localapi/v0/status`.
        what: String,
        /// The whole error chain as text.
        detail: String,
        /// The original transport error.
        #[source]
        source: Arc<reqwest::Error>,
    },

    /// The call did not finish within its deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The request, e.g. `GET /localapi/v0/cert/grafana.x.ts.net`.
        what: String,
        /// The deadline that elapsed.
        after: Duration,
    },

    /// 403 on `/cert/`: this process's uid is neither root, the operator, nor `TS_PERMIT_CERT_UID`.
    #[error("tailscaled refused to give certificates to this process ({}): {body}", current_user().label())]
    CertAccessDenied {
        /// The daemon's message, e.g. `cert access denied`.
        body: String,
    },

    /// Any other 403.
    #[error("tailscaled denied access to {endpoint}: {body}{}", bad_host_hint(body))]
    AccessDenied {
        /// The LocalAPI endpoint, e.g. `serve-config`.
        endpoint: String,
        /// The daemon's message.
        body: String,
    },

    /// The name is not in this node's `CertDomains`.
    #[error(
        "tailscaled may not get a certificate for {domain}: it is not in this node's CertDomains [{}]",
        allowed.join(", ")
    )]
    NotInCertDomains {
        /// The requested name.
        domain: String,
        /// The names the node may get certificates for, as reported by tailscaled.
        allowed: Vec<String>,
    },

    /// The tailnet has no `CertDomains` at all: HTTPS certificates or MagicDNS are disabled.
    #[error(
        "HTTPS certificates are not available for this tailnet (tailscaled: your Tailscale account does not support getting TLS certs)"
    )]
    HttpsDisabled,

    /// tailscaled has no network map: not logged in, or still starting.
    #[error("tailscaled has no network map (not logged in, or still starting)")]
    NoNetmap,

    /// The name is syntactically not a valid certificate domain.
    #[error("invalid certificate domain {domain:?}")]
    InvalidDomain {
        /// The requested name.
        domain: String,
    },

    /// A `*.` name was requested but wildcard certificates are not enabled for the node/domain.
    #[error("wildcard certificates are not enabled for this node or domain")]
    WildcardNotEnabled,

    /// The control plane refused to publish the ACME DNS-01 TXT record (usually transient).
    #[error("the Tailscale control plane refused the ACME DNS-01 record: {body}")]
    SetDnsFailed {
        /// The daemon's message.
        body: String,
    },

    /// tailscaled cannot write (or is configured not to write) its certificate store.
    #[error("tailscaled's certificate store is not writable: {body}")]
    CertStoreReadOnly {
        /// The daemon's message.
        body: String,
    },

    /// Let's Encrypt rate limit (429 from tailscaled ≥ 1.102, or a 500 quoting the ACME error).
    #[error("Let's Encrypt rate limit reached ({}): {body}", match retry_after { Some(d) => format!("retry after {d:?}"), None => "no retry time given".to_owned() })]
    RateLimited {
        /// From the `Retry-After` header, if any.
        retry_after: Option<Duration>,
        /// The daemon's message.
        body: String,
    },

    /// The endpoint does not exist in this daemon (404), or the build lacks the feature.
    #[error("tailscaled does not support {endpoint} (daemon too old, or built without this feature)")]
    NotSupported {
        /// The LocalAPI endpoint, e.g. `cert-domains`.
        endpoint: String,
    },

    /// 412: the serve config changed since it was read (ETag mismatch).
    #[error("the serve config was changed concurrently (ETag mismatch, HTTP 412)")]
    PreconditionFailed,

    /// 401 on a serve-config write: the config holds a `Path` handler or a `unix:` target,
    /// which tailscaled lets only root, or an operator allowed to run `sudo tailscale`, write.
    #[error(
        "tailscaled refused the serve config from {}: it holds a Path handler or a unix: target, which only root \
         or an operator allowed to run `sudo tailscale` may write (tailscaled: {body})",
        current_user().label()
    )]
    ServeNeedsAdmin {
        /// The daemon's message.
        body: String,
    },

    /// tailscaled runs from a config file and refuses runtime reconfiguration.
    #[error("tailscaled runs from a locked config file and refuses runtime reconfiguration")]
    ConfigLocked,

    /// Any other non-success answer; `body` is the daemon's message verbatim (trimmed).
    #[error("tailscaled answered HTTP {status}: {body}")]
    Daemon {
        /// HTTP status code.
        status: u16,
        /// The daemon's message.
        body: String,
    },

    /// A success answer whose body could not be parsed.
    #[error("unexpected answer from tailscaled: expected {what}: {detail}")]
    BadResponse {
        /// What was expected, e.g. `status JSON`.
        what: String,
        /// Why it did not parse.
        detail: String,
    },
}

/// A flat, `Copy` classification of [`Error`] for metrics labels and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::SocketMissing`]
    SocketMissing,
    /// [`Error::SocketRefused`]
    SocketRefused,
    /// [`Error::SocketPermission`]
    SocketPermission,
    /// [`Error::Io`]
    Io,
    /// [`Error::Transport`]
    Transport,
    /// [`Error::Timeout`]
    Timeout,
    /// [`Error::CertAccessDenied`]
    CertAccessDenied,
    /// [`Error::AccessDenied`]
    AccessDenied,
    /// [`Error::NotInCertDomains`]
    NotInCertDomains,
    /// [`Error::HttpsDisabled`]
    HttpsDisabled,
    /// [`Error::NoNetmap`]
    NoNetmap,
    /// [`Error::InvalidDomain`]
    InvalidDomain,
    /// [`Error::WildcardNotEnabled`]
    WildcardNotEnabled,
    /// [`Error::SetDnsFailed`]
    SetDnsFailed,
    /// [`Error::CertStoreReadOnly`]
    CertStoreReadOnly,
    /// [`Error::RateLimited`]
    RateLimited,
    /// [`Error::NotSupported`]
    NotSupported,
    /// [`Error::PreconditionFailed`]
    PreconditionFailed,
    /// [`Error::ServeNeedsAdmin`]
    ServeNeedsAdmin,
    /// [`Error::ConfigLocked`]
    ConfigLocked,
    /// [`Error::Daemon`]
    Daemon,
    /// [`Error::BadResponse`]
    BadResponse,
}

impl ErrorKind {
    /// A stable snake_case label, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::SocketMissing => "socket_missing",
            ErrorKind::SocketRefused => "socket_refused",
            ErrorKind::SocketPermission => "socket_permission",
            ErrorKind::Io => "io",
            ErrorKind::Transport => "transport",
            ErrorKind::Timeout => "timeout",
            ErrorKind::CertAccessDenied => "cert_access_denied",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::NotInCertDomains => "not_in_cert_domains",
            ErrorKind::HttpsDisabled => "https_disabled",
            ErrorKind::NoNetmap => "no_netmap",
            ErrorKind::InvalidDomain => "invalid_domain",
            ErrorKind::WildcardNotEnabled => "wildcard_not_enabled",
            ErrorKind::SetDnsFailed => "set_dns_failed",
            ErrorKind::CertStoreReadOnly => "cert_store_read_only",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::NotSupported => "not_supported",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::ServeNeedsAdmin => "serve_needs_admin",
            ErrorKind::ConfigLocked => "config_locked",
            ErrorKind::Daemon => "daemon",
            ErrorKind::BadResponse => "bad_response",
        }
    }

    /// Whether retrying the same call later may succeed without anyone changing configuration
    /// (daemon restarting, control-plane hiccup, rate limit window, timeouts).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::SocketMissing
                | ErrorKind::SocketRefused
                | ErrorKind::Io
                | ErrorKind::Transport
                | ErrorKind::Timeout
                | ErrorKind::NoNetmap
                | ErrorKind::SetDnsFailed
                | ErrorKind::RateLimited
                | ErrorKind::PreconditionFailed
                | ErrorKind::Daemon
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The flat classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::SocketMissing { .. } => ErrorKind::SocketMissing,
            Error::SocketRefused { .. } => ErrorKind::SocketRefused,
            Error::SocketPermission { .. } => ErrorKind::SocketPermission,
            Error::Io { .. } => ErrorKind::Io,
            Error::Transport { .. } => ErrorKind::Transport,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::CertAccessDenied { .. } => ErrorKind::CertAccessDenied,
            Error::AccessDenied { .. } => ErrorKind::AccessDenied,
            Error::NotInCertDomains { .. } => ErrorKind::NotInCertDomains,
            Error::HttpsDisabled => ErrorKind::HttpsDisabled,
            Error::NoNetmap => ErrorKind::NoNetmap,
            Error::InvalidDomain { .. } => ErrorKind::InvalidDomain,
            Error::WildcardNotEnabled => ErrorKind::WildcardNotEnabled,
            Error::SetDnsFailed { .. } => ErrorKind::SetDnsFailed,
            Error::CertStoreReadOnly { .. } => ErrorKind::CertStoreReadOnly,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::NotSupported { .. } => ErrorKind::NotSupported,
            Error::PreconditionFailed => ErrorKind::PreconditionFailed,
            Error::ServeNeedsAdmin { .. } => ErrorKind::ServeNeedsAdmin,
            Error::ConfigLocked => ErrorKind::ConfigLocked,
            Error::Daemon { .. } => ErrorKind::Daemon,
            Error::BadResponse { .. } => ErrorKind::BadResponse,
        }
    }

    /// How long tailscaled asked us to wait before retrying (only [`Error::RateLimited`] with a
    /// `Retry-After` header carries one). `None` means "no explicit hint", not "retry now".
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What the operator should do about it, in one or two lines; `None` when there is no
    /// better advice than the message itself (transport errors, the daemon's own texts).
    pub fn fix(&self) -> Option<String> {
        let user = current_user().name_or_uid();
        self.connection_fix(&user).or_else(|| self.certificate_fix(&user)).or_else(|| self.daemon_fix(&user))
    }

    /// Fixes for reaching tailscaled: the socket, its permissions, time-outs, write access.
    fn connection_fix(&self, user: &str) -> Option<String> {
        Some(match self {
            Error::SocketMissing { path } => format!(
                "tailscaled is not running or uses another socket than {}; start it (systemctl start tailscaled) \
                 or set [tailscale] socket = \"/path/to/tailscaled.sock\" in the snirouter config",
                path.display()
            ),
            Error::SocketRefused { path, not_a_socket: Some(_) } => format!(
                "set [tailscale] socket to tailscaled's socket instead of {} (by default \
                 /run/tailscale/tailscaled.sock; tailscaled's --socket flag says where it is)",
                path.display()
            ),
            Error::SocketRefused { path, not_a_socket: None } => format!(
                "{} is a stale socket (tailscaled crashed or is restarting); restart tailscaled \
                 (systemctl restart tailscaled) or point [tailscale] socket at the live socket",
                path.display()
            ),
            Error::SocketPermission { path } => format!(
                "user {user} may not connect to {}; check the permissions of the socket and its directory \
                 (tailscaled creates it 0666 in a 0755 directory) or run snirouter as root",
                path.display()
            ),
            Error::Io { path, .. } => format!(
                "check that {} is tailscaled's socket ([tailscale] socket = ...) and that tailscaled is healthy",
                path.display()
            ),
            Error::Timeout { .. } => {
                "tailscaled did not answer in time; a first certificate issuance can take minutes \
                 (ACME DNS-01 via the control plane): retry later with a longer timeout and check tailscaled's logs \
                 (journalctl -u tailscaled)"
                    .to_owned()
            }
            Error::AccessDenied { body, .. } => {
                if is_bad_host_body(body) {
                    "tailscaled rejects requests whose Host header is not exactly local-tailscaled.sock or that \
                     carry Origin/Referer: check that nothing (a proxy, a wrapper) rewrites the request"
                        .to_owned()
                } else {
                    format!(
                        "this call needs write access to tailscaled, which only root and tailscaled's operator have: \
                         run `snirouter services sync` as root and leave [tailscale] manage_services off (the NixOS \
                         module does this before every start with manageServices = true; a systemd unit can with \
                         ExecStartPre=-+/usr/local/bin/snirouter services sync --config /etc/snirouter/config.toml), \
                         or make {user} the operator (tailscale set --operator={user}; it may then change every \
                         tailscaled setting)"
                    )
                }
            }
            _ => return None,
        })
    }

    /// Fixes for certificate requests: access, CertDomains, HTTPS, Let's Encrypt.
    fn certificate_fix(&self, user: &str) -> Option<String> {
        Some(match self {
            Error::CertAccessDenied { .. } => format!(
                "run snirouter as root, or set TS_PERMIT_CERT_UID={user} for tailscaled (NixOS: \
                 services.tailscale.permitCertUid = \"{user}\") and restart tailscaled"
            ),
            Error::NotInCertDomains { domain, allowed } => format!(
                "the host is not allowed to get a certificate for {domain}: make {domain} a Tailscale Service \
                 hosted by this node (define svc:{}, advertise it, approve the host) — allowed names now: {}",
                domain.split('.').next().unwrap_or(domain),
                if allowed.is_empty() { "(none)".to_owned() } else { allowed.join(", ") }
            ),
            Error::HttpsDisabled => "enable MagicDNS and HTTPS Certificates in the Tailscale admin console \
                 (DNS page: https://login.tailscale.com/admin/dns)"
                .to_owned(),
            Error::NoNetmap => "tailscaled is not logged in or still starting: run `tailscale up` and check \
                 `tailscale status`"
                .to_owned(),
            Error::InvalidDomain { .. } => "request a full MagicDNS name from CertDomains, e.g. \
                 NAME.TAILNET.ts.net (no port, slash, scheme or empty label)"
                .to_owned(),
            Error::WildcardNotEnabled => "request an exact name listed in CertDomains; wildcard certificates need \
                 the node capability dns-subdomain-resolve and the base name in CertDomains"
                .to_owned(),
            Error::SetDnsFailed { .. } => "the Tailscale control plane could not create the ACME TXT record; this is \
                 usually transient — retry later, not in a tight loop (every attempt is a Let's Encrypt order)"
                .to_owned(),
            Error::CertStoreReadOnly { .. } => "make tailscaled's state directory writable \
                 (/var/lib/tailscale/certs), or turn off its read-only cert-store mode, then retry"
                .to_owned(),
            Error::RateLimited { retry_after, .. } => format!(
                "Let's Encrypt limits ts.net tailnets to 50 new names and 5 certificates per exact name per week: \
                 keep serving the cached certificate and retry {}; never wipe tailscaled's cert store",
                match retry_after {
                    Some(d) => format!("in {d:?}"),
                    None => "after the limit window (up to 7 days)".to_owned(),
                }
            ),
            Error::NotSupported { endpoint } => format!(
                "upgrade tailscaled (cert-domains needs ≥ 1.98, min_validity ≥ 1.72) or use a build with \
                 ACME/cert support; endpoint: {endpoint}"
            ),
            _ => return None,
        })
    }

    /// Fixes for serve-config and prefs writes, and for answers of the wrong shape.
    fn daemon_fix(&self, user: &str) -> Option<String> {
        Some(match self {
            Error::PreconditionFailed => "another client changed the serve config at the same time: read it \
                 again, re-apply the change and retry"
                .to_owned(),
            Error::ServeNeedsAdmin { .. } => format!(
                "snirouter writes the whole serve config back, including the Path or unix: handlers another tool \
                 (tailscale serve) added: run this once as root (sudo snirouter services sync), or let {user} run \
                 `sudo tailscale` (NixOS: security.sudo.extraRules), or serve those handlers without Path/unix: \
                 (e.g. proxy to a local HTTP server)"
            ),
            Error::ConfigLocked => "tailscaled was started with --config: put the serve config / prefs into that \
                 file instead of changing them at runtime"
                .to_owned(),
            Error::BadResponse { .. } => "tailscaled answered in an unexpected format; check its version \
                 (tailscale version) and that the socket really belongs to tailscaled"
                .to_owned(),
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Classification of daemon answers
// ---------------------------------------------------------------------------------------------

/// Maximum number of characters of a daemon body kept in an error.
const MAX_BODY_CHARS: usize = 4096;

/// Extracts the human message from a LocalAPI error body: Go `http.Error` text (trimmed) or a
/// JSON object with the message under `error` (serve-config's `WriteErrorJSON`) or `Error`
/// (prefs' `resJSON`); like Go's client, the key is matched without regard to case.
pub(crate) fn message_from_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(trimmed)
        && let Some(serde_json::Value::String(msg)) =
            obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("error")).map(|(_, v)| v)
    {
        return truncate(msg.trim());
    }
    truncate(trimmed)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_BODY_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_BODY_CHARS).collect();
        out.push('…');
        out
    }
}

const BAD_HOST_BODY: &str = "invalid localapi request";

fn is_bad_host_body(body: &str) -> bool {
    body.contains(BAD_HOST_BODY)
}

fn bad_host_hint(body: &str) -> &'static str {
    if is_bad_host_body(body) {
        " (tailscaled rejected the request itself: the Host header must be exactly local-tailscaled.sock, \
         without Origin or Referer headers)"
    } else {
        ""
    }
}

/// Turns a non-success LocalAPI answer into a typed [`Error`].
///
/// * `endpoint` — the path below `/localapi/v0/` without query, e.g. `cert/x.ts.net` or `status`;
/// * `domain` — the certificate name that was requested, for `/cert/` calls;
/// * `retry_after_header` — the raw `Retry-After` header, if present.
pub(crate) fn classify(
    endpoint: &str,
    domain: Option<&str>,
    status: u16,
    retry_after_header: Option<&str>,
    body: &[u8],
) -> Error {
    let msg = message_from_body(body);
    let is_cert = endpoint.starts_with("cert/");

    match status {
        412 => return Error::PreconditionFailed,
        429 => {
            return Error::RateLimited { retry_after: retry_after_header.and_then(parse_retry_after), body: msg };
        }
        403 => {
            if is_cert && !is_bad_host_body(&msg) {
                return Error::CertAccessDenied { body: msg };
            }
            return Error::AccessDenied { endpoint: endpoint.to_owned(), body: msg };
        }
        401 if msg.contains("to serve a path or Unix socket") => return Error::ServeNeedsAdmin { body: msg },
        404 => {
            // Go's http.NotFound: unknown route => old daemon / feature not compiled in.
            return Error::NotSupported { endpoint: endpoint.to_owned() };
        }
        _ => {}
    }

    // Body-text classification (tailscaled answers most cert failures with a lazy 500).
    if msg.contains("urn:ietf:params:acme:error:rateLimited") {
        return Error::RateLimited { retry_after: retry_after_header.and_then(parse_retry_after), body: msg };
    }
    if msg.contains("config file is locked") {
        return Error::ConfigLocked;
    }
    if msg.contains("your Tailscale account does not support getting TLS certs") {
        return Error::HttpsDisabled;
    }
    if msg.contains("no netmap available") || msg == "no netmap" {
        return Error::NoNetmap;
    }
    if msg.contains("wildcard certificates are not enabled") {
        return Error::WildcardNotEnabled;
    }
    if let Some(err) = parse_not_in_cert_domains(&msg, domain) {
        return err;
    }
    if msg == "invalid domain" || msg.starts_with("invalid domain ") || msg.starts_with("invalid domain:") {
        return Error::InvalidDomain {
            domain: domain.map(str::to_owned).or_else(|| first_go_quoted(&msg)).unwrap_or_default(),
        };
    }
    if msg.starts_with("SetDNS ") || msg.contains("set-dns response") || msg.contains("SetDNS \"_acme-challenge.") {
        return Error::SetDnsFailed { body: msg };
    }
    if msg.contains("read-only file system") || msg.contains("configured in read-only mode") {
        return Error::CertStoreReadOnly { body: msg };
    }
    if msg.contains("cert support not compiled in this build") || msg.contains("not compiled in") {
        return Error::NotSupported { endpoint: endpoint.to_owned() };
    }
    Error::Daemon { status, body: msg }
}

/// Parses `invalid domain "X"; must be one of ["a" "b"]`.
fn parse_not_in_cert_domains(msg: &str, requested: Option<&str>) -> Option<Error> {
    let idx = msg.find("must be one of")?;
    let head = &msg[..idx];
    let domain = first_go_quoted(head).or_else(|| requested.map(str::to_owned)).unwrap_or_default();
    let rest = msg[idx + "must be one of".len()..].trim_start();
    let allowed = parse_go_string_list(rest).unwrap_or_default();
    Some(Error::NotInCertDomains { domain, allowed })
}

// ---------------------------------------------------------------------------------------------
// Transport error classification
// ---------------------------------------------------------------------------------------------

/// Classifies a reqwest error by walking its `source()` chain for an `io::Error`.
pub(crate) fn from_transport(err: reqwest::Error, socket: &Path, what: &str, timeout: Option<Duration>) -> Error {
    let io_kind = find_io_kind(&err);
    if let Some(kind) = io_kind
        && let Some(e) = socket_error_for_kind(kind, socket)
    {
        return e;
    }
    if err.is_timeout() {
        return Error::Timeout { what: what.to_owned(), after: timeout.unwrap_or_default() };
    }
    let detail = chain_text(&err);
    match io_kind {
        Some(kind) if err.is_connect() => Error::Io { path: socket.to_path_buf(), kind, detail, source: Arc::new(err) },
        _ => Error::Transport { what: what.to_owned(), detail, source: Arc::new(err) },
    }
}

/// `connect(2)` to a path that is not a socket also answers `ECONNREFUSED`: what it is
/// instead, when it exists and is not a socket.
fn not_a_socket(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    match () {
        () if kind.is_socket() => None,
        () if kind.is_dir() => Some("a directory"),
        () if kind.is_file() => Some("a regular file"),
        () => Some("not a socket"),
    }
}

fn refused_text(path: &Path, not_a_socket: Option<&str>) -> String {
    match not_a_socket {
        Some(what) => format!("tailscaled socket {} is {what}, not a socket", path.display()),
        None => format!(
            "connection refused on tailscaled socket {} (the file exists but nothing listens: stale socket or tailscaled restarting)",
            path.display()
        ),
    }
}

/// Maps the connect-time io error kinds that have a dedicated variant.
pub(crate) fn socket_error_for_kind(kind: io::ErrorKind, socket: &Path) -> Option<Error> {
    let path = socket.to_path_buf();
    match kind {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Some(Error::SocketMissing { path }),
        io::ErrorKind::ConnectionRefused => {
            let not_a_socket = not_a_socket(&path);
            Some(Error::SocketRefused { path, not_a_socket })
        }
        io::ErrorKind::PermissionDenied => Some(Error::SocketPermission { path }),
        _ => None,
    }
}

fn find_io_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            return Some(ioe.kind());
        }
        cur = e.source();
    }
    None
}

/// `outer: inner: innermost`, skipping repeated messages.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SFX: &str = "bat-boa.ts.net";

    fn cert(body: &str) -> Error {
        classify(&format!("cert/grafana.{SFX}"), Some(&format!("grafana.{SFX}")), 500, None, body.as_bytes())
    }

    #[test]
    fn not_in_cert_domains_exact_go_text() {
        let e = cert(&format!("invalid domain \"grafana.{SFX}\"; must be one of [\"storage.{SFX}\"]\n"));
        match &e {
            Error::NotInCertDomains { domain, allowed } => {
                assert_eq!(domain, &format!("grafana.{SFX}"));
                assert_eq!(allowed, &vec![format!("storage.{SFX}")]);
            }
            other => panic!("{other:?}"),
        }
        let fix = e.fix().unwrap();
        assert!(fix.contains("svc:grafana"), "{fix}");
        assert!(fix.contains(&format!("storage.{SFX}")), "{fix}");
        assert_eq!(e.kind(), ErrorKind::NotInCertDomains);

        let e = cert(r#"invalid domain "x.y.ts.net"; must be one of ["a.y.ts.net" "b \"q\".y.ts.net"]"#);
        match e {
            Error::NotInCertDomains { domain, allowed } => {
                assert_eq!(domain, "x.y.ts.net");
                assert_eq!(allowed, vec!["a.y.ts.net", "b \"q\".y.ts.net"]);
            }
            other => panic!("{other:?}"),
        }
        // Paraphrase without quotes still classifies, falling back to the requested name.
        match cert("invalid domain; must be one of [storage.bat-boa.ts.net]") {
            Error::NotInCertDomains { domain, allowed } => {
                assert_eq!(domain, format!("grafana.{SFX}"));
                assert_eq!(allowed, vec![format!("storage.{SFX}")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reference_table_bodies() {
        // §2.3 table, one row each.
        let e = cert("invalid domain\n");
        assert!(matches!(&e, Error::InvalidDomain { domain } if domain == "grafana.bat-boa.ts.net"), "{e:?}");
        assert!(e.fix().is_some());

        let e = cert("no netmap available\n");
        assert!(matches!(e, Error::NoNetmap));
        assert!(e.fix().unwrap().contains("tailscale up"));

        let e = cert("your Tailscale account does not support getting TLS certs\n");
        assert!(matches!(e, Error::HttpsDisabled));
        assert!(e.fix().unwrap().contains("HTTPS"));

        assert!(matches!(cert("wildcard certificates are not enabled for this node\n"), Error::WildcardNotEnabled));
        assert!(matches!(
            cert("invalid domain \"*.x.ts.net\"; wildcard certificates are not enabled for this domain\n"),
            Error::WildcardNotEnabled
        ));

        let body = "SetDNS \"_acme-challenge.grafana.bat-boa.ts.net\" => \"tok\": set-dns response: 500 Internal Server Error, failed to create DNS record";
        let e = cert(&format!("{body}\n"));
        assert!(matches!(&e, Error::SetDnsFailed { body: b } if b == body), "{e:?}");
        assert!(e.kind().is_transient());
        assert!(e.fix().is_some());

        let rl = "429 urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-01-01 00:00:00 UTC";
        let e = classify("cert/x.ts.net", Some("x.ts.net"), 429, Some("3600"), format!("{rl}\n").as_bytes());
        assert!(
            matches!(&e, Error::RateLimited { retry_after: Some(d), body } if *d == Duration::from_secs(3600) && body == rl)
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
        assert!(e.fix().unwrap().contains("3600s"));
        // ≤ 1.100: same text as a 500, no Retry-After.
        let e = cert(rl);
        assert!(matches!(e, Error::RateLimited { retry_after: None, .. }));
        assert_eq!(e.retry_after(), None);

        let e = cert("open /var/lib/tailscale/certs/x.key.tmp123: read-only file system\n");
        assert!(matches!(e, Error::CertStoreReadOnly { .. }));
        assert!(e.fix().is_some());
        let e = cert(
            "retrieving cached TLS certificate failed and cert store is configured in read-only mode, not attempting to issue a new certificate\n",
        );
        assert!(matches!(e, Error::CertStoreReadOnly { .. }));

        let e = cert("cert support not compiled in this build\n");
        assert!(matches!(&e, Error::NotSupported { endpoint } if endpoint.starts_with("cert/")));

        let e = classify("cert/x.ts.net", Some("x.ts.net"), 403, None, b"cert access denied\n");
        assert!(matches!(&e, Error::CertAccessDenied { body } if body == "cert access denied"));
        let fix = e.fix().unwrap();
        assert!(fix.contains("TS_PERMIT_CERT_UID=") && fix.contains("permitCertUid"), "{fix}");
        assert!(e.to_string().contains("uid "), "{e}");
    }

    #[test]
    fn other_statuses() {
        let e = classify("cert/x.ts.net", Some("x.ts.net"), 403, None, b"invalid localapi request\n");
        assert!(matches!(&e, Error::AccessDenied { .. }));
        assert!(e.to_string().contains("Host header"), "{e}");
        assert!(e.fix().unwrap().contains("local-tailscaled.sock"));

        let e = classify("serve-config", None, 403, None, b"serve config denied\n");
        assert!(
            matches!(&e, Error::AccessDenied { endpoint, body } if endpoint == "serve-config" && body == "serve config denied")
        );
        let fix = e.fix().unwrap();
        assert!(fix.contains("run `snirouter services sync` as root") && fix.contains("ExecStartPre=-+"), "{fix}");
        assert!(fix.contains("tailscale set --operator="), "{fix}");

        let body = b"must be root, or be an operator and able to run 'sudo tailscale' to serve a path or Unix socket\n";
        let e = classify("serve-config", None, 401, None, body);
        assert!(matches!(&e, Error::ServeNeedsAdmin { .. }), "{e:?}");
        assert!(e.fix().unwrap().contains("sudo snirouter services sync"));
        assert!(matches!(classify("serve-config", None, 401, None, b"other\n"), Error::Daemon { status: 401, .. }));

        let e = classify("cert-domains", None, 404, None, b"404 page not found\n");
        assert!(matches!(&e, Error::NotSupported { endpoint } if endpoint == "cert-domains"));
        assert!(e.to_string().contains("cert-domains"));

        assert!(matches!(classify("serve-config", None, 412, None, b"etag mismatch\n"), Error::PreconditionFailed));
        assert!(matches!(
            classify(
                "serve-config",
                None,
                500,
                None,
                b"can't reconfigure tailscaled when using a config file; config file is locked\n"
            ),
            Error::ConfigLocked
        ));
        assert!(matches!(
            classify("prefs", None, 500, None, br#"{"error":"config file is locked"}"#),
            Error::ConfigLocked
        ));

        let e = classify("status", None, 503, None, b"  no backend \n");
        assert!(matches!(&e, Error::Daemon { status: 503, body } if body == "no backend"));
        assert_eq!(e.fix(), None);
        let e = classify("prefs", None, 500, None, br#"{"error": "something odd"}"#);
        assert!(matches!(&e, Error::Daemon { status: 500, body } if body == "something odd"));
        let e = classify(
            "cert/x.ts.net",
            Some("x.ts.net"),
            400,
            None,
            b"invalid validity parameter: time: invalid duration \"x\"\n",
        );
        assert!(matches!(&e, Error::Daemon { status: 400, body } if body.starts_with("invalid validity parameter")));
    }

    #[test]
    fn a_socket_path_that_is_a_directory_is_called_one() {
        let dir = std::env::temp_dir();
        let e = socket_error_for_kind(io::ErrorKind::ConnectionRefused, &dir).expect("mapped");
        let text = e.to_string();
        assert!(text.ends_with("is a directory, not a socket") && !text.contains("stale"), "{text}");
        let fix = e.fix().expect("a fix");
        assert!(fix.contains("set [tailscale] socket") && !fix.contains("restart tailscaled"), "{fix}");
    }

    #[test]
    fn socket_kinds() {
        let p = Path::new("/run/tailscale/tailscaled.sock");
        assert!(matches!(socket_error_for_kind(io::ErrorKind::NotFound, p), Some(Error::SocketMissing { .. })));
        assert!(matches!(
            socket_error_for_kind(io::ErrorKind::ConnectionRefused, p),
            Some(Error::SocketRefused { .. })
        ));
        let e = socket_error_for_kind(io::ErrorKind::PermissionDenied, p).unwrap();
        assert!(matches!(e, Error::SocketPermission { .. }));
        assert!(e.fix().is_some());
        assert!(socket_error_for_kind(io::ErrorKind::Other, p).is_none());
        let missing = Error::SocketMissing { path: p.to_path_buf() };
        let fix = missing.fix().unwrap();
        assert!(fix.contains("systemctl start tailscaled") && fix.contains("[tailscale] socket"), "{fix}");
    }

    #[test]
    fn kinds_are_distinct_labels() {
        let all = [
            ErrorKind::SocketMissing,
            ErrorKind::SocketRefused,
            ErrorKind::SocketPermission,
            ErrorKind::Io,
            ErrorKind::Transport,
            ErrorKind::Timeout,
            ErrorKind::CertAccessDenied,
            ErrorKind::AccessDenied,
            ErrorKind::NotInCertDomains,
            ErrorKind::HttpsDisabled,
            ErrorKind::NoNetmap,
            ErrorKind::InvalidDomain,
            ErrorKind::WildcardNotEnabled,
            ErrorKind::SetDnsFailed,
            ErrorKind::CertStoreReadOnly,
            ErrorKind::RateLimited,
            ErrorKind::NotSupported,
            ErrorKind::PreconditionFailed,
            ErrorKind::ConfigLocked,
            ErrorKind::Daemon,
            ErrorKind::BadResponse,
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn body_extraction() {
        assert_eq!(message_from_body(b"cert access denied\n"), "cert access denied");
        assert_eq!(message_from_body(br#"{"error":"nope"}"#), "nope");
        // prefs edit failures (ipn/localapi servePrefs, resJSON) use a capital E.
        assert_eq!(message_from_body(b"{\"Error\":\"can't set Internal fields\"}\n"), "can't set Internal fields");
        assert_eq!(message_from_body(br#"{"other":"x"}"#), r#"{"other":"x"}"#);
        assert_eq!(message_from_body(b"\xff\xfe bad utf8"), "\u{fffd}\u{fffd} bad utf8");
        let long = "a".repeat(10_000);
        assert_eq!(message_from_body(long.as_bytes()).chars().count(), MAX_BODY_CHARS + 1);
    }
}
