//! # snirouter-certs — the certificates snirouter serves
//!
//! This crate owns every certificate decision:
//!
//! * **which names** are served and what state each one is in ([`CertStore`]);
//! * **SNI selection** during the TLS handshake ([`CertStore::lookup`], and the
//!   [`rustls::server::ResolvesServerCert`] impl on [`CertStore`]);
//! * **fetching** each name from tailscaled, concurrently with a small bound, with
//!   backoff, `Retry-After` and at most one request in flight per name ([`manager`]);
//! * **renewal**: when to ask again, and when to ask with `min_validity` so that
//!   tailscaled renews synchronously ([`schedule`]);
//! * the **disk cache** of the last good key and chain per name, so a restart serves
//!   at once even while tailscaled is down ([`cache`]);
//! * certificates from **PEM files** for the names under a `[domains]` entry, re-read
//!   when they change, the last good pair kept when a new one is unusable ([`files`]).
//!
//! Talking to tailscaled (HTTP over the unix socket, error classification) is the
//! job of `snirouter-localapi`; this crate only decides *when* to call it and what
//! to do with the answer.

#![forbid(unsafe_code)]
pub mod cache;
pub mod files;
mod manager;
mod schedule;
mod served;
mod store;

pub use cache::DiskCache;
pub use files::{FileCerts, FileError, FileSource};
pub use manager::{CertManager, ManagerOptions};
pub use served::{CertError, CertSource, ServedCert};
pub use store::{CertSnapshot, CertStore, EntrySnapshot, FetchState, Lookup, Origin, ServedName};
