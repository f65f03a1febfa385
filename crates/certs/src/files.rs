//! Certificates from PEM files: the `[domains]` of the config (NixOS `security.acme`,
//! certbot, a wildcard `*.example.com`), for the names served under them.
//!
//! [`FileCerts`] reads each domain's chain and key, checks them for every name served
//! under the domain ([`ServedCert::new`]: the leaf covers the name, a wildcard covering
//! one label; not expired; the key fits) and swaps them into the [`CertStore`] — new
//! handshakes get the new pair, nothing in flight notices. It re-reads a pair when
//! either file changes (a cheap `stat` every [`POLL`]) and when asked (`SIGHUP`,
//! `snirouter reload`). A pair that cannot be used — unreadable, half-written during a
//! renewal, mismatched, expired, not covering a name — leaves the last good one
//! serving; the failure goes into the name's [`crate::FetchState`] (status, doctor, the
//! renewal-failure metric) and the log, once per change of the files.
//!
//! A wildcard pair (`*.example.com`) also serves names under the domain that no service
//! has, so those get a 404 page over TLS instead of a failed handshake
//! ([`CertStore::set_fallback`]).
//!
//! Keys are read, never written or copied anywhere: the disk cache holds only what
//! tailscaled hands out.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{CertError, CertSource, CertStore, ServedCert};

/// How often the files are checked for changes.
pub const POLL: Duration = Duration::from_secs(5);

/// Largest certificate or key file read (a chain is a few KiB).
const MAX_FILE: u64 = 1 << 20;

/// One domain's files and the names served under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// The domain (`example.com`), for logs.
    pub domain: String,
    /// The chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
    /// The names served with this pair.
    pub names: Vec<String>,
}

/// Why a pair of files cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than any certificate or key.
    #[error("{} is {len} bytes, too large for a certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key block.
    #[error("{} holds no PEM private key", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The pair does not serve a name.
    #[error("{} and {} cannot serve {name}: {source}", cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: CertError,
    },
}

impl FileError {
    /// A stable class for status and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FileError::Read { .. } | FileError::TooLarge { .. } => "file_unreadable",
            FileError::NoCertificate { .. } | FileError::NoKey { .. } => "file_invalid",
            FileError::Unusable { source: CertError::WrongName { .. }, .. } => "file_wrong_name",
            FileError::Unusable { source: CertError::Expired { .. }, .. } => "file_expired",
            FileError::Unusable { source: CertError::KeyMismatch(_), .. } => "file_key_mismatch",
            FileError::Unusable { .. } => "file_invalid",
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            FileError::Read { path, .. } => format!(
                "make {} readable by snirouter's user (NixOS: the domain's security.acme group, services.snirouter.acmeHost)",
                path.display()
            ),
            FileError::TooLarge { path, .. } | FileError::NoCertificate { path } | FileError::NoKey { path } => {
                format!("point the domain at the right file: {} is not a PEM certificate chain / key", path.display())
            }
            FileError::Unusable { source: CertError::WrongName { .. }, name, .. } => format!(
                "issue the certificate for {name} (or *.{}), or move the name to a domain whose certificate covers it",
                name.split_once('.').map_or(name.as_str(), |(_, rest)| rest)
            ),
            FileError::Unusable { source: CertError::Expired { .. }, .. } => {
                "renew the certificate (NixOS: systemctl start acme-DOMAIN.service); snirouter picks it up by itself"
                    .to_owned()
            }
            FileError::Unusable { .. } => {
                "the key and certificate files must be one pair: renew both, or point cert and key at the same issuance"
                    .to_owned()
            }
        }
    }
}

/// A cheap fingerprint of the two files: changes when either is rewritten or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    cert: (u64, u64, i64, i64),
    key: (u64, u64, i64, i64),
}

fn stamp_of(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

impl Stamp {
    fn read(source: &FileSource) -> Option<Stamp> {
        Some(Stamp { cert: stamp_of(&source.cert)?, key: stamp_of(&source.key)? })
    }
}

struct Watched {
    source: FileSource,
    /// The files as last read (successfully or not); `None` forces a read.
    seen: Option<Stamp>,
}

/// The file-sourced certificates of the running router.
pub struct FileCerts {
    store: Arc<CertStore>,
    watched: Mutex<Vec<Watched>>,
}

impl std::fmt::Debug for FileCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCerts").finish_non_exhaustive()
    }
}

impl FileCerts {
    /// Serves file certificates into `store`. Nothing is read until [`FileCerts::set_sources`].
    pub fn new(store: Arc<CertStore>) -> Arc<FileCerts> {
        Arc::new(FileCerts { store, watched: Mutex::new(Vec::new()) })
    }

