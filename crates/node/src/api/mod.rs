//! The client-facing gRPC services: etcd's KV, Cluster and Maintenance, and Flotilla's Admin.
//!
//! Each service is a thin translation onto [`crate::member::handle::NodeHandle`]: validation,
//! routing (forward to the leader, ReadIndex for reads) and the etcd response header. Watch,
//! Lease and the HTTP gateway are separate modules when they exist; services that would only
//! answer UNIMPLEMENTED are not registered at all.

pub mod admin;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
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
