//! Backups and restores, run as Kubernetes Jobs of the cluster's own image.
//!
//! Why Jobs and not the operator process: a backup streams a whole snapshot, and a restore
//! writes a member's volume; a Job runs next to the data with the credentials and volumes it
//! needs (a Secret, a backup PVC, the member's claim), while the operator keeps no volume and no
//! object-store credentials. Each Job is one `flotilla backup …` command (crates/node
//! `backup`); its pod writes the result as JSON to its termination message, which is where the
//! operator reads it back.
//!
//! Everything here is derived from the Jobs that exist (the schedule's last run is the newest
//! Job's creation time; a `flotilla.dev/backup-now` value is served once no Job carries it), so
//! an operator restart neither repeats nor skips a backup. [`plan`] and [`restore_plan`] are
//! pure; the reconciler reads the Jobs and applies what they return.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::crd::{BackupLocation, BackupRecord, BackupSpec, BackupStatus, RaftCluster, TlsMode};
use crate::kube_api::Owned;
use crate::plan::{Note, Severity};
use crate::resources::{BuildError, CLIENT_PORT, FIELD_MANAGER, Names, selector};

/// The annotation that asks for a backup now; each new value is served once.
pub const BACKUP_NOW: &str = "flotilla.dev/backup-now";
/// Label telling the operator's Jobs apart: `backup` or `restore`.
pub const JOB_LABEL: &str = "flotilla.dev/job";
/// Finished Jobs kept per outcome (succeeded, failed), newest first, for `kubectl logs`.
pub const JOBS_KEPT: usize = 3;
/// Where a Job mounts the admin client certificate (TLS on).
const CLIENT_TLS_MOUNT: &str = "/etc/flotilla/client";
/// Where a Job mounts a backup PVC.
const BACKUP_MOUNT: &str = "/backup";

impl Names {
    /// The restore Job of a cluster bootstrapped from a backup.
    pub fn restore_job(&self) -> String {
        format!("{}-restore", self.cluster)
    }
}

/// Labels of the operator's Jobs (and their pods) of `kind`: not the member selector, so a
/// Job's pod is never taken for a member.
pub fn job_labels(names: &Names, kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "flotilla-job".to_owned(),
        ),
        (
            "app.kubernetes.io/instance".to_owned(),
            names.cluster.clone(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (JOB_LABEL.to_owned(), kind.to_owned()),
    ])
}

/// `k=v,…` selecting the operator's Jobs (every kind) of a cluster, and their pods.
pub fn jobs_selector(names: &Names) -> String {
    format!(
        "app.kubernetes.io/name=flotilla-job,app.kubernetes.io/instance={}",
        names.cluster
    )
}

/// `7d`, `36h`, `90m`, `45s` in seconds.
pub fn parse_age(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mult = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    (n >= 0).then(|| n.checked_mul(mult)).flatten()
}

/// A backup location as the `flotilla backup` command takes it.
pub fn location_url(l: &BackupLocation) -> String {
    match (&l.s3, &l.pvc) {
        (Some(s3), _) => format!(
            "s3://{}/{}",
            s3.bucket,
            s3.prefix.as_deref().unwrap_or("").trim_start_matches('/')
        ),
        (None, Some(p)) => {
            format!(
                "file://{BACKUP_MOUNT}/{}",
                p.path.as_deref().unwrap_or("").trim_matches('/')
            )
            .trim_end_matches('/')
            .to_owned()
                + "/"
        }
        (None, None) => String::new(),
    }
}

