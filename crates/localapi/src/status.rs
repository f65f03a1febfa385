//! Typed subset of `GET /localapi/v0/status` (`ipnstate.Status`) and of the WhoIs answer.
//!
//! Go marshals nil slices and maps as `null`; every list/map field here maps `null` (and
//! absence) to empty. Unknown fields are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Deserializes `null` (or a missing field, together with `#[serde(default)]`) as `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Like [`null_default`] for strings, then trims one trailing `.` (MagicDNS FQDNs end in a dot).
fn fqdn_trim_dot<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let mut s: String = null_default(d)?;
    if s.ends_with('.') {
        s.pop();
    }
    Ok(s)
}

/// The part of tailscaled's status that snirouter needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Status {
    /// Daemon version, e.g. `1.102.4-t3caf7d9e7-g084ee3b64`.
    #[serde(deserialize_with = "null_default")]
    pub version: String,
    /// Backend state; only [`BackendState::Running`] can issue certificates.
    #[serde(deserialize_with = "null_default")]
    pub backend_state: BackendState,
    /// This node's tailnet addresses (empty before login).
    #[serde(rename = "TailscaleIPs", deserialize_with = "null_default")]
    pub tailscale_ips: Vec<IpAddr>,
    /// This node.
    #[serde(rename = "Self")]
    pub self_node: Option<SelfNode>,
    /// Health warnings, e.g. `Tailscale is stopped.` or a `tls-cert-pending` text.
    #[serde(deserialize_with = "null_default")]
    pub health: Vec<String>,
    /// Deprecated top-level alias of [`CurrentTailnet::magic_dns_suffix`].
    #[serde(rename = "MagicDNSSuffix", deserialize_with = "null_default")]
    pub magic_dns_suffix: String,
    /// The tailnet, `None` without a netmap.
    pub current_tailnet: Option<CurrentTailnet>,
    /// Names this node may get certificates for (authoritative for `/cert/`), no trailing dot.
    #[serde(deserialize_with = "null_default")]
    pub cert_domains: Vec<String>,
    /// `Status.Peer`: the other nodes, keyed by node key (the same `ipnstate.PeerStatus`
    /// shape as `Self`; empty when status was asked `?peers=false`).
    #[serde(rename = "Peer", deserialize_with = "null_default")]
    pub peers: BTreeMap<String, SelfNode>,
}

impl Status {
    /// The node with stable ID `id`: this node or a peer.
    pub fn node(&self, id: &str) -> Option<&SelfNode> {
        self.self_node.iter().chain(self.peers.values()).find(|n| n.id == id)
    }

    /// The MagicDNS suffix (`TAILNET.ts.net`): `CurrentTailnet`'s, else the deprecated top-level
    /// field; `None` when both are empty.
    pub fn magic_dns_suffix(&self) -> Option<&str> {
        let from_tailnet = self.current_tailnet.as_ref().map(|t| t.magic_dns_suffix.trim_end_matches('.'));
        match from_tailnet {
            Some(s) if !s.is_empty() => Some(s),
            _ => Some(self.magic_dns_suffix.trim_end_matches('.')).filter(|s| !s.is_empty()),
        }
    }
}

/// `ipn.State` as a string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// `NoState`
    #[default]
    NoState,
    /// `NeedsLogin`
    NeedsLogin,
    /// `NeedsMachineAuth`
    NeedsMachineAuth,
    /// `Stopped`
    Stopped,
    /// `Starting`
    Starting,
    /// `Running`
    Running,
    /// A state this client does not know.
    Other(String),
}

impl BackendState {
    /// The Go spelling.
    pub fn as_str(&self) -> &str {
        match self {
            BackendState::NoState => "NoState",
            BackendState::NeedsLogin => "NeedsLogin",
            BackendState::NeedsMachineAuth => "NeedsMachineAuth",
            BackendState::Stopped => "Stopped",
            BackendState::Starting => "Starting",
            BackendState::Running => "Running",
            BackendState::Other(s) => s,
        }
    }
}

