//! The membership plan: a pure function from one observed snapshot to the next step.
//!
//! Nothing here remembers anything between calls. Every decision is derived from what the
//! snapshot shows — the spec, the StatefulSet's size, the pods, the claims and the Raft
//! configuration as the leader reports it — so the operator can be killed between any two
//! actions and the next pass picks up where the cluster actually is. That also makes each step
//! idempotent: once an action has taken effect, the snapshot no longer asks for it.
//!
//! The rules, in the order they are checked (the first that applies decides the step):
//! 1. No StatefulSet yet: create it with one pod; pod 0 bootstraps a one-member cluster.
//! 2. No leader visible: change nothing (a configuration change needs a leader), report.
//! 3. A configuration change is still uncommitted: wait — at most one change is ever in flight.
//! 4. A member that belongs to no pod the StatefulSet keeps (ordinal ≥ its size, or a foreign
//!    name): remove it, moving leadership away first if it leads.
//! 5. Shrinking (spec below the StatefulSet's size): take the highest ordinal out of the Raft
//!    configuration first — leadership away, then `RemoveMember` (refused if the voters left
//!    could not form a quorum) — and only once it is gone from the committed configuration lower
//!    the StatefulSet by one. One ordinal per step, so 5 → 1 passes through 4, 3, 2.
//! 6. A pod that came back with an empty volume (its node reports another identity than the
//!    member of its name, or its join was refused because that member still holds its peer
//!    URL — the refusal names the holder, and only that member id is removed, so a stale
//!    refusal can never remove the replacement that joined since): remove the old member id;
//!    the pod then joins again as a new learner. A pod whose node holds an identity the
//!    configuration no longer has (removed while it was away) gets a fresh volume: its claim
//!    and the pod are deleted, and it joins as a new member. A pod already being deleted is
//!    never deleted again.
//! 7. A learner: promote it once it is healthy and caught up — the leader's own judgement,
//!    relative to its progress (the learner has what the leader's log held an election timeout
//!    or two ago), so a learner that keeps pace under sustained writes is promoted even though
//!    it is never within a fixed number of entries when polled — and only if the larger voter
//!    set still has a quorum of healthy voters. A learner still catching up after
//!    `spec.catchUpDeadlineSeconds` is reported (`Progressing=False CatchUpDeadlineExceeded`,
//!    `Reconciled=False`, a Warning Event) and still waited for: a slow member is no reason
//!    to remove one.
//! 8. A pod created from an older template than the StatefulSet's current one (an image or
//!    setting change): restart one member at a time, and only while every member is healthy,
//!    caught up and Ready — so a member already down stops the update instead of becoming
//!    the second one down. Followers first; the leader last, after leadership moved away.
//! 9. Growing (spec above the StatefulSet's size), when every pod is a voter and no claim of a
//!    higher ordinal is still being deleted: raise the StatefulSet by one. The new pod's node
//!    joins itself as a learner (`flotilla node --join`), and rule 7 promotes it.
//! 10. Claims of ordinals the StatefulSet no longer runs are deleted when the policy says so.
//!
//! A spec the operator cannot carry out (see [`crate::crd::RaftClusterSpec::problems`]) holds
//! everything: no object is applied and no member is touched, and the `Reconciled` condition
//! says what is wrong. A changed `spec.storage` is refused alone: the StatefulSet keeps the
//! volumes it has, everything else is applied.
//!
//! Unhealthy members are reported (status condition and a Warning Event) and never replaced
//! on a guess: only the positive evidence of rule 6 replaces a member.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{Condition, MemberRole, MemberStatus, Phase, RaftClusterStatus, RetentionPolicy};

/// Nodes that do not report whether a learner is caught up (older versions): it is promoted
/// once it lags the leader by at most this many entries.
pub const CATCH_UP_BOUND: u64 = 100;

/// What the node on a pod says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdentity {
    /// It answered the admin Status call with this identity.
    Member {
        /// Its member id (0 while it has none).
        id: u64,
        /// Its cluster id.
        cluster_id: u64,
    },
    /// Its last start failed because a member with its peer URL already exists: it has an
    /// empty volume but its old self is still in the configuration. `holder` is the member id
    /// the refusal named (`None` when the message named none).
    JoinRefused {
        /// The member that holds the pod's peer URL.
        holder: Option<u64>,
    },
    /// No answer (starting, crashed, partitioned).
    Unknown,
}

