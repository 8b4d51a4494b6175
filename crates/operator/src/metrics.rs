//! The operator's own Prometheus metrics, served on `/metrics`.
//!
//! Kept apart from the reconcile logic: the reconciler calls a handful of methods, and the
//! registry can be a fresh one per test. Names follow Prometheus conventions (`_total` counters,
//! `_seconds` histograms) under the `flotilla_operator_` prefix, so they never collide with the
//! nodes' `flotilla_*` metrics in a shared Prometheus.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::crd::{MemberRole, RaftClusterStatus};
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
    /// Each RaftCluster's status conditions: 1 when True, 0 otherwise. Alerts read this (quorum
    /// at risk, reconcile failing) without scraping the API server.
    pub conditions: IntGaugeVec,
    /// Each RaftCluster's members by role and health, as the status reports them.
    pub members: IntGaugeVec,
    /// When each cluster's last backup succeeded (before the first: since backups were first
    /// scheduled), Unix seconds.
    pub backup_last_success: IntGaugeVec,
    /// Each cluster's backup schedule interval, seconds.
    pub backup_interval: IntGaugeVec,
    /// Clusters whose gauges are published.
    published: Arc<Mutex<BTreeSet<(String, String)>>>,
}

/// The `kind` label of each action.
pub const ACTION_KINDS: [&str; 6] = [
    "scale",
    "promote",
    "remove",
    "transfer_leadership",
    "delete_pvc",
    "restart_pod",
];

fn action_kind(a: &Action) -> &'static str {
    match a {
        Action::ScaleStatefulSet { .. } => ACTION_KINDS[0],
        Action::Promote { .. } => ACTION_KINDS[1],
        Action::Remove { .. } => ACTION_KINDS[2],
        Action::TransferLeadership { .. } => ACTION_KINDS[3],
        Action::DeletePvc { .. } => ACTION_KINDS[4],
        Action::RestartPod { .. } => ACTION_KINDS[5],
    }
}

