//! Tests of the objects built from a RaftCluster, and the `cluster` fixture other modules'
//! tests share.

use super::*;
use crate::crd::RaftClusterSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub(crate) fn cluster(replicas: i32) -> RaftCluster {
    let mut rc = RaftCluster::new(
        "demo",
        serde_json::from_value::<RaftClusterSpec>(
            json!({"replicas": replicas, "image": "flotilla:test", "storage": {"size": "2Gi", "storageClassName": "fast"}}),
        )
        .expect("spec"),
    );
    rc.meta_mut().namespace = Some("ns".into());
    rc.meta_mut().uid = Some("uid-1".into());
    rc
}

#[test]
fn names_and_ordinals() {
    let n = Names::of(&cluster(3)).expect("names");
    assert_eq!(n.pod(2), "demo-2");
    assert_eq!(n.pvc(2), "data-demo-2");
    assert_eq!(n.ordinal_of("demo-12"), Some(12));
    assert_eq!(n.ordinal_of("demo-x"), None);
    assert_eq!(n.ordinal_of("demox-1"), None);
    assert_eq!(n.ordinal_of("demo-"), None);
    assert_eq!(n.ordinal_of_pvc("data-demo-4"), Some(4));
    assert_eq!(n.ordinal_of_pvc("logs-demo-4"), None);
    assert_eq!(n.pod_host(1), "demo-1.demo-peer.ns.svc");
}

#[test]
fn pdb_never_allows_breaking_quorum() {
    assert_eq!(
        [1, 2, 3, 4, 5, 6, 7].map(max_unavailable),
        [0, 0, 1, 1, 2, 2, 3]
    );
    for n in 1..10 {
        let quorum = n / 2 + 1;
        assert!(n - max_unavailable(n) >= quorum, "n={n}");
    }
    let pdb = pod_disruption_budget(&cluster(5), 3).expect("pdb");
    let spec = pdb.spec.expect("spec");
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.min_available, None);
}

#[test]
fn stateful_set_from_spec() {
    let sts = stateful_set(&cluster(3), None).expect("sts");
    assert_eq!(sts.metadata.name.as_deref(), Some("demo"));
    let owner = &sts.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("RaftCluster", "demo", "uid-1")
    );
    assert_eq!(owner.controller, Some(true));
    let spec = sts.spec;
    assert_eq!(
        spec.replicas, None,
        "replicas change only through the scale subresource"
    );
    assert_eq!(spec.service_name.as_deref(), Some("demo-peer"));
    let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let cs = claim.spec.as_ref().expect("claim spec");
    assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
    let req = cs
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(req["storage"].0, "2Gi");
    let pod = spec.template.spec.expect("pod spec");
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("flotilla:test"));
    let script = &c.command.as_ref().expect("command")[2];
    assert!(script.contains("--initial-cluster \"$POD_NAME=http://$host:2380\""));
    assert!(script.contains("--join \"$JOIN_ENDPOINTS\""));
    assert!(script.contains("--advertise-peer \"http://$host:2380\""));
    assert_eq!(
        c.env_from.as_ref().expect("envFrom")[0]
            .config_map_ref
            .as_ref()
            .expect("cm")
            .name,
        "demo-config"
    );
    assert_eq!(
        spec.selector.match_labels.as_ref().expect("labels"),
        &selector(&Names::of(&cluster(3)).expect("names"))
    );
    assert_eq!(
        spec.persistent_volume_claim_retention_policy, None,
        "1.20 does not know the field; its default (Retain) is what the operator wants"
    );
    for p in pod.containers[0].ports.as_ref().expect("ports") {
        assert_eq!(p.protocol.as_deref(), Some("TCP"));
    }
}

#[test]
fn pods_are_spread_restricted_and_rolled_by_the_operator() {
    let mut rc = cluster(3);
    let sts = stateful_set(&rc, None).expect("sts");
    assert_eq!(
        sts.spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("OnDelete")
    );
    let pod = sts.spec.template.spec.expect("pod");
    let sc = pod.security_context.expect("security context");
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_),
        Some("RuntimeDefault".to_owned())
    );
    let c = &pod.containers[0];
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&c.startup_probe).as_deref(), Some("/healthz"));
    assert_eq!(
        path(&c.liveness_probe).as_deref(),
        Some("/healthz"),
        "liveness never depends on quorum"
    );
    let anti = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .expect("anti-affinity by default");
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    assert_eq!(
        anti.preferred_during_scheduling_ignored_during_execution
            .expect("soft")[0]
            .pod_affinity_term
            .topology_key,
        "kubernetes.io/hostname"
    );
    rc.spec.scheduling.anti_affinity = AntiAffinity::Hard;
    let anti = stateful_set(&rc, None)
        .expect("sts")
        .spec
        .template
        .spec
        .and_then(|p| p.affinity)
        .and_then(|a| a.pod_anti_affinity)
        .expect("hard");
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_some()
    );
}

#[test]
fn scheduling_and_resources_reach_the_pod() {
    let mut rc = cluster(3);
    rc.spec.scheduling.node_selector = Some(BTreeMap::from([("disk".into(), "ssd".into())]));
    rc.spec.image_pull_policy = Some("Never".into());
    let pod = stateful_set(&rc, None)
        .expect("sts")
        .spec
        .template
        .spec
        .expect("pod");
    assert_eq!(pod.node_selector.expect("selector")["disk"], "ssd");
    assert_eq!(
        pod.containers[0].image_pull_policy.as_deref(),
        Some("Never")
    );
}

#[test]
fn settings_change_rolls_pods_but_bootstrap_flag_does_not() {
    let a = cluster(3);
    let mut b = cluster(3);
    b.spec.raft.tick_ms = 50;
    let ann = |rc: &RaftCluster| {
        stateful_set(rc, None)
            .expect("sts")
            .spec
            .template
            .metadata
            .expect("meta")
            .annotations
            .expect("ann")["flotilla.dev/settings-hash"]
            .clone()
    };
    assert_ne!(ann(&a), ann(&b));
    assert_eq!(ann(&a), ann(&cluster(3)));
}

#[test]
fn services_and_config() {
    let rc = cluster(3);
    let peer = peer_service(&rc).expect("peer").spec.expect("spec");
    assert_eq!(peer.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peer.publish_not_ready_addresses, Some(true));
    let client = client_service(&rc).expect("client").spec.expect("spec");
    assert_eq!(client.ports.expect("ports")[0].port, 2379);
    assert_eq!(client.publish_not_ready_addresses, None);
    let cm = config_map(&rc, false).expect("cm").data.expect("data");
    assert_eq!(cm["CLUSTER_STATE"], "new");
    assert_eq!(cm["JOIN_ENDPOINTS"], "demo.ns.svc:2379");
    assert_eq!(cm["FLOTILLA_CLUSTER_TOKEN"], "ns/demo/uid-1");
    assert_eq!(cm["FLOTILLA_ELECTION_TICKS"], "10");
    let cm = config_map(&rc, true).expect("cm").data.expect("data");
    assert_eq!(cm["CLUSTER_STATE"], "existing");
    assert!(
        !cm.contains_key("FLOTILLA_JOIN"),
        "FLOTILLA_JOIN would conflict with --initial-cluster"
    );
}

#[test]
fn resource_without_namespace_is_an_error() {
    let mut rc = cluster(1);
    rc.meta_mut().namespace = None;
    assert!(matches!(
        stateful_set(&rc, None),
        Err(BuildError::Missing("namespace"))
    ));
}
