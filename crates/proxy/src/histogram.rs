//! The per-service latency histogram (fixed buckets, Prometheus-style snapshot).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A fixed-bucket latency histogram (relaxed atomics; statistics, not synchronization).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a [`Histogram`] with cumulative bucket counts, as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, cumulative count)` for every finite bound, in order.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations in seconds.
    pub sum_seconds: f64,
    /// Number of observations (= the `+Inf` bucket).
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = LATENCY_BUCKETS.iter().position(|le| secs <= *le).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(le, n)| {
                running += n.load(Ordering::Relaxed);
                (*le, running)
            })
            .collect();
        let count = running + self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot { buckets, sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(100));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.005, 1));
        assert_eq!(s.buckets[2], (0.025, 1));
        assert_eq!(s.buckets[3], (0.05, 2));
        assert_eq!(s.buckets.last().copied(), Some((60.0, 2)));
        assert!((s.sum_seconds - 100.031).abs() < 1e-6);
    }
}