/// What a Job's pod reported (its termination message).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    /// Backup name.
    #[serde(default)]
    pub name: String,
    /// Location.
    #[serde(default)]
    pub location: String,
    /// Revision.
    #[serde(default)]
    pub revision: i64,
    /// Size.
    #[serde(default)]
    pub size: u64,
    /// SHA-256.
    #[serde(default)]
    pub sha256: String,
    /// Finished at (RFC 3339).
    #[serde(default)]
    pub finished_at: String,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// One of the operator's Jobs, as far as the decisions here care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// Its name.
    pub name: String,
    /// `backup` or `restore`.
    pub kind: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// The `flotilla.dev/backup-now` value it was started for.
    pub trigger: Option<String>,
    /// `Some(true)` succeeded, `Some(false)` failed, `None` still running.
    pub outcome: Option<bool>,
    /// What its last pod wrote, when it wrote JSON.
    pub result: Option<JobResult>,
    /// The Job's own failure message (its Failed condition), when there is one.
    pub failure: Option<String>,
}

/// Reads the operator's Jobs and their pods' termination messages.
pub fn job_views(jobs: &[Job], pods: &[Pod]) -> Vec<JobView> {
    let mut out: Vec<JobView> = jobs
        .iter()
        .filter_map(|j| {
            let name = j.metadata.name.clone()?;
            let kind = j.metadata.labels.as_ref()?.get(JOB_LABEL)?.clone();
            let created = j.metadata.creation_timestamp.as_ref()?.0;
            let created = DateTime::<Utc>::from_timestamp(created.as_second(), 0)?;
            let conditions = j
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let is = |t: &str| {
                conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            let outcome = if is("Complete") {
                Some(true)
            } else if is("Failed") {
                Some(false)
            } else {
                None
            };
            let failure = conditions
                .iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| {
                    c.message
                        .clone()
                        .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
                });
            // The newest pod of the Job that left a message.
            let result = pods
                .iter()
                .filter(|p| {
                    p.metadata.labels.as_ref().and_then(|l| l.get("job-name")) == Some(&name)
                })
                .filter_map(|p| {
                    let t = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
                    let msg = t.state.as_ref()?.terminated.as_ref()?.message.clone()?;
                    let at = p.metadata.creation_timestamp.as_ref()?.0.as_second();
                    Some((at, msg))
                })
                .max_by_key(|(at, _)| *at)
                .and_then(|(_, msg)| serde_json::from_str::<JobResult>(msg.trim()).ok());
            Some(JobView {
                name,
                kind,
                created,
                trigger: j
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(BACKUP_NOW))
                    .cloned(),
                outcome,
                result,
                failure,
            })
        })
        .collect();
    out.sort_by_key(|j| (j.created, j.name.clone()));
    out
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default)]
pub struct BackupPlan {
    /// A Job to start.
    pub apply: Vec<Owned>,
    /// Finished Jobs to delete (history beyond [`JOBS_KEPT`]).
    pub delete: Vec<String>,
    /// The status block.
    pub status: Option<BackupStatus>,
    /// The `BackupSucceeded` condition: (ok, reason, message).
    pub condition: Option<(bool, &'static str, String)>,
    /// Events.
    pub notes: Vec<Note>,
    /// For the metrics: the last success (or, before the first, when backups were first
    /// scheduled) and the schedule's interval, in Unix seconds.
    pub last_success_or_since: Option<i64>,
    /// The schedule's interval in seconds.
    pub interval_secs: Option<i64>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn next_after(cron: &croner::Cron, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&t, false).ok()
}

/// Decides about backups: start one when the schedule is due or a new `backup-now` value asks
/// (never while one runs, and only when `can_back_up` — the cluster has a leader), trim the Job
/// history, and report. `jobs` are the cluster's backup Jobs.
pub fn plan(
    rc: &RaftCluster,
    names: &Names,
    spec: &BackupSpec,
    jobs: &[JobView],
    can_back_up: bool,
    now: DateTime<Utc>,
) -> Result<BackupPlan, BuildError> {
    let mut out = BackupPlan::default();
    let jobs: Vec<&JobView> = jobs.iter().filter(|j| j.kind == "backup").collect();
    let Ok(cron) = spec.schedule.parse::<croner::Cron>() else {
        // Reported by the spec check; nothing is scheduled on a schedule that does not parse.
        return Ok(out);
    };
    let created = rc
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0))
        .unwrap_or(now);
    let last_started = jobs.last().map(|j| j.created);
    let next = next_after(&cron, last_started.unwrap_or(created));
    let interval = next
        .and_then(|n| Some((n, next_after(&cron, n)?)))
        .map(|(a, b)| (b - a).num_seconds());
    let due = next.is_some_and(|n| n <= now);
    let requested = rc
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(BACKUP_NOW))
        .filter(|v| !v.is_empty())
        .filter(|v| !jobs.iter().any(|j| j.trigger.as_ref() == Some(*v)))
        .cloned();
    let running = jobs.iter().any(|j| j.outcome.is_none());
    if (due || requested.is_some()) && !running && can_back_up {
        let name = format!("{}-backup-{}", names.cluster, now.format("%Y%m%d%H%M%S"));
        out.apply.push(Owned::Job(Box::new(save_job(
            rc,
            names,
            spec,
            &name,
            requested.as_deref(),
        )?)));
        out.notes.push(Note {
            severity: Severity::Normal,
            reason: "BackupStarted",
            message: match &requested {
                Some(v) => format!("started backup Job {name} ({BACKUP_NOW}={v})"),
                None => format!("started scheduled backup Job {name} ({})", spec.schedule),
            },
            subject: None,
        });
    }

    let last_ok = jobs
        .iter()
        .rev()
        .filter(|j| j.outcome == Some(true))
        .find_map(|j| j.result.as_ref().filter(|r| r.error.is_none()));
    let last_finished = jobs.iter().rev().find(|j| j.outcome.is_some());
    out.condition = Some(match last_finished {
        Some(j) if j.outcome == Some(false) => (
            false,
            "BackupFailed",
            format!(
                "backup Job {} failed: {}",
                j.name,
                j.result
                    .as_ref()
                    .and_then(|r| r.error.clone())
                    .or_else(|| j.failure.clone())
                    .unwrap_or_else(|| "see kubectl logs".to_owned())
            ),
        ),
        Some(_) if last_ok.is_some() => (
            true,
            "BackupSucceeded",
            last_ok
                .map(|r| {
                    format!(
                        "last backup {} at revision {} ({} bytes)",
                        r.location, r.revision, r.size
                    )
                })
                .unwrap_or_default(),
        ),
        _ => (
            false,
            "NoBackupYet",
            "no backup has completed yet".to_owned(),
        ),
    });
    let record = last_ok.map(|r| BackupRecord {
        name: r.name.clone(),
        location: r.location.clone(),
        revision: r.revision,
        size: r.size,
        sha256: r.sha256.clone(),
        finished_at: r.finished_at.clone(),
    });
    out.last_success_or_since = Some(
        record
            .as_ref()
            .and_then(|r| DateTime::parse_from_rfc3339(&r.finished_at).ok())
            .map(|t| t.timestamp())
            // Before the first success: since the first backup Job, or since the first run was
            // due — so "no success within twice the interval" also covers "never succeeded".
            .unwrap_or_else(|| {
                jobs.first()
                    .map(|j| j.created)
                    .or(next)
                    .map_or(now, |t| t.min(now))
                    .timestamp()
            }),
    );
    out.interval_secs = interval;
    out.status = Some(BackupStatus {
        last_successful: record,
        last_started: last_started.map(rfc3339),
        next_scheduled: next.map(rfc3339),
    });

    // History: the newest JOBS_KEPT of each outcome, and always the newest Job (the schedule
    // counts from it).
    let newest = jobs.last().map(|j| j.name.clone());
    for outcome in [true, false] {
        out.delete.extend(
            jobs.iter()
                .rev()
                .filter(|j| j.outcome == Some(outcome))
                .skip(JOBS_KEPT)
                .filter(|j| Some(&j.name) != newest.as_ref())
                .map(|j| j.name.clone()),
        );
    }
    Ok(out)
}

