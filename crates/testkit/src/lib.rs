//! # snirouter-testkit
//!
//! Test infrastructure shared by the snirouter crates. This crate owns:
//!
//! * [`ca`] — a throw-away two-level test CA ([`ca::TestCa`]) that issues
//!   ECDSA P-256 leaves with Go/tailscaled-style `EC PRIVATE KEY` PEM keys;
//! * [`tailscaled`] — [`tailscaled::SimTailscaled`], a faithful simulation of
//!   tailscaled's LocalAPI on a unix socket (Host/Origin checks, peer-uid
//!   permissions, `status`, `cert-domains`, `cert/`, `watch-ipn-bus`,
//!   `serve-config`, `prefs`, `whois`) with switchable failure scenarios
//!   ([`tailscaled::SimConfig`]); the behaviour follows
//!   `/work/shared/reference/tailscale-localapi.md`;
//! * [`backend`] — sample HTTP/1.1 backends on loopback (echo, streaming,
//!   upload, delay, hang, status, WebSocket echo) and a tiny WebSocket client;
//! * [`control`] — [`control::SimControl`], a simulated Tailscale control API
//!   (OAuth token, Tailscale Services CRUD with the `addrs` rule, `/devices`,
//!   the `/vip-services` fallback) on loopback HTTP;
//!
//! The `snirouter-sim-tailscaled` binary runs the simulator stand-alone.
//!
//! Nothing here is meant for production use; it exists so the real crates can
//! be tested without a running tailscaled.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod ca;
pub mod control;
pub mod gofmt;
pub mod gojson;
pub mod tailscaled;

pub use ca::{IssuedPair, TestCa};
pub use tailscaled::{IssuedRecord, RequestRecord, SimConfig, SimPeer, SimTailscaled};

/// The 14 sample services used by the demo and the tests (the owner's home server,
/// roughly): each becomes `NAME.<suffix>` and `svc:NAME`.
pub const SAMPLE_SERVICES: [&str; 14] = [
    "grafana",
    "jellyfin",
    "immich",
    "sonarr",
    "radarr",
    "prowlarr",
    "lidarr",
    "bazarr",
    "jellyseerr",
    "qbittorrent",
    "homepage",
    "audiobookshelf",
    "navidrome",
    "prometheus",
];
