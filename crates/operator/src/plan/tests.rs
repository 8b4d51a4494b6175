//! Plan tests: one scenario per rule, then a model of the whole cluster driven by the plan
//! through 1 → 3 → 5 → 3 → 1 with the operator "restarted" (nothing carried over) every step.
//! One file over its usual size on purpose: every scenario builds on the same few fixtures
//! (`steady`, `voter`, `learner`, `pod`), and reading the rules' tests side by side is the point.

use super::*;
use crate::crd::{Condition, Phase};
use std::collections::BTreeMap;

const CLUSTER_ID: u64 = 0xc1;

fn id(k: u32) -> u64 {
    0x1000 + u64::from(k)
}

fn voter(k: u32) -> MemberView {
    MemberView {
        id: id(k),
        name: format!("demo-{k}"),
        is_learner: false,
        healthy: true,
        match_index: 50,
        lag: 0,
        caught_up: true,
    }
}

fn learner(k: u32, lag: u64) -> MemberView {
    MemberView {
        is_learner: true,
        lag,
        caught_up: lag <= CATCH_UP_BOUND,
        match_index: 50 - lag.min(50),
        ..voter(k)
    }
}

fn pod(k: u32) -> PodView {
    PodView {
        ordinal: k,
        ready: true,
        running: true,
        deleting: false,
        claim_missing: false,
        term: 2,
        revision: Some("rev-1".into()),
        up_secs: Some(60),
        node: NodeIdentity::Member {
            id: id(k),
            cluster_id: CLUSTER_ID,
        },
    }
}

fn pvc(k: u32) -> PvcView {
    PvcView {
        ordinal: k,
        terminating: false,
    }
}

/// A healthy cluster of `n` voters led by member 0, StatefulSet at `n`, spec `desired`.
fn steady(n: u32, desired: i32) -> Observed {
    Observed {
        name: "demo".into(),
        generation: Some(1),
        desired,
        retention: RetentionPolicy::Delete,
        catch_up_deadline_secs: 600,
        sts_replicas: Some(n as i32),
        pods: (0..n).map(pod).collect(),
        pvcs: (0..n).map(pvc).collect(),
        bootstrapped: true,
        cluster: Some(ClusterView {
            cluster_id: CLUSTER_ID,
            leader_id: id(0),
            term: 2,
            commit_index: 50,
            pending_conf_index: 10,
            members: (0..n).map(voter).collect(),
        }),
        previous: None,
        now: "2026-01-01T00:00:00Z".into(),
        selector: "app=x".into(),
        applied: BTreeMap::from([(id(0), 49)]),
        spec_problems: Vec::new(),
        storage_change: None,
        sts_storage: None,
        update_revision: Some("rev-1".into()),
        survivors: Vec::new(),
        pending_secs: BTreeMap::new(),
        recovery: crate::crd::RecoverySpec::default(),
        forcing: None,
    }
}

fn members(o: &mut Observed) -> &mut Vec<MemberView> {
    &mut o.cluster.as_mut().expect("cluster").members
}

fn cond<'a>(p: &'a Plan, t: &str) -> &'a Condition {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .expect("condition")
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn first_pass_creates_one_pod_that_bootstraps() {
    let mut o = steady(0, 3);
    o.sts_replicas = None;
    o.cluster = None;
    o.bootstrapped = false;
    let p = plan(&o);
    assert_eq!(p.sts_replicas, 1);
    assert!(p.actions.is_empty());
    assert!(!p.bootstrapped);
    assert_eq!(p.status.phase, Phase::Pending);
    assert!(reasons(&p).contains(&"Bootstrapping"));
}

#[test]
fn without_a_leader_nothing_changes() {
    let mut o = steady(3, 5);
    o.cluster = None;
    let p = plan(&o);
    assert_eq!(p.sts_replicas, 3);
    assert!(p.actions.is_empty());
    assert!(p.bootstrapped, "bootstrapped is sticky");
    assert_eq!(p.status.phase, Phase::Degraded);
    assert_eq!(cond(&p, "Available").status, "False");
    assert_eq!(cond(&p, "Available").reason, "NoLeader");
}

