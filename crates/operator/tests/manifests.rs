//! The checked-in manifests, chart files, dashboard and alert rules: they parse, the copies the
//! chart ships equal their deploy/ originals, the RBAC of the plain manifests equals the chart's,
//! and the dashboard and alerts only query metrics that exist.
//!
//! `helm` is not installable on the build machines, so `helm template` cannot run here; the kind
//! job (tests/e2e/kind.sh) installs the chart for real. What can be checked without it is checked
//! here. The CRD drift test lives next to the CRD (`crd::tests::checked_in_crds_match_crdgen`).

use std::path::{Path, PathBuf};

use flotilla_operator::crd::RaftCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docs(path: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every metric name the nodes (crates/node/src/metrics.rs) and the operator export.
const METRICS: &[&str] = &[
    "flotilla_server_has_leader",
    "flotilla_server_is_leader",
    "flotilla_server_leader_changes_seen_total",
    "flotilla_server_term",
    "flotilla_server_commit_index",
    "flotilla_server_applied_index",
    "flotilla_server_follower_lag_entries",
    "flotilla_server_proposals_committed_total",
    "flotilla_server_proposals_applied_total",
    "flotilla_server_proposals_pending",
    "flotilla_server_proposals_failed_total",
    "flotilla_disk_wal_fsync_duration_seconds_bucket",
    "flotilla_network_peer_round_trip_time_seconds_bucket",
    "flotilla_snapshots_total",
    "flotilla_snapshot_duration_seconds",
    "flotilla_grpc_requests_total",
    "flotilla_mvcc_db_total_size_in_bytes",
    "flotilla_operator_reconciliations_total",
    "flotilla_operator_reconcile_errors_total",
    "flotilla_operator_reconcile_duration_seconds",
    "flotilla_operator_membership_changes_total",
];

/// The `flotilla_*` identifiers a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("flotilla_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_owned());
        i = end;
    }
    out
}

#[test]
fn chart_ships_the_same_dashboard_and_alerts_as_deploy() {
    assert_eq!(
        read("charts/flotilla-operator/files/alerts.yaml"),
        read("deploy/prometheus/alerts.yaml")
    );
    assert_eq!(
        read("charts/flotilla-operator/files/flotilla.json"),
        read("deploy/grafana/flotilla.json")
    );
}

