//! Quorum-loss recovery: what the operator does when no leader answers and a majority of the
//! voters is gone for good.
//!
//! "Gone for good" needs positive evidence, never a timeout on a member that might come back
//! with its data: the member's pod has no claim any more (its volume was deleted), its node
//! answers with another identity or last failed to join (it came back on an empty volume: only
//! a member without data joins), or the pod has been Pending
//! for longer than `spec.recovery.goneAfterSeconds` (its node or volume is unavailable). A
//! member that is only down or restarting counts as alive.
//!
//! Without `spec.recovery.allowDataLoss` the operator only reports (`QuorumLost=True`, naming
//! every survivor with its log position, and a Warning Event): nothing destructive happens.
//! With it, the survivor whose log reaches furthest — highest (last term, last index): it holds
//! every entry any survivor holds that could have been committed — is restarted with
//! `--force-new-cluster` (the ConfigMap's `FORCE_NEW_CLUSTER` names it; the start script passes
//! the flag to that pod only). It comes back as the only voter of the same cluster, and the
//! ordinary rules grow the cluster back one member at a time: pods with empty volumes join as
//! learners, the other survivors learn they were removed and get fresh volumes (rule 6c).
//! `FORCE_NEW_CLUSTER` stays in the ConfigMap while no leader answers — while the forced pod
//! restarts it answers nothing, and a ConfigMap without the key then would start it without
//! the flag, to be restarted again, and again (seen on a real cluster) — and disappears as soon
//! as a leader answers, which after the restart is the forced member alone (the newest
//! configuration then has its quorum), so a later restart of that pod does not force again
//! (were it to happen within the pass's window, it would at worst remove a learner that joined
//! meanwhile, which rule 6c then replaces).

use super::{Observed, Plan, Severity, Survivor, hex, note, ordinal_of, quorum};

/// Checks for a quorum lost for good and, when allowed, recovers. Only called when no leader
/// answered.
pub(super) fn quorum_lost(o: &Observed, p: &mut Plan) {
    if o.recovery.allow_data_loss
        && let Some(pod) = &o.forcing
    {
        // A forced restart is under way (see the module docs).
        p.force_new_cluster = Some(pod.clone());
        let answers = o
            .survivors
            .iter()
            .any(|s| format!("{}-{}", o.name, s.ordinal) == *pod);
        if !answers {
            p.quorum_lost = o
                .previous
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "QuorumLost"))
                .filter(|c| c.status == "True")
                .map(|c| c.message.clone());
            return;
        }
    }
    // The configuration of the survivor whose log reaches furthest: the newest one known.
    let Some(best) = o
        .survivors
        .iter()
        .max_by_key(|s| (s.last_term, s.last_index, std::cmp::Reverse(s.ordinal)))
    else {
        return;
    };
    let voters = &best.voters;
    if voters.is_empty() {
        return;
    }
    let gone: Vec<&(u64, String)> = voters.iter().filter(|v| gone_for_good(o, v)).collect();
    if voters.len() - gone.len() >= quorum(voters.len()) {
        // Enough voters may still come back: wait for them.
        return;
    }
    let survivors: Vec<&Survivor> = o
        .survivors
        .iter()
        .filter(|s| voters.iter().any(|(id, _)| *id == s.id))
        .collect();
    let describe = |s: &Survivor| {
        format!(
            "{}-{} (member {}, last index {} at term {}, applied {})",
            o.name,
            s.ordinal,
            hex(s.id),
            s.last_index,
            s.last_term,
            s.applied_index
        )
    };
    let gone_names: Vec<&str> = gone.iter().map(|(_, n)| n.as_str()).collect();
    let why = format!(
        "{} of {} voters are gone for good ({}); survivors: {}",
        gone.len(),
        voters.len(),
        gone_names.join(", "),
        if survivors.is_empty() {
            "none".to_owned()
        } else {
            survivors
                .iter()
                .map(|s| describe(s))
                .collect::<Vec<_>>()
                .join("; ")
        }
    );
    p.quorum_lost = Some(why.clone());
    let Some(chosen) = survivors
        .iter()
        .max_by_key(|s| (s.last_term, s.last_index, std::cmp::Reverse(s.ordinal)))
    else {
        p.notes.push(note(
            Severity::Warning,
            "QuorumLost",
            format!("{why}: no survivor holds the data; restore from a backup"),
        ));
        return;
    };
    if !o.recovery.allow_data_loss {
        p.notes.push(note(
            Severity::Warning,
            "QuorumLost",
            format!(
                "{why}. Nothing is changed without consent: set spec.recovery.allowDataLoss \
                 to true to restart {} alone with --force-new-cluster and grow back from it; \
                 writes it never received are lost",
                describe(chosen)
            ),
        ));
        return;
    }
    p.force_new_cluster = Some(format!("{}-{}", o.name, chosen.ordinal));
    let deleting = o
        .pods
        .iter()
        .any(|pv| pv.ordinal == chosen.ordinal && pv.deleting);
    if !deleting {
        p.actions.push(super::Action::RestartPod {
            ordinal: chosen.ordinal,
        });
        p.last_recovery = Some(crate::crd::RecoveryRecord {
            member: format!("{}-{}", o.name, chosen.ordinal),
            member_id: hex(chosen.id),
            last_index: chosen.last_index,
            last_term: chosen.last_term,
            applied_index: chosen.applied_index,
            lost_members: gone_names.iter().map(|n| (*n).to_owned()).collect(),
            data_loss: format!(
                "writes after index {} (term {}) that only {} had",
                chosen.last_index,
                chosen.last_term,
                gone_names.join(", ")
            ),
            started_at: o.now.clone(),
        });
        p.notes.push(note(
            Severity::Warning,
            "RecoveringFromQuorumLoss",
            format!(
                "{why}. spec.recovery.allowDataLoss is set: restarting {} with \
                 --force-new-cluster as the only voter; entries after index {} that only the \
                 lost members had are lost. The cluster then grows back one member at a time",
                describe(chosen),
                chosen.last_index
            ),
        ));
    }
}

