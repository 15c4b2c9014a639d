//! Lease arithmetic: pure functions, no I/O.

/// The server's lease bounds, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    pub default_ttl_secs: u32,
    pub min_ttl_secs: u32,
    pub max_ttl_secs: u32,
}

impl LeasePolicy {
    /// The TTL granted for a request: 0 means the default; anything else is
    /// clamped into `[min, max]` (a lease is a server's promise, so it decides).
    pub fn grant(&self, requested_secs: u32) -> u32 {
        let wanted = if requested_secs == 0 { self.default_ttl_secs } else { requested_secs };
        wanted.clamp(self.min_ttl_secs, self.max_ttl_secs)
    }
}

/// When a lease granted at `now_ms` for `ttl_secs` ends. Saturates instead of
/// wrapping, so a clock near the end of time cannot produce a lease in the past.
pub fn expires_at(now_ms: u64, ttl_secs: u32) -> u64 {
    now_ms.saturating_add(u64::from(ttl_secs) * 1000)
}

/// A lease is live strictly before its expiry instant.
pub fn is_live(expires_at_ms: u64, now_ms: u64) -> bool {
    now_ms < expires_at_ms
}

/// Whether a signed timestamp is inside the freshness window around `now_ms`.
pub fn is_fresh(timestamp_ms: u64, now_ms: u64, window_ms: u64) -> bool {
    timestamp_ms.abs_diff(now_ms) <= window_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: LeasePolicy = LeasePolicy { default_ttl_secs: 120, min_ttl_secs: 10, max_ttl_secs: 3600 };

    #[test]
    fn zero_means_default_and_out_of_bounds_is_clamped() {
        assert_eq!(POLICY.grant(0), 120);
        assert_eq!(POLICY.grant(1), 10);
        assert_eq!(POLICY.grant(30), 30);
        assert_eq!(POLICY.grant(u32::MAX), 3600);
    }

    #[test]
    fn a_lease_ends_exactly_at_its_expiry() {
        let exp = expires_at(1_000, 10);
        assert_eq!(exp, 11_000);
        assert!(is_live(exp, 10_999));
        assert!(!is_live(exp, 11_000));
    }

    proptest! {
        #[test]
        fn granted_ttl_is_always_within_bounds(req in any::<u32>()) {
            let g = POLICY.grant(req);
            prop_assert!((POLICY.min_ttl_secs..=POLICY.max_ttl_secs).contains(&g));
        }

        #[test]
        fn expiry_never_precedes_grant(now in any::<u64>(), ttl in any::<u32>()) {
            prop_assert!(expires_at(now, ttl) >= now);
            if ttl > 0 {
                prop_assert!(!is_live(expires_at(now, ttl), expires_at(now, ttl)));
            }
        }

        #[test]
        fn freshness_is_symmetric(ts in any::<u64>(), now in any::<u64>(), window in 0u64..1_000_000) {
            prop_assert_eq!(is_fresh(ts, now, window), is_fresh(now, ts, window));
        }
    }
}
