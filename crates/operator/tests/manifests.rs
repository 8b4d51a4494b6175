//! The checked-in manifests, chart files, dashboard and alert rules: they parse, the copies the
//! chart ships equal their deploy/ originals, the RBAC of the plain manifests equals the chart's,
//! the dashboard and alerts only query metrics that exist, and the chart's values, schema and
//! README agree.
//!
//! `helm` is not installable on the build machines, so `helm template` cannot run here; the kind
//! job (tests/e2e/kind.sh) installs the chart for real. What can be checked without it is checked
//! here. The CRD drift test lives next to the CRD (`crd::tests::checked_in_crds_match_crdgen`);
//! the alert rules' promtool unit tests are in tests/alert_rules.rs.

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
    "flotilla_operator_is_leader",
    "flotilla_operator_backup_last_success_timestamp_seconds",
    "flotilla_operator_backup_interval_seconds",
    // {namespace, name, type}: 1 while the RaftCluster's condition `type` is True.
    "flotilla_operator_cluster_condition",
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
fn alerts_cover_the_failures_over_real_metrics() {
    let d = &docs("deploy/prometheus/alerts.yaml")[0];
    let rules: Vec<&Value> = d["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
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
            "FlotillaQuorumLost",
            "FlotillaSlowFsync",
            "FlotillaProposalsFailing",
            "FlotillaQuorumAtRisk",
            "FlotillaClusterUnavailable",
            "FlotillaClusterNotReconciled",
            "FlotillaBackupMissing",
            "FlotillaOperatorReconcileErrors",
            "FlotillaOperatorDown",
            "FlotillaOperatorNoLeader",
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
        "deploy/prometheus/tests/members_test.yaml",
        "deploy/prometheus/tests/operator_test.yaml",
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
    // Nothing cluster-wide beyond what act.rs uses: no wildcard, no update/delete of the
    // objects the operator only applies. Secrets: the certificate Secrets it names (crate::tls)
    // are read and applied one by one — never listed or watched, which would hand the operator
    // every Secret of the cluster.
    for r in &rules {
        assert!(!r.verbs.iter().any(|v| v == "*"));
        let res = r.resources.as_ref().expect("resources");
        assert!(!res.iter().any(|x| x == "*"));
        if res.iter().any(|x| x == "secrets") {
            assert_eq!(r.verbs, ["get", "create", "patch"], "secrets: {r:?}");
        }
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
        // What the e2e run found missing once: the Job watch and the restore's claim.
        ("jobs", "watch"),
        ("jobs", "create"),
        ("jobs", "delete"),
        ("persistentvolumeclaims", "create"),
        ("secrets", "patch"),
        ("networkpolicies", "patch"),
        ("certificates", "patch"),
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

/// Every file under `dir`, subfolders (templates/tests/) included.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn chart_templates_reference_only_defined_values() {
    let values = docs("charts/flotilla-operator/values.yaml").remove(0);
    let dir = root().join("charts/flotilla-operator/templates");
    let mut checked = 0;
    for path in files_under(&dir) {
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

/// Dotted paths of every key in values.yaml (`image`, `image.repository`, ...), maps descended.
fn value_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(path.clone());
            value_paths(child, &path, out);
        }
    }
}

/// The schema node describing `path`, following `properties` and local `$ref`s; `None` where the
/// schema leaves the shape open (a map of any keys).
fn schema_at<'a>(schema: &'a Value, node: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = node;
    for part in path.split('.') {
        if let Some(r) = node["$ref"].as_str() {
            let name = r.strip_prefix("#/definitions/").expect("local $ref");
            node = &schema["definitions"][name];
        }
        if node["properties"].is_object() {
            node = &node["properties"][part];
            assert!(
                !node.is_null(),
                "values key {path} is not in values.schema.json"
            );
        } else {
            return None;
        }
    }
    Some(node)
}

#[test]
fn chart_schema_is_strict_and_covers_every_value() {
    let schema: Value = serde_json::from_str(&read("charts/flotilla-operator/values.schema.json"))
        .expect("values.schema.json");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(
        schema["additionalProperties"],
        Value::Bool(false),
        "unknown top-level keys (typos) are refused"
    );
    let values = docs("charts/flotilla-operator/values.yaml").remove(0);
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    assert!(paths.len() > 20, "{paths:?}");
    for path in &paths {
        let Some(node) = schema_at(&schema, &schema, path) else {
            continue;
        };
        // The default's JSON type is one the schema allows.
        let mut v = &values;
        for part in path.split('.') {
            v = &v[part];
        }
        let ty = match v {
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        };
        let allowed: Vec<&str> = match &node["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => continue, // a $ref or oneOf: checked by Helm itself
        };
        assert!(
            allowed.contains(&ty) || (ty == "integer" && allowed.contains(&"number")),
            "{path}: default is {ty}, schema allows {allowed:?}"
        );
    }
    // And nothing in the schema that values.yaml lacks (besides Helm's `global`).
    for key in schema["properties"].as_object().expect("properties").keys() {
        assert!(
            key == "global" || !values[key.as_str()].is_null(),
            "values.schema.json has {key}, values.yaml does not"
        );
    }
}