#[test]
fn first_leader_marks_cluster_bootstrapped() {
    let mut o = steady(1, 1);
    o.bootstrapped = false;
    assert!(plan(&o).bootstrapped);
}

#[test]
fn steady_cluster_is_running_and_left_alone() {
    let p = plan(&steady(3, 3));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(!p.busy);
    assert_eq!(p.status.phase, Phase::Running);
    assert_eq!(p.status.leader.as_deref(), Some("demo-0"));
    assert_eq!(p.status.members.len(), 3);
    assert_eq!(p.status.members[1].id, "0000000000001001");
    assert_eq!(p.status.members[0].applied_index, Some(49));
    assert_eq!(
        p.status.members[1].applied_index, None,
        "did not answer itself"
    );
    assert_eq!(p.status.replicas, 3);
    assert_eq!(p.status.ready_replicas, 3);
    assert_eq!(cond(&p, "Available").status, "True");
    assert_eq!(cond(&p, "Progressing").status, "False");
    assert_eq!(cond(&p, "Degraded").status, "False");
    assert_eq!(cond(&p, "QuorumAtRisk").status, "False");
}

#[test]
fn single_member_is_always_at_risk() {
    let p = plan(&steady(1, 1));
    assert_eq!(cond(&p, "QuorumAtRisk").status, "True");
}

#[test]
fn grow_raises_the_statefulset_by_one() {
    let p = plan(&steady(1, 3));
    assert_eq!(p.actions, [Action::ScaleStatefulSet { replicas: 2 }]);
    assert_eq!(p.sts_replicas, 2);
    assert_eq!(p.status.phase, Phase::Scaling);
    assert_eq!(cond(&p, "Progressing").reason, "ScalingUp");
}

#[test]
fn grow_waits_for_the_new_pod_to_join() {
    let mut o = steady(1, 3);
    o.sts_replicas = Some(2);
    o.pods.push(PodView {
        ready: false,
        node: NodeIdentity::Member {
            id: 0,
            cluster_id: 0,
        },
        ..pod(1)
    });
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.sts_replicas, 2);
    assert!(p.busy);
}

#[test]
fn lagging_learner_is_not_promoted() {
    let mut o = steady(2, 3);
    members(&mut o)[1] = learner(1, CATCH_UP_BOUND + 1);
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.busy);
}

#[test]
fn caught_up_learner_is_promoted_and_nothing_else_happens() {
    let mut o = steady(2, 3);
    members(&mut o)[1] = learner(1, 3);
    let p = plan(&o);
    assert_eq!(
        p.actions,
        [Action::Promote {
            id: id(1),
            name: "demo-1".into()
        }]
    );
    assert_eq!(p.sts_replicas, 2, "the next pod waits for the promotion");
}

#[test]
fn learner_keeping_pace_under_load_is_promoted_however_far_behind_when_polled() {
    let mut o = steady(2, 3);
    members(&mut o)[1] = MemberView {
        caught_up: true,
        ..learner(1, 5_000)
    };
    assert_eq!(
        plan(&o).actions,
        [Action::Promote {
            id: id(1),
            name: "demo-1".into()
        }]
    );
}

#[test]
fn learner_past_the_catch_up_deadline_is_reported_and_still_waited_for() {
    let mut o = steady(2, 3);
    members(&mut o)[1] = MemberView {
        caught_up: false,
        ..learner(1, 5_000)
    };
    o.pods[1].up_secs = Some(599);
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(!reasons(&p).contains(&CATCH_UP_DEADLINE_EXCEEDED));
    assert_eq!(cond(&p, "Reconciled").status, "True");

    o.pods[1].up_secs = Some(601);
    let p = plan(&o);
    assert!(
        p.actions.is_empty(),
        "never removed on a timeout: {:?}",
        p.actions
    );
    assert!(p.busy);
    assert!(reasons(&p).contains(&CATCH_UP_DEADLINE_EXCEEDED));
    let progressing = cond(&p, "Progressing");
    assert_eq!(progressing.status, "False");
    assert_eq!(progressing.reason, CATCH_UP_DEADLINE_EXCEEDED);
    assert!(
        progressing.message.contains("demo-1"),
        "{}",
        progressing.message
    );
    assert!(
        progressing.message.contains("5000 entries behind"),
        "{}",
        progressing.message
    );
    let reconciled = cond(&p, "Reconciled");
    assert_eq!(reconciled.status, "False");
    assert_eq!(reconciled.reason, CATCH_UP_DEADLINE_EXCEEDED);
    let event = p
        .notes
        .iter()
        .find(|n| n.reason == CATCH_UP_DEADLINE_EXCEEDED)
        .expect("event");
    assert_eq!(event.severity, Severity::Warning);
    assert_eq!(event.subject.as_deref(), Some("demo-1"));

    // Once it keeps pace, it is promoted and the report goes.
    members(&mut o)[1].caught_up = true;
    let p = plan(&o);
    assert!(matches!(p.actions[..], [Action::Promote { .. }]));
    assert_ne!(cond(&p, "Progressing").reason, CATCH_UP_DEADLINE_EXCEEDED);
}

