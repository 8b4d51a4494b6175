//! The rules of [`super::plan`], one function each, in the order the module doc of `plan`
//! lists them. Each rule looks at the [`Pass`] and either decides this pass's step (it fills
//! the [`Plan`] and returns `true`: later rules are not asked) or leaves it to the next.
//! Rules 1–3 need no leader view and are checked in [`decide`] itself.

use std::collections::BTreeSet;

use super::{
    Action, ClusterView, MemberView, NodeIdentity, Observed, Plan, Severity, hex, note, ordinal_of,
    quorum,
};
use crate::crd::RetentionPolicy;

/// A member may be restarted for an update only while every member is at most this many
/// entries behind the leader: a member further behind is still catching up (or receiving a
/// snapshot) and would be the second one down.
pub const UPDATE_LAG_BOUND: u64 = 1_000;

/// The reason of the condition and Event that report a learner stuck catching up.
pub const CATCH_UP_DEADLINE_EXCEEDED: &str = "CatchUpDeadlineExceeded";

/// What every rule reads: the snapshot, the leader's view and the StatefulSet's size.
struct Pass<'a> {
    o: &'a Observed,
    c: &'a ClusterView,
    sts: i32,
    voters: Vec<&'a MemberView>,
}

/// A rule: `true` when it decided this pass's step.
type Rule = fn(&Pass<'_>, &mut Plan) -> bool;

/// Rules 4–10, in order.
const RULES: [Rule; 12] = [
    remove_stray_member,
    shrink,
    replace_member_with_empty_volume,
    restart_refused_join,
    replace_removed_identity,
    recreate_pod_without_claim,
    promote_learner,
    report_unhealthy_members,
    wait_for_joining_pods,
    rolling_update,
    grow,
    delete_leftover_claims,
];

/// Fills `p` with the next step.
pub(super) fn decide(o: &Observed, p: &mut Plan) {
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
    // Rule 2 (and quorum-loss recovery, which is about exactly this case).
    let Some(c) = &o.cluster else {
        p.busy = true;
        super::recovery::quorum_lost(o, p);
        return;
    };
    // Rule 3.
    if c.pending_conf_index > c.commit_index {
        p.busy = true;
        return;
    }
    let pass = Pass {
        o,
        c,
        sts,
        voters: c.members.iter().filter(|m| !m.is_learner).collect(),
    };
    for rule in RULES {
        if rule(&pass, p) {
            return;
        }
    }
}

impl Pass<'_> {
    fn healthy_voters(&self, except: Option<u64>) -> usize {
        self.voters
            .iter()
            .filter(|m| m.healthy && Some(m.id) != except)
            .count()
    }

    fn member_at(&self, k: u32) -> Option<&MemberView> {
        self.c
            .members
            .iter()
            .find(|m| ordinal_of(&self.o.name, &m.name) == Some(k))
    }

    fn pod(&self, k: u32) -> Option<&super::PodView> {
        self.o.pods.iter().find(|p| p.ordinal == k)
    }

    fn in_config(&self, id: u64) -> bool {
        self.c.members.iter().any(|m| m.id == id)
    }

    fn ordinals(&self) -> impl Iterator<Item = u32> {
        0..self.sts as u32
    }

    /// Plans the removal of `m`. Removing it must leave a quorum of healthy voters in the
    /// smaller configuration, and the leader is never the one removed (it could not commit its
    /// own removal safely): leadership moves away first.
    fn remove(&self, p: &mut Plan, m: &MemberView, reason: &'static str, why: String) {
        p.busy = true;
        let leader = self.c.leader_id;
        if m.id == leader {
            if self.voters.len() < 2 {
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
            let left = self.voters.len() - 1;
            let healthy = self.healthy_voters(Some(m.id));
            if healthy < quorum(left) {
                p.notes.push(note(
                    Severity::Warning,
                    "RemovalWouldLoseQuorum",
                    format!(
                        "not removing {}: {healthy} healthy voters would remain of {left}, \
                         quorum is {}",
                        m.name,
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
    }
}

/// Rule 4: a member no pod of the StatefulSet carries goes.
fn remove_stray_member(s: &Pass<'_>, p: &mut Plan) -> bool {
    let Some(m) =
        s.c.members
            .iter()
            .find(|m| ordinal_of(&s.o.name, &m.name).is_none_or(|k| k as i32 >= s.sts))
    else {
        return false;
    };
    s.remove(
        p,
        m,
        "RemovingStrayMember",
        "no pod of the StatefulSet carries it".into(),
    );
    true
}

/// Rule 5: shrinking takes the highest ordinal out of Raft first, then lowers the StatefulSet.
fn shrink(s: &Pass<'_>, p: &mut Plan) -> bool {
    let (o, sts) = (s.o, s.sts);
    if o.desired >= sts {
        return false;
    }
    let k = (sts - 1) as u32;
    match s.member_at(k) {
        Some(m) => s.remove(
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
                    "{}-{k} left the configuration; StatefulSet to {}",
                    o.name,
                    sts - 1
                ),
            ));
        }
    }
    true
}

/// Rule 6a: a pod that came back with an empty volume: its old member id goes, and the pod
/// joins again as a new learner.
fn replace_member_with_empty_volume(s: &Pass<'_>, p: &mut Plan) -> bool {
    for k in s.ordinals() {
        let (Some(m), Some(pv)) = (s.member_at(k), s.pod(k)) else {
            continue;
        };
        let lost = match pv.node {
            NodeIdentity::JoinRefused { holder } => holder == Some(m.id),
            NodeIdentity::Member { id, cluster_id } => {
                // id 0: the node is still waiting for its join; a voter or a member that has
                // received entries cannot be that — its volume was wiped.
                (id != 0 && (id != m.id || cluster_id != s.c.cluster_id))
                    || (id == 0 && (!m.is_learner || m.match_index > 0))
            }
            NodeIdentity::Unknown | NodeIdentity::JoinFailed => false,
        };
        if lost {
            s.remove(
                p,
                m,
                "ReplacingMember",
                "its pod came back with an empty volume; it will rejoin as a new member".into(),
            );
            return true;
        }
    }
    false
}

/// Rule 6b: a pod whose join was refused while its old member was still listed, and whose old
/// member is gone now, is restarted rather than left to wait out its crash-loop back-off.
fn restart_refused_join(s: &Pass<'_>, p: &mut Plan) -> bool {
    for k in s.ordinals() {
        if let Some(pv) = s.pod(k)
            && let NodeIdentity::JoinRefused { holder } = pv.node
            && !pv.deleting
            && holder.is_none_or(|h| !s.in_config(h))
            && s.member_at(k).is_none()
        {
            p.busy = true;
            p.actions.push(Action::RestartPod { ordinal: k });
            p.notes.push(note(
                Severity::Normal,
                "RestartingPod",
                format!("{}-{k} may join now", s.o.name),
            ));
            return true;
        }
    }
    false
}

/// Rule 6c: a pod whose node holds an identity the configuration no longer has (removed while
/// it was away, or another cluster's volume) gets a fresh volume and joins as a new member.
/// The term check keeps a leader that lost its leadership (and may not know of members added
/// since) from passing this judgement.
fn replace_removed_identity(s: &Pass<'_>, p: &mut Plan) -> bool {
    for k in s.ordinals() {
        let Some(pv) = s.pod(k) else { continue };
        let NodeIdentity::Member { id, cluster_id } = pv.node else {
            continue;
        };
        let foreign = id != 0
            && pv.term <= s.c.term
            && (cluster_id != s.c.cluster_id || !s.in_config(id))
            && s.member_at(k).is_none();
        if !foreign || pv.deleting {
            continue;
        }
        p.busy = true;
        if !s.o.pvcs.iter().any(|v| v.ordinal == k && v.terminating) {
            p.actions.push(Action::DeletePvc { ordinal: k });
        }
        p.actions.push(Action::RestartPod { ordinal: k });
        p.notes.push(note(
            Severity::Warning,
            "ReplacingRemovedMember",
            format!(
                "{}-{k} holds member {} of cluster {}, which the configuration no longer has; \
                 deleting its volume so it joins again as a new member",
                s.o.name,
                hex(id),
                hex(cluster_id)
            ),
        ));
        return true;
    }
    false
}

/// Rule 6d: a pod waiting for a claim that is gone (deleted while the pod was being replaced)
/// is deleted: only a new pod makes the StatefulSet controller create the claim again.
fn recreate_pod_without_claim(s: &Pass<'_>, p: &mut Plan) -> bool {
    let Some(pv) = s.o.pods.iter().find(|p| p.claim_missing && !p.deleting) else {
        return false;
    };
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
            s.o.name, pv.ordinal
        ),
    ));
    true
}

