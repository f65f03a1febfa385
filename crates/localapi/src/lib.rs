//! Client for tailscaled's LocalAPI over its unix socket.
//!
//! This crate owns:
//! * the **transport** — HTTP/1.1 over the unix socket with `Host: local-tailscaled.sock` and no
//!   `Origin`/`Referer` (tailscaled rejects anything else), via reqwest's `unix_socket`;
//! * the **types** — a tolerant typed subset of `/status` ([`Status`]), `/whois` ([`WhoIs`]),
//!   the `type=pair` certificate body ([`CertPair`], [`parse_pair_pem`]), and raw JSON for
//!   serve-config and prefs;
//! * **error classification** — every failure becomes a typed [`Error`] with a cause, a
//!   [`fix`](Error::fix), a [`kind`](Error::kind) for metrics and an optional
//!   [`retry_after`](Error::retry_after), derived from the status code and tailscaled's exact
//!   error texts.
//!
//! It does **not** cache certificates, schedule renewals or retry: callers (the cert store)
//! decide when to call and with which timeout. Every request is logged with `tracing` at debug
//! level (method, path, status, elapsed).
//!
//! ```no_run
//! # async fn demo() -> Result<(), snirouter_localapi::Error> {
//! use std::time::Duration;
//! let lc = snirouter_localapi::LocalClient::new("/var/run/tailscale/tailscaled.sock")?;
//! let domains = lc.cert_domains().await?;
//! let pair = lc.cert_pair(&domains[0], Some(Duration::from_secs(14 * 86400)), Duration::from_secs(300)).await?;
//! println!("{} certificates in chain", pair.chain.len());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod duration;
mod error;
mod go_quote;
mod pem;
mod retry_after;
mod services;
mod status;
mod user;

pub use client::{DEFAULT_TIMEOUT, IpnBusWatcher, LocalClient};
pub use duration::format_go_duration;
pub use error::{Error, ErrorKind, parse_go_string_list, parse_retry_after};
pub use pem::{CertPair, parse_pair_pem};
pub use services::{DaemonVersion, ServeBytes, ServiceDetails, ports_allow_tcp};
pub use status::{BackendState, CurrentTailnet, DnsConfig, DnsRecord, FeatureQuery, SelfNode, Status, WhoIs};
pub use user::{CurrentUser, current_user};

/// Default tailscaled socket path on Linux (`paths.DefaultTailscaledSocket`).
pub const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";

/// Socket paths worth trying when none is configured, in order.
pub const CANDIDATE_SOCKETS: &[&str] =
    &["/var/run/tailscale/tailscaled.sock", "/run/tailscale/tailscaled.sock", "/tmp/tailscaled.sock"];

/// Bits for [`LocalClient::watch_ipn_bus`]'s mask (`ipn.NotifyWatchOpt`).
pub mod notify {
    /// Send the current state first (`NotifyInitialState`).
    pub const INITIAL_STATE: u64 = 2;
    /// Send the current netmap first (`NotifyInitialNetMap`).
    pub const INITIAL_NETMAP: u64 = 8;
    /// Send the current health state first (`NotifyInitialHealthState`).
    pub const INITIAL_HEALTH_STATE: u64 = 128;
    /// Do not send netmaps (`NotifyNoNetMap`). Netmap changes (e.g. new `CertDomains`) then
    /// produce no line at all, so do not set this when using the bus as a wake-up for them.
    pub const NO_NETMAP: u64 = 8192;
}
