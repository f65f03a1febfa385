//! PROXY protocol v2: the header tailscaled's serve-config puts in front of each
//! forwarded connection (`ProxyProtocol: 2`), carrying the real tailnet client address.
//!
//! Only listeners configured under `[listen] proxy_protocol` read it, and there it is
//! required: a connection without a valid header is closed, because anything on that
//! port claiming an address without one is not tailscaled.
//!
//! The header is a claim, so it is trusted by peer, not by port ([`Senders`]): only
//! peers in `listen.proxy_protocol_from` (loopback by default, where tailscaled's serve
//! connects from) may make it. Any other peer is closed before a byte is read, as
//! HAProxy's `accept-proxy` behind an ACL or nginx's `set_real_ip_from` do; the claimed
//! address would otherwise feed `X-Forwarded-For`, per-client limits and identity.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::v2::{Addresses, Command, Header};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The fixed part of a v2 header: signature (12), version/command, family, length (2).
const FIXED_LEN: usize = 16;
/// Largest header accepted (addresses plus TLVs). tailscaled sends 28 or 52 bytes.
pub const MAX_HEADER_LEN: usize = 1024;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection ended or failed before a full header arrived.
    #[error("connection closed before a complete PROXY v2 header ({0})")]
    Io(#[from] std::io::Error),
    /// The first bytes are not the v2 signature.
    #[error(
        "no PROXY v2 header: the connection started with {0}; only tailscaled (serve-config ProxyProtocol: 2) may connect to this listener"
    )]
    Missing(&'static str),
    /// The header is larger than [`MAX_HEADER_LEN`].
    #[error("PROXY v2 header of {0} bytes exceeds the {MAX_HEADER_LEN}-byte limit")]
    TooLong(usize),
    /// The header is malformed.
    #[error("malformed PROXY v2 header: {0}")]
    Malformed(String),
    /// The header names a unix-socket or unspecified source on a PROXY command.
    #[error("PROXY v2 header has no IP source address ({0})")]
    NoAddress(&'static str),
}

/// The peers allowed to send PROXY headers (`listen.proxy_protocol_from`).
#[derive(Debug, Clone)]
pub struct Senders(Vec<IpNet>);

impl Senders {
    /// Trust exactly `nets`.
    pub fn new(nets: Vec<IpNet>) -> Senders {
        Senders(nets)
    }

    /// Whether `peer` (canonical: IPv4-mapped IPv6 as IPv4) may send a PROXY header.
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&peer))
    }
}

/// Why a `proxy_protocol` connection is closed before its ClientHello.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// The peer is not in `listen.proxy_protocol_from`: nothing was read.
    Untrusted,
    /// The header is malformed.
    Bad(ProxyHeaderError),
    /// No complete header within `timeouts.proxy_header`.
    Timeout,
}

/// Stage 2 on `proxy_protocol` listeners: the client's address, from a trusted peer's
/// PROXY v2 header (the peer itself for a `LOCAL` command). An untrusted peer is
/// refused before a byte is read.
pub(crate) async fn client_address<R: AsyncRead + Unpin>(
    io: &mut R,
    peer: SocketAddr,
    senders: &Senders,
    timeout: std::time::Duration,
) -> Result<SocketAddr, Rejected> {
    if !senders.allows(peer.ip()) {
        return Err(Rejected::Untrusted);
    }
    match tokio::time::timeout(timeout, read(io)).await {
        Ok(Ok(addr)) => Ok(addr.unwrap_or(peer)),
        Ok(Err(e)) => Err(Rejected::Bad(e)),
        Err(_) => Err(Rejected::Timeout),
    }
}

/// Reads one PROXY v2 header from `io` and returns the client address it names.
/// A `LOCAL` command (health checks by the proxy itself) yields `None`: use the
/// socket's peer address.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut fixed = [0u8; FIXED_LEN];
    io.read_exact(&mut fixed).await?;
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if fixed[..12] != *ppp::v2::PROTOCOL_PREFIX {
        return Err(ProxyHeaderError::Missing(describe_start(&fixed)));
    }
    if FIXED_LEN + len > MAX_HEADER_LEN {
        return Err(ProxyHeaderError::TooLong(FIXED_LEN + len));
    }
    let mut buf = Vec::with_capacity(FIXED_LEN + len);
    buf.extend_from_slice(&fixed);
    buf.resize(FIXED_LEN + len, 0);
    io.read_exact(&mut buf[FIXED_LEN..]).await?;
    parse(&buf)
}

/// Parses a complete header (signature through TLVs).
pub fn parse(buf: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header = Header::try_from(buf).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(None);
    }
    match header.addresses {
        Addresses::IPv4(a) => Ok(Some(SocketAddr::from((a.source_address, a.source_port)))),
        Addresses::IPv6(a) => Ok(Some(SocketAddr::new(IpAddr::V6(a.source_address).to_canonical(), a.source_port))),
        Addresses::Unix(_) => Err(ProxyHeaderError::NoAddress("unix socket")),
        Addresses::Unspecified => Err(ProxyHeaderError::NoAddress("unspecified family")),
    }
}

