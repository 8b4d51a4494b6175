//! An in-memory Kubernetes API for one namespace, for tests: the reconciler reads and writes
//! it through [`Reads`] and [`Actions`] like the real API, while the test harness reads and
//! writes [`MemoryState`] directly to play the StatefulSet controller and the kubelet.
//!
//! Compiled for this crate's tests and, with the `testing` feature, for the integration tests
//! (the crate's dev-dependency on itself turns it on); production builds do not carry it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};

use crate::Error;
use crate::crd::{RaftCluster, RaftClusterStatus};
use crate::kube_api::{Actions, Owned, Reads, StsView};
use crate::plan::Note;
use crate::resources::ClaimStorage;

/// What the in-memory store holds.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    /// Applied objects by (kind, name), as last applied.
    pub objects: BTreeMap<(&'static str, String), Owned>,
    /// The StatefulSet's size (set by creation and scale actions).
    pub sts_replicas: Option<i32>,
    /// Pods (written by the harness playing kubelet).
    pub pods: BTreeMap<String, Pod>,
    /// Claims (written by the harness playing the StatefulSet controller).
    pub pvcs: BTreeMap<String, PersistentVolumeClaim>,
    /// Pods the operator deleted (the harness restarts them).
    pub deleted_pods: Vec<String>,
    /// Every status written, in order.
    pub statuses: Vec<RaftClusterStatus>,
    /// Every Event published, in order.
    pub events: Vec<Note>,
    /// Every scale step, in order.
    pub scale_log: Vec<i32>,
    /// The StatefulSet's `status.updateRevision` (set by the harness).
    pub update_revision: Option<String>,
    /// Secrets written by someone else than the operator (the harness playing cert-manager);
    /// the operator's own Secrets are in `objects`.
    pub foreign_secrets: BTreeMap<String, Secret>,
    /// Whether cert-manager's CRDs are "installed".
    pub cert_manager: bool,
}

/// An in-memory Kubernetes API for one namespace: the reconciler writes through [`Actions`],
/// the test harness reads and writes the state directly to play the controllers and kubelet.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    state: Arc<Mutex<MemoryState>>,
}

impl Memory {
    /// Locks the state (for the harness).
    pub fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panicking test thread poisons the lock; the data is still the best evidence.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn matches(labels: Option<&BTreeMap<String, String>>, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        labels.and_then(|l| l.get(k)).is_some_and(|x| x == v)
    })
}

impl Reads for Memory {
    async fn statefulset(&self, _ns: &str, name: &str) -> Result<Option<StsView>, Error> {
        let s = self.state();
        let storage = match s.objects.get(&("StatefulSet", name.to_owned())) {
            Some(Owned::StatefulSet(sts)) => ClaimStorage::of(sts),
            _ => None,
        };
        let update_revision = s.update_revision.clone();
        Ok(s.sts_replicas.map(|replicas| StsView {
            replicas,
            storage,
            update_revision,
        }))
    }
    async fn pods(&self, _ns: &str, selector: &str) -> Result<Vec<Pod>, Error> {
        Ok(self
            .state()
            .pods
            .values()
            .filter(|p| matches(p.metadata.labels.as_ref(), selector))
            .cloned()
            .collect())
    }
    async fn pvcs(&self, _ns: &str, selector: &str) -> Result<Vec<PersistentVolumeClaim>, Error> {
        Ok(self
            .state()
            .pvcs
            .values()
            .filter(|p| matches(p.metadata.labels.as_ref(), selector))
            .cloned()
            .collect())
    }
    async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, Error> {
        Ok(
            match self.state().objects.get(&("ConfigMap", name.to_owned())) {
                Some(Owned::ConfigMap(c)) => Some(c.clone()),
                _ => None,
            },
        )
    }
    async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, Error> {
        let s = self.state();
        Ok(match s.objects.get(&("Secret", name.to_owned())) {
            Some(Owned::Secret(x)) => Some(x.clone()),
            _ => s.foreign_secrets.get(name).cloned(),
        })
    }
    async fn cert_manager_installed(&self) -> Result<bool, Error> {
        Ok(self.state().cert_manager)
    }
    async fn jobs(&self, _ns: &str, selector: &str) -> Result<Vec<Job>, Error> {
        Ok(self
            .state()
            .objects
            .values()
            .filter_map(|o| match o {
                Owned::Job(j) if matches(j.metadata.labels.as_ref(), selector) => {
                    Some((**j).clone())
                }
                _ => None,
            })
            .collect())
    }
}

