//! [`Context`]: what every reconcile pass shares — the Kubernetes and node clients, the
//! metrics, and the per-object failure counts for the back-off. Its own module so that both
//! the controller that creates it and `act`, which works through it, depend on it rather than
//! on each other.

use std::collections::HashMap;
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
}

impl<K, N> Context<K, N> {
    /// A context over the given Kubernetes and node clients.
    pub fn new(kube: K, nodes: N, metrics: Metrics) -> Self {
        Self {
            kube,
            nodes,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}
