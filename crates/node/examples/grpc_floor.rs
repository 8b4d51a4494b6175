//! The floor under a Flotilla write: etcd's KV service over the same tonic stack, answering
//! every `Put` at once — no Raft, no disk, no replicas, no state.
//!
//! `scripts/bench-vs-etcd.sh` drives it with etcd's benchmark tool next to the real clusters
//! (the `floor` column): whatever a three-member cluster does per write comes on top of this
//! one gRPC round trip, so its put throughput bounds Flotilla's on the same machine. When the
//! floor itself is under twice etcd's throughput, no change short of leaving tonic can reach
//! twice etcd's throughput.
//!
//! ```text
//! cargo build --release -p flotilla-node --example grpc_floor
//! target/release/examples/grpc_floor 127.0.0.1:52377
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use flotilla_proto::etcdserverpb::kv_server::{Kv, KvServer};
use flotilla_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

/// Answers puts with a fresh revision and nothing else.
#[derive(Default)]
struct NullKv {
    revision: AtomicI64,
}

impl NullKv {
    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 1,
            revision: self.revision.fetch_add(1, Ordering::Relaxed) + 1,
            raft_term: 1,
        })
    }
}

#[tonic::async_trait]
impl Kv for NullKv {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse {
            header: self.header(),
            ..Default::default()
        }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse {
            header: self.header(),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented(
            "grpc_floor answers Put and Range only",
        ))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented(
            "grpc_floor answers Put and Range only",
        ))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented(
            "grpc_floor answers Put and Range only",
        ))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:52377".to_string())
        .parse()?;
    tonic::transport::Server::builder()
        .add_service(KvServer::new(NullKv::default()))
        .serve(addr)
        .await?;
    Ok(())
}
