//! A certificate that is ready to be served: the rustls key plus what we know about
//! its leaf (validity, serial, issuer, names).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

/// Where a served certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertSource {
    /// Fetched from tailscaled's LocalAPI by this process.
    Tailscaled,
    /// Loaded from the disk cache at start.
    Cache,
    /// Read from the PEM files of a `[domains]` entry.
    File,
}

/// Why a key and chain cannot be served for a name.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The chain is empty.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// The leaf is not parseable X.509.
    #[error("the leaf certificate is not valid X.509: {0}")]
    BadLeaf(String),
    /// The leaf does not name the domain.
    #[error("the leaf certificate is for {names:?}, not {domain}")]
    WrongName {
        /// The name we wanted.
        domain: String,
        /// The names in the leaf's subjectAltName.
        names: Vec<String>,
    },
    /// The certificate has expired.
    #[error("the certificate expired {ago}s ago")]
    Expired {
        /// Seconds since expiry.
        ago: u64,
    },
    /// The key is unusable or does not belong to the leaf.
    #[error("the private key does not fit the certificate: {0}")]
    KeyMismatch(String),
}

/// A parsed, usable certificate for one name.
#[derive(Debug, Clone)]
pub struct ServedCert {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// Leaf `notBefore`.
    pub not_before: SystemTime,
    /// Leaf `notAfter`.
    pub not_after: SystemTime,
    /// Leaf serial, hex.
    pub serial: String,
    /// Leaf issuer, as an RFC 4514 string.
    pub issuer: String,
    /// Where it came from.
    pub source: CertSource,
    /// The leaf's DNS names (subjectAltName), lowercase.
    pub names: Vec<String>,
}

impl ServedCert {
    /// Checks a key and chain for `domain` and makes it servable.
    ///
    /// Refuses an empty chain, a leaf that does not cover `domain`, an expired leaf and a
    /// key that does not belong to the leaf.
    pub fn new(
        domain: &str,
        key: &PrivateKeyDer<'_>,
        chain: Vec<CertificateDer<'static>>,
        source: CertSource,
        now: SystemTime,
    ) -> Result<ServedCert, CertError> {
        let leaf = chain.first().ok_or(CertError::EmptyChain)?;
        let info = LeafInfo::parse(leaf)?;
        if !info.names.iter().any(|n| name_matches(n, domain)) {
            return Err(CertError::WrongName { domain: domain.to_owned(), names: info.names });
        }
        if info.not_after <= now {
            let ago = now.duration_since(info.not_after).unwrap_or_default().as_secs();
            return Err(CertError::Expired { ago });
        }
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key.clone_key(), &provider)
            .map_err(|e| CertError::KeyMismatch(e.to_string()))?;
        Ok(ServedCert {
            certified: Arc::new(certified),
            not_before: info.not_before,
            not_after: info.not_after,
            serial: info.serial,
            issuer: info.issuer,
            source,
            names: info.names,
        })
    }

    /// Whether the leaf covers `name` (lowercase): exactly, or by a one-label wildcard.
    pub fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|san| name_matches(san, name))
    }

    /// Total lifetime of the leaf (`notAfter - notBefore`).
    pub fn lifetime(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }

    /// Time left until `notAfter` (zero when expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

struct LeafInfo {
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
    issuer: String,
    names: Vec<String>,
}

impl LeafInfo {
    fn parse(der: &CertificateDer<'_>) -> Result<LeafInfo, CertError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| CertError::BadLeaf(e.to_string()))?;
        let validity = cert.validity();
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(CertError::BadLeaf(e.to_string())),
        };
        Ok(LeafInfo {
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
            serial: cert.raw_serial_as_string().replace(':', ""),
            issuer: cert.issuer().to_string(),
            names,
        })
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Whether a SAN entry (`a.b.c` or `*.b.c`) covers `domain` (both lowercase).
fn name_matches(san: &str, domain: &str) -> bool {
    if san == domain {
        return true;
    }
    match (san.strip_prefix("*."), domain.split_once('.')) {
        (Some(base), Some((label, rest))) => !label.is_empty() && rest == base,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn san_matching() {
        assert!(name_matches("grafana.x.ts.net", "grafana.x.ts.net"));
        assert!(name_matches("*.storage.x.ts.net", "grafana.storage.x.ts.net"));
        assert!(!name_matches("*.x.ts.net", "a.b.x.ts.net"));
        assert!(!name_matches("storage.x.ts.net", "grafana.x.ts.net"));
    }
}
