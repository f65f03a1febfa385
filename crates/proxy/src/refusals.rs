//! Quiet logs under attack: connections the router refuses or closes — handshakes that
//! time out or fail, clients over a connection limit, bad PROXY headers, hostile
//! HTTP/2 — are logged once per kind and [`WINDOW`] in full, and the rest of that
//! window is summed up in one line per kind: how many more, from how many client
//! addresses, the busiest of them, and the action taken. A flood of 100,000 refused
//! connections writes two lines per window, not 100,000; a single failure is still
//! logged at once with its cause. Every event is also counted in the metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::metrics::Exposition;

/// How often the summaries are written.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Client addresses remembered per kind and window (beyond: counted, not named).
const MAX_CLIENTS: usize = 1024;

/// What was refused or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The TLS handshake was refused (unknown name, no certificate, bad ClientHello).
    HandshakeRefused,
    /// The TLS handshake did not complete within `timeouts.tls_handshake`.
    HandshakeTimeout,
    /// A `proxy_protocol` listener's peer is outside `listen.proxy_protocol_from`.
    UntrustedProxy,
    /// A PROXY header could not be read.
    BadProxyHeader,
    /// No PROXY header within `timeouts.proxy_header`.
    ProxyHeaderTimeout,
    /// `limits.max_connections` was reached.
    MaxConnections,
    /// `limits.max_connections_per_client` was reached.
    MaxConnectionsPerClient,
    /// `accept()` failed (out of file descriptors, most often).
    AcceptFailed,
    /// HTTP/2 streams reset faster than answered (Rapid Reset; MadeYouReset: streams
    /// the router had to reset): `GOAWAY ENHANCE_YOUR_CALM`.
    ResetFlood,
    /// Other HTTP/2 protocol abuse (oversized or endless header blocks, bad frames):
    /// h2 sent `GOAWAY` with the error.
    Protocol,
}

impl Kind {
    /// Every kind, in declaration order (the index of each tally).
    pub(crate) const ALL: [Kind; 10] = [
        Kind::HandshakeRefused,
        Kind::HandshakeTimeout,
        Kind::UntrustedProxy,
        Kind::BadProxyHeader,
        Kind::ProxyHeaderTimeout,
        Kind::MaxConnections,
        Kind::MaxConnectionsPerClient,
        Kind::AcceptFailed,
        Kind::ResetFlood,
        Kind::Protocol,
    ];

    /// The `kind` field of the log lines.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::HandshakeRefused => "tls_handshake_refused",
            Kind::HandshakeTimeout => "tls_handshake_timeout",
            Kind::UntrustedProxy => "untrusted_proxy",
            Kind::BadProxyHeader => "bad_proxy_header",
            Kind::ProxyHeaderTimeout => "proxy_header_timeout",
            Kind::MaxConnections => "max_connections",
            Kind::MaxConnectionsPerClient => "max_connections_per_client",
            Kind::AcceptFailed => "accept_failed",
            Kind::ResetFlood => "h2_reset_flood",
            Kind::Protocol => "h2_protocol_error",
        }
    }

    /// The summary line's words.
    fn summary(self) -> &'static str {
        match self {
            Kind::HandshakeRefused => "TLS handshakes refused; connections closed",
            Kind::HandshakeTimeout => "TLS handshakes not completed within timeouts.tls_handshake; connections closed",
            Kind::UntrustedProxy => "PROXY listener peers outside listen.proxy_protocol_from; connections closed",
            Kind::BadProxyHeader => "unreadable PROXY headers; connections closed",
            Kind::ProxyHeaderTimeout => "no PROXY header within timeouts.proxy_header; connections closed",
            Kind::MaxConnections => "connections refused: limits.max_connections reached",
            Kind::MaxConnectionsPerClient => "connections refused: limits.max_connections_per_client reached",
            Kind::AcceptFailed => "accept failed (see the first line of the window for the cause); retrying",
            Kind::ResetFlood => {
                "hostile HTTP/2 clients: streams reset faster than answered (Rapid Reset); sent GOAWAY ENHANCE_YOUR_CALM and closed"
            }
            Kind::Protocol => "hostile HTTP/2 clients: protocol errors; sent GOAWAY and closed",
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// The first of the window was logged in full.
    logged: bool,
    /// Events after the first.
    more: u64,
    by_client: HashMap<IpAddr, u64>,
}

