//! Who the client is — the trust decision about addresses, made once per request
//! before any policy runs.
//!
//! The connection's peer (the TCP peer, or the PROXY header's source on `proxy_protocol`
//! listeners) is the client, unless that peer is one of `[listen] trusted_proxies`: then
//! the client is the right-most address in the first of `client_ip_headers` that names
//! one which is not itself a trusted proxy (never the left-most: that one is the
//! visitor's to write). Everything downstream — `allow`/`deny`, forward auth, the
//! upstream's `X-Forwarded-For`/`X-Real-IP`, the access log, the 403 page — sees that
//! address. A request that carries any forwarding header was relayed by something and
//! is never `local`, whichever peer it came from; tailnet identities (`whois`) are only
//! asked for addresses tailscaled itself vouches for, never for one a header named.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::client_headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP};

/// `CF-Connecting-IP` (cloudflared) and `True-Client-IP` (Cloudflare Enterprise, Akamai):
/// client-address headers an app may believe; removed from requests of untrusted peers.
static CLIENT_IP_HEADERS: [HeaderName; 2] =
    [HeaderName::from_static("cf-connecting-ip"), HeaderName::from_static("true-client-ip")];

/// `[listen] trusted_proxies` and `client_ip_headers`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
    headers: Vec<HeaderName>,
}

/// The client of one request, as far as this router can tell.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The real client address.
    pub ip: IpAddr,
    /// `ip` as a header value (`X-Real-IP`, forward auth's `X-Forwarded-For`).
    pub ip_value: HeaderValue,
    /// The connection's peer: the TCP peer or the PROXY header's source.
    pub peer: SocketAddr,
    /// The peer is a trusted proxy: what it says in `X-Forwarded-*` is kept.
    pub via_proxy: Option<Forwarded>,
    /// The request carries a forwarding header: something relayed it.
    pub relayed: bool,
    /// The peer is one of this node's own tailnet addresses: a process on this host that
    /// reached a Service it hosts through tailscaled (set by the forwarder).
    pub this_host: bool,
}

/// What a trusted proxy said, kept for the upstream request (Caddy's behaviour).
#[derive(Debug, Clone, Default)]
pub(crate) struct Forwarded {
    /// The `X-Forwarded-For` chain it sent, folded into one value.
    pub chain: Option<String>,
    /// Its `X-Forwarded-Proto`.
    pub proto: Option<HeaderValue>,
    /// Its `X-Forwarded-Host`.
    pub host: Option<HeaderValue>,
}

impl TrustedProxies {
    /// From the validated `[listen]` table.
    pub(crate) fn from_config(listen: &snirouter_config::Listen) -> TrustedProxies {
        let headers =
            listen.client_ip_headers.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect();
        TrustedProxies::new(listen.trusted_proxies.clone(), headers)
    }

