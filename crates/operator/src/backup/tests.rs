//! The backup and restore rules: schedule, backup-now, one at a time, history, report, and the
//! restore that must finish before the first member starts.

use super::*;
use crate::crd::{PvcLocation, Retention, S3Location};
use crate::resources::tests::cluster;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn s3_spec(schedule: &str) -> BackupSpec {
    BackupSpec {
        schedule: schedule.into(),
        retention: Retention {
            count: Some(5),
            max_age: Some("7d".into()),
        },
        target: BackupLocation {
            s3: Some(S3Location {
                endpoint: Some("http://s3.backup:9000".into()),
                bucket: "bk".into(),
                prefix: Some("flotilla/".into()),
                region: None,
                path_style: true,
                credentials_secret: "s3-creds".into(),
            }),
            pvc: None,
        },
    }
}

fn rc_at(created: &str) -> RaftCluster {
    let mut rc = cluster(3);
    rc.meta_mut().creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        created.parse().expect("ts"),
    ));
    rc
}

fn job_view(name: &str, created: &str, outcome: Option<bool>) -> JobView {
    JobView {
        name: name.into(),
        kind: "backup".into(),
        created: t(created),
        trigger: None,
        outcome,
        result: outcome.map(|ok| JobResult {
            name: format!("{name}.db"),
            location: format!("s3://bk/flotilla/{name}.db"),
            revision: 42,
            size: 1000,
            sha256: "ab".into(),
            finished_at: created.into(),
            error: (!ok).then(|| "connection refused".to_owned()),
        }),
        failure: None,
    }
}

fn jobs_of(p: &BackupPlan) -> Vec<Job> {
    p.apply
        .iter()
        .filter_map(|o| match o {
            Owned::Job(j) => Some((**j).clone()),
            _ => None,
        })
        .collect()
}

fn script(j: &Job) -> String {
    j.spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0]
        .command
        .as_ref()
        .expect("command")[2]
        .clone()
}

#[test]
fn ages_parse() {
    assert_eq!(parse_age("7d"), Some(7 * 86_400));
    assert_eq!(parse_age("36h"), Some(36 * 3_600));
    assert_eq!(parse_age("90m"), Some(5_400));
    assert_eq!(parse_age("7"), None);
    assert_eq!(parse_age("d"), None);
    assert_eq!(parse_age("-1d"), None);
}

#[test]
fn the_schedule_starts_a_job_when_due_and_only_with_a_leader() {
    let rc = rc_at("2026-11-25T10:10:00Z");
    let names = Names::of(&rc).expect("names");
    let spec = s3_spec("0 * * * *");
    let early = plan(&rc, &names, &spec, &[], true, t("2026-11-25T10:59:00Z")).expect("plan");
    assert!(early.apply.is_empty());
    let st = early.status.clone().expect("status");
    assert_eq!(st.next_scheduled.as_deref(), Some("2026-11-25T11:00:00Z"));
    assert_eq!(early.interval_secs, Some(3600));
    assert_eq!(
        early.condition.as_ref().map(|c| (c.0, c.1)),
        Some((false, "NoBackupYet"))
    );

    let now = t("2026-11-25T11:00:05Z");
    assert!(
        plan(&rc, &names, &spec, &[], false, now)
            .expect("plan")
            .apply
            .is_empty(),
        "no backup from a cluster without a leader"
    );
    let due = plan(&rc, &names, &spec, &[], true, now).expect("plan");
    let jobs = jobs_of(&due);
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(
        j.metadata.name.as_deref(),
        Some("demo-backup-20261125110005")
    );
    let s = script(j);
    assert!(s.contains("flotilla backup save --endpoints 'http://demo-0.demo-peer.ns.svc:2379,http://demo-1.demo-peer.ns.svc:2379,http://demo-2.demo-peer.ns.svc:2379'"), "{s}");
    assert!(s.contains("--to 's3://bk/flotilla/'"), "{s}");
    assert!(s.contains("--result-file /dev/termination-log"));
    assert!(s.contains("flotilla backup prune --from 's3://bk/flotilla/' --cluster 'demo' --keep-count 5 --keep-age '7d'"), "{s}");
    let pod = j
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let env = serde_json::to_value(&pod.containers[0].env).expect("env");
    assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "s3-creds");
    assert!(env.to_string().contains("FLOTILLA_S3_PATH_STYLE"));
    let labels = j.metadata.labels.clone().expect("labels");
    assert_eq!(labels[JOB_LABEL], "backup");
    assert_ne!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("flotilla"),
        "a Job's pod must never look like a member"
    );
    let sc = pod.security_context.as_ref().expect("pod security");
    assert_eq!(sc.run_as_user, Some(65532));
    assert!(due.notes.iter().any(|n| n.reason == "BackupStarted"));

    // The Job runs: nothing new, whatever the clock says.
    let running = [job_view(
        "demo-backup-20261125110005",
        "2026-11-25T11:00:05Z",
        None,
    )];
    assert!(
        plan(
            &rc,
            &names,
            &spec,
            &running,
            true,
            t("2026-11-25T12:30:00Z")
        )
        .expect("plan")
        .apply
        .is_empty()
    );
    // Done: the next one is due at 12:00 (counted from the last Job), not again at once.
    let done = [job_view(
        "demo-backup-20261125110005",
        "2026-11-25T11:00:05Z",
        Some(true),
    )];
    let p = plan(&rc, &names, &spec, &done, true, t("2026-11-25T11:30:00Z")).expect("plan");
    assert!(p.apply.is_empty());
    let st = p.status.clone().expect("status");
    assert_eq!(st.next_scheduled.as_deref(), Some("2026-11-25T12:00:00Z"));
    let last = st.last_successful.expect("last");
    assert_eq!((last.revision, last.size), (42, 1000));
    assert_eq!(
        p.condition.as_ref().map(|c| (c.0, c.1)),
        Some((true, "BackupSucceeded"))
    );
    assert_eq!(
        p.last_success_or_since,
        Some(t("2026-11-25T11:00:05Z").timestamp())
    );
}

