//! etcd's Lock service (`v3lockpb.Lock`): a distributed mutex whose ownership is a key bound
//! to the caller's lease.
//!
//! etcd serves it by running clientv3's `concurrency.Mutex` on the server; this is the same
//! algorithm on the member's own paths (see [`super::concurrency`]). Lock(name, lease) puts
//! `name/<lease in hex>` with the lease unless it exists (so locking twice with one lease is
//! one acquisition), reading the oldest key under `name/` in the same Txn. The caller owns
//! the lock when its key is the oldest; otherwise it waits until every older key is deleted
//! — by Unlock, or by its lease being revoked or expiring — then checks its own key survived
//! the wait (etcd 3.5's "mutex: session is expired"). A caller that goes away while waiting
//! has its key removed. Unlock(key) is a plain delete.

use flotilla_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest, TxnRequest};
use flotilla_proto::v3lockpb::lock_server::Lock;
use flotilla_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::concurrency::{
    Cleanup, created_at, delete_op, first_created, get_op, owner_key, prefix_of, put_op, range,
    range_kvs, range_op, recipe_error, session_lease, wait_deletes,
};
use super::observe;
use crate::auth;
use crate::member::handle::NodeHandle;

/// etcd's `concurrency.ErrSessionExpired`: the caller's key vanished while it waited (its
/// lease ended), so it does not own the lock.
pub const SESSION_EXPIRED: &str = "mutex: session is expired";

/// The Lock service.
#[derive(Clone)]
pub struct LockService {
    node: NodeHandle,
}

impl LockService {
    /// Creates the service.
    pub fn new(node: NodeHandle) -> Self {
        LockService { node }
    }

    async fn lock_inner(&self, md: &MetadataMap, req: LockRequest) -> Result<LockResponse, Status> {
        let node = &self.node;
        let lease = session_lease(node, md, req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = owner_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, b"", lease), range_op(first_created(&prefix))],
            failure: vec![get_op(&key), range_op(first_created(&prefix))],
        };
        let resp = auth::write(node, md, txn).await?;
        let my_rev = if resp.succeeded {
            resp.header.as_ref().map_or(0, |h| h.revision)
        } else {
            range_kvs(&resp.responses, 0)
                .first()
                .map_or(0, |kv| kv.create_revision)
        };
        match range_kvs(&resp.responses, 1).first() {
            Some(owner) if owner.create_revision != my_rev => {}
            _ => {
                return Ok(LockResponse {
                    header: resp.header,
                    key,
                });
            }
        }
        // Queued behind older keys. From here the key is removed unless the lock is granted.
        let cleanup = Cleanup::new(
            node,
            md,
            TxnRequest {
                success: vec![delete_op(&key)],
                ..Default::default()
            },
        );
        if let Err(e) = wait_deletes(node, md, &prefix, my_rev - 1).await {
            cleanup.run().await;
            return Err(e);
        }
        let own = match range(
            node,
            md,
            RangeRequest {
                key: key.clone(),
                ..Default::default()
            },
        )
        .await
        {
            Ok(own) => own,
            Err(e) => {
                cleanup.run().await;
                return Err(e);
            }
        };
        cleanup.disarm();
        if own.kvs.is_empty() {
            return Err(Status::unknown(SESSION_EXPIRED));
        }
        Ok(LockResponse {
            header: own.header,
            key,
        })
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let md = request.metadata().clone();
        let r = self.lock_inner(&md, request.into_inner()).await;
        observe(&self.node, "Lock", r.map_err(recipe_error)).map(Response::new)
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let md = request.metadata().clone();
        let req = request.into_inner();
        let r = async {
            // etcd deletes whatever key it is given (clientv3 `Delete`; a missing key is not an
            // error), refusing an empty one as every Delete is refused.
            if req.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            let resp = auth::write(
                &self.node,
                &md,
                DeleteRangeRequest {
                    key: req.key,
                    ..Default::default()
                },
            )
            .await?;
            Ok(UnlockResponse {
                header: resp.header,
            })
        }
        .await;
        observe(&self.node, "Unlock", r.map_err(recipe_error)).map(Response::new)
    }
}