/// Puts the backup block and the `BackupSucceeded` and `Restored` conditions into the plan's
/// status.
pub fn report(
    backups: Option<&BackupPlan>,
    restore: &RestorePlan,
    rc: &RaftCluster,
    o: &crate::plan::Observed,
    plan: &mut crate::plan::Plan,
) {
    let conditions = &mut plan.status.conditions;
    if let Some(b) = backups {
        plan.status.backup = b.status.clone();
        if let Some((ok, reason, message)) = &b.condition {
            conditions.push(crate::plan::condition(
                o,
                "BackupSucceeded",
                *ok,
                reason,
                message.clone(),
            ));
        }
    }
    if rc
        .spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.from_backup.is_some())
    {
        let (ok, reason, message) = match &restore.pending {
            Some((reason, message)) => (false, *reason, message.clone()),
            None => (
                true,
                "Restored",
                "the first member started from the backup".to_owned(),
            ),
        };
        conditions.push(crate::plan::condition(o, "Restored", ok, reason, message));
    }
}

/// The container's view of a location: environment, volumes and mounts.
fn location_access(l: &BackupLocation, read_only: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let (mut env, mut volumes, mut mounts) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(s3) = &l.s3 {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.push(json!({"name": key, "valueFrom": {"secretKeyRef": {
                "name": s3.credentials_secret, "key": key}}}));
        }
        if let Some(e) = &s3.endpoint {
            env.push(json!({"name": "FLOTILLA_S3_ENDPOINT", "value": e}));
        }
        if let Some(r) = &s3.region {
            env.push(json!({"name": "AWS_REGION", "value": r}));
        }
        if s3.path_style {
            env.push(json!({"name": "FLOTILLA_S3_PATH_STYLE", "value": "true"}));
        }
    }
    if let Some(p) = &l.pvc {
        volumes.push(json!({"name": "backup", "persistentVolumeClaim": {
            "claimName": p.claim_name, "readOnly": read_only}}));
        mounts.push(json!({"name": "backup", "mountPath": BACKUP_MOUNT, "readOnly": read_only}));
    }
    (env, volumes, mounts)
}

