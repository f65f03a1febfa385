//! # snirouter-services
//!
//! This crate owns **Tailscale Services**: desired state from the config, plan/sync against
//! tailscaled's serve-config and prefs and the control API, per-service state for status.
//!
//! Each configured service `NAME` becomes the Tailscale Service `svc:NAME` hosted by this
//! node (reference `tailscale-services.md` §6, option A):
//!
//! * **serve-config** (LocalAPI): `Services["svc:NAME"].TCP["443"] = {"TCPForward":
//!   "<first [listen] proxy_protocol address>", "ProxyProtocol": 2}`, merged into the
//!   existing config with `If-Match` and re-read/retried on `412`; a service's `tcp`
//!   ports get `TCP["22"] = {"TCPForward": "127.0.0.1:2222"}` (to the app, not the router)
//!   the same way; the node's own `TCP`/`Web` handlers and services snirouter does not own
//!   are never touched;
//! * **prefs** (LocalAPI): `svc:NAME` added to `AdvertiseServices` (read, union, `PATCH`
//!   with `AdvertiseServicesSet`);
//! * **control API** (optional, `[tailscale.api]`): the service is defined with ports
//!   `tcp:443` (plus its `tcp` ports) and the configured tags, read before write so its `addrs` survive. Without
//!   credentials, [`manual_steps`] prints the admin-console steps and policy snippet.
//!
//! **Ownership.** What snirouter added is recorded in `<cache.dir>/services.json`
//! ([`Ownership`]); removing a service from the config removes exactly those entries. An
//! existing, different handler that snirouter did not add is a [`Conflict`]: reported,
//! never overwritten.
//!
//! **Several hosts.** A service may be hosted by several nodes, each running snirouter:
//! a host only ever writes its own node's serve config and prefs, and leaves the shared
//! definition alone once another node hosts the service (`definition.rs`,
//! [`Error::SharedDefinition`]); [`ServiceState::hosts`] lists who hosts it.
//!
//! Entry points: [`plan`] (what would change; touches nothing), [`sync`] (apply;
//! idempotent), [`observe`] (per-service [`ServiceState`] for `snirouter status`) and
//! [`keep_in_sync`] for `run` with `[tailscale] manage_services = true`: retried until
//! tailscaled answers, then checked every [`HEAL_INTERVAL`] and put back when something
//! else changed it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod control;
mod definition;
mod desired;
mod error;
mod guide;
mod http;
mod keep;
mod ownership;
mod plan;
mod seen;
mod serve;
mod state;
mod sync;

pub use control::{ControlClient, ServiceHost, ServiceInfo};
pub use definition::Host;
pub use error::Error;
pub use guide::{manual_steps, policy_snippet};
pub use keep::{HEAL_INTERVAL, heals, keep_in_sync};
pub use ownership::{Drift, OWNERSHIP_FILE, Owned, Ownership};
pub use plan::{Blocker, Change, Conflict, Desired, Plan, plan};
pub use seen::{Seen, compare_definitions, missing_ports, missing_ports_line, not_visible_line, visible_services};
pub use serve::{SERVICE_PORT, desired_handler, handler_of, same_handler, tcp_handler};
pub use state::{HandlerState, PortState, ServiceState, observe};
pub use sync::{SyncReport, sync};

/// `svc:NAME` for a configured service name.
pub fn svc_name(name: &str) -> String {
    format!("svc:{name}")
}
