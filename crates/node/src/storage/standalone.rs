//! etcd's `--force-new-cluster` on the Raft store: [`force_new_cluster`] rewrites the log of a
//! member whose cluster lost its quorum for good so that the member is the only voter of the
//! *same* cluster, before the core starts on it.
//!
//! What etcd does (`restartAsStandaloneNode` in etcdserver/raft.go): it keeps the log up to the
//! member's commit index and **discards every entry after it**, appends one `RemoveNode`
//! configuration change per other member (and an `AddNode` for itself if it is missing) at
//! the hard state's term, declares those entries committed, and starts Raft; the member elects
//! itself, and the cluster id stays.
//!
//! What this does differs in one point: it **keeps the whole log**, entries past the commit
//! index included. A member's commit index is only what it had *learned* was committed; the
//! leader may have committed (and acknowledged to a client) entries this member holds but
//! whose commit it never heard of — a follower learns the commit index one heartbeat later.
//! Discarding them, as etcd does, can lose acknowledged writes. Keeping them can only make
//! durable an entry whose client never got an answer (or got "leader changed", which Flotilla
//! already treats as maybe-applied, `member/waiters.rs`), as a write that timed out may always
//! have taken effect. So every entry the survivor holds that could have been committed is
//! kept, and the survivor to pick is the one with the most up-to-date log (highest
//! `(last_term, last_index)`, as Admin.Status reports them), the same rule Raft's elections use.
//!
//! The new membership is written as ordinary `RemoveNode` entries after the last entry, at the
//! hard state's term, and the hard state's commit index is raised to cover them. They are
//! configuration changes like any other: the core replays them on every start, the state
//! machine applies them (recording the removed ids, whose messages are then refused, so an old
//! member that comes back exits as removed), they travel in snapshots, and a member that joins
//! later with `--join` or `member add` replays the same history. Running it again on a member
//! that is already alone changes nothing, so a start script that keeps the flag does no harm
//! until a new member has been added (as with etcd, remove the flag once the member is up).

use std::collections::BTreeSet;

use flotilla_raft::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, LogStore, NodeId, Storage,
    StorageError,
};

use super::WalLogStore;

/// What [`force_new_cluster`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    /// The members removed (voters and learners), in the order of their `RemoveNode` entries.
    pub removed: Vec<NodeId>,
    /// The commit index the member had recorded before.
    pub old_commit: u64,
    /// The last log index before the rewrite: entries `old_commit + 1 ..= old_last` were kept
    /// though this member had not seen them committed.
    pub old_last: u64,
    /// The last index after the rewrite (the last `RemoveNode` entry), now committed; the
    /// member starts from it.
    pub last_index: u64,
    /// The term of the new entries.
    pub term: u64,
}

/// Why a member cannot be forced into a new cluster.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// The member is not a voter of the configuration its log ends with.
    #[error(
        "--force-new-cluster: member {0:016x} is not a voter of its cluster (a learner, or \
         removed): only a voter can carry the cluster on; pick the voter with the most \
         up-to-date log (Admin.Status last_term, last_index)"
    )]
    NotAVoter(NodeId),
    /// The store failed.
    #[error("--force-new-cluster: {0}")]
    Storage(#[from] StorageError),
}

/// The configuration the core will start with: the snapshot's, with every configuration change
/// in the log applied (a configuration takes effect when appended).
fn latest_conf(store: &WalLogStore) -> Result<ConfState, StorageError> {
    let (_, mut conf) = store.initial_state()?;
    let (first, last) = (store.first_index()?, store.last_index()?);
    let mut lo = first;
    while lo <= last {
        let batch = store.entries(lo, last + 1, 64 << 20)?;
        let Some(end) = batch.last().map(|e| e.index) else {
            break;
        };
        for e in batch.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Some(cc) = ConfChange::decode(&e.data) {
                conf = conf.apply(&cc);
            }
        }
        lo = end + 1;
    }
    Ok(conf)
}

