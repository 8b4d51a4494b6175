//! The Kubernetes objects a `RaftCluster` owns, built from its spec (pure functions).
//!
//! Everything here is a function of (the resource, the StatefulSet size the plan chose, whether
//! the cluster has been bootstrapped), so the reconciler can server-side apply the whole set on
//! every pass: applying the same object twice is a no-op, which is what makes the reconcile
//! idempotent. Objects are written as JSON literals and then parsed into the typed k8s-openapi
//! structs: they read like the manifests they become, and the parse still checks every field.
//!
//! Names, for a cluster `NAME` in namespace `NS`:
//! - StatefulSet `NAME`, pods `NAME-<ordinal>`, claims `data-NAME-<ordinal>`;
//! - headless Service `NAME-peer` (peer DNS `NAME-<k>.NAME-peer.NS.svc`, not-ready addresses
//!   published so a joining member can be reached before it is ready);
//! - client Service `NAME` (port 2379, ready pods only) — what etcdctl talks to;
//! - PodDisruptionBudget `NAME`; ConfigMap `NAME-config` (the pods' environment).
//!
//! How a pod configures itself: its start script reads its ordinal from `POD_NAME`. Pod 0 of a
//! cluster that was never bootstrapped (`CLUSTER_STATE=new`) starts a one-member cluster with
//! `--initial-cluster`; every other start uses `--join` against the client Service, where the
//! node asks the leader to add it as a learner. Once a leader has been seen the operator flips
//! `CLUSTER_STATE` to `existing` for good, so even pod 0 returning with an empty volume joins
//! instead of founding a second cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::crd::{AntiAffinity, RaftCluster, TlsMode};

/// Port of the etcd v3 client API (and the admin API).
pub const CLIENT_PORT: u16 = 2379;
/// Port of the peer (Raft) API.
pub const PEER_PORT: u16 = 2380;
/// Port of the node's /metrics, /healthz and /readyz.
pub const METRICS_PORT: u16 = 9379;
/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "flotilla-operator";
/// Where the volume is mounted in the pod.
const DATA_MOUNT: &str = "/var/lib/flotilla";
/// Name of the claim template (claims are `data-<pod>`).
pub const CLAIM_TEMPLATE: &str = "data";

/// Why an object could not be built (a spec field that does not fit its Kubernetes type).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The resource has no namespace or name yet.
    #[error("RaftCluster has no {0}")]
    Missing(&'static str),
    /// A built object did not parse into its typed form.
    #[error("building {kind}: {source}")]
    Shape {
        /// The object's kind.
        kind: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The names derived from a cluster's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The RaftCluster's name (also the StatefulSet, client Service, PDB name).
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// Names for a resource; fails when it has no name or namespace.
    pub fn of(rc: &RaftCluster) -> Result<Self, BuildError> {
        Ok(Self {
            cluster: rc.meta().name.clone().ok_or(BuildError::Missing("name"))?,
            namespace: rc.namespace().ok_or(BuildError::Missing("namespace"))?,
        })
    }
    /// The headless Service.
    pub fn peer_service(&self) -> String {
        format!("{}-peer", self.cluster)
    }
    /// The ConfigMap.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }
    /// Pod (and member) name of an ordinal.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }
    /// Claim name of an ordinal.
    pub fn pvc(&self, ordinal: u32) -> String {
        format!("{CLAIM_TEMPLATE}-{}-{ordinal}", self.cluster)
    }
    /// Ordinal of a pod or member name of this cluster.
    pub fn ordinal_of(&self, pod_name: &str) -> Option<u32> {
        crate::crd::ordinal_of(&self.cluster, pod_name)
    }
    /// Ordinal of a claim name of this cluster.
    pub fn ordinal_of_pvc(&self, pvc_name: &str) -> Option<u32> {
        self.ordinal_of(pvc_name.strip_prefix(CLAIM_TEMPLATE)?.strip_prefix('-')?)
    }
    /// A pod's stable DNS name through the headless Service.
    pub fn pod_host(&self, ordinal: u32) -> String {
        format!(
            "{}.{}.{}.svc",
            self.pod(ordinal),
            self.peer_service(),
            self.namespace
        )
    }
    /// Admin (client-port) endpoint of an ordinal, as the operator dials it.
    pub fn admin_endpoint(&self, ordinal: u32) -> String {
        format!("http://{}:{CLIENT_PORT}", self.pod_host(ordinal))
    }
    /// The client Service's in-cluster endpoint.
    pub fn client_endpoint(&self) -> String {
        format!("{}.{}.svc:{CLIENT_PORT}", self.cluster, self.namespace)
    }
}

/// Labels on every owned object; the first two select the pods.
pub fn labels(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "flotilla".to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            names.cluster.clone(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
    ])
}