#[test]
fn alerts_cover_the_five_failures_over_real_metrics() {
    let d = &docs("deploy/prometheus/alerts.yaml")[0];
    let rules = d["groups"][0]["rules"].as_array().expect("rules");
    let names: Vec<&str> = rules
        .iter()
        .map(|r| r["alert"].as_str().expect("alert"))
        .collect();
    assert_eq!(
        names,
        [
            "FlotillaNoLeader",
            "FlotillaFrequentLeaderChanges",
            "FlotillaMemberDown",
            "FlotillaSlowFsync",
            "FlotillaProposalsFailing"
        ]
    );
    for r in rules {
        let expr = r["expr"].as_str().expect("expr");
        for m in metric_names(expr) {
            assert!(
                METRICS.contains(&m.as_str()),
                "{}: unknown metric {m}",
                r["alert"]
            );
        }
        assert!(r["labels"]["severity"].is_string());
    }
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let d: Value = serde_json::from_str(&read("deploy/grafana/flotilla.json")).expect("json");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut used = 0;
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let ms = metric_names(expr);
            assert!(!ms.is_empty(), "{expr}");
            for m in ms {
                assert!(
                    METRICS.contains(&m.as_str()),
                    "panel {}: unknown metric {m}",
                    p["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 15);
}

#[test]
fn every_yaml_file_parses() {
    for path in [
        "deploy/operator.yaml",
        "deploy/examples/raftcluster-3.yaml",
        "deploy/crds/raftcluster.yaml",
        "deploy/prometheus/alerts.yaml",
        "charts/flotilla-operator/Chart.yaml",
        "charts/flotilla-operator/values.yaml",
        "charts/flotilla-operator/crds/raftcluster.yaml",
        ".github/workflows/e2e-kind.yml",
    ] {
        assert!(!docs(path).is_empty(), "{path}");
    }
}

#[test]
fn example_is_a_valid_raftcluster() {
    let d = docs("deploy/examples/raftcluster-3.yaml").remove(0);
    let rc: RaftCluster = serde_json::from_value(d).expect("RaftCluster");
    assert_eq!(rc.spec.replicas, 3);
    assert!(rc.spec.scheduling.topology_spread_constraints.is_some());
}

#[test]
fn chart_values_have_the_documented_switches() {
    let v = docs("charts/flotilla-operator/values.yaml").remove(0);
    for key in ["serviceMonitor", "prometheusRule", "grafanaDashboard"] {
        assert_eq!(v[key]["enabled"], Value::Bool(false), "{key} is opt-in");
    }
    assert!(v["image"]["repository"].is_string());
    assert!(v["resources"]["limits"].is_object());
    let chart = docs("charts/flotilla-operator/Chart.yaml").remove(0);
    assert_eq!(chart["name"], "flotilla-operator");
    assert_eq!(chart["apiVersion"], "v2");
}

fn rules_of_cluster_role(docs: &[Value]) -> Vec<PolicyRule> {
    let cr = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    serde_json::from_value::<ClusterRole>(cr.clone())
        .expect("typed")
        .rules
        .expect("rules")
}

#[test]
fn plain_manifests_and_chart_grant_the_same_least_privileges() {
    let plain = docs("deploy/operator.yaml");
    let rules = rules_of_cluster_role(&plain);
    // The chart's rbac.yaml is a template; its rules block has no template directives, so it
    // can be cut out and parsed as it is.
    let chart = read("charts/flotilla-operator/templates/rbac.yaml");
    let start = chart.find("rules:\n").expect("rules");
    let end = start + chart[start..].find("\n---").expect("end of ClusterRole");
    let block: Value = serde_saphyr::from_str(&chart[start..end]).expect("rules yaml");
    let chart_rules: Vec<PolicyRule> =
        serde_json::from_value(block["rules"].clone()).expect("typed");
    assert_eq!(rules, chart_rules);
    // Nothing cluster-wide beyond what act.rs uses: no wildcard, no secrets, no update/delete of
    // the objects the operator only applies.
    for r in &rules {
        assert!(!r.verbs.iter().any(|v| v == "*"));
        let res = r.resources.as_ref().expect("resources");
        assert!(!res.iter().any(|x| x == "*" || x == "secrets"));
    }
    let grants = |res: &str, verb: &str| {
        rules.iter().any(|r| {
            r.resources
                .as_ref()
                .is_some_and(|x| x.iter().any(|x| x == res))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (res, verb) in [
        ("statefulsets", "patch"),
        ("statefulsets/scale", "patch"),
        ("raftclusters/status", "patch"),
        ("persistentvolumeclaims", "delete"),
        ("pods", "delete"),
        ("events", "create"),
        ("poddisruptionbudgets", "patch"),
    ] {
        assert!(grants(res, verb), "{verb} {res}");
    }
    assert!(!grants("statefulsets", "delete"));
    let dep = plain
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let dep: Deployment = serde_json::from_value(dep.clone()).expect("typed");
    let pod = dep.spec.template.spec.expect("pod");
    assert_eq!(
        pod.containers[0].command.as_ref().expect("command")[0],
        "flotilla-operator"
    );
    assert_eq!(
        pod.security_context.expect("sc").run_as_non_root,
        Some(true)
    );
}

#[test]
fn chart_templates_reference_only_defined_values() {
    let values = docs("charts/flotilla-operator/values.yaml").remove(0);
    let dir = root().join("charts/flotilla-operator/templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("templates") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "{}",
            path.display()
        );
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".Values.") {
            let tail = &rest[i + 8..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(tail.len());
            let key = tail[..end].trim_end_matches('.');
            let mut v = &values;
            for part in key.split('.') {
                v = &v[part];
            }
            assert!(
                !v.is_null(),
                "{}: .Values.{key} is not in values.yaml",
                path.display()
            );
            checked += 1;
            rest = &tail[end..];
        }
    }
    assert!(checked > 20, "{checked}");
}

#[test]
fn dockerfile_uses_the_base_images_the_script_makes_and_runs_as_non_root() {
    let dockerfile = read("Dockerfile");
    let script = read("scripts/make-base-images.sh");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(froms, ["rust:1.95-bookworm", "debian:bookworm-slim"]);
    for image in froms {
        assert!(
            script.contains(&format!("- {image}")),
            "make-base-images.sh tags {image}"
        );
    }
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    for bin in ["/out/flotilla ", "/out/flotilla-operator "] {
        assert!(
            dockerfile.contains(bin),
            "both binaries in the image: {bin}"
        );
    }
}
