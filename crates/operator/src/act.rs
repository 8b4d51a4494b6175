//! Carrying out a [`Plan`]: applying the owned objects and taking the plan's actions.
//!
//! The plan decides; this module only does, in the plan's order, and records what the server
//! or a node refused as a [`Failure`] (reason, message and error) for the pass to report —
//! a Warning Event, the `Reconciled` condition and kube-runtime's back-off. Two rules of its
//! own, both about safety rather than choice: a refused ConfigMap or StatefulSet apply blocks
//! the actions (the plan assumed them in place), and the first refused action ends the step.

use tracing::{Instrument, info, info_span, warn};

use crate::Error;
use crate::context::Context;
use crate::crd::RaftCluster;
use crate::kube_api::{Actions, Owned, Reads};
use crate::nodes::NodeClient;
use crate::plan::{Action, Observed, Plan};
use crate::resources::{self, Names};

/// What a pass does besides the membership plan: objects that go in before the members'
/// (certificates, a restore's claim and Job, a backup Job), whether the members must wait (a
/// restore is not done), and finished Jobs to delete.
#[derive(Debug, Default)]
pub struct Side {
    /// Applied first, in order.
    pub first: Vec<Owned>,
    /// Apply nothing else and take no action yet.
    pub hold_members: bool,
    /// Finished Jobs to delete.
    pub delete_jobs: Vec<String>,
}

/// Applies the owned objects (unless the plan holds) and, when the ones the pods need went
/// in, takes the plan's actions. Returns what was refused, in order.
pub async fn carry_out<K: Reads + Actions, N: NodeClient>(
    rc: &RaftCluster,
    names: &Names,
    observed: &Observed,
    plan: &Plan,
    side: &Side,
    ctx: &Context<K, N>,
) -> Result<Vec<Failure>, Error> {
    let mut failures = Vec::new();
    if plan.hold {
        return Ok(failures);
    }
    apply_all(&names.namespace, &side.first, ctx, &mut failures).await;
    if side.hold_members || failures.iter().any(|f| f.reason == APPLY_FAILED) {
        return Ok(failures);
    }
    apply_owned(rc, &names.namespace, observed, plan, ctx, &mut failures).await?;
    if !failures.iter().any(|f| f.reason == APPLY_FAILED) {
        take_actions(names, observed, plan, ctx, &mut failures).await;
    }
    for j in &side.delete_jobs {
        if let Err(e) = ctx.kube.delete_job(&names.namespace, j).await {
            warn!(job = %j, error = %e, "deleting an old Job failed");
        }
    }
    Ok(failures)
}

/// The reason of a refused apply of an object the pods need (ConfigMap, StatefulSet).
pub const APPLY_FAILED: &str = "ApplyFailed";

/// A step the server or a node refused: why, for the condition, the Event and the error.
pub struct Failure {
    /// CamelCase reason, for the Event and the `Reconciled` condition.
    pub reason: &'static str,
    /// What was refused and the server's own words.
    pub message: String,
    /// The error, for kube-runtime's back-off.
    pub error: Error,
}

/// The server's own words for a failed call (what the user needs to see), else the error.
fn server_message(e: &Error) -> String {
    match e {
        Error::Kube(kube::Error::Api(s)) if !s.message.is_empty() => s.message.clone(),
        Error::Node(crate::nodes::NodeError::Rpc { endpoint, status }) => {
            format!("{endpoint}: {}", status.message())
        }
        other => other.to_string(),
    }
}

