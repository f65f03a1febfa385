//! The translated configuration between reading the Caddyfile ([`crate::translate`])
//! and writing TOML ([`crate::render`]): services, defaults and findings.

use std::collections::BTreeMap;

/// One reported item: a directive with no equivalent, or one not translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line in the Caddyfile.
    pub line: usize,
    /// The directive as written (`encode gzip`).
    pub directive: String,
    /// Why, and what to do.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: `{}`: {}", self.line, self.directive, self.message)
    }
}

/// `[defaults]` / per-service forward authentication.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Auth {
    pub(crate) url: String,
    pub(crate) copy_headers: Vec<String>,
}

/// One `path -> upstream` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) path: String,
    pub(crate) upstream: String,
    pub(crate) strip_prefix: bool,
    pub(crate) line: usize,
}

/// A service as translated from one or more site blocks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) addresses: Vec<String>,
    pub(crate) fqdn: Option<String>,
    pub(crate) routes: Vec<Route>,
    pub(crate) upstream_host: Option<String>,
    pub(crate) insecure_skip_verify: bool,
    pub(crate) forward_auth: Option<Auth>,
    pub(crate) bypass_auth: bool,
    pub(crate) cors: bool,
    pub(crate) error_pages: Option<String>,
    /// Upstream statuses `handle_response` turns into the error page.
    pub(crate) error_pages_upstream: Option<Vec<u16>>,
    pub(crate) max_body: Option<String>,
    pub(crate) access_log: bool,
    /// `request_header` rules.
    pub(crate) request_headers: Headers,
    /// `header` rules (the response).
    pub(crate) response_headers: Headers,
    /// Public names (a site with `tls CERT KEY`), under `[domains]`.
    pub(crate) names: Vec<String>,
    /// `tls CERT KEY` of the site being translated.
    pub(crate) tls_files: Option<(String, String)>,
    /// Findings inside this service's site(s), repeated as comments in its section.
    pub(crate) untranslated: Vec<Finding>,
}

impl Service {
    /// Whether two sites route the same paths to the same upstreams.
    pub(crate) fn same_routes(&self, other: &Service) -> bool {
        let routes = |s: &Service| -> Vec<(String, String, bool)> {
            s.routes.iter().map(|r| (r.path.clone(), r.upstream.clone(), r.strip_prefix)).collect()
        };
        routes(self) == routes(other)
    }

    /// Whether two translations of the same name say the same thing.
    pub(crate) fn same_settings(&self, other: &Service) -> bool {
        self.same_routes(other)
            && self.fqdn == other.fqdn
            && self.upstream_host == other.upstream_host
            && self.insecure_skip_verify == other.insecure_skip_verify
            && self.forward_auth == other.forward_auth
            && self.cors == other.cors
            && self.error_pages == other.error_pages
            && self.error_pages_upstream == other.error_pages_upstream
            && self.max_body == other.max_body
            && self.access_log == other.access_log
            && self.request_headers == other.request_headers
            && self.response_headers == other.response_headers
    }
}

/// One `[domains."NAME"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DomainOut {
    pub(crate) name: String,
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) forward_auth: Option<Auth>,
    pub(crate) apex_redirect: Option<String>,
    pub(crate) line: usize,
}

/// Header names removed and headers set, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers {
    pub(crate) remove: Vec<String>,
    pub(crate) set: Vec<(String, String)>,
}

impl Headers {
    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty()
    }
}

/// The whole translated configuration, before rendering.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub(crate) source_name: String,
    pub(crate) max_header_size: Option<(String, usize)>,
    pub(crate) request_header_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) log_level: Option<String>,
    pub(crate) defaults_auth: Option<Auth>,
    pub(crate) defaults_error_pages: Option<String>,
    pub(crate) services: Vec<Service>,
    /// `[domains]`: the certificate files of public sites, by domain.
    pub(crate) domains: Vec<DomainOut>,
    /// Public-only sites, merged into their services once every site is read.
    pub(crate) public_sites: Vec<Service>,
    pub(crate) notes: Vec<Finding>,
    pub(crate) untranslated: Vec<Finding>,
}

/// Groups findings by line for rendering (stable order).
pub(crate) fn by_line(findings: &[Finding]) -> BTreeMap<usize, Vec<&Finding>> {
    let mut m: BTreeMap<usize, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        m.entry(f.line).or_default().push(f);
    }
    m
}
