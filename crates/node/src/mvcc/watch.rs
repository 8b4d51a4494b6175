//! The watch hub: etcd's Watch service semantics over the MVCC store.
//!
//! A client stream (one gRPC Watch call) is registered with [`WatchHub::open_stream`] and a
//! bounded `tokio::sync::mpsc` sender; every watch on it sends its `WatchResponse`s there, in
//! order: the `created` response, then history replayed from `start_revision`, then live events.
//! The hub is owned by the task that applies entries, next to the store, and never awaits.
//!
//! Slow watchers (modelled on etcd's `watchable_store.go`, synced and unsynced groups): live
//! events go out with `try_send`, so a full channel never blocks apply. When a watcher's
//! events do not fit, it becomes *unsynced*: it remembers the first revision it has not
//! received and later catches up **from the store's history**, in bounded chunks, when
//! [`WatchHub::sync`] runs (the node calls it after every apply and on a short timer, as etcd's
//! `syncWatchersLoop` does every 100 ms). Nothing is dropped and memory stays bounded. If the
//! history it needs is compacted meanwhile, the watch is cancelled with `compact_revision` set,
//! exactly as etcd cancels a compacted watcher, and the client re-creates it.
//!
//! Not implemented: `fragment`; explicit progress
//! requests are answered.

use std::collections::{BTreeMap, HashMap, VecDeque};

use flotilla_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use flotilla_proto::mvccpb::{Event, KeyValue, event::EventType};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::error::MvccError;
use super::key_index::KeyRange;
use super::record::Record;
use super::revision::Revision;
use super::store::MvccStore;

/// How many events a catch-up response carries at most (a revision is never split, so a
/// single large txn can exceed it).
pub const MAX_EVENTS_PER_RESPONSE: usize = 1000;

/// Identifies a client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u64);

struct Watcher {
    range: KeyRange,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// First revision this watcher has not been sent yet.
    next_rev: i64,
    synced: bool,
    /// Created with `progress_notify`: gets [`WatchHub::notify_progress`]'s responses.
    progress_notify: bool,
}

impl Watcher {
    fn wants(&self, ev: &Event) -> bool {
        let Some(kv) = &ev.kv else { return false };
        let is_put = ev.r#type == EventType::Put as i32;
        let filtered = if is_put { self.no_put } else { self.no_delete };
        self.range.contains(&kv.key) && !filtered
    }
}

struct Stream {
    tx: mpsc::Sender<WatchResponse>,
    /// Control responses (created, canceled, progress) waiting for room; they go before any
    /// further event on this stream.
    control: VecDeque<WatchResponse>,
    watchers: BTreeMap<i64, Watcher>,
    next_watch_id: i64,
}

impl Stream {
    /// Sends queued control responses; false if some are still waiting or the client is gone.
    fn flush_control(&mut self) -> bool {
        while let Some(resp) = self.control.pop_front() {
            match self.tx.try_send(resp) {
                Ok(()) => {}
                Err(TrySendError::Full(resp)) => {
                    self.control.push_front(resp);
                    return false;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        true
    }
}

/// All watch streams of a member.
#[derive(Default)]
pub struct WatchHub {
    streams: HashMap<StreamId, Stream>,
    next_stream: u64,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn event_of(rev: Revision, rec: Record) -> Event {
    if rec.tombstone {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: rec.key,
                mod_revision: rev.main,
                ..Default::default()
            }),
            prev_kv: None,
        }
    } else {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: rec.key,
                create_revision: rec.create_revision,
                mod_revision: rev.main,
                version: rec.version,
                value: rec.value,
                lease: rec.lease,
            }),
            prev_kv: None,
        }
    }
}