/// Server-side applies every owned object; a refused one is recorded and the others still go.
async fn apply_owned<K: Reads + Actions, N: NodeClient>(
    rc: &RaftCluster,
    ns: &str,
    observed: &Observed,
    plan: &Plan,
    ctx: &Context<K, N>,
    failures: &mut Vec<Failure>,
) -> Result<(), Error> {
    // The StatefulSet keeps the claim template it was created with: Kubernetes refuses to
    // change it, and a changed spec is reported as `StorageImmutable` instead.
    let kept = observed.sts_storage.clone();
    // The ConfigMap before the StatefulSet whose pods read it.
    let mut owned: Vec<Owned> = Vec::new();
    owned.extend([
        Owned::ConfigMap(resources::config_map_forcing(
            rc,
            plan.bootstrapped,
            plan.force_new_cluster.as_deref(),
        )?),
        Owned::Service(resources::peer_service(rc)?),
        Owned::Service(resources::client_service(rc)?),
        Owned::StatefulSet(Box::new(resources::stateful_set(rc, kept.as_ref())?)),
        Owned::PodDisruptionBudget(resources::pod_disruption_budget(rc, plan.budgeted_members)?),
    ]);
    if rc
        .spec
        .network_policy
        .enabled
        .unwrap_or(ctx.network_policy_default)
    {
        owned.push(Owned::NetworkPolicy(resources::network_policy(
            rc,
            ctx.operator_pods.as_ref(),
        )?));
    }
    apply_all(ns, &owned, ctx, failures).await;
    Ok(())
}

/// Server-side applies `objects` in order; a refused one is recorded and the others still go.
async fn apply_all<K: Reads + Actions, N: NodeClient>(
    ns: &str,
    objects: &[Owned],
    ctx: &Context<K, N>,
    failures: &mut Vec<Failure>,
) {
    for o in objects {
        if let Err(e) = ctx.kube.apply(ns, o).await {
            let (kind, name) = o.key();
            let message = format!("applying {kind} {name}: {}", server_message(&e));
            warn!(%message, "apply failed");
            // Only the objects the pods need make the step unsafe to take.
            let reason = match o {
                Owned::ConfigMap(_) | Owned::StatefulSet(_) | Owned::Secret(_) => APPLY_FAILED,
                _ => "ApplyFailedNonBlocking",
            };
            failures.push(Failure {
                reason,
                message,
                error: e,
            });
        }
    }
}

/// Carries out the plan's actions in order; the first refused one ends the step.
async fn take_actions<K: Reads + Actions, N: NodeClient>(
    names: &Names,
    observed: &Observed,
    plan: &Plan,
    ctx: &Context<K, N>,
    failures: &mut Vec<Failure>,
) {
    let ns = &names.namespace;
    // Node calls go to the leader, which the plan only acts on when it exists.
    let leader_ordinal = observed
        .cluster
        .as_ref()
        .and_then(|c| c.members.iter().find(|m| m.id == c.leader_id))
        .and_then(|m| names.ordinal_of(&m.name));
    for a in &plan.actions {
        let span = info_span!("action", action = ?a);
        let r = async {
            info!("carrying out");
            match a {
                Action::ScaleStatefulSet { replicas } => {
                    ctx.kube
                        .scale_statefulset(ns, &names.cluster, *replicas)
                        .await?
                }
                Action::DeletePvc { ordinal } => {
                    ctx.kube.delete_pvc(ns, &names.pvc(*ordinal)).await?
                }
                Action::RestartPod { ordinal } => {
                    ctx.kube.delete_pod(ns, &names.pod(*ordinal)).await?
                }
                Action::Promote { id, .. }
                | Action::Remove { id, .. }
                | Action::TransferLeadership { from: id } => {
                    let Some(via) = leader_ordinal else {
                        return Ok(());
                    };
                    match a {
                        Action::Promote { .. } => ctx.nodes.promote(names, via, *id).await?,
                        Action::Remove { .. } => ctx.nodes.remove(names, via, *id).await?,
                        _ => {
                            ctx.nodes.transfer(names, via, 0).await?;
                        }
                    }
                }
            }
            ctx.metrics.action(a);
            Ok::<(), Error>(())
        }
        .instrument(span)
        .await;
        if let Err(e) = r {
            let message = format!("{}: {}", a.describe(), server_message(&e));
            warn!(%message, "action failed");
            failures.push(Failure {
                reason: match e {
                    Error::Node(_) => "NodeCallFailed",
                    _ => "ActionFailed",
                },
                message,
                error: e,
            });
            return;
        }
    }
}