/// What differs between the operator's Jobs.
#[derive(Default)]
struct JobParts {
    script: String,
    env: Vec<Value>,
    volumes: Vec<Value>,
    mounts: Vec<Value>,
    annotations: BTreeMap<String, String>,
}

/// A Job around one shell script, restricted like the members (non-root, read-only root,
/// no capabilities, RuntimeDefault seccomp); the script's last command writes the result JSON
/// to the termination message.
fn job(
    rc: &RaftCluster,
    names: &Names,
    name: &str,
    kind: &str,
    parts: JobParts,
) -> Result<Job, BuildError> {
    let JobParts {
        script,
        env,
        volumes,
        mounts,
        annotations,
    } = parts;
    let labels = job_labels(names, kind);
    let mut container = json!({
        "name": kind,
        "image": rc.spec.image,
        "command": ["/bin/sh", "-c", script],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(p) = &rc.spec.image_pull_policy {
        container["imagePullPolicy"] = json!(p);
    }
    let v = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": names.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": rc.controller_owner_ref(&()).map(|o| vec![o]).unwrap_or_default(),
        },
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                    // /tmp for the download a restore verifies before it unpacks.
                    "securityContext": {
                        "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                },
            },
        },
    });
    let mut v = v;
    if let Some(list) = v["spec"]["template"]["spec"]["volumes"].as_array_mut() {
        list.push(json!({"name": "tmp", "emptyDir": {}}));
    }
    if let Some(list) =
        v["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].as_array_mut()
    {
        list.push(json!({"name": "tmp", "mountPath": "/tmp"}));
    }
    serde_json::from_value(v).map_err(|source| BuildError::Shape {
        kind: "Job",
        source,
    })
}

