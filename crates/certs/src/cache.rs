//! The disk cache: the last good key and chain per name, so that a restart serves at
//! once, before (or without) tailscaled answering.
//!
//! Layout under the cache directory (mode 0700):
//!
//! * `certs/<fqdn>.pem` — key PEM then chain PEM, exactly as tailscaled sent them (0600);
//! * `state.json` — facts that must survive a restart: the tailnet's MagicDNS suffix
//!   (needed to name the services before tailscaled answers) and when each name was
//!   last issued a new certificate (for Let's Encrypt budget warnings).
//!
//! Every write goes to a temporary file in the same directory, is synced, then renamed
//! over the old file, so a crash or a full disk never leaves a half-written file that
//! would later be served. A file that does not parse, names another domain, has
//! expired or whose key does not fit is reported and ignored, never served.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{CertError, CertSource, ServedCert};

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a key followed by a certificate chain.
    #[error(
        "{path}: not a usable key and certificate chain ({detail}); it will be replaced on the next successful fetch"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The file parsed but cannot be served.
    #[error("{path}: {source}; it will be replaced on the next successful fetch")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CertError,
    },
}

/// Facts kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheState {
    /// The tailnet's MagicDNS suffix when last seen.
    #[serde(default)]
    pub magic_dns_suffix: Option<String>,
    /// Per FQDN, unix times at which tailscaled handed out a *new* certificate.
    #[serde(default)]
    pub issued: BTreeMap<String, Vec<u64>>,
}

/// The certificate cache directory. Clones share one lock for `state.json`, so
/// concurrent read-modify-write updates from several names never lose each other's
/// changes.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    state_lock: std::sync::Arc<std::sync::Mutex<()>>,
}

impl DiskCache {
    /// Opens (creating if needed) the cache at `dir` with mode 0700.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DiskCache, CacheError> {
        let dir = dir.into();
        let certs = dir.join("certs");
        // A directory the user made keeps its mode; one made here is private. The keys
        // live in `certs/`, which is always 0700 (and each file 0600).
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_error(&dir))?;
        }
        fs::create_dir_all(&certs).map_err(io_error(&certs))?;
        fs::set_permissions(&certs, fs::Permissions::from_mode(0o700)).map_err(io_error(&certs))?;
        Ok(DiskCache { dir, state_lock: Default::default() })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `fqdn`'s key and chain.
    pub fn cert_path(&self, fqdn: &str) -> PathBuf {
        // FQDNs are validated DNS names (letters, digits, '-', '.'), so they are safe
        // file names; anything else is replaced to be certain.
        let safe: String =
            fqdn.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        self.dir.join("certs").join(format!("{safe}.pem"))
    }

    /// Loads `fqdn` from the cache. `Ok(None)` when there is no file.
    pub fn load(&self, fqdn: &str, now: SystemTime) -> Result<Option<ServedCert>, CacheError> {
        let path = self.cert_path(fqdn);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let pair = snirouter_localapi::parse_pair_pem(&bytes)
            .map_err(|e| CacheError::Corrupt { path: path.clone(), detail: e.to_string() })?;
        let cert = ServedCert::new(fqdn, &pair.key, pair.chain, CertSource::Cache, now)
            .map_err(|source| CacheError::Unusable { path, source })?;
        Ok(Some(cert))
    }

    /// Stores `pem` (key then chain) for `fqdn`, atomically, mode 0600.
    pub fn store(&self, fqdn: &str, pem: &str) -> Result<(), CacheError> {
        write_atomic(&self.cert_path(fqdn), pem.as_bytes())
    }

    /// Reads `state.json` (default when missing or unreadable — it only holds hints).
    pub fn state(&self) -> CacheState {
        let path = self.dir.join("state.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cache state file");
                CacheState::default()
            }),
            Err(_) => CacheState::default(),
        }
    }

    /// Writes `state.json` atomically (callers hold `state_lock`).
    fn write_state(&self, state: &CacheState) -> Result<(), CacheError> {
        let path = self.dir.join("state.json");
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| CacheError::Io { path: path.clone(), source: io::Error::other(e) })?;
        write_atomic(&path, &json)
    }

    /// Updates `state.json` with `f` (read-modify-write).
    pub fn update_state(&self, f: impl FnOnce(&mut CacheState)) -> Result<(), CacheError> {
        let _guard = self.state_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.state();
        f(&mut state);
        self.write_state(&state)
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per write: two writers of the same file must not share a temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{seq}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename durable too.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_error(path))
}

/// Wraps an I/O error with the path it concerns.
fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache directory that does not exist yet, inside a scratch directory removed on drop.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("cache");
        (tmp, dir)
    }

    #[test]
    fn modes_and_atomic_write() {
        let (_tmp, dir) = scratch();
        let cache = DiskCache::open(&dir).expect("open");
        let mode = fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        cache.store("a.x.ts.net", "one").expect("store");
        cache.store("a.x.ts.net", "two").expect("store");
        let path = cache.cert_path("a.x.ts.net");
        assert_eq!(fs::read_to_string(&path).expect("read"), "two");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        // no temp files left behind
        let leftovers: Vec<_> = fs::read_dir(dir.join("certs"))
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn an_existing_directory_keeps_its_mode_and_certs_is_private() {
        let (_tmp, dir) = scratch();
        fs::create_dir_all(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).expect("chmod");
        DiskCache::open(&dir).expect("open");
        assert_eq!(fs::metadata(&dir).expect("meta").permissions().mode() & 0o777, 0o750, "the user's mode");
        let certs = fs::metadata(dir.join("certs")).expect("meta").permissions().mode() & 0o777;
        assert_eq!(certs, 0o700);
    }

    #[test]
    fn corrupt_file_is_reported_not_served() {
        let (_tmp, dir) = scratch();
        let cache = DiskCache::open(&dir).expect("open");
        cache.store("a.x.ts.net", "-----BEGIN GARBAGE-----\nzz\n").expect("store");
        let err = cache.load("a.x.ts.net", SystemTime::now()).expect_err("must not load");
        assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
        assert!(cache.load("missing.x.ts.net", SystemTime::now()).expect("ok").is_none());
    }

    #[test]
    fn concurrent_state_updates_are_not_lost() {
        let (_tmp, dir) = scratch();
        let cache = DiskCache::open(&dir).expect("open");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        cache.update_state(|s| s.issued.entry(format!("n{i}")).or_default().push(j)).expect("update");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        let state = cache.state();
        assert_eq!(state.issued.len(), 8);
        assert!(state.issued.values().all(|v| v.len() == 10));
    }

    #[test]
    fn state_round_trip() {
        let (_tmp, dir) = scratch();
        let cache = DiskCache::open(&dir).expect("open");
        assert_eq!(cache.state(), CacheState::default());
        cache.update_state(|s| s.magic_dns_suffix = Some("t.ts.net".into())).expect("write");
        assert_eq!(cache.state().magic_dns_suffix.as_deref(), Some("t.ts.net"));
    }
}
