//! The real reconciler (`reconcile_once`) against the in-memory Kubernetes API, with the test
//! harness playing the StatefulSet controller, kubelet and the Raft nodes.
//!
//! The nodes here are a model (membership, leader, learner catch-up) behind [`NodeClient`]; the
//! harness is shaped so the model can be swapped for real `flotilla node` processes (start one
//! per pod the StatefulSet asks for, stop it when the pod goes, point a [`Locator`] at loopback
//! ports) once the node binary exists — see `SimNodes` for the contract such a swap must keep.
//!
//! Every pass builds a fresh `Context`, so nothing survives between passes except what the
//! API and the nodes hold: the operator is, in effect, restarted before every step.
//!
//! [`Locator`]: flotilla_operator::nodes::Locator

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flotilla_operator::controller::{Context, reconcile_once};
use flotilla_operator::crd::{Phase, RaftCluster, RaftClusterSpec, TlsMode};
use flotilla_operator::kube_api::Owned;
use flotilla_operator::memory::Memory;
use flotilla_operator::metrics::Metrics;
use flotilla_operator::nodes::{NodeClient, NodeError};
use flotilla_operator::plan::{Action, quorum};
use flotilla_operator::resources::{Names, labels};
use flotilla_operator::tls::{ClientTls, certs};
use flotilla_proto::admin::{Member, Role, StatusResponse};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use serde_json::json;

#[derive(Debug, Clone)]
struct SimMember {
    id: u64,
    name: String,
    learner: bool,
    lag: u64,
}

#[derive(Debug, Default)]
struct SimState {
    cluster_id: u64,
    leader: u64,
    members: Vec<SimMember>,
    /// Ordinals whose node process runs, with the member id on its volume.
    running: BTreeMap<u32, u64>,
    next_id: u64,
    /// Membership changes made during the current pass.
    changes_this_pass: usize,
    /// The identity the operator last said it dials the nodes with.
    tls: Option<ClientTls>,
    max_changes_per_pass: usize,
}

/// The Raft nodes as the operator sees them through the admin API.
#[derive(Clone, Default)]
struct SimNodes(Arc<Mutex<SimState>>);

impl SimNodes {
    fn st(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unreachable(names: &Names, k: u32) -> NodeError {
        NodeError::Endpoint(names.admin_endpoint(k))
    }

    fn check_quorum(s: &SimState) {
        let voters = s.members.iter().filter(|m| !m.learner).count();
        assert!(voters >= quorum(voters), "quorum kept");
        assert!(
            s.members.iter().any(|m| m.id == s.leader && !m.learner),
            "a voter leads"
        );
    }
}

impl NodeClient for SimNodes {
    fn use_tls(&self, _names: &Names, tls: Option<ClientTls>) {
        self.st().tls = tls;
    }

    async fn status(&self, names: &Names, k: u32) -> Result<StatusResponse, NodeError> {
        let s = self.st();
        let id = *s
            .running
            .get(&k)
            .ok_or_else(|| Self::unreachable(names, k))?;
        let is_leader = id == s.leader;
        Ok(StatusResponse {
            id,
            name: names.pod(k),
            cluster_id: s.cluster_id,
            role: if is_leader {
                Role::Leader
            } else {
                Role::Follower
            } as i32,
            term: 1,
            leader_id: s.leader,
            commit_index: 100,
            applied_index: 100,
            pending_conf_index: 0,
            members: s
                .members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    name: m.name.clone(),
                    is_learner: m.learner,
                    match_index: is_leader.then_some(100 - m.lag.min(100)),
                    lag: is_leader.then_some(m.lag),
                    healthy: is_leader.then_some(true),
                    ..Member::default()
                })
                .collect(),
            ..StatusResponse::default()
        })
    }

    async fn promote(&self, _names: &Names, _via: u32, id: u64) -> Result<(), NodeError> {
        let mut s = self.st();
        let m = s
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("promote a member");
        assert!(
            m.learner && m.lag <= 100,
            "promoted only when caught up: {m:?}"
        );
        m.learner = false;
        s.changes_this_pass += 1;
        Self::check_quorum(&s);
        Ok(())
    }

    async fn remove(&self, _names: &Names, _via: u32, id: u64) -> Result<(), NodeError> {
        let mut s = self.st();
        assert_ne!(id, s.leader, "the leader is never removed");
        s.members.retain(|m| m.id != id);
        s.changes_this_pass += 1;
        Self::check_quorum(&s);
        Ok(())
    }

    async fn transfer(&self, _names: &Names, _via: u32, _target: u64) -> Result<u64, NodeError> {
        let mut s = self.st();
        let leader = s.leader;
        let to = s
            .members
            .iter()
            .find(|m| !m.learner && m.id != leader)
            .expect("another voter")
            .id;
        s.leader = to;
        Ok(to)
    }
}