#[test]
fn unhealthy_learner_is_not_promoted() {
    let mut o = steady(2, 3);
    members(&mut o)[1] = MemberView {
        healthy: false,
        ..learner(1, 0)
    };
    assert!(plan(&o).actions.is_empty());
}

#[test]
fn promotion_that_would_leave_no_quorum_is_refused() {
    let mut o = steady(4, 5);
    for k in 1..3 {
        members(&mut o)[k].healthy = false;
    }
    members(&mut o)[3] = learner(3, 0);
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(reasons(&p).contains(&"PromotionWouldLoseQuorum"));
}

#[test]
fn uncommitted_configuration_change_blocks_everything() {
    let mut o = steady(3, 5);
    o.cluster.as_mut().expect("c").pending_conf_index = 51;
    let p = plan(&o);
    assert!(p.actions.is_empty());
    assert!(p.busy);
}

#[test]
fn shrink_removes_the_highest_member_first() {
    let p = plan(&steady(3, 1));
    assert_eq!(
        p.actions,
        [Action::Remove {
            id: id(2),
            name: "demo-2".into()
        }]
    );
    assert_eq!(
        p.sts_replicas, 3,
        "replicas drop only after the removal committed"
    );
    assert_eq!(cond(&p, "Progressing").reason, "ScalingDown");
}

#[test]
fn shrink_moves_leadership_off_the_leaving_member() {
    let mut o = steady(3, 2);
    o.cluster.as_mut().expect("c").leader_id = id(2);
    let p = plan(&o);
    assert_eq!(p.actions, [Action::TransferLeadership { from: id(2) }]);
}

#[test]
fn shrink_lowers_statefulset_after_removal_committed() {
    // The operator restarted after RemoveMember was committed, before it lowered the replicas.
    let mut o = steady(3, 1);
    members(&mut o).pop();
    let p = plan(&o);
    assert_eq!(p.actions, [Action::ScaleStatefulSet { replicas: 2 }]);
    assert_eq!(p.sts_replicas, 2);
}

#[test]
fn removal_that_would_lose_quorum_is_refused() {
    let mut o = steady(3, 1);
    members(&mut o)[1].healthy = false;
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(reasons(&p).contains(&"RemovalWouldLoseQuorum"));
}

#[test]
fn shrinking_a_learner_needs_no_quorum_check() {
    let mut o = steady(3, 2);
    members(&mut o)[2] = MemberView {
        healthy: false,
        ..learner(2, 40)
    };
    members(&mut o)[1].healthy = false;
    assert_eq!(
        plan(&o).actions,
        [Action::Remove {
            id: id(2),
            name: "demo-2".into()
        }]
    );
}

#[test]
fn claims_of_removed_members_follow_the_policy() {
    let mut o = steady(2, 2);
    o.pvcs.push(pvc(2));
    assert_eq!(plan(&o).actions, [Action::DeletePvc { ordinal: 2 }]);
    o.retention = RetentionPolicy::Retain;
    assert!(plan(&o).actions.is_empty());
    o.retention = RetentionPolicy::Delete;
    o.pvcs[2].terminating = true;
    assert!(plan(&o).actions.is_empty(), "already being deleted");
}