/// Rewrites the log so `self_id` is the only member (see the module docs), durably. Returns
/// `None` when it already is: nothing is written.
///
/// # Errors
/// [`StandaloneError::NotAVoter`] when `self_id` is not a voter of the latest configuration;
/// [`StandaloneError::Storage`] if the store fails (nothing is half-written: the entries and
/// the hard state become durable in one sync).
pub fn force_new_cluster(
    store: &mut WalLogStore,
    self_id: NodeId,
) -> Result<Option<Forced>, StandaloneError> {
    let conf = latest_conf(store)?;
    if !conf.voters.contains(&self_id) {
        return Err(StandaloneError::NotAVoter(self_id));
    }
    let others: BTreeSet<NodeId> = conf.members().filter(|id| *id != self_id).collect();
    if others.is_empty() {
        return Ok(None);
    }
    let (hs, _) = store.initial_state()?;
    let old_last = store.last_index()?;
    // A member's term is never below the term of an entry it holds; max() keeps the log's
    // terms non-decreasing even on a damaged hard state.
    let term = hs.term.max(store.term(old_last)?);
    let entries: Vec<Entry> = others
        .iter()
        .zip(old_last + 1..)
        .map(|(id, index)| Entry {
            term,
            index,
            kind: EntryKind::ConfChange,
            data: ConfChange {
                kind: ConfChangeKind::RemoveNode,
                node_id: *id,
                context: Vec::new(),
            }
            .encode(),
        })
        .collect();
    let last_index = old_last + entries.len() as u64;
    store.append(&entries)?;
    store.set_hard_state(HardState {
        term,
        vote: hs.vote,
        commit: last_index,
    })?;
    store.sync()?;
    Ok(Some(Forced {
        removed: others.into_iter().collect(),
        old_commit: hs.commit,
        old_last,
        last_index,
        term,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(
        dir: &std::path::Path,
        voters: &[NodeId],
        entries: u64,
        commit: u64,
    ) -> WalLogStore {
        let db_dir = dir.join("db");
        let db = crate::storage::open_db(&db_dir).expect("open db");
        let mut s = WalLogStore::open(db, &db_dir).expect("open store");
        s.initialize(ConfState::with_voters(voters.iter().copied()))
            .expect("bootstrap");
        let es: Vec<Entry> = (1..=entries)
            .map(|i| Entry {
                term: 2,
                index: i,
                kind: EntryKind::Normal,
                data: vec![i as u8],
            })
            .collect();
        s.append(&es).expect("append");
        s.set_hard_state(HardState {
            term: 3,
            vote: 1,
            commit,
        })
        .expect("hard state");
        s.sync().expect("sync");
        s
    }

    #[test]
    fn keeps_the_whole_log_removes_the_others_and_commits_the_removals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store_with(dir.path(), &[1, 2, 3], 10, 7);
        let f = force_new_cluster(&mut s, 2)
            .expect("forced")
            .expect("changed");
        assert_eq!(f.removed, vec![1, 3]);
        assert_eq!(
            (f.old_commit, f.old_last, f.last_index, f.term),
            (7, 10, 12, 3)
        );
        assert_eq!(s.last_index().expect("last"), 12);
        assert_eq!(s.entries(8, 11, u64::MAX).expect("kept").len(), 3);
        assert_eq!(s.initial_state().expect("hs").0.commit, 12);
        assert_eq!(latest_conf(&s).expect("conf"), ConfState::with_voters([2]));
        drop(s);
        // Durable, and a second run changes nothing.
        let db_dir = dir.path().join("db");
        let db = crate::storage::open_db(&db_dir).expect("reopen db");
        let mut s = WalLogStore::open(db, &db_dir).expect("reopen store");
        assert_eq!(s.last_index().expect("last"), 12);
        assert_eq!(s.initial_state().expect("hs").0.commit, 12);
        assert_eq!(force_new_cluster(&mut s, 2).expect("again"), None);
        assert_eq!(s.last_index().expect("last"), 12);
    }

    #[test]
    fn a_learner_or_a_stranger_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store_with(dir.path(), &[1, 2], 1, 1);
        let add = ConfChange {
            kind: ConfChangeKind::AddLearner,
            node_id: 9,
            context: Vec::new(),
        };
        s.append(&[Entry {
            term: 2,
            index: 2,
            kind: EntryKind::ConfChange,
            data: add.encode(),
        }])
        .expect("append");
        assert!(matches!(
            force_new_cluster(&mut s, 9),
            Err(StandaloneError::NotAVoter(9))
        ));
        assert!(matches!(
            force_new_cluster(&mut s, 5),
            Err(StandaloneError::NotAVoter(5))
        ));
        // The voter removes the learner too.
        let f = force_new_cluster(&mut s, 1)
            .expect("forced")
            .expect("changed");
        assert_eq!(f.removed, vec![2, 9]);
    }
}