impl From<&str> for BackendState {
    fn from(s: &str) -> Self {
        match s {
            "" | "NoState" => BackendState::NoState,
            "NeedsLogin" => BackendState::NeedsLogin,
            "NeedsMachineAuth" => BackendState::NeedsMachineAuth,
            "Stopped" => BackendState::Stopped,
            "Starting" => BackendState::Starting,
            "Running" => BackendState::Running,
            other => BackendState::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for BackendState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BackendState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: String = null_default(d)?;
        Ok(BackendState::from(s.as_str()))
    }
}

/// `Status.Self` (`ipnstate.PeerStatus`), the subset snirouter uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SelfNode {
    /// Stable node ID, e.g. `nXk3fEXAMPLE11CNTRL`.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Hostinfo hostname (may differ from the DNS label).
    #[serde(deserialize_with = "null_default")]
    pub host_name: String,
    /// MagicDNS FQDN, trailing dot trimmed (`""` before login).
    #[serde(rename = "DNSName", deserialize_with = "fqdn_trim_dot")]
    pub dns_name: String,
    /// ACL tags, e.g. `tag:server` (empty when untagged).
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Whether control considers the node online.
    #[serde(deserialize_with = "null_default")]
    pub online: bool,
    /// Node capabilities (`https`, `service-host`, ...).
    #[serde(deserialize_with = "null_default")]
    pub cap_map: serde_json::Map<String, serde_json::Value>,
    /// The node's addresses.
    #[serde(rename = "TailscaleIPs", deserialize_with = "null_default")]
    pub tailscale_ips: Vec<IpAddr>,
}

impl SelfNode {
    /// The Tailscale Services this node is approved to host and their VIPs, from
    /// `CapMap["service-host"]` (a JSON array of `{"svc:NAME": ["ip", ...]}` objects; several
    /// objects are merged). Tolerates `null`, absence, a bare object, and skips values that are
    /// not lists and addresses that do not parse.
    pub fn service_host(&self) -> BTreeMap<String, Vec<IpAddr>> {
        let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let objects: Vec<&serde_json::Map<String, serde_json::Value>> = match self.cap_map.get("service-host") {
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_object()).collect(),
            Some(serde_json::Value::Object(obj)) => vec![obj],
            _ => Vec::new(),
        };
        for obj in objects {
            for (name, ips) in obj {
                let Some(ips) = ips.as_array() else { continue };
                let entry = out.entry(name.clone()).or_default();
                for ip in ips.iter().filter_map(|v| v.as_str()).filter_map(|s| s.parse::<IpAddr>().ok()) {
                    if !entry.contains(&ip) {
                        entry.push(ip);
                    }
                }
            }
        }
        out
    }

    /// `true` if the node carries the given node capability (e.g. `https`).
    pub fn has_cap(&self, cap: &str) -> bool {
        self.cap_map.contains_key(cap)
    }
}

/// `Status.CurrentTailnet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CurrentTailnet {
    /// Tailnet name, e.g. `someone@example.com` or `example.org`.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// `TAILNET.ts.net`.
    #[serde(rename = "MagicDNSSuffix", deserialize_with = "null_default")]
    pub magic_dns_suffix: String,
    /// Whether MagicDNS is on (required for certificates).
    #[serde(rename = "MagicDNSEnabled", deserialize_with = "null_default")]
    pub magic_dns_enabled: bool,
}

/// One `tailcfg.DNSRecord`: `name` (no trailing dot) resolves to `value`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DnsRecord {
    /// The FQDN, e.g. `grafana.TAILNET.ts.net`.
    #[serde(deserialize_with = "fqdn_trim_dot")]
    pub name: String,
    /// The record type; empty means A/AAAA.
    #[serde(rename = "Type", deserialize_with = "null_default")]
    pub kind: String,
    /// The address (or text) it resolves to.
    #[serde(deserialize_with = "null_default")]
    pub value: String,
}

/// The DNS configuration control sent this node (`GET /localapi/v0/dns-config`,
/// `tailcfg.DNSConfig`), the parts snirouter reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DnsConfig {
    /// Search domains (the MagicDNS suffix first).
    #[serde(deserialize_with = "null_default")]
    pub domains: Vec<String>,
    /// MagicDNS on.
    #[serde(deserialize_with = "null_default")]
    pub proxied: bool,
    /// The names this node may get certificates for.
    #[serde(deserialize_with = "null_default")]
    pub cert_domains: Vec<String>,
    /// Extra records control publishes (Tailscale Services' names among them).
    #[serde(deserialize_with = "null_default")]
    pub extra_records: Vec<DnsRecord>,
}

