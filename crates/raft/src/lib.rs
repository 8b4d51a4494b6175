//! # flotilla-raft
//!
//! Flotilla's consensus core: a deterministic Raft state machine with no I/O, no clock, no
//! threads and no global randomness, in the style of etcd-io/raft and tikv/raft-rs.
//!
//! The caller drives it: [`RawNode::tick`] advances logical time, [`RawNode::step`] feeds a
//! message from a peer, [`RawNode::propose`] / [`RawNode::propose_conf_change`] /
//! [`RawNode::read_index`] / [`RawNode::transfer_leader`] submit requests. Whatever the core
//! wants done comes out as a [`Ready`].
//!
//! ## The Ready contract
//!
//! When [`RawNode::has_ready`] is true, take [`RawNode::ready`] and, **in this order**:
//!
//! 0. `early_messages` MAY be sent at once, before or while steps 1–3 run (they may also
//!    simply be sent with `messages` in step 4). This is how a leader writes its log in
//!    parallel with replicating it (Raft thesis §10.2.1; etcd-io/raft and tikv/raft-rs do the
//!    same): without it every commit waits for the leader's sync and then the follower's.
//!    They are only ever the Append, Heartbeat and InstallSnapshot messages of a node that is
//!    leader of the current term *when `ready` is called*, and only when that term was already
//!    durable before this Ready (the Ready carries no term change). Why that is safe:
//!    - A leader counts its own log toward the commit quorum only up to what `advance`
//!      reported durable (pitfall 1), so entries it sent but has not synced commit only once
//!      a majority of *other* voters synced them. If it crashes before its sync, it restarts
//!      without them as a follower; they are either committed on a majority or will be
//!      overwritten by a later leader, like any uncommitted entry.
//!    - The term and the self-vote that made it leader are durable (they came with the term
//!      change, in an earlier Ready), so after a crash it can neither vote in this term nor win
//!      it again: no second, different entry can ever appear at the same index and term.
//!    - The commit index they carry counts only durable acknowledgements, and a snapshot
//!      covers only applied, hence committed, entries.
//!
//!    Everything that promises something about this node's own durable state — votes and
//!    vote responses, append and heartbeat responses, `TimeoutNow`, read-index answers, any
//!    message of a non-leader or of a Ready in which the term changed — is in `messages`.
//! 1. If `snapshot` is set, persist it with [`LogStore::apply_snapshot`] and restore the state
//!    machine from it.
//! 2. Append `entries` with [`LogStore::append`]; store `hard_state` (when set) with
//!    [`LogStore::set_hard_state`].
//! 3. Make 1–2 durable with **one** [`LogStore::sync`] (group commit). Votes and append
//!    acknowledgements in `messages` depend on it: a node that forgets its vote after a crash
//!    can elect two leaders in one term.
//! 4. Only then send `messages` (and `early_messages`, if not sent in step 0). `messages`
//!    MUST NOT be sent before step 3 completes.
//! 5. Apply `committed_entries` to the state machine in order, and answer clients whose
//!    proposals they contain (match by index *and* term: an entry at the proposal's index with
//!    another term means the proposal was lost). Committed entries that were already durable
//!    in the local log before this Ready (at or below the last index an earlier sync covered,
//!    and below this Ready's first entry) MAY be applied before steps 1–4, as etcd does; those
//!    this Ready itself appends may not, so the state machine never gets ahead of the durable
//!    log (pitfall 3).
//! 6. Serve `read_states` once the state machine has applied up to their index.
//! 7. Call [`RawNode::advance`]. DO NOT call `ready` again before `advance`.
//!
//! Everything in one Ready is persisted with one sync, never one sync per entry.
//!
//! [`RawNode::ready`] *moves* the entries and the snapshot out of the core instead of copying
//! them; from then on the core reads them back from the store. So the caller MUST do steps 1–2
//! (apply the snapshot, append the entries to the store — the sync may come later) before it
//! calls `step`, `tick`, `propose` or any other method of the node again.
//!
//! ## Membership
//!
//! - A cluster is bootstrapped by giving each founding member's storage the same initial
//!   [`ConfState`] (as of index 0, see [`MemStorage::new_with_conf_state`]).
//! - A joining node starts with an *empty* storage and configuration, and is added by the
//!   leader with a [`ConfChangeKind::AddLearner`] change. Because the bootstrap configuration is
//!   not in the log, a joining node refuses entries until the leader has sent it a snapshot:
//!   either a real one (when the log is compacted) or the *index-0 snapshot* — empty `data`,
//!   `meta.index == 0`, `meta.conf_state` = the bootstrap configuration. Callers persist it like
//!   any snapshot (`apply_snapshot`) and restore an empty state machine from it.
//! - A configuration takes effect when its entry is appended (leader and followers alike) and
//!   reverts if the entry is truncated; committed `ConfChange` entries still come out in
//!   `committed_entries` so the caller can update its peer list and member metadata.
//! - One change at a time: a leader refuses a change while the previous one is uncommitted
//!   ([`ProposeError::ConfChangePending`]) or before it has committed an entry of its own term
//!   ([`ProposeError::LeaderNotReady`]). A removed leader keeps replicating until its removal
//!   commits, then steps down.
//!
//! ## Reads and transfers
//!
//! - [`RawNode::read_index`] answers with a [`ReadState`] once a heartbeat round has confirmed
//!   leadership (a single voter answers at once; a follower forwards to the leader). Requests
//!   in flight when leadership changes are dropped, never answered wrongly: time out and retry.
//! - [`RawNode::transfer_leader`] refuses proposals until the target has won or an election
//!   timeout has passed.
//!
//! ## Module map
//!
//! `raft` (the protocol; its own docs map the files it is split into), `raw_node` (the Ready
//! cycle), `log` (stable + unstable log), `progress` (per-member replication state and flow
//! control), `read_only` (pending ReadIndex requests), `confchange` (which membership change may
//! be proposed, and the configurations a truncation could revert), `quorum` (majority math),
//! `sanity` (bounds on incoming messages), `storage` and `mem_storage`, `config`, `errors`, `rng`
//! (seeded splitmix64 — the only randomness), `testing` (the public storage conformance suite).

#![warn(missing_docs)]

mod confchange;
mod config;
mod errors;
mod log;
mod mem_storage;
mod progress;
mod quorum;
mod raft;
mod raw_node;
mod read_only;
mod rng;
mod sanity;
mod storage;
mod types;

pub use config::{Config, Error};
pub use errors::ProposeError;
pub use mem_storage::MemStorage;
pub use progress::{ProgressState, ProgressStatus};
pub use raw_node::{RawNode, Ready, Status};
pub use storage::{LogStore, Storage, StorageError};
pub use types::*;

pub mod testing;
