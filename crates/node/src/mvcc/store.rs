//! `MvccStore`: the replicated key-value state machine.
//!
//! Longer than our usual file on purpose: the in-memory index, the leases and the pending
//! batch overlay are one invariant (every change goes through the overlay and lands in one
//! sled batch with the applied index), and splitting their methods across files would hide
//! that. What could stand alone already does: the key → revisions index is `key_index`,
//! watches are `watch`.
//!
//! Layout: one sled tree (`mvcc`) in the state machine's own `sled::Db`
//! (`storage::state_db`, `<data-dir>/mvcc/`), with these key spaces:
//! - `r` + revision → [`Record`]: the history, one entry per change;
//! - `l` + lease id → granted TTL;
//! - `mstate` → metadata: store revision, compact revision, applied Raft index (one value);
//! - `a…` → the auth state (`crate::auth::state`): users, roles, enabled flag, auth revision.
//! - `x` + member id + alarm type → an active alarm (`alarm.rs`).
//!
//! Keeping them in one tree lets every applied entry become ONE `sled::Batch` holding its
//! changes *and* the applied index, which sled applies atomically: after a crash the store is
//! exactly as of some applied index, and the node re-applies the log from there (pitfall 3:
//! nothing applied twice, nothing lost). The store never flushes: the Raft log is durable
//! before an entry is applied, so losing unflushed state-machine writes only means applying
//! those entries again (sled is made durable before the WAL drops any entry it produced).
//!
//! Writes mutate the in-memory index and leases while the batch is built. If the batch cannot
//! be written, or a request fails after it started changing things, the in-memory state is
//! rebuilt from sled, which still holds the state before the entry: simpler and safer than undo
//! logic. Validation errors (etcd's deterministic refusals) are raised before any change.
//!
//! Between [`MvccStore::begin_batch`] and [`MvccStore::finish_batch`] the entries' writes
//! are not applied one batch each but gathered in a pending overlay (reads consult it first)
//! and written as ONE `sled::Batch` at the end, with the applied index of the last entry: the
//! Raft loop applies all committed entries of a Ready this way, because sled's cost is per
//! batch, not per key. Atomicity is unchanged — the store is still exactly as of some applied
//! index after a crash, only a coarser one. An entry that must reload the in-memory state
//! first writes the pending overlay (its entries are complete), so the reload sees them.
//!
//! Compaction is physical and inline: it removes the revisions the key index drops in the
//! same batch, so a compacted revision is gone from the tree when the response is produced.
//! sled does not shrink its file for it, though: [`MvccStore::defragment`] rewrites the live
//! entries into a fresh database (a new generation of the state directory) and switches to
//! it, which is what gives the space back, as etcd's defragment rewrites its bbolt file.
//!
//! [`MvccStore::live_bytes`] counts the bytes of every live entry (key and value), kept up to
//! date at each commit and recounted on every reload: Status reports it as `db_size_in_use`,
//! what a defragment would shrink the database towards (plus sled's own overhead).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flotilla_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
    range_request, request_op, response_op,
};
use flotilla_proto::internal;
use flotilla_proto::mvccpb::{Event, KeyValue, event::EventType};

use super::alarm::{ALARM_PREFIX, Alarms};
use super::error::MvccError;
use super::key_index::{KeyAt, KeyRange, TreeIndex};
use super::lease::{Lease, Leases, MAX_LEASE_TTL, MIN_LEASE_TTL};
use super::record::Record;
use super::revision::{REVISION_LEN, Revision};
use super::snapshot;
use super::txn;
use crate::auth::state::{AuthState, PREFIX as AUTH_PREFIX};
use crate::storage::StateDb;
use crate::storage::state_db::STATE_TREE;

const TREE: &str = STATE_TREE;
const RECORD_PREFIX: u8 = b'r';
const LEASE_PREFIX: u8 = b'l';
/// Store revision, compact revision and applied index in one value: one key written per
/// entry instead of three (sled's cost per batch grows with the number of keys).
const META_STATE: &[u8] = b"mstate";

/// A tree key and value, copied out.
type RawPair = (Vec<u8>, Vec<u8>);

fn encode_meta(rev: i64, compact: i64, applied: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&rev.to_be_bytes());
    v.extend_from_slice(&compact.to_be_bytes());
    v.extend_from_slice(&applied.to_be_bytes());
    v
}

fn decode_meta(v: &[u8]) -> Result<(i64, i64, u64), MvccError> {
    if v.len() != 24 {
        return Err(MvccError::Corrupt("bad metadata".into()));
    }
    Ok((
        i64_from(&v[..8])?,
        i64_from(&v[8..16])?,
        i64_from(&v[16..])? as u64,
    ))
}

fn record_key(rev: Revision) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + REVISION_LEN);
    k.push(RECORD_PREFIX);
    k.extend_from_slice(&rev.to_bytes());
    k
}

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = vec![LEASE_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn i64_from(bytes: &[u8]) -> Result<i64, MvccError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| MvccError::Corrupt("bad integer".into()))?;
    Ok(i64::from_be_bytes(arr))
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// What applying one Raft entry produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyOutput {
    /// The etcd response (header revision filled; cluster, member and term left to the
    /// caller). `op` is `None` when the entry was skipped.
    pub response: internal::Response,
    /// Changes for watchers, in revision order (`prev_kv` not filled: the watch hub reads it
    /// for the watchers that ask).
    pub events: Vec<Event>,
    /// The store revision after the entry.
    pub revision: i64,
    /// True if the entry was at or below the applied index and was ignored.
    pub skipped: bool,
}

/// Changes of the entry being applied, not yet written.
struct Writer {
    begin: i64,
    /// Records of this entry; `changes[i]` has revision `(begin + 1, i)`.
    changes: Vec<Record>,
    /// Other tree writes (`None` = remove).
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    compact: Option<i64>,
    events: Vec<Event>,
}

