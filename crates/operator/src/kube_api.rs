//! Reading and writing the Kubernetes side, behind two narrow traits.
//!
//! [`Reads`] is what *observe* needs, [`Actions`] what *act* does — nothing else, so the whole
//! reconcile runs against either the real API ([`KubeApi`], checked request by request with a
//! `tower-test` mock in `kube_api/tests.rs`) or the in-memory store of the `memory` module (feature
//! `testing`) that a test harness shares with its own "StatefulSet controller and kubelet".
//!
//! Writes are idempotent by construction: owned objects go through server-side apply with field
//! manager `flotilla-operator` and `force` (the operator is the one owner of those fields), the
//! StatefulSet's size through a merge patch of its `/scale` subresource, deletions tolerate
//! "not found".

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::crd::{RaftCluster, RaftClusterStatus};
use crate::plan::{Note, Severity};
use crate::resources::{ClaimStorage, FIELD_MANAGER};
use tokio::sync::OnceCell;

/// An object the operator owns and applies.
#[derive(Debug, Clone, PartialEq)]
// A handful of these exist for a moment per reconcile pass; boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Owned {
    /// The pods' configuration.
    ConfigMap(ConfigMap),
    /// Headless or client Service.
    Service(Service),
    /// The StatefulSet (without replicas).
    StatefulSet(Box<StatefulSet>),
    /// The disruption budget.
    PodDisruptionBudget(PodDisruptionBudget),
    /// Certificates and keys (crate::tls).
    Secret(Secret),
    /// A cert-manager `Certificate` (crate::tls, mode `CertManager`).
    Certificate(Box<DynamicObject>),
    /// The cluster's NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// A backup or restore Job (crate::backup).
    Job(Box<Job>),
    /// Pod 0's claim, made before the StatefulSet when restoring (crate::backup).
    Pvc(Box<PersistentVolumeClaim>),
}

impl Owned {
    /// Kind and name, for logs and the in-memory store.
    pub fn key(&self) -> (&'static str, String) {
        match self {
            Owned::ConfigMap(o) => ("ConfigMap", o.name_any()),
            Owned::Service(o) => ("Service", o.name_any()),
            Owned::StatefulSet(o) => ("StatefulSet", o.name_any()),
            Owned::PodDisruptionBudget(o) => ("PodDisruptionBudget", o.name_any()),
            Owned::Secret(o) => ("Secret", o.name_any()),
            Owned::Certificate(o) => ("Certificate", o.name_any()),
            Owned::NetworkPolicy(o) => ("NetworkPolicy", o.name_any()),
            Owned::Job(o) => ("Job", o.name_any()),
            Owned::Pvc(o) => ("PersistentVolumeClaim", o.name_any()),
        }
    }
}

/// What observe needs of the StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsView {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Size and class of its volume claim template, which Kubernetes never lets change.
    pub storage: Option<ClaimStorage>,
    /// `status.updateRevision`: the revision of the current pod template. A pod whose
    /// `controller-revision-hash` label differs runs an older template.
    pub update_revision: Option<String>,
}

/// What observe reads.
pub trait Reads: Send + Sync {
    /// The StatefulSet, `None` when it does not exist.
    fn statefulset(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<StsView>, Error>> + Send;
    /// Pods matching a label selector.
    fn pods(
        &self,
        ns: &str,
        selector: &str,
    ) -> impl Future<Output = Result<Vec<Pod>, Error>> + Send;
    /// Claims matching a label selector.
    fn pvcs(
        &self,
        ns: &str,
        selector: &str,
    ) -> impl Future<Output = Result<Vec<PersistentVolumeClaim>, Error>> + Send;
    /// A ConfigMap.
    fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>, Error>> + Send;
    /// A Secret (only the cluster's certificate Secrets are ever read).
    fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, Error>> + Send;
    /// Whether the API server serves cert-manager's `Certificate` (asked when a cluster uses
    /// mode `CertManager`).
    fn cert_manager_installed(&self) -> impl Future<Output = Result<bool, Error>> + Send;
    /// Jobs matching a label selector.
    fn jobs(
        &self,
        ns: &str,
        selector: &str,
    ) -> impl Future<Output = Result<Vec<Job>, Error>> + Send;
}

/// What act does.
pub trait Actions: Send + Sync {
    /// Server-side apply an owned object.
    fn apply(&self, ns: &str, obj: &Owned) -> impl Future<Output = Result<(), Error>> + Send;
    /// Set the StatefulSet's size.
    fn scale_statefulset(
        &self,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Delete a claim (absent is fine).
    fn delete_pvc(&self, ns: &str, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Delete a pod (absent is fine).
    fn delete_pod(&self, ns: &str, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Delete a finished Job and its pods (absent is fine).
    fn delete_job(&self, ns: &str, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Write the RaftCluster's status.
    fn patch_status(
        &self,
        rc: &RaftCluster,
        status: &RaftClusterStatus,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Publish an Event about the RaftCluster.
    fn publish(
        &self,
        rc: &RaftCluster,
        note: &Note,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The real implementation on kube's `Api`.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    recorder: Recorder,
    /// The PodDisruptionBudget API version the server serves, asked once.
    pdb_version: Arc<OnceCell<PdbVersion>>,
}

/// Which PodDisruptionBudget API the server serves: `policy/v1` from Kubernetes 1.21,
/// `policy/v1beta1` before (and until 1.25). Same spec either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdbVersion {
    /// `policy/v1`.
    V1,
    /// `policy/v1beta1`.
    V1beta1,
}

impl PdbVersion {
    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            PdbVersion::V1 => "policy/v1",
            PdbVersion::V1beta1 => "policy/v1beta1",
        }
    }
}

impl KubeApi {
    /// Wraps a client; Events are reported as `flotilla-operator` from `instance` (the pod).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            pdb_version: Arc::new(OnceCell::new()),
        }
    }

    /// Asks the server (discovery) which PodDisruptionBudget version it serves; remembered once
    /// known, asked again after a failed attempt.
    async fn pdb_version(&self) -> Result<PdbVersion, Error> {
        let v = self
            .pdb_version
            .get_or_try_init(|| async {
                match self.client.list_api_group_resources("policy/v1").await {
                    Ok(list)
                        if list
                            .resources
                            .iter()
                            .any(|r| r.name == "poddisruptionbudgets") =>
                    {
                        Ok(PdbVersion::V1)
                    }
                    Ok(_) => Ok(PdbVersion::V1beta1),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(PdbVersion::V1beta1),
                    Err(e) => Err(Error::from(e)),
                }
            })
            .await?;
        Ok(*v)
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }
}

fn absent_ok<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Reads for KubeApi {
    async fn statefulset(&self, ns: &str, name: &str) -> Result<Option<StsView>, Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
        Ok(api.get_opt(name).await?.map(|s| StsView {
            replicas: s.spec.replicas.unwrap_or(1),
            storage: ClaimStorage::of(&s),
            update_revision: s.status.as_ref().and_then(|st| st.update_revision.clone()),
        }))
    }
    async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }
    async fn pvcs(&self, ns: &str, selector: &str) -> Result<Vec<PersistentVolumeClaim>, Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        Ok(api.get_opt(name).await?)
    }
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        Ok(api.get_opt(name).await?)
    }
    async fn cert_manager_installed(&self) -> Result<bool, Error> {
        // Asked on every pass of a CertManager cluster, so installing cert-manager later is
        // noticed without restarting the operator.
        match self
            .client
            .list_api_group_resources("cert-manager.io/v1")
            .await
        {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == "certificates")),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    async fn jobs(&self, ns: &str, selector: &str) -> Result<Vec<Job>, Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }
}

