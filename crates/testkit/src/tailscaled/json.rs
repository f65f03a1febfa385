//! JSON documents the simulated daemon emits, with Go's key names, key order
//! and `null`/`omitempty` semantics (`ipnstate.Status`, `ipnstate.PeerStatus`,
//! `ipn.Prefs`, `ipn.Notify`, `apitype.WhoIsResponse`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Value, json};

use super::{SimConfig, SimPeer};
use crate::gofmt::hex;

/// Fixed creation time used for all simulated nodes.
const CREATED: &str = "2025-10-01T12:00:00Z";
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// User ID of the synthetic `tagged-devices` user.
pub(crate) const TAGGED_USER_ID: u64 = 987_654_321;

/// Deterministic identity material derived from a name.
pub(crate) struct NodeIdent {
    pub stable_id: String,
    pub node_id: u64,
    pub node_key: String,
}

pub(crate) fn ident(name: &str) -> NodeIdent {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let b = d.as_ref();
    let mut n = [0u8; 8];
    n[1..].copy_from_slice(&b[..7]);
    let node_id = u64::from_be_bytes(n) & ((1u64 << 52) - 1);
    NodeIdent {
        stable_id: format!("n{}CNTRL", hex(&b[7..12]).to_uppercase()),
        node_id,
        node_key: format!("nodekey:{}", hex(b)),
    }
}

/// The `(IPv4, IPv6)` VIP pair assigned to the `i`-th approved service.
pub(crate) fn service_vips(i: usize) -> [String; 2] {
    let i = i + 1;
    [format!("100.100.{}.{}", 5 + i / 250, i % 250 + 1), format!("fd7a:115c:a1e0::5:{:x}", i)]
}

/// `svc:NAME` form of a configured service name.
pub(crate) fn svc_name(s: &str) -> String {
    if s.starts_with("svc:") { s.to_string() } else { format!("svc:{s}") }
}

fn prefix_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

#[derive(Serialize)]
pub(crate) struct PeerStatus {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "NodeID")]
    node_id: u64,
    #[serde(rename = "PublicKey")]
    public_key: String,
    #[serde(rename = "HostName")]
    host_name: String,
    #[serde(rename = "DNSName")]
    dns_name: String,
    #[serde(rename = "OS")]
    os: String,
    #[serde(rename = "UserID")]
    user_id: u64,
    #[serde(rename = "TailscaleIPs")]
    tailscale_ips: Option<Vec<String>>,
    #[serde(rename = "AllowedIPs", skip_serializing_if = "Option::is_none")]
    allowed_ips: Option<Vec<String>>,
    #[serde(rename = "Tags", skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<String>>,
    #[serde(rename = "Addrs")]
    addrs: Vec<String>,
    #[serde(rename = "CurAddr")]
    cur_addr: String,
    #[serde(rename = "Relay")]
    relay: String,
    #[serde(rename = "PeerRelay")]
    peer_relay: String,
    #[serde(rename = "RxBytes")]
    rx_bytes: u64,
    #[serde(rename = "TxBytes")]
    tx_bytes: u64,
    #[serde(rename = "Created")]
    created: String,
    #[serde(rename = "LastWrite")]
    last_write: String,
    #[serde(rename = "LastSeen")]
    last_seen: String,
    #[serde(rename = "LastHandshake")]
    last_handshake: String,
    #[serde(rename = "Online")]
    online: bool,
    #[serde(rename = "ExitNode")]
    exit_node: bool,
    #[serde(rename = "ExitNodeOption")]
    exit_node_option: bool,
    #[serde(rename = "Active")]
    active: bool,
    #[serde(rename = "PeerAPIURL")]
    peer_api_url: Option<Vec<String>>,
    #[serde(rename = "TaildropTarget")]
    taildrop_target: u8,
    #[serde(rename = "NoFileSharingReason")]
    no_file_sharing_reason: String,
    #[serde(rename = "Capabilities", skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<String>>,
    #[serde(rename = "CapMap", skip_serializing_if = "Option::is_none")]
    cap_map: Option<BTreeMap<String, Value>>,
    #[serde(rename = "InNetworkMap")]
    in_network_map: bool,
    #[serde(rename = "InMagicSock")]
    in_magic_sock: bool,
    #[serde(rename = "InEngine")]
    in_engine: bool,
    #[serde(rename = "KeyExpiry", skip_serializing_if = "Option::is_none")]
    key_expiry: Option<String>,
}

