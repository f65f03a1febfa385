//! Typed errors, each with a cause ([`std::fmt::Display`]) and a fix ([`Error::fix`]).

use std::path::PathBuf;

/// Everything that can stop a plan or a sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A LocalAPI call failed.
    #[error("{what}: {source}")]
    LocalApi {
        /// What snirouter was doing, e.g. `reading the serve config`.
        what: &'static str,
        /// The classified LocalAPI error.
        #[source]
        source: snirouter_localapi::Error,
    },
    /// No `[listen] proxy_protocol` listener to forward the services to.
    #[error("no [listen] proxy_protocol listener is configured, so there is nothing to forward Tailscale Services to")]
    NoProxyListener,
    /// The proxy_protocol listener cannot be a forward target (port 0).
    #[error("the proxy_protocol listener {0} has port 0, which tailscaled cannot forward to")]
    EphemeralPort(std::net::SocketAddr),
    /// The host is not tagged; control only lets tagged nodes host services.
    #[error("this node ({node}) is not tagged: Tailscale Services can only be hosted by tagged nodes")]
    NotTagged {
        /// The node's MagicDNS name.
        node: String,
    },
    /// tailscaled has no tailnet session (not logged in, stopped, starting).
    #[error("tailscaled is not running a tailnet session (BackendState {state})")]
    NotRunning {
        /// The backend state.
        state: String,
    },
    /// tailscaled runs from a locked config file.
    #[error("tailscaled runs from a locked config file and refuses serve-config changes")]
    ConfigLocked,
    /// Every attempt hit a concurrent serve-config change (412).
    #[error("the serve config kept changing concurrently: {attempts} attempts failed with HTTP 412")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// The ownership record could not be read or written.
    #[error("ownership record {}: {source}", path.display())]
    Ownership {
        /// The file.
        path: PathBuf,
        /// The I/O or JSON error.
        #[source]
        source: std::io::Error,
    },
    /// An OAuth credentials file could not be read.
    #[error("cannot read the OAuth {what} from {}: {source}", path.display())]
    Credentials {
        /// `client id` or `client secret`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The control API answered with an error status; `message` is its text verbatim.
    #[error("{what}: control API answered HTTP {status}: {message}")]
    Api {
        /// The request, e.g. `PUT /api/v2/tailnet/-/services/svc:grafana`.
        what: String,
        /// HTTP status.
        status: u16,
        /// `message` from the JSON error body (or the OAuth `error_description`, or the raw body).
        message: String,
    },
    /// Another node hosts the service, and its definition differs from what this host
    /// is configured to add: hosts share one definition, so it is left as it is.
    #[error(
        "{service} is also hosted by {} and is defined with {defined}; this host ({this_host}) would add {wanted}, which would rewrite the definition the other host(s) use",
        others.join(", ")
    )]
    SharedDefinition {
        /// `svc:NAME`.
        service: String,
        /// This node's hostname.
        this_host: String,
        /// The other hosts, by name (or node ID).
        others: Vec<String>,
        /// The definition's ports and tags.
        defined: String,
        /// What this host would add.
        wanted: String,
    },
    /// The control API could not be reached or answered something unreadable.
    #[error("{what}: {detail}")]
    Transport {
        /// The request.
        what: String,
        /// Why it failed.
        detail: String,
    },
}

impl Error {
    pub(crate) fn local(what: &'static str) -> impl FnOnce(snirouter_localapi::Error) -> Error {
        move |source| match source {
            snirouter_localapi::Error::ConfigLocked => Error::ConfigLocked,
            source => Error::LocalApi { what, source },
        }
    }

    /// The report line for a failure about `service`: `svc:NAME: cause (fix: …)`,
    /// naming the service once (a shared-definition conflict names it itself).
    pub(crate) fn report_line(&self, service: &str) -> String {
        match self {
            Error::SharedDefinition { .. } => format!("{self} (fix: {})", self.fix()),
            _ => format!("{service}: {self} (fix: {})", self.fix()),
        }
    }

    /// What the operator should do about it.
    pub fn fix(&self) -> String {
        match self {
            Error::LocalApi { source, .. } => {
                source.fix().unwrap_or_else(|| "check tailscaled's logs (journalctl -u tailscaled)".to_owned())
            }
            Error::NoProxyListener => "add a PROXY v2 listener, e.g. [listen] proxy_protocol = [\"127.0.0.1:8443\"]; \
                 tailscaled forwards each service's TCP 443 there with a PROXY v2 header"
                .to_owned(),
            Error::EphemeralPort(_) => "give the proxy_protocol listener a fixed port, e.g. \"127.0.0.1:8443\"".to_owned(),
            Error::NotTagged { .. } => "tag the host, e.g. `tailscale up --advertise-tags=tag:storage` (the tag must be \
                 in the policy's tagOwners), or re-authenticate it with a tagged auth key"
                .to_owned(),
            Error::NotRunning { .. } => "log in with `tailscale up` and check `tailscale status`".to_owned(),
            Error::ConfigLocked => "tailscaled was started with --config: put the services into that file instead \
                 (Services in the serve config, AdvertiseServices in the config file) or start tailscaled without --config"
                .to_owned(),
            Error::Contended { .. } => "another client (tailscale serve, another snirouter) keeps rewriting the serve \
                 config; stop it and run `snirouter services sync` again"
                .to_owned(),
            Error::Ownership { path, .. } => format!(
                "make {} readable and writable by the user snirouter runs as ([cache] dir); if it is corrupt, \
                 inspect it and delete it (snirouter then owns nothing it did not add again)",
                path.display()
            ),
            Error::Credentials { path, .. } => format!(
                "create {} with the OAuth client's value (Settings → OAuth clients, scopes `services` and \
                 `devices:core`), readable by snirouter only",
                path.display()
            ),
            Error::Api { status, .. } => match status {
                401 => "the OAuth client id/secret were refused or the token expired: check the files named in \
                     [tailscale.api]"
                    .to_owned(),
                403 => "the OAuth client lacks a scope: create it with scopes `services` (write) and `devices:core`"
                    .to_owned(),
                404 => "check [tailscale.api] tailnet (use \"-\" for the client's own tailnet) and base_url".to_owned(),
                400 => "the API refused the request (see the message); service tags must be defined in the policy's \
                     tagOwners, and the service name must not be used by a machine"
                    .to_owned(),
                _ => "the control API failed; retry later".to_owned(),
            },
            Error::SharedDefinition { service, others, .. } => format!(
                "give every host of {service} the same [tailscale.api] tags as {} (ports are always tcp:443), or change \
                 the definition once for all hosts (admin console: Services → {service}), then run `snirouter services \
                 sync` again",
                others.join(", ")
            ),
            Error::Transport { .. } => {
                "check network access to [tailscale.api] base_url (default https://api.tailscale.com)".to_owned()
            }
        }
    }
}
