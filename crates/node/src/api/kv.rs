//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes become an `internal::Request`, replicated through Raft (forwarded if this member is
//! not the leader), and answer with what the state machine produced when it applied them.
//! Reads run against the local state machine: immediately for `serializable`, after a
//! ReadIndex barrier otherwise — so any member serves linearizable reads, and one cut off from
//! the majority fails them (`etcdserver: request timed out` / `no leader`) instead of serving
//! stale data.

use flotilla_proto::etcdserverpb::kv_server::Kv;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::quota::{self, Costed};
use super::{header, observe};
use crate::contract::ServerError;
use crate::member::handle::NodeHandle;

/// The KV service.
#[derive(Clone)]
pub struct KvService {
    node: NodeHandle,
}

impl KvService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        KvService { node }
    }

    async fn range_inner(
        &self,
        md: &tonic::metadata::MetadataMap,
        req: RangeRequest,
    ) -> Result<RangeResponse, Status> {
        if req.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        check_range(&req.key, &req.range_end)?;
        if req.encoded_len() > self.node.max_request_bytes {
            return Err(ServerError::TooLarge.into());
        }
        if !req.serializable {
            self.node.linearizable_barrier().await?;
        }
        crate::auth::check_read(&self.node, md, &req.key, &req.range_end).await?;
        let mut resp = {
            let sm = self
                .node
                .sm
                .read()
                .map_err(|_| Status::internal("state machine lock poisoned"))?;
            sm.range(&req)?
        };
        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        resp.header = Some(header(&self.node, rev));
        Ok(resp)
    }
}

/// etcd treats `range_end` "\0" as "every key ≥ key" and an empty one as "just key"; a
/// non-empty end at or before the key selects nothing in etcd, which hides client bugs — we
/// refuse it instead.
fn check_range(key: &[u8], range_end: &[u8]) -> Result<(), Status> {
    if !range_end.is_empty() && range_end != [0u8] && range_end <= key {
        return Err(Status::invalid_argument(
            "etcdserver: invalid range: range_end must be greater than key",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let r = self.range_inner(&md, req).await;
        observe(&self.node, "Range", r).map(Response::new)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let r = async {
            // etcd's quota server wraps the KV server: the quota is checked first.
            quota::check(&self.node, Costed::Put(&req)).await?;
            if req.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            crate::auth::write(&self.node, &md, req).await
        }
        .await;
        observe(&self.node, "Put", r).map(Response::new)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let r = async {
            if req.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            check_range(&req.key, &req.range_end)?;
            crate::auth::write(&self.node, &md, req).await
        }
        .await;
        observe(&self.node, "DeleteRange", r).map(Response::new)
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let r = async {
            quota::check(&self.node, Costed::Txn(&req)).await?;
            // etcd's checks, before anything is replicated: each list bounded by 128 (not
            // their sum), keys present, no key written twice in a branch.
            crate::mvcc::txn::check_txn(&req)
                .map_err(|e| Status::new(e.grpc_code(), e.grpc_message()))?;
            crate::auth::write(&self.node, &md, req).await
        }
        .await;
        observe(&self.node, "Txn", r).map(Response::new)
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let r = crate::auth::write(&self.node, &md, req).await;
        observe(&self.node, "Compact", r).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(check_range(b"a", b"").is_ok());
        assert!(check_range(b"a", b"\0").is_ok());
        assert!(check_range(b"a", b"b").is_ok());
        assert_eq!(
            check_range(b"b", b"a").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(check_range(b"a", b"a").is_err());
    }
}