impl Actions for Memory {
    async fn apply(&self, _ns: &str, obj: &Owned) -> Result<(), Error> {
        let mut s = self.state();
        let (kind, name) = obj.key();
        if kind == "StatefulSet" && s.sts_replicas.is_none() {
            s.sts_replicas = Some(1);
        }
        // A claim is not an owned object the reconciler reads back from `objects`: it joins the
        // claims the harness keeps, as the API server would list it.
        if let Owned::Pvc(c) = obj {
            s.pvcs.insert(name.clone(), (**c).clone());
        }
        // A Job keeps its status when re-applied (the harness writes it, as the Job controller).
        if let (Owned::Job(_), Some(Owned::Job(old))) = (obj, s.objects.get(&(kind, name.clone())))
            && old.status.is_some()
        {
            return Ok(());
        }
        s.objects.insert((kind, name), obj.clone());
        Ok(())
    }
    async fn scale_statefulset(&self, _ns: &str, _name: &str, replicas: i32) -> Result<(), Error> {
        let mut s = self.state();
        if s.sts_replicas.is_none() {
            return Err(Error::Store(
                "scaling a StatefulSet that does not exist".into(),
            ));
        }
        s.sts_replicas = Some(replicas);
        s.scale_log.push(replicas);
        Ok(())
    }
    async fn delete_pvc(&self, _ns: &str, name: &str) -> Result<(), Error> {
        self.state().pvcs.remove(name);
        Ok(())
    }
    async fn delete_job(&self, _ns: &str, name: &str) -> Result<(), Error> {
        self.state().objects.remove(&("Job", name.to_owned()));
        Ok(())
    }
    async fn delete_pod(&self, _ns: &str, name: &str) -> Result<(), Error> {
        let mut s = self.state();
        s.pods.remove(name);
        s.deleted_pods.push(name.to_owned());
        Ok(())
    }
    async fn patch_status(
        &self,
        _rc: &RaftCluster,
        status: &RaftClusterStatus,
    ) -> Result<(), Error> {
        self.state().statuses.push(status.clone());
        Ok(())
    }
    async fn publish(&self, _rc: &RaftCluster, note: &Note) -> Result<(), Error> {
        self.state().events.push(note.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{self, tests::cluster};
    use serde_json::json;

    #[tokio::test]
    async fn memory_store_tracks_scale_and_selects_by_labels() {
        let m = Memory::default();
        let rc = cluster(3);
        assert!(
            m.scale_statefulset("ns", "demo", 2).await.is_err(),
            "no StatefulSet yet"
        );
        m.apply(
            "ns",
            &Owned::StatefulSet(Box::new(resources::stateful_set(&rc, None).expect("sts"))),
        )
        .await
        .expect("apply");
        assert_eq!(
            m.statefulset("ns", "demo")
                .await
                .expect("get")
                .map(|s| (s.replicas, s.storage.map(|c| c.size))),
            Some((1, Some("2Gi".to_owned())))
        );
        m.scale_statefulset("ns", "demo", 2).await.expect("scale");
        assert_eq!(m.state().scale_log, [2]);
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "demo-0", "labels": {"a": "1", "b": "2"}}}),
        )
        .expect("pod");
        m.state().pods.insert("demo-0".into(), pod);
        assert_eq!(m.pods("ns", "a=1,b=2").await.expect("pods").len(), 1);
        assert_eq!(m.pods("ns", "a=1,b=3").await.expect("pods").len(), 0);
    }
}