/// Whether a voter's data is positively gone (see the module docs).
fn gone_for_good(o: &Observed, (id, name): &(u64, String)) -> bool {
    let Some(k) = ordinal_of(&o.name, name) else {
        return false;
    };
    if let Some(s) = o.survivors.iter().find(|s| s.ordinal == k) {
        // Its pod answers: gone only if it answers as someone else (an empty volume).
        return s.id != *id;
    }
    let Some(pv) = o.pods.iter().find(|p| p.ordinal == k) else {
        // No pod: the StatefulSet no longer runs that ordinal, or it is being recreated.
        return o.sts_replicas.is_some_and(|n| k >= n as u32);
    };
    if pv.claim_missing {
        return true;
    }
    if matches!(
        pv.node,
        super::NodeIdentity::JoinRefused { .. } | super::NodeIdentity::JoinFailed
    ) {
        return true;
    }
    o.pending_secs
        .get(&k)
        .is_some_and(|&secs| secs >= u64::from(o.recovery.gone_after_seconds))
}

#[cfg(test)]
mod tests {
    use super::super::{Action, NodeIdentity, PodView, plan};
    use super::*;
    use crate::crd::RetentionPolicy;
    use std::collections::BTreeMap;

    const CLUSTER: u64 = 0xc1;

    fn id(k: u32) -> u64 {
        0x100 + u64::from(k)
    }

    fn pod(k: u32, running: bool) -> PodView {
        PodView {
            ordinal: k,
            ready: false,
            running,
            deleting: false,
            claim_missing: false,
            term: 0,
            revision: None,
            up_secs: running.then_some(100),
            node: if running {
                NodeIdentity::Member {
                    id: id(k),
                    cluster_id: CLUSTER,
                }
            } else {
                NodeIdentity::Unknown
            },
        }
    }

