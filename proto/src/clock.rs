//! Wall-clock time as a dependency, so expiry, backoff and timestamp rules
//! can be tested (and simulated) without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of Unix time in milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now_unix_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        crate::unix_ms_now()
    }
}

/// A clock that only moves when told to: for tests of expiry and freshness.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start_unix_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start_unix_ms)))
    }
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn set_ms(&self, unix_ms: u64) {
        self.0.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock a server uses unless told otherwise.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