    /// Trusts `nets` for the client named in `headers`.
    pub(crate) fn new(nets: Vec<IpNet>, headers: Vec<HeaderName>) -> TrustedProxies {
        TrustedProxies { nets, headers }
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request with `headers` that arrived from `peer` (whose header
    /// value is `peer_value`). Call before the forwarding headers are stripped.
    pub(crate) fn resolve(&self, peer: SocketAddr, peer_value: &HeaderValue, headers: &HeaderMap) -> Client {
        let relayed = [&X_FORWARDED_FOR, &header::FORWARDED, &X_REAL_IP]
            .into_iter()
            .chain(&CLIENT_IP_HEADERS)
            .chain(&self.headers)
            .any(|h| headers.contains_key(h));
        let direct =
            Client { ip: peer.ip(), ip_value: peer_value.clone(), peer, via_proxy: None, relayed, this_host: false };
        if !relayed || self.nets.is_empty() || !self.trusts(peer.ip()) {
            return direct;
        }
        let forwarded = Forwarded {
            chain: folded(headers, &X_FORWARDED_FOR),
            proto: headers.get(X_FORWARDED_PROTO).cloned(),
            host: headers.get(X_FORWARDED_HOST).cloned(),
        };
        let named = self.headers.iter().find_map(|h| self.rightmost_untrusted(h, headers));
        match named {
            Some(ip) => Client {
                ip,
                ip_value: HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| peer_value.clone()),
                via_proxy: Some(forwarded),
                ..direct
            },
            None => Client { via_proxy: Some(forwarded), ..direct },
        }
    }

    /// Removes from a request of `client` the client-address headers only a trusted
    /// proxy may send (the forwarding headers proper go in `client_headers.rs`).
    pub(crate) fn strip_untrusted(&self, client: &Client, headers: &mut HeaderMap) {
        if client.via_proxy.is_some() {
            return;
        }
        for h in CLIENT_IP_HEADERS.iter().chain(&self.headers) {
            headers.remove(h);
        }
    }

    /// The right-most address in `name`'s values that is not a trusted proxy; `None`
    /// when there is none, or an entry on the way is not an address (the chain is
    /// broken there, and nothing left of it can be believed).
    fn rightmost_untrusted(&self, name: &HeaderName, headers: &HeaderMap) -> Option<IpAddr> {
        let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        let forwarded = name == header::FORWARDED;
        for item in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let ip = if forwarded { forwarded_for(item) } else { parse_ip(item) }?;
            if !self.trusts(ip) {
                return Some(ip.to_canonical());
            }
        }
        None
    }
}

impl Client {
    /// A process on this host acting for itself: a loopback peer, or this node's own
    /// tailnet address as the PROXY source (tailscaled ≥ 1.96 terminates a host's own
    /// Service addresses locally), and nothing relayed.
    pub(crate) fn is_local(&self) -> bool {
        !self.relayed && (self.this_host || self.peer.ip().to_canonical().is_loopback())
    }

    /// The address to ask tailscaled's `whois` about: the peer, unless a proxy named
    /// the client (tailscaled vouches only for the connections it forwarded itself).
    pub(crate) fn whois_addr(&self) -> Option<SocketAddr> {
        match &self.via_proxy {
            Some(_) if self.ip != self.peer.ip() => None,
            _ => Some(self.peer),
        }
    }

    /// The peer, when it is not the client.
    pub(crate) fn proxy(&self) -> Option<IpAddr> {
        (self.ip != self.peer.ip()).then_some(self.peer.ip())
    }

    /// The `X-Forwarded-For` sent upstream: a trusted proxy's chain with its own address
    /// appended, as Caddy does; otherwise the client alone.
    pub(crate) fn forwarded_for(&self) -> HeaderValue {
        match self.via_proxy.as_ref().and_then(|f| f.chain.as_deref()) {
            Some(chain) => {
                HeaderValue::from_str(&format!("{chain}, {}", self.peer.ip())).unwrap_or(self.ip_value.clone())
            }
            None if self.via_proxy.is_some() => {
                HeaderValue::from_str(&self.peer.ip().to_string()).unwrap_or(self.ip_value.clone())
            }
            None => self.ip_value.clone(),
        }
    }
}

