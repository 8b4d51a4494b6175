//! The Flotilla operator: runs `RaftCluster` resources on Kubernetes.
//!
//! The reconciler is split in three so that every decision can be tested without a cluster
//! (docs/ARCHITECTURE.md, "Testing"):
//! - *observe* ([`observe`]): read the RaftCluster, its StatefulSet, pods, claims and the nodes'
//!   admin status into one snapshot;
//! - *plan* ([`plan`]): a pure function from that snapshot to the next step;
//! - *act* ([`act`]): carry the step out, through the narrow traits of [`kube_api`] — on kube's
//!   `Api` in production and on the in-memory store of `memory` (feature `testing`) in tests.
//!
//! [`controller`] wires these into kube-runtime's `Controller` with metrics, Events, tracing and
//! leader election among operator replicas.
#![warn(missing_docs)]

pub mod act;
pub mod backup;
pub mod context;
pub mod controller;
pub mod crd;
pub mod kube_api;
pub mod lease;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod plan;
pub mod resources;
pub mod tls;

/// Everything a reconcile pass can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A node's admin API failed.
    #[error("node admin API: {0}")]
    Node(#[from] nodes::NodeError),
    /// An owned object could not be built from the spec.
    #[error("building objects: {0}")]
    Build(#[from] resources::BuildError),
    /// The resource has no namespace.
    #[error("RaftCluster has no namespace")]
    MissingNamespace,
    /// The in-memory store refused a write.
    #[error("store: {0}")]
    Store(String),
    /// A certificate could not be made (crate::tls).
    #[error("certificates: {0}")]
    Tls(#[from] tls::TlsError),
}

impl Error {
    /// Every value [`Error::metric_label`] returns.
    pub const METRIC_LABELS: [&'static str; 6] =
        ["kube", "node", "build", "missing_namespace", "store", "tls"];

    /// A short label for the `error` dimension of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Node(_) => "node",
            Error::Build(_) => "build",
            Error::MissingNamespace => "missing_namespace",
            Error::Store(_) => "store",
            Error::Tls(_) => "tls",
        }
    }
}