fn describe_start(bytes: &[u8]) -> &'static str {
    match bytes.first() {
        Some(0x16) => "a TLS ClientHello",
        Some(b'P') if bytes.starts_with(b"PROXY ") => "a PROXY v1 (text) header",
        Some(b'A'..=b'Z') => "what looks like an HTTP request",
        _ => "unrecognized bytes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};

    fn header(addrs: impl Into<Addresses>, cmd: Command) -> Vec<u8> {
        Builder::with_addresses(Version::Two | cmd, Protocol::Stream, addrs).build().expect("build header")
    }

    #[test]
    fn senders_are_trusted_by_range() {
        let senders = Senders::new(vec!["127.0.0.0/8".parse().expect("net"), "100.64.0.0/10".parse().expect("net")]);
        for ok in ["127.0.0.1", "127.9.9.9", "100.64.0.1", "100.127.255.254"] {
            assert!(senders.allows(ok.parse().expect("ip")), "{ok}");
        }
        for refused in ["192.168.1.10", "100.128.0.1", "::1", "fd7a:115c:a1e0::1"] {
            assert!(!senders.allows(refused.parse().expect("ip")), "{refused}");
        }
    }

    #[tokio::test]
    async fn the_stage_trusts_only_senders_and_bounds_the_wait() {
        let loopback = Senders::new(vec!["127.0.0.0/8".parse().expect("net")]);
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let wait = std::time::Duration::from_millis(50);
        let proxied = header(ppp::v2::IPv4::new([100, 64, 0, 7], [100, 64, 0, 1], 51234, 443), Command::Proxy);
        let client = client_address(&mut &proxied[..], peer, &loopback, wait).await.expect("client");
        assert_eq!(client, "100.64.0.7:51234".parse().expect("addr"));
        let local = header(ppp::v2::IPv4::new([127, 0, 0, 1], [127, 0, 0, 1], 1, 2), Command::Local);
        assert_eq!(client_address(&mut &local[..], peer, &loopback, wait).await.expect("local"), peer);

        // An untrusted peer is refused before a byte is read.
        let stranger: SocketAddr = "192.168.1.10:40000".parse().expect("addr");
        let mut unread = &proxied[..];
        let refused = client_address(&mut unread, stranger, &loopback, wait).await;
        assert!(matches!(refused, Err(Rejected::Untrusted)), "{refused:?}");
        assert_eq!(unread.len(), proxied.len());

        // A peer that sends nothing is cut at the timeout.
        let (mut silent, _keep) = tokio::io::duplex(64);
        let timed_out = client_address(&mut silent, peer, &loopback, wait).await;
        assert!(matches!(timed_out, Err(Rejected::Timeout)), "{timed_out:?}");
        let garbage = client_address(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], peer, &loopback, wait).await;
        assert!(matches!(garbage, Err(Rejected::Bad(_))), "{garbage:?}");
    }

    #[tokio::test]
    async fn an_ipv4_mapped_source_is_read_as_ipv4() {
        let mapped = header(
            ppp::v2::IPv6::new(
                [0, 0, 0, 0, 0, 0xffff, 0x6440, 0x0007],
                [0, 0, 0, 0, 0, 0xffff, 0x6440, 0x0001],
                51234,
                443,
            ),
            Command::Proxy,
        );
        let addr = read(&mut &mapped[..]).await.expect("parse");
        assert_eq!(addr, Some("100.64.0.7:51234".parse().expect("addr")));
    }

    #[tokio::test]
    async fn reads_ipv4_and_ipv6_sources() {
        let v4 = header(ppp::v2::IPv4::new([100, 64, 0, 7], [100, 64, 0, 1], 51234, 443), Command::Proxy);
        let mut input = v4.clone();
        input.extend_from_slice(b"\x16\x03\x01rest");
        let mut cursor = &input[..];
        let addr = read(&mut cursor).await.expect("parse");
        assert_eq!(addr, Some("100.64.0.7:51234".parse().expect("addr")));
        assert_eq!(cursor, b"\x16\x03\x01rest", "only the header is consumed");

        let v6 = header(
            ppp::v2::IPv6::new(
                [0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1],
                [0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2],
                4000,
                443,
            ),
            Command::Proxy,
        );
        let addr = read(&mut &v6[..]).await.expect("parse");
        assert_eq!(addr, Some("[fd7a:115c:a1e0::1]:4000".parse().expect("addr")));
    }

    #[tokio::test]
    async fn local_command_has_no_address() {
        let h = header(ppp::v2::IPv4::new([127, 0, 0, 1], [127, 0, 0, 1], 1, 2), Command::Local);
        assert_eq!(read(&mut &h[..]).await.expect("parse"), None);
    }

    #[tokio::test]
    async fn refuses_missing_truncated_and_garbage() {
        let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh";
        assert!(matches!(read(&mut &tls[..]).await, Err(ProxyHeaderError::Missing("a TLS ClientHello"))));
        let v1 = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        assert!(matches!(read(&mut &v1[..]).await, Err(ProxyHeaderError::Missing(_))));
        let full = header(ppp::v2::IPv4::new([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), Command::Proxy);
        for cut in 0..full.len() {
            assert!(read(&mut &full[..cut]).await.is_err(), "truncated at {cut}");
        }
        let mut huge = full[..16].to_vec();
        huge[14] = 0xff;
        huge[15] = 0xff;
        assert!(matches!(read(&mut &huge[..]).await, Err(ProxyHeaderError::TooLong(_))));
    }

    /// Property test over random bytes: never panics, never reads past the header.
    #[tokio::test]
    async fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = header(ppp::v2::IPv4::new([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), Command::Proxy);
        for i in 0..20_000 {
            let mut bytes = if i % 2 == 0 { valid.clone() } else { ppp::v2::PROTOCOL_PREFIX.to_vec() };
            let extra = (next() % 64) as usize;
            for _ in 0..extra {
                bytes.push(next() as u8);
            }
            // mutate a few bytes, including the version/family/length fields
            for _ in 0..(next() % 4) {
                let len = bytes.len();
                let at = (next() as usize) % len;
                bytes[at] = next() as u8;
            }
            let _ = read(&mut &bytes[..]).await;
            let _ = parse(&bytes);
        }
    }
}
