//! Requests and errors per service over the last minutes, for the status page's charts
//! (`GET /` on the admin listeners): every [`INTERVAL`] the counters of each served
//! service are read (`daemon::record_history`) and the counts since the previous reading
//! kept, [`SAMPLES`] of them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::status::RateHistory;

/// Time between two readings of the counters.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// Readings kept: six minutes.
pub(crate) const SAMPLES: usize = 36;

/// One service's counts per interval, oldest first.
#[derive(Debug, Default)]
struct Series {
    /// The counters at the last reading: requests and 5xx answers.
    last: Option<(u64, u64)>,
    requests: VecDeque<u64>,
    errors: VecDeque<u64>,
}

impl Series {
    fn record(&mut self, requests: u64, errors: u64) {
        // A reload that changes a service starts its counters again from zero.
        let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
        if let Some((r0, e0)) = self.last {
            push(&mut self.requests, delta(requests, r0));
            push(&mut self.errors, delta(errors, e0));
        }
        self.last = Some((requests, errors));
    }
}

fn push(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == SAMPLES {
        q.pop_front();
    }
    q.push_back(v);
}

/// Every service's series, by service name.
#[derive(Debug, Default)]
pub(crate) struct History {
    by_service: Mutex<HashMap<String, Series>>,
}

impl History {
    /// Records one reading of each `(service, requests, 5xx answers)`; services not in
    /// `readings` are forgotten (removed by a reload).
    pub(crate) fn record(&self, readings: &[(String, u64, u64)]) {
        let mut map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        let served: HashSet<&str> = readings.iter().map(|(n, ..)| n.as_str()).collect();
        map.retain(|name, _| served.contains(name.as_str()));
        for (name, requests, errors) in readings {
            map.entry(name.clone()).or_default().record(*requests, *errors);
        }
    }

    /// The counts per interval of `service`, oldest first (empty until two readings).
    pub(crate) fn of(&self, service: &str) -> RateHistory {
        let map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        let series = map.get(service);
        RateHistory {
            interval_seconds: INTERVAL.as_secs(),
            capacity: SAMPLES,
            requests: series.map(|s| s.requests.iter().copied().collect()).unwrap_or_default(),
            errors: series.map(|s| s.errors.iter().copied().collect()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_interval_are_kept_for_the_last_minutes_and_survive_a_counter_reset() {
        let h = History::default();
        h.record(&[("grafana".into(), 10, 0)]);
        assert!(h.of("grafana").requests.is_empty(), "one reading has no interval yet");
        h.record(&[("grafana".into(), 25, 2)]);
        h.record(&[("grafana".into(), 3, 0)]); // a reload reset the counters
        let r = h.of("grafana");
        assert_eq!((r.requests, r.errors), (vec![15, 3], vec![2, 0]));
        for i in 0..100 {
            h.record(&[("grafana".into(), 100 + i, 0)]);
        }
        assert_eq!(h.of("grafana").requests.len(), SAMPLES);
        h.record(&[]);
        assert!(h.of("grafana").requests.is_empty(), "a removed service is forgotten");
    }
}
