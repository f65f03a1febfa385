//! The per-read bound on bodies (`timeouts.idle`): a request or response body may take
//! as long as it keeps moving, but one that delivers nothing for the whole bound is
//! ended with [`Stalled`]. Like nginx's `proxy_read_timeout`/`client_body_timeout`,
//! the bound is between two reads, never on the total.
//!
//! The timer is lazy: a body that is never waited on allocates none, and while data
//! flows only an [`Instant`] is stored per frame; the timer is re-armed only when it
//! fires and data has moved since.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When a body last moved, and the timer that notices it stopped.
#[derive(Debug)]
pub(crate) struct Stall {
    limit: Duration,
    last: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

/// A body delivered nothing for `timeouts.idle`.
#[derive(Debug, thiserror::Error)]
#[error("no data for {}s (timeouts.idle)", .0.as_secs())]
pub(crate) struct Stalled(pub Duration);

impl Stall {
    /// A bound of `limit` between two reads, starting now.
    pub(crate) fn new(limit: Duration) -> Stall {
        Stall { limit, last: Instant::now(), timer: None }
    }

    /// Data moved.
    pub(crate) fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// Called when the body is pending: `Err` once nothing moved for the bound,
    /// otherwise the task is woken when it may have passed.
    pub(crate) fn poll_check(&mut self, cx: &mut Context<'_>) -> Result<(), Stalled> {
        loop {
            let deadline = self.last + self.limit;
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) if Instant::now() >= deadline => return Err(Stalled(self.limit)),
                Poll::Ready(()) => timer.as_mut().reset(deadline),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stall: &mut Stall) -> Result<(), Stalled> {
        stall.poll_check(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_moving_never_stalls() {
        let mut stall = Stall::new(Duration::from_secs(10));
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(6)).await;
            stall.moved();
            assert!(check(&mut stall).is_ok(), "moving every 6 s under a 10 s bound");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_body_stalls_after_the_bound_and_not_before() {
        let mut stall = Stall::new(Duration::from_secs(10));
        assert!(check(&mut stall).is_ok());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(check(&mut stall).is_ok(), "9 s of a 10 s bound");
        stall.moved();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(check(&mut stall).is_ok(), "the bound restarts when data moves");
        tokio::time::advance(Duration::from_secs(2)).await;
        let err = check(&mut stall).expect_err("11 s without data");
        assert_eq!(err.to_string(), "no data for 10s (timeouts.idle)");
    }
}
