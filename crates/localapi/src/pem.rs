//! Parsing of the `GET /cert/<fqdn>?type=pair` body: one private-key PEM block followed by the
//! certificate chain (leaf first).

use std::fmt;

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use crate::Error;

/// A private key and its certificate chain as returned by tailscaled.
pub struct CertPair {
    /// The private key (tailscaled sends an ECDSA P-256 `EC PRIVATE KEY`, SEC1).
    pub key: PrivateKeyDer<'static>,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The raw response body (key PEM then certificate PEMs), for the disk cache.
    pub pem: String,
}

impl Clone for CertPair {
    fn clone(&self) -> Self {
        CertPair { key: self.key.clone_key(), chain: self.chain.clone(), pem: self.pem.clone() }
    }
}

impl fmt::Debug for CertPair {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key_kind = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "PKCS#1 RSA",
            PrivateKeyDer::Sec1(_) => "SEC1 EC",
            PrivateKeyDer::Pkcs8(_) => "PKCS#8",
            _ => "other",
        };
        f.debug_struct("CertPair")
            .field("key", &format_args!("<{key_kind} private key, redacted>"))
            .field("chain_len", &self.chain.len())
            .field("pem_len", &self.pem.len())
            .finish()
    }
}

fn label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "unsupported",
    }
}

fn bad(detail: impl Into<String>) -> Error {
    Error::BadResponse {
        what: "a PEM private key followed by at least one CERTIFICATE".to_owned(),
        detail: detail.into(),
    }
}

