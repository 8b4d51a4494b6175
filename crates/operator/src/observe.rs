//! Turning what the API server and the nodes report into the plan's [`Observed`] snapshot.
//!
//! Pure: the reconciler fetches, this module interprets. Keeping interpretation apart is what
//! lets the tests feed it Kubernetes objects and admin answers directly.
//!
//! The leader's view wins: of all nodes that answered, the one that says it leads (highest term
//! if two do, as happens for a moment after a partition heals) supplies the configuration and
//! every member's progress. A follower's member list could be stale; the leader's is the one
//! whose changes are being committed.

use std::collections::BTreeMap;

use flotilla_proto::admin::{Role, StatusResponse};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;

use crate::crd::RaftCluster;
use crate::kube_api::StsView;
use crate::plan::{
    CATCH_UP_BOUND, ClusterView, MemberView, NodeIdentity, Observed, PodView, PvcView, Survivor,
};
use crate::resources::{CONTAINER, ClaimStorage, Names, selector_string};

/// The text the node logs when it cannot join because a member with its peer URL already
/// exists (etcd's wording, which the node keeps): the sign of a pod that lost its volume.
pub const JOIN_REFUSED_MARKER: &str = "Peer URLs already exists";
/// What precedes the holder's member id in the node's refusal (`join refused: member
/// <16 hex digits> (<name>) already has peer URL …`).
pub const JOIN_REFUSED_HOLDER: &str = "join refused: member ";

/// What a member that learned it was removed exits with (`member <16 hex digits> was removed
/// from cluster <16 hex digits>: …`): the pod holds an identity the configuration no longer
/// has, and no Status call can tell, since the member no longer serves.
pub const REMOVED_MARKER: &str = " was removed from cluster ";

/// The label the StatefulSet controller puts on each pod: the revision of its template.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Raw inputs of one pass.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The StatefulSet, if it exists.
    pub sts: Option<StsView>,
    /// Pods matching the cluster's selector.
    pub pods: Vec<Pod>,
    /// Claims matching the cluster's selector.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The cluster's ConfigMap.
    pub config_map: Option<ConfigMap>,
    /// Admin Status answers by ordinal (nodes that did not answer are absent).
    pub statuses: BTreeMap<u32, StatusResponse>,
}

fn pod_view(
    names: &Names,
    pod: &Pod,
    statuses: &BTreeMap<u32, StatusResponse>,
    claims: &[u32],
    now: Timestamp,
) -> Option<PodView> {
    let ordinal = names.ordinal_of(pod.metadata.name.as_deref()?)?;
    let st = pod.status.as_ref();
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let running = !deleting && st.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = running
        && st
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let node = if let Some(s) = statuses.get(&ordinal) {
        NodeIdentity::Member {
            id: s.id,
            cluster_id: s.cluster_id,
        }
    } else if let Some((id, cluster_id)) = last_termination(pod).and_then(removed_identity) {
        NodeIdentity::Member { id, cluster_id }
    } else if let Some(holder) = join_refused(pod) {
        NodeIdentity::JoinRefused { holder }
    } else if join_failed(pod) {
        NodeIdentity::JoinFailed
    } else {
        NodeIdentity::Unknown
    };
    let pending = st.and_then(|s| s.phase.as_deref()) == Some("Pending");
    let claim_missing = pending && !claims.contains(&ordinal);
    Some(PodView {
        ordinal,
        ready,
        running,
        deleting,
        claim_missing,
        term: statuses.get(&ordinal).map_or(0, |s| s.term),
        revision: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
            .cloned(),
        up_secs: if deleting { None } else { up_secs(pod, now) },
        node,
    })
}

/// Seconds the `flotilla` container has been running, by its own start time.
fn up_secs(pod: &Pod, now: Timestamp) -> Option<u64> {
    let started = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()?
        .0;
    u64::try_from(now.duration_since(started).as_secs()).ok()
}

/// The words the node logs for each failed join attempt; a run that ends with them found no
/// leader to join through.
pub const JOIN_FAILED_MARKER: &str = "join attempt failed";

/// Its last run ended failing to join (its termination message, the log tail, says so).
fn join_failed(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| {
            let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            now.or(last)?.message.clone()
        })
        .is_some_and(|m| last_line_is_join_error(&m))
}

/// The run's last lines are join attempts (the process gave up after them).
fn last_line_is_join_error(m: &str) -> bool {
    m.lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        // The error the process exits with may take several lines (its causes).
        .take(12)
        .any(|l| l.contains(JOIN_FAILED_MARKER))
}

