//! A throw-away test certificate authority shaped like Let's Encrypt's: a
//! self-signed root ("snirouter test root") and an intermediate signed by it.
//! Leaves are ECDSA P-256 with the key in Go's `x509.MarshalECPrivateKey`
//! (SEC1, `EC PRIVATE KEY`) PEM form, exactly what tailscaled hands out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber, date_time_ymd,
};
use ring::rand::SecureRandom;

use crate::gofmt::hex;

/// Errors from the test CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused to build or sign a certificate (e.g. a domain that is not
    /// a valid IA5 string).
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The PKCS#8 → SEC1 key conversion met an unexpected structure.
    #[error("malformed private key DER: {0}")]
    Der(&'static str),
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// A certificate issued by [`TestCa::issue`].
#[derive(Clone, Debug)]
pub struct IssuedPair {
    /// `-----BEGIN EC PRIVATE KEY-----` (SEC1) PEM of the leaf key.
    pub key_pem: String,
    /// Leaf `CERTIFICATE` PEM block followed by the intermediate's.
    pub chain_pem: String,
    /// Lower-case hex of the leaf's serial number (as in the DER INTEGER).
    pub serial: String,
    /// Leaf `notAfter`, truncated to whole seconds like the certificate.
    pub not_after: SystemTime,
    /// Leaf `notBefore`, truncated to whole seconds.
    pub not_before: SystemTime,
}

/// A test root + intermediate CA. Cheap to share behind an `Arc`.
pub struct TestCa {
    root_pem: String,
    intermediate_pem: String,
    intermediate: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// Create a fresh root and intermediate (new keys every call).
    ///
    /// # Panics
    /// Only if key generation or self-signing fails, which does not depend on
    /// any input; use [`TestCa::try_new`] to get the error instead.
    pub fn new() -> TestCa {
        Self::try_new().expect("generating the test CA cannot fail with fixed parameters")
    }

    /// Fallible form of [`TestCa::new`].
    pub fn try_new() -> Result<TestCa, CaError> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut root_params = CertificateParams::new(Vec::<String>::new())?;
        root_params.distinguished_name = dn("snirouter test root");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        root_params.not_before = date_time_ymd(2020, 1, 1);
        root_params.not_after = date_time_ymd(2099, 12, 31);
        root_params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(root_params, root_key);

        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut int_params = CertificateParams::new(Vec::<String>::new())?;
        int_params.distinguished_name = dn("snirouter test intermediate E1");
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        int_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        int_params.use_authority_key_identifier_extension = true;
        int_params.not_before = date_time_ymd(2020, 1, 1);
        int_params.not_after = date_time_ymd(2099, 12, 30);
        int_params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let int_cert = int_params.signed_by(&int_key, &root)?;

        Ok(TestCa {
            root_pem: pem_encode("CERTIFICATE", root_cert.der()),
            intermediate_pem: pem_encode("CERTIFICATE", int_cert.der()),
            intermediate: Issuer::new(int_params, int_key),
        })
    }

    /// PEM of the self-signed root: what clients under test should trust.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// PEM of the intermediate (also the second block of every chain).
    pub fn intermediate_pem(&self) -> String {
        self.intermediate_pem.clone()
    }

    /// Issue a leaf for `domain` (`*.x` also gets `x`) with a fresh P-256 key
    /// and a random serial.
    ///
    /// # Panics
    /// If rcgen rejects the domain; use [`TestCa::try_issue`] for untrusted input.
    pub fn issue(&self, domain: &str, not_before: SystemTime, not_after: SystemTime) -> IssuedPair {
        self.try_issue(domain, not_before, not_after).expect("issuing a test certificate")
    }

    /// Fallible form of [`TestCa::issue`].
    pub fn try_issue(
        &self,
        domain: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedPair, CaError> {
        let mut sans = vec![domain.to_string()];
        if let Some(base) = domain.strip_prefix("*.") {
            sans.push(base.to_string());
        }
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = dn(domain);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let nb = truncate_secs(not_before);
        let na = truncate_secs(not_after);
        params.not_before = at(date_time_ymd(1970, 1, 1), nb);
        params.not_after = at(date_time_ymd(1970, 1, 1), na);
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.intermediate)?;
        let sec1 = pkcs8_p256_to_sec1(&key.serialize_der(), key.public_key_raw())?;

        let mut chain_pem = pem_encode("CERTIFICATE", cert.der());
        chain_pem.push_str(&self.intermediate_pem);
        Ok(IssuedPair {
            key_pem: pem_encode("EC PRIVATE KEY", &sec1),
            chain_pem,
            serial: hex(&serial),
            not_after: na,
            not_before: nb,
        })
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn truncate_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(e) => UNIX_EPOCH - Duration::from_secs(e.duration().as_secs()),
    }
}