/// The pod selector, also as the string the scale subresource reports.
pub fn selector(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "flotilla".to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            names.cluster.clone(),
        ),
    ])
}

/// `k=v,k=v` form of [`selector`].
pub fn selector_string(names: &Names) -> String {
    selector(names)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How many pods a voluntary eviction may take down without breaking quorum: a cluster of `n`
/// voters survives `(n - 1) / 2` failures, so 0 for one or two members. `n` is the smaller of
/// the desired and the running size, since mid-scale the smaller one is the real cluster.
pub fn max_unavailable(n: i32) -> i32 {
    (n.max(1) - 1) / 2
}

fn metadata(rc: &RaftCluster, names: &Names, name: String) -> Value {
    let owner = rc.controller_owner_ref(&());
    json!({
        "name": name,
        "namespace": names.namespace,
        "labels": labels(names),
        "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default(),
    })
}

fn parse<T: DeserializeOwned>(kind: &'static str, v: Value) -> Result<T, BuildError> {
    serde_json::from_value(v).map_err(|source| BuildError::Shape { kind, source })
}

/// The start script: ordinal → bootstrap or join (see the module docs). With TLS on, the
/// member's certificate comes from the mounted `NAME-tls` (crate::tls); a member whose
/// certificate is not there yet (cert-manager still issuing) waits for it rather than failing.
const START_SCRIPT: &str = r#"set -eu
ord="${POD_NAME##*-}"
host="${POD_NAME}.${PEER_SERVICE}.${POD_NAMESPACE}.svc"
scheme=http
if [ "${TLS_MODE:-Disabled}" != Disabled ]; then
  scheme=https
  tls=/etc/flotilla/tls
  n=0
  until [ -s "$tls/$POD_NAME.crt" ] && [ -s "$tls/$POD_NAME.key" ] && [ -s "$tls/ca.crt" ]; do
    if [ "$n" -ge 300 ]; then
      echo "no certificate for $POD_NAME in Secret $TLS_SECRET after 600 s" >&2
      exit 1
    fi
    [ "$n" = 0 ] && echo "waiting for the certificate of $POD_NAME in Secret $TLS_SECRET"
    n=$((n + 1))
    sleep 2
  done
  export FLOTILLA_CERT_FILE="$tls/$POD_NAME.crt" FLOTILLA_KEY_FILE="$tls/$POD_NAME.key" \
    FLOTILLA_TRUSTED_CA_FILE="$tls/ca.crt" FLOTILLA_PEER_CERT_FILE="$tls/$POD_NAME.crt" \
    FLOTILLA_PEER_KEY_FILE="$tls/$POD_NAME.key" FLOTILLA_PEER_TRUSTED_CA_FILE="$tls/ca.crt" \
    FLOTILLA_PEER_CLIENT_CERT_AUTH=true
fi
set -- node --name "$POD_NAME" --data-dir /var/lib/flotilla/data \
  --listen-client 0.0.0.0:2379 --listen-peer 0.0.0.0:2380 --listen-metrics 0.0.0.0:9379 \
  --advertise-client "$scheme://$host:2379" --advertise-peer "$scheme://$host:2380"
if [ "${FORCE_NEW_CLUSTER:-}" = "$POD_NAME" ]; then
  # Quorum-loss recovery: this member's data is the most up to date of the survivors.
  set -- "$@" --force-new-cluster
fi
if [ "$CLUSTER_STATE" = new ] && [ "$ord" = 0 ]; then
  exec flotilla "$@" --initial-cluster "$POD_NAME=$scheme://$host:2380"
fi
exec flotilla "$@" --join "$JOIN_ENDPOINTS"
"#;

/// The ConfigMap key naming the pod that starts with `--force-new-cluster` (quorum-loss
/// recovery); the start script reads it.
pub const FORCE_NEW_CLUSTER: &str = "FORCE_NEW_CLUSTER";

/// The ConfigMap's word for a TLS mode (also how [`crate::observe`] tells a changed mode).
pub fn tls_mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Disabled => "Disabled",
        TlsMode::Operator => "Operator",
        TlsMode::CertManager => "CertManager",
    }
}