#[derive(Serialize)]
struct TailnetStatus {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "MagicDNSSuffix")]
    magic_dns_suffix: String,
    #[serde(rename = "MagicDNSEnabled")]
    magic_dns_enabled: bool,
}

#[derive(Serialize, Clone)]
pub(crate) struct UserProfile {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "LoginName")]
    pub login_name: String,
    #[serde(rename = "DisplayName")]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
}

#[derive(Serialize)]
pub(crate) struct Status {
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "TUN")]
    tun: bool,
    #[serde(rename = "BackendState")]
    backend_state: String,
    #[serde(rename = "AuthURL")]
    auth_url: String,
    #[serde(rename = "TailscaleIPs")]
    tailscale_ips: Option<Vec<String>>,
    #[serde(rename = "Self")]
    self_: PeerStatus,
    #[serde(rename = "Health")]
    health: Vec<String>,
    #[serde(rename = "MagicDNSSuffix")]
    magic_dns_suffix: String,
    #[serde(rename = "CurrentTailnet")]
    current_tailnet: Option<TailnetStatus>,
    #[serde(rename = "CertDomains")]
    cert_domains: Option<Vec<String>>,
    #[serde(rename = "ExtraRecords")]
    extra_records: Option<Vec<Value>>,
    #[serde(rename = "Peer")]
    peer: Option<BTreeMap<String, PeerStatus>>,
    #[serde(rename = "User")]
    user: Option<BTreeMap<String, UserProfile>>,
    #[serde(rename = "ClientVersion")]
    client_version: Option<Value>,
}

/// The self node's CapMap: `https` when HTTPS is on, `dns-subdomain-resolve`,
/// and `service-host` for approved services.
pub(crate) fn self_cap_map(cfg: &SimConfig) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    if cfg.cert_domains.as_ref().is_some_and(|d| !d.is_empty()) {
        m.insert("https".to_string(), Value::Null);
    }
    if cfg.subdomain_resolve {
        m.insert("dns-subdomain-resolve".to_string(), Value::Null);
    }
    if !cfg.approved_services.is_empty() {
        let mut svcs = serde_json::Map::new();
        for (i, s) in cfg.approved_services.iter().enumerate() {
            svcs.insert(svc_name(s), json!(service_vips(i)));
        }
        m.insert("service-host".to_string(), json!([Value::Object(svcs)]));
    }
    m
}

pub(crate) fn fqdn(cfg: &SimConfig) -> String {
    format!("{}.{}", cfg.hostname, cfg.magic_dns_suffix)
}

fn self_status(cfg: &SimConfig, running: bool) -> PeerStatus {
    if !running {
        return stopped_self_status(cfg);
    }
    let id = ident(&cfg.hostname);
    let ips: Vec<String> = cfg.tailscale_ips.iter().map(|i| i.to_string()).collect();
    let cap_map = self_cap_map(cfg);
    let (capabilities, cap_map) = if cap_map.is_empty() {
        (None, None)
    } else {
        let mut caps = vec![
            "HTTPS://TAILSCALE.COM/s/DEPRECATED-NODE-CAPS#see-https://github.com/tailscale/tailscale/issues/11508"
                .to_string(),
        ];
        caps.extend(cap_map.keys().cloned());
        (Some(caps), Some(cap_map))
    };
    let tagged = !cfg.tags.is_empty();
    PeerStatus {
        id: id.stable_id,
        node_id: id.node_id,
        public_key: id.node_key,
        host_name: cfg.hostname.clone(),
        dns_name: format!("{}.", fqdn(cfg)),
        os: "linux".to_string(),
        user_id: TAGGED_USER_ID,
        tailscale_ips: if ips.is_empty() { None } else { Some(ips.clone()) },
        allowed_ips: Some(cfg.tailscale_ips.iter().map(|i| format!("{i}/{}", prefix_len(i))).collect()),
        tags: if tagged { Some(cfg.tags.clone()) } else { None },
        addrs: vec!["203.0.113.5:41641".to_string()],
        cur_addr: String::new(),
        relay: "nyc".to_string(),
        peer_relay: String::new(),
        rx_bytes: 0,
        tx_bytes: 0,
        created: CREATED.to_string(),
        last_write: ZERO_TIME.to_string(),
        last_seen: ZERO_TIME.to_string(),
        last_handshake: ZERO_TIME.to_string(),
        online: true,
        exit_node: false,
        exit_node_option: false,
        active: false,
        peer_api_url: (!ips.is_empty()).then(|| cfg.tailscale_ips.iter().map(peer_api_url).collect()),
        taildrop_target: 0,
        no_file_sharing_reason: String::new(),
        capabilities,
        cap_map,
        in_network_map: true,
        in_magic_sock: false,
        in_engine: false,
        key_expiry: if tagged { None } else { Some("2026-03-30T12:00:00Z".to_string()) },
    }
}

