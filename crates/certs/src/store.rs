//! The set of served names and, per name, the certificate and its fetch state.
//!
//! Reads on the handshake path are lock-free: the name map and each certificate are
//! behind [`ArcSwap`]s, so a renewal swaps a certificate in atomically — new
//! handshakes get the new one, connections already established keep theirs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;

use crate::ServedCert;

/// What the handshake path learns about an SNI name.
#[derive(Clone)]
pub enum Lookup {
    /// A certificate is ready.
    Ready(Arc<CertifiedKey>),
    /// The name is configured but has no usable certificate yet; `reason` says why.
    NotReady {
        /// The service the name belongs to.
        service: String,
        /// Human-readable reason (last error or "first request in progress").
        reason: String,
    },
    /// The name is not served by this router.
    Unknown,
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Ready(_) => f.write_str("Ready"),
            Lookup::NotReady { service, reason } => write!(f, "NotReady({service}: {reason})"),
            Lookup::Unknown => f.write_str("Unknown"),
        }
    }
}

/// Fetch state of one name, as shown by `snirouter status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchState {
    /// A request to tailscaled is in flight.
    pub in_flight: bool,
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// Failed requests since start (never reset; the renewal-failure metric).
    pub total_failures: u64,
    /// When the last request started.
    #[serde(with = "opt_unix")]
    pub last_attempt: Option<SystemTime>,
    /// When the last request succeeded.
    #[serde(with = "opt_unix")]
    pub last_success: Option<SystemTime>,
    /// When the next request is planned.
    #[serde(with = "opt_unix")]
    pub next_attempt: Option<SystemTime>,
    /// Short machine-readable class of the last error (e.g. `not_in_cert_domains`).
    pub last_error_kind: Option<String>,
    /// The last error, with the daemon's text where there was one.
    pub last_error: Option<String>,
    /// How to fix the last error.
    pub fix: Option<String>,
}

/// Where a served name's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// tailscaled's LocalAPI ([`crate::CertManager`]).
    Tailscaled,
    /// PEM files of a `[domains]` entry ([`crate::FileCerts`]).
    Files,
}

/// One name to serve: its FQDN, the service it belongs to, where its certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedName {
    /// The FQDN.
    pub fqdn: String,
    /// The service it belongs to.
    pub service: String,
    /// Where its certificate comes from.
    pub origin: Origin,
}

impl ServedName {
    /// A name whose certificate comes from tailscaled.
    pub fn tailscaled(fqdn: &str, service: &str) -> ServedName {
        ServedName { fqdn: fqdn.to_owned(), service: service.to_owned(), origin: Origin::Tailscaled }
    }

    /// A name whose certificate comes from its domain's files.
    pub fn from_files(fqdn: &str, service: &str) -> ServedName {
        ServedName { fqdn: fqdn.to_owned(), service: service.to_owned(), origin: Origin::Files }
    }
}

struct Entry {
    service: String,
    origin: Origin,
    served: ArcSwapOption<ServedCert>,
    state: Mutex<FetchState>,
}

/// A point-in-time view of one name for status output.
#[derive(Debug, Clone, Serialize)]
pub struct EntrySnapshot {
    /// The FQDN.
    pub fqdn: String,
    /// The service it belongs to.
    pub service: String,
    /// Where its certificate comes from.
    pub origin: Origin,
    /// The certificate being served, if any.
    pub cert: Option<CertSnapshot>,
    /// Fetch state.
    pub state: FetchState,
}

/// The served certificate's facts.
#[derive(Debug, Clone, Serialize)]
pub struct CertSnapshot {
    /// Leaf `notBefore` (unix seconds).
    pub not_before: u64,
    /// Leaf `notAfter` (unix seconds).
    pub not_after: u64,
    /// Leaf serial (hex).
    pub serial: String,
    /// Issuer DN.
    pub issuer: String,
    /// `tailscaled`, `cache` or `file`.
    pub source: crate::CertSource,
}

/// All names this router serves, with their certificates.
#[derive(Default)]
pub struct CertStore {
    entries: ArcSwap<HashMap<String, Arc<Entry>>>,
    /// Per `[domains]` entry with a wildcard certificate: that certificate, for names
    /// under the domain that no service has (answered with a 404 page, not a failed
    /// handshake).
    fallbacks: ArcSwap<HashMap<String, Arc<ServedCert>>>,
    // Serializes writers of `entries` (readers never lock).
    write: Mutex<()>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("names", &self.entries.load().len()).finish()
    }
}

impl CertStore {
    /// An empty store.
    pub fn new() -> CertStore {
        CertStore::default()
    }

