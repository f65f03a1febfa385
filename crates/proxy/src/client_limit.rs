//! Per-client connection accounting (`limits.max_connections_per_client`): one tailnet
//! peer cannot take every connection slot. The client is the PROXY v2 source on
//! `proxy_protocol` listeners and the TCP peer elsewhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Open connections per client address, with a ceiling.
#[derive(Debug)]
pub struct ClientSlots {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a ClientSlots,
    ip: IpAddr,
}

impl ClientSlots {
    /// At most `limit` connections per address.
    pub fn new(limit: usize) -> ClientSlots {
        ClientSlots { limit: limit.max(1), counts: Mutex::new(HashMap::new()) }
    }

    /// Takes a slot for `ip`, or `None` when it already holds `limit` connections.
    pub fn admit(&self, ip: IpAddr) -> Option<Slot<'_>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot { slots: self, ip })
    }

    /// Connections open from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot<'_> {
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
        let slots = ClientSlots::new(2);
        let a: IpAddr = "100.64.0.1".parse().expect("ip");
        let b: IpAddr = "100.64.0.2".parse().expect("ip");
        let s1 = slots.admit(a).expect("first");
        let _s2 = slots.admit(a).expect("second");
        assert!(slots.admit(a).is_none(), "third from the same address is refused");
        let _other = slots.admit(b).expect("another address is unaffected");
        drop(s1);
        assert_eq!(slots.count(a), 1);
        assert!(slots.admit(a).is_some(), "a freed slot can be reused");
    }
}