/// `Self` before the node has a network map: zero IDs and keys, no addresses.
fn stopped_self_status(cfg: &SimConfig) -> PeerStatus {
    PeerStatus {
        id: String::new(),
        node_id: 0,
        public_key: "nodekey:0000000000000000000000000000000000000000000000000000000000000000".to_string(),
        host_name: cfg.hostname.clone(),
        dns_name: String::new(),
        os: "linux".to_string(),
        user_id: 0,
        tailscale_ips: None,
        allowed_ips: None,
        tags: None,
        addrs: vec![],
        cur_addr: String::new(),
        relay: String::new(),
        peer_relay: String::new(),
        rx_bytes: 0,
        tx_bytes: 0,
        created: ZERO_TIME.to_string(),
        last_write: ZERO_TIME.to_string(),
        last_seen: ZERO_TIME.to_string(),
        last_handshake: ZERO_TIME.to_string(),
        online: false,
        exit_node: false,
        exit_node_option: false,
        active: false,
        peer_api_url: None,
        taildrop_target: 0,
        no_file_sharing_reason: String::new(),
        capabilities: None,
        cap_map: None,
        in_network_map: false,
        in_magic_sock: false,
        in_engine: false,
        key_expiry: None,
    }
}

/// The peer API (PeerAPI) URL tailscaled lists for one of its addresses.
fn peer_api_url(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("http://{a}:43211"),
        IpAddr::V6(a) => format!("http://[{a}]:43211"),
    }
}

/// The synthetic `tagged-devices` user that owns every tagged node (this one included).
fn tagged_user() -> UserProfile {
    UserProfile {
        id: TAGGED_USER_ID,
        login_name: "tagged-devices".to_string(),
        display_name: "tagged-devices".to_string(),
        profile_pic_url: String::new(),
    }
}

/// User profile of a configured peer (`peers` entry `i`): tagged nodes belong to
/// `tagged-devices`.
pub(crate) fn peer_user(i: usize, peer: &SimPeer) -> UserProfile {
    if peer.is_tagged() {
        return tagged_user();
    }
    UserProfile {
        id: 1_000_000 + i as u64,
        login_name: peer.login.clone(),
        display_name: peer.display_name.clone(),
        profile_pic_url: format!("https://example.com/avatars/{}.png", i + 1),
    }
}

/// Peer `i`'s node key (`nodekey:` + 64 hex digits), as its whois answer carries it.
pub(crate) fn peer_node_key(i: usize, peer: &SimPeer) -> String {
    ident(&peer_hostname(i, peer)).node_key
}

fn peer_hostname(i: usize, peer: &SimPeer) -> String {
    peer.hostname.clone().unwrap_or_else(|| format!("peer-{}", i + 1))
}