/// TLS flags and the client certificate's volume, when the cluster uses TLS.
fn client_tls(rc: &RaftCluster, names: &Names) -> (String, Vec<Value>, Vec<Value>) {
    if rc.spec.tls.mode == TlsMode::Disabled {
        return (String::new(), Vec::new(), Vec::new());
    }
    (
        format!(
            " --cacert {CLIENT_TLS_MOUNT}/ca.crt --cert {CLIENT_TLS_MOUNT}/tls.crt --key {CLIENT_TLS_MOUNT}/tls.key"
        ),
        vec![
            json!({"name": "client-tls", "secret": {"secretName": names.client_secret(), "defaultMode": 0o440}}),
        ],
        vec![json!({"name": "client-tls", "mountPath": CLIENT_TLS_MOUNT, "readOnly": true})],
    )
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The backup Job: save from the members, then prune per retention (a failed prune is logged
/// and does not fail the backup it follows).
pub fn save_job(
    rc: &RaftCluster,
    names: &Names,
    spec: &BackupSpec,
    name: &str,
    trigger: Option<&str>,
) -> Result<Job, BuildError> {
    let scheme = if rc.spec.tls.mode == TlsMode::Disabled {
        "http"
    } else {
        "https"
    };
    let endpoints: Vec<String> = (0..u32::try_from(rc.spec.replicas.max(1)).unwrap_or(1))
        .map(|k| format!("{scheme}://{}:{CLIENT_PORT}", names.pod_host(k)))
        .collect();
    let to = location_url(&spec.target);
    let (tls_flags, mut volumes, mut mounts) = client_tls(rc, names);
    let (env, v2, m2) = location_access(&spec.target, false);
    volumes.extend(v2);
    mounts.extend(m2);
    let mut prune = String::new();
    if let Some(n) = spec.retention.count {
        prune.push_str(&format!(" --keep-count {n}"));
    }
    if let Some(a) = &spec.retention.max_age {
        prune.push_str(&format!(" --keep-age {}", quote(a)));
    }
    let script = format!(
        "set -eu\nflotilla backup save --endpoints {endpoints} --cluster {cluster} --to {to}{tls_flags} --result-file /dev/termination-log\n{prune_line}",
        endpoints = quote(&endpoints.join(",")),
        cluster = quote(&names.cluster),
        to = quote(&to),
        prune_line = if prune.is_empty() {
            String::new()
        } else {
            format!(
                "flotilla backup prune --from {} --cluster {}{prune} || echo 'pruning old backups failed; the new backup is complete' >&2\n",
                quote(&to),
                quote(&names.cluster)
            )
        },
    );
    let mut annotations = BTreeMap::new();
    if let Some(t) = trigger {
        annotations.insert(BACKUP_NOW.to_owned(), t.to_owned());
    }
    let parts = JobParts {
        script,
        env,
        volumes,
        mounts,
        annotations,
    };
    job(rc, names, name, "backup", parts)
}

/// What [`restore_plan`] decided.
#[derive(Debug, Clone, Default)]
pub struct RestorePlan {
    /// Objects to apply: pod 0's claim and the restore Job.
    pub apply: Vec<Owned>,
    /// The StatefulSet must wait: pod 0's volume is not restored yet.
    pub hold: bool,
    /// `Some((reason, message))` while restoring or after a failure.
    pub pending: Option<(&'static str, String)>,
    /// Events.
    pub notes: Vec<Note>,
}

/// A cluster with `spec.bootstrap.fromBackup` starts only once pod 0's volume holds the
/// backup: the operator creates the claim the StatefulSet will adopt (`data-NAME-0`, same
/// labels, size and class as the template), restores into it with a Job, and only then creates
/// the StatefulSet. Pod 0 then founds the cluster from that data (a new cluster id, every key,
/// revision and lease), and the other members join and copy it from pod 0 as usual. Nothing
/// here runs once the StatefulSet exists.
pub fn restore_plan(
    rc: &RaftCluster,
    names: &Names,
    sts_exists: bool,
    claim0_exists: bool,
    jobs: &[JobView],
) -> Result<RestorePlan, BuildError> {
    let mut out = RestorePlan::default();
    let Some(from) = rc
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.from_backup.as_ref())
    else {
        return Ok(out);
    };
    if sts_exists {
        return Ok(out);
    }
    let job = jobs.iter().find(|j| j.kind == "restore");
    match job.and_then(|j| j.outcome) {
        Some(true) => return Ok(out),
        Some(false) => {
            let j = job.map(|j| (j.name.clone(), j.result.clone(), j.failure.clone()));
            let (name, result, failure) = j.unwrap_or_default();
            let why = result
                .and_then(|r| r.error)
                .or(failure)
                .unwrap_or_else(|| "see kubectl logs".to_owned());
            out.hold = true;
            out.pending = Some((
                "RestoreFailed",
                format!(
                    "restoring {} from {}: Job {name} failed: {why}; delete the Job to retry",
                    from.name,
                    location_url(&from.location)
                ),
            ));
            return Ok(out);
        }
        None => {}
    }
    out.hold = true;
    if !claim0_exists {
        out.apply.push(Owned::Pvc(Box::new(claim0(rc, names)?)));
    }
    if job.is_none() {
        let from_url = location_url(&from.location);
        let (env, volumes, mounts) = location_access(&from.location, true);
        let mut volumes = volumes;
        let mut mounts = mounts;
        volumes.push(json!({"name": "data", "persistentVolumeClaim": {"claimName": names.pvc(0)}}));
        mounts.push(json!({"name": "data", "mountPath": "/var/lib/flotilla"}));
        let script = format!(
            "set -eu\nflotilla backup restore --from {} --cluster {} --name {} --data-dir /var/lib/flotilla/data --result-file /dev/termination-log\n",
            quote(&from_url),
            quote(&from.cluster),
            quote(&from.name)
        );
        out.apply.push(Owned::Job(Box::new(job_for_restore(
            rc, names, script, env, volumes, mounts,
        )?)));
        out.notes.push(Note {
            severity: Severity::Normal,
            reason: "Restoring",
            message: format!(
                "restoring backup {} of {} from {from_url} into {} before the first member starts",
                from.name,
                from.cluster,
                names.pvc(0)
            ),
            subject: None,
        });
    }
    out.pending = Some((
        "Restoring",
        format!(
            "waiting for Job {} to restore {} into {}",
            names.restore_job(),
            from.name,
            names.pvc(0)
        ),
    ));
    Ok(out)
}

fn job_for_restore(
    rc: &RaftCluster,
    names: &Names,
    script: String,
    env: Vec<Value>,
    volumes: Vec<Value>,
    mounts: Vec<Value>,
) -> Result<Job, BuildError> {
    let parts = JobParts {
        script,
        env,
        volumes,
        mounts,
        annotations: BTreeMap::new(),
    };
    job(rc, names, &names.restore_job(), "restore", parts)
}

/// Pod 0's claim, as the StatefulSet's template would make it (so the StatefulSet adopts it).
fn claim0(rc: &RaftCluster, names: &Names) -> Result<PersistentVolumeClaim, BuildError> {
    let s = &rc.spec.storage;
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": s.size}},
    });
    if let Some(c) = &s.storage_class_name {
        spec["storageClassName"] = json!(c);
    }
    // No owner reference: the claims of a StatefulSet outlive it, and this one becomes one.
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": names.pvc(0), "namespace": names.namespace, "labels": selector(names)},
        "spec": spec,
    }))
    .map_err(|source| BuildError::Shape {
        kind: "PersistentVolumeClaim",
        source,
    })
}

#[cfg(test)]
mod tests;
