//! Rapid Reset below h2's own limit. h2 sends `GOAWAY ENHANCE_YOUR_CALM` when more than
//! 20 streams are reset before hyper accepted them, but a client that paces itself —
//! a batch of opened-and-cancelled streams, then a PING to wait for the server — never
//! reaches that count, and every stream it opens costs a spawned task, the routing and
//! policy stages and, without care, an upstream request.
//!
//! Each HTTP/2 request holds an [`Answering`] guard. A request dropped before it has an
//! answer (its stream was reset) adds one to the connection's [`ResetDebt`]; each
//! answered request pays one back. A connection whose debt passes [`CALM_AFTER`] is
//! sent `GOAWAY ENHANCE_YOUR_CALM` and closed ([`crate::coalesce`] writes the frame
//! between two of h2's frames). A client that reads what it asks for never builds
//! debt; a browser cancelling a page's images builds a little and pays it back.
//!
//! Work for a stream starts only after one yield to hyper, which checks for a reset
//! while the request waits: a stream cancelled in the same read as it was opened is
//! dropped before routing, policy or any upstream connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};

/// Requests abandoned beyond those answered before the connection is closed.
pub(crate) const CALM_AFTER: usize = 128;

/// One HTTP/2 connection's count of abandoned requests (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ResetDebt {
    debt: AtomicUsize,
    tripped: AtomicBool,
    /// The connection task, woken when the debt trips.
    connection: Mutex<Option<Waker>>,
}

impl ResetDebt {
    pub(crate) fn new() -> Arc<ResetDebt> {
        Arc::new(ResetDebt::default())
    }

    /// The connection must be closed.
    pub(crate) fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// The connection task to wake when the debt trips.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        let mut slot = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }

    fn abandoned(&self) {
        let debt = self.debt.fetch_add(1, Ordering::Relaxed) + 1;
        if debt > CALM_AFTER && !self.tripped.swap(true, Ordering::AcqRel) {
            let waker = self.connection.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn answered(&self) {
        let _ = self.debt.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1));
    }
}

/// A request on its way to an answer; dropped unanswered, it is counted as abandoned.
#[derive(Debug)]
pub(crate) struct Answering {
    debt: Arc<ResetDebt>,
    answered: bool,
}

impl Answering {
    pub(crate) fn new(debt: Arc<ResetDebt>) -> Answering {
        Answering { debt, answered: false }
    }

    /// The request has its answer.
    pub(crate) fn answered(mut self) {
        self.answered = true;
        self.debt.answered();
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.answered {
            self.debt.abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoned_requests_trip_the_connection_unless_answers_pay_them_back() {
        let debt = ResetDebt::new();
        for _ in 0..10 * CALM_AFTER {
            drop(Answering::new(Arc::clone(&debt)));
            Answering::new(Arc::clone(&debt)).answered();
        }
        assert!(!debt.tripped(), "one cancel per answer is a reader, not an attack");
        for _ in 0..CALM_AFTER {
            drop(Answering::new(Arc::clone(&debt)));
        }
        assert!(!debt.tripped(), "at the limit");
        drop(Answering::new(Arc::clone(&debt)));
        assert!(debt.tripped(), "one past it");
    }

    #[test]
    fn answers_given_before_cannot_be_banked() {
        let debt = ResetDebt::new();
        for _ in 0..10_000 {
            Answering::new(Arc::clone(&debt)).answered();
        }
        for _ in 0..=CALM_AFTER {
            drop(Answering::new(Arc::clone(&debt)));
        }
        assert!(debt.tripped());
    }
}