impl Writer {
    fn new(begin: i64) -> Self {
        Writer {
            begin,
            changes: Vec::new(),
            ops: Vec::new(),
            compact: None,
            events: Vec::new(),
        }
    }

    /// The revision reads inside this entry see: its own changes included.
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn dirty(&self) -> bool {
        !self.changes.is_empty() || !self.ops.is_empty() || self.compact.is_some()
    }
}

/// What a defragment did.
#[derive(Debug)]
pub struct Defragmented {
    /// The database's size before, in bytes.
    pub before: u64,
    /// Its size after.
    pub after: u64,
    /// How long the copy and the switch took.
    pub took: std::time::Duration,
    /// The thread closing and removing the old generation (`None` when there was nothing
    /// to retire, or the switch is not yet durable and the old generation is kept).
    pub retiring: Option<std::thread::JoinHandle<()>>,
}

/// The MVCC key-value store.
pub struct MvccStore {
    db: sled::Db,
    tree: sled::Tree,
    /// The state directory generation `db` is, when the store has one (a member's data dir):
    /// what [`MvccStore::sync`] and [`MvccStore::defragment`] work on.
    home: Option<StateDb>,
    /// Bytes of the live entries (keys and values) in the tree.
    live_bytes: u64,
    /// Whether the metadata entry is in the tree (so its rewrite changes no size).
    meta_stored: bool,
    index: TreeIndex,
    leases: Leases,
    /// Users, roles and the auth switch: applied here so they share the entry's batch.
    auth: AuthState,
    alarms: Alarms,
    current_rev: i64,
    compact_rev: i64,
    applied: u64,
    /// Writes of applied entries not yet in the tree (`None` = remove), while a batch is open.
    pending: Option<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Set when writing a batch failed: the in-memory state went back to the tree's, behind
    /// what was applied and answered, so no entry may apply on top of it (the member stops
    /// and replays the log from the tree's applied index when restarted).
    failed: Option<String>,
}

impl std::fmt::Debug for MvccStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MvccStore")
            .field("current_rev", &self.current_rev)
            .field("compact_rev", &self.compact_rev)
            .field("applied", &self.applied)
            .field("keys", &self.index.len())
            .finish()
    }
}

impl MvccStore {
    /// Opens (or creates) the store inside `db` and rebuilds its in-memory index. Such a store
    /// has no directory of its own: [`MvccStore::sync`] only flushes, and
    /// [`MvccStore::defragment`] does nothing (tests, scratch stores).
    pub fn open(db: &sled::Db) -> Result<MvccStore, MvccError> {
        Self::open_inner(db.clone(), None)
    }

    /// Opens the store in a member's state database ([`crate::storage::state_db::open`]).
    pub fn open_state(state: StateDb) -> Result<MvccStore, MvccError> {
        Self::open_inner(state.db().clone(), Some(state))
    }

    fn open_inner(db: sled::Db, home: Option<StateDb>) -> Result<MvccStore, MvccError> {
        let tree = db.open_tree(TREE)?;
        let mut store = MvccStore {
            db,
            tree,
            home,
            live_bytes: 0,
            meta_stored: false,
            index: TreeIndex::default(),
            leases: Leases::default(),
            auth: AuthState::default(),
            alarms: Alarms::default(),
            current_rev: 1,
            compact_rev: 0,
            applied: 0,
            pending: None,
            failed: None,
        };
        store.reload()?;
        Ok(store)
    }

    /// Rebuilds every in-memory structure from the tree (lease deadlines are kept).
    /// An open batch is written first (its entries are complete) and stays open.
    fn reload(&mut self) -> Result<(), MvccError> {
        if let Some(p) = self.pending.take() {
            self.pending = Some(HashMap::new());
            if let Err(e) = self.write_pending(p) {
                self.pending = None;
                self.reload()?;
                self.pending = Some(HashMap::new());
                return Err(e);
            }
        }
        let loaded = load_state(self.tree.iter().map(|item| item.map_err(MvccError::from)))?;
        let old = std::mem::take(&mut self.leases);
        self.install(loaded);
        self.leases.keep_deadlines_from(old);
        Ok(())
    }

    fn install(&mut self, loaded: Loaded) {
        self.index = loaded.index;
        self.leases = loaded.leases;
        self.auth = loaded.auth;
        self.alarms = loaded.alarms;
        self.current_rev = loaded.current_rev;
        self.compact_rev = loaded.compact_rev;
        self.applied = loaded.applied;
        self.live_bytes = loaded.live_bytes;
        self.meta_stored = loaded.meta_stored;
    }

    fn write_pending(&self, p: HashMap<Vec<u8>, Option<Vec<u8>>>) -> Result<(), MvccError> {
        if p.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (k, v) in p {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        Ok(self.tree.apply_batch(batch)?)
    }

    /// Opens a batch: the entries applied until [`MvccStore::finish_batch`] are written to
    /// sled together, atomically with the applied index of the last one. Results and watch
    /// events are those of applying them one by one. Reads see the open batch: ranges, watch
    /// replay, [`MvccStore::hash_at`] and [`MvccStore::snapshot`] merge its writes over the
    /// tree's, and [`MvccStore::sync`] and [`MvccStore::defragment`] write it first.
    ///
    /// A batch may stay open across many Readies (the Raft loop writes it every tick or every
    /// few thousand writes): every `sled::Batch` makes sled write and `sync_file_range` its log
    /// buffer at once, a disk write per batch next to the WAL's fdatasync.
    pub fn begin_batch(&mut self) {
        if self.pending.is_none() {
            self.pending = Some(HashMap::new());
        }
    }

    /// Keys written by the open batch (0 without one).
    pub fn pending_writes(&self) -> usize {
        self.pending.as_ref().map_or(0, HashMap::len)
    }

    /// Writes the open batch (if any) in one `sled::Batch`. On failure the in-memory state is
    /// rebuilt from sled, which is then as of the applied index before the batch, and the
    /// store refuses every later apply (see `failed`).
    pub fn finish_batch(&mut self) -> Result<(), MvccError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        if let Err(e) = self.write_pending(p) {
            self.failed = Some(e.to_string());
            self.reload()?;
            return Err(e);
        }
        Ok(())
    }

