//! Path routing: which service a TLS server name belongs to, and which upstream a
//! request path goes to.
//!
//! Each service keeps the config's routes, sorted longest path first; a route matches
//! a request path that equals it or continues it at a `/` boundary (`/sonarr` matches
//! `/sonarr` and `/sonarr/api`, not `/sonarrx`; see [`Route::matches`]). `/` matches
//! everything.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use http::uri::PathAndQuery;
pub(crate) use snirouter_config::Route;
use snirouter_config::{Cors, Domain, ForwardAuth, HostPort};

use crate::access::AccessPolicy;
use crate::client_addr::TrustedProxies;
use crate::error_pages::ErrorPages;
use crate::header_rules::HeaderOps;
use crate::stats::ServiceStats;

/// The path and query to send upstream for `pq` under `route` (the prefix removed
/// when the route says `strip_prefix`).
pub(crate) fn upstream_path(route: &Route, pq: &PathAndQuery) -> PathAndQuery {
    if !route.strip_prefix || route.path == "/" {
        return pq.clone();
    }
    let rest = pq.path().strip_prefix(route.path.as_str()).unwrap_or(pq.path());
    let path = if rest.is_empty() { "/" } else { rest };
    let s = match pq.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    s.parse().unwrap_or_else(|_| pq.clone())
}

/// `svc:NAME` when the service is a Tailscale Service (no `fqdn` of its own) whose policy
/// needs capabilities: those granted toward its VIP, not toward the node.
fn whois_scope(svc: &snirouter_config::Service) -> Option<Arc<str>> {
    let needs_caps = !svc.accept_app_caps.is_empty()
        || svc.allow.iter().flatten().chain(&svc.deny).any(|p| matches!(p, snirouter_config::Principal::Capability(_)));
    (needs_caps && svc.fqdn.is_none()).then(|| Arc::from(svc.tailscale_service()))
}

/// A service as the data path sees it: its routes and the policy its requests get
/// (auth, CORS, headers, error pages, limits, identity, passthrough). A service with
/// several names has one per name where they differ (forward auth by domain), sharing
/// its counters.
#[derive(Debug, Clone)]
pub struct ServicePolicy {
    /// Service name (`grafana`).
    pub name: String,
    /// Routes, longest path first.
    pub routes: Vec<Route>,
    /// Host header to send upstream instead of the client's.
    pub upstream_host: Option<String>,
    /// Request counters.
    pub stats: Arc<ServiceStats>,
    /// Write one access log line per request.
    pub access_log: bool,
    /// Skip certificate checks of `https://` upstreams.
    pub insecure_skip_verify: bool,
    /// Forward authentication in effect.
    pub forward_auth: Option<ForwardAuth>,
    /// Header names removed from every client request of this service: every
    /// `copy_headers` name of the whole config (so a bypassed or differently
    /// configured service never passes a client-forged `Remote-User` on).
    pub strip_headers: Arc<[HeaderName]>,
    /// CORS answers.
    pub cors: Option<Cors>,
    /// Custom error pages, loaded.
    pub error_pages: Option<ErrorPages>,
    /// Request body limit.
    pub max_body_bytes: Option<u64>,
    /// Send `Tailscale-User-*` headers.
    pub tailscale_identity: bool,
    /// `allow`: who may use the service.
    pub access: Option<AccessPolicy>,
    /// `accept_app_caps`: capabilities sent upstream in `Tailscale-App-Capabilities`.
    pub accept_app_caps: Vec<String>,
    /// What `whois` asks capabilities toward: `svc:NAME` for a Tailscale Service whose
    /// policy needs capabilities (`cap:` entries, `accept_app_caps`), else the node.
    pub whois_scope: Option<Arc<str>>,
    /// TLS passthrough target (no HTTP handling at all).
    pub passthrough: Option<HostPort>,
    /// `request_headers`, applied last to the request sent upstream.
    pub request_headers: HeaderOps,
    /// `response_headers`, applied last to every answer.
    pub response_headers: HeaderOps,
}

impl ServicePolicy {
    /// A plain service (no parity options), for tests.
    #[cfg(test)]
    pub(crate) fn plain(name: &str, routes: Vec<Route>) -> ServicePolicy {
        ServicePolicy {
            name: name.to_owned(),
            routes,
            upstream_host: None,
            stats: Arc::default(),
            access_log: false,
            insecure_skip_verify: false,
            forward_auth: None,
            strip_headers: Arc::from(Vec::new()),
            cors: None,
            error_pages: None,
            max_body_bytes: None,
            tailscale_identity: false,
            access: None,
            accept_app_caps: Vec::new(),
            whois_scope: None,
            passthrough: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }
    }

    /// The route for a request path, if any.
    pub fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }
}

/// FQDN → service.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_fqdn: HashMap<String, Arc<ServicePolicy>>,
    /// One policy per service (its tailnet name's), in config order.
    services: Vec<Arc<ServicePolicy>>,
    /// `[domains]`: what names under them that no service has get (a wildcard
    /// certificate lets them through the handshake).
    domains: Vec<Domain>,
    /// `[defaults] error_pages`, for those answers.
    domain_pages: Option<ErrorPages>,
    /// `[listen] trusted_proxies` and `client_ip_headers` (reloadable).
    trusted: TrustedProxies,
}