    fn survivor(k: u32, last_index: u64, voters: &[u32]) -> Survivor {
        Survivor {
            ordinal: k,
            id: id(k),
            last_term: 3,
            last_index,
            applied_index: last_index - 2,
            voters: voters
                .iter()
                .map(|&v| (id(v), format!("demo-{v}")))
                .collect(),
        }
    }

    /// Three voters, no leader; member 0 (and with `two_alive` member 1) still answer.
    fn leaderless(two_alive: bool) -> Observed {
        let mut survivors = vec![survivor(0, 120, &[0, 1, 2])];
        let mut pods = vec![pod(0, true), pod(1, two_alive), pod(2, false)];
        if two_alive {
            survivors.push(survivor(1, 130, &[0, 1, 2]));
        } else {
            pods[1].claim_missing = true;
        }
        pods[2].claim_missing = true;
        Observed {
            name: "demo".into(),
            generation: Some(1),
            desired: 3,
            retention: RetentionPolicy::Delete,
            catch_up_deadline_secs: 600,
            sts_replicas: Some(3),
            pods,
            pvcs: Vec::new(),
            bootstrapped: true,
            cluster: None,
            previous: None,
            now: "2026-01-01T00:00:00Z".into(),
            selector: "app=x".into(),
            applied: BTreeMap::new(),
            spec_problems: Vec::new(),
            storage_change: None,
            sts_storage: None,
            update_revision: None,
            survivors,
            pending_secs: BTreeMap::new(),
            recovery: crate::crd::RecoverySpec::default(),
            forcing: None,
        }
    }