    /// Refuses to apply on top of a state that lost applied entries (a failed batch write).
    fn check_not_failed(&self) -> Result<(), MvccError> {
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(MvccError::Corrupt(format!(
                "writing applied entries failed earlier ({e}); restart to apply them again from \
                 the log"
            ))),
        }
    }

    /// The tree's entries with keys in `[lo, hi)` (`hi` None: to the end), with the open
    /// batch's writes over them: what the tree holds once the batch is written.
    fn merged_range(
        &self,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, MvccError> {
        let iter = match &hi {
            Some(hi) => self.tree.range(lo.clone()..hi.clone()),
            None => self.tree.range(lo.clone()..),
        };
        let mut merged = BTreeMap::new();
        for item in iter {
            let (k, v) = item?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self.pending.iter().flatten() {
            if *k < lo || hi.as_ref().is_some_and(|hi| k >= hi) {
                continue;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged)
    }

    /// The current store revision.
    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    /// The revision of the last compaction (0 if never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev
    }

    /// The replicated auth state.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// The active alarms, as replicated.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// The index of the last applied Raft entry.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Size of the store's sled database on disk (its file plus blobs; the Raft store is in
    /// another database), for metrics, the quota and Maintenance.Status (etcd's `db_size`,
    /// the size of its backend file).
    pub fn db_size(&self) -> Result<u64, MvccError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Bytes of the live entries: every key and value in the tree (the history kept since
    /// the last compaction, leases, auth, alarms, metadata). Maintenance.Status reports it as
    /// `db_size_in_use`: what the data needs, without sled's per-entry and per-page overhead
    /// or the pages compaction freed, so `db_size` after a defragment is this plus sled's
    /// overhead.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Makes every applied entry durable (an open batch is written first): with a state
    /// directory, fdatasync of the database
    /// (and of a generation switch not yet known durable, see `storage::state_db`); without
    /// one, sled's flush. The Raft log store calls it (through the state machine) before it
    /// drops log entries.
    pub fn sync(&mut self) -> Result<(), MvccError> {
        self.finish_batch()?;
        match &self.home {
            Some(home) => Ok(home.sync()?),
            None => {
                self.db.flush()?;
                Ok(())
            }
        }
    }

    /// Rewrites the live entries into a fresh database and switches to it, returning the
    /// space sled's file kept (etcd's defragment). The state does not change: the copy is
    /// taken from the tree as it is (an open batch is written first), made durable, then made
    /// current with one atomic rename (`storage::state_db`); the caller keeps every apply
    /// out meanwhile (the state machine's write lock). The old generation is closed and
    /// removed on a thread of its own.
    ///
    /// A store without a directory ([`MvccStore::open`]) is left as it is.
    ///
    /// # Errors
    /// A storage error before the switch leaves the store on its old database, unchanged.
    pub fn defragment(&mut self) -> Result<Defragmented, MvccError> {
        let started = std::time::Instant::now();
        self.finish_batch()?;
        let before = self.db.size_on_disk()?;
        let Some(home) = self.home.as_mut() else {
            return Ok(Defragmented {
                before,
                after: before,
                took: started.elapsed(),
                retiring: None,
            });
        };
        let next = home.write_next(&[(TREE, &self.tree)])?;
        let retiring = self.switch_to(next)?;
        let after = self.db.size_on_disk().unwrap_or(0);
        Ok(Defragmented {
            before,
            after,
            took: started.elapsed(),
            retiring,
        })
    }

    /// Makes `next` (a written, durable generation) current and switches every handle over.
    /// The old generation is retired on a thread of its own (its handle is returned), or, while
    /// a crash may still bring it back, kept until the next start. On failure `next` is
    /// discarded and the store is unchanged.
    fn switch_to(
        &mut self,
        next: StateDb,
    ) -> Result<Option<std::thread::JoinHandle<()>>, MvccError> {
        let tree = match next.db().open_tree(TREE) {
            Ok(tree) => tree,
            Err(e) => {
                next.discard();
                return Err(e.into());
            }
        };
        if let Err(e) = next.make_current() {
            next.discard();
            return Err(e.into());
        }
        self.db = next.db().clone();
        self.tree = tree;
        let durable = next.is_current_durable();
        Ok(match self.home.replace(next) {
            Some(old) if durable => Some(old.retire()),
            _ => None,
        })
    }

    /// CRC-32 of the stored history and the compact revision: equal on members that applied
    /// the same entries (Maintenance.Hash).
    pub fn hash(&self) -> Result<u32, MvccError> {
        self.hash_at(self.current_revision())
    }

    /// CRC-32 of the stored history up to revision `rev` (0: the current revision), as etcd's
    /// HashKV: equal on members that applied the same entries and compacted at the same
    /// revision. Records are keyed by revision, so the scan stops at `rev`.
    pub fn hash_at(&self, rev: i64) -> Result<u32, MvccError> {
        let rev = if rev <= 0 {
            self.current_revision()
        } else {
            rev
        };
        if rev > self.current_revision() {
            return Err(MvccError::FutureRev);
        }
        if rev < self.compact_rev {
            return Err(MvccError::Compacted);
        }
        let mut h = snapshot::crc32(0, &self.compact_rev.to_be_bytes());
        let end = record_key(Revision {
            main: rev.saturating_add(1),
            sub: 0,
        });
        if self.pending.is_some() {
            for (k, v) in self.merged_range(vec![RECORD_PREFIX], Some(end))? {
                h = snapshot::crc32(h, &k);
                h = snapshot::crc32(h, &v);
            }
            return Ok(h);
        }
        for item in self.tree.range(vec![RECORD_PREFIX]..end) {
            let (k, v) = item?;
            h = snapshot::crc32(h, &k);
            h = snapshot::crc32(h, &v);
        }
        Ok(h)
    }

    // ---- reads ----

    fn load(&self, w: Option<&Writer>, rev: Revision) -> Result<Record, MvccError> {
        if let Some(w) = w
            && rev.main == w.begin + 1
        {
            return w
                .changes
                .get(rev.sub as usize)
                .cloned()
                .ok_or_else(|| MvccError::Corrupt(format!("missing pending {rev:?}")));
        }
        let key = record_key(rev);
        let bytes = match self.pending.as_ref().and_then(|p| p.get(&key)) {
            Some(v) => v.as_ref().map(|v| sled::IVec::from(v.as_slice())),
            None => self.tree.get(&key)?,
        }
        .ok_or_else(|| MvccError::Corrupt(format!("missing revision {rev:?}")))?;
        Record::decode(&bytes)
    }

    fn kv(&self, w: Option<&Writer>, at: KeyAt) -> Result<KeyValue, MvccError> {
        let rec = self.load(w, at.modified)?;
        Ok(KeyValue {
            key: rec.key,
            create_revision: rec.create_revision,
            mod_revision: at.modified.main,
            version: rec.version,
            value: rec.value,
            lease: rec.lease,
        })
    }

    /// The key-values in `range` visible at revision `at`.
    fn kvs_at(
        &self,
        w: Option<&Writer>,
        range: &KeyRange,
        at: i64,
    ) -> Result<Vec<KeyValue>, MvccError> {
        self.index
            .range(range, at)
            .map(|(_, a)| self.kv(w, a))
            .collect()
    }

    /// The value of one key at revision `at`, if it existed (used by watch for `prev_kv`).
    pub fn get_at(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>, MvccError> {
        if at < self.compact_rev {
            return Ok(None);
        }
        self.index
            .get(key, at)
            .map(|a| self.kv(None, a))
            .transpose()
    }

    /// The stored changes with main revision in `[from, to]`, in revision order (watch
    /// replay). Revisions below the compact revision may be partly gone.
    pub fn changes(
        &self,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = Result<(Revision, Record), MvccError>> + '_ {
        let lo = record_key(Revision::new(from.max(0), 0));
        let hi = record_key(Revision::new(to.saturating_add(1).max(0), 0));
        let decode = |(k, v): (Vec<u8>, Vec<u8>)| {
            let rev = Revision::from_bytes(&k[1..])
                .ok_or_else(|| MvccError::Corrupt("bad revision key".into()))?;
            Ok((rev, Record::decode(&v)?))
        };
        let items: Box<dyn Iterator<Item = Result<RawPair, MvccError>> + '_> = match &self.pending {
            None => Box::new(self.tree.range(lo..hi).map(|item| {
                let (k, v) = item?;
                Ok((k.to_vec(), v.to_vec()))
            })),
            // An open batch: merge its writes over the tree's (rare: watch replay only).
            Some(p) => {
                let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
                let mut err = None;
                for item in self.tree.range(lo.clone()..hi.clone()) {
                    match item {
                        Ok((k, v)) => {
                            merged.insert(k.to_vec(), Some(v.to_vec()));
                        }
                        Err(e) => {
                            err = Some(MvccError::from(e));
                            break;
                        }
                    }
                }
                for (k, v) in p {
                    if *k >= lo && *k < hi {
                        merged.insert(k.clone(), v.clone());
                    }
                }
                let items = merged
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| Ok((k, v))));
                Box::new(err.map(Err).into_iter().chain(items))
            }
        };
        items.map(move |item| item.and_then(decode))
    }

    /// A linearizable or serializable read, at the current or a past revision.
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, MvccError> {
        txn::check_range(r)?;
        self.range_impl(None, r, self.current_rev)
    }

    fn range_impl(
        &self,
        w: Option<&Writer>,
        r: &RangeRequest,
        cur: i64,
    ) -> Result<RangeResponse, MvccError> {
        use range_request::{SortOrder, SortTarget};
        if r.revision > cur {
            return Err(MvccError::FutureRev);
        }
        let rev = if r.revision <= 0 { cur } else { r.revision };
        if rev < self.compact_rev {
            return Err(MvccError::Compacted);
        }
        let range = KeyRange::new(&r.key, &r.range_end);
        if r.count_only {
            let count = self.index.range(&range, rev).count() as i64;
            return Ok(RangeResponse {
                header: header(cur),
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        let order = SortOrder::try_from(r.sort_order).map_err(|_| MvccError::InvalidSortOption)?;
        let target =
            SortTarget::try_from(r.sort_target).map_err(|_| MvccError::InvalidSortOption)?;
        // As etcd: sorting or filtering needs every match; otherwise fetch one more than the
        // limit to learn `more`.
        let fetch_all = order != SortOrder::None
            || r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let fetch = if !fetch_all && r.limit > 0 {
            Some(r.limit as usize + 1)
        } else {
            None
        };
        let matches: Vec<KeyAt> = self.index.range(&range, rev).map(|(_, a)| a).collect();
        let count = matches.len() as i64;
        let take = fetch.map_or(matches.len(), |f| f.min(matches.len()));
        let mut kvs = matches[..take]
            .iter()
            .map(|a| self.kv(w, *a))
            .collect::<Result<Vec<_>, _>>()?;
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
        let order = if target != SortTarget::Key && order == SortOrder::None {
            SortOrder::Ascend
        } else {
            order
        };
        if order != SortOrder::None {
            // Stable, so equal targets stay in key order.
            match target {
                SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
                SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
                SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
                SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: header(cur),
            kvs,
            more,
            count,
        })
    }

    // ---- leases (node-facing) ----

    /// Ids of all leases, ascending (Lease.LeaseLeases).
    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.ids()
    }

    /// A lease's replicated state.
    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(id)
    }

    /// Remaining TTL in seconds at `now_ms` (Lease.LeaseTimeToLive), or `None` if unknown.
    pub fn lease_remaining(&mut self, id: i64, now_ms: u64) -> Option<i64> {
        self.leases.remaining(id, now_ms)
    }

    /// Renews a lease (Lease.LeaseKeepAlive, leader only); returns its TTL.
    pub fn lease_keep_alive(&mut self, id: i64, now_ms: u64) -> Result<i64, MvccError> {
        self.leases
            .keep_alive(id, now_ms)
            .ok_or(MvccError::LeaseNotFound)
    }

    /// Leases past their deadline at `now_ms`: the leader proposes a revoke for each.
    pub fn expired_leases(&mut self, now_ms: u64) -> Vec<i64> {
        self.leases.expired(now_ms)
    }

    /// Gives every lease a full TTL from the next clock reading (call on becoming leader).
    pub fn reset_lease_deadlines(&mut self) {
        self.leases.reset_deadlines();
    }

    // ---- apply ----

    /// Applies one committed Raft entry. Entries at or below the applied index are skipped.
    ///
    /// A request etcd refuses (duplicate keys, missing lease, compacted revision, ...) returns
    /// its error, changes no data, and still advances the applied index: every member refuses it
    /// the same way. A storage error advances nothing; the in-memory state is reloaded.
    pub fn apply(&mut self, index: u64, req: &internal::Request) -> Result<ApplyOutput, MvccError> {
        self.check_not_failed()?;
        if index <= self.applied {
            return Ok(ApplyOutput {
                revision: self.current_rev,
                skipped: true,
                ..Default::default()
            });
        }
        let mut w = Writer::new(self.current_rev);
        match self.execute(&mut w, req, index) {
            Ok(op) => {
                let revision = self.commit(&mut w, index)?;
                let mut response = internal::Response { op: Some(op) };
                set_header_revision(&mut response, revision);
                Ok(ApplyOutput {
                    response,
                    events: std::mem::take(&mut w.events),
                    revision,
                    skipped: false,
                })
            }
            Err(e) => {
                if w.dirty() {
                    self.reload()?;
                }
                if e.is_deterministic() {
                    self.advance_applied(index)?;
                }
                Err(e)
            }
        }
    }

    /// Records that entry `index` was applied without touching data: for entries that carry
    /// no request (the leader's empty entry, configuration changes), so a restart does not
    /// hand them to the state machine again. Indexes at or below the applied index are ignored.
    pub fn advance_applied(&mut self, index: u64) -> Result<(), MvccError> {
        self.check_not_failed()?;
        if index <= self.applied {
            return Ok(());
        }
        let mut w = Writer::new(self.current_rev);
        self.commit(&mut w, index)?;
        Ok(())
    }

    fn commit(&mut self, w: &mut Writer, index: u64) -> Result<i64, MvccError> {
        let new_rev = w.read_rev();
        let compact = w.compact.unwrap_or(self.compact_rev);
        let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            Vec::with_capacity(w.changes.len() + w.ops.len() + 1);
        let mut grown: i64 = 0;
        for (sub, rec) in w.changes.iter().enumerate() {
            let key = record_key(Revision::new(new_rev, sub as i64));
            let value = rec.encode();
            // A revision is written once: nothing to replace.
            grown += (key.len() + value.len()) as i64;
            ops.push((key, Some(value)));
        }
        grown += self.replaced_size_delta(&w.ops)?;
        ops.append(&mut w.ops);
        let meta = encode_meta(new_rev, compact, index);
        if !self.meta_stored {
            grown += (META_STATE.len() + meta.len()) as i64;
        }
        ops.push((META_STATE.to_vec(), Some(meta)));
        if let Some(p) = self.pending.as_mut() {
            // Later writes of a key replace earlier ones, as in sled.
            p.extend(ops);
        } else {
            let mut batch = sled::Batch::default();
            for (k, v) in ops {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            if let Err(e) = self.tree.apply_batch(batch) {
                self.reload()?;
                return Err(e.into());
            }
        }
        self.current_rev = new_rev;
        self.compact_rev = compact;
        self.applied = index;
        self.meta_stored = true;
        self.live_bytes = self.live_bytes.saturating_add_signed(grown);
        Ok(new_rev)
    }

    /// How much `ops` (writes of keys that may exist: leases, auth, alarms, compacted
    /// revisions) change [`MvccStore::live_bytes`]: each key's new size minus the size it has
    /// now (in the open batch, else in the tree, else 0).
    fn replaced_size_delta(&self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<i64, MvccError> {
        let mut sizes: HashMap<&[u8], i64> = HashMap::new();
        let mut delta = 0;
        for (k, v) in ops {
            let old = match sizes.get(k.as_slice()) {
                Some(size) => *size,
                None => self.stored_size(k)?,
            };
            let new = v.as_ref().map_or(0, |v| (k.len() + v.len()) as i64);
            delta += new - old;
            sizes.insert(k, new);
        }
        Ok(delta)
    }

    /// The size (key and value) of `key` as stored now, the open batch included.
    fn stored_size(&self, key: &[u8]) -> Result<i64, MvccError> {
        let value_len = match self.pending.as_ref().and_then(|p| p.get(key)) {
            Some(v) => v.as_ref().map(Vec::len),
            None => self.tree.get(key)?.map(|v| v.len()),
        };
        Ok(value_len.map_or(0, |n| (key.len() + n) as i64))
    }

    fn execute(
        &mut self,
        w: &mut Writer,
        req: &internal::Request,
        index: u64,
    ) -> Result<internal::response::Op, MvccError> {
        use internal::request::Op as Req;
        use internal::response::Op as Resp;
        let op = req
            .op
            .as_ref()
            .ok_or_else(|| MvccError::InvalidRequest("empty request".into()))?;
        self.alarms.gate(op)?;
        crate::auth::check::check_request(&self.auth, req, |id| {
            self.leases
                .get(id)
                .map(|l| l.keys.iter().cloned().collect())
                .unwrap_or_default()
        })?;
        Ok(match op {
            Req::Put(p) => {
                txn::check_put(p)?;
                self.check_put_state(p, w.begin)?;
                Resp::Put(self.exec_put(w, p)?)
            }
            Req::DeleteRange(d) => {
                txn::check_delete(d)?;
                Resp::DeleteRange(self.exec_delete(w, d)?)
            }
            Req::Txn(t) => Resp::Txn(self.apply_txn(w, t)?),
            Req::Compaction(c) => Resp::Compaction(self.exec_compact(w, c)?),
            Req::LeaseGrant(g) => Resp::LeaseGrant(self.exec_lease_grant(w, g, req.id)?),
            Req::LeaseRevoke(r) => Resp::LeaseRevoke(self.exec_lease_revoke(w, r)?),
            // Membership is the Raft loop's; the store only records that the entry applied.
            Req::MemberUpdate(_) => Resp::MemberUpdated(internal::MemberUpdated {}),
            Req::AuthEnable(_)
            | Req::AuthDisable(_)
            | Req::Authenticate(_)
            | Req::UserAdd(_)
            | Req::UserDelete(_)
            | Req::UserChangePassword(_)
            | Req::UserGrantRole(_)
            | Req::UserRevokeRole(_)
            | Req::RoleAdd(_)
            | Req::RoleDelete(_)
            | Req::RoleGrantPermission(_)
            | Req::RoleRevokePermission(_) => match self.auth.apply(op, index, &mut w.ops) {
                Some(r) => r?,
                None => return Err(MvccError::InvalidRequest("not an auth request".into())),
            },
            Req::Alarm(a) => Resp::Alarm(self.alarms.apply(a, &mut w.ops)),
        })
    }

    fn check_put_state(&self, p: &PutRequest, at: i64) -> Result<(), MvccError> {
        if (p.ignore_value || p.ignore_lease) && self.index.get(&p.key, at).is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains(p.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    fn put(&mut self, w: &mut Writer, key: &[u8], value: Vec<u8>, lease: i64) {
        let rev = Revision::new(w.begin + 1, w.changes.len() as i64);
        let (created, version) = match self.index.get(key, rev.main) {
            Some(a) => (a.created, a.version + 1),
            None => (rev.main, 1),
        };
        let rec = Record {
            tombstone: false,
            key: key.to_vec(),
            value,
            create_revision: created,
            version,
            lease,
        };
        self.index.key_mut(key).put(rev);
        self.leases.attach(key, lease);
        w.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: rec.key.clone(),
                create_revision: created,
                mod_revision: rev.main,
                version,
                value: rec.value.clone(),
                lease,
            }),
            prev_kv: None,
        });
        w.changes.push(rec);
    }

    fn delete(&mut self, w: &mut Writer, key: &[u8]) {
        let rev = Revision::new(w.begin + 1, w.changes.len() as i64);
        if !self.index.key_mut(key).tombstone(rev) {
            return;
        }
        self.leases.attach(key, 0);
        w.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                mod_revision: rev.main,
                ..Default::default()
            }),
            prev_kv: None,
        });
        w.changes.push(Record {
            tombstone: true,
            key: key.to_vec(),
            ..Record::default()
        });
    }

    fn exec_put(&mut self, w: &mut Writer, p: &PutRequest) -> Result<PutResponse, MvccError> {
        let prev = if p.prev_kv || p.ignore_value || p.ignore_lease {
            match self.index.get(&p.key, w.read_rev()) {
                Some(a) => Some(self.kv(Some(w), a)?),
                None => None,
            }
        } else {
            None
        };
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            (None, true) => return Err(MvccError::KeyNotFound),
            (_, false) => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            (None, true) => return Err(MvccError::KeyNotFound),
            (_, false) => p.lease,
        };
        self.put(w, &p.key, value, lease);
        Ok(PutResponse {
            header: header(w.read_rev()),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn exec_delete(
        &mut self,
        w: &mut Writer,
        d: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let range = KeyRange::new(&d.key, &d.range_end);
        let at = w.read_rev();
        let keys: Vec<(Vec<u8>, KeyAt)> = self
            .index
            .range(&range, at)
            .map(|(k, a)| (k.to_vec(), a))
            .collect();
        let mut prev_kvs = Vec::new();
        if d.prev_kv {
            for (_, a) in &keys {
                prev_kvs.push(self.kv(Some(w), *a)?);
            }
        }
        for (k, _) in &keys {
            self.delete(w, k);
        }
        Ok(DeleteRangeResponse {
            header: header(w.read_rev()),
            deleted: keys.len() as i64,
            prev_kvs,
        })
    }

    fn apply_txn(&mut self, w: &mut Writer, t: &TxnRequest) -> Result<TxnResponse, MvccError> {
        txn::check_txn(t)?;
        // As etcd: every compare on the path, nested ones included, is evaluated against the
        // state before the txn, and the chosen path is checked before anything is written.
        let mut path = Vec::new();
        self.txn_path(t, &mut path)?;
        let mut cursor = 0;
        self.check_txn_state(t, &path, &mut cursor, w.begin)?;
        let mut cursor = 0;
        self.exec_txn(w, t, &path, &mut cursor)
    }

    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut ok = true;
        for c in &t.compare {
            let kvs = self.kvs_at(None, &KeyRange::new(&c.key, &c.range_end), self.current_rev)?;
            if !txn::compare_holds(c, &kvs) {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
                self.txn_path(inner, path)?;
            }
        }
        Ok(())
    }

    fn check_txn_state(
        &self,
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        at: i64,
    ) -> Result<(), MvccError> {
        let ok = path[*cursor];
        *cursor += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.check_put_state(p, at)?,
                Some(request_op::Request::RequestRange(r)) if r.revision > 0 => {
                    if r.revision > at {
                        return Err(MvccError::FutureRev);
                    }
                    if r.revision < self.compact_rev {
                        return Err(MvccError::Compacted);
                    }
                }
                Some(request_op::Request::RequestTxn(inner)) => {
                    self.check_txn_state(inner, path, cursor, at)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        w: &mut Writer,
        t: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<TxnResponse, MvccError> {
        use request_op::Request as Op;
        use response_op::Response as R;
        let ok = path[*cursor];
        *cursor += 1;
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            let resp = match &op.request {
                Some(Op::RequestRange(r)) => {
                    R::ResponseRange(self.range_impl(Some(w), r, w.read_rev())?)
                }
                Some(Op::RequestPut(p)) => R::ResponsePut(self.exec_put(w, p)?),
                Some(Op::RequestDeleteRange(d)) => R::ResponseDeleteRange(self.exec_delete(w, d)?),
                Some(Op::RequestTxn(inner)) => {
                    R::ResponseTxn(self.exec_txn(w, inner, path, cursor)?)
                }
                None => return Err(MvccError::KeyNotFound),
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok(TxnResponse {
            header: header(w.read_rev()),
            succeeded: ok,
            responses,
        })
    }

    fn exec_compact(
        &mut self,
        w: &mut Writer,
        c: &CompactionRequest,
    ) -> Result<CompactionResponse, MvccError> {
        if c.revision <= self.compact_rev {
            return Err(MvccError::Compacted);
        }
        if c.revision > self.current_rev {
            return Err(MvccError::FutureRev);
        }
        for rev in self.index.compact(c.revision) {
            w.ops.push((record_key(rev), None));
        }
        w.compact = Some(c.revision);
        Ok(CompactionResponse {
            header: header(w.read_rev()),
        })
    }

    fn exec_lease_grant(
        &mut self,
        w: &mut Writer,
        g: &LeaseGrantRequest,
        request_id: u64,
    ) -> Result<LeaseGrantResponse, MvccError> {
        // A lease id is chosen by the proposer in etcd; when the client leaves it to us, the
        // request id (the same on every member) decides it.
        let id = if g.id != 0 {
            g.id
        } else {
            match (request_id & i64::MAX as u64) as i64 {
                0 => 1,
                id => id,
            }
        };
        if g.ttl > MAX_LEASE_TTL {
            return Err(MvccError::LeaseTtlTooLarge);
        }
        if self.leases.contains(id) {
            return Err(MvccError::LeaseExists);
        }
        let ttl = g.ttl.max(MIN_LEASE_TTL);
        self.leases.grant(id, ttl);
        w.ops
            .push((lease_key(id), Some(ttl.to_be_bytes().to_vec())));
        Ok(LeaseGrantResponse {
            header: header(w.read_rev()),
            id,
            ttl,
            error: String::new(),
        })
    }

    fn exec_lease_revoke(
        &mut self,
        w: &mut Writer,
        r: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        if !self.leases.contains(r.id) {
            return Err(MvccError::LeaseNotFound);
        }
        let keys: BTreeSet<Vec<u8>> = self.leases.revoke(r.id);
        for k in &keys {
            self.delete(w, k);
        }
        w.ops.push((lease_key(r.id), None));
        Ok(LeaseRevokeResponse {
            header: header(w.read_rev()),
        })
    }

    // ---- snapshots ----

    /// The whole state: history since the compact revision, compact revision, leases and
    /// applied index.
    pub fn snapshot(&self) -> Result<Vec<u8>, MvccError> {
        if self.pending.is_some() {
            return Ok(snapshot::encode(self.merged_range(Vec::new(), None)?));
        }
        let entries = self
            .tree
            .iter()
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(snapshot::encode(entries))
    }

    /// Replaces the whole state with a snapshot taken at Raft index `index`. Damaged data is
    /// refused before anything changes. The two steps, [`MvccStore::prepare_restore`] and
    /// [`MvccStore::install_restore`], done at once: callers that share the store behind a
    /// lock do the first without it.
    pub fn restore(&mut self, data: &[u8], index: u64) -> Result<(), MvccError> {
        let prepared = Self::prepare_restore(self.restore_target(), data, index)?;
        self.install_restore(prepared)?;
        Ok(())
    }

    /// Where [`MvccStore::prepare_restore`] writes an image for this store.
    pub fn restore_target(&self) -> RestoreTarget {
        RestoreTarget {
            after: self
                .home
                .as_ref()
                .map(|h| (h.dir().clone(), h.generation())),
        }
    }

    /// Decodes and checks a snapshot image taken at Raft index `index`, rebuilds the state it
    /// describes and, for a store with a state directory, writes it into a new generation
    /// (durable, not current). Nothing of the live store is touched or locked, so readers
    /// keep being served while a large image is written; [`MvccStore::install_restore`] then
    /// switches over in a moment.
    pub fn prepare_restore(
        target: RestoreTarget,
        data: &[u8],
        index: u64,
    ) -> Result<PreparedRestore, MvccError> {
        let mut entries = snapshot::decode(data)?;
        // Images are written in key order; sorting is then one pass, and a damaged order is
        // still loaded correctly (the last of equal keys wins, as a batch would have it).
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        entries.reverse();
        let (rev, compact, _) = match entries.binary_search_by(|e| e.0.as_slice().cmp(META_STATE)) {
            Ok(i) => {
                decode_meta(&entries[i].1).map_err(|e| MvccError::InvalidSnapshot(e.to_string()))?
            }
            Err(_) => (1, 0, 0),
        };
        let meta = encode_meta(rev, compact, index);
        match entries.binary_search_by(|e| e.0.as_slice().cmp(META_STATE)) {
            Ok(i) => entries[i].1 = meta,
            Err(i) => entries.insert(i, (META_STATE.to_vec(), meta)),
        }
        // Build the whole in-memory state first: a snapshot that does not load is refused
        // before anything is written.
        let loaded = load_state(entries.iter().map(|(k, v)| Ok((k, v))))
            .map_err(|e| MvccError::InvalidSnapshot(e.to_string()))?;
        let image = match target.after {
            Some((dir, after)) => {
                RestoreImage::Generation(dir.write_generation_from(after, TREE, entries)?)
            }
            None => RestoreImage::Entries(entries),
        };
        Ok(PreparedRestore { loaded, image })
    }

    /// Makes a prepared image the store's state: the new generation becomes current (the old
    /// one is closed and removed on a thread of its own, whose handle is returned), or, for a
    /// store without a state directory, the image replaces the tree in one batch.
    pub fn install_restore(
        &mut self,
        prepared: PreparedRestore,
    ) -> Result<Option<std::thread::JoinHandle<()>>, MvccError> {
        let PreparedRestore { loaded, image } = prepared;
        let retiring = match image {
            RestoreImage::Generation(next) => self.switch_to(next)?,
            RestoreImage::Entries(entries) => {
                self.pending = None;
                let mut batch = sled::Batch::default();
                let mut keep = entries.iter().map(|(k, _)| k.as_slice()).peekable();
                for item in self.tree.iter().keys() {
                    let k = item?;
                    while keep.next_if(|want| *want < k.as_ref()).is_some() {}
                    if keep.peek() != Some(&k.as_ref()) {
                        batch.remove(k);
                    }
                }
                for (k, v) in entries {
                    batch.insert(k, v);
                }
                self.tree.apply_batch(batch)?;
                None
            }
        };
        // The image replaces everything, an open batch's writes included.
        self.pending = None;
        self.install(loaded);
        Ok(retiring)
    }
}

/// Where a snapshot image is written before it replaces a store (see
/// [`MvccStore::restore_target`]).
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// The state directory and the generation the store is at; `None` for a store without
    /// one (scratch stores, tests), whose tree is rewritten in place.
    after: Option<(crate::storage::state_db::StateDir, u64)>,
}

/// A snapshot image checked and written, waiting for [`MvccStore::install_restore`].
pub struct PreparedRestore {
    loaded: Loaded,
    image: RestoreImage,
}

impl std::fmt::Debug for PreparedRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRestore")
            .field("applied", &self.loaded.applied)
            .field("current_rev", &self.loaded.current_rev)
            .finish_non_exhaustive()
    }
}