struct Harness {
    rc: RaftCluster,
    kube: Memory,
    nodes: SimNodes,
    names: Names,
}

impl Harness {
    fn new(replicas: i32) -> Self {
        let mut rc = RaftCluster::new(
            "demo",
            serde_json::from_value::<RaftClusterSpec>(
                json!({"replicas": replicas, "image": "flotilla:test"}),
            )
            .expect("spec"),
        );
        rc.meta_mut().namespace = Some("ns".into());
        rc.meta_mut().uid = Some("u1".into());
        rc.meta_mut().generation = Some(1);
        let names = Names::of(&rc).expect("names");
        Self {
            rc,
            kube: Memory::default(),
            nodes: SimNodes::default(),
            names,
        }
    }

    async fn pass(&mut self) -> flotilla_operator::plan::Plan {
        // A fresh context every time: the operator keeps nothing between passes.
        let ctx = Context::new(
            self.kube.clone(),
            self.nodes.clone(),
            Metrics::new().expect("metrics"),
        );
        self.nodes.st().changes_this_pass = 0;
        let plan = reconcile_once(&self.rc, &ctx).await.expect("reconcile");
        {
            let mut s = self.nodes.st();
            s.max_changes_per_pass = s.max_changes_per_pass.max(s.changes_this_pass);
        }
        self.rc.status = self.kube.state().statuses.last().cloned();
        self.kubelet();
        plan
    }

    /// Plays the StatefulSet controller and kubelet, and the nodes starting in the pods.
    fn kubelet(&mut self) {
        let (replicas, bootstrapped, tls_files) = {
            let k = self.kube.state();
            let tls_files: Option<BTreeMap<String, k8s_openapi::ByteString>> =
                match k.objects.get(&("Secret", self.names.tls_secret())) {
                    Some(Owned::Secret(s)) => s.data.clone(),
                    _ => None,
                };
            let cm = match k.objects.get(&("ConfigMap", self.names.config_map())) {
                Some(Owned::ConfigMap(c)) => c.data.clone().unwrap_or_default(),
                _ => BTreeMap::new(),
            };
            let tls_on = cm.get("TLS_MODE").is_some_and(|m| m != "Disabled");
            (
                k.sts_replicas.unwrap_or(0) as u32,
                cm.get("CLUSTER_STATE").is_some_and(|s| s == "existing"),
                tls_on.then(|| tls_files.unwrap_or_default()),
            )
        };
        let mut k = self.kube.state();
        let mut s = self.nodes.st();
        // Pods above the size stop.
        let gone: Vec<u32> = s
            .running
            .keys()
            .copied()
            .filter(|&o| o >= replicas)
            .collect();
        for o in gone {
            s.running.remove(&o);
            k.pods.remove(&self.names.pod(o));
        }
        for o in 0..replicas {
            let pvc = self.names.pvc(o);
            k.pvcs.entry(pvc.clone()).or_insert_with(|| {
                serde_json::from_value::<PersistentVolumeClaim>(
                    json!({"metadata": {"name": pvc, "labels": labels(&self.names)}}),
                )
                .expect("pvc")
            });
            // With TLS on, the start script waits for the pod's certificate in the mounted Secret.
            let pod = self.names.pod(o);
            if let Some(files) = &tls_files
                && !(files.contains_key(&format!("{pod}.crt")) && files.contains_key("ca.crt"))
            {
                continue;
            }
            if !s.running.contains_key(&o) {
                // The start script: pod 0 of a never-bootstrapped cluster founds it; every other
                // start joins through the leader as a learner (or waits if there is none).
                let id = 0x100 + s.next_id;
                s.next_id += 1;
                if !bootstrapped && o == 0 && s.members.is_empty() {
                    s.cluster_id = 0xc1;
                    s.leader = id;
                    s.members.push(SimMember {
                        id,
                        name: self.names.pod(o),
                        learner: false,
                        lag: 0,
                    });
                } else if s.members.iter().any(|m| m.id == s.leader) {
                    s.members.push(SimMember {
                        id,
                        name: self.names.pod(o),
                        learner: true,
                        lag: 250,
                    });
                } else {
                    continue;
                }
                s.running.insert(o, id);
            }
            let name = self.names.pod(o);
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels(&self.names)},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .expect("pod");
            k.pods.insert(name, pod);
        }
        // Learners catch up between passes.
        for m in &mut s.members {
            m.lag = m.lag.saturating_sub(100);
        }
    }

    /// Passes until the plan has nothing left to do; returns how many it took.
    async fn settle(&mut self, replicas: i32) -> usize {
        self.rc.spec.replicas = replicas;
        for n in 1..=60 {
            let p = self.pass().await;
            if !p.busy && p.actions.is_empty() {
                return n;
            }
        }
        panic!(
            "did not settle at {replicas}: {:?}",
            self.kube.state().statuses.last()
        );
    }
}

