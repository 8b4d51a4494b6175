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

use std::collections::BTreeMap;

pub use crate::crd::ordinal_of;
use crate::crd::{RaftClusterStatus, RetentionPolicy};

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
    /// No answer, and its last run ended failing to join: it started on an empty volume (a
    /// member with data never joins) and found no leader to join through. Evidence, for
    /// quorum-loss recovery, that whatever member this pod held has lost its data.
    JoinFailed,
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
    /// Every member that answered, with its own view of its log and configuration (what
    /// quorum-loss recovery decides from when no leader answers).
    pub survivors: Vec<Survivor>,
    /// Seconds each Pending pod has existed, by ordinal.
    pub pending_secs: BTreeMap<u32, u64>,
    /// `spec.recovery`.
    pub recovery: crate::crd::RecoverySpec,
    /// The pod the ConfigMap's `FORCE_NEW_CLUSTER` names: a quorum-loss recovery under way.
    pub forcing: Option<String>,
}

/// A member that answered the operator, as it sees itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// Its ordinal.
    pub ordinal: u32,
    /// Its member id.
    pub id: u64,
    /// Term of its last log entry.
    pub last_term: u64,
    /// Its last log index.
    pub last_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The voters of the configuration it knows: (id, name).
    pub voters: Vec<(u64, String)>,
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
    /// How many members the PodDisruptionBudget counts: the smaller of the spec and the
    /// StatefulSet (a budget sized for members that do not exist yet would forbid every
    /// eviction while growing), at least one.
    pub budgeted_members: i32,
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
    /// A majority of voters is gone for good: what the `QuorumLost` condition says.
    pub quorum_lost: Option<String>,
    /// The member to restart with `--force-new-cluster` (the ConfigMap's `FORCE_NEW_CLUSTER`).
    pub force_new_cluster: Option<String>,
    /// A quorum-loss recovery started by this plan, for `status.lastRecovery`.
    pub last_recovery: Option<crate::crd::RecoveryRecord>,
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

/// Computes the next step. Pure: same snapshot, same plan.
pub fn plan(o: &Observed) -> Plan {
    let mut p = Plan {
        sts_replicas: o.sts_replicas.unwrap_or(1),
        budgeted_members: 1,
        bootstrapped: o.bootstrapped || o.cluster.is_some(),
        actions: Vec::new(),
        notes: Vec::new(),
        status: RaftClusterStatus::default(),
        busy: false,
        hold: false,
        problems: Vec::new(),
        quorum_lost: None,
        force_new_cluster: None,
        last_recovery: None,
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
    p.budgeted_members = o.desired.min(p.sts_replicas).max(1);
    p.status = status(o, &p);
    for n in &mut p.notes {
        n.subject = first_member(&o.name, &n.message);
    }
    p
}

mod recovery;
mod rules;
mod status;

use rules::decide;
pub use rules::{CATCH_UP_DEADLINE_EXCEEDED, UPDATE_LAG_BOUND};
use status::status;
pub use status::{condition, reconciled_condition};

#[cfg(test)]
mod tests;