/// One pod of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Its ordinal.
    pub ordinal: u32,
    /// Kubernetes reports it Ready.
    pub ready: bool,
    /// Its container is running (phase Running and not being deleted).
    pub running: bool,
    /// It has a deletion timestamp: deleting it again would change nothing.
    pub deleting: bool,
    /// It is Pending and its claim no longer exists: the StatefulSet controller creates claims
    /// only together with a pod, so this pod would wait forever.
    pub claim_missing: bool,
    /// The Raft term its node reported (0 when it did not answer).
    pub term: u64,
    /// The revision of the StatefulSet template it was created from.
    pub revision: Option<String>,
    /// Seconds its `flotilla` container has been running (`None` when it is not running).
    pub up_secs: Option<u64>,
    /// What its node says.
    pub node: NodeIdentity,
}

/// One claim of the StatefulSet's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcView {
    /// Its ordinal.
    pub ordinal: u32,
    /// It has a deletion timestamp.
    pub terminating: bool,
}

/// One member of the Raft configuration, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Member id.
    pub id: u64,
    /// Member name (the pod name).
    pub name: String,
    /// Learner (non-voting).
    pub is_learner: bool,
    /// The leader heard from it within an election timeout.
    pub healthy: bool,
    /// Highest index known replicated on it.
    pub match_index: u64,
    /// Entries behind the leader.
    pub lag: u64,
    /// The leader would accept its promotion now: it keeps pace with the leader's log (it has
    /// what the leader had an election timeout or two ago), whatever the write rate.
    pub caught_up: bool,
}

/// The leader's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Cluster id.
    pub cluster_id: u64,
    /// The leader's member id.
    pub leader_id: u64,
    /// The leader's term.
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Index of the latest appended configuration change (0 if none).
    pub pending_conf_index: u64,
    /// The configuration.
    pub members: Vec<MemberView>,
}

/// Everything one reconcile pass knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The RaftCluster's name; members are called `<name>-<ordinal>`.
    pub name: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub desired: i32,
    /// `spec.storage.retentionOnScaleDown`.
    pub retention: RetentionPolicy,
    /// `spec.catchUpDeadlineSeconds`.
    pub catch_up_deadline_secs: u64,
    /// `spec.replicas` of the StatefulSet, if it exists.
    pub sts_replicas: Option<i32>,
    /// The StatefulSet's pods.
    pub pods: Vec<PodView>,
    /// The claims of its template.
    pub pvcs: Vec<PvcView>,
    /// The ConfigMap already says the cluster was bootstrapped.
    pub bootstrapped: bool,
    /// The leader's view, when a leader answered.
    pub cluster: Option<ClusterView>,
    /// The previous status (only to keep conditions' transition times).
    pub previous: Option<RaftClusterStatus>,
    /// Now, RFC 3339 (for new condition transitions).
    pub now: String,
    /// The pod selector string for the scale subresource.
    pub selector: String,
    /// Applied index by member id, from the members that answered the operator themselves.
    pub applied: BTreeMap<u64, u64>,
    /// What makes the spec impossible to carry out (empty when it is valid).
    pub spec_problems: Vec<String>,
    /// A change of `spec.storage` that the StatefulSet cannot take, described for the user.
    pub storage_change: Option<String>,
    /// The storage of the existing StatefulSet's claim template.
    pub sts_storage: Option<crate::resources::ClaimStorage>,
    /// The StatefulSet's current template revision.
    pub update_revision: Option<String>,
}

/// A membership or workload action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the StatefulSet's replicas.
    ScaleStatefulSet {
        /// New size.
        replicas: i32,
    },
    /// Promote a learner.
    Promote {
        /// Member id.
        id: u64,
        /// Member name.
        name: String,
    },
    /// Remove a member from the configuration.
    Remove {
        /// Member id.
        id: u64,
        /// Member name.
        name: String,
    },
    /// Ask the leader to hand leadership to its most up-to-date other voter.
    TransferLeadership {
        /// The current leader's id.
        from: u64,
    },
    /// Delete a claim.
    DeletePvc {
        /// Ordinal whose claim goes.
        ordinal: u32,
    },
    /// Delete a pod so its crash-loop back-off does not delay a rejoin.
    RestartPod {
        /// Ordinal.
        ordinal: u32,
    },
}

