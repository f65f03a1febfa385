//! Admission, the first stage of a connection: `limits.max_connections` at accept, then
//! `limits.max_connections_per_client` once the client address is known (after the
//! PROXY header). What is admitted is an [`Admitted`] hold that lives as long as the
//! connection — and as long as any WebSocket tunnel it turns into, so tunnels count
//! in `snirouter_active_connections` and in both limits like any other connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::budget::Level;
use crate::client_limit::{ClientSlots, Slot};

/// The connection limits and the count of open connections.
#[derive(Debug)]
pub(crate) struct Admission {
    active: Arc<AtomicUsize>,
    max_connections: usize,
    per_client: Arc<ClientSlots>,
}

/// A connection counted in `limits.max_connections`; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct Counted(Arc<AtomicUsize>);

/// A connection admitted by both limits; frees both when dropped.
#[derive(Debug)]
pub struct Admitted {
    _counted: Counted,
    _client: Slot,
}

impl Admission {
    /// At most `max_connections` in all and `per_client` from one address.
    pub(crate) fn new(max_connections: usize, per_client: usize, buffer_per_client: usize) -> Admission {
        Admission {
            active: Arc::new(AtomicUsize::new(0)),
            max_connections,
            per_client: Arc::new(ClientSlots::new(per_client, buffer_per_client)),
        }
    }

    /// Counts a newly accepted connection, or `None` when `max_connections` are open.
    pub(crate) fn accept(&self) -> Option<Counted> {
        let active = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        let counted = Counted(Arc::clone(&self.active));
        (active <= self.max_connections).then_some(counted)
    }

    /// Admits a counted connection from `client`, or `None` when that address already
    /// holds `max_connections_per_client` connections and is not a `trusted` proxy.
    pub(crate) fn client(&self, counted: Counted, client: IpAddr, trusted: bool) -> Option<Admitted> {
        let slot = ClientSlots::admit(&self.per_client, client, trusted)?;
        Some(Admitted { _counted: counted, _client: slot })
    }

    /// Connections (tunnels included) open right now.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// `limits.max_connections`.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// `limits.max_connections_per_client`.
    pub(crate) fn max_per_client(&self) -> usize {
        self.per_client.limit()
    }
}

impl Admitted {
    /// The client's share of the memory budget.
    pub(crate) fn client_budget(&self) -> &Arc<Level> {
        self._client.budget()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_limits_hold_until_the_hold_is_dropped() {
        let admission = Admission::new(2, 1, 1 << 20);
        let ip: IpAddr = "100.64.0.1".parse().expect("ip");
        let first = admission.client(admission.accept().expect("first"), ip, false).expect("first client");
        let second = admission.accept().expect("second connection");
        assert!(admission.accept().is_none(), "a third is over max_connections");
        assert_eq!(admission.active(), 2, "the refused one is not counted");
        assert!(
            admission.client(second, ip, false).is_none(),
            "a second from one address is over the per-client limit"
        );
        assert_eq!(admission.active(), 1, "a connection refused per client is uncounted");
        drop(first);
        assert_eq!(admission.active(), 0);
        assert!(admission.client(admission.accept().expect("again"), ip, false).is_some(), "freed by the drop");
    }
}