/// The container is not running and its last run ended with the join refusal: `Some(holder)`
/// with the member id the refusal named, if it named one.
fn join_refused(pod: &Pod) -> Option<Option<u64>> {
    let cs = pod.status.as_ref()?.container_statuses.as_ref()?;
    cs.iter().find_map(|c| {
        let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.message.as_deref());
        let now = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.message.as_deref());
        if running {
            return None;
        }
        // The newest termination speaks first.
        let m = [now, last]
            .into_iter()
            .flatten()
            .find(|m| m.contains(JOIN_REFUSED_MARKER))?;
        Some(refusal_holder(m))
    })
}

/// The newest termination message of the `flotilla` container while it is not running.
fn last_termination(pod: &Pod) -> Option<&str> {
    let c = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?;
    let state = c.state.as_ref();
    if state.is_some_and(|s| s.running.is_some()) {
        return None;
    }
    let now = state
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.as_deref());
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.as_deref());
    now.or(last)
}

/// The (member id, cluster id) a removed member's last words name.
pub fn removed_identity(log: &str) -> Option<(u64, u64)> {
    let at = log.rfind(REMOVED_MARKER)?;
    let id = log.get(at.checked_sub(16)?..at)?;
    let cluster = log.get(at + REMOVED_MARKER.len()..at + REMOVED_MARKER.len() + 16)?;
    Some((
        u64::from_str_radix(id, 16).ok()?,
        u64::from_str_radix(cluster, 16).ok()?,
    ))
}

/// The member id in the last refusal of a log tail.
pub fn refusal_holder(log: &str) -> Option<u64> {
    let at = log.rfind(JOIN_REFUSED_HOLDER)? + JOIN_REFUSED_HOLDER.len();
    let hex = log.get(at..at + 16)?;
    u64::from_str_radix(hex, 16).ok()
}

/// The leader's view, from whichever node claims leadership in the highest term.
pub fn cluster_view(statuses: &BTreeMap<u32, StatusResponse>) -> Option<ClusterView> {
    let leader = statuses
        .values()
        .filter(|s| s.role() == Role::Leader && s.leader_id == s.id)
        .max_by_key(|s| s.term)?;
    Some(ClusterView {
        cluster_id: leader.cluster_id,
        leader_id: leader.id,
        term: leader.term,
        commit_index: leader.commit_index,
        pending_conf_index: leader.pending_conf_index,
        members: leader
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                name: m.name.clone(),
                is_learner: m.is_learner,
                // The leader is healthy by definition; others as the leader reports them.
                healthy: m.id == leader.id || m.healthy.unwrap_or(false),
                match_index: m.match_index.unwrap_or(0),
                lag: m.lag.unwrap_or(u64::MAX),
                // Nodes older than the `caught_up` field: a fixed bound.
                caught_up: m
                    .caught_up
                    .unwrap_or_else(|| m.lag.is_some_and(|lag| lag <= CATCH_UP_BOUND)),
            })
            .collect(),
    })
}