/// The ConfigMap the pods take their environment from. `bootstrapped` is sticky (see module
/// docs); the Raft settings are the node's own `FLOTILLA_*` variables.
pub fn config_map(rc: &RaftCluster, bootstrapped: bool) -> Result<ConfigMap, BuildError> {
    config_map_forcing(rc, bootstrapped, None)
}

/// [`config_map`], naming the member that must start with `--force-new-cluster` (quorum-loss
/// recovery, see crate::plan).
pub fn config_map_forcing(
    rc: &RaftCluster,
    bootstrapped: bool,
    force_new_cluster: Option<&str>,
) -> Result<ConfigMap, BuildError> {
    let names = Names::of(rc)?;
    let r = &rc.spec.raft;
    let uid = rc.meta().uid.clone().unwrap_or_default();
    let tls = rc.spec.tls.mode != TlsMode::Disabled;
    let mut cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(rc, &names, names.config_map()),
            "data": {
                "CLUSTER_STATE": if bootstrapped { "existing" } else { "new" },
                "JOIN_ENDPOINTS": if tls {
                    format!("https://{}", names.client_endpoint())
                } else {
                    names.client_endpoint()
                },
                "TLS_MODE": tls_mode_name(rc.spec.tls.mode),
                "PEER_SERVICE": names.peer_service(),
                // A token unique to this resource: a RaftCluster deleted and created again under
                // the same name founds a cluster with a different id, and stale volumes of the
                // old one are refused rather than mixed in.
                "FLOTILLA_CLUSTER_TOKEN": format!("{}/{}/{uid}", names.namespace, names.cluster),
                "FLOTILLA_TICK_MS": r.tick_ms.to_string(),
                "FLOTILLA_ELECTION_TICKS": r.election_ticks.to_string(),
                "FLOTILLA_HEARTBEAT_TICKS": r.heartbeat_ticks.to_string(),
                "FLOTILLA_SNAPSHOT_THRESHOLD": r.snapshot_threshold.to_string(),
            }
    });
    if let Some(pod) = force_new_cluster {
        cm["data"][FORCE_NEW_CLUSTER] = json!(pod);
    }
    if tls {
        cm["data"]["TLS_SECRET"] = json!(names.tls_secret());
        cm["data"]["FLOTILLA_CLIENT_CERT_AUTH"] = json!(rc.spec.tls.client_cert_auth.to_string());
    }
    parse("ConfigMap", cm)
}

/// A short hash of the settings that need a restart to take effect; it goes on the pod template
/// so changing them rolls the pods, while flipping `CLUSTER_STATE` does not.
fn settings_hash(rc: &RaftCluster) -> String {
    let r = &rc.spec.raft;
    let mut text = format!(
        "{}/{}/{}/{}",
        r.tick_ms, r.election_ticks, r.heartbeat_ticks, r.snapshot_threshold
    );
    // Appended only when TLS is on, so clusters without it keep the hash (and pods) they have.
    if rc.spec.tls.mode != TlsMode::Disabled {
        text.push_str(&format!(
            "/tls-client-auth={}",
            rc.spec.tls.client_cert_auth
        ));
    }
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Size and class of a StatefulSet's volume claim template: fixed when it is created
/// (Kubernetes refuses to change `volumeClaimTemplates`), so a changed `spec.storage` is
/// reported, and the StatefulSet keeps being applied with the storage it already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimStorage {
    /// Requested size (a quantity).
    pub size: String,
    /// StorageClass, when one was named.
    pub storage_class_name: Option<String>,
}

impl ClaimStorage {
    /// What the spec asks for.
    pub fn of_spec(rc: &RaftCluster) -> Self {
        Self {
            size: rc.spec.storage.size.clone(),
            storage_class_name: rc.spec.storage.storage_class_name.clone(),
        }
    }