/// Parses a `type=pair` body: exactly one private key block (`EC PRIVATE KEY`, `PRIVATE KEY` or
/// `RSA PRIVATE KEY`) followed by one or more `CERTIFICATE` blocks.
///
/// Uses real PEM block parsing (not the Go client's `"--\n--"` split). Rejects: no blocks,
/// no key, a key after a certificate, two keys, zero certificates, other block types, and
/// blocks whose label this parser does not recognise.
pub fn parse_pair_pem(body: &[u8]) -> Result<CertPair, Error> {
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("body is not UTF-8 ({e})")))?;
    let mut key: Option<PrivateKeyDer<'static>> = None;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();

    for (index, item) in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(body).enumerate() {
        let (kind, der) = item.map_err(|e| bad(format!("PEM block #{} is malformed: {e}", index + 1)))?;
        seen.push(label(kind));
        let key_der = match kind {
            SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
            SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
            SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
            SectionKind::Certificate => {
                if key.is_none() {
                    return Err(bad(format!(
                        "found a CERTIFICATE before any private key (blocks so far: {})",
                        seen.join(", ")
                    )));
                }
                chain.push(CertificateDer::from(der));
                None
            }
            other => {
                return Err(bad(format!("unexpected {} block #{}", label(other), index + 1)));
            }
        };
        if let Some(k) = key_der {
            if key.is_some() {
                return Err(bad(format!("found more than one private key (blocks: {})", seen.join(", "))));
            }
            if !chain.is_empty() {
                return Err(bad(format!("found a private key after the certificates (blocks: {})", seen.join(", "))));
            }
            key = Some(k);
        }
    }

    // pki-types silently skips sections with labels it does not know; count BEGIN lines to notice.
    let begins = text.lines().filter(|l| l.trim_start().starts_with("-----BEGIN ")).count();
    if begins != seen.len() {
        let unknown: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .filter_map(|l| l.strip_suffix("-----"))
            .filter(|l| !seen.contains(l))
            .collect();
        return Err(bad(format!("found unrecognised PEM block(s): {}", unknown.join(", "))));
    }

    let Some(key) = key else {
        return Err(if seen.is_empty() {
            bad(format!("no PEM blocks found; body starts with {:?}", snippet(text)))
        } else {
            bad(format!("no private key (blocks: {})", seen.join(", ")))
        });
    };
    if chain.is_empty() {
        return Err(bad(format!("no CERTIFICATE after the private key (blocks: {})", seen.join(", "))));
    }
    Ok(CertPair { key, chain, pem: text.to_owned() })
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 60 { format!("{}…", t.chars().take(60).collect::<String>()) } else { t.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Generated {
        key_pem: String,
        leaf_pem: String,
        ca_pem: String,
    }

    fn generate() -> Generated {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["grafana.bat-boa.ts.net".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Generated { key_pem: sec1_pem(&leaf_key), leaf_pem: leaf.pem(), ca_pem: ca.pem() }
    }

    /// tailscaled sends `EC PRIVATE KEY` (SEC1); rcgen serializes PKCS#8, so re-wrap the
    /// PKCS#8 key's inner SEC1 structure for a faithful fixture.
    fn sec1_pem(key: &rcgen::KeyPair) -> String {
        let pkcs8 = key.serialize_der();
        // PKCS#8 PrivateKeyInfo: SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING { SEC1 } }.
        // Find the OCTET STRING (0x04) after the AlgorithmIdentifier and take its content.
        let sec1 = extract_pkcs8_inner(&pkcs8).expect("pkcs8 structure");
        pem_encode("EC PRIVATE KEY", sec1)
    }

    fn der_len(b: &[u8]) -> Option<(usize, usize)> {
        let first = *b.first()?;
        if first < 0x80 {
            return Some((first as usize, 1));
        }
        let n = (first & 0x7f) as usize;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(1 + i)? as usize;
        }
        Some((len, 1 + n))
    }

    fn extract_pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
        // outer SEQUENCE
        if der.first()? != &0x30 {
            return None;
        }
        let (_, l) = der_len(&der[1..])?;
        let mut p = 1 + l;
        // version INTEGER
        if der.get(p)? != &0x02 {
            return None;
        }
        let (len, l) = der_len(&der[p + 1..])?;
        p += 1 + l + len;
        // AlgorithmIdentifier SEQUENCE
        if der.get(p)? != &0x30 {
            return None;
        }
        let (len, l) = der_len(&der[p + 1..])?;
        p += 1 + l + len;
        // privateKey OCTET STRING
        if der.get(p)? != &0x04 {
            return None;
        }
        let (len, l) = der_len(&der[p + 1..])?;
        der.get(p + 1 + l..p + 1 + l + len)
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.len();
            let v = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= n {
                    b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn detail(e: Error) -> String {
        match e {
            Error::BadResponse { detail, .. } => detail,
            other => panic!("expected BadResponse, got {other:?}"),
        }
    }

    #[test]
    fn good_pair_sec1() {
        let g = generate();
        let body = format!("{}{}{}", g.key_pem, g.leaf_pem, g.ca_pem);
        let pair = parse_pair_pem(body.as_bytes()).unwrap();
        assert!(matches!(pair.key, PrivateKeyDer::Sec1(_)));
        assert_eq!(pair.chain.len(), 2);
        assert_eq!(pair.pem, body);
        let dbg = format!("{pair:?}");
        assert!(dbg.contains("redacted") && !dbg.contains("BEGIN"), "{dbg}");
        let cloned = pair.clone();
        assert_eq!(cloned.chain, pair.chain);
        assert_eq!(cloned.key.secret_der(), pair.key.secret_der());
    }

    #[test]
    fn good_pair_pkcs8_and_rsa_labels() {
        let g = generate();
        let key = rcgen::KeyPair::generate().unwrap();
        let body = format!("{}{}", key.serialize_pem(), g.leaf_pem);
        let pair = parse_pair_pem(body.as_bytes()).unwrap();
        assert!(matches!(pair.key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(pair.chain.len(), 1);

        // The parser accepts the RSA label too (no RSA key generation needed to test the label).
        let body = format!("{}{}", pem_encode("RSA PRIVATE KEY", &[0x30, 0x00]), g.leaf_pem);
        assert!(matches!(parse_pair_pem(body.as_bytes()).unwrap().key, PrivateKeyDer::Pkcs1(_)));
    }

    #[test]
    fn key_after_certs_rejected() {
        let g = generate();
        let body = format!("{}{}", g.leaf_pem, g.key_pem);
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("CERTIFICATE before any private key"), "{d}");
        let body = format!("{}{}{}", g.key_pem, g.leaf_pem, g.key_pem);
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("more than one private key"), "{d}");
    }

    #[test]
    fn no_certs_rejected() {
        let g = generate();
        let d = detail(parse_pair_pem(g.key_pem.as_bytes()).unwrap_err());
        assert!(d.contains("no CERTIFICATE"), "{d}");
        assert!(d.contains("EC PRIVATE KEY"), "{d}");
    }

    #[test]
    fn two_keys_rejected() {
        let g = generate();
        let body = format!("{}{}{}", g.key_pem, g.key_pem, g.leaf_pem);
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("more than one private key"), "{d}");
    }

    #[test]
    fn garbage_rejected() {
        let d = detail(parse_pair_pem(b"invalid domain \"x\"; must be one of []\n").unwrap_err());
        assert!(d.contains("no PEM blocks found") && d.contains("invalid domain"), "{d}");
        let d = detail(parse_pair_pem(b"").unwrap_err());
        assert!(d.contains("no PEM blocks"), "{d}");
        let d = detail(parse_pair_pem(b"\xff\xfe").unwrap_err());
        assert!(d.contains("UTF-8"), "{d}");
        // Truncated block.
        let g = generate();
        let cut = &g.leaf_pem[..g.leaf_pem.len() - 20];
        let body = format!("{}{}", g.key_pem, cut);
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("malformed"), "{d}");
        // Bad base64 inside a block.
        let body = format!("{}-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", g.key_pem);
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("malformed"), "{d}");
        // Unknown label.
        let body = format!("{}{}{}", g.key_pem, pem_encode("FOO BAR", &[1, 2, 3]), g.leaf_pem);
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("unrecognised") && d.contains("FOO BAR"), "{d}");
        // Known but unexpected label.
        let body = format!("{}{}", g.key_pem, pem_encode("PUBLIC KEY", &[0x30, 0x00]));
        let d = detail(parse_pair_pem(body.as_bytes()).unwrap_err());
        assert!(d.contains("unexpected PUBLIC KEY"), "{d}");
        // Certificate only.
        let d = detail(parse_pair_pem(g.leaf_pem.as_bytes()).unwrap_err());
        assert!(d.contains("before any private key"), "{d}");
    }
}
