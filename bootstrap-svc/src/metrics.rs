//! Prometheus metrics of one bootstrap server (one registry per server, so
//! in-process tests keep servers apart), served by
//! `p2p_proto::metrics_http` on `--metrics-listen`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `outcome` is `ok` or the gRPC code of the refusal in snake case.
pub type Outcome = Vec<(&'static str, String)>;

/// What the group-committing writer observes.
#[derive(Debug, Clone)]
pub struct CommitMetrics {
    /// Writes per committed transaction.
    pub batch_size: Histogram,
    /// Seconds per batch, from its first write to its durable commit.
    pub commit_seconds: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics {
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

/// The server's metrics; cheap to clone (the values are shared).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub registers: Family<Outcome, Counter>,
    pub removes: Family<Outcome, Counter>,
    /// Listed registrations (the store's count), refreshed every purge interval.
    pub registrations: Gauge,
    /// WatchPeers streams open.
    pub watchers: Gauge,
    /// Events WatchPeers streams missed because they fell behind.
    pub lagged_events: Counter,
    pub commits: CommitMetrics,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("p2p_bootstrap");
        r.register(
            "register_requests",
            "Register calls by outcome (ok, or the refusal's gRPC code).",
            self.registers.clone(),
        );
        r.register(
            "remove_requests",
            "Remove calls by outcome (ok, or the refusal's gRPC code).",
            self.removes.clone(),
        );
        r.register(
            "registrations",
            "Listed registrations (refreshed every purge interval).",
            self.registrations.clone(),
        );
        r.register("watchers", "WatchPeers streams open.", self.watchers.clone());
        r.register(
            "watch_lagged_events",
            "Events WatchPeers streams missed because they fell behind.",
            self.lagged_events.clone(),
        );
        r.register("commit_batch_size", "Writes per committed registry transaction.", self.commits.batch_size.clone());
        r.register_with_unit(
            "commit_duration",
            "Time per registry batch, from its first write to its durable commit.",
            prometheus_client::registry::Unit::Seconds,
            self.commits.commit_seconds.clone(),
        );
        r
    }

    /// Counts a call's outcome in `family`.
    pub fn count<T>(family: &Family<Outcome, Counter>, result: &Result<T, tonic::Status>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(s) => code_name(s.code()),
        };
        family.get_or_create(&vec![("outcome", outcome)]).inc();
    }
}

fn code_name(code: tonic::Code) -> String {
    let s = format!("{code:?}");
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_named_in_snake_case_and_counted() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(tonic::Code::Unavailable), "unavailable");
        let m = Metrics::default();
        Metrics::count::<()>(&m.registers, &Ok(()));
        Metrics::count::<()>(&m.registers, &Err(tonic::Status::permission_denied("no")));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).unwrap();
        assert!(text.contains("p2p_bootstrap_register_requests_total{outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("p2p_bootstrap_register_requests_total{outcome=\"permission_denied\"} 1"), "{text}");
        assert!(text.contains("p2p_bootstrap_commit_duration_seconds_count 0"), "{text}");
    }
}
