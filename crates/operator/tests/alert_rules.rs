//! The Prometheus alert rules (deploy/prometheus/alerts.yaml, shipped by the chart as
//! charts/flotilla-operator/files/alerts.yaml) under `promtool`: they load (`promtool check
//! rules`), and their unit tests in deploy/prometheus/tests/ pass (`promtool test rules`):
//! input series labelled the way the chart's PodMonitor and ServiceMonitor label them, and the
//! alerts expected to fire or to stay silent, e.g. FlotillaMemberDown for a member but never for
//! the operator's own scrape job.
//!
//! `promtool` comes with Debian's `prometheus` package; scripts/test.sh installs it. Where it is
//! missing these tests fail rather than skip, so the rules are never left untested unnoticed.
//! `PROMTOOL=/path/to/promtool` overrides the lookup on `PATH`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RULES: &str = "deploy/prometheus/alerts.yaml";
const CHART_RULES: &str = "charts/flotilla-operator/files/alerts.yaml";
const TESTS_DIR: &str = "deploy/prometheus/tests";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `$PROMTOOL`, else the first `promtool` on `PATH`; a missing one fails the test with what to
/// install.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not installed (not on PATH, PROMTOOL unset): install Debian's \
                 `prometheus` package, which ships it (`apt-get install -y prometheus`; \
                 scripts/test.sh installs it when promtool is missing)"
            )
        })
}

/// Runs promtool from the repository root and fails the test with its output unless it
/// succeeds; returns its stdout.
fn run_promtool(args: &[&str]) -> String {
    let tool = promtool();
    let out = Command::new(&tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} failed ({e}): install Debian's `prometheus` package \
                 (`apt-get install -y prometheus`) or point PROMTOOL at a working promtool",
                tool.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
    stdout
}

/// The unit-test files, relative to the repository root, sorted.
fn test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(TESTS_DIR))
        .unwrap_or_else(|e| panic!("{TESTS_DIR}: {e}"))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("{TESTS_DIR}/{n}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule tests in {TESTS_DIR}");
    files
}

/// Every alerting rule of the rules file, across its groups.
fn alerts() -> Vec<Value> {
    let d = yaml(&root().join(RULES));
    d["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .filter(|r| r["alert"].is_string())
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_the_charts_copy() {
    let out = run_promtool(&["check", "rules", RULES, CHART_RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let files = test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = run_promtool(&args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "every file passes: {out}"
    );
}

/// Each alert is proved to fire by at least one unit test, and to stay silent in at least one
/// (before its `for:` has elapsed, or on series that must not match).
#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for file in test_files() {
        let d = yaml(&root().join(&file));
        assert_eq!(
            d["rule_files"],
            serde_json::json!(["../alerts.yaml"]),
            "{file} tests the rules file"
        );
        for t in d["tests"].as_array().expect("tests") {
            for a in t["alert_rule_test"].as_array().into_iter().flatten() {
                let name = a["alertname"].as_str().expect("alertname").to_owned();
                let expected = a["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected > 0 {
                    fires.insert(name);
                } else {
                    silent.insert(name);
                }
            }
        }
    }
    for r in alerts() {
        let name = r["alert"].as_str().expect("alert");
        assert!(fires.contains(name), "no unit test shows {name} firing");
        assert!(silent.contains(name), "no unit test shows {name} silent");
    }
}

#[test]
fn every_alert_has_severity_summary_description_and_runbook() {
    let alerts = alerts();
    assert!(alerts.len() >= 10, "{}", alerts.len());
    for r in &alerts {
        let name = r["alert"].as_str().expect("alert");
        let severity = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                r["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: annotation {key}"
            );
        }
        assert!(
            r["for"].is_string(),
            "{name}: no `for:`, it would fire on one sample"
        );
    }
}

/// `up` is exported for every scrape target, the operator's included: member alerts over `up`
/// must select the members' job exactly.
#[test]
fn member_alerts_over_up_select_only_the_members_job() {
    for r in alerts() {
        let expr = r["expr"].as_str().expect("expr");
        let mut rest = expr;
        while let Some(i) = rest.find("up{") {
            let sel = &rest[i + 3..rest[i..].find('}').map_or(rest.len(), |e| i + e)];
            assert!(
                sel.contains("job=\"flotilla-members\"")
                    || sel.contains("job=\"flotilla-operator\""),
                "{}: `up{{{sel}}}` must select job=\"flotilla-members\" (or the operator's job)",
                r["alert"]
            );
            rest = &rest[i + 3..];
        }
    }
}