    /// Watches exactly `sources` (at start and on reload) and reads every one of them now.
    /// Returns the failures, by domain.
    pub fn set_sources(&self, sources: Vec<FileSource>) -> Vec<(String, FileError)> {
        let domains: Vec<String> = sources.iter().map(|s| s.domain.clone()).collect();
        self.store.retain_fallbacks(&domains);
        *self.lock() = sources.into_iter().map(|source| Watched { source, seen: None }).collect();
        self.refresh(true)
    }

    /// Reads the sources whose files changed since they were last read (every source
    /// with `force`: `SIGHUP`, `snirouter reload`). Returns the failures of this round.
    pub fn refresh(&self, force: bool) -> Vec<(String, FileError)> {
        let now = SystemTime::now();
        let mut failures = Vec::new();
        for w in self.lock().iter_mut() {
            let stamp = Stamp::read(&w.source);
            if !force && stamp.is_some() && stamp == w.seen {
                continue;
            }
            w.seen = stamp;
            if let Err(e) = self.apply(&w.source, now) {
                failures.push((w.source.domain.clone(), e));
            }
        }
        failures
    }

    /// Looks at the files every [`POLL`] until `stop` turns `true` (or its sender goes).
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {
                    self.refresh(false);
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads one pair and installs it for each of its names; a name it cannot serve
    /// keeps its last good certificate and records the failure. The first failure is
    /// returned (the others are in the names' states and the log).
    fn apply(&self, source: &FileSource, now: SystemTime) -> Result<(), FileError> {
        let loaded = match load(source, now) {
            Ok(loaded) => loaded,
            Err(e) => {
                for name in &source.names {
                    self.failed(name, &source.domain, &e, now);
                }
                return Err(e);
            }
        };
        self.store.set_fallback(&source.domain, loaded.wildcard);
        let mut first = None;
        for (name, result) in loaded.names {
            match result {
                Ok(cert) => {
                    let fresh = self.store.current(&name).is_none_or(|c| c.serial != cert.serial);
                    if fresh {
                        let days = cert.remaining(now).as_secs() / 86_400;
                        tracing::info!(name = %name, domain = %source.domain, serial = %cert.serial, expires_in_days = days, "serving certificate from files");
                    }
                    self.store.install(&name, cert);
                    self.store.update_state(&name, |s| {
                        s.failures = 0;
                        s.last_success = Some(now);
                        s.last_attempt = Some(now);
                        s.last_error = None;
                        s.last_error_kind = None;
                        s.fix = None;
                    });
                }
                Err(e) => {
                    self.failed(&name, &source.domain, &e, now);
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Records that `name` could not be served from its files (the last good pair stays).
    fn failed(&self, name: &str, domain: &str, e: &FileError, now: SystemTime) {
        let kept = self.store.current(name).is_some();
        tracing::warn!(name = %name, domain = %domain, cause = %e, fix = %e.fix(), kept_last_good = kept, "certificate files not used");
        self.store.update_state(name, |s| {
            s.failures += 1;
            s.total_failures += 1;
            s.last_attempt = Some(now);
            s.last_error = Some(e.to_string());
            s.last_error_kind = Some(e.kind().to_owned());
            s.fix = Some(e.fix());
        });
    }
}

/// What a source's pair can serve.
#[derive(Debug)]
pub struct Loaded {
    /// Each name of the source with its certificate, or why the pair cannot serve it.
    pub names: Vec<(String, Result<ServedCert, FileError>)>,
    /// The pair as a wildcard `*.DOMAIN`, for names under the domain that no service
    /// has (`None`: it is not one).
    pub wildcard: Option<ServedCert>,
}

/// Reads `source`'s pair (`Err`: it cannot be read as one) and checks it for each of its
/// names, and as the domain's wildcard.
pub fn load(source: &FileSource, now: SystemTime) -> Result<Loaded, FileError> {
    let (key, chain) = read_pair(&source.cert, &source.key)?;
    let check = |name: &String| {
        ServedCert::new(name, &key, chain.clone(), CertSource::File, now).map_err(|e| FileError::Unusable {
            cert: source.cert.clone(),
            key: source.key.clone(),
            name: name.clone(),
            source: e,
        })
    };
    let names = source.names.iter().map(|name| (name.clone(), check(name))).collect();
    let wildcard = check(&format!("*.{}", source.domain)).ok();
    Ok(Loaded { names, wildcard })
}

type Pair = (PrivateKeyDer<'static>, Vec<CertificateDer<'static>>);

fn read_pair(cert: &Path, key: &Path) -> Result<Pair, FileError> {
    let chain_pem = read_capped(cert)?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&chain_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(FileError::NoCertificate { path: cert.to_owned() });
    }
    let key_pem = read_capped(key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| FileError::NoKey { path: key.to_owned() })?;
    Ok((key, chain))
}

fn read_capped(path: &Path) -> Result<Vec<u8>, FileError> {
    let read = |source| FileError::Read { path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_FILE {
        return Err(FileError::TooLarge { path: path.to_owned(), len });
    }
    std::fs::read(path).map_err(read)
}