/// The per-window tallies and the all-time counters.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    tallies: Mutex<[Tally; Kind::ALL.len()]>,
    totals: [AtomicU64; Kind::ALL.len()],
}

impl Refusals {
    /// Empty tallies, summed up every [`WINDOW`] by a task on the current runtime (if
    /// there is one) that ends when the returned value is dropped.
    pub(crate) fn new() -> Arc<Refusals> {
        let refusals = Arc::new(Refusals::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(summarize_every_window(Arc::downgrade(&refusals)));
        }
        refusals
    }

    /// Counts one event of `kind` from `client`; `true` when the caller should log it
    /// in full (the first of its kind in this window).
    pub(crate) fn note(&self, kind: Kind, client: IpAddr) -> bool {
        self.totals[kind as usize].fetch_add(1, Ordering::Relaxed);
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = &mut tallies[kind as usize];
        if !tally.logged {
            tally.logged = true;
            return true;
        }
        tally.more += 1;
        if tally.by_client.len() < MAX_CLIENTS || tally.by_client.contains_key(&client) {
            *tally.by_client.entry(client).or_insert(0) += 1;
        }
        false
    }

    /// Events of `kind` since start.
    pub(crate) fn total(&self, kind: Kind) -> u64 {
        self.totals[kind as usize].load(Ordering::Relaxed)
    }

    /// Appends the HTTP/2 refusals to `out` (the others have their own families:
    /// `snirouter_tls_handshake_failures_total`, `snirouter_connections_refused_total`).
    pub(crate) fn render(&self, out: &mut Exposition) {
        let name = "snirouter_h2_refusals_total";
        out.family(name, "counter", "HTTP/2 connections closed with GOAWAY for the client's abuse, by kind.");
        for (kind, label) in [(Kind::ResetFlood, "reset_flood"), (Kind::Protocol, "protocol_error")] {
            out.sample(name, &[("kind", label)], self.total(kind) as f64);
        }
    }

    /// Writes one line per kind with events after its first in this window, and starts
    /// a new window.
    pub(crate) fn summarize(&self) {
        let tallies = std::mem::take(&mut *self.tallies.lock().unwrap_or_else(PoisonError::into_inner));
        for (kind, tally) in Kind::ALL.into_iter().zip(tallies) {
            if tally.more == 0 {
                continue;
            }
            let mut busiest: Vec<_> = tally.by_client.into_iter().collect();
            let clients = busiest.len();
            busiest.sort_unstable_by_key(|(_, n)| std::cmp::Reverse(*n));
            let mut top = String::new();
            for (ip, n) in busiest.iter().take(3) {
                let _ = write!(top, "{}{ip} ×{n}", if top.is_empty() { "" } else { ", " });
            }
            let window_secs = WINDOW.as_secs();
            tracing::warn!(kind = kind.label(), more = tally.more, clients, top = %top, window_secs, "{}", kind.summary());
        }
    }
}

async fn summarize_every_window(refusals: Weak<Refusals>) {
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match refusals.upgrade() {
            Some(r) => r.summarize(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_in_declaration_order() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn the_first_of_a_window_is_logged_and_the_rest_counted() {
        let refusals = Refusals::default();
        let a: IpAddr = "100.64.0.1".parse().expect("ip");
        let b: IpAddr = "100.64.0.2".parse().expect("ip");
        assert!(refusals.note(Kind::HandshakeTimeout, a), "the first is logged");
        assert!(!refusals.note(Kind::HandshakeTimeout, a));
        assert!(!refusals.note(Kind::HandshakeTimeout, b));
        assert!(refusals.note(Kind::ResetFlood, a), "per kind");
        assert_eq!(refusals.total(Kind::HandshakeTimeout), 3);
        {
            let tallies = refusals.tallies.lock().expect("lock");
            let t = &tallies[Kind::HandshakeTimeout as usize];
            assert_eq!((t.more, t.by_client.len()), (2, 2));
        }
        refusals.summarize();
        assert!(refusals.note(Kind::HandshakeTimeout, a), "a new window logs its first again");
        assert_eq!(refusals.total(Kind::HandshakeTimeout), 4, "totals are kept");
    }
}
