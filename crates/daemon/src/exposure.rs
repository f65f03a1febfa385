//! `doctor`'s check of the PROXY listener's exposure through a tailscaled bug.
//!
//! tailscaled before the fix for tailscale/tailscale#20362 (1.98.9 on the 1.98 branch,
//! 1.102.0 on the main line; 1.100 has no fix) forwards a connection to a Tailscale
//! Service address on a port the Service does not serve to this host's `127.0.0.1` on
//! the same port, when the host forwards IP (a subnet router, an exit node, Docker):
//! netstack's `acceptTCP` falls through to its Tailscale-IP case and dials
//! `127.0.0.1:<port>` (`wgengine/netstack/netstack.go`, `ipv4Loopback`). A peer granted
//! only `svc:NAME` could then reach a PROXY listener on `127.0.0.1` and send a PROXY
//! header of its own — claim any tailnet address, so any identity. Only `127.0.0.1` is
//! dialled: a PROXY listener on another loopback address (`127.0.0.2`) is out of reach.

use std::net::SocketAddr;

/// What `doctor` says about it: the level (`true`: forwarding is on, so the listener is
/// reachable now), the detail and the fix; `None` when the daemon or the listeners are
/// not affected.
pub(crate) fn finding(
    version: &str,
    forwarding: bool,
    proxy_listeners: &[SocketAddr],
) -> Option<(bool, String, String)> {
    if !vulnerable(version)? {
        return None;
    }
    let exposed: Vec<String> =
        proxy_listeners.iter().filter(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST).map(ToString::to_string).collect();
    if exposed.is_empty() {
        return None;
    }
    let now = if forwarding {
        "IP forwarding is on, so this is reachable now"
    } else {
        "IP forwarding is off, so only once it is turned on (a subnet router, an exit node, Docker)"
    };
    let detail = format!(
        "tailscaled {version} forwards connections to a Service address on ports the Service does not serve to \
         127.0.0.1 (tailscale/tailscale#20362): a peer granted only a Service could reach the PROXY listener \
         {} and send its own PROXY header, i.e. claim any tailnet identity; {now}",
        exposed.join(", ")
    );
    let fix =
        "upgrade tailscaled to 1.102.0 or later (1.98.9 or later on 1.98); until then move the PROXY listener off \
               127.0.0.1, which is the only address the bug dials: [listen] proxy_protocol = [\"127.0.0.2:8443\"] \
               (then `snirouter services sync` points the Services at it)"
            .to_owned();
    Some((forwarding, detail, fix))
}

/// Whether `version` (`1.100.0`, `1.98.8-t…`) lacks the fix; `None` when unreadable.
fn vulnerable(version: &str) -> Option<bool> {
    let v = snirouter_localapi::DaemonVersion::parse(version)?;
    Some(match (v.major, v.minor) {
        (1, m) if m < 86 => false, // no Tailscale Services yet
        (1, 98) => v.patch < 9,
        (1, m) => m < 102,
        _ => false,
    })
}

/// Whether the host forwards IP (IPv4 or IPv6), as the kernel says.
pub(crate) fn ip_forwarding() -> bool {
    ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"]
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_is_in_1_98_9_and_1_102_0_not_in_1_100() {
        for (v, want) in [
            ("1.96.4", Some(true)),
            ("1.98.8-t1234", Some(true)),
            ("1.98.9", Some(false)),
            ("1.100.0", Some(true)),
            ("1.101.2-pre", Some(true)),
            ("1.102.0", Some(false)),
            ("1.103.0-t3caf7d9e7-g084ee3b64", Some(false)),
            ("1.80.0", Some(false)),
            ("unknown", None),
        ] {
            assert_eq!(vulnerable(v), want, "{v}");
        }
    }

    #[test]
    fn only_a_proxy_listener_on_127_0_0_1_is_exposed() {
        let on_one: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let on_two: SocketAddr = "127.0.0.2:8443".parse().expect("addr");
        let (now, detail, fix) = finding("1.100.0", true, &[on_one]).expect("flagged");
        assert!(now && detail.contains("127.0.0.1:8443") && detail.contains("#20362"), "{detail}");
        assert!(fix.contains("1.102.0") && fix.contains("127.0.0.2:8443"), "{fix}");
        assert!(!finding("1.100.0", false, &[on_one]).expect("flagged").0, "forwarding off: not reachable now");
        assert!(finding("1.100.0", true, &[on_two]).is_none(), "127.0.0.2 is out of the bug's reach");
        assert!(finding("1.102.0", true, &[on_one]).is_none(), "fixed");
    }
}
