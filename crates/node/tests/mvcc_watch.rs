//! Watch semantics: history replay, live events, filters, prev_kv, compaction cancel, and a
//! slow watcher that catches up from history without blocking apply.

use flotilla_node::mvcc::MvccStore;
use flotilla_node::mvcc::watch::WatchHub;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, WatchCreateRequest, WatchResponse,
};
use flotilla_proto::internal::{self, request::Op as Req};
use flotilla_proto::mvccpb::event::EventType;
use tokio::sync::mpsc;

struct Node {
    _dir: tempfile::TempDir,
    store: MvccStore,
    hub: WatchHub,
    index: u64,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = MvccStore::open(&db).expect("store");
        Node {
            _dir: dir,
            store,
            hub: WatchHub::new(),
            index: 0,
        }
    }

    fn apply(&mut self, op: Req) {
        self.index += 1;
        let out = self
            .store
            .apply(
                self.index,
                &internal::Request {
                    id: self.index,
                    header: None,
                    op: Some(op),
                },
            )
            .expect("apply");
        self.hub.notify(&self.store, &out.events).expect("notify");
    }

    fn put(&mut self, k: &str, v: &str) {
        self.apply(Req::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }));
    }

    fn del(&mut self, k: &str) {
        self.apply(Req::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        }));
    }
}

fn drain(rx: &mut mpsc::Receiver<WatchResponse>) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        out.push(r);
    }
    out
}

/// (type, key, mod_revision, value) of every event, in order.
fn events(resps: &[WatchResponse]) -> Vec<(i32, String, i64, String)> {
    resps
        .iter()
        .flat_map(|r| r.events.iter())
        .map(|ev| {
            let kv = ev.kv.clone().unwrap_or_default();
            (
                ev.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

const PUT: i32 = EventType::Put as i32;
const DEL: i32 = EventType::Delete as i32;

#[test]
fn watch_replays_history_then_streams_live_events() {
    let mut n = Node::new();
    n.put("a", "1"); // 2
    n.put("b", "1"); // 3
    n.del("a"); // 4
    let (tx, mut rx) = mpsc::channel(64);
    let sid = n.hub.open_stream(tx);
    let id = n
        .hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"a".to_vec(),
                range_end: b"c".to_vec(),
                start_revision: 2,
                prev_kv: true,
                ..Default::default()
            },
        )
        .expect("create");
    assert_eq!(id, 0);
    n.put("a", "2"); // 5
    n.put("z", "outside"); // 6
    let got = drain(&mut rx);
    assert!(got[0].created);
    assert_eq!(got[0].watch_id, 0);
    assert_eq!(
        events(&got),
        vec![
            (PUT, "a".into(), 2, "1".into()),
            (PUT, "b".into(), 3, "1".into()),
            (DEL, "a".into(), 4, "".into()),
            (PUT, "a".into(), 5, "2".into()),
        ]
    );
    // prev_kv is filled for the delete (from history) and absent for a fresh create.
    let evs: Vec<_> = got.iter().flat_map(|r| r.events.clone()).collect();
    assert_eq!(
        evs[2].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some(b"1".to_vec())
    );
    assert!(evs[3].prev_kv.is_none());

    // A second watch on the same stream: from now, deletes filtered out.
    let id2 = n
        .hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                filters: vec![1],
                ..Default::default()
            },
        )
        .expect("create");
    assert_eq!(id2, 1);
    n.del("b"); // 7
    n.put("q", "1"); // 8
    let got = drain(&mut rx);
    assert!(got[0].created && got[0].watch_id == 1);
    let by_watch = |w: i64| -> Vec<_> {
        events(
            &got.iter()
                .filter(|r| r.watch_id == w)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(by_watch(0), vec![(DEL, "b".into(), 7, "".into())]);
    assert_eq!(by_watch(1), vec![(PUT, "q".into(), 8, "1".into())]);

    assert!(n.hub.cancel(&n.store, sid, 0));
    n.put("a", "3");
    let got = drain(&mut rx);
    assert!(got[0].canceled && got[0].watch_id == 0);
    assert!(got.iter().all(|r| r.watch_id != 0 || r.events.is_empty()));
    assert!(
        n.hub
            .create(
                &n.store,
                sid,
                &WatchCreateRequest {
                    key: b"a".to_vec(),
                    watch_id: 1,
                    ..Default::default()
                }
            )
            .is_err()
    );
}

#[test]
fn watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let mut n = Node::new();
    for i in 0..5 {
        n.put("k", &i.to_string());
    }
    n.apply(Req::Compaction(CompactionRequest {
        revision: 4,
        physical: true,
    }));
    let (tx, mut rx) = mpsc::channel(8);
    let sid = n.hub.open_stream(tx);
    n.hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"k".to_vec(),
                start_revision: 2,
                ..Default::default()
            },
        )
        .expect("create");
    let got = drain(&mut rx);
    assert!(got[0].created);
    assert!(got[1].canceled);
    assert_eq!(got[1].compact_revision, 4);
    assert_eq!(
        got[1].cancel_reason,
        "mvcc: required revision has been compacted"
    );
    assert_eq!(n.hub.watch_count(), 0);
    // Starting at the compact revision itself still works.
    n.hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"k".to_vec(),
                start_revision: 4,
                ..Default::default()
            },
        )
        .expect("create");
    let got = drain(&mut rx);
    assert_eq!(
        events(&got).iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
}

