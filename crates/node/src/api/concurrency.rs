//! The pieces etcd's server-side Lock and Election share, from clientv3's `concurrency`
//! package (`key.go`, `mutex.go`, `election.go`, `session.go`), which etcd runs inside the
//! server against itself: owner keys named after the lease, "first/last created under a
//! prefix" reads, and the wait for the deletion of every key created before one's own.
//!
//! etcd's recipes talk to the server through an in-process client; here they go straight to
//! the member's own paths instead: writes through [`NodeHandle::write`] (so a follower
//! forwards them to the leader), reads after the ReadIndex barrier (etcd's `Get` is
//! linearizable), and waits on the state machine's watch hub — the same watches the Watch
//! service serves — so a waiter wakes on the apply that deletes the key it waits for, never
//! by polling. A waiter that goes away (the client cancelled the call) drops its hub stream,
//! which forgets the watch.

use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::response_op::Response as OpResponse;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, WatchCreateRequest, WatchResponse,
};
use flotilla_proto::mvccpb::{KeyValue, event::EventType};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth;
use crate::member::handle::NodeHandle;
use crate::mvcc::watch::StreamId;

/// TTL of the lease a Lock or Campaign without one is given: clientv3's session default
/// (`concurrency.NewSession` grants one when none is passed; etcd's servers then orphan it,
/// so it lapses a minute later unless the key is released first).
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// Responses one waiter's hub stream buffers; past it the hub catches the watcher up from
/// history instead of blocking apply (see `mvcc::watch`).
const WAIT_BUFFER: usize = 64;

/// How an error of the Lock and Election services reaches the client: etcd runs the recipes
/// through an in-process clientv3, which turns every etcd error into a plain Go error, so the
/// client sees the same text with code Unknown (checked against etcd 3.4: a Lock on a missing
/// lease is `Unknown "etcdserver: requested lease not found"`, not `NotFound`).
pub fn recipe_error(s: Status) -> Status {
    Status::unknown(s.message())
}

fn poisoned() -> Status {
    Status::internal("state machine lock poisoned")
}

/// `name` + "/": the prefix under which a lock's or an election's owner keys live.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The owner key of `lease` under `prefix`: Go's `fmt.Sprintf("%s%x", pfx, leaseID)`, so the
/// key names the lease in lowercase hex (negative ids, which Go prints with a sign, keep it).
pub fn owner_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut k = prefix.to_vec();
    k.extend_from_slice(hex.as_bytes());
    k
}

/// The end of the range of keys starting with `prefix` (clientv3's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key under `prefix` created first (`clientv3.WithFirstCreate`): the current owner.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_target: SortTarget::Create as i32,
        sort_order: SortOrder::Ascend as i32,
        limit: 1,
        ..Default::default()
    }
}

/// `create_revision(key) == rev`.
pub fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

/// A Put as one operation of a Txn.
pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// A Range as one operation of a Txn.
pub fn range_op(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(req)),
    }
}

/// A single-key Range as one operation of a Txn.
pub fn get_op(key: &[u8]) -> RequestOp {
    range_op(RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })
}