#[tokio::test]
async fn scale_1_3_5_3_1_one_change_at_a_time() {
    let mut h = Harness::new(1);
    let mut passes = BTreeMap::new();
    for n in [1, 3, 5, 3, 1] {
        passes.insert(n, h.settle(n).await);
        let st = h.kube.state().statuses.last().cloned().expect("status");
        assert_eq!(st.phase, Phase::Running, "{st:?}");
        assert_eq!(st.members.len(), n as usize);
        assert_eq!(st.replicas, n);
        assert!(st.leader.is_some());
        assert!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        );
        let k = h.kube.state();
        assert_eq!(k.sts_replicas, Some(n));
        assert_eq!(
            k.pvcs.len(),
            n as usize,
            "claims of removed members are deleted"
        );
        let pdb = match k.objects.get(&("PodDisruptionBudget", "demo".into())) {
            Some(Owned::PodDisruptionBudget(p)) => p.clone(),
            other => panic!("pdb: {other:?}"),
        };
        let max = pdb.spec.and_then(|s| s.max_unavailable);
        assert_eq!(
            max,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int((n - 1) / 2))
        );
    }
    let k = h.kube.state();
    // The StatefulSet moved one pod at a time: 2,3,4,5 then 4,3,2,1.
    assert_eq!(k.scale_log, [2, 3, 4, 5, 4, 3, 2, 1]);
    assert_eq!(h.nodes.st().max_changes_per_pass, 1);
    let reasons: Vec<&str> = k.events.iter().map(|e| e.reason).collect();
    for r in [
        "Bootstrapping",
        "ScalingUp",
        "PromotingLearner",
        "ScalingDown",
        "DeletingVolume",
    ] {
        assert!(reasons.contains(&r), "{r} in {reasons:?}");
    }
    let cm = match k.objects.get(&("ConfigMap", "demo-config".into())) {
        Some(Owned::ConfigMap(c)) => c.data.clone().expect("data"),
        other => panic!("cm: {other:?}"),
    };
    assert_eq!(cm["CLUSTER_STATE"], "existing");
    eprintln!("passes to settle: {passes:?}");
}