#[test]
fn slow_watcher_does_not_block_apply_and_catches_up_from_history() {
    let mut n = Node::new();
    let (tx, mut rx) = mpsc::channel(2);
    let sid = n.hub.open_stream(tx);
    n.hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
        )
        .expect("create");
    // Far more writes than the channel holds: apply never blocks.
    for i in 0..50 {
        n.put("k", &i.to_string());
    }
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(drain(&mut rx));
        n.hub.sync(&n.store).expect("sync");
        if events(&got).len() == 50 {
            break;
        }
    }
    let evs = events(&got);
    assert_eq!(evs.len(), 50, "every event arrives exactly once");
    for (i, ev) in evs.iter().enumerate() {
        assert_eq!(ev.2, i as i64 + 2);
        assert_eq!(ev.3, i.to_string());
    }
    // Once caught up it is live again.
    n.put("k", "live");
    assert_eq!(events(&drain(&mut rx)).len(), 1);
    // A dropped client is forgotten.
    drop(rx);
    n.put("k", "gone");
    assert_eq!(n.hub.watch_count(), 0);
}

#[test]
fn slow_watcher_behind_a_compaction_is_cancelled() {
    let mut n = Node::new();
    let (tx, mut rx) = mpsc::channel(1);
    let sid = n.hub.open_stream(tx);
    n.hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
        )
        .expect("create");
    for i in 0..5 {
        n.put("k", &i.to_string());
    }
    n.apply(Req::Compaction(CompactionRequest {
        revision: 6,
        physical: true,
    }));
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(drain(&mut rx));
        n.hub.sync(&n.store).expect("sync");
    }
    let last = got.last().expect("responses");
    assert!(last.canceled);
    assert_eq!(last.compact_revision, 6);
    assert_eq!(n.hub.watch_count(), 0);
}

#[test]
fn watch_from_a_future_revision_waits_for_it() {
    let mut n = Node::new();
    n.put("k", "0"); // 2
    let (tx, mut rx) = mpsc::channel(16);
    let sid = n.hub.open_stream(tx);
    n.hub
        .create(
            &n.store,
            sid,
            &WatchCreateRequest {
                key: b"k".to_vec(),
                start_revision: 5,
                ..Default::default()
            },
        )
        .expect("create");
    for i in 1..=4 {
        n.put("k", &i.to_string()); // 3..=6
    }
    let got = drain(&mut rx);
    assert!(got[0].created);
    assert_eq!(
        events(&got).iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![5, 6]
    );
    n.hub.request_progress(&n.store, sid);
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].watch_id, -1);
    assert_eq!(got[0].header.as_ref().map(|h| h.revision), Some(6));
}

#[test]
fn progress_notify_reaches_only_caught_up_watches_that_asked_for_it() {
    let mut n = Node::new();
    n.put("a", "1"); // 2
    let (tx, mut rx) = mpsc::channel(64);
    let sid = n.hub.open_stream(tx);
    let create = |key: &str, progress_notify: bool| WatchCreateRequest {
        key: key.into(),
        progress_notify,
        ..Default::default()
    };
    let with = n
        .hub
        .create(&n.store, sid, &create("a", true))
        .expect("create");
    let without = n
        .hub
        .create(&n.store, sid, &create("b", false))
        .expect("create");
    drain(&mut rx);
    n.put("z", "1"); // 3: no event for either watch, but the revision moves
    assert_eq!(n.hub.notify_progress(&n.store), 1);
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].watch_id, with);
    assert_ne!(got[0].watch_id, without);
    assert!(got[0].events.is_empty() && !got[0].created && !got[0].canceled);
    assert_eq!(got[0].header.as_ref().map(|h| h.revision), Some(3));
}