#[test]
fn backup_now_is_served_once_per_value() {
    let mut rc = rc_at("2026-11-25T10:10:00Z");
    rc.meta_mut().annotations = Some(BTreeMap::from([(BACKUP_NOW.to_owned(), "v1".to_owned())]));
    let names = Names::of(&rc).expect("names");
    let spec = s3_spec("0 0 * * *");
    let now = t("2026-11-25T10:20:00Z");
    let p = plan(&rc, &names, &spec, &[], true, now).expect("plan");
    let jobs = jobs_of(&p);
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].metadata.annotations.as_ref().expect("annotations")[BACKUP_NOW],
        "v1"
    );
    let mut served = job_view(
        "demo-backup-20261125102000",
        "2026-11-25T10:20:00Z",
        Some(true),
    );
    served.trigger = Some("v1".into());
    let again = plan(
        &rc,
        &names,
        &spec,
        &[served.clone()],
        true,
        t("2026-11-25T10:25:00Z"),
    )
    .expect("plan");
    assert!(again.apply.is_empty(), "v1 was served");
    rc.meta_mut().annotations = Some(BTreeMap::from([(BACKUP_NOW.to_owned(), "v2".to_owned())]));
    let next = plan(
        &rc,
        &names,
        &spec,
        &[served],
        true,
        t("2026-11-25T10:26:00Z"),
    )
    .expect("plan");
    assert_eq!(jobs_of(&next).len(), 1, "a new value asks again");
}

#[test]
fn a_failed_backup_is_reported_with_its_reason_and_history_is_trimmed() {
    let rc = rc_at("2026-11-20T00:00:00Z");
    let names = Names::of(&rc).expect("names");
    let spec = s3_spec("0 * * * *");
    let mut jobs: Vec<JobView> = (0..5)
        .map(|h| {
            job_view(
                &format!("ok-{h}"),
                &format!("2026-11-25T0{h}:00:00Z"),
                Some(true),
            )
        })
        .collect();
    jobs.extend((5..9).map(|h| {
        job_view(
            &format!("bad-{h}"),
            &format!("2026-11-25T0{h}:00:00Z"),
            Some(false),
        )
    }));
    let p = plan(&rc, &names, &spec, &jobs, true, t("2026-11-25T08:30:00Z")).expect("plan");
    let (ok, reason, message) = p.condition.clone().expect("condition");
    assert!(!ok);
    assert_eq!(reason, "BackupFailed");
    assert!(
        message.contains("bad-8") && message.contains("connection refused"),
        "{message}"
    );
    assert_eq!(
        p.status.and_then(|s| s.last_successful).map(|r| r.name),
        Some("ok-4.db".to_owned()),
        "the last success is still reported"
    );
    let mut deleted = p.delete.clone();
    deleted.sort();
    assert_eq!(deleted, ["bad-5", "ok-0", "ok-1"]);
}