    fn condition(p: &Plan) -> (String, String) {
        let c = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "QuorumLost")
            .expect("QuorumLost condition");
        (c.status.clone(), c.message.clone())
    }

    #[test]
    fn members_that_may_come_back_are_waited_for() {
        // Member 1 and 2 down, but nothing says their data is gone.
        let mut o = leaderless(false);
        o.pods[1].claim_missing = false;
        o.pods[2].claim_missing = false;
        o.recovery.allow_data_loss = true;
        let p = plan(&o);
        assert!(p.actions.is_empty() && p.force_new_cluster.is_none());
        assert_eq!(condition(&p).0, "False");
        // Pending for longer than goneAfterSeconds counts as gone.
        o.pending_secs = BTreeMap::from([(1, 301), (2, 10)]);
        assert!(
            plan(&o).quorum_lost.is_none(),
            "one gone of three: quorum may return"
        );
        o.pending_secs.insert(2, 300);
        assert!(plan(&o).quorum_lost.is_some());
    }

    #[test]
    fn without_consent_only_reports_naming_the_survivors() {
        let o = leaderless(false);
        let p = plan(&o);
        assert!(p.actions.is_empty());
        assert!(p.force_new_cluster.is_none());
        let (status, message) = condition(&p);
        assert_eq!(status, "True");
        assert!(
            message.contains("2 of 3 voters are gone for good (demo-1, demo-2)"),
            "{message}"
        );
        assert!(
            message.contains(
                "demo-0 (member 0000000000000100, last index 120 at term 3, applied 118)"
            ),
            "{message}"
        );
        let n = p
            .notes
            .iter()
            .find(|n| n.reason == "QuorumLost")
            .expect("event");
        assert_eq!(n.severity, Severity::Warning);
        assert!(n.message.contains("allowDataLoss"));
    }

    #[test]
    fn with_consent_the_most_up_to_date_survivor_is_forced_alone() {
        // 5 voters: 0 and 1 survive (1 is further ahead), 2, 3, 4 lost their volumes.
        let mut o = leaderless(true);
        let all = [0, 1, 2, 3, 4];
        o.survivors = vec![survivor(0, 120, &all), survivor(1, 130, &all)];
        o.sts_replicas = Some(5);
        o.pods = (0..5).map(|k| pod(k, k < 2)).collect();
        for k in 2..5 {
            o.pods[k as usize].claim_missing = true;
        }
        o.recovery.allow_data_loss = true;
        let p = plan(&o);
        assert_eq!(p.force_new_cluster.as_deref(), Some("demo-1"));
        assert_eq!(p.actions, [Action::RestartPod { ordinal: 1 }]);
        let r = p.status.last_recovery.clone().expect("status.lastRecovery");
        assert_eq!(
            (r.member.as_str(), r.last_index, r.last_term),
            ("demo-1", 130, 3)
        );
        assert_eq!(r.lost_members, ["demo-2", "demo-3", "demo-4"]);
        assert!(r.data_loss.contains("after index 130"), "{}", r.data_loss);
        let n = p
            .notes
            .iter()
            .find(|n| n.reason == "RecoveringFromQuorumLoss")
            .expect("event");
        assert!(
            n.message.contains("entries after index 130"),
            "{}",
            n.message
        );

        // A higher term beats a longer log.
        o.survivors[0].last_term = 4;
        assert_eq!(plan(&o).force_new_cluster.as_deref(), Some("demo-0"));
        o.survivors[0].last_term = 3;

        // Restarted and alone: its configuration (the newest) has a quorum again, so nothing
        // more is forced — restarting it without the flag is safe — and it is waited for.
        o.survivors[1].voters = vec![(id(1), "demo-1".into())];
        let p = plan(&o);
        assert!(p.actions.is_empty());
        assert!(p.force_new_cluster.is_none() && p.quorum_lost.is_none());

        // A leader answers: the rule no longer runs, so nothing is forced any more.
        let mut led = o.clone();
        led.cluster = Some(super::super::ClusterView {
            cluster_id: CLUSTER,
            leader_id: id(1),
            term: 4,
            commit_index: 131,
            pending_conf_index: 131,
            members: vec![super::super::MemberView {
                id: id(1),
                name: "demo-1".into(),
                is_learner: false,
                healthy: true,
                match_index: 131,
                lag: 0,
                caught_up: true,
            }],
        });
        let p = plan(&led);
        assert!(p.force_new_cluster.is_none() && p.quorum_lost.is_none());
    }

    #[test]
    fn the_force_stays_while_the_forced_member_restarts() {
        let mut o = leaderless(false);
        o.recovery.allow_data_loss = true;
        let p = plan(&o);
        assert_eq!(p.force_new_cluster.as_deref(), Some("demo-0"));
        assert_eq!(p.actions, [Action::RestartPod { ordinal: 0 }]);
        // The pod restarts and nothing answers. The ConfigMap keeps the flag (without it the
        // new pod would start unforced, answer with the old configuration and be restarted
        // again), nothing is restarted, no Warning is raised, and QuorumLost stays True.
        o.forcing = Some("demo-0".into());
        o.previous = Some(p.status.clone());
        o.survivors.clear();
        o.pods[0] = pod(0, false);
        let p = plan(&o);
        assert_eq!(p.force_new_cluster.as_deref(), Some("demo-0"));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(
            p.status.last_recovery.as_ref().map(|r| r.member.as_str()),
            Some("demo-0"),
            "the record is kept from the previous status"
        );
        assert!(p.notes.iter().all(|n| n.severity != Severity::Warning));
        assert_eq!(condition(&p).0, "True");
        // Back, alone, electing itself: still kept until a leader answers.
        o.survivors = vec![survivor(0, 122, &[0])];
        o.pods[0] = pod(0, true);
        let p = plan(&o);
        assert_eq!(p.force_new_cluster.as_deref(), Some("demo-0"));
        assert!(p.actions.is_empty());
        // Consent withdrawn: not kept.
        o.recovery.allow_data_loss = false;
        assert!(plan(&o).force_new_cluster.is_none());
    }

    #[test]
    fn a_pod_answering_with_a_new_identity_has_lost_its_data() {
        let mut o = leaderless(false);
        o.pods[1].claim_missing = false;
        o.survivors.push(Survivor {
            ordinal: 1,
            id: 0x999,
            last_term: 0,
            last_index: 0,
            applied_index: 0,
            voters: Vec::new(),
        });
        let p = plan(&o);
        assert!(p.quorum_lost.is_some(), "{:?}", p.status.conditions);
    }
}