impl RouteTable {
    /// Builds the table from the config and the tailnet's MagicDNS suffix. Counters of
    /// services present in `previous` carry over (so a reload keeps statistics).
    pub fn from_config(
        config: &snirouter_config::Config,
        magic_dns_suffix: &str,
        previous: Option<&RouteTable>,
    ) -> RouteTable {
        let strip = stripped_auth_headers(config);
        let mut table = RouteTable::default();
        for svc in &config.services {
            let fqdn = svc.fqdn(magic_dns_suffix);
            let stats = previous
                .and_then(|p| p.by_fqdn.get(&fqdn))
                .filter(|old| old.name == svc.name)
                .map(|old| Arc::clone(&old.stats))
                .unwrap_or_default();
            let base = Arc::new(ServicePolicy {
                name: svc.name.clone(),
                routes: svc.routes.clone(),
                upstream_host: svc.upstream_host.clone(),
                stats,
                access_log: svc.access_logged(&config.log),
                insecure_skip_verify: svc.insecure_skip_verify,
                forward_auth: config.forward_auth_for(svc, &fqdn).cloned(),
                strip_headers: Arc::clone(&strip),
                cors: svc.cors.clone(),
                error_pages: svc
                    .error_pages
                    .as_deref()
                    .map(|dir| ErrorPages::load(&svc.name, dir).for_upstream(svc.error_pages_upstream.clone())),
                max_body_bytes: svc.max_body_bytes,
                tailscale_identity: svc.tailscale_identity,
                access: (svc.allow.is_some() || !svc.deny.is_empty())
                    .then(|| AccessPolicy { allow: svc.allow.clone(), deny: svc.deny.clone() }),
                accept_app_caps: svc.accept_app_caps.clone(),
                whois_scope: whois_scope(svc),
                passthrough: svc.passthrough.clone(),
                request_headers: HeaderOps::new(&svc.request_headers),
                response_headers: HeaderOps::new(&svc.response_headers),
            });
            for name in &svc.names {
                let auth = config.forward_auth_for(svc, name);
                let policy = if auth == base.forward_auth.as_ref() {
                    Arc::clone(&base)
                } else {
                    Arc::new(ServicePolicy { forward_auth: auth.cloned(), ..(*base).clone() })
                };
                table.by_fqdn.insert(name.clone(), policy);
            }
            table.by_fqdn.insert(fqdn, Arc::clone(&base));
            table.services.push(base);
        }
        table.domains.clone_from(&config.domains);
        table.trusted = TrustedProxies::from_config(&config.listen);
        table.domain_pages = config.defaults.error_pages.as_deref().map(|dir| ErrorPages::load("[domains]", dir));
        table
    }

    /// The `[domains]` entry `name` is under (the longest), with its `apex_redirect`.
    pub(crate) fn domain_of(&self, name: &str) -> Option<(&str, Option<&str>)> {
        let d = Domain::longest_for(&self.domains, name)?;
        Some((d.name.as_str(), d.apex_redirect.as_deref()))
    }

    /// The proxies whose client-address headers are believed.
    pub(crate) fn trusted(&self) -> &TrustedProxies {
        &self.trusted
    }

    /// `[defaults] error_pages`, for answers to names no service has.
    pub(crate) fn domain_pages(&self) -> Option<&ErrorPages> {
        self.domain_pages.as_ref()
    }

    /// The service served under `fqdn` (lowercase, no trailing dot).
    pub fn get(&self, fqdn: &str) -> Option<&Arc<ServicePolicy>> {
        self.by_fqdn.get(fqdn)
    }

    /// All services, once each (their tailnet name's policy).
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServicePolicy>> {
        self.services.iter()
    }
}

/// Every `copy_headers` name of the config (defaults, services, domains): removed from
/// every client request of every service.
fn stripped_auth_headers(config: &snirouter_config::Config) -> Arc<[HeaderName]> {
    let mut strip: Vec<HeaderName> = Vec::new();
    let auths = config
        .defaults
        .forward_auth
        .iter()
        .chain(config.services.iter().filter_map(|s| s.forward_auth.as_ref()))
        .chain(config.domains.iter().filter_map(|d| d.forward_auth.as_ref()));
    for name in auths.flat_map(|a| a.copy_headers.iter()) {
        if let Ok(h) = HeaderName::from_bytes(name.as_bytes())
            && !strip.contains(&h)
        {
            strip.push(h);
        }
    }
    Arc::from(strip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, strip: bool) -> Route {
        let mut cfg = snirouter_config::parse(
            &format!("[listen]\nhttps=[\"127.0.0.1:1\"]\n[services.a]\nroutes=[{{path=\"{path}\", upstream=\"http://127.0.0.1:1\", strip_prefix={strip}}}]\n"),
            "test",
        )
        .expect("config");
        cfg.services.remove(0).routes.remove(0)
    }

    #[test]
    fn longest_prefix_wins_in_table_order() {
        let svc = ServicePolicy::plain(
            "media",
            vec![route("/sonarr/api", false), route("/sonarr", false), route("/", false)],
        );
        assert_eq!(svc.route("/sonarr/api/x").map(|r| r.path.as_str()), Some("/sonarr/api"));
        assert_eq!(svc.route("/sonarr/web").map(|r| r.path.as_str()), Some("/sonarr"));
        assert_eq!(svc.route("/sonarrx").map(|r| r.path.as_str()), Some("/"));
        assert_eq!(svc.route("/other").map(|r| r.path.as_str()), Some("/"));
    }

    #[test]
    fn strip_prefix_keeps_query() {
        let r = route("/sonarr", true);
        let pq = PathAndQuery::from_static("/sonarr/api?x=1");
        assert_eq!(upstream_path(&r, &pq).as_str(), "/api?x=1");
        let pq = PathAndQuery::from_static("/sonarr?x=1");
        assert_eq!(upstream_path(&r, &pq).as_str(), "/?x=1");
        let keep = route("/sonarr", false);
        assert_eq!(upstream_path(&keep, &pq).as_str(), "/sonarr?x=1");
    }
}
