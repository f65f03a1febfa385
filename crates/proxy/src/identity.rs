//! `tailscale_identity = true`: who is connecting, from tailscaled's LocalAPI `whois`,
//! sent to the upstream the way `tailscale serve` does it
//! (`ipn/ipnlocal/serve.go`, `addTailscaleIdentityHeaders`):
//!
//! * `Tailscale-User-Login` and `Tailscale-User-Name`: RFC 2047 Q-encoded when not plain
//!   printable ASCII (Go's `mime.QEncoding.Encode("utf-8", v)`), empty when not UTF-8;
//! * `Tailscale-User-Profile-Pic`: the URL as it is;
//! * `Tailscale-Headers-Info: https://tailscale.com/s/serve-headers`;
//! * nothing for tagged nodes (no user identity) or addresses `whois` does not know;
//! * with `accept_app_caps`, `Tailscale-App-Capabilities`: the JSON object of those
//!   capabilities the client holds, as `--accept-app-caps` sends it.
//!
//! The six header names ([`HEADERS`]: the five above and `Tailscale-Funnel-Request`)
//! are removed from every client request on every service, in
//! any spelling, whether or not the service asks for identity (`client_headers.rs`).
//!
//! The same lookup answers the `access` stage ([`Lookup`]: a peer with its tags and
//! capabilities, "not a tailnet address", or a failure). Answers are cached per client
//! IP and capability scope (the service, when its policy needs capabilities) for
//! [`POSITIVE_TTL`] (known peers and "no such peer") and [`ERROR_TTL`] after a LocalAPI
//! failure, in at most [`MAX_ENTRIES`] entries; a lookup waits at most [`LOOKUP_TIMEOUT`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use snirouter_localapi::{LocalClient, WhoIs};

/// `Tailscale-User-Login`.
pub(crate) const USER_LOGIN: HeaderName = HeaderName::from_static("tailscale-user-login");
/// `Tailscale-User-Name`.
pub(crate) const USER_NAME: HeaderName = HeaderName::from_static("tailscale-user-name");
/// `Tailscale-User-Profile-Pic`.
pub(crate) const USER_PROFILE_PIC: HeaderName = HeaderName::from_static("tailscale-user-profile-pic");
/// `Tailscale-Funnel-Request`.
pub(crate) const FUNNEL_REQUEST: HeaderName = HeaderName::from_static("tailscale-funnel-request");
/// `Tailscale-Headers-Info`.
pub(crate) const HEADERS_INFO: HeaderName = HeaderName::from_static("tailscale-headers-info");
/// `Tailscale-App-Capabilities`.
pub(crate) const APP_CAPABILITIES: HeaderName = HeaderName::from_static("tailscale-app-capabilities");

/// How long a `whois` answer (a peer, or "not a peer") is reused: also how long a
/// change of the tailnet policy (a revoked capability, a removed tag) takes to apply.
pub(crate) const POSITIVE_TTL: Duration = Duration::from_secs(30);
/// How long a LocalAPI failure is remembered (identity headers are left out; `allow`
/// refuses with 503).
pub(crate) const ERROR_TTL: Duration = Duration::from_secs(5);
/// Most cached client addresses.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Longest wait for one `whois`.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The identity headers only this router sets.
pub(crate) static HEADERS: [HeaderName; 6] =
    [USER_LOGIN, USER_NAME, USER_PROFILE_PIC, FUNNEL_REQUEST, HEADERS_INFO, APP_CAPABILITIES];

/// The headers for one tailnet user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    login: HeaderValue,
    name: HeaderValue,
    profile_pic: Option<HeaderValue>,
}

impl Identity {
    /// Identity headers for a `whois` answer; `None` for tagged nodes (no user).
    pub(crate) fn from_whois(who: &WhoIs) -> Option<Identity> {
        if who.login_name.is_empty() || who.login_name == "tagged-devices" {
            return None;
        }
        Some(Identity {
            login: HeaderValue::from_str(&q_encode(&who.login_name)).ok()?,
            name: HeaderValue::from_str(&q_encode(&who.display_name)).unwrap_or(HeaderValue::from_static("")),
            profile_pic: HeaderValue::from_str(&who.profile_pic_url).ok(),
        })
    }

    /// Sets the headers on an upstream request (after client copies were removed).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(USER_LOGIN, self.login.clone());
        headers.insert(USER_NAME, self.name.clone());
        headers.insert(USER_PROFILE_PIC, self.profile_pic.clone().unwrap_or(HeaderValue::from_static("")));
        headers.insert(HEADERS_INFO, HeaderValue::from_static("https://tailscale.com/s/serve-headers"));
    }
}