    /// What an existing StatefulSet's `data` claim template holds.
    pub fn of(sts: &StatefulSet) -> Option<Self> {
        let t = sts
            .spec
            .volume_claim_templates
            .as_ref()?
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(CLAIM_TEMPLATE))?;
        let spec = t.spec.as_ref()?;
        Some(Self {
            size: spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone())?,
            storage_class_name: spec.storage_class_name.clone(),
        })
    }
}

/// The name of the member container in each pod.
pub const CONTAINER: &str = "flotilla";

/// The StatefulSet. It carries no `replicas`: server-side apply would then own the field and
/// could undo a scale step; the size changes only through the plan's explicit scale actions
/// (the `/scale` subresource), and a new StatefulSet starts at Kubernetes' default of one pod —
/// pod 0, which bootstraps. `storage` is the claim template to keep (the existing
/// StatefulSet's), or `None` to take it from the spec.
pub fn stateful_set(
    rc: &RaftCluster,
    storage: Option<&ClaimStorage>,
) -> Result<StatefulSet, BuildError> {
    let names = Names::of(rc)?;
    let s = &rc.spec;
    let mut container = json!({
        "name": CONTAINER,
        "image": s.image,
        "command": ["/bin/sh", "-c", START_SCRIPT],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "envFrom": [{"configMapRef": {"name": names.config_map()}}],
        // `protocol` is spelled out everywhere: server-side apply keys port lists on
        // (port, protocol), and API servers before 1.22 refuse an element without it.
        "ports": [
            {"name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP"},
            {"name": "peer", "containerPort": PEER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 2},
        // Liveness is the process answering (`/healthz`), never quorum or readiness: a member
        // that cannot reach a majority must not be restarted for it, which would only make the
        // outage worse. The startup probe gives a member replaying a long log up to 5 minutes
        // before liveness applies.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 2, "failureThreshold": 150,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10, "failureThreshold": 6,
        },
        "volumeMounts": [{"name": CLAIM_TEMPLATE, "mountPath": DATA_MOUNT}],
        // The last log lines of a failed start land in the pod status, where the operator reads
        // why a join was refused (a member with this peer URL already exists: lost volume).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(p) = &s.image_pull_policy {
        container["imagePullPolicy"] = json!(p);
    }
    let tls = s.tls.mode != TlsMode::Disabled;
    if tls && let Some(m) = container["volumeMounts"].as_array_mut() {
        m.push(json!({"name": "tls", "mountPath": crate::tls::MOUNT, "readOnly": true}));
    }
    if let Some(r) = &s.resources {
        container["resources"] = json!(r);
    }
    let mut pod_spec = json!({
        "containers": [container],
        "securityContext": {
            "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // Long enough for a leader to hand leadership over on SIGTERM.
        "terminationGracePeriodSeconds": 30,
    });
    if tls {
        // Group-readable for fsGroup 65532: the keys are the member's, nobody else's.
        pod_spec["volumes"] = json!([{
            "name": "tls",
            "secret": {"secretName": names.tls_secret(), "defaultMode": 0o440},
        }]);
    }
    let sch = &s.scheduling;
    if let Some(v) = &sch.node_selector {
        pod_spec["nodeSelector"] = json!(v);
    }
    if let Some(v) = &sch.tolerations {
        pod_spec["tolerations"] = json!(v);
    }
    match (&sch.affinity, sch.anti_affinity) {
        (Some(v), _) => pod_spec["affinity"] = json!(v),
        (None, AntiAffinity::None) => {}
        // One member per node where possible: losing a node then costs one member, not quorum.
        (None, AntiAffinity::Soft) => {
            pod_spec["affinity"] = json!({"podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector(&names)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }],
            }})
        }
        (None, AntiAffinity::Hard) => {
            pod_spec["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": selector(&names)},
                    "topologyKey": "kubernetes.io/hostname",
                }],
            }})
        }
    }
    if let Some(v) = &sch.topology_spread_constraints {
        pod_spec["topologySpreadConstraints"] = json!(v);
    }
    let storage = storage
        .cloned()
        .unwrap_or_else(|| ClaimStorage::of_spec(rc));
    let mut claim_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    });
    if let Some(c) = &storage.storage_class_name {
        claim_spec["storageClassName"] = json!(c);
    }
    parse(
        "StatefulSet",
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": metadata(rc, &names, names.cluster.clone()),
            "spec": {
                "serviceName": names.peer_service(),
                // The operator sequences membership itself; OrderedReady would only add a
                // second, weaker ordering (and block replacing a broken low ordinal).
                "podManagementPolicy": "Parallel",
                // The operator rolls template changes itself, one member at a time and only
                // while every other voter is healthy (the plan's rolling-update rule): with
                // Parallel pods, RollingUpdate would let the StatefulSet controller restart a
                // second member while one is down.
                "updateStrategy": {"type": "OnDelete"},
                "selector": {"matchLabels": selector(&names)},
                // No `persistentVolumeClaimRetentionPolicy`: its default (Retain, Retain) is
                // what the operator wants — claims are deleted by the operator after the member
                // has left the Raft configuration (per spec.storage.retentionOnScaleDown), never
                // by the StatefulSet controller — and API servers before 1.23 do not know the
                // field, so sending it would fail every apply there.
                "template": {
                    "metadata": {
                        "labels": labels(&names),
                        "annotations": {"flotilla.dev/settings-hash": settings_hash(rc)},
                    },
                    "spec": pod_spec,
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": CLAIM_TEMPLATE, "labels": selector(&names)},
                    "spec": claim_spec,
                }],
            }
        }),
    )
}