#[test]
fn tls_clusters_back_up_over_https_with_the_admin_client_certificate_and_pvcs_are_mounted() {
    let mut rc = rc_at("2026-11-25T10:10:00Z");
    rc.spec.tls.mode = TlsMode::Operator;
    let names = Names::of(&rc).expect("names");
    let mut spec = s3_spec("0 * * * *");
    spec.target = BackupLocation {
        s3: None,
        pvc: Some(PvcLocation {
            claim_name: "backups".into(),
            path: Some("prod".into()),
        }),
    };
    let j = save_job(&rc, &names, &spec, "b", None).expect("job");
    let s = script(&j);
    assert!(s.contains("https://demo-0.demo-peer.ns.svc:2379"), "{s}");
    assert!(s.contains("--cacert /etc/flotilla/client/ca.crt --cert /etc/flotilla/client/tls.crt --key /etc/flotilla/client/tls.key"));
    assert!(s.contains("--to 'file:///backup/prod/'"), "{s}");
    let pod =
        serde_json::to_value(j.spec.expect("spec").template.spec.expect("pod")).expect("json");
    let vols = pod["volumes"].to_string();
    assert!(
        vols.contains("demo-client-tls") && vols.contains("\"claimName\":\"backups\""),
        "{vols}"
    );
}

#[test]
fn restore_comes_before_the_first_member_and_a_failure_holds_it() {
    let mut rc = cluster(3);
    rc.spec.bootstrap = Some(crate::crd::BootstrapSpec {
        from_backup: Some(crate::crd::FromBackup {
            location: s3_spec("0 * * * *").target,
            cluster: "old".into(),
            name: "latest".into(),
        }),
    });
    let names = Names::of(&rc).expect("names");
    let p = restore_plan(&rc, &names, false, false, &[]).expect("plan");
    assert!(p.hold);
    let kinds: Vec<&str> = p.apply.iter().map(|o| o.key().0).collect();
    assert_eq!(kinds, ["PersistentVolumeClaim", "Job"]);
    let (claim, job) = match (&p.apply[0], &p.apply[1]) {
        (Owned::Pvc(c), Owned::Job(j)) => (c, j),
        other => panic!("{other:?}"),
    };
    assert_eq!(claim.metadata.name.as_deref(), Some("data-demo-0"));
    assert_eq!(claim.metadata.labels.as_ref(), Some(&selector(&names)));
    let s = script(job);
    assert!(s.contains("flotilla backup restore --from 's3://bk/flotilla/' --cluster 'old' --name 'latest' --data-dir /var/lib/flotilla/data"), "{s}");
    assert_eq!(p.pending.as_ref().map(|x| x.0), Some("Restoring"));

    let mut running = job_view("demo-restore", "2026-11-25T10:00:00Z", None);
    running.kind = "restore".into();
    let p = restore_plan(&rc, &names, false, true, &[running.clone()]).expect("plan");
    assert!(p.hold && p.apply.is_empty(), "one restore Job, never two");

    let mut failed = running.clone();
    failed.outcome = Some(false);
    failed.failure = Some("BackoffLimitExceeded".into());
    let p = restore_plan(&rc, &names, false, true, &[failed]).expect("plan");
    assert!(p.hold && p.apply.is_empty());
    assert_eq!(p.pending.as_ref().map(|x| x.0), Some("RestoreFailed"));

    let mut done = running;
    done.outcome = Some(true);
    let p = restore_plan(&rc, &names, false, true, &[done]).expect("plan");
    assert!(!p.hold && p.pending.is_none());
    assert!(
        !restore_plan(&rc, &names, true, true, &[])
            .expect("plan")
            .hold,
        "nothing to restore once the StatefulSet exists"
    );
}