/// Rule 7: a learner is promoted once it is healthy and the leader says it keeps pace, if the
/// larger voter set still has a quorum of healthy voters; one catching up for too long is
/// reported, never removed.
fn promote_learner(s: &Pass<'_>, p: &mut Plan) -> bool {
    let Some(l) = s.c.members.iter().find(|m| m.is_learner) else {
        return false;
    };
    p.busy = true;
    if !l.healthy || !l.caught_up {
        report_catch_up_deadline(s.o, p, l);
        return true;
    }
    let healthy = s.healthy_voters(None);
    if healthy + 1 < quorum(s.voters.len() + 1) {
        p.notes.push(note(
            Severity::Warning,
            "PromotionWouldLoseQuorum",
            format!(
                "not promoting {}: only {healthy} voters are healthy",
                l.name
            ),
        ));
        return true;
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
    true
}

/// Reports a learner that has been catching up for longer than the spec allows. The time is
/// its pod's: a learner joins when its container starts.
fn report_catch_up_deadline(o: &Observed, p: &mut Plan, l: &MemberView) {
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

/// Unhealthy members are reported (a Warning Event each), never replaced on a guess: only the
/// positive evidence of rule 6 replaces a member. Decides nothing.
fn report_unhealthy_members(s: &Pass<'_>, p: &mut Plan) -> bool {
    for m in s.c.members.iter().filter(|m| !m.healthy) {
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
    false
}

/// Pods whose member has not appeared yet: their node is joining; nothing else moves.
fn wait_for_joining_pods(s: &Pass<'_>, p: &mut Plan) -> bool {
    let all_voters = s
        .ordinals()
        .all(|k| s.member_at(k).is_some_and(|m| !m.is_learner));
    if !all_voters {
        p.busy = true;
    }
    !all_voters
}

/// Ordinals whose pod runs an older template than the StatefulSet's current one.
pub(super) fn outdated(o: &Observed, sts: i32) -> Vec<u32> {
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

/// Rule 8: a rolling update (the StatefulSet is `OnDelete`; the operator restarts pods):
/// restarts the next outdated member when that is safe — followers first, highest ordinal
/// first, the leader last after leadership moved away, and only while every member is Ready,
/// healthy and caught up.
fn rolling_update(s: &Pass<'_>, p: &mut Plan) -> bool {
    let (o, c, sts) = (s.o, s.c, s.sts);
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
            "restarting {} for the new pod template ({updated} of {sts} updated; leader {})",
            name(next),
            leader.map_or("unknown", |m| m.name.as_str())
        ),
    ));
    true
}

/// Rule 9: growing, once every pod is a voter: first a claim left by an earlier scale-in goes
/// (with `Delete`) or is refused (with `Retain`), since a pod started on it could not rejoin;
/// then the StatefulSet rises by one, and the new pod joins itself as a learner.
fn grow(s: &Pass<'_>, p: &mut Plan) -> bool {
    let (o, sts) = (s.o, s.sts);
    if o.desired <= sts {
        return false;
    }
    if o.pvcs
        .iter()
        .any(|v| v.terminating && v.ordinal as i32 >= sts)
    {
        p.busy = true;
        return true;
    }
    // A claim left from an earlier scale-in holds a removed member's data: a pod started on
    // it could not rejoin. With `Delete` it goes first (rule 9 may not have run yet when
    // the cluster grows again right after shrinking); with `Retain`, refuse and say what
    // the user can do.
    if let Some(v) = o.pvcs.iter().find(|v| v.ordinal as i32 == sts) {
        if o.retention == RetentionPolicy::Delete {
            p.busy = true;
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
            return true;
        }
        let why = format!(
            "not adding {}-{sts}: its volume claim data-{}-{sts} was kept from an earlier \
             scale-in (retentionOnScaleDown: Retain) and holds a removed member's data; \
             delete the claim to let the cluster grow",
            o.name, o.name
        );
        debug_assert!(!v.terminating);
        // Not busy: this waits for a person to delete the claim, which the idle requeue
        // notices; polling every few seconds would only repeat the refusal.
        p.notes
            .push(note(Severity::Warning, "StaleVolumeRetained", why.clone()));
        p.problems.push(("StaleVolumeRetained", why));
        return true;
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
    true
}

/// Rule 10: claims of ordinals the StatefulSet no longer runs are deleted when the policy
/// says so. Decides nothing alone: it runs when nothing else had to.
fn delete_leftover_claims(s: &Pass<'_>, p: &mut Plan) -> bool {
    let (o, sts) = (s.o, s.sts);
    if o.retention != RetentionPolicy::Delete {
        return false;
    }
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
    false
}
