//! The metric registry of the data path and a small hand-written Prometheus text
//! exposition (format 0.0.4) — no metrics crate.
//!
//! What is counted where:
//!
//! * per service ([`crate::ServiceStats`], carried over by a reload): requests by status
//!   class, upstream errors, and a latency [`Histogram`] (time from the request head to
//!   the upstream's response head, or to the local answer);
//! * per router ([`Metrics`]): TLS handshake failures by [`HandshakeFailure`] reason;
//!   open connections come from [`crate::Server::active_connections`];
//! * per certificate: read from the [`snirouter_certs::CertStore`] snapshot when rendered.
//!
//! Every metric name starts with `snirouter_`; names, label names and label values
//! are part of the interface (the Grafana dashboard in `docs/` uses them) and are
//! documented in `docs/operations.md`.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use snirouter_certs::EntrySnapshot;

use crate::access_log::{AccessLog, AccessLogCounters, Entry, Outcome};
use crate::body::ProxyBody;
pub use crate::histogram::{Histogram, HistogramSnapshot, LATENCY_BUCKETS};
use crate::routes::{RouteTable, ServicePolicy};

/// Why a connection ended before TLS was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No SNI, or a name this router does not serve (`unrecognized_name` sent).
    UnknownSni,
    /// A configured name without a certificate yet (`unrecognized_name` sent).
    NoCertificate,
    /// Not a TLS ClientHello, or rustls refused the handshake.
    Protocol,
    /// The ClientHello + handshake did not finish within `timeouts.tls_handshake`.
    Timeout,
    /// A bad or missing PROXY v2 header on a `proxy_protocol` listener.
    ProxyHeader,
    /// A `proxy_protocol` listener's peer outside `listen.proxy_protocol_from`.
    UntrustedProxy,
}

impl HandshakeFailure {
    /// Every reason, in exposition order.
    pub const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::UnknownSni,
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Protocol,
        HandshakeFailure::Timeout,
        HandshakeFailure::ProxyHeader,
        HandshakeFailure::UntrustedProxy,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::UnknownSni => "unknown_sni",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ProxyHeader => "proxy_header",
            HandshakeFailure::UntrustedProxy => "untrusted_proxy",
        }
    }
}

/// A connection limit that closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// `limits.max_connections`.
    MaxConnections,
    /// `limits.max_connections_per_client`.
    MaxConnectionsPerClient,
}

impl ConnectionLimit {
    /// Every limit, in exposition order.
    pub const ALL: [ConnectionLimit; 2] = [ConnectionLimit::MaxConnections, ConnectionLimit::MaxConnectionsPerClient];

    /// The `limit` label value (the config key).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionLimit::MaxConnections => "max_connections",
            ConnectionLimit::MaxConnectionsPerClient => "max_connections_per_client",
        }
    }
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    connections_refused: [AtomicU64; ConnectionLimit::ALL.len()],
}

