//! The node's Prometheus metrics.
//!
//! Everything lives in one [`Metrics`] value with its own [`Registry`] (never the process-wide
//! default), so tests and `flotilla dev`'s in-process members cannot see each other's numbers.
//! Names follow etcd's where etcd has one (`*_has_leader`, `*_leader_changes_seen_total`, …)
//! with the `flotilla_` prefix, so etcd dashboards translate by search-and-replace.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the node exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// 1 when a leader is known.
    pub has_leader: IntGauge,
    /// 1 on the leader.
    pub is_leader: IntGauge,
    /// Leader changes seen by this member.
    pub leader_changes_seen: IntCounter,
    /// Current term.
    pub term: IntGauge,
    /// Commit index.
    pub commit_index: IntGauge,
    /// Applied index.
    pub applied_index: IntGauge,
    /// Proposals committed (seen in committed entries on this member).
    pub proposals_committed: IntCounter,
    /// Proposals applied to the state machine.
    pub proposals_applied: IntCounter,
    /// Proposals waiting for their commit on this member.
    pub proposals_pending: IntGauge,
    /// Proposals that failed (dropped, leader changed, timed out).
    pub proposals_failed: IntCounter,
    /// Duration of each durable sync of a Ready.
    pub fsync_duration: Histogram,
    /// Round trip of peer messages (append → response), by peer.
    pub peer_round_trip: HistogramVec,
    /// Snapshots taken or installed.
    pub snapshots: IntCounter,
    /// Time to take or install a snapshot.
    pub snapshot_duration: Histogram,
    /// gRPC requests served, by method and status code.
    pub grpc_requests: IntCounterVec,
    /// Size of the key-value store's database on disk (etcd's backend size).
    pub db_size_bytes: IntGauge,
    /// Bytes of its live keys and values (etcd's size in use).
    pub db_size_in_use_bytes: IntGauge,
    /// Per-follower lag in entries (leader only).
    pub follower_lag: prometheus::IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric construction only fails on invalid names or duplicate registration, both fixed
    // at compile time here; a failure is a programming error caught by the unit test below.
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition is invalid: {e}"),
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let g = |name: &str, help: &str| {
            let m = must(IntGauge::new(name, help));
            must(registry.register(Box::new(m.clone())));
            m
        };
        let c = |name: &str, help: &str| {
            let m = must(IntCounter::new(name, help));
            must(registry.register(Box::new(m.clone())));
            m
        };
        let h = |name: &str, help: &str, buckets: Vec<f64>| {
            let m = must(Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets),
            ));
            must(registry.register(Box::new(m.clone())));
            m
        };
        let sync_buckets = must(prometheus::exponential_buckets(0.0001, 2.0, 16));
        let has_leader = g("flotilla_server_has_leader", "1 if a leader is known");
        let is_leader = g(
            "flotilla_server_is_leader",
            "1 if this member is the leader",
        );
        let leader_changes_seen = c(
            "flotilla_server_leader_changes_seen_total",
            "Leader changes seen",
        );
        let term = g("flotilla_server_term", "Current Raft term");
        let commit_index = g("flotilla_server_commit_index", "Raft commit index");
        let applied_index = g("flotilla_server_applied_index", "Applied index");
        let proposals_committed = c(
            "flotilla_server_proposals_committed_total",
            "Entries committed",
        );
        let proposals_applied = c("flotilla_server_proposals_applied_total", "Entries applied");
        let proposals_pending = g(
            "flotilla_server_proposals_pending",
            "Proposals waiting to commit",
        );
        let proposals_failed = c(
            "flotilla_server_proposals_failed_total",
            "Proposals that failed",
        );
        let fsync_duration = h(
            "flotilla_disk_wal_fsync_duration_seconds",
            "Duration of the durable sync of one Ready",
            sync_buckets.clone(),
        );
        let peer_round_trip = must(HistogramVec::new(
            HistogramOpts::new(
                "flotilla_network_peer_round_trip_time_seconds",
                "Round trip of peer messages",
            )
            .buckets(sync_buckets.clone()),
            &["to"],
        ));
        must(registry.register(Box::new(peer_round_trip.clone())));
        let snapshots = c("flotilla_snapshots_total", "Snapshots taken or installed");
        let snapshot_duration = h(
            "flotilla_snapshot_duration_seconds",
            "Time to take or install a snapshot",
            must(prometheus::exponential_buckets(0.001, 2.0, 16)),
        );
        let grpc_requests = must(IntCounterVec::new(
            Opts::new("flotilla_grpc_requests_total", "gRPC requests served"),
            &["method", "code"],
        ));
        must(registry.register(Box::new(grpc_requests.clone())));
        let db_size_bytes = g(
            "flotilla_mvcc_db_total_size_in_bytes",
            "Size of the key-value store's database on disk (<data-dir>/mvcc; not the Raft log)",
        );
        let db_size_in_use_bytes = g(
            "flotilla_mvcc_db_total_size_in_use_in_bytes",
            "Bytes of the live keys and values in the key-value store's database",
        );
        let follower_lag = must(prometheus::IntGaugeVec::new(
            Opts::new(
                "flotilla_server_follower_lag_entries",
                "Entries a follower is behind the leader's last index (leader only)",
            ),
            &["member"],
        ));
        must(registry.register(Box::new(follower_lag.clone())));
        Metrics {
            registry,
            has_leader,
            is_leader,
            leader_changes_seen,
            term,
            commit_index,
            applied_index,
            proposals_committed,
            proposals_applied,
            proposals_pending,
            proposals_failed,
            fsync_duration,
            peer_round_trip,
            snapshots,
            snapshot_duration,
            grpc_requests,
            db_size_bytes,
            db_size_in_use_bytes,
            follower_lag,
        }
    }

    /// Counts one gRPC request.
    pub fn grpc(&self, method: &str, code: tonic::Code) {
        self.grpc_requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_required_metric() {
        let m = Metrics::new();
        m.grpc("/etcdserverpb.KV/Put", tonic::Code::Ok);
        m.fsync_duration.observe(0.001);
        m.peer_round_trip.with_label_values(&["2"]).observe(0.001);
        let text = m.render();
        for name in [
            "flotilla_server_has_leader",
            "flotilla_server_is_leader",
            "flotilla_server_leader_changes_seen_total",
            "flotilla_server_term",
            "flotilla_server_commit_index",
            "flotilla_server_applied_index",
            "flotilla_server_proposals_committed_total",
            "flotilla_server_proposals_applied_total",
            "flotilla_server_proposals_pending",
            "flotilla_server_proposals_failed_total",
            "flotilla_disk_wal_fsync_duration_seconds_bucket",
            "flotilla_network_peer_round_trip_time_seconds_bucket",
            "flotilla_snapshots_total",
            "flotilla_snapshot_duration_seconds",
            "flotilla_grpc_requests_total{code=\"Ok\",method=\"/etcdserverpb.KV/Put\"}",
            "flotilla_mvcc_db_total_size_in_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