/// What `whois` said about a client address.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    /// A tailnet node (a user's, or a tagged one).
    Peer(Arc<Peer>),
    /// tailscaled knows no node with this address: not a tailnet client.
    NotAPeer,
    /// tailscaled could not answer (LocalAPI error or timeout; or no LocalAPI at all).
    Failed(Arc<str>),
}

impl Lookup {
    /// The identity headers, for a user's node.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        match self {
            Lookup::Peer(p) => p.headers.as_ref(),
            Lookup::NotAPeer | Lookup::Failed(_) => None,
        }
    }
}

/// A tailnet node behind a client address.
#[derive(Debug)]
pub(crate) struct Peer {
    /// `whois`'s answer: login, node name, tags, capabilities toward the scope asked.
    pub(crate) who: WhoIs,
    /// Its identity headers (`None` for tagged nodes).
    pub(crate) headers: Option<Identity>,
}

impl Peer {
    /// A peer from `whois`'s answer.
    pub(crate) fn new(who: WhoIs) -> Peer {
        Peer { headers: Identity::from_whois(&who), who }
    }

    /// Whether this is a user's node (not a tagged one).
    pub(crate) fn is_user(&self) -> bool {
        self.headers.is_some()
    }

    /// `Tailscale-App-Capabilities` for the capabilities in `accept` it holds (`None`
    /// when it holds none of them): a JSON object, capability → values, Q-encoded when
    /// not ASCII. tailscaled sends `{}` in that case; an absent header says the same and
    /// cannot be mistaken for a grant.
    pub(crate) fn app_capabilities(&self, accept: &[String]) -> Option<HeaderValue> {
        let held: std::collections::BTreeMap<&str, &Vec<serde_json::Value>> = accept
            .iter()
            .filter_map(|c| self.who.caps.get_key_value(c.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        if held.is_empty() {
            return None;
        }
        let json = serde_json::to_string(&held).ok()?;
        HeaderValue::from_str(&q_encode(&json)).ok()
    }
}

#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    ttl: Duration,
    lookup: Lookup,
}

/// The cache key: a client IP and the capability scope asked for (`svc:NAME`, or the
/// node itself).
type Key = (IpAddr, Option<Arc<str>>);

/// `whois` with a small cache.
#[derive(Debug)]
pub(crate) struct Identities {
    client: Option<LocalClient>,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl Identities {
    /// Lookups through `client`; `None` answers every lookup with a failure (tests, demo
    /// without tailscaled).
    pub(crate) fn new(client: Option<LocalClient>) -> Identities {
        Identities { client, cache: Mutex::new(HashMap::new()) }
    }

    /// Who is behind `client` (the PROXY v2 source on proxy listeners), from the cache or
    /// LocalAPI `whois`; `scope` (`svc:NAME`) asks for the capabilities granted toward
    /// that Tailscale Service instead of toward the node.
    pub(crate) async fn lookup(&self, service: &str, scope: Option<&Arc<str>>, client: SocketAddr) -> Lookup {
        let key = (client.ip(), scope.cloned());
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        let Some(lc) = self.client.as_ref() else {
            return Lookup::Failed(Arc::from("no tailscaled LocalAPI client"));
        };
        let asked = lc.whois(client, scope.map(|s| &**s));
        let (lookup, ttl) = match tokio::time::timeout(LOOKUP_TIMEOUT, asked).await {
            Ok(Ok(Some(who))) => (Lookup::Peer(Arc::new(Peer::new(who))), POSITIVE_TTL),
            Ok(Ok(None)) => (Lookup::NotAPeer, POSITIVE_TTL),
            Ok(Err(e)) => {
                tracing::warn!(service = %service, client = %client, cause = %e, fix = e.fix().unwrap_or_default(), "whois failed; the request has no Tailscale identity");
                (Lookup::Failed(Arc::from(format!("tailscaled's whois failed: {e}"))), ERROR_TTL)
            }
            Err(_) => {
                tracing::warn!(service = %service, client = %client, timeout_ms = LOOKUP_TIMEOUT.as_millis() as u64, "whois timed out; the request has no Tailscale identity");
                (Lookup::Failed(Arc::from("tailscaled's whois did not answer in time")), ERROR_TTL)
            }
        };
        self.insert(key, lookup.clone(), ttl);
        lookup
    }

    /// A fresh cached answer.
    fn cached(&self, key: &Key) -> Option<Lookup> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.get(key)?;
        (hit.at.elapsed() < hit.ttl).then(|| hit.lookup.clone())
    }

    fn insert(&self, key: Key, lookup: Lookup, ttl: Duration) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES && !cache.contains_key(&key) {
            cache.retain(|_, c| c.at.elapsed() < c.ttl);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, Cached { at: Instant::now(), ttl, lookup });
    }