/// cert-manager's `Certificate`, which k8s-openapi does not know.
pub fn certificate_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    }
}

impl Actions for KubeApi {
    async fn apply(&self, ns: &str, obj: &Owned) -> Result<(), Error> {
        let c = self.client.clone();
        let (_, name) = obj.key();
        let pp = Self::apply_params();
        match obj {
            Owned::ConfigMap(o) => drop(
                Api::<ConfigMap>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::Service(o) => drop(
                Api::<Service>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::StatefulSet(o) => drop(
                Api::<StatefulSet>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::Secret(o) => drop(
                Api::<Secret>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::NetworkPolicy(o) => drop(
                Api::<NetworkPolicy>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::Job(o) => drop(
                Api::<Job>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::Pvc(o) => drop(
                Api::<PersistentVolumeClaim>::namespaced(c, ns)
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::Certificate(o) => drop(
                Api::<DynamicObject>::namespaced_with(c, ns, &certificate_resource())
                    .patch(&name, &pp, &Patch::Apply(o))
                    .await?,
            ),
            Owned::PodDisruptionBudget(o) => match self.pdb_version().await? {
                PdbVersion::V1 => drop(
                    Api::<PodDisruptionBudget>::namespaced(c, ns)
                        .patch(&name, &pp, &Patch::Apply(o))
                        .await?,
                ),
                PdbVersion::V1beta1 => {
                    let ar = ApiResource {
                        group: "policy".into(),
                        version: "v1beta1".into(),
                        api_version: PdbVersion::V1beta1.api_version().into(),
                        kind: "PodDisruptionBudget".into(),
                        plural: "poddisruptionbudgets".into(),
                    };
                    let mut body = serde_json::to_value(o).map_err(|e| {
                        Error::Store(format!("encoding PodDisruptionBudget {name}: {e}"))
                    })?;
                    body["apiVersion"] = json!(PdbVersion::V1beta1.api_version());
                    drop(
                        Api::<DynamicObject>::namespaced_with(c, ns, &ar)
                            .patch(&name, &pp, &Patch::Apply(body))
                            .await?,
                    )
                }
            },
        }
        Ok(())
    }

    async fn scale_statefulset(&self, ns: &str, name: &str, replicas: i32) -> Result<(), Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_scale(
            name,
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
        Ok(())
    }

    async fn delete_pvc(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        absent_ok(api.delete(name, &DeleteParams::default()).await)
    }

    async fn delete_pod(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        absent_ok(api.delete(name, &DeleteParams::default()).await)
    }

    async fn delete_job(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        absent_ok(api.delete(name, &DeleteParams::background()).await)
    }

    async fn patch_status(
        &self,
        rc: &RaftCluster,
        status: &RaftClusterStatus,
    ) -> Result<(), Error> {
        let ns = rc.namespace().ok_or(Error::MissingNamespace)?;
        let api: Api<RaftCluster> = Api::namespaced(self.client.clone(), &ns);
        let body = json!({
            "apiVersion": RaftCluster::api_version(&()),
            "kind": RaftCluster::kind(&()),
            "status": status,
        });
        api.patch_status(&rc.name_any(), &Self::apply_params(), &Patch::Apply(body))
            .await?;
        Ok(())
    }

    async fn publish(&self, rc: &RaftCluster, note: &Note) -> Result<(), Error> {
        let ev = Event {
            type_: match note.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: note.reason.into(),
            secondary: note.subject.as_ref().map(|pod| ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.clone()),
                namespace: rc.namespace(),
                ..ObjectReference::default()
            }),
        };
        self.recorder.publish(&ev, &rc.object_ref(&())).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
