//! # snirouter-proxy — the data path
//!
//! One connection flows through these modules, in order:
//!
//! 1. [`listener`] accepts it and [`admit`] applies the connection limits (a hold that
//!    the connection, and any tunnel it becomes, keeps until it closes);
//! 2. [`proxy_header`] reads the PROXY v2 header on `proxy_protocol` listeners (the only
//!    place a client address is taken from the wire);
//! 3. [`hello`] reads the TLS ClientHello and picks what to do by SNI — unknown name or
//!    no certificate yet ⇒ an `unrecognized_name` alert, never `internal_error`; a
//!    `passthrough` service stops here: [`passthrough`] replays the ClientHello to its
//!    backend and copies bytes both ways, untouched;
//! 4. rustls finishes the handshake with the certificate from `snirouter-certs` ([`tls`]:
//!    versions, ALPN, tickets, cipher suite order);
//! 5. [`forward`] serves HTTP/1.1 and HTTP/2: checks Host against SNI (421 on mismatch),
//!    picks the route by longest path prefix ([`routes`]), applies the per-service
//!    options ([`cors`], body limits, [`access`] for `allow` — the tailnet-identity
//!    trust decision —, [`auth`] for `forward_auth`, [`identity`] for
//!    `tailscale_identity` and `accept_app_caps`, [`error_pages`], [`header_rules`] for
//!    `request_headers`/`response_headers`), and streams the request to
//!    the upstream ([`upstream`]: `http://` or `https://`, over the per-thread
//!    keep-alive [`pool`]; the wait for the answer
//!    starts when the request body has been sent) and the answer back, each body
//!    bounded per read by `timeouts.idle` ([`stall`]);
//! 6. after a `101`, [`tunnel`] joins the client and the upstream (WebSocket and other
//!    upgrades) as a counted, drained connection of its own.
//!
//! Beside the stages: [`budget`] bounds the answers clients have asked for but not read
//! (per connection, per client, per process) and the requests in flight; [`calm`] sends
//! `GOAWAY ENHANCE_YOUR_CALM` to an HTTP/2 client that resets streams faster than they
//! are answered; [`refusals`] logs every refused or closed connection once per kind and
//! window in full and sums up the rest.
//!
//! `[listen] redirect_http` listeners answer plain HTTP with a `308` to `https://`
//! ([`redirect`]).
//!
//! [`Server`] holds the shared state: the route table (swappable at runtime), the
//! certificate store, the TLS config and the pooled upstream client.

#![forbid(unsafe_code)]
mod access;
pub mod access_log;
mod admit;
mod auth;
mod body;
mod budget;
mod calm;
mod client_addr;
mod client_headers;
mod client_limit;
mod coalesce;
mod conn_info;
mod cors;
mod error_pages;
mod forward;
mod handshake;
mod header_rules;
pub mod hello;
mod histogram;
mod hop_by_hop;
mod identity;
mod idle;
mod listener;
mod local;
pub mod metrics;
mod options;
mod passthrough;
mod pool;
pub mod proxy_header;
mod redirect;
mod refusals;
mod routes;
mod serve_http;
mod server;
mod stall;
mod stats;
mod tls;
mod tunnel;
mod upstream;
mod workers;

pub use access::AccessPolicy;
pub use conn_info::ConnInfo;
pub use header_rules::HeaderOps;
pub use listener::ListenerKind;
pub use options::ProxyOptions;
pub use routes::{RouteTable, ServicePolicy};
pub use server::{Server, ServerError};
pub use stats::{ServiceStats, StatsSnapshot};
