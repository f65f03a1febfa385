//! When to ask tailscaled for a name again — pure functions, no I/O.
//!
//! tailscaled renews certificates only for names in its own Serve config, so for
//! snirouter's names nobody renews unless snirouter asks. The policy:
//!
//! * with no certificate: ask now;
//! * otherwise ask again every [`Policy::refresh_every`] (daily by default; tailscaled
//!   answers from its cache and may renew in the background), and
//! * once less than a third of the leaf's lifetime remains, ask with
//!   `min_validity = lifetime / 3`, which makes tailscaled renew synchronously;
//! * after a failure, back off exponentially up to a ceiling, or wait exactly as long
//!   as a 429's `Retry-After` says.
//!
//! Every wait gets up to 10 % random jitter so 14 names do not fire together.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};

use crate::ServedCert;

/// Timing knobs. [`Policy::default`] is what production uses.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Re-ask tailscaled this often even when the certificate is far from expiry.
    pub refresh_every: Duration,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Ceiling of the exponential backoff.
    pub backoff_max: Duration,
    /// Wait after a rate-limit answer that named no `Retry-After`.
    pub rate_limit_default: Duration,
    /// Warn when a certificate has less than this left and renewal keeps failing.
    pub warn_before: Duration,
    /// Log at error level below this.
    pub error_before: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            refresh_every: Duration::from_secs(24 * 3600),
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30 * 60),
            rate_limit_default: Duration::from_secs(3600),
            warn_before: Duration::from_secs(14 * 24 * 3600),
            error_before: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

/// The next request for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextRequest {
    /// How long to wait before asking.
    pub wait: Duration,
    /// The `min_validity` to send (forces a synchronous renewal in tailscaled).
    pub min_validity: Option<Duration>,
}

/// Plans the next request for a name after a success (or at start).
pub(crate) fn after_success(policy: &Policy, cert: Option<&ServedCert>, now: SystemTime) -> NextRequest {
    let Some(cert) = cert else {
        return NextRequest { wait: Duration::ZERO, min_validity: None };
    };
    plan(policy, cert.lifetime(), cert.remaining(now))
}

/// The arithmetic behind [`after_success`], on plain durations.
pub(crate) fn plan(policy: &Policy, lifetime: Duration, remaining: Duration) -> NextRequest {
    let third = lifetime / 3;
    if remaining <= third {
        return NextRequest { wait: Duration::ZERO, min_validity: Some(third) };
    }
    // Wake up at the start of the renewal window, or for the daily refresh,
    // whichever comes first; the jitter only ever makes the wait shorter so the
    // renewal window is never missed.
    let until_window = remaining - third;
    let wait = until_window.min(policy.refresh_every);
    NextRequest { wait: jitter_down(wait), min_validity: None }
}

/// The delay before retry number `failures` (1 = first retry).
pub(crate) fn backoff(policy: &Policy, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = policy.backoff_min.saturating_mul(1u32 << exp);
    jitter_up(raw.min(policy.backoff_max))
}

/// Severity of "renewal keeps failing" for the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// Plenty of time.
    Calm,
    /// Less than [`Policy::warn_before`] left.
    Warn,
    /// Less than [`Policy::error_before`] left (or expired).
    Critical,
}

/// How loudly to log a failed renewal with `remaining` left.
pub(crate) fn urgency(policy: &Policy, remaining: Duration) -> Urgency {
    if remaining <= policy.error_before {
        Urgency::Critical
    } else if remaining <= policy.warn_before {
        Urgency::Warn
    } else {
        Urgency::Calm
    }
}

fn random_fraction() -> f64 {
    // RandomState is seeded from the OS per instance: good enough for jitter,
    // and it needs no extra dependency.
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Shortens `d` by up to 10 %.
fn jitter_down(d: Duration) -> Duration {
    d.mul_f64(1.0 - 0.1 * random_fraction())
}

/// Lengthens `d` by up to 10 %.
fn jitter_up(d: Duration) -> Duration {
    d.mul_f64(1.0 + 0.1 * random_fraction())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn fresh_certificate_is_refreshed_daily() {
        let next = plan(&Policy::default(), 90 * DAY, 89 * DAY);
        assert_eq!(next.min_validity, None);
        assert!(next.wait <= DAY && next.wait >= DAY.mul_f64(0.9), "{next:?}");
    }

    #[test]
    fn wakes_at_renewal_window_when_sooner_than_a_day() {
        // 90-day cert with 30.5 days left: the window (30 days left) opens in 12 h.
        let next = plan(&Policy::default(), 90 * DAY, 30 * DAY + DAY / 2);
        assert!(next.wait <= DAY / 2 && next.wait >= (DAY / 2).mul_f64(0.9));
        assert_eq!(next.min_validity, None);
    }

    #[test]
    fn inside_renewal_window_asks_now_with_min_validity() {
        let next = plan(&Policy::default(), 90 * DAY, 29 * DAY);
        assert_eq!(next, NextRequest { wait: Duration::ZERO, min_validity: Some(30 * DAY) });
        // short-lived test certificates follow the same rule
        let next = plan(&Policy::default(), Duration::from_secs(120), Duration::from_secs(39));
        assert_eq!(next.min_validity, Some(Duration::from_secs(40)));
    }

    #[test]
    fn short_lifetime_waits_for_two_thirds() {
        let next = plan(&Policy::default(), Duration::from_secs(120), Duration::from_secs(120));
        assert!(next.wait <= Duration::from_secs(80) && next.wait >= Duration::from_secs(72));
    }

    #[test]
    fn backoff_grows_and_has_a_ceiling() {
        let p = Policy::default();
        let b1 = backoff(&p, 1);
        let b3 = backoff(&p, 3);
        assert!(b1 >= p.backoff_min && b1 <= p.backoff_min.mul_f64(1.1));
        assert!(b3 >= p.backoff_min * 4);
        let b_many = backoff(&p, 50);
        assert!(b_many >= p.backoff_max && b_many <= p.backoff_max.mul_f64(1.1));
    }

    #[test]
    fn urgency_thresholds() {
        let p = Policy::default();
        assert_eq!(urgency(&p, 20 * DAY), Urgency::Calm);
        assert_eq!(urgency(&p, 10 * DAY), Urgency::Warn);
        assert_eq!(urgency(&p, 2 * DAY), Urgency::Critical);
        assert_eq!(urgency(&p, Duration::ZERO), Urgency::Critical);
    }
}
