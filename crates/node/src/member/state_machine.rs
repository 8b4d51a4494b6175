//! The Raft loop's view of the state machine: the MVCC store behind the few calls the loop and
//! the read path make, with entry payloads decoded here.
//!
//! A payload that does not decode is answered with an error *response* rather than a failure:
//! every member applies the same bytes, so every member reaches the same verdict, and the
//! applied index still advances (an entry is never applied twice, pitfall 3).

use flotilla_proto::etcdserverpb::{RangeRequest, RangeResponse};
use flotilla_proto::internal;
use prost::Message as _;

use flotilla_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use tokio::sync::mpsc;

use std::sync::Arc;

use crate::auth::tokens::Tokens;
use crate::mvcc::watch::{StreamId, WatchHub};
use crate::mvcc::{MvccError, MvccStore, PreparedRestore, RestoreTarget};

/// The state machine.
pub struct StateMachine {
    store: MvccStore,
    watches: WatchHub,
    /// Member updates applied since the Raft loop last took them.
    member_updates: Vec<internal::MemberUpdate>,
    /// The auth tokens this member accepts, kept in step with applied entries.
    auth_tokens: Arc<Tokens>,
}

impl StateMachine {
    /// Wraps an opened store.
    pub fn new(store: MvccStore) -> Self {
        StateMachine {
            store,
            watches: WatchHub::new(),
            member_updates: Vec::new(),
            auth_tokens: Arc::new(Tokens::default()),
        }
    }

    /// Replaces the token table (to apply `--auth-token-ttl`); call before serving.
    pub fn set_auth_tokens(&mut self, tokens: Arc<Tokens>) {
        self.auth_tokens = tokens;
    }

    /// The auth tokens this member accepts.
    pub fn auth_tokens(&self) -> &Arc<Tokens> {
        &self.auth_tokens
    }

    /// The underlying store, for reads.
    pub fn store(&self) -> &MvccStore {
        &self.store
    }

    // Lease deadlines: not replicated, kept by the leader's clock (see `lease_expiry`). The
    // state machine is their one owner; the Lease service and the expiry task go through
    // these calls.

    /// Renews lease `id` at `now_ms`; returns its TTL.
    pub fn lease_keep_alive(&mut self, id: i64, now_ms: u64) -> Result<i64, MvccError> {
        self.store.lease_keep_alive(id, now_ms)
    }