    /// Makes the served set exactly `names`. Names that stay (same service, same origin)
    /// keep their certificate and state; new names start without a certificate.
    pub fn set_names(&self, names: &[ServedName]) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.entries.load();
        let mut next = HashMap::with_capacity(names.len());
        for name in names {
            let fqdn = normalize(&name.fqdn);
            let entry = match old.get(&fqdn) {
                Some(e) if e.service == name.service && e.origin == name.origin => Arc::clone(e),
                _ => Arc::new(Entry {
                    service: name.service.clone(),
                    origin: name.origin,
                    served: ArcSwapOption::empty(),
                    state: Mutex::new(FetchState::default()),
                }),
            };
            next.insert(fqdn, entry);
        }
        self.entries.store(Arc::new(next));
    }

    /// The FQDNs currently served, sorted.
    pub fn names(&self) -> Vec<String> {
        self.names_from(None)
    }

    /// The FQDNs whose certificate comes from `origin` (every name for `None`), sorted.
    pub fn names_from(&self, origin: Option<Origin>) -> Vec<String> {
        let entries = self.entries.load();
        let mut v: Vec<String> =
            entries.iter().filter(|(_, e)| origin.is_none_or(|o| e.origin == o)).map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    }

    /// What to do with a ClientHello naming `sni`. Case and a trailing dot are ignored.
    pub fn lookup(&self, sni: &str) -> Lookup {
        let entries = self.entries.load();
        let entry = match entries.get(sni) {
            Some(e) => e,
            None => match entries.get(&normalize(sni)) {
                Some(e) => e,
                None => return self.fallback(&normalize(sni)),
            },
        };
        if let Some(served) = entry.served.load().as_ref() {
            return Lookup::Ready(Arc::clone(&served.certified));
        }
        let state = entry.state.lock().unwrap_or_else(|p| p.into_inner());
        let reason = match (&state.last_error, state.in_flight) {
            (Some(err), _) => err.clone(),
            (None, true) => {
                "the first certificate request to tailscaled is still in progress (first issuance can take minutes)"
                    .to_owned()
            }
            (None, false) => "no certificate has been requested yet".to_owned(),
        };
        Lookup::NotReady { service: entry.service.clone(), reason }
    }

    /// An unknown name under (or of) a domain whose wildcard certificate covers it.
    fn fallback(&self, name: &str) -> Lookup {
        let fallbacks = self.fallbacks.load();
        let under = fallbacks.iter().filter(|(domain, _)| {
            name == domain.as_str() || name.strip_suffix(domain.as_str()).is_some_and(|h| h.ends_with('.'))
        });
        match under.map(|(_, c)| c).find(|c| c.covers(name)) {
            Some(cert) => Lookup::Ready(Arc::clone(&cert.certified)),
            None => Lookup::Unknown,
        }
    }

    /// Serves `cert` for unknown names under `domain` (`None`: no longer).
    pub fn set_fallback(&self, domain: &str, cert: Option<ServedCert>) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::clone(&self.fallbacks.load());
        match cert {
            Some(c) => next.insert(domain.to_owned(), Arc::new(c)),
            None => next.remove(domain),
        };
        self.fallbacks.store(Arc::new(next));
    }

    /// Keeps only the fallbacks of `domains`.
    pub fn retain_fallbacks(&self, domains: &[String]) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::clone(&self.fallbacks.load());
        next.retain(|d, _| domains.contains(d));
        self.fallbacks.store(Arc::new(next));
    }

    /// The certificate currently served for `fqdn`.
    pub fn current(&self, fqdn: &str) -> Option<Arc<ServedCert>> {
        self.entries.load().get(fqdn)?.served.load_full()
    }

    /// Whether `fqdn` is configured.
    pub fn contains(&self, fqdn: &str) -> bool {
        self.entries.load().contains_key(fqdn)
    }

    /// Swaps in a new certificate for `fqdn` (no-op for unknown names). Returns whether
    /// the name is still configured.
    pub fn install(&self, fqdn: &str, cert: ServedCert) -> bool {
        let entries = self.entries.load();
        let Some(entry) = entries.get(fqdn) else { return false };
        entry.served.store(Some(Arc::new(cert)));
        true
    }

    /// Updates the fetch state of `fqdn` in place.
    pub fn update_state(&self, fqdn: &str, f: impl FnOnce(&mut FetchState)) {
        let entries = self.entries.load();
        if let Some(entry) = entries.get(fqdn) {
            f(&mut entry.state.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// A snapshot of every name, sorted by FQDN.
    pub fn snapshot(&self) -> Vec<EntrySnapshot> {
        let entries = self.entries.load();
        let mut out: Vec<EntrySnapshot> = entries
            .iter()
            .map(|(fqdn, e)| EntrySnapshot {
                fqdn: fqdn.clone(),
                service: e.service.clone(),
                origin: e.origin,
                cert: e.served.load().as_ref().map(|c| CertSnapshot {
                    not_before: unix(c.not_before),
                    not_after: unix(c.not_after),
                    serial: c.serial.clone(),
                    issuer: c.issuer.clone(),
                    source: c.source,
                }),
                state: e.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            })
            .collect();
        out.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
        out
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.lookup(hello.server_name()?) {
            Lookup::Ready(key) => Some(key),
            _ => None,
        }
    }
}

/// Lowercases and drops one trailing dot.
pub(crate) fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

mod opt_unix {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::unix(*t)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_not_ready() {
        let store = CertStore::new();
        store.set_names(&[ServedName::tailscaled("grafana.x.ts.net", "grafana")]);
        assert!(matches!(store.lookup("other.x.ts.net"), Lookup::Unknown));
        match store.lookup("Grafana.X.ts.net.") {
            Lookup::NotReady { service, reason } => {
                assert_eq!(service, "grafana");
                assert!(reason.contains("no certificate has been requested"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        store.update_state("grafana.x.ts.net", |s| s.last_error = Some("cert access denied".into()));
        match store.lookup("grafana.x.ts.net") {
            Lookup::NotReady { reason, .. } => assert_eq!(reason, "cert access denied"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_names_keeps_state_of_kept_names() {
        let store = CertStore::new();
        store.set_names(&[ServedName::tailscaled("a.x", "a"), ServedName::tailscaled("b.x", "b")]);
        store.update_state("a.x", |s| s.failures = 3);
        let files = ServedName::from_files("c.x", "c");
        store.set_names(&[ServedName::tailscaled("a.x", "a"), files]);
        assert_eq!(store.names(), vec!["a.x", "c.x"]);
        assert_eq!(store.names_from(Some(Origin::Tailscaled)), vec!["a.x"]);
        assert_eq!(store.names_from(Some(Origin::Files)), vec!["c.x"]);
        let snap = store.snapshot();
        assert_eq!(snap[0].state.failures, 3);
        assert_eq!(snap[1].state.failures, 0);
    }
}
