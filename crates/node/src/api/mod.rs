//! The client-facing gRPC services: etcd's KV, Watch, Lease, Cluster and Maintenance, and
//! Flotilla's Admin (served on the peer port too, where members forward to the leader), and
//! etcd's Lock and Election (its concurrency recipes, run on the server: `concurrency`).
//!
//! Each service is a thin translation onto [`crate::member::handle::NodeHandle`]: it validates
//! the request, then writes through the one typed path `NodeHandle::write` (which routes to
//! the leader, maps refusals and stamps the etcd header) or reads after
//! `NodeHandle::linearizable_barrier` (ReadIndex) unless the read is serializable. Leases and
//! watches go through the state machine's narrow `lease_*`/`watch_*` calls. The HTTP/JSON
//! gateway (`crate::gateway`) calls these same services. Services Flotilla does not implement
//! are not registered: `crate::client_http` answers them UNIMPLEMENTED.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod quota;
pub mod watch;

use flotilla_proto::etcdserverpb::ResponseHeader;

use crate::member::handle::NodeHandle;

/// The header every etcd response carries; `revision` 0 means "the current one".
pub fn header(node: &NodeHandle, revision: i64) -> ResponseHeader {
    node.header(revision)
}

/// Records a served request in the gRPC metric and passes the result through.
pub fn observe<T>(
    node: &NodeHandle,
    method: &str,
    r: Result<T, tonic::Status>,
) -> Result<T, tonic::Status> {
    let code = match &r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    node.metrics.grpc(method, code);
    r
}
