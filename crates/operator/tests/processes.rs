//! The real reconciler against the in-memory Kubernetes API and real `flotilla node` processes:
//! the harness plays StatefulSet controller and kubelet, starting a process for every pod the
//! StatefulSet asks for (with the same bootstrap-or-join rule as the pods' start script) and
//! stopping it when the pod goes. Scale 1 → 3 → 5 → 3 → 1 under a background write load; no
//! acknowledged write may be lost, at most one membership change is made per pass, a leader
//! exists whenever the operator looks, and the status is right at the end.
//!
//! Needs the node binary: `FLOTILLA_BIN`, or `flotilla` in the same target folder as this test,
//! which the test builds itself first (cargo makes that a no-op when it is up to date):
//!
//!   cargo test -p flotilla-operator --test processes -- --nocapture

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flotilla_operator::controller::{Context, reconcile_once};
use flotilla_operator::crd::{MemberRole, Phase, RaftCluster, RaftClusterSpec};
use flotilla_operator::kube_api::Owned;
use flotilla_operator::memory::Memory;
use flotilla_operator::metrics::Metrics;
use flotilla_operator::nodes::{GrpcNodes, Locator, NodeClient, NodeError};
use flotilla_operator::plan::Action;
use flotilla_operator::resources::{Names, labels};
use flotilla_proto::admin::StatusResponse;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use serde_json::json;

/// Each test gets its own port range, so tests can run in parallel.
fn client_port(base: u16, k: u32) -> u16 {
    base + 10 * k as u16
}

/// Loopback ports (from a base) instead of pod DNS.
#[derive(Clone, Copy)]
struct Loopback(u16);
impl Locator for Loopback {
    fn endpoint(&self, _names: &Names, k: u32) -> String {
        format!("http://127.0.0.1:{}", client_port(self.0, k))
    }
}

/// The real gRPC client, counting membership calls per pass.
#[derive(Clone)]
struct Counting {
    inner: GrpcNodes<Loopback>,
    calls: Arc<AtomicU64>,
}
impl NodeClient for Counting {
    async fn status(&self, n: &Names, k: u32) -> Result<StatusResponse, NodeError> {
        self.inner.status(n, k).await
    }
    async fn promote(&self, n: &Names, via: u32, id: u64) -> Result<(), NodeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.promote(n, via, id).await
    }
    async fn remove(&self, n: &Names, via: u32, id: u64) -> Result<(), NodeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.remove(n, via, id).await
    }
    async fn transfer(&self, n: &Names, via: u32, t: u64) -> Result<u64, NodeError> {
        self.inner.transfer(n, via, t).await
    }
}

struct Kubelet {
    bin: PathBuf,
    dir: tempfile::TempDir,
    names: Names,
    base: u16,
    procs: BTreeMap<u32, Child>,
    /// Pods whose process exited: the tail of its log, as `terminationMessagePolicy:
    /// FallbackToLogsOnError` puts it in the pod status. The harness keeps such a pod in
    /// back-off until the operator deletes it (a real kubelet would retry after a back-off).
    crashed: BTreeMap<u32, String>,
}

impl Kubelet {
    fn data_dir(&self, k: u32) -> PathBuf {
        self.dir.path().join(self.names.pvc(k))
    }