fn peer_status(cfg: &SimConfig, i: usize, peer: &SimPeer) -> PeerStatus {
    let ip = &peer.ip;
    let host = peer_hostname(i, peer);
    let id = ident(&host);
    PeerStatus {
        id: id.stable_id,
        node_id: id.node_id,
        public_key: id.node_key,
        host_name: host.clone(),
        dns_name: format!("{host}.{}.", cfg.magic_dns_suffix),
        os: "linux".to_string(),
        user_id: peer_user(i, peer).id,
        tailscale_ips: Some(vec![ip.to_string()]),
        allowed_ips: Some(vec![format!("{ip}/{}", prefix_len(ip))]),
        tags: peer.is_tagged().then(|| peer.tags.clone()),
        addrs: vec![],
        cur_addr: String::new(),
        relay: "nyc".to_string(),
        peer_relay: String::new(),
        rx_bytes: 0,
        tx_bytes: 0,
        created: CREATED.to_string(),
        last_write: ZERO_TIME.to_string(),
        last_seen: ZERO_TIME.to_string(),
        last_handshake: ZERO_TIME.to_string(),
        online: peer.online,
        exit_node: false,
        exit_node_option: false,
        active: false,
        peer_api_url: None,
        taildrop_target: 0,
        no_file_sharing_reason: String::new(),
        capabilities: None,
        cap_map: None,
        in_network_map: true,
        in_magic_sock: true,
        in_engine: true,
        key_expiry: Some("2026-03-30T12:00:00Z".to_string()),
    }
}

/// Build the `/localapi/v0/status` document.
pub(crate) fn status(cfg: &SimConfig, with_peers: bool, pending: Option<String>) -> Status {
    let running = cfg.backend_state == "Running";
    if !running {
        let mut health = vec!["Tailscale is stopped.".to_string()];
        health.extend(cfg.health.iter().cloned());
        if cfg.backend_state == "Starting" {
            health.retain(|h| h != "Tailscale is stopped.");
        }
        return Status {
            version: cfg.version.clone(),
            tun: true,
            backend_state: cfg.backend_state.clone(),
            auth_url: String::new(),
            tailscale_ips: None,
            self_: self_status(cfg, false),
            health,
            magic_dns_suffix: String::new(),
            current_tailnet: None,
            cert_domains: None,
            extra_records: None,
            peer: None,
            user: None,
            client_version: None,
        };
    }
    let ips: Vec<String> = cfg.tailscale_ips.iter().map(|i| i.to_string()).collect();
    let mut users = BTreeMap::new();
    users.insert(TAGGED_USER_ID.to_string(), tagged_user());
    let peer = if with_peers && !cfg.peers.is_empty() {
        let mut m = BTreeMap::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            let ps = peer_status(cfg, i, p);
            let u = peer_user(i, p);
            users.insert(u.id.to_string(), u);
            m.insert(ps.public_key.clone(), ps);
        }
        Some(m)
    } else {
        None
    };
    Status {
        version: cfg.version.clone(),
        tun: true,
        backend_state: cfg.backend_state.clone(),
        auth_url: String::new(),
        tailscale_ips: if ips.is_empty() { None } else { Some(ips) },
        self_: self_status(cfg, true),
        health: cfg.health.iter().cloned().chain(pending).collect(),
        magic_dns_suffix: cfg.magic_dns_suffix.clone(),
        current_tailnet: Some(TailnetStatus {
            name: cfg.tailnet_name.clone(),
            magic_dns_suffix: cfg.magic_dns_suffix.clone(),
            magic_dns_enabled: true,
        }),
        cert_domains: cfg.cert_domains.clone().filter(|d| !d.is_empty()),
        extra_records: dns_records(cfg),
        peer,
        user: Some(users),
        client_version: None,
    }
}

/// `nm.DNS.ExtraRecords` as `[]tailcfg.DNSRecord` (`Type` empty: A/AAAA, omitted);
/// `None` (JSON `null` in status) when there are none.
pub(crate) fn dns_records(cfg: &SimConfig) -> Option<Vec<Value>> {
    let records: Vec<Value> =
        cfg.extra_records.iter().map(|(name, value)| json!({"Name": name, "Value": value})).collect();
    (!records.is_empty()).then_some(records)
}

