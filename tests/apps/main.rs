//! Real applications, written by others, behind the real `snirouter` binary: certificates
//! from the simulated tailscaled, and real clients (curl, Python's tornado, headless
//! Chromium) that resolve the tailnet names to the router and verify its certificates
//! against the simulated CA.
//!
//! Each test starts its app on a free loopback port, then a router whose simulated node
//! can certify the app's name. The apps and tools come from Debian and PyPI; .ci/run
//! installs them, and a test whose app is missing fails saying which package to install.
//! Every test binds loopback only, is bounded in time and kills what it starts.

#[path = "../e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
mod support;

mod jupyter;
mod prometheus;
mod qbittorrent;
mod syncthing;