/// All values of `name` folded into one comma-separated list.
fn folded(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::trim).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`.
fn parse_ip(item: &str) -> Option<IpAddr> {
    let item = item.trim().trim_matches('"');
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = item.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    item.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok())
}

/// The `for=` of one RFC 7239 `Forwarded` element (`for=192.0.2.60;proto=https`,
/// `for="[2001:db8::1]:4711"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| parse_ip(v)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str], headers: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| n.parse().expect("net")).collect(),
            headers.iter().map(|h| HeaderName::from_bytes(h.as_bytes()).expect("name")).collect(),
        )
    }

    fn resolve(t: &TrustedProxies, peer: &str, headers: &[(&str, &str)]) -> Client {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        let peer: SocketAddr = peer.parse().expect("peer");
        t.resolve(peer, &HeaderValue::from_str(&peer.ip().to_string()).expect("ip"), &h)
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_address() {
        let t = trusted(&["127.0.0.1/32", "10.0.0.0/8"], &["x-forwarded-for"]);
        let c = resolve(&t, "127.0.0.1:5000", &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")]);
        assert_eq!(c.ip.to_string(), "203.0.113.7", "the visitor's forged left-most entry is ignored");
        assert!(!c.is_local() && c.whois_addr().is_none());
        assert_eq!(c.forwarded_for(), "6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1");
        assert_eq!(c.proxy().map(|p| p.to_string()).as_deref(), Some("127.0.0.1"));
        // Two header lines are one list; ports and brackets are allowed.
        let c = resolve(
            &t,
            "127.0.0.1:5000",
            &[("x-forwarded-for", "[2001:db8::1]:443"), ("x-forwarded-for", "10.0.0.9:1")],
        );
        assert_eq!(c.ip.to_string(), "2001:db8::1");
        // Everything trusted: the peer, but still relayed (never local).
        let c = resolve(&t, "127.0.0.1:5000", &[("x-forwarded-for", "127.0.0.1")]);
        assert_eq!(c.ip.to_string(), "127.0.0.1");
        assert!(!c.is_local());
        // A broken chain: nothing left of the garbage is believed.
        let c = resolve(&t, "127.0.0.1:5000", &[("x-forwarded-for", "203.0.113.7, garbage")]);
        assert_eq!(c.ip.to_string(), "127.0.0.1");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted(&["127.0.0.1/32"], &["cf-connecting-ip"]);
        let c = resolve(&t, "127.0.0.2:5000", &[("cf-connecting-ip", "100.64.0.1"), ("x-forwarded-for", "100.64.0.1")]);
        assert_eq!(c.ip.to_string(), "127.0.0.2");
        assert!(c.relayed && !c.is_local(), "a forwarding header means relayed");
        assert_eq!(c.whois_addr().map(|a| a.to_string()).as_deref(), Some("127.0.0.2:5000"));
        assert_eq!(c.forwarded_for(), "127.0.0.2");
        let mut h = HeaderMap::new();
        h.insert("cf-connecting-ip", HeaderValue::from_static("1.1.1.1"));
        h.insert("true-client-ip", HeaderValue::from_static("1.1.1.1"));
        t.strip_untrusted(&c, &mut h);
        assert!(h.is_empty());
        // No forwarding header from loopback: local.
        assert!(resolve(&t, "127.0.0.1:5000", &[]).is_local());
        assert!(resolve(&TrustedProxies::default(), "[::ffff:127.0.0.1]:5000", &[]).is_local());
        // This node's own tailnet address as the PROXY source: this host, via tailscaled.
        let mut own = resolve(&TrustedProxies::default(), "100.64.0.5:5000", &[]);
        assert!(!own.is_local(), "a tailnet address is not local by itself");
        own.this_host = true;
        assert!(own.is_local());
        let mut relayed = resolve(&TrustedProxies::default(), "100.64.0.5:5000", &[("x-forwarded-for", "203.0.113.7")]);
        relayed.this_host = true;
        assert!(!relayed.is_local(), "relayed through this host is still relayed");
    }

    #[test]
    fn header_order_and_the_forwarded_header() {
        let t = trusted(&["127.0.0.0/8"], &["cf-connecting-ip", "forwarded"]);
        let c = resolve(&t, "127.0.0.1:1", &[("cf-connecting-ip", "198.51.100.4"), ("forwarded", "for=192.0.2.1")]);
        assert_eq!(c.ip.to_string(), "198.51.100.4");
        let c = resolve(&t, "127.0.0.1:1", &[("forwarded", "for=192.0.2.60;proto=https, for=\"[2001:db8::7]:4711\"")]);
        assert_eq!(c.ip.to_string(), "2001:db8::7");
        let c = resolve(&t, "127.0.0.1:1", &[("forwarded", "for=unknown")]);
        assert_eq!(c.ip.to_string(), "127.0.0.1");
        // A trusted proxy without an X-Forwarded-For chain: the peer is the chain.
        let c = resolve(&t, "127.0.0.1:1", &[("cf-connecting-ip", "198.51.100.4")]);
        assert_eq!(c.forwarded_for(), "127.0.0.1");
    }
}
