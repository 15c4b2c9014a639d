//! Caps on concurrent things a remote party can hold (connections, block
//! streams, watch streams): one mechanism, a total and a per-client share,
//! used by both servers.
//!
//! A client is an IPv4 address or an IPv6 prefix (a /64 by default: one
//! host usually owns a whole /64, so counting single IPv6 addresses would
//! give it 2^64 shares). IPv4-mapped IPv6 addresses count as their IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The client an address belongs to: IPv4 as is, IPv6 masked to `v6_prefix` bits.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(v6_prefix.min(128));
                let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Why a slot was refused; the text says which bound and by how much.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{what}: all {max} slots are in use; retry later")]
    Total { what: &'static str, max: usize },
    #[error("{what}: client {client} already holds {max}, the most one client may; close some first")]
    Client { what: &'static str, client: IpAddr, max: usize },
}

/// A bounded pool of slots with a per-client share. The per-client map only
/// holds clients that have a slot, so it never outgrows `total`.
#[derive(Debug)]
pub struct Slots {
    what: &'static str,
    total: usize,
    per_client: usize,
    v6_prefix: u8,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    used: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A held slot; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    client: Option<IpAddr>,
}

impl Slots {
    /// `what` names the resource in refusals ("connections", "GetBlocks streams").
    pub fn new(what: &'static str, total: usize, per_client: usize, v6_prefix: u8) -> Arc<Self> {
        Arc::new(Slots { what, total, per_client, v6_prefix, inner: Mutex::new(Inner::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for the client at `ip` (None: counted in the total only).
    pub fn try_acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let client = ip.map(|ip| client_key(ip, self.v6_prefix));
        let mut inner = self.lock();
        if inner.used >= self.total {
            return Err(Refused::Total { what: self.what, max: self.total });
        }
        if let Some(c) = client {
            let held = inner.by_client.entry(c).or_insert(0);
            if *held >= self.per_client {
                return Err(Refused::Client { what: self.what, client: c, max: self.per_client });
            }
            *held += 1;
        }
        inner.used += 1;
        Ok(Slot { slots: self.clone(), client })
    }

    /// Slots held right now.
    pub fn in_use(&self) -> usize {
        self.lock().used
    }

    /// Clients holding at least one slot.
    pub fn clients(&self) -> usize {
        self.lock().by_client.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        inner.used = inner.used.saturating_sub(1);
        if let Some(c) = self.client
            && let std::collections::hash_map::Entry::Occupied(mut e) = inner.by_client.entry(c)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_client_gets_its_share_and_no_more_and_the_total_holds() {
        let slots = Slots::new("streams", 3, 2, 64);
        let a1 = slots.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = slots.try_acquire(ip("10.0.0.1")).unwrap();
        let err = slots.try_acquire(ip("::ffff:10.0.0.1")).unwrap_err();
        assert!(matches!(err, Refused::Client { max: 2, .. }), "mapped v6 is the same client: {err}");
        let _b = slots.try_acquire(ip("10.0.0.2")).unwrap();
        assert!(matches!(slots.try_acquire(ip("10.0.0.3")), Err(Refused::Total { max: 3, .. })));
        drop(a1);
        let _c = slots.try_acquire(ip("10.0.0.3")).unwrap();
        assert_eq!(slots.in_use(), 3);
        assert_eq!(slots.clients(), 3);
    }

    #[test]
    fn an_ipv6_prefix_is_one_client_and_freed_clients_leave_the_map() {
        let slots = Slots::new("watchers", 100, 1, 64);
        let a = slots.try_acquire(ip("2001:db8::1")).unwrap();
        assert!(slots.try_acquire(ip("2001:db8::ffff:1")).is_err(), "same /64");
        let b = slots.try_acquire(ip("2001:db8:0:1::1")).unwrap();
        drop((a, b));
        assert_eq!(slots.clients(), 0);
        assert_eq!(slots.in_use(), 0);
        let per_address = Slots::new("watchers", 100, 1, 128);
        let _x = per_address.try_acquire(ip("2001:db8::1")).unwrap();
        assert!(per_address.try_acquire(ip("2001:db8::2")).is_ok(), "/128: addresses are clients");
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key("1.2.3.4".parse().unwrap(), 64), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(client_key("2001:db8::9".parse().unwrap(), 48), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(client_key("::1".parse().unwrap(), 0), "::".parse::<IpAddr>().unwrap());
    }
}