#[tokio::test]
async fn leader_on_the_leaving_ordinal_hands_over_first() {
    let mut h = Harness::new(3);
    h.settle(3).await;
    let top = h
        .nodes
        .st()
        .members
        .iter()
        .find(|m| m.name == "demo-2")
        .expect("m")
        .id;
    h.nodes.st().leader = top;
    h.settle(2).await;
    let s = h.nodes.st();
    assert_ne!(s.leader, top);
    assert!(s.members.iter().all(|m| m.id != top));
    let actions: Vec<String> = h
        .kube
        .state()
        .events
        .iter()
        .map(|e| e.reason.to_string())
        .collect();
    let t = actions
        .iter()
        .position(|r| r == "TransferringLeadership")
        .expect("transfer");
    let r = actions
        .iter()
        .rposition(|r| r == "ScalingDown")
        .expect("scale down");
    assert!(t < r);
}

#[tokio::test]
async fn unreachable_nodes_change_nothing() {
    let mut h = Harness::new(3);
    h.settle(3).await;
    h.nodes.st().running.clear();
    h.rc.spec.replicas = 1;
    let ctx = Context::new(
        h.kube.clone(),
        h.nodes.clone(),
        Metrics::new().expect("metrics"),
    );
    let p = reconcile_once(&h.rc, &ctx).await.expect("reconcile");
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::Remove { .. } | Action::ScaleStatefulSet { .. }))
    );
    assert_eq!(h.kube.state().sts_replicas, Some(3));
    assert_eq!(p.status.phase, Phase::Degraded);
}

