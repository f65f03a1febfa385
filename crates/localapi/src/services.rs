//! What tailscaled tells about Tailscale Services without an API key, and its version:
//!
//! * `GET /localapi/v0/services` (1.98+): the Services this node may reach, from its own
//!   netmap (`Self.CapMap["services/…"]`, `tailcfg.ServiceDetails`): name, addresses and
//!   the ports control lists for each — a host's view of its own Services' definitions;
//! * `GET /localapi/v0/usermetrics` (Prometheus text): since 1.102 the bytes of every
//!   Serve connection per Service (`tailscaled_serve_inbound_bytes_total{service="svc:x"}`
//!   and `…_outbound_…`), counted by tailscaled as it forwards them;
//! * [`DaemonVersion`]: the `major.minor.patch` of `Tailscale-Version`, for the gates.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One Service visible to this node (`tailcfg.ServiceDetails`, the parts snirouter reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceDetails {
    /// `svc:NAME`.
    pub name: String,
    /// Optional display name.
    pub display_name: String,
    /// The Service's addresses (IPv4 and IPv6).
    #[serde(deserialize_with = "crate::status::null_default")]
    pub addrs: Vec<IpAddr>,
    /// The ports the definition lists (`tcp:443`, `tcp:8000-8010`, `*`).
    #[serde(deserialize_with = "crate::status::null_default")]
    pub ports: Vec<String>,
}

impl ServiceDetails {
    /// Whether the listed ports include TCP `port`.
    pub fn allows_tcp(&self, port: u16) -> bool {
        ports_allow_tcp(&self.ports, port)
    }
}

/// Whether a Service's port list (`tcp:443`, `tcp:8000-8010`, `tcp:*`, `*`) includes TCP `port`.
pub fn ports_allow_tcp(ports: &[String], port: u16) -> bool {
    ports.iter().any(|p| match (p.as_str(), p.strip_prefix("tcp:")) {
        ("*", _) | (_, Some("*")) => true,
        (_, Some(range)) => match range.split_once('-') {
            Some((a, b)) => matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&port)),
            None => range.parse::<u16>() == Ok(port),
        },
        (_, None) => false,
    })
}

/// Bytes tailscaled forwarded for one Service's Serve connections since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeBytes {
    /// From peers (requests).
    pub inbound: u64,
    /// To peers (answers).
    pub outbound: u64,
}

const INBOUND: &str = "tailscaled_serve_inbound_bytes_total";
const OUTBOUND: &str = "tailscaled_serve_outbound_bytes_total";

/// The per-Service byte counters of a `usermetrics` answer, by `svc:NAME`. Daemons before
/// 1.102 have none (an empty map). Unparsable lines are skipped: the counters are for show.
pub(crate) fn serve_bytes(text: &str) -> BTreeMap<String, ServeBytes> {
    let mut out: BTreeMap<String, ServeBytes> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else { continue };
        let inbound = match name {
            INBOUND => true,
            OUTBOUND => false,
            _ => continue,
        };
        let Some((labels, value)) = rest.rsplit_once('}') else { continue };
        let Some(service) = label(labels, "service") else { continue };
        let Some(value) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let entry = out.entry(service).or_default();
        // Counters are integers; the text format may still write them as floats.
        let value = value.max(0.0) as u64;
        if inbound {
            entry.inbound = value;
        } else {
            entry.outbound = value;
        }
    }
    out
}

/// The value of label `key` in `k1="v1",k2="v2"` (Prometheus escapes `\\`, `\"`, `\n`).
fn label(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let (k, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        if k.trim() == key {
            return Some(value);
        }
        rest = &after[end + 2..];
    }
}

/// tailscaled's version, `major.minor.patch` of `Tailscale-Version` / `Status.Version`
/// (`1.102.4-t3caf7d9e7-g084ee3b64`), for the behaviour gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DaemonVersion {
    /// `1`.
    pub major: u32,
    /// `102`.
    pub minor: u32,
    /// `4` (0 when not written).
    pub patch: u32,
}

impl DaemonVersion {
    /// Parses the leading `major.minor[.patch]`; `None` when it is not there.
    pub fn parse(version: &str) -> Option<DaemonVersion> {
        let mut parts = version.trim().split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(DaemonVersion { major, minor, patch })
    }

    /// Whether this is `major.minor` or later.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for DaemonVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_answer_and_ports() {
        let body = r#"{"svc:git":{"Name":"svc:git","Addrs":["100.100.0.7","fd7a:115c:a1e0::7"],"Ports":["tcp:443","tcp:22"]},
                       "svc:web":{"Name":"svc:web","Ports":["tcp:400-500"]},"svc:any":{"Name":"svc:any","Ports":["*"]},
                       "svc:none":{"Name":"svc:none","Addrs":null,"Ports":null}}"#;
        let m: BTreeMap<String, ServiceDetails> = serde_json::from_str(body).expect("parse");
        assert!(m["svc:git"].allows_tcp(22) && m["svc:git"].allows_tcp(443) && !m["svc:git"].allows_tcp(80));
        assert!(m["svc:web"].allows_tcp(443) && !m["svc:web"].allows_tcp(22));
        assert!(m["svc:any"].allows_tcp(1883));
        assert!(m["svc:none"].ports.is_empty() && !m["svc:none"].allows_tcp(443));
        assert_eq!(m["svc:git"].addrs.len(), 2);
    }

    #[test]
    fn serve_byte_counters_from_usermetrics() {
        let text = "# HELP tailscaled_serve_inbound_bytes_total Bytes received\n\
            # TYPE tailscaled_serve_inbound_bytes_total counter\n\
            tailscaled_serve_inbound_bytes_total{service=\"svc:git\"} 1234\n\
            tailscaled_serve_outbound_bytes_total{service=\"svc:git\"} 5.678e+06\n\
            tailscaled_serve_inbound_bytes_total{service=\"svc:we\\\"ird\",x=\"y\"} 7\n\
            tailscaled_advertised_routes 0\n\
            tailscaled_serve_inbound_bytes_total{service=\"svc:broken\"} nope\n";
        let m = serve_bytes(text);
        assert_eq!(m["svc:git"], ServeBytes { inbound: 1234, outbound: 5_678_000 });
        assert_eq!(m["svc:we\"ird"].inbound, 7);
        assert!(!m.contains_key("svc:broken"));
        assert!(serve_bytes("tailscaled_advertised_routes 0\n").is_empty());
    }

    #[test]
    fn versions() {
        let v = DaemonVersion::parse("1.102.4-t3caf7d9e7-g084ee3b64").expect("parse");
        assert_eq!((v.major, v.minor, v.patch), (1, 102, 4));
        assert!(v.at_least(1, 102) && v.at_least(1, 98) && !v.at_least(1, 103));
        assert_eq!(DaemonVersion::parse("1.98").map(|v| v.patch), Some(0));
        assert!(DaemonVersion::parse("unknown").is_none());
        assert!(DaemonVersion::parse("1.100.0").expect("v") < DaemonVersion::parse("1.102.0").expect("v"));
    }
}
