//! The reconciler: observe → plan → act, wired into kube-runtime's `Controller`.
//!
//! Why each pass is idempotent and restart-safe: [`reconcile_once`] reads everything it decides
//! from back from the API server and the nodes (never from memory or from `.status`), applies
//! the owned objects with server-side apply (a no-op when nothing changed), and takes at most one
//! membership step, which the next observation either shows done or still asks for. A crash
//! between any two writes leaves a state from which the next pass derives the same or the next
//! step. The only in-memory state is the error back-off counter, which only affects timing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, field, info, info_span, warn};

use crate::Error;
use crate::act;
use crate::backup;
pub use crate::context::Context;
use crate::crd::RaftCluster;
use crate::kube_api::{Actions, KubeApi, Reads};
use crate::metrics::Metrics;
use crate::nodes::{GrpcNodes, NodeClient, PodDns};
use crate::observe::{self, Inputs};
use crate::plan::{self, Plan};
use crate::resources::{self, Names};
use crate::tls::{self, TlsPlan};

/// Requeue soon while something is in progress (a learner catching up, a change committing).
pub const BUSY_REQUEUE: Duration = Duration::from_secs(3);
/// Requeue a settled cluster this often, to notice node-level changes no watch reports.
pub const IDLE_REQUEUE: Duration = Duration::from_secs(30);

/// Back-off after `n` consecutive failures: 1 s, 2 s, 4 s … capped at 5 minutes.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// Reads everything the plan needs.
pub async fn observe<K: Reads, N: NodeClient>(
    rc: &RaftCluster,
    names: &Names,
    ctx: &Context<K, N>,
) -> Result<(plan::Observed, TlsPlan), Error> {
    let ns = &names.namespace;
    let selector = resources::selector_string(names);
    let sts = ctx.kube.statefulset(ns, &names.cluster).await?;
    let pods = ctx.kube.pods(ns, &selector).await?;
    let pvcs = ctx.kube.pvcs(ns, &selector).await?;
    let config_map = ctx.kube.config_map(ns, &names.config_map()).await?;
    // Certificates before the status calls: they are made with the admin client identity.
    let highest_pod = pods
        .iter()
        .filter_map(|p| names.ordinal_of(&p.name_any()))
        .map(|k| k.saturating_add(1))
        .max()
        .unwrap_or(0);
    let members = u32::try_from(rc.spec.replicas.max(sts.as_ref().map_or(1, |s| s.replicas)))
        .unwrap_or(1)
        .max(highest_pod)
        .min(crate::crd::MAX_REPLICAS as u32);
    let tls_inputs = tls::observe(rc, names, members, &ctx.kube).await?;
    let tls_plan = tls::plan(
        rc,
        names,
        members,
        &tls_inputs,
        Timestamp::now().as_second(),
    )?;
    ctx.nodes.use_tls(names, tls_plan.client.clone());
    // Ask every pod that has a container running; those that do not answer are simply absent.
    let ordinals: Vec<u32> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| names.ordinal_of(&p.name_any()))
        .collect();
    let answers = join_all(ordinals.iter().map(|&k| ctx.nodes.status(names, k))).await;
    let mut statuses = BTreeMap::new();
    for (k, a) in ordinals.into_iter().zip(answers) {
        match a {
            Ok(s) => {
                statuses.insert(k, s);
            }
            Err(e) => info!(ordinal = k, error = %e, "node did not answer status"),
        }
    }
    let inputs = Inputs {
        sts,
        pods,
        pvcs,
        config_map,
        statuses,
    };
    Ok((
        observe::observed(rc, names, &inputs, Timestamp::now()),
        tls_plan,
    ))
}

