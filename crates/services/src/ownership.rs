//! The record of what snirouter itself added to tailscaled (`<cache.dir>/services.json`),
//! so that removing a service from the config removes exactly that and nothing else; with
//! it, what the last sync was for and the drift syncs put back (read by `status` and
//! `doctor`, whichever process wrote it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::serve::SERVICE_PORT;

/// File name of the record inside `[cache] dir`.
pub const OWNERSHIP_FILE: &str = "services.json";

/// What snirouter added for one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owned {
    /// The serve-config handler snirouter wrote at `Services[svc].TCP["443"]`, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<Value>,
    /// `true` when snirouter added the name to `AdvertiseServices` (it was not there before).
    #[serde(default)]
    pub advertised: bool,
    /// The handlers snirouter wrote for the service's `tcp` ports, by port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tcp: BTreeMap<u16, Value>,
}

impl Owned {
    fn is_empty(&self) -> bool {
        self.handler.is_none() && !self.advertised && self.tcp.is_empty()
    }

    /// The handler snirouter wrote at `TCP[port]`, if it did.
    pub fn handler(&self, port: u16) -> Option<&Value> {
        if port == SERVICE_PORT { self.handler.as_ref() } else { self.tcp.get(&port) }
    }

    /// Records (`Some`) or forgets (`None`) the handler at `TCP[port]`.
    pub(crate) fn set_handler(&mut self, port: u16, handler: Option<Value>) {
        match (port == SERVICE_PORT, handler) {
            (true, h) => self.handler = h,
            (false, Some(h)) => {
                self.tcp.insert(port, h);
            }
            (false, None) => {
                self.tcp.remove(&port);
            }
        }
    }

    /// Every port with a handler snirouter wrote, 443 first.
    pub fn ports(&self) -> Vec<u16> {
        self.handler.iter().map(|_| SERVICE_PORT).chain(self.tcp.keys().copied()).collect()
    }
}

/// The whole record, keyed by `svc:NAME`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    /// Format version (1).
    #[serde(default)]
    pub version: u32,
    /// Per service.
    #[serde(default)]
    pub services: BTreeMap<String, Owned>,
    /// What the last sync was for ([`crate::Desired::local_fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_for: Option<Value>,
    /// Changes by something else that a sync put back, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// Changes by something else to what snirouter owns in tailscaled, put back by a sync of
/// the same config (the running router's check, the root timer of a non-root install, or
/// `services sync` by hand).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// How many syncs put something back.
    pub healed: u64,
    /// When the last one did (unix seconds).
    pub last_at: u64,
    /// What it put back (plan lines).
    pub last_changes: Vec<String>,
}

impl Ownership {
    /// The record's path for a cache directory.
    pub fn path(cache_dir: &Path) -> PathBuf {
        cache_dir.join(OWNERSHIP_FILE)
    }

    /// Reads the record; a missing file is an empty record.
    pub fn load(cache_dir: &Path) -> Result<Ownership, Error> {
        let path = Ownership::path(cache_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Ownership { path, source: e.into() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ownership { version: 1, ..Default::default() }),
            Err(source) => Err(Error::Ownership { path, source }),
        }
    }

    /// Writes the record atomically (temp file, fsync, rename), creating the directory.
    pub fn save(&self, cache_dir: &Path) -> Result<(), Error> {
        let path = Ownership::path(cache_dir);
        let err = |source| Error::Ownership { path: path.clone(), source };
        std::fs::create_dir_all(cache_dir).map_err(err)?;
        let mut clean = self.clone();
        clean.version = 1;
        clean.services.retain(|_, o| !o.is_empty());
        let json = serde_json::to_vec_pretty(&clean).map_err(|e| err(e.into()))?;
        let tmp = cache_dir.join(format!(".{OWNERSHIP_FILE}.tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }

    /// Whether the last sync was for `desired`'s local side (its services and handlers).
    pub fn is_synced_for(&self, desired: &crate::Desired) -> bool {
        self.synced_for.as_ref() == Some(&desired.local_fingerprint())
    }

    /// The entry for `service` (empty if none).
    pub fn get(&self, service: &str) -> Owned {
        self.services.get(service).cloned().unwrap_or_default()
    }

    /// Mutable entry for `service`, created empty.
    pub(crate) fn entry(&mut self, service: &str) -> &mut Owned {
        self.services.entry(service.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("state");
        assert!(Ownership::load(&dir).expect("missing is empty").services.is_empty());
        let mut o = Ownership::default();
        o.entry("svc:a").handler = Some(serde_json::json!({"TCPForward": "127.0.0.1:1", "ProxyProtocol": 2}));
        o.entry("svc:b").advertised = true;
        o.entry("svc:b").set_handler(22, Some(serde_json::json!({"TCPForward": "127.0.0.1:2222"})));
        o.entry("svc:c"); // empty entries are not written
        o.save(&dir).expect("save");
        let back = Ownership::load(&dir).expect("load");
        assert_eq!(back.services.len(), 2);
        assert_eq!(back.get("svc:a"), o.get("svc:a"));
        assert!(back.get("svc:b").advertised);
        assert_eq!(back.get("svc:b").ports(), [22]);
        assert!(back.get("svc:b").handler(22).is_some() && back.get("svc:b").handler(443).is_none());
        std::fs::write(Ownership::path(&dir), b"{not json").expect("write");
        assert!(matches!(Ownership::load(&dir), Err(Error::Ownership { .. })));
    }
}
