//! Per-client connection accounting (`limits.max_connections_per_client`): one tailnet
//! peer cannot take every connection slot. The client is the PROXY v2 source on
//! `proxy_protocol` listeners and the TCP peer elsewhere. A `[listen] trusted_proxies`
//! peer (a tunnel daemon carrying many visitors) is counted but not limited, and shares
//! only the process-wide buffer budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::budget::Level;

/// Open connections per client address, with a ceiling, and each address's share of
/// the memory budget (`limits.buffer_per_client`, see `budget.rs`).
#[derive(Debug)]
pub(crate) struct ClientSlots {
    limit: usize,
    buffer_per_client: usize,
    counts: Mutex<HashMap<IpAddr, (usize, Arc<Level>)>>,
    /// The budget level of trusted proxies: no limit of its own.
    unlimited: Arc<Level>,
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
    budget: Arc<Level>,
}

impl Slot {
    /// The client's budget level, shared by all its connections.
    pub(crate) fn budget(&self) -> &Arc<Level> {
        &self.budget
    }
}

impl ClientSlots {
    /// At most `limit` connections and `buffer_per_client` buffered bytes per address.
    pub(crate) fn new(limit: usize, buffer_per_client: usize) -> ClientSlots {
        ClientSlots {
            limit: limit.max(1),
            buffer_per_client,
            counts: Mutex::new(HashMap::new()),
            unlimited: Arc::new(Level::new(usize::MAX)),
        }
    }

    /// Takes a slot for `ip`, or `None` when it already holds `limit` connections and
    /// is not a `trusted` proxy. The slot owns a reference, so it can outlive the
    /// connection's task (a tunnel).
    pub(crate) fn admit(this: &Arc<ClientSlots>, ip: IpAddr, trusted: bool) -> Option<Slot> {
        let mut counts = this.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (n, budget) = counts.entry(ip).or_insert_with(|| (0, Arc::new(Level::new(this.buffer_per_client))));
        if *n >= this.limit && !trusted {
            return None;
        }
        *n += 1;
        let budget = if trusted { &this.unlimited } else { budget };
        Some(Slot { slots: Arc::clone(this), ip, budget: Arc::clone(budget) })
    }

    /// The limit per address.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(&ip).map_or(0, |c| c.0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, _)) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_address_and_release() {
        let slots = Arc::new(ClientSlots::new(2, 1 << 20));
        let a: IpAddr = "100.64.0.1".parse().expect("ip");
        let b: IpAddr = "100.64.0.2".parse().expect("ip");
        let s1 = ClientSlots::admit(&slots, a, false).expect("first");
        let _s2 = ClientSlots::admit(&slots, a, false).expect("second");
        assert!(ClientSlots::admit(&slots, a, false).is_none(), "third from the same address is refused");
        let _other = ClientSlots::admit(&slots, b, false).expect("another address is unaffected");
        drop(s1);
        assert_eq!(slots.count(a), 1);
        assert!(ClientSlots::admit(&slots, a, false).is_some(), "a freed slot can be reused");
        let tunnel = ClientSlots::admit(&slots, a, true).expect("a trusted proxy is not limited");
        assert_eq!(slots.count(a), 2, "but counted");
        assert_eq!(tunnel.budget().used(), 0);
    }
}