fn event_rev(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

fn with_prev(store: &MvccStore, mut ev: Event) -> Result<Event, MvccError> {
    if let Some(kv) = &ev.kv {
        ev.prev_kv = store.get_at(&kv.key, kv.mod_revision - 1)?;
    }
    Ok(ev)
}

impl WatchHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a client stream whose responses go to `tx`.
    pub fn open_stream(&mut self, tx: mpsc::Sender<WatchResponse>) -> StreamId {
        let id = StreamId(self.next_stream);
        self.next_stream += 1;
        self.streams.insert(
            id,
            Stream {
                tx,
                control: VecDeque::new(),
                watchers: BTreeMap::new(),
                next_watch_id: 0,
            },
        );
        id
    }

    /// Forgets a stream and all its watches.
    pub fn close_stream(&mut self, stream: StreamId) {
        self.streams.remove(&stream);
    }

    /// Forgets every stream, closing their response channels: after a snapshot is installed
    /// the watchers never saw the changes it skipped, so their clients must resume.
    pub fn close_all(&mut self) {
        self.streams.clear();
    }

    /// Number of watches across all streams.
    pub fn watch_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    /// Creates a watch and starts replaying history from its start revision. Returns the watch
    /// id (the requested one, or the next free one from 0 up, as etcd).
    pub fn create(
        &mut self,
        store: &MvccStore,
        stream: StreamId,
        req: &WatchCreateRequest,
    ) -> Result<i64, MvccError> {
        let s = self
            .streams
            .get_mut(&stream)
            .ok_or_else(|| MvccError::InvalidRequest("unknown watch stream".into()))?;
        let id = if req.watch_id != 0 {
            if s.watchers.contains_key(&req.watch_id) {
                return Err(MvccError::DuplicateWatchId);
            }
            req.watch_id
        } else {
            while s.watchers.contains_key(&s.next_watch_id) {
                s.next_watch_id += 1;
            }
            s.next_watch_id
        };
        let current = store.current_revision();
        let start = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        s.control.push_back(WatchResponse {
            header: header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        });
        s.watchers.insert(
            id,
            Watcher {
                range: KeyRange::new(&req.key, &req.range_end),
                prev_kv: req.prev_kv,
                no_put: req.filters.contains(&0),
                no_delete: req.filters.contains(&1),
                next_rev: start,
                synced: start > current,
                progress_notify: req.progress_notify,
            },
        );
        self.sync_stream(store, stream)?;
        Ok(id)
    }

    /// Cancels a watch; returns false if it did not exist.
    pub fn cancel(&mut self, store: &MvccStore, stream: StreamId, watch_id: i64) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        if s.watchers.remove(&watch_id).is_none() {
            return false;
        }
        s.control.push_back(WatchResponse {
            header: header(store.current_revision()),
            watch_id,
            canceled: true,
            ..Default::default()
        });
        s.flush_control();
        true
    }

    /// Answers a progress request: when every watch of the stream is caught up, a response
    /// with watch id -1 and the current revision (etcd 3.4's `RequestProgressAll`).
    pub fn request_progress(&mut self, store: &MvccStore, stream: StreamId) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.watchers.values().all(|w| w.synced) {
            s.control.push_back(WatchResponse {
                header: header(store.current_revision()),
                watch_id: -1,
                ..Default::default()
            });
            s.flush_control();
        }
    }

    /// etcd's periodic progress notification (`--experimental-watch-progress-notify-interval`,
    /// 10 minutes by default): every caught-up watch created with `progress_notify` gets an
    /// empty response with its id and the current revision, which tells the client (the
    /// Kubernetes API server's watch cache, for one) that it has seen everything up to there.
    /// A watch still catching up gets nothing: its next events say more. Returns how many
    /// notifications were queued.
    pub fn notify_progress(&mut self, store: &MvccStore) -> usize {
        let rev = store.current_revision();
        let mut sent = 0;
        for s in self.streams.values_mut() {
            let ids: Vec<i64> = s
                .watchers
                .iter()
                .filter(|(_, w)| w.progress_notify && w.synced)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                s.control.push_back(WatchResponse {
                    header: header(rev),
                    watch_id: id,
                    ..Default::default()
                });
                sent += 1;
            }
            s.flush_control();
        }
        sent
    }

    /// Delivers the events of one applied entry to synced watchers (call right after
    /// `MvccStore::apply`, before the next apply). Watchers that cannot take them fall back to
    /// catching up from history.
    pub fn notify(&mut self, store: &MvccStore, events: &[Event]) -> Result<(), MvccError> {
        let current = store.current_revision();
        let first_rev = events.first().map_or(current + 1, event_rev);
        let mut closed = Vec::new();
        for (sid, s) in self.streams.iter_mut() {
            let control_clear = s.flush_control();
            for (id, w) in s.watchers.iter_mut() {
                if !w.synced {
                    continue;
                }
                let mut mine = Vec::new();
                let from = w.next_rev;
                for ev in events
                    .iter()
                    .filter(|ev| event_rev(ev) >= from && w.wants(ev))
                {
                    mine.push(if w.prev_kv {
                        with_prev(store, ev.clone())?
                    } else {
                        ev.clone()
                    });
                }
                if mine.is_empty() {
                    w.next_rev = w.next_rev.max(current + 1);
                    continue;
                }
                if !control_clear {
                    w.synced = false;
                    w.next_rev = w.next_rev.max(first_rev);
                    continue;
                }
                let resp = WatchResponse {
                    header: header(current),
                    watch_id: *id,
                    events: mine,
                    ..Default::default()
                };
                match s.tx.try_send(resp) {
                    Ok(()) => w.next_rev = current + 1,
                    Err(TrySendError::Full(_)) => {
                        w.synced = false;
                        w.next_rev = w.next_rev.max(first_rev);
                    }
                    Err(TrySendError::Closed(_)) => {
                        closed.push(*sid);
                        break;
                    }
                }
            }
        }
        for sid in closed {
            self.streams.remove(&sid);
        }
        self.sync(store)
    }

    /// Catches unsynced watchers up from history as far as their channels allow, and sends
    /// queued control responses. Call after every apply and periodically.
    pub fn sync(&mut self, store: &MvccStore) -> Result<(), MvccError> {
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for sid in ids {
            self.sync_stream(store, sid)?;
        }
        Ok(())
    }

    fn sync_stream(&mut self, store: &MvccStore, sid: StreamId) -> Result<(), MvccError> {
        let Some(s) = self.streams.get_mut(&sid) else {
            return Ok(());
        };
        if s.tx.is_closed() {
            self.streams.remove(&sid);
            return Ok(());
        }
        let current = store.current_revision();
        let compacted = store.compact_revision();
        if !s.flush_control() {
            return Ok(());
        }
        let ids: Vec<i64> = s.watchers.keys().copied().collect();
        for id in ids {
            if !s.flush_control() {
                return Ok(());
            }
            while let Some(w) = s.watchers.get_mut(&id) {
                if w.synced {
                    break;
                }
                if w.next_rev < compacted {
                    // etcd: a watcher behind the compaction is cancelled with the compact
                    // revision so the client can resume from it.
                    s.watchers.remove(&id);
                    s.control.push_back(WatchResponse {
                        header: header(current),
                        watch_id: id,
                        canceled: true,
                        compact_revision: compacted,
                        cancel_reason: MvccError::Compacted.to_string(),
                        ..Default::default()
                    });
                    s.flush_control();
                    break;
                }
                if w.next_rev > current {
                    w.synced = true;
                    break;
                }
                // One chunk of history, never splitting a revision.
                let mut events = Vec::new();
                let mut last = current;
                for item in store.changes(w.next_rev, current) {
                    let (rev, rec) = item?;
                    if events.len() >= MAX_EVENTS_PER_RESPONSE
                        && event_rev(&events[events.len() - 1]) != rev.main
                    {
                        last = rev.main - 1;
                        break;
                    }
                    let ev = event_of(rev, rec);
                    if w.wants(&ev) {
                        events.push(if w.prev_kv { with_prev(store, ev)? } else { ev });
                    }
                }
                if events.is_empty() {
                    w.next_rev = last + 1;
                    continue;
                }
                let resp = WatchResponse {
                    header: header(current),
                    watch_id: id,
                    events,
                    ..Default::default()
                };
                match s.tx.try_send(resp) {
                    Ok(()) => w.next_rev = last + 1,
                    Err(TrySendError::Full(_)) => return Ok(()),
                    Err(TrySendError::Closed(_)) => {
                        self.streams.remove(&sid);
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
