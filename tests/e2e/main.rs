//! End-to-end tests: the real `snirouter` binary against the simulated tailscaled,
//! real backends on loopback, and real outside clients (`curl`, `openssl s_client`)
//! plus a Rust TLS client where a tool cannot do the job (WebSocket).
//!
//! Every test binds loopback only, is bounded in time and kills what it starts.

mod harness;

mod access;
mod certs_lifecycle;
mod check_cmd;
mod core_routing;
mod doc_examples;
mod domains;
mod hairpin;
mod headers;
mod import_caddyfile;
mod localapi_failures;
mod nix_eval;
mod operate;
mod parity;
mod proxy_protocol;
mod sd_notify;
mod services;
mod several_hosts;
mod status_page;
mod traffic;
mod tunnel;
