//! Local clients on the router's own host (hairpin).
//!
//! Tailscale documents that a Service host cannot reach the Services it hosts, so on
//! `storage` a dashboard widget, a Prometheus scrape or `curl https://grafana.TAILNET.ts.net`
//! fails when the name resolves to the service's address (tailscaled ≥ 1.96 may route
//! locally served service addresses itself; not verified, see the reference notes). The
//! router is on the host with every certificate, so the fix is local and depends on
//! neither: the names resolve to loopback (`snirouter hosts`
//! prints the hosts-file lines; NixOS: `services.snirouter.hairpin`) and an `https`
//! listener takes loopback connections. Requests then go through the same routes and
//! policy with a valid certificate. `doctor` checks both halves with [`resolve_all`].

use std::net::{IpAddr, SocketAddr};

use snirouter_config::Config;

/// The loopback addresses local clients are sent to.
const LOOPBACK: [&str; 2] = ["127.0.0.1", "::1"];

/// The MagicDNS suffix as tailscaled reports it.
pub async fn asked_suffix(config: &Config) -> Result<String, String> {
    let client = snirouter_localapi::LocalClient::new(&config.tailscale.socket).map_err(|e| e.to_string())?;
    let status = client.status().await.map_err(|e| e.to_string())?;
    status.magic_dns_suffix().map(str::to_owned).ok_or_else(|| "tailscaled reports no MagicDNS suffix".to_owned())
}

/// Every served name under `suffix`, in config order.
pub fn fqdns(config: &Config, suffix: &str) -> Vec<String> {
    config.services.iter().map(|s| s.fqdn(suffix)).collect()
}

/// Hosts-file lines sending every name to both loopback addresses.
pub fn lines(names: &[String]) -> String {
    let mut out = String::from("# snirouter: served names on this host's loopback (local clients; snirouter hosts)\n");
    for addr in LOOPBACK {
        for name in names {
            out.push_str(&format!("{addr} {name}\n"));
        }
    }
    out
}

/// The `https` listener that takes connections to `ip` (its own address or a wildcard of
/// the same family). `proxy_protocol` listeners do not count: local clients send no
/// PROXY header.
fn listener_for(config: &Config, ip: IpAddr) -> Option<SocketAddr> {
    let takes = |l: &SocketAddr| l.ip() == ip || (l.ip().is_unspecified() && l.is_ipv4() == ip.is_ipv4());
    config.listen.https.iter().find(|l| takes(l)).copied()
}

/// How one name resolves on this host.
pub(crate) enum Resolved {
    /// To a loopback address an `https` listener takes.
    Served(IpAddr, SocketAddr),
    /// To a loopback address no `https` listener takes.
    Unserved(IpAddr),
    /// Elsewhere (typically the Tailscale Service address), or not at all.
    Elsewhere(String),
}

/// How each of `names` resolves on this host, in the order given. The lookups run at
/// once: with a broken resolver each can take its full timeout.
pub(crate) async fn resolve_all(config: &Config, names: &[String]) -> Vec<Resolved> {
    let mut lookups = tokio::task::JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let name = name.clone();
        lookups.spawn(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 443)).await;
            (i, addrs.map(|a| a.map(|a| a.ip()).collect::<Vec<IpAddr>>()))
        });
    }
    let mut found: Vec<Option<std::io::Result<Vec<IpAddr>>>> = names.iter().map(|_| None).collect();
    while let Some(Ok((i, addrs))) = lookups.join_next().await {
        found[i] = Some(addrs);
    }
    found
        .into_iter()
        .map(|addrs| classify(config, addrs.unwrap_or_else(|| Err(std::io::Error::other("the lookup did not finish")))))
        .collect()
}

/// Where one name's addresses send local clients, and whether an `https` listener takes it.
fn classify(config: &Config, addrs: std::io::Result<Vec<IpAddr>>) -> Resolved {
    let addrs = match addrs {
        Ok(a) => a,
        Err(e) => return Resolved::Elsewhere(format!("does not resolve here ({e})")),
    };
    let loopback: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_loopback).collect();
    if let Some((ip, l)) = loopback.iter().find_map(|ip| listener_for(config, *ip).map(|l| (*ip, l))) {
        return Resolved::Served(ip, l);
    }
    match loopback.first() {
        Some(ip) => Resolved::Unserved(*ip),
        None => Resolved::Elsewhere(format!(
            "resolves to {} here",
            addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_goes_to_both_loopback_addresses() {
        let names = vec!["grafana.t.ts.net".to_owned(), "jellyfin.t.ts.net".to_owned()];
        let text = lines(&names);
        let entries: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            entries,
            [
                "127.0.0.1 grafana.t.ts.net",
                "127.0.0.1 jellyfin.t.ts.net",
                "::1 grafana.t.ts.net",
                "::1 jellyfin.t.ts.net"
            ]
        );
    }

    #[test]
    fn only_https_listeners_on_that_address_or_its_wildcard_take_local_clients() {
        let src = "[listen]\nhttps=[\"127.0.0.1:8443\", \"[::]:443\"]\nproxy_protocol=[\"127.0.0.2:8444\"]\n\
                   [services.grafana]\nupstream=\"http://127.0.0.1:3000\"\n";
        let config = snirouter_config::parse(src, "test").expect("config");
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        let v6: IpAddr = "::1".parse().expect("ip");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(listener_for(&config, v4), Some("127.0.0.1:8443".parse().expect("addr")));
        assert_eq!(listener_for(&config, v6), Some("[::]:443".parse().expect("addr")));
        assert_eq!(listener_for(&config, other), None, "a PROXY listener does not count");
    }
}