/// One full pass: observe, plan, apply the owned objects, carry out the step, publish Events,
/// write the status. Returns the plan it carried out.
///
/// Nothing that fails stops the pass silently: a refused apply or node call becomes a Warning
/// Event naming the object and the server's message, and the `Reconciled` condition of the
/// status written at the end; the pass then reports the first failure so kube-runtime retries
/// with back-off. When the ConfigMap or the StatefulSet could not be applied, no membership
/// step is taken: the plan assumed they were in place.
pub async fn reconcile_once<K: Reads + Actions, N: NodeClient>(
    rc: &RaftCluster,
    ctx: &Context<K, N>,
) -> Result<Plan, Error> {
    let names = Names::of(rc)?;
    let (observed, tls) = observe(rc, &names, ctx).await?;
    let jobs = if rc.spec.backup.is_some() || rc.spec.bootstrap.is_some() {
        let selector = backup::jobs_selector(&names);
        let jobs = ctx.kube.jobs(&names.namespace, &selector).await?;
        let pods = ctx.kube.pods(&names.namespace, &selector).await?;
        backup::job_views(&jobs, &pods)
    } else {
        Vec::new()
    };
    let restore = backup::restore_plan(
        rc,
        &names,
        observed.sts_replicas.is_some(),
        observed.pvcs.iter().any(|p| p.ordinal == 0),
        &jobs,
    )?;
    let backups = match &rc.spec.backup {
        Some(spec) if !restore.hold => Some(backup::plan(
            rc,
            &names,
            spec,
            &jobs,
            observed.cluster.is_some(),
            chrono::Utc::now(),
        )?),
        _ => None,
    };
    let mut plan = plan::plan(&observed);
    if restore.hold {
        // The plan would found the cluster; the restore comes first.
        plan.notes.clear();
        plan.actions.clear();
        plan.busy = true;
    }
    if !plan.hold {
        plan.notes.extend(tls.notes.iter().cloned());
        plan.notes.extend(restore.notes.iter().cloned());
        plan.notes
            .extend(backups.iter().flat_map(|b| b.notes.iter().cloned()));
    }
    tls::report(&tls, &observed, &mut plan);
    backup::report(backups.as_ref(), &restore, rc, &observed, &mut plan);
    let mut first = tls.apply.clone();
    first.extend(restore.apply.iter().cloned());
    first.extend(backups.iter().flat_map(|b| b.apply.iter().cloned()));
    let side = act::Side {
        first,
        hold_members: restore.hold,
        delete_jobs: backups
            .as_ref()
            .map(|b| b.delete.clone())
            .unwrap_or_default(),
    };
    let failures = act::carry_out(rc, &names, &observed, &plan, &side, ctx).await?;
    if let Some(b) = &backups {
        ctx.metrics.backup(
            &names.namespace,
            &names.cluster,
            b.last_success_or_since,
            b.interval_secs,
        );
    }

    for n in &plan.notes {
        // An Event that cannot be published must not undo or block the step already taken.
        if let Err(e) = ctx.kube.publish(rc, n).await {
            warn!(reason = n.reason, error = %e, "publishing event failed");
        }
    }
    for f in &failures {
        let n = plan::Note {
            severity: plan::Severity::Warning,
            reason: f.reason,
            message: f.message.clone(),
            subject: None,
        };
        if let Err(e) = ctx.kube.publish(rc, &n).await {
            warn!(reason = n.reason, error = %e, "publishing event failed");
        }
    }
    if !failures.is_empty() {
        plan.problems
            .extend(failures.iter().map(|f| (f.reason, f.message.clone())));
        let c = plan::reconciled_condition(&observed, &plan.problems);
        if let Some(old) = plan
            .status
            .conditions
            .iter_mut()
            .find(|x| x.type_ == "Reconciled")
        {
            *old = c;
        }
    }
    ctx.metrics
        .cluster_status(&names.namespace, &names.cluster, &plan.status);
    if rc.status.as_ref() != Some(&plan.status) {
        ctx.kube.patch_status(rc, &plan.status).await?;
    }
    match failures.into_iter().next() {
        Some(f) => Err(f.error),
        None => Ok(plan),
    }
}

/// The kube-runtime reconcile function.
pub async fn reconcile<K: Reads + Actions, N: NodeClient>(
    rc: Arc<RaftCluster>,
    ctx: Arc<Context<K, N>>,
) -> Result<Requeue, Error> {
    let key = format!("{}/{}", rc.namespace().unwrap_or_default(), rc.name_any());
    let span =
        info_span!("reconcile", cluster = %key, phase = field::Empty, actions = field::Empty);
    let started = Instant::now();
    ctx.metrics.reconciliations.inc();
    let result = reconcile_once(&rc, &ctx).instrument(span.clone()).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let plan = result?;
    span.record("phase", field::debug(plan.status.phase));
    span.record("actions", plan.actions.len());
    ctx.failures().remove(&key);
    Ok(Requeue::requeue(if plan.busy {
        BUSY_REQUEUE
    } else {
        IDLE_REQUEUE
    }))
}

/// Requeue with exponential back-off per object.
pub fn error_policy<K, N>(rc: Arc<RaftCluster>, error: &Error, ctx: Arc<Context<K, N>>) -> Requeue {
    let key = format!("{}/{}", rc.namespace().unwrap_or_default(), rc.name_any());
    ctx.metrics.failed(error);
    let n = {
        let mut f = ctx.failures();
        let n = f.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    warn!(cluster = %key, error = %error, attempt = n, "reconcile failed");
    Requeue::requeue(backoff(n))
}

/// Runs the controller until the process is asked to stop. `network_policy` is the default
/// for clusters whose spec does not say; `operator_pods` is the operator's namespace and pod
/// labels, which those policies let reach the client port.
pub async fn run(
    client: Client,
    metrics: Metrics,
    instance: Option<String>,
    network_policy: bool,
    operator_pods: Option<(String, BTreeMap<String, String>)>,
) {
    let ctx = Arc::new(
        Context::new(
            KubeApi::new(client.clone(), instance),
            GrpcNodes::new(PodDns, Duration::from_secs(2), Duration::from_secs(10)),
            metrics,
        )
        .with_network_policy(network_policy, operator_pods),
    );
    let clusters: Api<RaftCluster> = Api::all(client.clone());
    let managed = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        resources::FIELD_MANAGER
    ));
    // Pods belong to the StatefulSet, not to the RaftCluster: map them by their instance label.
    let pod_owner = |p: Pod| {
        let name = p.labels().get("app.kubernetes.io/instance").cloned();
        let ns = p.namespace();
        name.zip(ns)
            .map(|(n, ns)| ObjectRef::<RaftCluster>::new(&n).within(&ns))
    };
    // The RaftCluster triggers a pass only when its generation changes (a spec edit, a
    // `kubectl scale`): the operator's own status writes would otherwise each start the next
    // pass. Changes the spec does not show arrive through the owned objects, the pods and the
    // periodic requeue.
    let (reader, writer) = reflector::store();
    let triggers = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let live = reader.clone();
    let metrics = ctx.metrics.clone();
    Controller::for_stream(triggers, reader)
        .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        .owns(Api::<Job>::all(client.clone()), managed.clone())
        .watches(Api::<Pod>::all(client), managed, pod_owner)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                warn!(error = %e, "controller stream error");
            }
            let clusters = live
                .state()
                .iter()
                .map(|rc| (rc.namespace().unwrap_or_default(), rc.name_any()))
                .collect();
            metrics.retain_clusters(&clusters);
            futures::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(256));
    }
}