    fn start(&mut self, k: u32, bootstrap: bool) {
        let name = self.names.pod(k);
        let c = client_port(self.base, k);
        let (p, m) = (c + 1, c + 2);
        let mut cmd = Command::new(&self.bin);
        cmd.args(["node", "--name", &name])
            .arg("--data-dir")
            .arg(self.data_dir(k))
            .args(["--listen-client", &format!("127.0.0.1:{c}")])
            .args(["--listen-peer", &format!("127.0.0.1:{p}")])
            .args(["--listen-metrics", &format!("127.0.0.1:{m}")])
            .args(["--tick-ms", "20"])
            // As in a pod: no backtraces, so the log's tail is the error itself.
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log"),
            );
        if bootstrap {
            cmd.args(["--initial-cluster", &format!("{name}=http://127.0.0.1:{p}")]);
        } else {
            // The client Service: every other running member.
            let eps: Vec<String> = self
                .procs
                .keys()
                .map(|&o| format!("127.0.0.1:{}", client_port(self.base, o)))
                .collect();
            cmd.args(["--join", &eps.join(",")]);
        }
        self.procs.insert(k, cmd.spawn().expect("spawn flotilla"));
    }

    fn stop(&mut self, k: u32) {
        if let Some(mut c) = self.procs.remove(&k) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One round of StatefulSet controller + kubelet.
    fn sync(&mut self, kube: &Memory) {
        let (replicas, bootstrapped) = {
            let s = kube.state();
            let cm = match s.objects.get(&("ConfigMap", self.names.config_map())) {
                Some(Owned::ConfigMap(c)) => c.data.clone().unwrap_or_default(),
                _ => BTreeMap::new(),
            };
            (
                s.sts_replicas.unwrap_or(0) as u32,
                cm.get("CLUSTER_STATE").is_some_and(|v| v == "existing"),
            )
        };
        let above: Vec<u32> = self
            .procs
            .keys()
            .copied()
            .filter(|&k| k >= replicas)
            .collect();
        for k in above {
            self.stop(k);
            kube.state().pods.remove(&self.names.pod(k));
        }
        // Claims the operator deleted: the volume goes.
        let pvcs: Vec<String> = kube.state().pvcs.keys().cloned().collect();
        for k in replicas..replicas + 8 {
            if !pvcs.contains(&self.names.pvc(k)) {
                let _ = std::fs::remove_dir_all(self.data_dir(k));
            }
        }
        let deleted: Vec<String> = std::mem::take(&mut kube.state().deleted_pods);
        for k in 0..replicas {
            if deleted.contains(&self.names.pod(k)) {
                self.crashed.remove(&k);
                self.stop(k);
            }
            let exited = self
                .procs
                .get_mut(&k)
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.procs.remove(&k);
                let log = std::fs::read_to_string(
                    self.dir.path().join(format!("{}.log", self.names.pod(k))),
                )
                .unwrap_or_default();
                let tail = log[log.len().saturating_sub(2048)..].to_owned();
                self.crashed.insert(k, tail);
            }
            if !self.procs.contains_key(&k) && !self.crashed.contains_key(&k) {
                self.start(k, k == 0 && !bootstrapped && !self.data_dir(k).exists());
            }
            let mut s = kube.state();
            let pvc = self.names.pvc(k);
            s.pvcs.entry(pvc.clone()).or_insert_with(|| {
                serde_json::from_value::<PersistentVolumeClaim>(
                    json!({"metadata": {"name": pvc, "labels": labels(&self.names)}}),
                )
                .expect("pvc")
            });
            let status = match self.crashed.get(&k) {
                None => {
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
                }
                Some(msg) => json!({
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{
                        "name": "flotilla", "image": "local", "imageID": "", "ready": false, "restartCount": 1,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "message": msg}},
                    }],
                }),
            };
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": self.names.pod(k), "labels": labels(&self.names)},
                "status": status,
            }))
            .expect("pod");
            s.pods.insert(self.names.pod(k), pod);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let ks: Vec<u32> = self.procs.keys().copied().collect();
        for k in ks {
            self.stop(k);
        }
    }
}

/// The `flotilla` binary: `FLOTILLA_BIN`, else the one beside this test in the target folder
/// (`target/<profile>/deps/processes-…` → `target/<profile>/flotilla`), built first with the
/// same cargo and profile — a no-op when it is up to date — so `cargo test --workspace` on a
/// fresh clone needs no earlier build step (an integration test of another crate's binary
/// gets no `CARGO_BIN_EXE_*`). `scripts/test.sh` (CI) sets `FLOTILLA_BIN` to a copy of the
/// binary its test build made: a `-p flotilla-node` build unifies features differently from
/// the workspace's, so here it would compile the dependency tree a second time mid-run.
fn node_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = std::env::var_os("FLOTILLA_BIN") {
        return PathBuf::from(p);
    }
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>")
                .to_path_buf();
            let target_dir = profile_dir.parent().expect("target folder");
            let mut cargo =
                Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cargo
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "flotilla-node",
                    "--bin",
                    "flotilla",
                ])
                .arg("--target-dir")
                .arg(target_dir);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build");
            assert!(
                status.success(),
                "cargo build -p flotilla-node --bin flotilla failed"
            );
            let bin = profile_dir.join("flotilla");
            assert!(bin.exists(), "{} not built", bin.display());
            bin
        })
        .clone()
}

