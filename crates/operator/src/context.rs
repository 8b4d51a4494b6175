//! [`Context`]: what every reconcile pass shares — the Kubernetes and node clients, the
//! metrics, and the per-object failure counts for the back-off. Its own module so that both
//! the controller that creates it and `act`, which works through it, depend on it rather than
//! on each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::metrics::Metrics;

/// What every reconcile pass shares.
pub struct Context<K, N> {
    /// Kubernetes reads and writes.
    pub kube: K,
    /// The nodes' admin API.
    pub nodes: N,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Consecutive failures per object, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// Whether a cluster whose spec does not say gets a NetworkPolicy (`--network-policy`).
    pub network_policy_default: bool,
    /// The operator's own namespace and pod labels, which the NetworkPolicy lets reach the
    /// client port.
    pub operator_pods: Option<(String, BTreeMap<String, String>)>,
}

impl<K, N> Context<K, N> {
    /// A context over the given Kubernetes and node clients.
    pub fn new(kube: K, nodes: N, metrics: Metrics) -> Self {
        Self {
            kube,
            nodes,
            metrics,
            failures: Mutex::new(HashMap::new()),
            network_policy_default: false,
            operator_pods: None,
        }
    }

    /// Sets the NetworkPolicy default and who the operator's pods are.
    pub fn with_network_policy(
        mut self,
        default: bool,
        operator_pods: Option<(String, BTreeMap<String, String>)>,
    ) -> Self {
        self.network_policy_default = default;
        self.operator_pods = operator_pods;
        self
    }

    pub(crate) fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}