impl Action {
    /// A short description for Events and logs.
    pub fn describe(&self) -> String {
        match self {
            Action::ScaleStatefulSet { replicas } => {
                format!("scaling the StatefulSet to {replicas}")
            }
            Action::Promote { id, name } => format!("promoting {name} ({})", hex(*id)),
            Action::Remove { id, name } => format!("removing {name} ({})", hex(*id)),
            Action::TransferLeadership { from } => {
                format!("moving leadership off {}", hex(*from))
            }
            Action::DeletePvc { ordinal } => format!("deleting the claim of ordinal {ordinal}"),
            Action::RestartPod { ordinal } => format!("deleting the pod of ordinal {ordinal}"),
        }
    }

    /// Whether this action changes the Raft configuration.
    pub fn is_membership_change(&self) -> bool {
        matches!(self, Action::Promote { .. } | Action::Remove { .. })
    }
}

/// Severity of a planned Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Informational.
    Normal,
    /// Needs a human's attention.
    Warning,
}

/// A Kubernetes Event the reconciler publishes about a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable text.
    pub message: String,
    /// The member (pod) the Event is about, when it is about one. It becomes the Event's
    /// `related` object — which also keeps Events of one reason about different members
    /// apart: the Event recorder folds Events with the same reason and objects into one
    /// series that shows only the first message.
    pub subject: Option<String>,
}

/// The outcome of one planning pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The StatefulSet size to apply (unchanged unless a scale step is planned).
    pub sts_replicas: i32,
    /// Whether the ConfigMap should say the cluster was bootstrapped (sticky).
    pub bootstrapped: bool,
    /// Actions, in order. At most one of them is a membership change.
    pub actions: Vec<Action>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// The status to write.
    pub status: RaftClusterStatus,
    /// Come back soon: something is in progress.
    pub busy: bool,
    /// The spec is invalid: apply nothing, act on nothing.
    pub hold: bool,
    /// Why the spec cannot be (fully) carried out: reason and message, for the `Reconciled`
    /// condition.
    pub problems: Vec<(&'static str, String)>,
}

/// Voters needed for a quorum of `n` voters.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

fn note(severity: Severity, reason: &'static str, message: String) -> Note {
    Note {
        severity,
        reason,
        message,
        subject: None,
    }
}

/// The first member name (`<cluster>-<ordinal>`) a message mentions.
fn first_member(cluster: &str, message: &str) -> Option<String> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .map(|w| w.trim_end_matches('.'))
        .find(|w| ordinal_of(cluster, w).is_some())
        .map(str::to_owned)
}