#[test]
fn claim_of_a_pod_still_terminating_is_kept() {
    let mut o = steady(2, 2);
    o.pvcs.push(pvc(2));
    o.pods.push(PodView {
        running: false,
        ready: false,
        ..pod(2)
    });
    assert!(plan(&o).actions.is_empty());
}

#[test]
fn growth_waits_for_a_terminating_claim() {
    let mut o = steady(3, 5);
    o.pvcs.push(PvcView {
        ordinal: 3,
        terminating: true,
    });
    let p = plan(&o);
    assert!(p.actions.is_empty());
    assert!(p.busy);
}

#[test]
fn pod_with_empty_volume_is_removed_to_rejoin() {
    // The node answers with a fresh identity.
    let mut o = steady(3, 3);
    o.pods[1].node = NodeIdentity::Member {
        id: 0x9999,
        cluster_id: CLUSTER_ID,
    };
    assert_eq!(
        plan(&o).actions,
        [Action::Remove {
            id: id(1),
            name: "demo-1".into()
        }]
    );
    // Its join was refused because its old self is still a member.
    o.pods[1].node = NodeIdentity::JoinRefused {
        holder: Some(id(1)),
    };
    let p = plan(&o);
    assert_eq!(
        p.actions,
        [Action::Remove {
            id: id(1),
            name: "demo-1".into()
        }]
    );
    assert!(reasons(&p).contains(&"ReplacingMember"));
    // A voter's node without any identity lost its volume too.
    o.pods[1].node = NodeIdentity::Member {
        id: 0,
        cluster_id: 0,
    };
    assert_eq!(
        plan(&o).actions,
        [Action::Remove {
            id: id(1),
            name: "demo-1".into()
        }]
    );
}

#[test]
fn fresh_learner_still_joining_is_not_mistaken_for_a_lost_volume() {
    let mut o = steady(3, 3);
    members(&mut o)[2] = MemberView {
        match_index: 0,
        ..learner(2, 50)
    };
    o.pods[2].node = NodeIdentity::Member {
        id: 0,
        cluster_id: 0,
    };
    let p = plan(&o);
    assert!(
        !p.actions.iter().any(|a| matches!(a, Action::Remove { .. })),
        "{:?}",
        p.actions
    );
}

#[test]
fn replaced_pod_is_restarted_once_its_old_member_is_gone() {
    let mut o = steady(3, 3);
    members(&mut o).remove(1);
    o.pods[1].node = NodeIdentity::JoinRefused {
        holder: Some(id(1)),
    };
    assert_eq!(plan(&o).actions, [Action::RestartPod { ordinal: 1 }]);
}

#[test]
fn unhealthy_member_is_reported_not_replaced() {
    let mut o = steady(3, 3);
    members(&mut o)[2].healthy = false;
    o.pods[2].node = NodeIdentity::Unknown;
    o.pods[2].ready = false;
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(reasons(&p).contains(&"MemberUnhealthy"));
    assert_eq!(p.status.phase, Phase::Degraded);
    assert_eq!(cond(&p, "Degraded").status, "True");
    assert_eq!(cond(&p, "Degraded").message, "unhealthy: demo-2");
    assert_eq!(cond(&p, "QuorumAtRisk").status, "True");
    assert_eq!(cond(&p, "Available").status, "True");
    assert_eq!(p.status.ready_replicas, 2);
}

#[test]
fn stray_member_beyond_the_statefulset_is_removed() {
    let mut o = steady(3, 3);
    members(&mut o).push(voter(3));
    assert_eq!(
        plan(&o).actions,
        [Action::Remove {
            id: id(3),
            name: "demo-3".into()
        }]
    );
    let mut o = steady(3, 3);
    members(&mut o).push(MemberView {
        name: "intruder".into(),
        ..voter(7)
    });
    assert_eq!(
        plan(&o).actions,
        [Action::Remove {
            id: id(7),
            name: "intruder".into()
        }]
    );
}

#[test]
fn even_size_gets_a_warning() {
    assert!(reasons(&plan(&steady(2, 2))).contains(&"EvenReplicas"));
    assert!(!reasons(&plan(&steady(3, 3))).contains(&"EvenReplicas"));
}