/// The condition types the status carries.
pub const CONDITION_TYPES: [&str; 9] = [
    "Available",
    "Progressing",
    "Degraded",
    "QuorumAtRisk",
    "Reconciled",
    "CertificatesReady",
    "BackupSucceeded",
    "Restored",
    "QuorumLost",
];

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
        let conditions = IntGaugeVec::new(
            Opts::new(
                "flotilla_operator_cluster_condition",
                "A RaftCluster status condition: 1 when True, 0 otherwise",
            ),
            &["namespace", "name", "type"],
        )?;
        let members = IntGaugeVec::new(
            Opts::new(
                "flotilla_operator_cluster_members",
                "Members of a RaftCluster by role and health, as its status reports them",
            ),
            &["namespace", "name", "role", "healthy"],
        )?;
        // Every label value exists from the start, at 0: a series that appears only with its
        // first error has no rate, and dashboards and alerts would see "no data" instead.
        for label in Error::METRIC_LABELS {
            failures.with_label_values(&[label]);
        }
        for kind in ACTION_KINDS {
            membership_changes.with_label_values(&[kind]);
        }
        let backup_last_success = IntGaugeVec::new(
            Opts::new(
                "flotilla_operator_backup_last_success_timestamp_seconds",
                "When the RaftCluster's last backup succeeded (before the first success: when \
                 backups were first scheduled), Unix seconds",
            ),
            &["namespace", "name"],
        )?;
        let backup_interval = IntGaugeVec::new(
            Opts::new(
                "flotilla_operator_backup_interval_seconds",
                "The RaftCluster's backup schedule interval, seconds",
            ),
            &["namespace", "name"],
        )?;
        registry.register(Box::new(backup_last_success.clone()))?;
        registry.register(Box::new(backup_interval.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(conditions.clone()))?;
        registry.register(Box::new(members.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            failures,
            duration,
            membership_changes,
            leader,
            conditions,
            members,
            backup_last_success,
            backup_interval,
            published: Arc::default(),
        })
    }

    /// Publishes a cluster's status as gauges.
    pub fn cluster_status(&self, namespace: &str, name: &str, status: &RaftClusterStatus) {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.to_owned(), name.to_owned()));
        for c in &status.conditions {
            self.conditions
                .with_label_values(&[namespace, name, &c.type_])
                .set(i64::from(c.status == "True"));
        }
        for role in [MemberRole::Voter, MemberRole::Learner] {
            for healthy in [true, false] {
                let n = status
                    .members
                    .iter()
                    .filter(|m| m.role == role && m.healthy == healthy)
                    .count();
                self.members
                    .with_label_values(&[
                        namespace,
                        name,
                        match role {
                            MemberRole::Voter => "voter",
                            MemberRole::Learner => "learner",
                        },
                        if healthy { "true" } else { "false" },
                    ])
                    .set(n as i64);
            }
        }
    }

    /// Drops the series of clusters that no longer exist (kube-runtime does not reconcile a
    /// deleted object, so the controller calls this with the clusters its cache still has).
    pub fn retain_clusters(&self, live: &BTreeSet<(String, String)>) {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        for (ns, name) in published.iter().filter(|c| !live.contains(*c)) {
            for t in CONDITION_TYPES {
                let _ = self.conditions.remove_label_values(&[ns, name, t]);
            }
            let _ = self.backup_last_success.remove_label_values(&[ns, name]);
            let _ = self.backup_interval.remove_label_values(&[ns, name]);
            for role in ["voter", "learner"] {
                for healthy in ["true", "false"] {
                    let _ = self
                        .members
                        .remove_label_values(&[ns.as_str(), name, role, healthy]);
                }
            }
        }
        published.retain(|c| live.contains(c));
    }

    /// Publishes a cluster's backup gauges.
    pub fn backup(&self, namespace: &str, name: &str, last: Option<i64>, interval: Option<i64>) {
        if let Some(t) = last {
            self.backup_last_success
                .with_label_values(&[namespace, name])
                .set(t);
        }
        if let Some(i) = interval {
            self.backup_interval
                .with_label_values(&[namespace, name])
                .set(i);
        }
    }

    /// Counts a failed pass.
    pub fn failed(&self, e: &Error) {
        self.failures.with_label_values(&[e.metric_label()]).inc();
    }

    /// Counts an action that was carried out.
    pub fn action(&self, a: &Action) {
        self.membership_changes
            .with_label_values(&[action_kind(a)])
            .inc();
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
        assert!(
            text.contains(r#"flotilla_operator_reconcile_errors_total{error="kube"} 0"#),
            "every error label exists from the start: {text}"
        );
    }

    #[test]
    fn cluster_conditions_become_gauges() {
        let m = Metrics::new().expect("metrics");
        let status: RaftClusterStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Available", "status": "True", "reason": "QuorumHealthy", "message": ""},
                {"type": "QuorumAtRisk", "status": "False", "reason": "FailureTolerant", "message": ""},
            ],
            "members": [
                {"name": "demo-0", "id": "1", "role": "Voter", "healthy": true, "matchIndex": 1, "lag": 0},
                {"name": "demo-1", "id": "2", "role": "Voter", "healthy": false, "matchIndex": 1, "lag": 0},
            ],
        }))
        .expect("status");
        m.cluster_status("ns", "demo", &status);
        let text = m.render();
        for want in [
            r#"flotilla_operator_cluster_condition{name="demo",namespace="ns",type="Available"} 1"#,
            r#"flotilla_operator_cluster_condition{name="demo",namespace="ns",type="QuorumAtRisk"} 0"#,
            r#"flotilla_operator_cluster_members{healthy="false",name="demo",namespace="ns",role="voter"} 1"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        m.retain_clusters(&BTreeSet::from([("ns".to_owned(), "demo".to_owned())]));
        assert!(m.render().contains("demo"));
        m.retain_clusters(&BTreeSet::new());
        assert!(!m.render().contains("demo"), "{}", m.render());
    }
}