/// Control's answer to a feature query (`POST /localapi/v0/query-feature`,
/// `tailcfg.QueryFeatureResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FeatureQuery {
    /// The feature is already enabled.
    #[serde(deserialize_with = "null_default")]
    pub complete: bool,
    /// What to tell the user, e.g. `Serve is not enabled on your tailnet.\nTo enable, visit:`.
    #[serde(deserialize_with = "null_default")]
    pub text: String,
    /// Where to enable it.
    #[serde(rename = "URL", deserialize_with = "null_default")]
    pub url: String,
    /// Control will push the capability once enabled (wait on the IPN bus).
    #[serde(deserialize_with = "null_default")]
    pub should_wait: bool,
}

/// Who is behind a tailnet address (`GET /localapi/v0/whois`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhoIs {
    /// `UserProfile.LoginName`, e.g. `alice@example.com` (`tagged-devices` for tagged nodes).
    pub login_name: String,
    /// `UserProfile.DisplayName`.
    pub display_name: String,
    /// `UserProfile.ProfilePicURL`.
    pub profile_pic_url: String,
    /// The peer's MagicDNS name (`Node.Name`, trailing dot trimmed).
    pub node_name: String,
    /// The node's ACL tags (`Node.Tags`, e.g. `tag:monitoring`); empty for a user's node.
    pub tags: Vec<String>,
    /// `CapMap`: the application capabilities the tailnet policy grants the peer toward
    /// the destination the query named (the node, or with `svc_name` one service),
    /// capability name → the grant's values. Empty for Go's `null`.
    pub caps: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", default)]
#[derive(Default)]
struct RawWhoIs {
    node: Option<RawNode>,
    user_profile: Option<RawUserProfile>,
    #[serde(deserialize_with = "cap_map")]
    cap_map: BTreeMap<String, Vec<serde_json::Value>>,
}