/// The snapshot the plan works from.
pub fn observed(rc: &RaftCluster, names: &Names, inputs: &Inputs, now: Timestamp) -> Observed {
    let claims: Vec<u32> = inputs
        .pvcs
        .iter()
        .filter_map(|c| names.ordinal_of_pvc(c.metadata.name.as_deref()?))
        .collect();
    let mut pods: Vec<PodView> = inputs
        .pods
        .iter()
        .filter_map(|p| pod_view(names, p, &inputs.statuses, &claims, now))
        .collect();
    pods.sort_by_key(|p| p.ordinal);
    let mut pvcs: Vec<PvcView> = inputs
        .pvcs
        .iter()
        .filter_map(|c| {
            Some(PvcView {
                ordinal: names.ordinal_of_pvc(c.metadata.name.as_deref()?)?,
                terminating: c.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect();
    pvcs.sort_by_key(|p| p.ordinal);
    let bootstrapped = inputs
        .config_map
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("CLUSTER_STATE"))
        .is_some_and(|s| s == "existing");
    Observed {
        name: names.cluster.clone(),
        generation: rc.metadata.generation,
        desired: rc.spec.replicas,
        retention: rc.spec.storage.retention_on_scale_down,
        catch_up_deadline_secs: u64::from(rc.spec.catch_up_deadline_seconds),
        sts_replicas: inputs.sts.as_ref().map(|s| s.replicas),
        pods,
        pvcs,
        bootstrapped,
        cluster: cluster_view(&inputs.statuses),
        previous: rc.status.clone(),
        now: now.to_string(),
        selector: selector_string(names),
        applied: inputs
            .statuses
            .values()
            .filter(|s| s.id != 0)
            .map(|s| (s.id, s.applied_index))
            .collect(),
        spec_problems: {
            let mut v = rc.spec.problems();
            v.extend(tls_change(rc, inputs.config_map.as_ref()));
            v
        },
        storage_change: storage_change(rc, inputs.sts.as_ref()),
        sts_storage: inputs.sts.as_ref().and_then(|s| s.storage.clone()),
        update_revision: inputs.sts.as_ref().and_then(|s| s.update_revision.clone()),
        survivors: inputs
            .statuses
            .iter()
            .filter(|(_, s)| s.id != 0)
            .map(|(&ordinal, s)| Survivor {
                ordinal,
                id: s.id,
                last_term: s.last_term,
                last_index: s.last_index,
                applied_index: s.applied_index,
                voters: s
                    .members
                    .iter()
                    .filter(|m| !m.is_learner)
                    .map(|m| (m.id, m.name.clone()))
                    .collect(),
            })
            .collect(),
        pending_secs: inputs
            .pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
            .filter_map(|p| {
                let k = names.ordinal_of(p.metadata.name.as_deref()?)?;
                let created = p.metadata.creation_timestamp.as_ref()?.0;
                Some((
                    k,
                    u64::try_from(now.duration_since(created).as_secs()).ok()?,
                ))
            })
            .collect(),
        recovery: rc.spec.recovery.clone(),
        forcing: inputs
            .config_map
            .as_ref()
            .and_then(|cm| {
                cm.data
                    .as_ref()?
                    .get(crate::resources::FORCE_NEW_CLUSTER)
                    .cloned()
            })
            .filter(|pod| !pod.is_empty()),
    }
}

/// Describes a `spec.tls.mode` that differs from the one the cluster was created with (the
/// ConfigMap's `TLS_MODE`): members advertise http or https URLs to each other, so the mode
/// cannot change under a running cluster.
fn tls_change(rc: &RaftCluster, config_map: Option<&ConfigMap>) -> Option<String> {
    let data = config_map?.data.as_ref()?;
    if data.get("CLUSTER_STATE").map(String::as_str) != Some("existing") {
        return None;
    }
    // A cluster created before TLS existed has no TLS_MODE: it is Disabled.
    let have = data.get("TLS_MODE").map_or("Disabled", String::as_str);
    let want = crate::resources::tls_mode_name(rc.spec.tls.mode);
    (have != want).then(|| {
        format!(
            "spec.tls.mode is {want}, but the cluster was created with {have}: members \
             advertise their URLs to each other, so TLS cannot be switched on a running \
             cluster; set spec.tls.mode back to {have}"
        )
    })
}

/// Describes a `spec.storage` that differs from the volumes the StatefulSet already has.
fn storage_change(rc: &RaftCluster, sts: Option<&StsView>) -> Option<String> {
    let have = sts?.storage.as_ref()?;
    let want = ClaimStorage::of_spec(rc);
    if *have == want {
        return None;
    }
    let class = |c: &Option<String>| c.clone().unwrap_or_else(|| "(default)".to_owned());
    Some(format!(
        "spec.storage asks for {} of class {}, but the members' volumes are {} of class {}: a \
         StatefulSet's volume claims cannot change, so the cluster keeps its volumes; set \
         spec.storage back to match them",
        want.size,
        class(&want.storage_class_name),
        have.size,
        class(&have.storage_class_name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;
    use flotilla_proto::admin::Member;
    use serde_json::json;

    fn status(id: u64, role: Role, term: u64, members: Vec<Member>) -> StatusResponse {
        StatusResponse {
            id,
            name: format!("demo-{id}"),
            cluster_id: 7,
            role: role as i32,
            term,
            leader_id: if role == Role::Leader { id } else { 0 },
            commit_index: 10,
            members,
            ..Default::default()
        }
    }

    fn member(id: u64, learner: bool, healthy: Option<bool>) -> Member {
        Member {
            id,
            name: format!("demo-{id}"),
            is_learner: learner,
            match_index: Some(9),
            lag: Some(1),
            healthy,
            ..Default::default()
        }
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn leader_of_the_highest_term_supplies_the_configuration() {
        let mut st = BTreeMap::new();
        st.insert(0, status(0, Role::Leader, 3, vec![member(0, false, None)]));
        st.insert(
            1,
            status(
                1,
                Role::Leader,
                4,
                vec![
                    member(0, false, Some(false)),
                    member(1, false, None),
                    member(2, true, Some(true)),
                ],
            ),
        );
        st.insert(2, status(2, Role::Follower, 4, vec![]));
        let c = cluster_view(&st).expect("leader");
        assert_eq!(c.leader_id, 1);
        assert_eq!(c.members.len(), 3);
        assert!(!c.members[0].healthy);
        assert!(c.members[1].healthy, "the leader is healthy");
        assert!(c.members[2].is_learner);
        assert!(
            cluster_view(&BTreeMap::from([(2, status(2, Role::Follower, 4, vec![]))])).is_none()
        );
    }

    #[test]
    fn a_pod_that_gave_up_joining_is_known_to_have_an_empty_volume() {
        let rc = cluster(3);
        let names = Names::of(&rc).expect("names");
        let status = |message: &str| {
            json!({"phase": "Running", "containerStatuses": [{"name": "flotilla", "image": "i",
                "imageID": "", "ready": false, "restartCount": 2,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                "lastState": {"terminated": {"exitCode": 1, "message": message}}}]})
        };
        let inputs = Inputs {
            pods: vec![
                pod(json!({"metadata": {"name": "demo-1"}, "status": status(
                    "WARN flotilla::node: join attempt failed endpoint=demo.ns.svc:2379 error=unavailable attempt=29\nError: unavailable"
                )})),
                pod(json!({"metadata": {"name": "demo-2"}, "status": status("Error: disk full")})),
            ],
            ..Inputs::default()
        };
        let o = observed(&rc, &names, &inputs, Timestamp::UNIX_EPOCH);
        assert_eq!(o.pods[0].node, NodeIdentity::JoinFailed);
        assert_eq!(o.pods[1].node, NodeIdentity::Unknown);
    }

    #[test]
    fn pods_claims_and_config_are_read() {
        let rc = cluster(3);
        let names = Names::of(&rc).expect("names");
        let inputs = Inputs {
            sts: Some(StsView {
                replicas: 2,
                storage: None,
                update_revision: None,
            }),
            pods: vec![
                pod(json!({"metadata": {"name": "demo-0"}, "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]}})),
                pod(json!({"metadata": {"name": "demo-1"}, "status": {"phase": "Running",
                    "containerStatuses": [{"name": "flotilla", "image": "i", "imageID": "", "ready": false,
                        "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1,
                            "message": "join attempt failed error=etcdserver: Peer URLs already exists"}}}]}})),
                pod(json!({"metadata": {"name": "other-0"}})),
            ],
            pvcs: vec![
                serde_json::from_value(json!({"metadata": {"name": "data-demo-3", "deletionTimestamp": "2026-01-01T00:00:00Z"}})).expect("pvc"),
            ],
            config_map: Some(serde_json::from_value(json!({"metadata": {"name": "demo-config"}, "data": {"CLUSTER_STATE": "existing"}})).expect("cm")),
            statuses: BTreeMap::from([(0, status(0, Role::Leader, 1, vec![member(0, false, None)]))]),
        };
        let o = observed(&rc, &names, &inputs, Timestamp::UNIX_EPOCH);
        assert_eq!(o.pods.len(), 2, "pods of other clusters are ignored");
        assert!(o.pods[0].ready);
        assert_eq!(
            o.pods[0].node,
            NodeIdentity::Member {
                id: 0,
                cluster_id: 7
            }
        );
        assert!(!o.pods[1].ready);
        assert_eq!(o.pods[1].node, NodeIdentity::JoinRefused { holder: None });
        assert_eq!(
            o.pvcs,
            [PvcView {
                ordinal: 3,
                terminating: true
            }]
        );
        assert!(o.bootstrapped);
        assert_eq!(o.desired, 3);
        assert_eq!(o.sts_replicas, Some(2));
        assert_eq!(o.cluster.expect("cluster").leader_id, 0);
    }

    #[test]
    fn a_removed_members_last_words_name_its_identity() {
        // What `flotilla node` prints when it learns it was removed (node::RemovedFromCluster).
        let log = "2026-11-25T19:00:00Z ERROR this member was removed from the cluster; stopping\n\
                   Error: member 00000000000000ab was removed from cluster 0000000000000007: it \
                   stopped serving; remove its data dir (/data) before it joins again";
        assert_eq!(removed_identity(log), Some((0xab, 7)));
        assert_eq!(
            removed_identity("member xyz was removed from cluster 7"),
            None
        );
        let rc = cluster(3);
        let names = Names::of(&rc).expect("names");
        let inputs = Inputs {
            pods: vec![pod(
                json!({"metadata": {"name": "demo-2"}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "flotilla", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": log}}}]}}),
            )],
            ..Inputs::default()
        };
        let o = observed(&rc, &names, &inputs, Timestamp::UNIX_EPOCH);
        assert_eq!(
            o.pods[0].node,
            NodeIdentity::Member {
                id: 0xab,
                cluster_id: 7
            }
        );
        assert_eq!(
            o.pods[0].term, 0,
            "no Status answered: the identity carries no term"
        );
    }
}