/// `nm.DNS` (`tailcfg.DNSConfig`) in Go field order, empty fields omitted.
pub(crate) fn dns_config(cfg: &SimConfig) -> crate::gofmt::Ordered {
    let mut fields = vec![("Domains", json!([cfg.magic_dns_suffix])), ("Proxied", Value::Bool(true))];
    if let Some(d) = cfg.cert_domains.clone().filter(|d| !d.is_empty()) {
        fields.push(("CertDomains", json!(d)));
    }
    if let Some(r) = dns_records(cfg) {
        fields.push(("ExtraRecords", Value::Array(r)));
    }
    crate::gofmt::Ordered(fields)
}

/// `ipn.State` numeric values.
pub(crate) fn state_num(s: &str) -> u8 {
    match s {
        "InUseOtherUser" => 1,
        "NeedsLogin" => 2,
        "NeedsMachineAuth" => 3,
        "Stopped" => 4,
        "Starting" => 5,
        "Running" => 6,
        _ => 0,
    }
}

/// A minimal `netmap.NetworkMap`-shaped object (`null` when not running).
pub(crate) fn netmap(cfg: &SimConfig) -> Value {
    if cfg.backend_state != "Running" {
        return Value::Null;
    }
    let id = ident(&cfg.hostname);
    let name = format!("{}.", fqdn(cfg));
    let addrs: Vec<String> = cfg.tailscale_ips.iter().map(|i| format!("{i}/{}", prefix_len(i))).collect();
    json!({
        "SelfNode": {
            "ID": id.node_id,
            "StableID": id.stable_id,
            "Name": name,
            "Key": id.node_key,
            "Addresses": addrs,
            "Tags": cfg.tags,
            "CapMap": self_cap_map(cfg),
        },
        "NodeKey": id.node_key,
        "Name": name,
        "Domain": cfg.magic_dns_suffix,
        "DNS": {
            "Proxied": true,
            "Domains": [cfg.magic_dns_suffix],
            "CertDomains": cfg.cert_domains.clone().filter(|d| !d.is_empty()),
        },
        "Peers": Value::Null,
    })
}

/// Prefs as kept by the simulator (`ipn.Prefs` subset, Go field order).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Prefs {
    #[serde(rename = "ControlURL")]
    pub control_url: String,
    #[serde(rename = "RouteAll")]
    pub route_all: bool,
    #[serde(rename = "ExitNodeID")]
    pub exit_node_id: String,
    #[serde(rename = "ExitNodeIP")]
    pub exit_node_ip: String,
    #[serde(rename = "ExitNodeAllowLANAccess")]
    pub exit_node_allow_lan_access: bool,
    #[serde(rename = "CorpDNS")]
    pub corp_dns: bool,
    #[serde(rename = "RunSSH")]
    pub run_ssh: bool,
    #[serde(rename = "RunWebClient")]
    pub run_web_client: bool,
    #[serde(rename = "WantRunning")]
    pub want_running: bool,
    #[serde(rename = "LoggedOut")]
    pub logged_out: bool,
    #[serde(rename = "ShieldsUp")]
    pub shields_up: bool,
    #[serde(rename = "AdvertiseTags")]
    pub advertise_tags: Option<Vec<String>>,
    #[serde(rename = "Hostname")]
    pub hostname: String,
    #[serde(rename = "NotepadURLs")]
    pub notepad_urls: bool,
    #[serde(rename = "AdvertiseRoutes")]
    pub advertise_routes: Option<Vec<String>>,
    #[serde(rename = "AdvertiseServices")]
    pub advertise_services: Option<Vec<String>>,
    #[serde(rename = "NoSNAT")]
    pub no_snat: bool,
    #[serde(rename = "NoStatefulFiltering")]
    pub no_stateful_filtering: String,
    #[serde(rename = "NetfilterMode")]
    pub netfilter_mode: u8,
    #[serde(rename = "OperatorUser")]
    pub operator_user: String,
    #[serde(rename = "ProfileName")]
    pub profile_name: String,
    #[serde(rename = "AutoUpdate")]
    pub auto_update: Value,
    #[serde(rename = "AppConnector")]
    pub app_connector: Value,
    #[serde(rename = "PostureChecking")]
    pub posture_checking: bool,
    #[serde(rename = "NetfilterKind")]
    pub netfilter_kind: String,
    #[serde(rename = "DriveShares")]
    pub drive_shares: Option<Vec<Value>>,
    #[serde(rename = "Config")]
    pub config: Value,
}