fn ordinal_of(cluster: &str, member: &str) -> Option<u32> {
    let rest = member.strip_prefix(cluster)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Computes the next step. Pure: same snapshot, same plan.
pub fn plan(o: &Observed) -> Plan {
    let mut p = Plan {
        sts_replicas: o.sts_replicas.unwrap_or(1),
        bootstrapped: o.bootstrapped || o.cluster.is_some(),
        actions: Vec::new(),
        notes: Vec::new(),
        status: RaftClusterStatus::default(),
        busy: false,
        hold: false,
        problems: Vec::new(),
    };
    if !o.spec_problems.is_empty() {
        let why = o.spec_problems.join("; ");
        p.hold = true;
        p.notes.push(note(
            Severity::Warning,
            "InvalidSpec",
            format!("{why}; nothing was changed"),
        ));
        p.problems
            .push(("InvalidSpec", format!("{why}; nothing was changed")));
        p.status = status(o, &p);
        return p;
    }
    if let Some(change) = &o.storage_change {
        p.notes
            .push(note(Severity::Warning, "StorageImmutable", change.clone()));
        p.problems.push(("StorageImmutable", change.clone()));
    }
    if o.desired % 2 == 0 {
        p.notes.push(note(
            Severity::Warning,
            "EvenReplicas",
            format!(
                "{} members tolerate no more failures than {}; odd sizes are recommended",
                o.desired,
                o.desired - 1
            ),
        ));
    }
    decide(o, &mut p);
    p.status = status(o, &p);
    for n in &mut p.notes {
        n.subject = first_member(&o.name, &n.message);
    }
    p
}

fn decide(o: &Observed, p: &mut Plan) {
    // Rule 1.
    let Some(sts) = o.sts_replicas else {
        p.sts_replicas = 1;
        p.busy = true;
        p.notes.push(note(
            Severity::Normal,
            "Bootstrapping",
            format!("creating {}-0, which starts a one-member cluster", o.name),
        ));
        return;
    };
    // Rule 2.
    let Some(c) = &o.cluster else {
        p.busy = true;
        return;
    };
    // Rule 3.
    if c.pending_conf_index > c.commit_index {
        p.busy = true;
        return;
    }
    let leader = c.leader_id;
    let voters: Vec<&MemberView> = c.members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voters = |except: Option<u64>| {
        voters
            .iter()
            .filter(|m| m.healthy && Some(m.id) != except)
            .count()
    };
    let by_ordinal = |k: u32| {
        c.members
            .iter()
            .find(|m| ordinal_of(&o.name, &m.name) == Some(k))
    };
    let pod = |k: u32| o.pods.iter().find(|p| p.ordinal == k);

    // Removing `m` must leave a quorum of healthy voters in the smaller configuration, and the
    // leader must not be the one removed (it could not commit its own removal safely).
    let remove = |p: &mut Plan, m: &MemberView, reason: &'static str, why: String| {
        p.busy = true;
        if m.id == leader {
            if voters.len() < 2 {
                p.notes.push(note(
                    Severity::Warning,
                    "CannotRemoveLastVoter",
                    format!("{} is the only voter", m.name),
                ));
                return;
            }
            p.actions.push(Action::TransferLeadership { from: leader });
            p.notes.push(note(
                Severity::Normal,
                "TransferringLeadership",
                format!("moving leadership off {} before removing it", m.name),
            ));
            return;
        }
        if !m.is_learner {
            let left = voters.len() - 1;
            if healthy_voters(Some(m.id)) < quorum(left) {
                p.notes.push(note(
                    Severity::Warning,
                    "RemovalWouldLoseQuorum",
                    format!(
                        "not removing {}: {} healthy voters would remain of {left}, quorum is {}",
                        m.name,
                        healthy_voters(Some(m.id)),
                        quorum(left)
                    ),
                ));
                return;
            }
        }
        p.actions.push(Action::Remove {
            id: m.id,
            name: m.name.clone(),
        });
        p.notes.push(note(
            Severity::Normal,
            reason,
            format!("removing {} ({}): {why}", m.name, hex(m.id)),
        ));
    };

    // Rule 4.
    if let Some(m) = c
        .members
        .iter()
        .find(|m| ordinal_of(&o.name, &m.name).is_none_or(|k| k as i32 >= sts))
    {
        remove(
            p,
            m,
            "RemovingStrayMember",
            "no pod of the StatefulSet carries it".into(),
        );
        return;
    }

    // Rule 5.
    if o.desired < sts {
        let k = (sts - 1) as u32;
        match by_ordinal(k) {
            Some(m) => remove(
                p,
                m,
                "ScalingDown",
                format!("shrinking towards {}", o.desired),
            ),
            None => {
                p.busy = true;
                p.sts_replicas = sts - 1;
                p.actions
                    .push(Action::ScaleStatefulSet { replicas: sts - 1 });
                p.notes.push(note(
                    Severity::Normal,
                    "ScalingDown",
                    format!(
                        "{} left the configuration; StatefulSet to {}",
                        o.name.clone() + "-" + &k.to_string(),
                        sts - 1
                    ),
                ));
            }
        }
        return;
    }

    // Rule 6.
    for k in 0..sts as u32 {
        let (Some(m), Some(pv)) = (by_ordinal(k), pod(k)) else {
            continue;
        };
        let lost = match pv.node {
            NodeIdentity::JoinRefused { holder } => holder == Some(m.id),
            NodeIdentity::Member { id, cluster_id } => {
                // id 0: the node is still waiting for its join; a voter or a member that has
                // received entries cannot be that — its volume was wiped.
                (id != 0 && (id != m.id || cluster_id != c.cluster_id))
                    || (id == 0 && (!m.is_learner || m.match_index > 0))
            }
            NodeIdentity::Unknown => false,
        };
        if lost {
            remove(
                p,
                m,
                "ReplacingMember",
                "its pod came back with an empty volume; it will rejoin as a new member".into(),
            );
            return;
        }
    }
    // A pod whose join was refused while its old member was still listed, and whose old member
    // is gone now: restart it rather than wait out its crash-loop back-off.
    let in_config = |id: u64| c.members.iter().any(|m| m.id == id);
    for k in 0..sts as u32 {
        if let Some(pv) = pod(k)
            && let NodeIdentity::JoinRefused { holder } = pv.node
            && !pv.deleting
            && holder.is_none_or(|h| !in_config(h))
            && by_ordinal(k).is_none()
        {
            p.busy = true;
            p.actions.push(Action::RestartPod { ordinal: k });
            p.notes.push(note(
                Severity::Normal,
                "RestartingPod",
                format!("{}-{k} may join now", o.name),
            ));
            return;
        }
    }

    // A pod whose node holds an identity the configuration no longer has: it was removed while
    // it was away (or the volume is another cluster's). Its volume is of no use to anyone; a
    // fresh one lets it join as a new member. The term check keeps a leader that lost its
    // leadership (and may not know of members added since) from passing this judgement.
    for k in 0..sts as u32 {
        let Some(pv) = pod(k) else { continue };
        let NodeIdentity::Member { id, cluster_id } = pv.node else {
            continue;
        };
        let foreign = id != 0
            && pv.term <= c.term
            && (cluster_id != c.cluster_id || !in_config(id))
            && by_ordinal(k).is_none();
        if !foreign || pv.deleting {
            continue;
        }
        p.busy = true;
        if !o.pvcs.iter().any(|v| v.ordinal == k && v.terminating) {
            p.actions.push(Action::DeletePvc { ordinal: k });
        }
        p.actions.push(Action::RestartPod { ordinal: k });
        p.notes.push(note(
            Severity::Warning,
            "ReplacingRemovedMember",
            format!(
                "{}-{k} holds member {} of cluster {}, which the configuration no longer has; \
                 deleting its volume so it joins again as a new member",
                o.name,
                hex(id),
                hex(cluster_id)
            ),
        ));
        return;
    }
    // A pod that waits for a claim that is gone (deleted while the pod was being replaced):
    // only a new pod makes the StatefulSet controller create the claim again.
    if let Some(pv) = o.pods.iter().find(|p| p.claim_missing && !p.deleting) {
        p.busy = true;
        p.actions.push(Action::RestartPod {
            ordinal: pv.ordinal,
        });
        p.notes.push(note(
            Severity::Normal,
            "RecreatingPod",
            format!(
                "{}-{} waits for a volume claim that no longer exists; deleting the pod so the \
                 StatefulSet creates both again",
                o.name, pv.ordinal
            ),
        ));
        return;
    }

    // Rule 7.
    if let Some(l) = c.members.iter().find(|m| m.is_learner) {
        p.busy = true;
        if !l.healthy || !l.caught_up {
            catch_up_deadline(o, p, l);
            return;
        }
        let n = voters.len() + 1;
        if healthy_voters(None) + 1 < quorum(n) {
            p.notes.push(note(
                Severity::Warning,
                "PromotionWouldLoseQuorum",
                format!(
                    "not promoting {}: only {} voters are healthy",
                    l.name,
                    healthy_voters(None)
                ),
            ));
            return;
        }
        p.actions.push(Action::Promote {
            id: l.id,
            name: l.name.clone(),
        });
        p.notes.push(note(
            Severity::Normal,
            "PromotingLearner",
            format!("{} ({}) caught up (lag {})", l.name, hex(l.id), l.lag),
        ));
        return;
    }

    // Unhealthy members: report, never replace on a guess.
    for m in c.members.iter().filter(|m| !m.healthy) {
        p.notes.push(note(
            Severity::Warning,
            "MemberUnhealthy",
            format!(
                "{} ({}) has not answered the leader recently",
                m.name,
                hex(m.id)
            ),
        ));
    }

    // Pods whose member has not appeared yet: their node is joining.
    let all_voters = (0..sts as u32).all(|k| by_ordinal(k).is_some_and(|m| !m.is_learner));
    if !all_voters {
        p.busy = true;
        return;
    }

    // Rule 8: a rolling update (the StatefulSet is `OnDelete`; the operator restarts pods).
    if rolling_update(o, c, sts, p) {
        return;
    }

    // Rule 9.
    if o.desired > sts {
        if o.pvcs
            .iter()
            .any(|v| v.terminating && v.ordinal as i32 >= sts)
        {
            p.busy = true;
            return;
        }
        // A claim left from an earlier scale-in holds a removed member's data: a pod started on
        // it could not rejoin. With `Delete` it goes first (rule 9 may not have run yet when
        // the cluster grows again right after shrinking); with `Retain`, refuse and say what
        // the user can do.
        if let Some(v) = o.pvcs.iter().find(|v| v.ordinal as i32 == sts) {
            p.busy = true;
            if o.retention == RetentionPolicy::Delete {
                p.actions.push(Action::DeletePvc { ordinal: v.ordinal });
                p.notes.push(note(
                    Severity::Normal,
                    "DeletingVolume",
                    format!(
                        "data-{}-{sts} is left from an earlier scale-in; deleting it before \
                         adding {}-{sts} as a new member",
                        o.name, o.name
                    ),
                ));
                return;
            }
            let why = format!(
                "not adding {}-{sts}: its volume claim data-{}-{sts} was kept from an earlier \
                 scale-in (retentionOnScaleDown: Retain) and holds a removed member's data; \
                 delete the claim to let the cluster grow",
                o.name, o.name
            );
            debug_assert!(!v.terminating);
            p.notes
                .push(note(Severity::Warning, "StaleVolumeRetained", why.clone()));
            p.problems.push(("StaleVolumeRetained", why));
            return;
        }
        p.busy = true;
        p.sts_replicas = sts + 1;
        p.actions
            .push(Action::ScaleStatefulSet { replicas: sts + 1 });
        p.notes.push(note(
            Severity::Normal,
            "ScalingUp",
            format!("adding {}-{sts} (growing towards {})", o.name, o.desired),
        ));
        return;
    }

    // Rule 10.
    if o.retention == RetentionPolicy::Delete {
        let running: BTreeSet<u32> = o.pods.iter().map(|p| p.ordinal).collect();
        for v in &o.pvcs {
            if v.ordinal as i32 >= sts && !v.terminating && !running.contains(&v.ordinal) {
                p.actions.push(Action::DeletePvc { ordinal: v.ordinal });
                p.notes.push(note(
                    Severity::Normal,
                    "DeletingVolume",
                    format!(
                        "{}-{} left the cluster; deleting its claim",
                        o.name, v.ordinal
                    ),
                ));
            }
        }
    }
}

