//! Access by network and tailnet identity: the trust decision for services with
//! `allow` or `deny`.
//!
//! `deny` is decided first: a client matching one of its entries is refused whatever
//! `allow` and `forward_auth` say. Then a request is admitted when its client matches
//! one `allow` entry ([`snirouter_config::Principal`]). `local` and networks are decided
//! from the client address alone (`client_addr.rs`: a loopback peer that relayed
//! nothing is `local`; networks match the real client address, after
//! `trusted_proxies`); every other entry from tailscaled's `whois` for the connection's
//! address (`identity.rs`) — the user's login, the node's tags, and the application
//! capabilities the tailnet policy grants it toward the service's VIP
//! (`svc_name=svc:NAME`) for a Tailscale Service, toward the node for a service with
//! its own `fqdn`. An address a proxy named is never looked up: tailscaled vouches only
//! for connections it carried itself.
//!
//! Refusals ([`Refusal`]) are answered by the router itself: 403 with a page that says
//! who the client is, which rule refused it and what would let it in, or 503 when
//! `whois` failed — a request whose identity cannot be established is never let
//! through. With `forward_auth`, an `allow` refusal is not the answer: the auth server
//! decides instead (tailnet identity first, the auth server for everyone else), and a
//! client admitted here skips it, with its `copy_headers` filled from the tailnet
//! identity ([`auth_headers`]).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use snirouter_config::Principal;

use crate::client_addr::Client;
use crate::identity::{Identities, Lookup, Peer};

/// One service's `allow` and `deny` lists.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Who may use the service (never empty when set); `None`: whoever is not denied,
    /// with `forward_auth` deciding as usual.
    pub allow: Option<Vec<Principal>>,
    /// Who is refused before anything else.
    pub deny: Vec<Principal>,
}

/// The access stage's decision.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A client `allow` admits; the peer when `whois` was asked (`local` and networks
    /// need no lookup). It skips `forward_auth`.
    Admitted(Option<Arc<Peer>>),
    /// No `allow` list and not denied: `forward_auth`, if any, decides.
    Pass,
    /// Not admitted by `allow`: `forward_auth` decides when there is one, else this.
    Refused(Refusal),
    /// Refused whatever else is configured: a `deny` rule matched, or whether one
    /// does could not be established.
    Denied(Refusal),
}

/// Why a client was not admitted.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A tailnet node that matches no entry.
    NotListed(Arc<Peer>),
    /// An address tailscaled knows no node for.
    NotATailnetClient,
    /// An address no entry admits, where no tailnet identity applies (no identity
    /// entry, or the address was named by a proxy).
    NotAdmitted,
    /// `whois` failed: who it is cannot be known.
    Unknown(Arc<str>),
    /// This `deny` rule matched.
    DeniedBy(Principal),
}

/// Whether `principal` is decided by the address alone.
fn by_address(principal: &Principal, client: &Client) -> Option<bool> {
    match principal {
        Principal::Local => Some(client.is_local()),
        Principal::Network(net) => Some(net.contains(&client.ip.to_canonical())),
        _ => None,
    }
}

/// One `whois` per decision, asked only when an entry needs it and only for an
/// address tailscaled vouches for.
struct Who<'a> {
    identities: &'a Identities,
    service: &'a str,
    scope: Option<&'a Arc<str>>,
    client: &'a Client,
    answer: Option<Lookup>,
}

impl Who<'_> {
    async fn get(&mut self) -> &Lookup {
        if self.answer.is_none() {
            self.answer = Some(match self.client.whois_addr() {
                Some(addr) => self.identities.lookup(self.service, self.scope, addr).await,
                None => Lookup::NotAPeer,
            });
        }
        self.answer.get_or_insert(Lookup::NotAPeer)
    }
}