impl Prefs {
    pub(crate) fn new() -> Prefs {
        Prefs {
            control_url: "https://controlplane.tailscale.com".to_string(),
            route_all: false,
            exit_node_id: String::new(),
            exit_node_ip: String::new(),
            exit_node_allow_lan_access: false,
            corp_dns: true,
            run_ssh: false,
            run_web_client: false,
            want_running: true,
            logged_out: false,
            shields_up: false,
            advertise_tags: None,
            hostname: String::new(),
            notepad_urls: false,
            advertise_routes: None,
            advertise_services: None,
            no_snat: false,
            no_stateful_filtering: "false".to_string(),
            netfilter_mode: 2,
            operator_user: String::new(),
            profile_name: String::new(),
            auto_update: json!({"Check": true, "Apply": false}),
            app_connector: json!({"Advertise": false}),
            posture_checking: false,
            netfilter_kind: String::new(),
            drive_shares: None,
            config: Value::Null,
        }
    }

    /// The prefs as served, with fields derived from the live config.
    pub(crate) fn view(&self, cfg: &SimConfig) -> Prefs {
        let mut p = self.clone();
        p.want_running = matches!(cfg.backend_state.as_str(), "Running" | "Starting");
        p.logged_out = cfg.backend_state == "NeedsLogin";
        p.advertise_tags = if cfg.tags.is_empty() { None } else { Some(cfg.tags.clone()) };
        p.hostname = cfg.hostname.clone();
        p
    }
}

/// `apitype.WhoIsResponse` for the node itself: `nodeByAddr` holds the self node's
/// addresses too, so whois on the host's own tailnet IP answers with it.
pub(crate) fn self_whois(cfg: &SimConfig) -> Value {
    let user = tagged_user();
    let mut node = netmap(cfg).get("SelfNode").cloned().unwrap_or(Value::Null);
    if let Value::Object(n) = &mut node {
        n.insert("User".into(), json!(TAGGED_USER_ID));
        n.insert("Created".into(), json!(CREATED));
        n.insert("Hostinfo".into(), json!({"Hostname": cfg.hostname, "OS": "linux"}));
        n.insert("ComputedName".into(), json!(cfg.hostname));
        n.insert("ComputedNameWithHost".into(), json!(cfg.hostname));
    }
    json!({
        "Node": node,
        "UserProfile": serde_json::to_value(&user).unwrap_or(Value::Null),
        "CapMap": Value::Null,
    })
}

/// `tailcfg.PeerCapMap`: capability name → its values.
pub(crate) type CapMap = std::collections::BTreeMap<String, Vec<Value>>;

/// `apitype.WhoIsResponse` for peer `i`, with `caps` as its `CapMap`.
pub(crate) fn whois(cfg: &SimConfig, i: usize, peer: &SimPeer, caps: Option<CapMap>) -> Value {
    let host = peer_hostname(i, peer);
    let id = ident(&host);
    let u = peer_user(i, peer);
    let ip = &peer.ip;
    let mut node = json!({
        "ID": id.node_id,
        "StableID": id.stable_id,
        "Name": format!("{host}.{}.", cfg.magic_dns_suffix),
        "User": u.id,
        "Key": id.node_key,
        "KeyExpiry": "2026-03-30T12:00:00Z",
        "Addresses": [format!("{ip}/{}", prefix_len(ip))],
        "AllowedIPs": [format!("{ip}/{}", prefix_len(ip))],
        "Created": CREATED,
        "Hostinfo": {"Hostname": host, "OS": "linux"},
        "Online": peer.online,
        "ComputedName": host,
        "ComputedNameWithHost": host,
    });
    if let Value::Object(n) = &mut node
        && peer.is_tagged()
    {
        // `Tags []string json:",omitempty"`.
        n.insert("Tags".into(), json!(peer.tags));
    }
    json!({
        "Node": node,
        "UserProfile": serde_json::to_value(&u).unwrap_or(Value::Null),
        // Always present; nil (null) unless the tailnet policy grants capabilities.
        "CapMap": caps.map_or(Value::Null, |c| json!(c)),
    })
}