fn secret_files(h: &Harness, name: &str) -> BTreeMap<String, String> {
    match h.kube.state().objects.get(&("Secret", name.to_owned())) {
        Some(Owned::Secret(s)) => s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf8")))
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[tokio::test]
async fn tls_cluster_scales_3_5_3_with_a_certificate_for_every_member() {
    let mut h = Harness::new(1);
    h.rc.spec.tls.mode = TlsMode::Operator;
    let mut first_certs = BTreeMap::new();
    for n in [3, 5, 3] {
        h.settle(n).await;
        let st = h.kube.state().statuses.last().cloned().expect("status");
        assert_eq!(st.phase, Phase::Running, "{st:?}");
        assert_eq!(st.members.len(), n as usize);
        let ready = st
            .conditions
            .iter()
            .find(|c| c.type_ == "CertificatesReady")
            .expect("CertificatesReady");
        assert_eq!(ready.status, "True", "{ready:?}");
        assert_eq!(st.tls.as_ref().map(|t| t.secret.as_str()), Some("demo-tls"));

        let bundle = secret_files(&h, "demo-tls");
        let ca = secret_files(&h, "demo-ca")["tls.crt"].clone();
        let mut want: Vec<String> = (0..n)
            .flat_map(|k| [format!("demo-{k}.crt"), format!("demo-{k}.key")])
            .collect();
        want.push("ca.crt".into());
        want.sort();
        assert_eq!(bundle.keys().cloned().collect::<Vec<_>>(), want);
        for k in 0..n {
            let cert = &bundle[&format!("demo-{k}.crt")];
            assert!(certs::signed_by(cert, &ca));
            // A member keeps its certificate while the cluster grows and shrinks around it.
            let first = first_certs.entry(k).or_insert_with(|| cert.clone());
            assert_eq!(first, cert, "demo-{k} was re-issued");
        }
        let tls = h
            .nodes
            .st()
            .tls
            .clone()
            .expect("the operator dials with TLS");
        assert_eq!(tls.ca, ca);
        assert_eq!(
            secret_files(&h, "demo-client-tls")["tls.crt"],
            tls.identity.cert
        );
        let cm = match h
            .kube
            .state()
            .objects
            .get(&("ConfigMap", "demo-config".into()))
        {
            Some(Owned::ConfigMap(c)) => c.data.clone().expect("data"),
            other => panic!("cm: {other:?}"),
        };
        assert_eq!(cm["JOIN_ENDPOINTS"], "https://demo.ns.svc:2379");
    }
    let reasons: Vec<&str> = h.kube.state().events.iter().map(|e| e.reason).collect();
    assert!(
        reasons.contains(&"CertificateAuthorityCreated"),
        "{reasons:?}"
    );

    // Switching TLS off under the running cluster is refused and changes nothing.
    let before = h.kube.state().objects.clone();
    h.rc.spec.tls.mode = TlsMode::Disabled;
    let p = h.pass().await;
    assert!(p.hold);
    assert!(
        p.problems
            .iter()
            .any(|(r, m)| *r == "InvalidSpec" && m.contains("cannot be switched")),
        "{:?}",
        p.problems
    );
    assert_eq!(h.kube.state().objects, before);
}

#[tokio::test]
async fn cert_manager_cluster_starts_once_cert_manager_has_issued() {
    let mut h = Harness::new(3);
    h.rc.spec.tls.mode = TlsMode::CertManager;
    h.rc.spec.tls.issuer_ref = Some(flotilla_operator::crd::IssuerRef {
        name: "ca-issuer".into(),
        kind: "Issuer".into(),
        group: "cert-manager.io".into(),
    });
    // Without cert-manager: reported, nothing starts.
    let p = h.pass().await;
    assert!(
        h.kube.state().pods.is_empty(),
        "no pod starts without its certificate"
    );
    let _ = p;
    let st = h.kube.state().statuses.last().cloned().expect("status");
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "CertificatesReady")
        .expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "CertManagerNotInstalled")
    );

    // cert-manager installed: the harness plays it, issuing every Certificate it finds.
    h.kube.state().cert_manager = true;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let ca = certs::new_ca("cert-manager CA", now, 365).expect("ca");
    for _ in 0..40 {
        h.pass().await;
        let mut k = h.kube.state();
        let certificates: Vec<(String, serde_json::Value)> = k
            .objects
            .values()
            .filter_map(|o| match o {
                Owned::Certificate(c) => Some((
                    c.metadata.name.clone().unwrap_or_default(),
                    c.data["spec"].clone(),
                )),
                _ => None,
            })
            .collect();
        for (_, spec) in certificates {
            let secret = spec["secretName"].as_str().expect("secretName").to_owned();
            if k.foreign_secrets.contains_key(&secret) {
                continue;
            }
            let mut names: Vec<String> = spec["dnsNames"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(spec["ipAddresses"].as_array().into_iter().flatten())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            names.sort();
            let usage = if spec["usages"].to_string().contains("server auth") {
                certs::Usage::Member
            } else {
                certs::Usage::Client
            };
            let cn = spec["commonName"].as_str().expect("cn");
            let p = certs::issue(&ca, cn, &names, usage, now, 90).expect("issue");
            let s = serde_json::from_value(json!({
                "metadata": {"name": secret},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": k8s_openapi::ByteString(p.cert.into_bytes()),
                    "tls.key": k8s_openapi::ByteString(p.key.into_bytes()),
                    "ca.crt": k8s_openapi::ByteString(ca.cert.clone().into_bytes()),
                }
            }))
            .expect("secret");
            k.foreign_secrets.insert(secret, s);
        }
        drop(k);
        let st = h.kube.state().statuses.last().cloned().expect("status");
        if st.phase == Phase::Running && st.members.len() == 3 {
            break;
        }
    }
    let st = h.kube.state().statuses.last().cloned().expect("status");
    assert_eq!(st.phase, Phase::Running, "{st:?}");
    assert_eq!(st.members.len(), 3);
    let bundle = secret_files(&h, "demo-tls");
    assert_eq!(bundle["ca.crt"], ca.cert);
    for k in 0..3 {
        assert!(certs::signed_by(
            &bundle[&format!("demo-{k}.crt")],
            &ca.cert
        ));
    }
    let tls = h.nodes.st().tls.clone().expect("client identity");
    assert_eq!(
        certs::facts(&tls.identity.cert).expect("facts").common_name,
        "root"
    );
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "CertificatesReady")
        .expect("condition");
    assert_eq!(c.status, "True", "{c:?}");
}