#[test]
fn condition_transition_time_is_kept_while_status_holds() {
    let mut o = steady(3, 3);
    let first = plan(&o).status;
    o.previous = Some(first);
    o.now = "2026-01-02T00:00:00Z".into();
    let p = plan(&o);
    assert_eq!(
        cond(&p, "Available").last_transition_time.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    members(&mut o)[2].healthy = false;
    let p = plan(&o);
    assert_eq!(
        cond(&p, "Degraded").last_transition_time.as_deref(),
        Some("2026-01-02T00:00:00Z")
    );
}

/// A model of the cluster: the StatefulSet controller, kubelet and the Raft nodes, driven only
/// by the plan's actions, with the operator keeping nothing between passes.
struct Model {
    o: Observed,
    next_id: u64,
    changes_in_flight_max: usize,
}

impl Model {
    fn new() -> Self {
        let mut o = steady(0, 1);
        o.sts_replicas = None;
        o.cluster = None;
        o.bootstrapped = false;
        o.pods.clear();
        o.pvcs.clear();
        Self {
            o,
            next_id: 0x5000,
            changes_in_flight_max: 0,
        }
    }

    fn cluster(&mut self) -> &mut ClusterView {
        self.o.cluster.as_mut().expect("cluster")
    }

    /// One pass: plan, apply, then let the world react (pods start, nodes join and catch up).
    fn step(&mut self) -> Plan {
        let p = plan(&self.o);
        let changes = p
            .actions
            .iter()
            .filter(|a| a.is_membership_change())
            .count();
        self.changes_in_flight_max = self.changes_in_flight_max.max(changes);
        self.o.sts_replicas = Some(p.sts_replicas);
        self.o.bootstrapped = p.bootstrapped;
        self.o.previous = Some(p.status.clone());
        for a in &p.actions {
            match a {
                Action::ScaleStatefulSet { replicas } => self.o.sts_replicas = Some(*replicas),
                Action::Promote { id, .. } => {
                    let m = self
                        .cluster()
                        .members
                        .iter_mut()
                        .find(|m| m.id == *id)
                        .expect("member");
                    assert!(m.lag <= CATCH_UP_BOUND);
                    m.is_learner = false;
                }
                Action::Remove { id, .. } => {
                    let c = self.cluster();
                    assert_ne!(*id, c.leader_id, "the leader is never removed");
                    c.members.retain(|m| m.id != *id);
                }
                Action::TransferLeadership { from } => {
                    let c = self.cluster();
                    let to = c
                        .members
                        .iter()
                        .find(|m| !m.is_learner && m.id != *from)
                        .expect("voter")
                        .id;
                    c.leader_id = to;
                }
                Action::DeletePvc { ordinal } => self.o.pvcs.retain(|v| v.ordinal != *ordinal),
                Action::RestartPod { .. } => {}
            }
        }
        self.world();
        self.check_quorum();
        p
    }

    fn world(&mut self) {
        let n = self.o.sts_replicas.unwrap_or(0) as u32;
        self.o.pods.retain(|p| p.ordinal < n);
        for k in 0..n {
            if !self.o.pvcs.iter().any(|v| v.ordinal == k) {
                self.o.pvcs.push(pvc(k));
            }
            if self.o.pods.iter().any(|p| p.ordinal == k) {
                continue;
            }
            // The pod starts; pod 0 of a new cluster bootstraps, others join as learners.
            let new_id = self.next_id;
            self.next_id += 1;
            if self.o.cluster.is_none() {
                self.o.cluster = Some(ClusterView {
                    cluster_id: CLUSTER_ID,
                    leader_id: new_id,
                    term: 2,
                    commit_index: 1,
                    pending_conf_index: 0,
                    members: vec![MemberView {
                        id: new_id,
                        ..voter(k)
                    }],
                });
            } else {
                self.cluster().members.push(MemberView {
                    id: new_id,
                    ..learner(k, 500)
                });
            }
            self.o.pods.push(PodView {
                node: NodeIdentity::Member {
                    id: new_id,
                    cluster_id: CLUSTER_ID,
                },
                ..pod(k)
            });
        }
        // Learners catch up a bit every pass.
        for m in &mut self.cluster().members {
            m.lag = m.lag.saturating_sub(300);
            m.caught_up = m.lag <= CATCH_UP_BOUND;
        }
    }

    fn check_quorum(&mut self) {
        let c = self.o.cluster.as_ref().expect("cluster");
        let voters: Vec<_> = c.members.iter().filter(|m| !m.is_learner).collect();
        let healthy = voters.iter().filter(|m| m.healthy).count();
        assert!(healthy >= quorum(voters.len()), "quorum lost: {c:?}");
        assert!(
            voters.iter().any(|m| m.id == c.leader_id),
            "leader is a voter"
        );
    }

    fn settle(&mut self, desired: i32) -> usize {
        self.o.desired = desired;
        for steps in 0..100 {
            let p = self.step();
            if !p.busy && p.actions.is_empty() {
                assert_eq!(p.status.phase, Phase::Running, "{p:?}");
                return steps;
            }
        }
        panic!("did not settle at {desired}: {:?}", self.o);
    }
}

#[test]
fn model_scales_1_3_5_3_1_one_change_at_a_time() {
    let mut m = Model::new();
    for desired in [1, 3, 5, 3, 1] {
        m.settle(desired);
        let c = m.o.cluster.as_ref().expect("cluster");
        assert_eq!(c.members.len(), desired as usize);
        assert!(c.members.iter().all(|m| !m.is_learner));
        assert_eq!(m.o.sts_replicas, Some(desired));
        assert_eq!(
            m.o.pvcs.len(),
            desired as usize,
            "claims of removed members deleted"
        );
        let names: Vec<String> = c.members.iter().map(|m| m.name.clone()).collect();
        let want: Vec<String> = (0..desired).map(|k| format!("demo-{k}")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, want);
    }
    assert_eq!(m.changes_in_flight_max, 1);
}

#[test]
fn model_shrink_with_the_leader_on_the_highest_ordinal() {
    let mut m = Model::new();
    m.settle(5);
    let top =
        m.o.cluster
            .as_ref()
            .expect("c")
            .members
            .iter()
            .find(|x| x.name == "demo-4")
            .expect("m")
            .id;
    m.cluster().leader_id = top;
    m.settle(3);
    let c = m.o.cluster.as_ref().expect("c");
    assert_eq!(c.members.len(), 3);
    assert_ne!(c.leader_id, top);
}

#[test]
fn model_replaces_a_lost_volume_in_place() {
    let mut m = Model::new();
    m.settle(3);
    // demo-1's volume is wiped: its restarted node cannot join while its old self is listed.
    let old =
        m.o.cluster
            .as_ref()
            .expect("c")
            .members
            .iter()
            .find(|x| x.name == "demo-1")
            .expect("m")
            .id;
    m.o.pods
        .iter_mut()
        .find(|p| p.ordinal == 1)
        .expect("pod")
        .node = NodeIdentity::JoinRefused { holder: Some(old) };
    m.cluster()
        .members
        .iter_mut()
        .find(|x| x.name == "demo-1")
        .expect("m")
        .healthy = false;
    let p = m.step();
    assert_eq!(
        p.actions,
        [Action::Remove {
            id: old,
            name: "demo-1".into()
        }]
    );
    let p = m.step();
    assert_eq!(p.actions, [Action::RestartPod { ordinal: 1 }]);
    // The restarted pod joins as a new learner with a new id.
    m.o.pods.retain(|p| p.ordinal != 1);
    m.settle(3);
    let c = m.o.cluster.as_ref().expect("c");
    let new = c
        .members
        .iter()
        .find(|x| x.name == "demo-1")
        .expect("rejoined");
    assert_ne!(new.id, old);
    assert_eq!(
        m.o.sts_replicas,
        Some(3),
        "replaced in place, not by shrinking"
    );
}

#[test]
fn stale_refusal_never_removes_the_replacement_that_joined_since() {
    // The wedge seen on a real cluster: demo-1's old member (id 1) was removed and the pod's
    // container, restarted by the kubelet, joined as a new learner — while the pod status still
    // carries the last run's refusal naming the old id.
    let mut o = steady(3, 3);
    members(&mut o)[1] = MemberView {
        id: 0x77,
        ..learner(1, 500)
    };
    o.pods[1].node = NodeIdentity::JoinRefused {
        holder: Some(id(1)),
    };
    let p = plan(&o);
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. } | Action::RestartPod { .. })),
        "{:?}",
        p.actions
    );
    // A refusal that names no member is not evidence either.
    o.pods[1].node = NodeIdentity::JoinRefused { holder: None };
    assert!(
        !plan(&o)
            .actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. })),
    );
}