    /// Number of cached answers.
    #[cfg(test)]
    pub(crate) fn cached_len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Go's `mime.QEncoding.Encode("utf-8", s)`: `s` itself when every byte is printable
/// ASCII (or tab), otherwise `=?utf-8?q?…?=` encoded words of at most 75 characters,
/// split on character boundaries and joined by a space.
pub(crate) fn q_encode(s: &str) -> String {
    if !s.bytes().any(|b| !(b' '..=b'~').contains(&b) && b != b'\t') {
        return s.to_owned();
    }
    const PREFIX: &str = "=?utf-8?q?";
    const MAX_CONTENT: usize = 75 - PREFIX.len() - 2;
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for ch in s.chars() {
        let mut buf = [0u8; 4];
        let mut piece = String::new();
        for b in ch.encode_utf8(&mut buf).bytes() {
            match b {
                b' ' => piece.push('_'),
                b'!'..=b'~' if b != b'=' && b != b'?' && b != b'_' => piece.push(b as char),
                _ => piece.push_str(&format!("={b:02X}")),
            }
        }
        if current.len() + piece.len() > MAX_CONTENT && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push_str(&piece);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words.iter().map(|w| format!("{PREFIX}{w}?=")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(login: &str, name: &str) -> WhoIs {
        WhoIs {
            login_name: login.to_owned(),
            display_name: name.to_owned(),
            profile_pic_url: "https://pics.example/a.png".to_owned(),
            node_name: "laptop.tailnet.ts.net".to_owned(),
            ..WhoIs::default()
        }
    }

    #[test]
    fn q_encoding_matches_go() {
        assert_eq!(q_encode("alice@example.com"), "alice@example.com");
        assert_eq!(q_encode("Alice Smith"), "Alice Smith");
        // mime.QEncoding.Encode("utf-8", "Zoë Ångström")
        assert_eq!(q_encode("Zoë Ångström"), "=?utf-8?q?Zo=C3=AB_=C3=85ngstr=C3=B6m?=");
        assert_eq!(q_encode("a=b?c_d\u{e9}"), "=?utf-8?q?a=3Db=3Fc=5Fd=C3=A9?=");
        let long = "é".repeat(40);
        let enc = q_encode(&long);
        assert!(enc.split(' ').all(|w| w.len() <= 75 && w.starts_with("=?utf-8?q?") && w.ends_with("?=")), "{enc}");
        assert!(enc.contains(' '), "long values are split into several words: {enc}");
    }

    #[test]
    fn tagged_nodes_get_no_identity() {
        assert!(Identity::from_whois(&who("tagged-devices", "tagged-devices")).is_none());
        let id = Identity::from_whois(&who("alice@example.com", "Alice")).expect("user");
        let mut h = HeaderMap::new();
        id.apply(&mut h);
        assert_eq!(h[USER_LOGIN], "alice@example.com");
        assert_eq!(h[USER_NAME], "Alice");
        assert_eq!(h[USER_PROFILE_PIC], "https://pics.example/a.png");
        assert_eq!(h[HEADERS_INFO], "https://tailscale.com/s/serve-headers");
    }

    #[tokio::test]
    async fn cache_is_bounded_and_expires() {
        let ids = Identities::new(None);
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            ids.insert((IpAddr::from(i.to_be_bytes()), None), Lookup::NotAPeer, POSITIVE_TTL);
        }
        assert!(ids.cached_len() <= MAX_ENTRIES, "{}", ids.cached_len());
        let ip: IpAddr = "100.64.0.9".parse().expect("ip");
        let bob = Lookup::Peer(Arc::new(Peer::new(who("bob@example.com", "Bob"))));
        ids.insert((ip, None), bob, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(ids.cached(&(ip, None)).is_none(), "expired entries are not served");
        // Without a LocalAPI client nobody can be identified: a failure, never a peer.
        assert!(matches!(ids.lookup("t", None, SocketAddr::new(ip, 1)).await, Lookup::Failed(_)));
    }

    #[test]
    fn app_capabilities_carry_only_the_accepted_ones() {
        let mut w = who("carol@example.com", "Carol");
        w.caps.insert("example.com/cap/grafana".into(), vec![serde_json::json!({"role": "editor"})]);
        w.caps.insert("example.com/cap/other".into(), vec![serde_json::json!({})]);
        let peer = Peer::new(w);
        let accept = ["example.com/cap/grafana".to_owned(), "example.com/cap/absent".to_owned()];
        let v = peer.app_capabilities(&accept).expect("held");
        assert_eq!(v, r#"{"example.com/cap/grafana":[{"role":"editor"}]}"#);
        assert!(peer.app_capabilities(&["example.com/cap/absent".to_owned()]).is_none());
    }
}