/// The headless Service that gives each pod its peer DNS name.
pub fn peer_service(rc: &RaftCluster) -> Result<Service, BuildError> {
    let names = Names::of(rc)?;
    parse(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(rc, &names, names.peer_service()),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": selector(&names),
                "ports": [
                    {"name": "peer", "port": PEER_PORT, "targetPort": "peer", "protocol": "TCP"},
                    {"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"},
                ],
            }
        }),
    )
}

/// The client Service (ready pods only).
pub fn client_service(rc: &RaftCluster) -> Result<Service, BuildError> {
    let names = Names::of(rc)?;
    parse(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(rc, &names, names.cluster.clone()),
            "spec": {
                "selector": selector(&names),
                "ports": [
                    {"name": "client", "port": CLIENT_PORT, "targetPort": "client", "protocol": "TCP"},
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                ],
            }
        }),
    )
}

/// The cluster's NetworkPolicy: the peer port only from the members; the client port from the
/// members (a joining member asks through it), the operator's pods and the clients the spec
/// selects (the cluster's namespace when it selects none); metrics from anywhere (nothing
/// sensitive is served there, and Prometheus may run anywhere). `operator` is the operator's
/// namespace and pod labels; without it the operator is not let in specially.
pub fn network_policy(
    rc: &RaftCluster,
    operator: Option<&(String, BTreeMap<String, String>)>,
) -> Result<NetworkPolicy, BuildError> {
    let names = Names::of(rc)?;
    let np = &rc.spec.network_policy;
    let members = json!({"podSelector": {"matchLabels": selector(&names)}});
    let mut client_from = vec![members.clone()];
    if let Some((ns, labels)) = operator {
        client_from.push(json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "podSelector": {"matchLabels": labels},
        }));
    }
    client_from.push(match &np.client_namespace_selector {
        Some(ns) => json!({
            "namespaceSelector": ns,
            "podSelector": np.client_pod_selector.clone().unwrap_or_default(),
        }),
        None => json!({"podSelector": np.client_pod_selector.clone().unwrap_or_default()}),
    });
    parse(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(rc, &names, names.cluster.clone()),
            "spec": {
                "podSelector": {"matchLabels": selector(&names)},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"ports": [{"port": PEER_PORT, "protocol": "TCP"}], "from": [members]},
                    {"ports": [{"port": CLIENT_PORT, "protocol": "TCP"}], "from": client_from},
                    {"ports": [{"port": METRICS_PORT, "protocol": "TCP"}]},
                ],
            }
        }),
    )
}

/// The PodDisruptionBudget for a cluster whose real size is `size` voters.
pub fn pod_disruption_budget(
    rc: &RaftCluster,
    size: i32,
) -> Result<PodDisruptionBudget, BuildError> {
    let names = Names::of(rc)?;
    parse(
        "PodDisruptionBudget",
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(rc, &names, names.cluster.clone()),
            "spec": {
                "maxUnavailable": max_unavailable(size),
                "selector": {"matchLabels": selector(&names)},
            }
        }),
    )
}

#[cfg(test)]
pub(crate) mod tests;