/// Shift rcgen's epoch value (`OffsetDateTime`) to `t`, without naming the
/// `time` crate's type.
fn at<T>(epoch: T, t: SystemTime) -> T
where
    T: std::ops::Add<Duration, Output = T> + std::ops::Sub<Duration, Output = T>,
{
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => epoch + d,
        Err(e) => epoch - e.duration(),
    }
}

/// 16 random bytes forming a positive DER INTEGER without leading zero.
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| CaError::Rng)?;
    b[0] = (b[0] & 0x7f).max(1);
    Ok(b)
}

/// PEM-encode `der` with `label`, 64-column base64 lines, LF endings (Go's
/// `pem.Encode` layout).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = crate::gofmt::base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// ---------------------------------------------------------------------------
// PKCS#8 → SEC1 (RFC 5915) conversion.

/// DER OID content bytes of id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER OID content bytes of prime256v1 (1.2.840.10045.3.1.7).
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Read one DER TLV; returns (tag, contents, rest).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CaError> {
    let (&tag, rest) = input.split_first().ok_or(CaError::Der("truncated tag"))?;
    let (&l0, rest) = rest.split_first().ok_or(CaError::Der("truncated length"))?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(CaError::Der("bad length"));
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = len << 8 | b as usize;
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(CaError::Der("truncated contents"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn write_tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(contents);
}

/// Convert a P-256 PKCS#8 `PrivateKeyInfo` into the SEC1 `ECPrivateKey` that Go's
/// `x509.MarshalECPrivateKey` produces:
/// `SEQUENCE { INTEGER 1, OCTET STRING d(32), [0] { OID prime256v1 }, [1] { BIT STRING Q } }`.
///
/// `public_key_raw` (uncompressed point) is used if the PKCS#8 document does not
/// carry the public key itself.
pub fn pkcs8_p256_to_sec1(pkcs8: &[u8], public_key_raw: &[u8]) -> Result<Vec<u8>, CaError> {
    let (tag, body, _) = read_tlv(pkcs8)?;
    if tag != 0x30 {
        return Err(CaError::Der("PrivateKeyInfo is not a SEQUENCE"));
    }
    let (tag, version, rest) = read_tlv(body)?;
    if tag != 0x02 || (version != [0] && version != [1]) {
        return Err(CaError::Der("unexpected PKCS#8 version"));
    }
    let (tag, alg, rest) = read_tlv(rest)?;
    if tag != 0x30 {
        return Err(CaError::Der("AlgorithmIdentifier is not a SEQUENCE"));
    }
    let (t1, oid1, alg_rest) = read_tlv(alg)?;
    let (t2, oid2, _) = read_tlv(alg_rest)?;
    if t1 != 0x06 || oid1 != OID_EC_PUBLIC_KEY || t2 != 0x06 || oid2 != OID_PRIME256V1 {
        return Err(CaError::Der("not an ECDSA P-256 key"));
    }
    let (tag, inner, _) = read_tlv(rest)?;
    if tag != 0x04 {
        return Err(CaError::Der("privateKey is not an OCTET STRING"));
    }
    let (d, pubkey_bits) = parse_ec_private_key(inner)?;
    let pubkey_bits = match pubkey_bits {
        Some(b) => b,
        None => {
            if public_key_raw.len() != 65 || public_key_raw[0] != 0x04 {
                return Err(CaError::Der("no usable public key"));
            }
            let mut b = vec![0u8];
            b.extend_from_slice(public_key_raw);
            b
        }
    };

    Ok(encode_sec1(d, &pubkey_bits))
}

/// The scalar and, when present, the public key BIT STRING of a DER `ECPrivateKey`
/// (RFC 5915) whose parameters, if any, name prime256v1.
fn parse_ec_private_key(inner: &[u8]) -> Result<(&[u8], Option<Vec<u8>>), CaError> {
    let (tag, ec, _) = read_tlv(inner)?;
    if tag != 0x30 {
        return Err(CaError::Der("ECPrivateKey is not a SEQUENCE"));
    }
    let (tag, ver, mut rest) = read_tlv(ec)?;
    if tag != 0x02 || ver != [1] {
        return Err(CaError::Der("unexpected ECPrivateKey version"));
    }
    let (tag, d, r) = read_tlv(rest)?;
    if tag != 0x04 || d.is_empty() || d.len() > 32 {
        return Err(CaError::Der("bad private key octets"));
    }
    rest = r;
    let mut pubkey_bits: Option<Vec<u8>> = None;
    while !rest.is_empty() {
        let (tag, contents, r) = read_tlv(rest)?;
        rest = r;
        match tag {
            0xa0 => {
                let (t, oid, _) = read_tlv(contents)?;
                if t != 0x06 || oid != OID_PRIME256V1 {
                    return Err(CaError::Der("ECPrivateKey parameters are not prime256v1"));
                }
            }
            0xa1 => {
                let (t, bits, _) = read_tlv(contents)?;
                if t != 0x03 {
                    return Err(CaError::Der("publicKey is not a BIT STRING"));
                }
                pubkey_bits = Some(bits.to_vec());
            }
            _ => return Err(CaError::Der("unexpected ECPrivateKey field")),
        }
    }
    Ok((d, pubkey_bits))
}

/// A SEC1 `EC PRIVATE KEY` as Go writes it: version 1, the 32-byte scalar, the
/// prime256v1 OID and the public key.
fn encode_sec1(d: &[u8], pubkey_bits: &[u8]) -> Vec<u8> {
    // Go pads the scalar to the curve size (32 bytes).
    let mut d32 = vec![0u8; 32 - d.len()];
    d32.extend_from_slice(d);

    let mut body = Vec::with_capacity(121);
    write_tlv(&mut body, 0x02, &[1]);
    write_tlv(&mut body, 0x04, &d32);
    let mut oid = Vec::new();
    write_tlv(&mut oid, 0x06, OID_PRIME256V1);
    write_tlv(&mut body, 0xa0, &oid);
    let mut bits = Vec::new();
    write_tlv(&mut bits, 0x03, pubkey_bits);
    write_tlv(&mut body, 0xa1, &bits);
    let mut out = Vec::with_capacity(body.len() + 2);
    write_tlv(&mut out, 0x30, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn sec1_layout_matches_go() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = pkcs8_p256_to_sec1(&key.serialize_der(), key.public_key_raw()).unwrap();
        // Go's MarshalECPrivateKey for P-256 is always 121 bytes:
        // 30 77 | 02 01 01 | 04 20 <32> | a0 0a 06 08 <oid> | a1 44 03 42 00 04 <64>
        assert_eq!(sec1.len(), 121);
        assert_eq!(&sec1[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
        assert_eq!(&sec1[39..51], &[0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
        assert_eq!(&sec1[51..56], &[0xa1, 0x44, 0x03, 0x42, 0x00]);
        assert_eq!(&sec1[56..], key.public_key_raw());
    }

    #[test]
    fn sec1_conversion_rejects_garbage() {
        assert!(pkcs8_p256_to_sec1(&[], &[]).is_err());
        assert!(pkcs8_p256_to_sec1(&[0x30, 0x05, 0x02], &[]).is_err());
        assert!(pkcs8_p256_to_sec1(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[]).is_err());
        // An RSA-ish AlgorithmIdentifier is refused.
        let bogus = [0x30, 0x0d, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x04, 0x00];
        assert!(pkcs8_p256_to_sec1(&bogus, &[]).is_err());
    }

    #[test]
    fn issued_key_parses_as_sec1_and_rustls_accepts_it() {
        let ca = TestCa::new();
        let pair = ca.issue("storage.example.ts.net", now(), now() + Duration::from_secs(3600));
        assert!(pair.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        assert!(pair.key_pem.ends_with("-----END EC PRIVATE KEY-----\n"));
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
        assert!(matches!(key, PrivateKeyDer::Sec1(_)), "{key:?}");
        rustls::crypto::ring::sign::any_supported_type(&key).expect("rustls accepts SEC1 key");
    }

    #[test]
    fn chain_verifies_against_root() {
        let ca = TestCa::new();
        let pair = ca.issue("*.storage.example.ts.net", now(), now() + Duration::from_secs(3600));
        assert_eq!(pair.serial.len(), 32);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pair.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(certs.len(), 2);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        for name in ["a.storage.example.ts.net", "storage.example.ts.net"] {
            verifier
                .verify_server_cert(&certs[0], &certs[1..], &ServerName::try_from(name).unwrap(), &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            verifier
                .verify_server_cert(
                    &certs[0],
                    &certs[1..],
                    &ServerName::try_from("other.example.ts.net").unwrap(),
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );
    }

    #[test]
    fn pem_lines_are_64_columns() {
        let p = pem_encode("X", &[7u8; 100]);
        for line in p.lines() {
            assert!(line.len() <= 64 || line.starts_with("-----"));
        }
    }
}