/// A single-key DeleteRange as one operation of a Txn.
pub fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The key-values a Txn's `i`-th operation read (empty if it was not a Range).
pub fn range_kvs(responses: &[ResponseOp], i: usize) -> &[KeyValue] {
    match responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// The lease an owner key is bound to: the caller's, or — for 0, "no lease" — a fresh one
/// with the session's default TTL, as `concurrency.NewSession` grants.
pub async fn session_lease(node: &NodeHandle, md: &MetadataMap, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = auth::write(
        node,
        md,
        LeaseGrantRequest {
            ttl: DEFAULT_SESSION_TTL,
            id: 0,
        },
    )
    .await?;
    Ok(granted.id)
}

/// A linearizable Range against the local state machine, header completed, as the caller
/// whose token is in `md` (etcd runs these recipes on an in-process client that carries the
/// caller's token, so every step is checked as theirs).
pub async fn range(
    node: &NodeHandle,
    md: &MetadataMap,
    req: RangeRequest,
) -> Result<RangeResponse, Status> {
    auth::check_read(node, md, &req.key, &req.range_end).await?;
    node.linearizable_barrier().await?;
    let mut resp = node.sm.read().map_err(|_| poisoned())?.range(&req)?;
    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
    resp.header = Some(node.header(rev));
    Ok(resp)
}

/// Waits until every key under `prefix` created at or before `max_create_rev` is gone
/// (`waitDeletes`): watch the newest such key until it is deleted, then look again. Answers
/// with the header of the read that found none left.
pub async fn wait_deletes(
    node: &NodeHandle,
    md: &MetadataMap,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<ResponseHeader, Status> {
    loop {
        let mut req = first_created(prefix);
        req.sort_order = SortOrder::Descend as i32;
        req.max_create_revision = max_create_rev;
        let resp = range(node, md, req).await?;
        let Some(kv) = resp.kvs.first() else {
            return Ok(resp.header.unwrap_or_default());
        };
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(node, &kv.key, rev).await?;
    }
}

/// Waits for a DELETE of `key` at or after revision `rev` (`waitDelete`).
async fn wait_delete(node: &NodeHandle, key: &[u8], rev: i64) -> Result<(), Status> {
    let mut watch = HubWatch::open(node, key, &[], rev)?;
    loop {
        let resp = watch.next().await?;
        if resp
            .events
            .iter()
            .any(|e| e.r#type == EventType::Delete as i32)
        {
            return Ok(());
        }
    }
}

/// One watch on the state machine's hub, on a stream of its own, forgotten when dropped.
///
/// A stream the hub forgets on its own (after a snapshot install) is re-created from the
/// revision after the last event seen, as clientv3's watcher does, so a waiter never misses
/// a deletion; a watch the hub cancels (its start revision was compacted) is an error.
pub struct HubWatch {
    node: NodeHandle,
    key: Vec<u8>,
    range_end: Vec<u8>,
    next_rev: i64,
    stream: StreamId,
    rx: mpsc::Receiver<WatchResponse>,
}

impl HubWatch {
    /// Watches `key` (to `range_end`, etcd's range rules) from revision `start_rev`.
    pub fn open(
        node: &NodeHandle,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
    ) -> Result<HubWatch, Status> {
        let (stream, rx) = Self::create(node, key, range_end, start_rev)?;
        Ok(HubWatch {
            node: node.clone(),
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            next_rev: start_rev,
            stream,
            rx,
        })
    }

    fn create(
        node: &NodeHandle,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
    ) -> Result<(StreamId, mpsc::Receiver<WatchResponse>), Status> {
        let (tx, rx) = mpsc::channel(WAIT_BUFFER);
        let mut sm = node.sm.write().map_err(|_| poisoned())?;
        let stream = sm.watch_open(tx);
        let req = WatchCreateRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision: start_rev,
            ..Default::default()
        };
        if let Err((e, _)) = sm.watch_create(stream, &req) {
            sm.watch_close(stream);
            return Err(Status::new(e.grpc_code(), e.grpc_message()));
        }
        Ok((stream, rx))
    }

    /// The next response carrying events, header completed.
    pub async fn next(&mut self) -> Result<WatchResponse, Status> {
        loop {
            let Some(mut resp) = self.rx.recv().await else {
                // The hub forgot the stream (snapshot installed): resume where we were.
                let (stream, rx) =
                    Self::create(&self.node, &self.key, &self.range_end, self.next_rev)?;
                self.stream = stream;
                self.rx = rx;
                continue;
            };
            if resp.canceled {
                return Err(if resp.compact_revision > 0 {
                    Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
                } else {
                    Status::unavailable(resp.cancel_reason)
                });
            }
            let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) else {
                continue; // created / progress notifications
            };
            self.next_rev = last.mod_revision + 1;
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            resp.header = Some(self.node.header(rev));
            return Ok(resp);
        }
    }
}

impl Drop for HubWatch {
    fn drop(&mut self) {
        if let Ok(mut sm) = self.node.sm.write() {
            sm.watch_close(self.stream);
        }
    }
}

/// A write to run if the request is abandoned before [`Cleanup::disarm`]: a Lock or Campaign
/// whose caller went away while it waited takes its key back out (etcd's `Mutex.Lock` and
/// `Election.Campaign` do so on a cancelled context), so it does not hold up the queue.
/// tonic drops the handler's future when the client cancels, so this runs on drop, in a task
/// of its own. The write is a Txn: a plain delete for a lock, a delete guarded by the key's
/// create revision for a campaign (`Election.Resign`).
pub struct Cleanup {
    armed: Option<(NodeHandle, MetadataMap, TxnRequest)>,
}

impl Cleanup {
    /// Arms `txn`, to be written as the caller whose token is in `md`.
    pub fn new(node: &NodeHandle, md: &MetadataMap, txn: TxnRequest) -> Self {
        Cleanup {
            armed: Some((node.clone(), md.clone(), txn)),
        }
    }

    /// The request completed: nothing to undo.
    pub fn disarm(mut self) {
        self.armed = None;
    }

    /// Runs the write now (the wait failed) and waits for it.
    pub async fn run(mut self) {
        if let Some((node, md, txn)) = self.armed.take() {
            undo(node, md, txn).await;
        }
    }
}

async fn undo(node: NodeHandle, md: MetadataMap, txn: TxnRequest) {
    if let Err(e) = auth::write(&node, &md, txn).await {
        tracing::warn!(error = %e, "removing an abandoned owner key failed");
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((node, md, txn)) = self.armed.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(undo(node, md, txn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_name_the_lease_in_lowercase_hex_like_go() {
        assert_eq!(
            owner_key(b"lk/", 0x694d_9a6b_1c2e_0a0b),
            b"lk/694d9a6b1c2e0a0b"
        );
        assert_eq!(owner_key(b"lk/", 255), b"lk/ff");
        assert_eq!(owner_key(b"lk/", -255), b"lk/-ff");
        assert_eq!(prefix_of(b"lk"), b"lk/");
    }

    #[test]
    fn prefix_ends_follow_clientv3() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