    /// Lease `id` as of `now_ms`: seconds left, granted TTL and (when `keys`) its keys; `None`
    /// when it does not exist.
    pub fn lease_time_to_live(
        &mut self,
        id: i64,
        now_ms: u64,
        keys: bool,
    ) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let ttl = self.store.lease_remaining(id, now_ms)?;
        let lease = self.store.lease(id);
        let granted = lease.map_or(0, |l| l.ttl);
        let keys = match lease {
            Some(l) if keys => l.keys.iter().cloned().collect(),
            _ => Vec::new(),
        };
        Some((ttl, granted, keys))
    }

    /// The leases past their deadline at `now_ms`. `new_leader`: this member just became
    /// leader, so every deadline restarts from now first (etcd's lessor `Promote`).
    pub fn expired_leases(&mut self, now_ms: u64, new_leader: bool) -> Vec<i64> {
        if new_leader {
            self.store.reset_lease_deadlines();
        }
        self.store.expired_leases(now_ms)
    }

    // The watch hub: watches are created, served and caught up against this store, under the
    // same lock as apply, so no event falls between a watch's start and its first delivery.

    /// A new client stream; its responses go to `tx`.
    pub fn watch_open(&mut self, tx: mpsc::Sender<WatchResponse>) -> StreamId {
        self.watches.open_stream(tx)
    }

    /// Forgets a client stream and its watches.
    pub fn watch_close(&mut self, stream: StreamId) {
        self.watches.close_stream(stream);
    }

    /// Creates a watch on `stream`; a refusal is the reason, with the current revision.
    pub fn watch_create(
        &mut self,
        stream: StreamId,
        req: &WatchCreateRequest,
    ) -> Result<(), (MvccError, i64)> {
        match self.watches.create(&self.store, stream, req) {
            Ok(_) => Ok(()),
            Err(e) => Err((e, self.store.current_revision())),
        }
    }

    /// Cancels watch `watch_id` of `stream` (unknown ids are ignored, as etcd does).
    pub fn watch_cancel(&mut self, stream: StreamId, watch_id: i64) {
        self.watches.cancel(&self.store, stream, watch_id);
    }

    /// Queues a progress notification for `stream`.
    pub fn watch_progress(&mut self, stream: StreamId) {
        self.watches.request_progress(&self.store, stream);
    }

    /// Lets watchers behind the store catch up from history.
    pub fn watch_sync(&mut self) -> Result<(), MvccError> {
        if self.watches.watch_count() == 0 {
            return Ok(());
        }
        self.watches.sync(&self.store)
    }

    /// Sends the periodic progress notification to idle watchers.
    pub fn watch_notify_progress(&mut self) {
        self.watches.notify_progress(&self.store);
    }

    /// Applies the entry at `index`; returns its `internal::Response`. An error is a local
    /// storage failure (the loop must stop); refusals of the request itself are responses.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Result<internal::Response, String> {
        let refuse = |code: tonic::Code, message: String| internal::Response {
            op: Some(internal::response::Op::Error(internal::Error {
                code: code as i32,
                message,
            })),
        };
        let resp = match internal::Request::decode(data) {
            Ok(req) => match self.store.apply(index, &req) {
                Ok(out) => {
                    if let Some(internal::request::Op::MemberUpdate(u)) = &req.op
                        && !out.skipped
                    {
                        self.member_updates.push(u.clone());
                    }
                    self.auth_tokens.observe_applied(&req, &out.response);
                    if let Err(e) = self.watches.notify(&self.store, &out.events) {
                        tracing::warn!(error = %e, "delivering watch events failed");
                    }
                    out.response
                }
                Err(e) if e.is_deterministic() => refuse(e.grpc_code(), e.grpc_message()),
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => refuse(
                tonic::Code::InvalidArgument,
                format!("etcdserver: malformed request in the log: {e}"),
            ),
        };
        Ok(resp)
    }

    /// The member updates applied since the last call, for the Raft loop's member list.
    pub fn take_member_updates(&mut self) -> Vec<internal::MemberUpdate> {
        std::mem::take(&mut self.member_updates)
    }

    /// Opens a batch: the entries applied until [`StateMachine::finish_batch`] reach sled
    /// in one atomic write with the applied index of the last one (one sled batch per tick
    /// instead of one per entry). Responses and watch events are those of one-by-one apply.
    pub fn begin_batch(&mut self) {
        self.store.begin_batch();
    }

    /// Writes the open batch. Readers see an open batch too (`MvccStore::begin_batch`), so the
    /// loop may keep it open across Readies.
    pub fn finish_batch(&mut self) -> Result<(), String> {
        self.store.finish_batch().map_err(|e| e.to_string())
    }

    /// Keys written by the open batch.
    pub fn pending_writes(&self) -> usize {
        self.store.pending_writes()
    }

    /// The last index applied to the store (persisted with the data it describes).
    pub fn applied_index(&self) -> u64 {
        self.store.applied_index()
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.store.current_revision()
    }

    /// A read against local state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, tonic::Status> {
        self.store
            .range(req)
            .map_err(|e| tonic::Status::new(e.grpc_code(), e.grpc_message()))
    }

    /// CRC-32 of the stored history (equal on members that applied the same entries), with
    /// the compact revision and the current revision.
    pub fn hash(&self) -> Result<(u32, i64, i64), String> {
        let h = self.store.hash().map_err(|e| e.to_string())?;
        Ok((
            h,
            self.store.compact_revision(),
            self.store.current_revision(),
        ))
    }

    /// Size of the state machine's database on disk.
    pub fn db_size(&self) -> i64 {
        self.store.db_size().map(|s| s as i64).unwrap_or(0)
    }

    /// Bytes of the live entries (Status's `db_size_in_use`), never above [`Self::db_size`]
    /// when that is known.
    pub fn db_size_in_use(&self) -> i64 {
        let live = i64::try_from(self.store.live_bytes()).unwrap_or(i64::MAX);
        match self.db_size() {
            0 => live,
            size => live.min(size),
        }
    }

    /// Makes every applied entry durable (before the Raft log drops entries), the open batch
    /// written first.
    pub fn sync(&mut self) -> Result<(), String> {
        self.store.sync().map_err(|e| e.to_string())
    }

    /// Rewrites the store into a fresh database, giving back the space sled kept
    /// (Maintenance.Defragment). The caller holds the write lock, so no entry applies meanwhile.
    pub fn defragment(&mut self) -> Result<crate::mvcc::store::Defragmented, MvccError> {
        self.store.defragment()
    }

    /// The serialised image of the store.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        self.store.snapshot().map_err(|e| e.to_string())
    }

    /// Replaces the store with a snapshot image taken at `index`.
    pub fn restore(&mut self, data: &[u8], index: u64) -> Result<(), String> {
        let r = self.store.restore(data, index).map_err(|e| e.to_string());
        self.restored();
        r
    }

    /// Where [`StateMachine::prepare_restore`] writes an image for this store.
    pub fn restore_target(&self) -> RestoreTarget {
        self.store.restore_target()
    }

    /// Checks and writes a snapshot image taken at `index` aside, without touching this state
    /// machine: call it without holding the lock, then [`StateMachine::install_restore`].
    pub fn prepare_restore(
        target: RestoreTarget,
        data: &[u8],
        index: u64,
    ) -> Result<PreparedRestore, String> {
        MvccStore::prepare_restore(target, data, index).map_err(|e| e.to_string())
    }

    /// Switches to a prepared snapshot image.
    pub fn install_restore(&mut self, prepared: PreparedRestore) -> Result<(), String> {
        let r = self
            .store
            .install_restore(prepared)
            .map(drop)
            .map_err(|e| e.to_string());
        self.restored();
        r
    }

    fn restored(&mut self) {
        // Watchers would silently miss the changes the snapshot jumped over: end their streams
        // (api/watch.rs answers Unavailable) so clients resume from their last revision.
        self.watches.close_all();
    }
}
