//! The operator's own Prometheus metrics, served on `/metrics`.
//!
//! Kept apart from the reconcile logic: the reconciler calls a handful of methods, and the
//! registry can be a fresh one per test. Names follow Prometheus conventions (`_total` counters,
//! `_seconds` histograms) under the `flotilla_operator_` prefix, so they never collide with the
//! nodes' `flotilla_*` metrics in a shared Prometheus.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::Error;
use crate::plan::Action;

/// The metrics, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes started.
    pub reconciliations: IntCounter,
    /// Failed passes, by error label.
    pub failures: IntCounterVec,
    /// Duration of a pass.
    pub duration: Histogram,
    /// Membership and scale actions taken, by kind.
    pub membership_changes: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Metrics {
    /// Creates and registers the metrics in a new registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounter::new(
            "flotilla_operator_reconciliations_total",
            "Reconcile passes started",
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "flotilla_operator_reconcile_errors_total",
                "Reconcile passes that failed, by error",
            ),
            &["error"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "flotilla_operator_reconcile_duration_seconds",
                "Duration of a reconcile pass",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let membership_changes = IntCounterVec::new(
            Opts::new(
                "flotilla_operator_membership_changes_total",
                "Membership and scale actions taken, by kind",
            ),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "flotilla_operator_is_leader",
            "1 while this replica holds the leader Lease",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(membership_changes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            failures,
            duration,
            membership_changes,
            leader,
        })
    }

    /// Counts a failed pass.
    pub fn failed(&self, e: &Error) {
        self.failures.with_label_values(&[e.metric_label()]).inc();
    }

    /// Counts an action that was carried out.
    pub fn action(&self, a: &Action) {
        let kind = match a {
            Action::ScaleStatefulSet { .. } => "scale",
            Action::Promote { .. } => "promote",
            Action::Remove { .. } => "remove",
            Action::TransferLeadership { .. } => "transfer_leadership",
            Action::DeletePvc { .. } => "delete_pvc",
            Action::RestartPod { .. } => "restart_pod",
        };
        self.membership_changes.with_label_values(&[kind]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format; an empty page is the fallback.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_label() {
        let m = Metrics::new().expect("metrics");
        m.reconciliations.inc();
        m.failed(&Error::MissingNamespace);
        m.action(&Action::Promote {
            id: 1,
            name: "a".into(),
        });
        m.duration.observe(0.2);
        let text = m.render();
        assert!(
            text.contains("flotilla_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flotilla_operator_reconcile_errors_total{error="missing_namespace"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"flotilla_operator_membership_changes_total{kind="promote"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("flotilla_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
