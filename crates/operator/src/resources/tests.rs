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
    assert!(script.contains("--initial-cluster \"$POD_NAME=$scheme://$host:2380\""));
    assert!(script.contains("--join \"$JOIN_ENDPOINTS\""));
    assert!(script.contains("--advertise-peer \"$scheme://$host:2380\""));
    assert!(script.contains("scheme=http\n"));
    assert!(
        pod.volumes.is_none(),
        "without TLS the template is what it was before TLS existed"
    );
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

#[test]
fn tls_mounts_the_members_secret_and_switches_urls_to_https() {
    let plain = cluster(3);
    let mut rc = cluster(3);
    rc.spec.tls.mode = crate::crd::TlsMode::Operator;
    let cm = config_map(&rc, false).expect("cm");
    let d = cm.data.expect("data");
    assert_eq!(d["TLS_MODE"], "Operator");
    assert_eq!(d["TLS_SECRET"], "demo-tls");
    assert_eq!(d["JOIN_ENDPOINTS"], "https://demo.ns.svc:2379");
    assert_eq!(d["FLOTILLA_CLIENT_CERT_AUTH"], "false");
    let plain_cm = config_map(&plain, false).expect("cm").data.expect("data");
    assert_eq!(plain_cm["TLS_MODE"], "Disabled");
    assert!(!plain_cm.contains_key("TLS_SECRET"));

    let sts = stateful_set(&rc, None).expect("sts");
    let pod = sts.spec.template.spec.expect("pod");
    let vols = pod.volumes.expect("volumes");
    let secret = vols[0].secret.as_ref().expect("secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("demo-tls"));
    assert_eq!(secret.default_mode, Some(0o440));
    let mounts = pod.containers[0].volume_mounts.as_ref().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == crate::tls::MOUNT && m.read_only == Some(true))
    );
    let hash = |rc: &RaftCluster| {
        stateful_set(rc, None)
            .expect("sts")
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations")["flotilla.dev/settings-hash"]
            .clone()
    };
    let mut auth = rc.clone();
    auth.spec.tls.client_cert_auth = true;
    assert_ne!(hash(&rc), hash(&auth), "client-cert-auth needs a restart");
    assert_ne!(hash(&plain), hash(&rc));
}

#[test]
fn start_script_waits_for_its_certificate_and_passes_the_tls_files() {
    // Runs the real script with a stub `flotilla` that prints its arguments and environment.
    let dir = tempfile::tempdir().expect("tmp");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let stub = bin.join("flotilla");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho \"ARGS $*\"\nenv | grep ^FLOTILLA_ | sort\n",
    )
    .expect("stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).expect("tls");
    for f in ["demo-1.crt", "demo-1.key", "ca.crt"] {
        std::fs::write(tls.join(f), "x").expect("file");
    }
    let script = START_SCRIPT.replace("/etc/flotilla/tls", &tls.display().to_string());
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("POD_NAME", "demo-1")
        .env("POD_NAMESPACE", "ns")
        .env("PEER_SERVICE", "demo-peer")
        .env("CLUSTER_STATE", "existing")
        .env("JOIN_ENDPOINTS", "https://demo.ns.svc:2379")
        .env("TLS_MODE", "Operator")
        .env("TLS_SECRET", "demo-tls")
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--advertise-peer https://demo-1.demo-peer.ns.svc:2380"),
        "{text}"
    );
    assert!(text.contains("--join https://demo.ns.svc:2379"), "{text}");
    let t = tls.display();
    for want in [
        format!("FLOTILLA_CERT_FILE={t}/demo-1.crt"),
        format!("FLOTILLA_PEER_KEY_FILE={t}/demo-1.key"),
        format!("FLOTILLA_PEER_TRUSTED_CA_FILE={t}/ca.crt"),
        "FLOTILLA_PEER_CLIENT_CERT_AUTH=true".to_owned(),
    ] {
        assert!(text.contains(&want), "{want} in {text}");
    }
}

#[test]
fn network_policy_lets_peers_only_from_members_and_clients_from_the_selection() {
    let rc = cluster(3);
    let operator = (
        "flotilla-system".to_owned(),
        BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "flotilla-operator".to_owned(),
        )]),
    );
    let np = serde_json::to_value(network_policy(&rc, Some(&operator)).expect("np")).expect("json");
    let ingress = np["spec"]["ingress"].as_array().expect("ingress");
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "demo"
    );
    assert_eq!(ingress[0]["ports"][0]["port"], 2380);
    assert_eq!(ingress[0]["from"].as_array().expect("from").len(), 1);
    assert_eq!(
        ingress[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "demo"
    );
    assert_eq!(ingress[1]["ports"][0]["port"], 2379);
    let from = ingress[1]["from"].as_array().expect("from");
    assert_eq!(from.len(), 3);
    assert_eq!(
        from[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "flotilla-system"
    );
    assert_eq!(
        from[2],
        json!({"podSelector": {}}),
        "default: the cluster's namespace"
    );
    assert_eq!(ingress[2]["ports"][0]["port"], 9379);
    assert!(ingress[2].get("from").is_none(), "metrics from anywhere");

    let mut sel = cluster(3);
    sel.spec.network_policy.client_namespace_selector =
        serde_json::from_value(json!({"matchLabels": {"flotilla.dev/client": "true"}}))
            .expect("selector");
    let np = serde_json::to_value(network_policy(&sel, None).expect("np")).expect("json");
    let from = np["spec"]["ingress"][1]["from"]
        .as_array()
        .expect("from")
        .clone();
    assert_eq!(from.len(), 2);
    assert_eq!(
        from[1]["namespaceSelector"]["matchLabels"]["flotilla.dev/client"],
        "true"
    );
}