/// `tailcfg.PeerCapMap` (`map[Cap][]RawMessage`): `null` is empty, and so is a
/// capability's `null` value list (a nil slice); the capability is still held.
fn cap_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<serde_json::Value>>, D::Error> {
    let raw: BTreeMap<String, Option<Vec<serde_json::Value>>> = null_default(d)?;
    Ok(raw.into_iter().map(|(cap, values)| (cap, values.unwrap_or_default())).collect())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawNode {
    #[serde(deserialize_with = "fqdn_trim_dot")]
    name: String,
    #[serde(deserialize_with = "null_default")]
    computed_name: String,
    #[serde(deserialize_with = "null_default")]
    tags: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawUserProfile {
    #[serde(deserialize_with = "null_default")]
    login_name: String,
    #[serde(deserialize_with = "null_default")]
    display_name: String,
    #[serde(rename = "ProfilePicURL", deserialize_with = "null_default")]
    profile_pic_url: String,
}

impl WhoIs {
    /// Parses an `apitype.WhoIsResponse` JSON document.
    pub(crate) fn from_json(body: &[u8]) -> Result<WhoIs, serde_json::Error> {
        let raw: RawWhoIs = serde_json::from_slice(body)?;
        let node = raw.node.unwrap_or_default();
        let up = raw.user_profile.unwrap_or_default();
        Ok(WhoIs {
            login_name: up.login_name,
            display_name: up.display_name,
            profile_pic_url: up.profile_pic_url,
            node_name: if node.name.is_empty() { node.computed_name } else { node.name },
            tags: node.tags,
            caps: raw.cap_map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED_OUT: &str = include_str!("../tests/fixtures/status_signed_out.json");
    const RUNNING: &str = include_str!("../tests/fixtures/status_running.json");
    const ALL_NULL: &str = include_str!("../tests/fixtures/status_all_null.json");

    #[test]
    fn signed_out_fixture() {
        let st: Status = serde_json::from_str(SIGNED_OUT).unwrap();
        assert_eq!(st.version, "1.102.4-t3caf7d9e7-g084ee3b64");
        assert_eq!(st.backend_state, BackendState::NeedsLogin);
        assert!(st.tailscale_ips.is_empty());
        assert_eq!(st.health, vec!["Tailscale is stopped."]);
        assert!(st.cert_domains.is_empty());
        assert!(st.current_tailnet.is_none());
        assert_eq!(st.magic_dns_suffix(), None);
        let me = st.self_node.unwrap();
        assert_eq!(me.host_name, "MM1");
        assert_eq!(me.dns_name, "");
        assert!(!me.online);
        assert!(me.tags.is_empty() && me.cap_map.is_empty() && me.tailscale_ips.is_empty());
        assert!(me.service_host().is_empty());
    }

    #[test]
    fn running_fixture() {
        let st: Status = serde_json::from_str(RUNNING).unwrap();
        assert_eq!(st.backend_state, BackendState::Running);
        assert_eq!(
            st.tailscale_ips,
            vec!["100.101.102.103".parse::<IpAddr>().unwrap(), "fd7a:115c:a1e0::a401:6667".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(st.cert_domains, vec!["storage.bat-boa.ts.net"]);
        assert_eq!(st.magic_dns_suffix(), Some("bat-boa.ts.net"));
        let t = st.current_tailnet.as_ref().unwrap();
        assert_eq!(t.name, "someone@example.com");
        assert!(t.magic_dns_enabled);
        assert!(st.health.is_empty());
        let me = st.self_node.as_ref().unwrap();
        assert_eq!(me.id, "nXk3fEXAMPLE11CNTRL");
        assert_eq!(me.host_name, "storage");
        assert_eq!(me.dns_name, "storage.bat-boa.ts.net");
        assert_eq!(me.tags, vec!["tag:server"]);
        assert!(me.online);
        assert!(me.has_cap("https"));
        assert_eq!(me.cap_map.get("https"), Some(&serde_json::Value::Null));
        assert_eq!(me.tailscale_ips.len(), 2);
        assert!(me.service_host().is_empty());
    }

    #[test]
    fn all_null_fixture() {
        let st: Status = serde_json::from_str(ALL_NULL).unwrap();
        assert_eq!(st.backend_state, BackendState::NoState);
        assert_eq!(st.version, "");
        assert!(st.tailscale_ips.is_empty() && st.health.is_empty() && st.cert_domains.is_empty());
        let me = st.self_node.unwrap();
        assert!(me.tags.is_empty() && me.cap_map.is_empty() && me.tailscale_ips.is_empty());
        assert_eq!(me.dns_name, "");
        // Entirely empty object and a minimal one also parse.
        let st: Status = serde_json::from_str("{}").unwrap();
        assert!(st.self_node.is_none());
        assert_eq!(st.magic_dns_suffix(), None);
    }

    #[test]
    fn peers_are_found_by_stable_id() {
        let st: Status = serde_json::from_str(
            r#"{"Self":{"ID":"nSelfCNTRL","HostName":"storage","DNSName":"storage.t.ts.net.","Online":true},
                "Peer":{"nodekey:ab":{"ID":"nBackupCNTRL","HostName":"backup","DNSName":"backup.t.ts.net.","Online":false,"Tags":["tag:storage"]}}}"#,
        )
        .unwrap();
        assert_eq!(st.node("nSelfCNTRL").map(|n| n.host_name.as_str()), Some("storage"));
        let backup = st.node("nBackupCNTRL").expect("peer");
        assert_eq!((backup.dns_name.as_str(), backup.online), ("backup.t.ts.net", false));
        assert!(st.node("nOtherCNTRL").is_none());
        assert!(
            RUNNING.contains("\"Peer\": null") && serde_json::from_str::<Status>(RUNNING).unwrap().peers.is_empty()
        );
    }

    #[test]
    fn magic_dns_suffix_fallback() {
        let st: Status = serde_json::from_str(r#"{"MagicDNSSuffix":"old.ts.net","CurrentTailnet":null}"#).unwrap();
        assert_eq!(st.magic_dns_suffix(), Some("old.ts.net"));
        let st: Status = serde_json::from_str(
            r#"{"MagicDNSSuffix":"old.ts.net","CurrentTailnet":{"Name":"x","MagicDNSSuffix":"","MagicDNSEnabled":false}}"#,
        )
        .unwrap();
        assert_eq!(st.magic_dns_suffix(), Some("old.ts.net"));
    }

    #[test]
    fn backend_states() {
        for s in ["NoState", "NeedsLogin", "NeedsMachineAuth", "Stopped", "Starting", "Running", "Weird"] {
            let st: Status = serde_json::from_str(&format!(r#"{{"BackendState":"{s}"}}"#)).unwrap();
            assert_eq!(st.backend_state.as_str(), s);
            let back = serde_json::to_value(&st).unwrap();
            assert_eq!(back["BackendState"], s);
        }
        assert_eq!(BackendState::from("Weird"), BackendState::Other("Weird".into()));
    }

    fn node(cap_map: &str) -> SelfNode {
        serde_json::from_str(&format!(r#"{{"CapMap": {cap_map}}}"#)).unwrap()
    }

    #[test]
    fn service_host_shapes() {
        let n = node(
            r#"{"service-host": [ {"svc:grafana": ["100.100.5.5", "fd7a:115c:a1e0::1234"]},
                                  {"svc:jellyfin": ["100.100.5.6"], "svc:grafana": ["100.100.5.5"]} ]}"#,
        );
        let m = n.service_host();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m["svc:grafana"],
            vec!["100.100.5.5".parse::<IpAddr>().unwrap(), "fd7a:115c:a1e0::1234".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(m["svc:jellyfin"], vec!["100.100.5.6".parse::<IpAddr>().unwrap()]);

        // Bare object, null, odd shapes.
        assert_eq!(node(r#"{"service-host": {"svc:a": ["100.1.1.1"]}}"#).service_host().len(), 1);
        assert!(node(r#"{"service-host": null}"#).service_host().is_empty());
        assert!(node("null").service_host().is_empty());
        assert!(node(r#"{"service-host": "x"}"#).service_host().is_empty());
        assert!(node(r#"{"service-host": [1, "x", null]}"#).service_host().is_empty());
        let m = node(r#"{"service-host": [{"svc:a": "100.1.1.1", "svc:b": ["nope", 3, "100.2.2.2"]}]}"#).service_host();
        assert!(!m.contains_key("svc:a"));
        assert_eq!(m["svc:b"], vec!["100.2.2.2".parse::<IpAddr>().unwrap()]);
        // A service with an empty list is still reported (approved, no VIPs yet).
        assert_eq!(node(r#"{"service-host": [{"svc:c": []}]}"#).service_host()["svc:c"], Vec::<IpAddr>::new());
    }

    #[test]
    fn whois_parsing() {
        let w = WhoIs::from_json(
            br#"{"Node":{"ID":1,"Name":"laptop.bat-boa.ts.net.","ComputedName":"laptop"},
                "UserProfile":{"ID":7,"LoginName":"alice@example.com","DisplayName":"Alice","ProfilePicURL":"https://x/p.png"},
                "CapMap":null}"#,
        )
        .unwrap();
        assert_eq!(
            w,
            WhoIs {
                login_name: "alice@example.com".into(),
                display_name: "Alice".into(),
                profile_pic_url: "https://x/p.png".into(),
                node_name: "laptop.bat-boa.ts.net".into(),
                tags: vec![],
                caps: BTreeMap::new(),
            }
        );
        // A tagged node, with capabilities scoped by the query.
        let w = WhoIs::from_json(
            br#"{"Node":{"Name":"mon.bat-boa.ts.net.","Tags":["tag:monitoring"]},
                "UserProfile":{"LoginName":"tagged-devices"},
                "CapMap":{"example.com/cap/grafana":[{"role":"editor"},{}]}}"#,
        )
        .unwrap();
        assert_eq!(w.tags, ["tag:monitoring"]);
        assert_eq!(w.caps["example.com/cap/grafana"], [serde_json::json!({"role": "editor"}), serde_json::json!({})]);
        // Odd shapes of the optional parts are nobody's capabilities, not errors.
        let w = WhoIs::from_json(br#"{"Node":{"Tags":null},"UserProfile":null,"CapMap":{"x/y":null}}"#).unwrap();
        assert!(w.tags.is_empty());
        assert_eq!(w.caps["x/y"], Vec::<serde_json::Value>::new());
        let w = WhoIs::from_json(br#"{"Node":null,"UserProfile":null}"#).unwrap();
        assert_eq!(w, WhoIs::default());
    }
}
