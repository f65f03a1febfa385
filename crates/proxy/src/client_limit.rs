//! Per-client connection accounting (`limits.max_connections_per_client`): one tailnet
//! peer cannot take every connection slot. The client is the PROXY v2 source on
//! `proxy_protocol` listeners and the TCP peer elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address, with a ceiling.
#[derive(Debug)]
pub(crate) struct ClientSlots {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    /// At most `limit` connections per address.
    pub(crate) fn new(limit: usize) -> ClientSlots {
        ClientSlots { limit: limit.max(1), counts: Mutex::new(HashMap::new()) }
    }

    /// Takes a slot for `ip`, or `None` when it already holds `limit` connections.
    /// The slot owns a reference, so it can outlive the connection's task (a tunnel).
    pub(crate) fn admit(this: &Arc<ClientSlots>, ip: IpAddr) -> Option<Slot> {
        let mut counts = this.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= this.limit {
            return None;
        }
        *n += 1;
        Some(Slot { slots: Arc::clone(this), ip })
    }

    /// The limit per address.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
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
        let slots = Arc::new(ClientSlots::new(2));
        let a: IpAddr = "100.64.0.1".parse().expect("ip");
        let b: IpAddr = "100.64.0.2".parse().expect("ip");
        let s1 = ClientSlots::admit(&slots, a).expect("first");
        let _s2 = ClientSlots::admit(&slots, a).expect("second");
        assert!(ClientSlots::admit(&slots, a).is_none(), "third from the same address is refused");
        let _other = ClientSlots::admit(&slots, b).expect("another address is unaffected");
        drop(s1);
        assert_eq!(slots.count(a), 1);
        assert!(ClientSlots::admit(&slots, a).is_some(), "a freed slot can be reused");
    }
}
