//! Per-service request counters, read by `snirouter status`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters for one service. Relaxed atomics: these are statistics, not
/// synchronization.
#[derive(Debug, Default)]
pub struct ServiceStats {
    requests: AtomicU64,
    responses_2xx: AtomicU64,
    responses_3xx: AtomicU64,
    responses_4xx: AtomicU64,
    responses_5xx: AtomicU64,
    upstream_errors: AtomicU64,
    tunnels: AtomicU64,
    latency: crate::histogram::Histogram,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests received.
    pub requests: u64,
    /// Answers by status class.
    pub responses_2xx: u64,
    /// 3xx answers.
    pub responses_3xx: u64,
    /// 4xx answers.
    pub responses_4xx: u64,
    /// 5xx answers.
    pub responses_5xx: u64,
    /// Upstream connect failures, timeouts and stalled response bodies.
    pub upstream_errors: u64,
    /// Upgraded connections (WebSockets) open right now.
    pub tunnels: u64,
}

impl ServiceStats {
    /// Counts a request.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer.
    pub fn response(&self, status: u16) {
        let counter = match status {
            200..=299 | 101 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a tunnel that opened.
    pub fn tunnel_opened(&self) {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a tunnel that closed.
    pub fn tunnel_closed(&self) {
        self.tunnels.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records how long a request took to its response head.
    pub fn observe_latency(&self, d: std::time::Duration) {
        self.latency.observe(d);
    }

    /// The latency histogram.
    pub fn latency(&self) -> &crate::histogram::Histogram {
        &self.latency
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            responses_2xx: self.responses_2xx.load(Ordering::Relaxed),
            responses_3xx: self.responses_3xx.load(Ordering::Relaxed),
            responses_4xx: self.responses_4xx.load(Ordering::Relaxed),
            responses_5xx: self.responses_5xx.load(Ordering::Relaxed),
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            tunnels: self.tunnels.load(Ordering::Relaxed),
        }
    }
}