impl Metrics {
    /// Counts a failed handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed handshakes so far for `reason`.
    pub fn handshake_failures(&self, reason: HandshakeFailure) -> u64 {
        self.handshake_failures[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a connection closed by `limit`.
    pub fn connection_refused(&self, limit: ConnectionLimit) {
        self.connections_refused[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed so far by `limit`.
    pub fn connections_refused(&self, limit: ConnectionLimit) -> u64 {
        self.connections_refused[limit as usize].load(Ordering::Relaxed)
    }
}

/// Builds Prometheus text exposition: `# HELP` / `# TYPE` once per family, then samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Integers without a decimal point, others in Rust's shortest round-trip form.
fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// Appends the data-path metrics: `active` open connections, the router-wide counters
/// in `metrics` and, per service of `table`, requests by status class, upstream errors
/// and latency.
pub fn render_router(metrics: &Metrics, active: usize, table: &RouteTable, out: &mut Exposition) {
    out.family(
        "snirouter_active_connections",
        "gauge",
        "Client connections open right now, WebSocket tunnels included.",
    );
    out.sample("snirouter_active_connections", &[], active as f64);

    out.family(
        "snirouter_tls_handshake_failures_total",
        "counter",
        "Connections that ended before TLS was established, by reason.",
    );
    for reason in HandshakeFailure::ALL {
        out.sample(
            "snirouter_tls_handshake_failures_total",
            &[("reason", reason.as_str())],
            metrics.handshake_failures(reason) as f64,
        );
    }

    out.family(
        "snirouter_connections_refused_total",
        "counter",
        "Connections closed at once because a connection limit was reached, by limit (config key).",
    );
    for limit in ConnectionLimit::ALL {
        out.sample(
            "snirouter_connections_refused_total",
            &[("limit", limit.as_str())],
            metrics.connections_refused(limit) as f64,
        );
    }

    let mut services: Vec<_> = table.services().cloned().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    render_services(&services, out);
}

/// The access log's lines: written, dropped (the writer was behind: a slow or full
/// disk), failed (the file refused them).
pub(crate) fn render_access_log(c: &AccessLogCounters, out: &mut Exposition) {
    let name = "snirouter_access_log_lines_total";
    out.family(
        name,
        "counter",
        "Access log lines, by result: written, dropped (the disk was too slow), failed (write errors).",
    );
    for (result, n) in [("written", &c.written), ("dropped", &c.dropped), ("failed", &c.failed)] {
        out.sample(name, &[("result", result)], n.load(Ordering::Relaxed) as f64);
    }
}

/// The per-service families: requests by class, upstream errors, tunnels, latency.
fn render_services(services: &[Arc<ServicePolicy>], out: &mut Exposition) {
    out.family("snirouter_requests_total", "counter", "HTTP requests answered, by service and status class.");
    for svc in services {
        let s = svc.stats.snapshot();
        for (class, n) in
            [("2xx", s.responses_2xx), ("3xx", s.responses_3xx), ("4xx", s.responses_4xx), ("5xx", s.responses_5xx)]
        {
            out.sample("snirouter_requests_total", &[("service", &svc.name), ("class", class)], n as f64);
        }
    }

    out.family(
        "snirouter_upstream_errors_total",
        "counter",
        "Upstream connect failures, resets and timeouts (answered 502/504), and response bodies cut because the upstream stalled, by service.",
    );
    for svc in services {
        let errors = svc.stats.snapshot().upstream_errors as f64;
        out.sample("snirouter_upstream_errors_total", &[("service", &svc.name)], errors);
    }

    out.family("snirouter_tunnels", "gauge", "WebSocket (upgraded) tunnels open right now, by service.");
    for svc in services {
        out.sample("snirouter_tunnels", &[("service", &svc.name)], svc.stats.snapshot().tunnels as f64);
    }

    out.family(
        "snirouter_request_duration_seconds",
        "histogram",
        "Time from a request's head to the response head (upstream or local answer), by service.",
    );
    for svc in services {
        let h = svc.stats.latency().snapshot();
        let name = svc.name.as_str();
        for (le, n) in &h.buckets {
            let le = format_value(*le);
            out.sample("snirouter_request_duration_seconds_bucket", &[("service", name), ("le", &le)], *n as f64);
        }
        out.sample("snirouter_request_duration_seconds_bucket", &[("service", name), ("le", "+Inf")], h.count as f64);
        out.sample("snirouter_request_duration_seconds_sum", &[("service", name)], h.sum_seconds);
        out.sample("snirouter_request_duration_seconds_count", &[("service", name)], h.count as f64);
    }
}

/// Appends the certificate metrics for `entries` (from [`snirouter_certs::CertStore::snapshot`]).
pub fn render_certs(entries: &[EntrySnapshot], now: SystemTime, out: &mut Exposition) {
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    out.family(
        "snirouter_certificate_present",
        "gauge",
        "1 when a certificate is being served for the name, 0 while it has none.",
    );
    for e in entries {
        out.sample(
            "snirouter_certificate_present",
            &[("name", &e.fqdn), ("service", &e.service)],
            if e.cert.is_some() { 1.0 } else { 0.0 },
        );
    }
    out.family(
        "snirouter_certificate_expiry_seconds",
        "gauge",
        "Seconds until the served certificate's notAfter (negative once expired); absent without a certificate.",
    );
    for e in entries {
        if let Some(c) = &e.cert {
            out.sample(
                "snirouter_certificate_expiry_seconds",
                &[("name", &e.fqdn), ("service", &e.service)],
                (c.not_after as f64 - now).round(),
            );
        }
    }
    out.family(
        "snirouter_certificate_renewal_failures_total",
        "counter",
        "Failed certificate requests to tailscaled, and unusable certificate files, since start, by name.",
    );
    for e in entries {
        out.sample(
            "snirouter_certificate_renewal_failures_total",
            &[("name", &e.fqdn), ("service", &e.service)],
            e.state.total_failures as f64,
        );
    }
}

/// What an access line needs that is known when the request arrives; the rest comes
/// with the answer ([`crate::access_log::Outcome`]) and when its body ends.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    /// Where the line goes.
    pub log: Arc<AccessLog>,
    /// Service name.
    pub service: String,
    /// The connection's peer (PROXY header source or TCP peer).
    pub peer: std::net::SocketAddr,
    /// The request's host.
    pub host: String,
    /// Request method.
    pub method: http::Method,
    /// Request path and query.
    pub uri: String,
    /// HTTP version.
    pub version: http::Version,
    /// When the request head arrived.
    pub started: Instant,
    /// The same moment on the wall clock.
    pub at: SystemTime,
    /// `User-Agent` and `Referer` as sent.
    pub user_agent: Option<http::HeaderValue>,
    pub referer: Option<http::HeaderValue>,
    /// What the HTTP stage learnt (real client, user, upstream).
    pub outcome: Option<Outcome>,
}

impl AccessRecord {
    /// Writes the line for an answer with `status` whose body sent `bytes`.
    fn write(&self, status: u16, bytes: u64, complete: bool) {
        let text = |v: &Option<http::HeaderValue>| v.as_ref().and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (ua, referer) = (text(&self.user_agent), text(&self.referer));
        let outcome = self.outcome.as_ref();
        self.log.record(&Entry {
            at: self.at,
            service: &self.service,
            client: outcome.map_or(self.peer.ip(), |o| o.client),
            peer: self.peer,
            user: outcome.and_then(|o| o.user.as_deref()),
            host: &self.host,
            method: self.method.as_str(),
            uri: &self.uri,
            proto: version_name(self.version),
            status,
            bytes,
            duration: self.started.elapsed(),
            upstream: outcome.and_then(|o| o.upstream.as_deref()),
            user_agent: ua.as_deref(),
            referer: referer.as_deref(),
            complete,
        });
    }
}

/// `HTTP/1.1`, as Caddy's `proto` field and the combined format's request line say it.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A response body that counts the bytes sent and, when the body is done (or the
/// client went away), writes one access-log line.
#[derive(Debug)]
pub(crate) struct MeteredBody {
    inner: ProxyBody,
    access: Option<(AccessRecord, u16)>,
    bytes: u64,
    /// The body reached its end (a chunked upstream body never reports
    /// `is_end_stream`, so the end is seen here).
    ended: bool,
}

impl MeteredBody {
    /// Wraps `inner`; `access` is `None` when the service's access log is off.
    pub(crate) fn new(inner: ProxyBody, access: Option<(AccessRecord, u16)>) -> MeteredBody {
        MeteredBody { inner, access, bytes: 0, ended: false }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        let Some((rec, status)) = self.access.take() else { return };
        let complete = self.ended || self.inner.is_end_stream();
        rec.write(status, self.bytes, complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut e = Exposition::new();
        e.family("snirouter_x_total", "counter", "Things.");
        e.sample("snirouter_x_total", &[("service", "a\"b"), ("class", "2xx")], 3.0);
        e.sample("snirouter_x_total", &[], 0.25);
        assert_eq!(
            e.finish(),
            "# HELP snirouter_x_total Things.\n# TYPE snirouter_x_total counter\nsnirouter_x_total{service=\"a\\\"b\",class=\"2xx\"} 3\nsnirouter_x_total 0.25\n"
        );
    }
}