#[test]
fn a_pod_being_deleted_is_not_deleted_again() {
    let mut o = steady(3, 3);
    members(&mut o).remove(1);
    o.pods[1].node = NodeIdentity::JoinRefused {
        holder: Some(id(1)),
    };
    o.pods[1].deleting = true;
    let p = plan(&o);
    assert!(
        !p.actions.contains(&Action::RestartPod { ordinal: 1 }),
        "{:?}",
        p.actions
    );
}

#[test]
fn pod_holding_a_removed_identity_gets_a_fresh_volume() {
    let mut o = steady(3, 3);
    // demo-1 came back with the identity of a member the configuration no longer has.
    members(&mut o).remove(1);
    o.pods[1].node = NodeIdentity::Member {
        id: id(1),
        cluster_id: CLUSTER_ID,
    };
    o.pods[1].ready = false;
    let p = plan(&o);
    assert_eq!(
        p.actions,
        [
            Action::DeletePvc { ordinal: 1 },
            Action::RestartPod { ordinal: 1 }
        ]
    );
    assert!(reasons(&p).contains(&"ReplacingRemovedMember"));
    // Once the pod is going, nothing more is done to it.
    o.pods[1].deleting = true;
    o.pvcs[1].terminating = true;
    assert!(plan(&o).actions.is_empty(), "{:?}", plan(&o).actions);
    // A node in a newer term than the leader the operator saw: that leader may be stale, so
    // its member list is no proof of removal.
    o.pods[1].deleting = false;
    o.pods[1].term = 9;
    assert!(plan(&o).actions.is_empty());
    // A volume of another cluster (same name, recreated resource) is replaced as well.
    o.pods[1].term = 2;
    o.pods[1].node = NodeIdentity::Member {
        id: 0x4242,
        cluster_id: CLUSTER_ID + 1,
    };
    assert_eq!(plan(&o).actions, [Action::RestartPod { ordinal: 1 }]);
}