impl AccessPolicy {
    /// Decides for `client`, asking `identities` (capabilities toward `scope`) only
    /// when an entry needs `whois`: `deny` first, then `allow`.
    pub(crate) async fn decide(
        &self,
        identities: &Identities,
        service: &str,
        scope: Option<&Arc<str>>,
        client: &Client,
    ) -> Verdict {
        let mut who = Who { identities, service, scope, client, answer: None };
        if let Some(refusal) = self.denied(&mut who).await {
            return Verdict::Denied(refusal);
        }
        let Some(allow) = &self.allow else { return Verdict::Pass };
        if allow.iter().any(|p| by_address(p, client) == Some(true)) {
            return Verdict::Admitted(None);
        }
        if allow.iter().all(|p| by_address(p, client).is_some()) || client.whois_addr().is_none() {
            return Verdict::Refused(Refusal::NotAdmitted);
        }
        match who.get().await {
            Lookup::Peer(peer) if allow.iter().any(|p| matches(p, peer)) => Verdict::Admitted(Some(Arc::clone(peer))),
            Lookup::Peer(peer) => Verdict::Refused(Refusal::NotListed(Arc::clone(peer))),
            Lookup::NotAPeer => Verdict::Refused(Refusal::NotATailnetClient),
            Lookup::Failed(cause) => Verdict::Refused(Refusal::Unknown(Arc::clone(cause))),
        }
    }

    /// The `deny` rule `client` matches; a failed `whois` where an identity rule needs
    /// one refuses too.
    async fn denied(&self, who: &mut Who<'_>) -> Option<Refusal> {
        if let Some(rule) = self.deny.iter().find(|p| by_address(p, who.client) == Some(true)) {
            return Some(Refusal::DeniedBy(rule.clone()));
        }
        if self.deny.iter().all(|p| by_address(p, who.client).is_some()) {
            return None;
        }
        let deny = &self.deny;
        match who.get().await {
            Lookup::Peer(peer) => deny.iter().find(|p| matches(p, peer)).map(|p| Refusal::DeniedBy(p.clone())),
            Lookup::NotAPeer => None,
            Lookup::Failed(cause) => Some(Refusal::Unknown(Arc::clone(cause))),
        }
    }
}

/// Whether `peer` is what an identity `principal` admits.
fn matches(principal: &Principal, peer: &Peer) -> bool {
    let who = &peer.who;
    match principal {
        Principal::User(login) => peer.is_user() && who.login_name.eq_ignore_ascii_case(login),
        Principal::Domain(domain) => {
            peer.is_user() && who.login_name.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
        }
        Principal::Tag(tag) => who.tags.iter().any(|t| t == tag),
        Principal::Capability(cap) => who.caps.contains_key(cap),
        Principal::AnyNode => true,
        Principal::Local | Principal::Network(_) => false,
    }
}