/// A member may be restarted for an update only while every member is at most this many
/// entries behind the leader: a member further behind is still catching up (or receiving a
/// snapshot) and would be the second one down.
pub const UPDATE_LAG_BOUND: u64 = 1_000;

/// Ordinals whose pod runs an older template than the StatefulSet's current one.
fn outdated(o: &Observed, sts: i32) -> Vec<u32> {
    let Some(rev) = &o.update_revision else {
        return Vec::new();
    };
    o.pods
        .iter()
        .filter(|pv| (pv.ordinal as i32) < sts)
        .filter(|pv| pv.revision.as_ref().is_some_and(|r| r != rev))
        .map(|pv| pv.ordinal)
        .collect()
}

/// Rule 8: restarts the next outdated member when that is safe; true when the update is
/// under way (this pass's step is decided).
fn rolling_update(o: &Observed, c: &ClusterView, sts: i32, p: &mut Plan) -> bool {
    let outdated = outdated(o, sts);
    if outdated.is_empty() {
        return false;
    }
    p.busy = true;
    let name = |k: u32| format!("{}-{k}", o.name);
    let leader = c.members.iter().find(|m| m.id == c.leader_id);
    let leader_ordinal = leader.and_then(|m| ordinal_of(&o.name, &m.name));
    // Followers first, highest ordinal first; the leader last.
    let next = outdated
        .iter()
        .rev()
        .copied()
        .find(|&k| Some(k) != leader_ordinal)
        .unwrap_or(outdated[0]);
    let mut blockers: Vec<String> = (0..sts as u32)
        .filter(|&k| {
            !o.pods
                .iter()
                .any(|pv| pv.ordinal == k && pv.ready && pv.running && !pv.deleting)
        })
        .map(|k| format!("{} is not ready", name(k)))
        .collect();
    blockers.extend(
        c.members
            .iter()
            .filter(|m| !m.healthy || m.lag > UPDATE_LAG_BOUND)
            .map(|m| {
                if m.healthy {
                    format!("{} is {} entries behind", m.name, m.lag)
                } else {
                    format!("{} does not answer the leader", m.name)
                }
            }),
    );
    if !blockers.is_empty() {
        blockers.dedup();
        p.notes.push(note(
            Severity::Normal,
            "UpdateWaiting",
            format!(
                "not restarting {} for the new pod template yet: {}",
                name(next),
                blockers.join(", ")
            ),
        ));
        return true;
    }
    let voters = c.members.iter().filter(|m| !m.is_learner).count();
    if Some(next) == leader_ordinal && voters >= 2 {
        p.actions
            .push(Action::TransferLeadership { from: c.leader_id });
        p.notes.push(note(
            Severity::Normal,
            "TransferringLeadership",
            format!(
                "moving leadership off {} before restarting it for the new pod template",
                name(next)
            ),
        ));
        return true;
    }
    let updated = sts as usize - outdated.len();
    p.actions.push(Action::RestartPod { ordinal: next });
    p.notes.push(note(
        Severity::Normal,
        "RestartingForUpdate",
        format!(
            "restarting {} for the new pod template ({updated} of {sts} updated)",
            name(next)
        ),
    ));
    true
}