#[test]
fn chart_readme_documents_every_value_and_the_crd_upgrade() {
    let readme = read("charts/flotilla-operator/README.md");
    let values = docs("charts/flotilla-operator/values.yaml").remove(0);
    let mut paths = Vec::new();
    value_paths(&values, "", &mut paths);
    for path in &paths {
        let mut v = &values;
        for part in path.split('.') {
            v = &v[part];
        }
        if v.as_object().is_some_and(|m| !m.is_empty()) {
            continue; // a section: its keys are checked one by one
        }
        // Documented itself or through a documented parent (`resources` covers its limits).
        let mut documented = false;
        let mut prefix = String::new();
        for part in path.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
            documented |= readme.contains(&format!("`{prefix}`"));
        }
        assert!(documented, "README.md's values table lacks `{path}`");
    }
    for needle in [
        "kubectl apply -f charts/flotilla-operator/crds/",
        "--server-side",
        "helm uninstall",
        "scripts/build-image.sh flotilla:dev",
        "--set image.repository=flotilla --set image.tag=dev",
    ] {
        assert!(readme.contains(needle), "README.md: {needle}");
    }
}

#[test]
fn monitors_set_the_job_names_the_alerts_select() {
    let monitors = read("charts/flotilla-operator/templates/servicemonitor.yaml");
    let alerts = read("deploy/prometheus/alerts.yaml");
    for job in ["flotilla-members", "flotilla-operator"] {
        assert!(
            monitors.contains(&format!("replacement: {job}\n")),
            "servicemonitor.yaml sets job={job}"
        );
        assert!(
            alerts.contains(&format!("job=\"{job}\"")),
            "alerts select {job}"
        );
    }
    assert!(
        monitors.contains("honorLabels: true"),
        "condition gauges keep their namespace"
    );
    let d = &docs("deploy/prometheus/alerts.yaml")[0];
    for g in d["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let expr = r["expr"].as_str().expect("expr");
            assert!(
                !expr.contains("job=~"),
                "{}: a job regex (the old `.*flotilla.*`) would match the operator too",
                r["alert"]
            );
        }
    }
}

#[test]
fn helm_test_hook_probes_readyz_as_a_restricted_non_root_pod() {
    let files = files_under(&root().join("charts/flotilla-operator/templates/tests"));
    assert!(!files.is_empty(), "templates/tests/ has the helm test hook");
    for path in files {
        let t = std::fs::read_to_string(&path).expect("read");
        for needle in [
            "kind: Pod",
            "helm.sh/hook: test",
            "restartPolicy: Never",
            "runAsNonRoot: true",
            "runAsUser: 65532",
            "allowPrivilegeEscalation: false",
            "drop: [\"ALL\"]",
            "type: RuntimeDefault",
            "/dev/tcp/",
            "/readyz",
            "-metrics.{{ .Release.Namespace }}.svc",
        ] {
            assert!(t.contains(needle), "{}: {needle}", path.display());
        }
        // The operator's selector labels on the test pod would put it behind the metrics
        // Service it probes.
        assert!(
            !t.contains("flotilla-operator.selectorLabels")
                && !t.contains("flotilla-operator.labels")
                && !t.contains("app.kubernetes.io/name: flotilla-operator\n"),
            "{}: the test pod must not match the Service's selector",
            path.display()
        );
    }
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

/// The dependency layer builds from the workspace's manifests alone: every workspace member's
/// `Cargo.toml` must be copied in (cargo refuses to load a workspace with a member missing),
/// and each member gets stub sources there.
#[test]
fn dockerfile_dependency_layer_copies_every_workspace_member() {
    let dockerfile = read("Dockerfile");
    let root = read("Cargo.toml");
    let members = root
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let members: Vec<&str> = members.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 4, "{members:?}");
    let stubbed = dockerfile
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("RUN for c in "))
        .expect("the stub loop");
    for m in members {
        assert!(
            dockerfile.contains(&format!("COPY {m}/Cargo.toml {m}/Cargo.toml")),
            "the Dockerfile's dependency layer does not copy {m}/Cargo.toml"
        );
        let name = m.trim_start_matches("crates/");
        assert!(
            stubbed
                .split_whitespace()
                .any(|c| c.trim_end_matches(';') == name),
            "no stub sources for {name} in the dependency layer"
        );
    }
}

#[test]
fn admission_policy_is_gated_on_the_api_and_names_real_fields() {
    let t = read("charts/flotilla-operator/templates/validatingadmissionpolicy.yaml");
    assert!(
        t.contains(r#".Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy""#),
        "rendered only where the server serves the API"
    );
    let crd = read("deploy/crds/raftcluster.yaml");
    for field in ["heartbeatTicks", "electionTicks", "storage"] {
        assert!(t.contains(&format!(".{field}")), "{field} in the policy");
        assert!(crd.contains(&format!("{field}:")), "{field} in the CRD");
    }
    assert!(t.contains("validationActions: [Deny]"));
}