impl Refusal {
    /// The answer: 403 (or 503 for [`Refusal::Unknown`]), HTML for browsers (`Accept`
    /// with `text/html`), plain text otherwise. The caller wraps the body
    /// (`Response::map`), so this module needs no body type.
    pub(crate) fn response(
        &self,
        service: &str,
        policy: &AccessPolicy,
        client: &Client,
        request: &HeaderMap,
    ) -> Response<Bytes> {
        let (status, title, lines) = self.explain(service, policy, client);
        let html = request.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")));
        let (body, kind) = if html {
            (render_html(status, &title, &lines), "text/html; charset=utf-8")
        } else {
            let mut text =
                format!("{} {}\nsnirouter: {title}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
            for line in &lines {
                text.push_str(&format!("  {line}\n"));
            }
            (text, "text/plain; charset=utf-8")
        };
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }

    /// A short name for logs and the access log.
    pub(crate) fn reason(&self) -> String {
        match self {
            Refusal::NotListed(peer) => format!("not in allow: {}", peer.who.login_name),
            Refusal::NotATailnetClient => "not a tailnet client".to_owned(),
            Refusal::NotAdmitted => "not in allow".to_owned(),
            Refusal::Unknown(cause) => format!("whois failed: {cause}"),
            Refusal::DeniedBy(rule) => format!("deny {rule}"),
        }
    }

    /// Status, one-line title, and the lines that explain it: who, who is admitted, what to do.
    fn explain(&self, service: &str, policy: &AccessPolicy, client: &Client) -> (StatusCode, String, Vec<String>) {
        let admits = match &policy.allow {
            Some(allow) => format!("{service} admits: {}", describe_allow(allow, service)),
            None => format!("{service} admits everyone its deny list does not refuse"),
        };
        let from = match client.proxy() {
            Some(proxy) => format!("{} (relayed by {proxy})", client.ip),
            None => client.ip.to_string(),
        };
        match self {
            Refusal::NotListed(peer) => (
                StatusCode::FORBIDDEN,
                format!("{} may not use {service}", describe_peer(peer)),
                vec![
                    format!("You are {} (connecting from {from}).", describe_peer(peer)),
                    admits,
                    "To get in, ask the tailnet admin to add you to this service's allow list in snirouter's configuration, to tag your device with one of the tags above, or to grant you one of the capabilities above in the tailnet policy.".to_owned(),
                ],
            ),
            Refusal::NotATailnetClient => (
                StatusCode::FORBIDDEN,
                format!("{from} is not a tailnet client, and {service} only admits tailnet identities"),
                vec![
                    format!("Your address, {from}, is not one that this node's tailscaled knows."),
                    admits,
                    "To get in, connect over the tailnet (with Tailscale running on your device).".to_owned(),
                ],
            ),
            Refusal::NotAdmitted => (
                StatusCode::FORBIDDEN,
                format!("{from} may not use {service}"),
                vec![
                    format!("Your address is {from}; no entry of the allow list admits it{}.", if client.relayed { ", and a relayed request is never a local one" } else { "" }),
                    admits,
                    "To get in, connect from a network the list names, or over the tailnet if it names tailnet identities.".to_owned(),
                ],
            ),
            Refusal::Unknown(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("who you are could not be established, and {service} only admits some tailnet identities"),
                vec![
                    format!("snirouter asked this node's tailscaled who {from} is and got no answer: {cause}."),
                    "Requests whose identity is unknown are refused, never let through. Retry in a few seconds; if this lasts, check tailscaled on the server (systemctl status tailscaled, snirouter doctor).".to_owned(),
                ],
            ),
            Refusal::DeniedBy(rule) => (
                StatusCode::FORBIDDEN,
                format!("{from} is refused by {service}'s deny list"),
                vec![
                    format!("The deny rule {rule:?} matches you (connecting from {from})."),
                    "Denied clients are refused whatever else would admit them. If this is wrong, ask the server's admin to change the service's deny list.".to_owned(),
                ],
            ),
        }
    }
}

/// `alice@example.com (Alice) on laptop.tailnet.ts.net`, or a tagged node with its tags.
fn describe_peer(peer: &Peer) -> String {
    let who = &peer.who;
    if peer.is_user() {
        let name = if who.display_name.is_empty() || who.display_name == who.login_name {
            String::new()
        } else {
            format!(" ({})", who.display_name)
        };
        return format!("{}{name} on {}", who.login_name, who.node_name);
    }
    match who.tags.as_slice() {
        [] => format!("the node {}", who.node_name),
        tags => format!("the tagged node {} ({})", who.node_name, tags.join(", ")),
    }
}

/// The `allow` list in words.
fn describe_allow(allow: &[Principal], service: &str) -> String {
    let words: Vec<String> = allow
        .iter()
        .map(|p| match p {
            Principal::User(login) => login.clone(),
            Principal::Domain(d) => format!("every user at {d}"),
            Principal::Tag(t) => format!("devices tagged {t}"),
            Principal::Capability(c) => format!("holders of the capability {c} toward svc:{service}"),
            Principal::AnyNode => "every tailnet device".to_owned(),
            Principal::Local => "clients on the server itself".to_owned(),
            Principal::Network(net) => format!("clients in {net}"),
        })
        .collect();
    words.join("; ")
}

/// A small self-contained page; every value is HTML-escaped.
fn render_html(status: StatusCode, title: &str, lines: &[String]) -> String {
    let mut body = String::new();
    for line in lines {
        body.push_str(&format!("<p>{}</p>\n", escape(line)));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{code} {reason}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.3rem}}small{{color:#666}}</style></head>\n<body><h1>{title}</h1>\n{body}<p><small>{code} {reason} · snirouter</small></p></body></html>\n",
        code = status.as_u16(),
        reason = status.canonical_reason().unwrap_or(""),
        title = escape(title),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// For a client admitted here on a service with `forward_auth`: the auth server's
/// `copy_headers` filled from the tailnet identity, as the auth server would —
/// `Remote-User` (the login; a tagged node's name), `Remote-Email` (a login that is an
/// address), `Remote-Name` (the display name), `Remote-Groups` (a tagged node's tags).
/// Other names stay unset; client copies of all of them were already removed.
pub(crate) fn auth_headers(peer: Option<&Peer>, copy_headers: &[String]) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(peer) = peer else { return out };
    let who = &peer.who;
    for name in copy_headers {
        let value = match name.to_ascii_lowercase().as_str() {
            "remote-user" if peer.is_user() => who.login_name.clone(),
            "remote-user" => who.node_name.clone(),
            "remote-email" if peer.is_user() && who.login_name.contains('@') => who.login_name.clone(),
            "remote-name" if peer.is_user() => who.display_name.clone(),
            "remote-groups" if !who.tags.is_empty() => who.tags.join(","),
            _ => continue,
        };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value.as_bytes())) {
            out.insert(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use snirouter_localapi::WhoIs;

    use super::*;

    fn peer(login: &str, tags: &[&str], caps: &[&str]) -> Arc<Peer> {
        Arc::new(Peer::new(WhoIs {
            login_name: login.to_owned(),
            display_name: if tags.is_empty() { "Alice <A&B>".to_owned() } else { login.to_owned() },
            profile_pic_url: String::new(),
            node_name: "laptop.tailnet.ts.net".to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            caps: caps.iter().map(|c| ((*c).to_owned(), vec![serde_json::json!({})])).collect::<BTreeMap<_, _>>(),
        }))
    }

    fn rule(raw: &str) -> Principal {
        let src = format!(
            "[listen]\nhttps=[\"127.0.0.1:1\"]\n[services.grafana]\nupstream=\"http://127.0.0.1:9\"\nallow=[{raw:?}]\n"
        );
        let config = snirouter_config::parse(&src, "t").expect("config");
        config.services[0].allow.clone().expect("allow")[0].clone()
    }

    #[test]
    fn each_entry_matches_what_it_names() {
        let alice = peer("alice@example.com", &[], &[]);
        let monitor = peer("tagged-devices", &["tag:monitoring"], &[]);
        let carol = peer("carol@other.org", &[], &["example.com/cap/grafana"]);
        let cases = [
            ("ALICE@example.com", [true, false, false]),
            ("*@example.com", [true, false, false]),
            ("tag:monitoring", [false, true, false]),
            ("cap:example.com/cap/grafana", [false, false, true]),
            ("*", [true, true, true]),
            ("local", [false, false, false]),
            // A tagged node's pseudo-user is nobody's login.
            ("tagged-devices@x", [false, false, false]),
        ];
        for (raw, want) in cases {
            let p = rule(raw);
            let got = [matches(&p, &alice), matches(&p, &monitor), matches(&p, &carol)];
            assert_eq!(got, want, "{raw}");
        }
    }

    /// A direct client at `addr`, or — `relayed` — a visitor (203.0.113.7) that a
    /// trusted proxy at `addr` relayed.
    fn client(addr: &str, relayed: bool) -> Client {
        let peer: SocketAddr = addr.parse().expect("addr");
        let value = HeaderValue::from_str(&peer.ip().to_string()).expect("ip");
        let mut h = HeaderMap::new();
        if relayed {
            h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        }
        let proxies = vec![ipnet::IpNet::from(peer.ip())];
        crate::client_addr::TrustedProxies::new(proxies, vec![HeaderName::from_static("x-forwarded-for")])
            .resolve(peer, &value, &h)
    }

    fn allow(rules: Vec<Principal>) -> AccessPolicy {
        AccessPolicy { allow: Some(rules), deny: Vec::new() }
    }

    #[tokio::test]
    async fn local_needs_no_lookup_and_failures_refuse() {
        let ids = Identities::new(None); // every lookup fails
        let policy = allow(vec![Principal::Local, Principal::AnyNode]);
        let v = policy.decide(&ids, "grafana", None, &client("127.0.0.1:5000", false)).await;
        assert!(matches!(v, Verdict::Admitted(None)), "{v:?}");
        let v = policy.decide(&ids, "grafana", None, &client("[::ffff:127.0.0.1]:5000", false)).await;
        assert!(matches!(v, Verdict::Admitted(None)), "IPv4-mapped loopback: {v:?}");
        let far = client("100.64.0.7:5000", false);
        let v = policy.decide(&ids, "grafana", None, &far).await;
        let Verdict::Refused(refusal @ Refusal::Unknown(_)) = v else { panic!("refused: {v:?}") };
        let resp = refusal.response("grafana", &policy, &far, &HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
    }

    #[tokio::test]
    async fn a_relayed_request_is_never_local_and_networks_need_no_lookup() {
        let ids = Identities::new(None);
        let local_only = allow(vec![Principal::Local]);
        let v = local_only.decide(&ids, "grafana", None, &client("127.0.0.1:5000", true)).await;
        let Verdict::Refused(refusal @ Refusal::NotAdmitted) = v else { panic!("refused: {v:?}") };
        let (status, _, lines) = refusal.explain("grafana", &local_only, &client("127.0.0.1:5000", true));
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(lines.join(" ").contains("a relayed request is never a local one"), "{lines:?}");
        let lan = allow(vec![rule("192.168.1.0/24")]);
        let v = lan.decide(&ids, "grafana", None, &client("192.168.1.20:5000", false)).await;
        assert!(matches!(v, Verdict::Admitted(None)), "{v:?}");
        let v = lan.decide(&ids, "grafana", None, &client("192.168.2.20:5000", false)).await;
        assert!(matches!(v, Verdict::Refused(Refusal::NotAdmitted)), "no whois for a network-only list: {v:?}");
    }

    #[tokio::test]
    async fn deny_comes_first_and_a_failed_lookup_never_lets_through() {
        let ids = Identities::new(None);
        let policy = AccessPolicy { allow: Some(vec![Principal::Local]), deny: vec![rule("127.0.0.0/8")] };
        let v = policy.decide(&ids, "grafana", None, &client("127.0.0.1:5000", false)).await;
        let Verdict::Denied(refusal) = v else { panic!("denied: {v:?}") };
        let (_, title, lines) = refusal.explain("grafana", &policy, &client("127.0.0.1:5000", false));
        assert!(title.contains("deny list") && lines[0].contains("127.0.0.0/8"), "{title} {lines:?}");
        let only_deny = AccessPolicy { allow: None, deny: vec![rule("tag:blocked")] };
        let v = only_deny.decide(&ids, "grafana", None, &client("100.64.0.7:5000", false)).await;
        assert!(matches!(v, Verdict::Denied(Refusal::Unknown(_))), "{v:?}");
        let v = only_deny.decide(&ids, "grafana", None, &client("127.0.0.1:5000", true)).await;
        assert!(matches!(v, Verdict::Pass), "a relayed address is no tailnet node: {v:?}");
    }

    #[test]
    fn the_refusal_page_says_who_and_what_would_let_them_in_escaped() {
        let policy = allow(vec![rule("bob@example.com"), rule("tag:monitoring"), rule("cap:example.com/cap/grafana")]);
        let client = client("100.64.0.7:5000", false);
        let (status, title, lines) =
            Refusal::NotListed(peer("alice@example.com", &[], &[])).explain("grafana", &policy, &client);
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(title.starts_with("alice@example.com (Alice <A&B>) on laptop.tailnet.ts.net"), "{title}");
        let all = lines.join("\n");
        for needle in [
            "100.64.0.7",
            "bob@example.com",
            "devices tagged tag:monitoring",
            "example.com/cap/grafana toward svc:grafana",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        let html = render_html(status, &title, &lines);
        assert!(html.contains("Alice &lt;A&amp;B&gt;") && !html.contains("<A&B>"), "{html}");
        let (_, tagged, _) =
            Refusal::NotListed(peer("tagged-devices", &["tag:ci"], &[])).explain("grafana", &policy, &client);
        assert!(tagged.contains("tagged node laptop.tailnet.ts.net (tag:ci)"), "{tagged}");
    }

    #[test]
    fn auth_headers_come_from_the_tailnet_identity() {
        let names: Vec<String> =
            ["Remote-User", "Remote-Email", "Remote-Name", "Remote-Groups"].iter().map(|s| (*s).to_owned()).collect();
        let h = auth_headers(Some(&peer("alice@example.com", &[], &[])), &names);
        assert_eq!(h["remote-user"], "alice@example.com");
        assert_eq!(h["remote-email"], "alice@example.com");
        assert_eq!(h["remote-name"], "Alice <A&B>");
        assert!(!h.contains_key("remote-groups"));
        let h = auth_headers(Some(&peer("tagged-devices", &["tag:ci", "tag:x"], &[])), &names);
        assert_eq!(h["remote-user"], "laptop.tailnet.ts.net");
        assert_eq!(h["remote-groups"], "tag:ci,tag:x");
        assert!(!h.contains_key("remote-email") && !h.contains_key("remote-name"));
        assert!(auth_headers(None, &names).is_empty());
    }
}