/// Reports a learner that has been catching up for longer than the spec allows. The time is
/// its pod's: a learner joins when its container starts.
fn catch_up_deadline(o: &Observed, p: &mut Plan, l: &MemberView) {
    let Some(up) = ordinal_of(&o.name, &l.name)
        .and_then(|k| o.pods.iter().find(|pv| pv.ordinal == k))
        .and_then(|pv| pv.up_secs)
    else {
        return;
    };
    if up <= o.catch_up_deadline_secs {
        return;
    }
    let why = format!(
        "{} ({}) has been catching up for {up} s, past spec.catchUpDeadlineSeconds ({} s): \
         it is {} entries behind the leader{}; it stays a learner until it keeps pace",
        l.name,
        hex(l.id),
        o.catch_up_deadline_secs,
        l.lag,
        if l.healthy {
            ""
        } else {
            " and does not answer it"
        }
    );
    p.notes.push(note(
        Severity::Warning,
        CATCH_UP_DEADLINE_EXCEEDED,
        why.clone(),
    ));
    p.problems.push((CATCH_UP_DEADLINE_EXCEEDED, why));
}

/// The reason of the condition and Event that report a learner stuck catching up.
pub const CATCH_UP_DEADLINE_EXCEEDED: &str = "CatchUpDeadlineExceeded";

