//! The status a pass writes: members, phase and conditions, derived from the snapshot and the
//! plan alone. A condition keeps its `lastTransitionTime` while its status holds.

use super::rules::{CATCH_UP_DEADLINE_EXCEEDED, outdated};
use super::{Observed, Plan, hex, quorum};
use crate::crd::{Condition, MemberRole, MemberStatus, Phase, RaftClusterStatus};

/// A condition of `type_`, keeping the previous transition time while its status holds.
pub fn condition(o: &Observed, type_: &str, ok: bool, reason: &str, message: String) -> Condition {
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

/// The status to write: the members as the leader sees them, the phase, and the conditions.
pub(super) fn status(o: &Observed, p: &Plan) -> RaftClusterStatus {
    let s = Summary::of(o, p);
    let conditions = vec![
        available(o, &s),
        progressing(o, p, &s),
        degraded(o, &s),
        quorum_at_risk(o, &s),
        reconciled_condition(o, &p.problems),
        match &p.quorum_lost {
            Some(why) => condition(o, "QuorumLost", true, "VotersGoneForGood", why.clone()),
            None => condition(
                o,
                "QuorumLost",
                false,
                "QuorumRecoverable",
                "no majority of voters is known to be gone for good".to_owned(),
            ),
        },
    ];
    RaftClusterStatus {
        replicas: s.sts,
        ready_replicas: o.pods.iter().filter(|p| p.ready).count() as i32,
        updated_replicas: match &o.update_revision {
            Some(rev) => o
                .pods
                .iter()
                .filter(|pv| (pv.ordinal as i32) < s.sts && pv.revision.as_ref() == Some(rev))
                .count() as i32,
            None => 0,
        },
        selector: o.selector.clone(),
        phase: phase(o, &s),
        leader: s.leader,
        members: s.members,
        observed_generation: o.generation,
        conditions,
        tls: None,
        backup: None,
        // Kept until the next recovery replaces it (crate::plan::recovery sets it).
        last_recovery: p
            .last_recovery
            .clone()
            .or_else(|| o.previous.as_ref().and_then(|s| s.last_recovery.clone())),
    }
}

/// What the phase and the conditions are derived from.
struct Summary {
    members: Vec<MemberStatus>,
    leader: Option<String>,
    voters: usize,
    healthy_voters: usize,
    unhealthy: Vec<String>,
    sts: i32,
    /// Members still on an older pod template.
    stale: usize,
    /// Something is in progress: a planned step, or the StatefulSet or the configuration not
    /// yet at the spec's size.
    scaling: bool,
}

impl Summary {
    fn of(o: &Observed, p: &Plan) -> Summary {
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
        let voter = |m: &&MemberStatus| m.role == MemberRole::Voter;
        let sts = o.sts_replicas.unwrap_or(0);
        Summary {
            voters: members.iter().filter(voter).count(),
            healthy_voters: members.iter().filter(voter).filter(|m| m.healthy).count(),
            unhealthy: members
                .iter()
                .filter(|m| !m.healthy)
                .map(|m| m.name.clone())
                .collect(),
            stale: outdated(o, sts).len(),
            scaling: p.busy || sts != o.desired || members.len() as i32 != sts,
            sts,
            leader,
            members,
        }
    }

    fn has_leader(&self) -> bool {
        self.leader.is_some()
    }

    fn updating(&self) -> bool {
        self.stale > 0
    }
}

fn phase(o: &Observed, s: &Summary) -> Phase {
    if !s.has_leader() && !o.bootstrapped && o.cluster.is_none() {
        Phase::Pending
    } else if !s.has_leader() || !s.unhealthy.is_empty() {
        Phase::Degraded
    } else if s.updating() && s.sts == o.desired {
        Phase::Updating
    } else if s.scaling {
        Phase::Scaling
    } else {
        Phase::Running
    }
}

/// A leader and a quorum of healthy voters: clients can write.
fn available(o: &Observed, s: &Summary) -> Condition {
    let ok = s.has_leader() && s.healthy_voters >= quorum(s.voters.max(1));
    condition(
        o,
        "Available",
        ok,
        if ok {
            "QuorumHealthy"
        } else if s.has_leader() {
            "QuorumLost"
        } else {
            "NoLeader"
        },
        match &s.leader {
            Some(l) => format!(
                "leader {l}; {} of {} voters healthy",
                s.healthy_voters, s.voters
            ),
            None => "no leader is visible to the operator".to_owned(),
        },
    )
}

/// Scaling or updating; False with `CatchUpDeadlineExceeded` when a learner is stuck (as a
/// Deployment's `ProgressDeadlineExceeded`).
fn progressing(o: &Observed, p: &Plan, s: &Summary) -> Condition {
    if let Some((reason, why)) = p
        .problems
        .iter()
        .find(|(r, _)| *r == CATCH_UP_DEADLINE_EXCEEDED)
    {
        return condition(o, "Progressing", false, reason, why.clone());
    }
    let sts = s.sts;
    condition(
        o,
        "Progressing",
        s.scaling,
        if !s.scaling {
            "Stable"
        } else if o.desired > sts {
            "ScalingUp"
        } else if o.desired < sts {
            "ScalingDown"
        } else if s.updating() {
            "RollingUpdate"
        } else {
            "Reconciling"
        },
        if s.updating() {
            format!(
                "{} of {sts} members run the current pod template",
                sts as usize - s.stale
            )
        } else {
            format!(
                "{} of {} members in the configuration, StatefulSet at {sts}",
                s.members.len(),
                o.desired
            )
        },
    )
}

/// No leader, or members the leader has not heard from.
fn degraded(o: &Observed, s: &Summary) -> Condition {
    condition(
        o,
        "Degraded",
        !s.has_leader() || !s.unhealthy.is_empty(),
        if !s.has_leader() {
            "NoLeader"
        } else if s.unhealthy.is_empty() {
            "AllMembersHealthy"
        } else {
            "MembersUnhealthy"
        },
        if !s.has_leader() {
            "no leader is visible to the operator".to_owned()
        } else if s.unhealthy.is_empty() {
            "every member answers the leader".to_owned()
        } else {
            format!("unhealthy: {}", s.unhealthy.join(", "))
        },
    )
}

/// One more failure would lose quorum.
fn quorum_at_risk(o: &Observed, s: &Summary) -> Condition {
    let (voters, healthy) = (s.voters, s.healthy_voters);
    let at_risk = voters > 0 && healthy <= quorum(voters);
    condition(
        o,
        "QuorumAtRisk",
        at_risk,
        if at_risk {
            "NoFailureTolerance"
        } else {
            "FailureTolerant"
        },
        format!(
            "{healthy} healthy voters, quorum {}: tolerates {} more failure(s)",
            quorum(voters.max(1)),
            healthy.saturating_sub(quorum(voters.max(1)))
        ),
    )
}