enum RestoreImage {
    /// A new state generation, durable, not yet current.
    Generation(StateDb),
    /// The image's entries, in key order, to write over the tree.
    Entries(Vec<(Vec<u8>, Vec<u8>)>),
}

/// The in-memory state rebuilt from the tree's entries.
struct Loaded {
    index: TreeIndex,
    leases: Leases,
    auth: AuthState,
    alarms: Alarms,
    current_rev: i64,
    compact_rev: i64,
    applied: u64,
    /// Bytes of every entry (keys and values).
    live_bytes: u64,
    /// Whether the metadata entry was among them.
    meta_stored: bool,
}

/// Rebuilds the in-memory state from tree entries in key order (auth `a` and leases `l` sort
/// before metadata `m` and records `r`, so every lease exists before a record names it; alarms
/// `x` name nothing).
fn load_state<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    entries: impl Iterator<Item = Result<(K, V), MvccError>>,
) -> Result<Loaded, MvccError> {
    let mut st = Loaded {
        index: TreeIndex::default(),
        leases: Leases::default(),
        auth: AuthState::default(),
        alarms: Alarms::default(),
        // etcd starts at revision 1, so the first write creates revision 2.
        current_rev: 1,
        compact_rev: 0,
        applied: 0,
        live_bytes: 0,
        meta_stored: false,
    };
    for item in entries {
        let (k, v) = item?;
        let (k, v) = (k.as_ref(), v.as_ref());
        st.live_bytes += (k.len() + v.len()) as u64;
        match k.first() {
            Some(&LEASE_PREFIX) if k.len() == 9 => {
                st.leases.grant(i64_from(&k[1..])?, i64_from(v)?)
            }
            Some(&ALARM_PREFIX) => st.alarms.load(k)?,
            Some(b'm') => match k {
                META_STATE => {
                    (st.current_rev, st.compact_rev, st.applied) = decode_meta(v)?;
                    st.meta_stored = true;
                }
                _ => return Err(MvccError::Corrupt("unknown metadata key".into())),
            },
            Some(&RECORD_PREFIX) => {
                let rev = Revision::from_bytes(&k[1..])
                    .ok_or_else(|| MvccError::Corrupt("bad revision key".into()))?;
                let rec = Record::decode(v)?;
                if rec.tombstone {
                    if !st.index.key_mut(&rec.key).tombstone(rev) {
                        return Err(MvccError::Corrupt(format!(
                            "tombstone at {rev:?} of a deleted key"
                        )));
                    }
                    st.leases.attach(&rec.key, 0);
                } else {
                    st.index
                        .key_mut(&rec.key)
                        .restore(rev, rec.create_revision, rec.version);
                    st.leases.attach(&rec.key, rec.lease);
                }
                if rev.main > st.current_rev {
                    return Err(MvccError::Corrupt(format!(
                        "revision {rev:?} beyond the store revision"
                    )));
                }
            }
            Some(&AUTH_PREFIX) => st.auth.load_entry(k, v).map_err(MvccError::Corrupt)?,
            _ => return Err(MvccError::Corrupt("unknown key".into())),
        }
    }
    Ok(st)
}

fn set_header_revision(resp: &mut internal::Response, revision: i64) {
    use internal::response::Op;
    let h = match &mut resp.op {
        Some(Op::Put(r)) => &mut r.header,
        Some(Op::DeleteRange(r)) => &mut r.header,
        Some(Op::Txn(r)) => &mut r.header,
        Some(Op::Compaction(r)) => &mut r.header,
        Some(Op::LeaseGrant(r)) => &mut r.header,
        Some(Op::LeaseRevoke(r)) => &mut r.header,
        Some(Op::Alarm(r)) => &mut r.header,
        Some(Op::Error(_) | Op::MemberUpdated(_) | Op::AuthChanged(_) | Op::Authenticated(_))
        | None => return,
    };
    h.get_or_insert_with(ResponseHeader::default).revision = revision;
}