fn condition(o: &Observed, type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    let status = if ok { "True" } else { "False" }.to_owned();
    let last = o
        .previous
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| o.now.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        last_transition_time: Some(last),
        observed_generation: o.generation,
    }
}

/// The `Reconciled` condition: True when the last pass carried out the spec, False with the
/// first problem's reason and every problem's message otherwise (an invalid spec, a refused
/// storage change, a stale retained volume, an API call the server refused).
pub fn reconciled_condition(o: &Observed, problems: &[(&'static str, String)]) -> Condition {
    match problems.first() {
        None => condition(
            o,
            "Reconciled",
            true,
            "ReconcileSucceeded",
            "the spec is carried out".to_owned(),
        ),
        Some((reason, _)) => condition(
            o,
            "Reconciled",
            false,
            reason,
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn status(o: &Observed, p: &Plan) -> RaftClusterStatus {
    let members: Vec<MemberStatus> = o
        .cluster
        .iter()
        .flat_map(|c| &c.members)
        .map(|m| MemberStatus {
            name: m.name.clone(),
            id: hex(m.id),
            role: if m.is_learner {
                MemberRole::Learner
            } else {
                MemberRole::Voter
            },
            healthy: m.healthy,
            match_index: m.match_index,
            lag: m.lag,
            applied_index: o.applied.get(&m.id).copied(),
        })
        .collect();
    let leader = o
        .cluster
        .as_ref()
        .and_then(|c| c.members.iter().find(|m| m.id == c.leader_id))
        .map(|m| m.name.clone());
    let voters = members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .count();
    let healthy_voters = members
        .iter()
        .filter(|m| m.role == MemberRole::Voter && m.healthy)
        .count();
    let unhealthy: Vec<&str> = members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.as_str())
        .collect();
    let sts = o.sts_replicas.unwrap_or(0);
    let stale = outdated(o, sts).len();
    let updating = stale > 0;
    let scaling = p.busy || sts != o.desired || members.len() as i32 != sts;
    let has_leader = leader.is_some();

    let phase = if !has_leader && !o.bootstrapped && o.cluster.is_none() {
        Phase::Pending
    } else if !has_leader || !unhealthy.is_empty() {
        Phase::Degraded
    } else if updating && sts == o.desired {
        Phase::Updating
    } else if scaling {
        Phase::Scaling
    } else {
        Phase::Running
    };

    let available = has_leader && healthy_voters >= quorum(voters.max(1));
    let mut conditions = vec![
        condition(
            o,
            "Available",
            available,
            if available {
                "QuorumHealthy"
            } else if has_leader {
                "QuorumLost"
            } else {
                "NoLeader"
            },
            match &leader {
                Some(l) => format!("leader {l}; {healthy_voters} of {voters} voters healthy"),
                None => "no leader is visible to the operator".to_owned(),
            },
        ),
        match p
            .problems
            .iter()
            .find(|(r, _)| *r == CATCH_UP_DEADLINE_EXCEEDED)
        {
            Some((reason, why)) => condition(o, "Progressing", false, reason, why.clone()),
            None => condition(
                o,
                "Progressing",
                scaling,
                if !scaling {
                    "Stable"
                } else if o.desired > sts {
                    "ScalingUp"
                } else if o.desired < sts {
                    "ScalingDown"
                } else if updating {
                    "RollingUpdate"
                } else {
                    "Reconciling"
                },
                if updating {
                    format!(
                        "{} of {sts} members run the current pod template",
                        sts as usize - stale
                    )
                } else {
                    format!(
                        "{} of {} members in the configuration, StatefulSet at {sts}",
                        members.len(),
                        o.desired
                    )
                },
            ),
        },
        condition(
            o,
            "Degraded",
            !has_leader || !unhealthy.is_empty(),
            if !has_leader {
                "NoLeader"
            } else if unhealthy.is_empty() {
                "AllMembersHealthy"
            } else {
                "MembersUnhealthy"
            },
            if !has_leader {
                "no leader is visible to the operator".to_owned()
            } else if unhealthy.is_empty() {
                "every member answers the leader".to_owned()
            } else {
                format!("unhealthy: {}", unhealthy.join(", "))
            },
        ),
    ];
    // One more failure would lose quorum.
    let at_risk = voters > 0 && healthy_voters <= quorum(voters);
    conditions.push(condition(
        o,
        "QuorumAtRisk",
        at_risk,
        if at_risk {
            "NoFailureTolerance"
        } else {
            "FailureTolerant"
        },
        format!(
            "{healthy_voters} healthy voters, quorum {}: tolerates {} more failure(s)",
            quorum(voters.max(1)),
            healthy_voters.saturating_sub(quorum(voters.max(1)))
        ),
    ));

    conditions.push(reconciled_condition(o, &p.problems));

    RaftClusterStatus {
        replicas: sts,
        ready_replicas: o.pods.iter().filter(|p| p.ready).count() as i32,
        updated_replicas: match &o.update_revision {
            Some(rev) => o
                .pods
                .iter()
                .filter(|pv| (pv.ordinal as i32) < sts && pv.revision.as_ref() == Some(rev))
                .count() as i32,
            None => 0,
        },
        selector: o.selector.clone(),
        leader,
        members,
        phase,
        observed_generation: o.generation,
        conditions,
    }
}

#[cfg(test)]
mod tests;