#[test]
fn pending_pod_whose_claim_is_gone_is_recreated() {
    let mut o = steady(3, 3);
    members(&mut o).remove(1);
    o.pvcs.retain(|v| v.ordinal != 1);
    o.pods[1].node = NodeIdentity::Unknown;
    o.pods[1].running = false;
    o.pods[1].ready = false;
    o.pods[1].claim_missing = true;
    let p = plan(&o);
    assert_eq!(p.actions, [Action::RestartPod { ordinal: 1 }]);
    assert!(reasons(&p).contains(&"RecreatingPod"));
}

#[test]
fn invalid_spec_holds_everything_and_says_why() {
    let mut o = steady(3, 5);
    o.spec_problems = vec![
        "spec.raft.heartbeatTicks (10) must be smaller than spec.raft.electionTicks (10)".into(),
    ];
    let p = plan(&o);
    assert!(p.hold);
    assert!(p.actions.is_empty());
    let c = cond(&p, "Reconciled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(c.message.contains("heartbeatTicks (10)"), "{}", c.message);
    assert!(reasons(&p).contains(&"InvalidSpec"));
    // The members are still reported.
    assert_eq!(p.status.members.len(), 3);
    assert_eq!(cond(&plan(&steady(3, 3)), "Reconciled").status, "True");
}

#[test]
fn storage_change_is_refused_alone() {
    let mut o = steady(3, 5);
    o.storage_change = Some("spec.storage asks for 2Gi …".into());
    let p = plan(&o);
    assert!(!p.hold, "the rest of the spec is still carried out");
    assert_eq!(p.actions, [Action::ScaleStatefulSet { replicas: 4 }]);
    let c = cond(&p, "Reconciled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "StorageImmutable")
    );
}

#[test]
fn retained_claim_of_the_next_ordinal_stops_growth_with_a_reason() {
    let mut o = steady(3, 5);
    o.retention = RetentionPolicy::Retain;
    o.pvcs.push(pvc(3));
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let c = cond(&p, "Reconciled");
    assert_eq!(c.reason, "StaleVolumeRetained");
    assert!(c.message.contains("data-demo-3"), "{}", c.message);
    assert!(
        !p.busy,
        "waiting for a person: the idle requeue, not the busy one"
    );
    // With Delete, the leftover claim goes first, then the cluster grows.
    o.retention = RetentionPolicy::Delete;
    let p = plan(&o);
    assert_eq!(p.actions, [Action::DeletePvc { ordinal: 3 }]);
    assert_eq!(cond(&p, "Reconciled").status, "True");
    o.pvcs[3].terminating = true;
    assert!(plan(&o).actions.is_empty(), "waits for the claim to go");
    o.pvcs.pop();
    assert_eq!(plan(&o).actions, [Action::ScaleStatefulSet { replicas: 4 }]);
}

/// A steady cluster whose StatefulSet template moved to `rev-2`.
fn updating(n: u32) -> Observed {
    let mut o = steady(n, n as i32);
    o.update_revision = Some("rev-2".into());
    o
}

fn set_rev(o: &mut Observed, k: u32, rev: &str) {
    o.pods[k as usize].revision = Some(rev.into());
}

#[test]
fn rolling_update_restarts_followers_one_at_a_time_and_the_leader_last() {
    let mut o = updating(3);
    // Member 0 leads: followers first, highest ordinal first.
    let p = plan(&o);
    assert_eq!(p.actions, [Action::RestartPod { ordinal: 2 }]);
    assert!(reasons(&p).contains(&"RestartingForUpdate"));
    let n = p
        .notes
        .iter()
        .find(|n| n.reason == "RestartingForUpdate")
        .expect("note");
    assert_eq!(
        n.subject.as_deref(),
        Some("demo-2"),
        "the Event is about the pod"
    );
    assert_eq!(p.status.phase, Phase::Updating);
    assert_eq!(cond(&p, "Progressing").reason, "RollingUpdate");
    assert_eq!(p.status.updated_replicas, 0);
    // While the restarted pod is away, nothing else is restarted.
    o.pods[2].deleting = true;
    o.pods[2].ready = false;
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(reasons(&p).contains(&"UpdateWaiting"));
    // It came back on the new template.
    o.pods[2].deleting = false;
    o.pods[2].ready = true;
    set_rev(&mut o, 2, "rev-2");
    assert_eq!(plan(&o).actions, [Action::RestartPod { ordinal: 1 }]);
    set_rev(&mut o, 1, "rev-2");
    // Only the leader is left: leadership moves first, then it restarts.
    let p = plan(&o);
    assert_eq!(p.actions, [Action::TransferLeadership { from: id(0) }]);
    assert_eq!(p.status.updated_replicas, 2);
    o.cluster.as_mut().expect("c").leader_id = id(1);
    assert_eq!(plan(&o).actions, [Action::RestartPod { ordinal: 0 }]);
    set_rev(&mut o, 0, "rev-2");
    let p = plan(&o);
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase, Phase::Running);
    assert_eq!(p.status.updated_replicas, 3);
}

#[test]
fn rolling_update_waits_while_a_member_is_down_or_behind() {
    // One member is already down when the template changes: restarting another would leave
    // one of three.
    let mut o = updating(3);
    members(&mut o)[1].healthy = false;
    o.pods[1].ready = false;
    o.pods[1].node = NodeIdentity::Unknown;
    let p = plan(&o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let waiting = p
        .notes
        .iter()
        .find(|n| n.reason == "UpdateWaiting")
        .expect("a reason to wait");
    assert!(
        waiting.message.contains("demo-1 is not ready"),
        "{}",
        waiting.message
    );
    // Healthy again but far behind: still waiting.
    let mut o = updating(3);
    members(&mut o)[2].lag = UPDATE_LAG_BOUND + 1;
    assert!(plan(&o).actions.is_empty());
}
