//! What the log store asks of the live state machine: snapshot images for followers behind
//! the compacted log, and durability before the log drops entries.
//!
//! The log store's compaction snapshots carry only the member list (`storage::log_store`'s
//! module docs): the MVCC store is durable beside them. When a follower needs the state, the
//! store asks its [`ImageSource`] for a full image, built at that moment from the live state
//! machine. The image must describe the applied index and the configuration and members *as of
//! that index*, which only the loop knows: it publishes them into an [`AppliedView`] after
//! every apply, and [`LiveImage`] reads the view and the state machine together.
//!
//! Before the log store records a snapshot it syncs the state machine's database through
//! [`SyncState`] (a [`StateSync`]): it goes through the state machine's lock each time, because
//! a defragment replaces the database the store writes to.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_raft::{ConfState, StorageError};

use super::state_lock::StateLock;
use crate::contract::members::{self, Members};
use crate::storage::{ImageSource, StateSync};

/// The applied index, and the configuration and members as of it.
#[derive(Debug, Clone)]
pub struct AppliedView {
    /// The applied index.
    pub index: u64,
    /// The configuration as of `index`.
    pub conf_state: ConfState,
    /// The members as of `index`.
    pub members: Members,
}

/// The loop's end of the view: it writes, the image source reads.
#[derive(Debug, Clone)]
pub struct SharedView(Arc<Mutex<AppliedView>>);

impl SharedView {
    /// A view starting at `view`.
    pub fn new(view: AppliedView) -> Self {
        SharedView(Arc::new(Mutex::new(view)))
    }

    /// Publishes the applied index and, when they changed, the configuration and members.
    pub fn update(&self, index: u64, conf: Option<(&ConfState, &Members)>) {
        if let Ok(mut v) = self.0.lock() {
            v.index = index;
            if let Some((conf_state, members)) = conf {
                v.conf_state = conf_state.clone();
                v.members = members.clone();
            }
        }
    }

    /// The image source reading this view and `sm`.
    pub fn image_source(&self, sm: Arc<StateLock>) -> Arc<dyn ImageSource> {
        Arc::new(LiveImage {
            sm,
            view: self.clone(),
        })
    }
}

/// Builds full snapshot images from the live state machine.
struct LiveImage {
    sm: Arc<StateLock>,
    view: SharedView,
}

impl std::fmt::Debug for LiveImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveImage").finish_non_exhaustive()
    }
}

impl ImageSource for LiveImage {
    fn image(&self) -> Result<(u64, ConfState, Vec<u8>), StorageError> {
        let io = |e: String| StorageError::Io(e);
        // Held while the image is built, so the loop cannot publish a later index meanwhile.
        let view = self
            .view
            .0
            .lock()
            .map_err(|_| io("applied view poisoned".into()))?;
        let started = Instant::now();
        let state = self
            .sm
            .read()
            .map_err(|_| io("state machine lock poisoned".into()))?
            .snapshot()
            .map_err(io)?;
        tracing::info!(
            index = view.index,
            bytes = state.len(),
            ms = started.elapsed().as_millis() as u64,
            "built a snapshot image for a follower behind the compacted log"
        );
        Ok((
            view.index,
            view.conf_state.clone(),
            members::encode_snapshot(&view.members, &state),
        ))
    }
}

/// Syncs the live state machine's database (see the [module docs](self)).
pub struct SyncState(pub Arc<StateLock>);

impl std::fmt::Debug for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncState").finish_non_exhaustive()
    }
}

impl StateSync for SyncState {
    fn sync_state(&self) -> Result<(), StorageError> {
        self.0
            .write()
            .map_err(|_| StorageError::Io("state machine lock poisoned".into()))?
            .sync()
            .map_err(StorageError::Io)
    }
}
