//! What the config asks of tailscaled: every service's handlers (TCP 443 to the router,
//! `tcp` ports to their apps), the forward target and the definitions' tags.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use snirouter_config::Config;

use crate::error::Error;
use crate::serve::{self, SERVICE_PORT};

/// What the config asks for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Desired {
    /// `svc:NAME` for every configured service, in config order.
    pub services: Vec<String>,
    /// The forward target (`127.0.0.1:8443`).
    pub target: String,
    /// The TCP 443 handler every service gets.
    pub handler: Value,
    /// The handlers of the services' `tcp` ports: `svc:NAME` → port → handler (only
    /// services that have any).
    pub tcp: BTreeMap<String, BTreeMap<u16, Value>>,
    /// Tags for the service definitions (`[tailscale.api] tags`).
    pub tags: Vec<String>,
}

impl Desired {
    /// The desired state of `config`; fails without a usable proxy_protocol listener.
    pub fn from_config(config: &Config) -> Result<Desired, Error> {
        let target = serve::forward_target(config)?;
        Ok(Desired {
            services: config.services.iter().map(|s| s.tailscale_service()).collect(),
            handler: serve::desired_handler(&target),
            target,
            tcp: config
                .services
                .iter()
                .filter(|s| !s.tcp.is_empty())
                .map(|s| (s.tailscale_service(), s.tcp.iter().map(|p| (p.port, serve::tcp_handler(p))).collect()))
                .collect(),
            tags: config.tailscale.api.as_ref().map(|a| a.tags.clone()).unwrap_or_default(),
        })
    }

    /// Every handler `service` needs: TCP 443 first, then its `tcp` ports.
    pub fn handlers(&self, service: &str) -> Vec<(u16, &Value)> {
        let extra = self.tcp.get(service).into_iter().flatten().map(|(p, h)| (*p, h));
        std::iter::once((SERVICE_PORT, &self.handler)).chain(extra).collect()
    }

    /// Whether `service` is configured and needs a handler on `port`.
    pub fn wants(&self, service: &str, port: u16) -> bool {
        self.services.iter().any(|s| s == service)
            && (port == SERVICE_PORT || self.tcp.get(service).is_some_and(|t| t.contains_key(&port)))
    }

    /// What the local side (serve config and advertisement) is synced for: the services
    /// and their handlers, without the definitions' tags. Recorded after each sync, so
    /// that the next one can tell drift (the same config, changed by someone else) from
    /// a new config.
    pub fn local_fingerprint(&self) -> Value {
        serde_json::json!({ "services": self.services, "handler": self.handler, "tcp": self.tcp })
    }

    /// The ports of `service` that `allows` refuses, as a definition writes them (`tcp:22`).
    pub fn ports_not_allowed(&self, service: &str, allows: impl Fn(u16) -> bool) -> Vec<String> {
        self.handlers(service)
            .into_iter()
            .filter(|(port, _)| !allows(*port))
            .map(|(port, _)| format!("tcp:{port}"))
            .collect()
    }

    /// The ports of `service` as its definition lists them (`tcp:443`, `tcp:22`).
    pub fn definition_ports(&self, service: &str) -> Vec<String> {
        self.handlers(service).into_iter().map(|(p, _)| format!("tcp:{p}")).collect()
    }
}