/// A RaftCluster `demo` of `replicas` in namespace `ns`, its names, and a kubelet that runs its
/// pods as `flotilla node` processes on ports from `base`.
fn cluster_with_kubelet(replicas: i32, uid: &str, base: u16) -> (RaftCluster, Names, Kubelet) {
    let mut rc = RaftCluster::new(
        "demo",
        serde_json::from_value::<RaftClusterSpec>(json!({"replicas": replicas, "image": "local"}))
            .expect("spec"),
    );
    rc.meta_mut().namespace = Some("ns".into());
    rc.meta_mut().uid = Some(uid.into());
    let names = Names::of(&rc).expect("names");
    let kubelet = Kubelet {
        bin: node_binary(),
        dir: tempfile::tempdir().expect("tmp"),
        names: names.clone(),
        base,
        procs: BTreeMap::new(),
        crashed: BTreeMap::new(),
    };
    (rc, names, kubelet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1_3_5_3_1_under_write_load_with_real_nodes() {
    let (mut rc, names, mut kubelet) = cluster_with_kubelet(1, "u1", 24_000);
    let kube = Memory::default();
    let calls = Arc::new(AtomicU64::new(0));
    let nodes = Counting {
        inner: GrpcNodes::new(
            Loopback(24_000),
            Duration::from_millis(500),
            Duration::from_secs(5),
        ),
        calls: calls.clone(),
    };

    // Background writes to whichever members run; acknowledged keys are remembered.
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let live = Arc::new(std::sync::Mutex::new(vec![0u32]));
    let load = {
        let (stop, live, go) = (stop.clone(), live.clone(), go.clone());
        tokio::spawn(async move {
            let (mut acked, mut errors, mut total) = (Vec::new(), 0u64, 0u64);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // The load starts once the first member is up.
                if !go.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let ks = live.lock().map(|l| l.clone()).unwrap_or_default();
                let k = ks[(i as usize) % ks.len().max(1)];
                let key = format!("load-{i:06}");
                total += 1;
                let ok = async {
                    let mut c =
                        KvClient::connect(format!("http://127.0.0.1:{}", client_port(24_000, k)))
                            .await
                            .ok()?;
                    c.put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .ok()
                };
                match tokio::time::timeout(Duration::from_secs(3), ok).await {
                    Ok(Some(_)) => acked.push(key),
                    _ => errors += 1,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, errors, total)
        })
    };

    let mut timings = Vec::new();
    for desired in [1, 3, 5, 3, 1] {
        rc.spec.replicas = desired;
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "did not settle at {desired}: {:?}",
                rc.status
            );
            let ctx = Context::new(
                kube.clone(),
                nodes.clone(),
                Metrics::new().expect("metrics"),
            );
            let before = calls.load(Ordering::SeqCst);
            let plan = match reconcile_once(&rc, &ctx).await {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("pass failed (retrying): {e}");
                    kubelet.sync(&kube);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            assert!(
                calls.load(Ordering::SeqCst) - before <= 1,
                "one membership change per pass"
            );
            if plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Promote { .. } | Action::Remove { .. }))
            {
                eprintln!("{desired}: {:?}", plan.actions);
            }
            rc.status = kube.state().statuses.last().cloned();
            kubelet.sync(&kube);
            // Like the client Service, send writes only to pods that are voters (Ready).
            let voters: Vec<u32> = plan
                .status
                .members
                .iter()
                .filter(|m| m.role == MemberRole::Voter)
                .filter_map(|m| names.ordinal_of(&m.name))
                .filter(|k| kubelet.procs.contains_key(k))
                .collect();
            if !voters.is_empty() {
                *live.lock().expect("live") = voters;
            }
            let st = &plan.status;
            if !plan.busy
                && plan.actions.is_empty()
                && st.phase == Phase::Running
                && st.members.len() == desired as usize
                && st.members.iter().all(|m| m.role == MemberRole::Voter)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        timings.push((desired, started.elapsed()));
        go.store(true, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    let (acked, errors, total) = load.await.expect("load");
    eprintln!("settle times: {timings:?}; writes: {errors} errors of {total}");
    assert!(
        errors * 4 < total,
        "writes stay mostly available during scaling: {errors} of {total} failed"
    );

    // Every acknowledged write is on the last member.
    let mut c = KvClient::connect(format!("http://127.0.0.1:{}", client_port(24_000, 0)))
        .await
        .expect("connect");
    let r = c
        .range(RangeRequest {
            key: b"load-".to_vec(),
            range_end: b"load.".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let have: std::collections::BTreeSet<Vec<u8>> = r.kvs.into_iter().map(|kv| kv.key).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !have.contains(k.as_bytes()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(!acked.is_empty());
    let st = rc.status.expect("status");
    assert_eq!(st.members.len(), 1);
    assert_eq!(st.leader.as_deref(), Some("demo-0"));
}

/// Reconcile passes until `desired` voters run and the plan is idle.
async fn settle<N: NodeClient + Clone>(
    rc: &mut RaftCluster,
    kube: &Memory,
    nodes: &N,
    kubelet: &mut Kubelet,
    desired: i32,
    limit: Duration,
) {
    rc.spec.replicas = desired;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < limit,
            "did not settle at {desired}: {:?}",
            rc.status
        );
        let ctx = Context::new(
            kube.clone(),
            nodes.clone(),
            Metrics::new().expect("metrics"),
        );
        if let Ok(plan) = reconcile_once(rc, &ctx).await {
            rc.status = kube.state().statuses.last().cloned();
            let st = &plan.status;
            if !plan.busy
                && plan.actions.is_empty()
                && st.phase == Phase::Running
                && st.members.len() == desired as usize
                && st.members.iter().all(|m| m.role == MemberRole::Voter)
            {
                return;
            }
        }
        kubelet.sync(kube);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_that_lost_its_volume_is_replaced_in_place_with_real_nodes() {
    let (mut rc, _, mut kubelet) = cluster_with_kubelet(3, "u2", 25_000);
    let kube = Memory::default();
    let nodes = GrpcNodes::new(
        Loopback(25_000),
        Duration::from_millis(500),
        Duration::from_secs(5),
    );
    settle(
        &mut rc,
        &kube,
        &nodes,
        &mut kubelet,
        3,
        Duration::from_secs(120),
    )
    .await;
    let mut c = KvClient::connect(format!("http://127.0.0.1:{}", client_port(25_000, 0)))
        .await
        .expect("connect");
    c.put(PutRequest {
        key: b"before".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put");
    let id_of = |rc: &RaftCluster| {
        rc.status
            .as_ref()
            .and_then(|s| s.members.iter().find(|m| m.name == "demo-1"))
            .map(|m| m.id.clone())
    };
    let old = id_of(&rc).expect("demo-1");

    // demo-1's volume is lost: the process stops, its data dir is wiped, the pod restarts.
    kubelet.stop(1);
    std::fs::remove_dir_all(kubelet.data_dir(1)).expect("wipe");
    let started = Instant::now();
    settle(
        &mut rc,
        &kube,
        &nodes,
        &mut kubelet,
        3,
        Duration::from_secs(120),
    )
    .await;
    eprintln!("replaced in {:?}", started.elapsed());

    let new = id_of(&rc).expect("demo-1 back");
    assert_ne!(new, old, "demo-1 came back as a new member");
    {
        let k = kube.state();
        assert!(
            k.events.iter().any(|e| e.reason == "ReplacingMember"),
            "{:?}",
            k.events
        );
        assert!(
            k.scale_log.iter().all(|&n| n >= 2),
            "replaced in place, not by shrinking: {:?}",
            k.scale_log
        );
    }
    let mut c = KvClient::connect(format!("http://127.0.0.1:{}", client_port(25_000, 1)))
        .await
        .expect("connect");
    let r = c
        .range(RangeRequest {
            key: b"before".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.kvs.len(), 1, "the new member has the data");
}
