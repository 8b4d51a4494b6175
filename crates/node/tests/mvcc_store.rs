//! Behaviour of the MVCC store against etcd's semantics: revisions, ranges, txns, compaction,
//! leases, snapshots and replay. One file, longer than usual, because every case drives the
//! same `Harness` and the cases are read as one specification of `MvccStore`.

use flotilla_node::mvcc::{ApplyOutput, MvccError, MvccStore};
use flotilla_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, compare, range_request, request_op,
    response_op,
};
use flotilla_proto::internal::{self, request::Op as Req, response::Op as Resp};
use flotilla_proto::mvccpb::KeyValue;

/// Applies a log entry's bytes as the member's state machine does: decoded, then
/// [`MvccStore::apply`]; bytes that do not decode are a refusal that still advances the
/// applied index.
fn apply_bytes(store: &mut MvccStore, index: u64, data: &[u8]) -> Result<ApplyOutput, MvccError> {
    match <internal::Request as prost::Message>::decode(data) {
        Ok(req) => store.apply(index, &req),
        Err(e) => {
            store.advance_applied(index)?;
            Err(MvccError::InvalidRequest(format!("undecodable entry: {e}")))
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    db: sled::Db,
    store: MvccStore,
    index: u64,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open sled");
        let store = MvccStore::open(&db).expect("open store");
        Harness {
            _dir: dir,
            db,
            store,
            index: 0,
        }
    }

    fn apply(&mut self, op: Req) -> Result<Resp, MvccError> {
        self.index += 1;
        let req = internal::Request {
            id: self.index,
            header: None,
            op: Some(op),
        };
        let out = self.store.apply(self.index, &req)?;
        assert!(!out.skipped);
        Ok(out.response.op.expect("response"))
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        match self.apply(Req::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })) {
            Ok(Resp::Put(r)) => r.header.expect("header").revision,
            other => panic!("put: {other:?}"),
        }
    }

    fn del(&mut self, k: &str, end: &str) -> i64 {
        match self.apply(Req::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        })) {
            Ok(Resp::DeleteRange(r)) => r.deleted,
            other => panic!("delete: {other:?}"),
        }
    }

    fn get(&self, k: &str, rev: i64) -> Option<KeyValue> {
        let r = self
            .store
            .range(&RangeRequest {
                key: k.into(),
                revision: rev,
                ..Default::default()
            })
            .expect("range");
        r.kvs.into_iter().next()
    }

    fn keys(&self, req: RangeRequest) -> Vec<String> {
        let r = self.store.range(&req).expect("range");
        r.kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }
}

fn rr(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

#[test]
fn revisions_and_versions_across_put_delete_put() {
    let mut h = Harness::new();
    assert_eq!(h.store.current_revision(), 1);
    assert_eq!(h.put("a", "1"), 2);
    assert_eq!(h.put("a", "2"), 3);
    let kv = h.get("a", 0).expect("a");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(h.del("a", ""), 1);
    assert_eq!(h.store.current_revision(), 4);
    assert!(h.get("a", 0).is_none());
    // Deleting nothing does not advance the revision.
    assert_eq!(h.del("a", ""), 0);
    assert_eq!(h.store.current_revision(), 4);
    assert_eq!(h.put("a", "3"), 5);
    let kv = h.get("a", 0).expect("a");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // Past revisions.
    assert_eq!(h.get("a", 2).map(|kv| kv.value), Some(b"1".to_vec()));
    assert_eq!(h.get("a", 3).map(|kv| kv.version), Some(2));
    assert!(h.get("a", 4).is_none());
    assert!(matches!(
        h.store.range(&RangeRequest {
            key: b"a".to_vec(),
            revision: 6,
            ..Default::default()
        }),
        Err(MvccError::FutureRev)
    ));
}

#[test]
fn ranges_with_every_option() {
    let mut h = Harness::new();
    for (k, v) in [("a", "5"), ("b", "4"), ("c", "3"), ("d", "2"), ("e", "1")] {
        h.put(k, v);
    }
    h.put("b", "9"); // rev 7; b: version 2, mod 7
    assert_eq!(h.keys(rr("b", "")), vec!["b"]);
    assert_eq!(h.keys(rr("b", "d")), vec!["b", "c"]);
    assert_eq!(h.keys(rr("c", "\0")), vec!["c", "d", "e"]);
    assert_eq!(h.keys(rr("\0", "\0")).len(), 5);
    assert!(h.keys(rr("d", "b")).is_empty());

    let r = h
        .store
        .range(&RangeRequest {
            limit: 2,
            ..rr("a", "\0")
        })
        .expect("range");
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 5));
    let r = h
        .store
        .range(&RangeRequest {
            limit: 5,
            ..rr("a", "\0")
        })
        .expect("range");
    assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));
    let r = h
        .store
        .range(&RangeRequest {
            count_only: true,
            ..rr("a", "\0")
        })
        .expect("range");
    assert_eq!((r.kvs.len(), r.count), (0, 5));
    let r = h
        .store
        .range(&RangeRequest {
            keys_only: true,
            ..rr("a", "\0")
        })
        .expect("range");
    assert!(
        r.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.mod_revision > 0)
    );

    let sorted = |target: range_request::SortTarget, order: range_request::SortOrder| {
        h.keys(RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            ..rr("a", "\0")
        })
    };
    use range_request::{SortOrder, SortTarget};
    assert_eq!(
        sorted(SortTarget::Key, SortOrder::Descend),
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        sorted(SortTarget::Value, SortOrder::Ascend),
        ["e", "d", "c", "a", "b"]
    );
    assert_eq!(
        sorted(SortTarget::Mod, SortOrder::Descend),
        ["b", "e", "d", "c", "a"]
    );
    assert_eq!(
        sorted(SortTarget::Create, SortOrder::Ascend),
        ["a", "b", "c", "d", "e"]
    );
    // A non-key target without an order sorts ascending, as etcd.
    assert_eq!(
        sorted(SortTarget::Version, SortOrder::None),
        ["a", "c", "d", "e", "b"]
    );
    let r = h
        .store
        .range(&RangeRequest {
            sort_target: SortTarget::Value as i32,
            sort_order: SortOrder::Descend as i32,
            limit: 2,
            ..rr("a", "\0")
        })
        .expect("range");
    assert_eq!(r.kvs[0].key, b"b");
    assert_eq!(r.kvs[1].key, b"a");
    assert!(r.more);

    // Filters prune values but not the count.
    let r = h
        .store
        .range(&RangeRequest {
            min_mod_revision: 4,
            max_mod_revision: 6,
            ..rr("a", "\0")
        })
        .expect("range");
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]);
    assert_eq!(r.count, 5);
    let r = h
        .store
        .range(&RangeRequest {
            min_create_revision: 3,
            max_create_revision: 3,
            ..rr("a", "\0")
        })
        .expect("range");
    assert_eq!(r.kvs.len(), 1);
    assert_eq!(r.kvs[0].key, b"b");
    // Reading at a past revision sees the old value but the header has the current one.
    let r = h
        .store
        .range(&RangeRequest {
            revision: 3,
            ..rr("b", "")
        })
        .expect("range");
    assert_eq!(r.kvs[0].value, b"4");
    assert_eq!(r.header.map(|h| h.revision), Some(7));
    // Invalid input.
    assert!(matches!(
        h.store.range(&rr("", "")),
        Err(MvccError::EmptyKey)
    ));
    assert!(matches!(
        h.store.range(&RangeRequest {
            sort_order: 9,
            ..rr("a", "")
        }),
        Err(MvccError::InvalidSortOption)
    ));
}

#[test]
fn put_options_prev_kv_ignore_value_ignore_lease() {
    let mut h = Harness::new();
    let Ok(Resp::LeaseGrant(g)) = h.apply(Req::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }))
    else {
        panic!("grant")
    };
    assert_eq!((g.id, g.ttl), (7, 60));
    let r = h.apply(Req::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"v1".to_vec(),
        lease: 7,
        prev_kv: true,
        ..Default::default()
    }));
    assert!(matches!(r, Ok(Resp::Put(ref p)) if p.prev_kv.is_none()));
    let r = h.apply(Req::Put(PutRequest {
        key: b"k".to_vec(),
        ignore_value: true,
        ignore_lease: true,
        prev_kv: true,
        ..Default::default()
    }));
    let Ok(Resp::Put(p)) = r else { panic!("put") };
    assert_eq!(p.prev_kv.map(|kv| kv.value), Some(b"v1".to_vec()));
    let kv = h.get("k", 0).expect("k");
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v1"[..], 7, 2)
    );
    let rev = h.store.current_revision();
    // Refusals change nothing but advance the applied index.
    for (bad, want) in [
        (
            PutRequest {
                key: b"missing".to_vec(),
                ignore_value: true,
                ..Default::default()
            },
            "etcdserver: key not found",
        ),
        (
            PutRequest {
                key: b"k".to_vec(),
                lease: 99,
                ..Default::default()
            },
            "lease not found",
        ),
        (
            PutRequest {
                key: b"k".to_vec(),
                value: b"x".to_vec(),
                ignore_value: true,
                ..Default::default()
            },
            "etcdserver: value is provided",
        ),
    ] {
        let err = h.apply(Req::Put(bad)).expect_err("refused");
        assert_eq!(err.to_string(), want);
        assert_eq!(h.store.applied_index(), h.index);
        assert_eq!(h.store.current_revision(), rev);
    }
}

fn txn_op(op: request_op::Request) -> RequestOp {
    RequestOp { request: Some(op) }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    txn_op(request_op::Request::RequestPut(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }))
}

fn cmp(
    k: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    u: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: k.into(),
        target_union: Some(u),
        range_end: vec![],
    }
}

#[test]
fn txn_compares_branches_and_revisions() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let mut h = Harness::new();
    h.put("a", "1"); // rev 2
    let txn = |compare: Vec<Compare>| TxnRequest {
        compare,
        success: vec![
            put_op("x", "yes"),
            put_op("y", "yes"),
            txn_op(request_op::Request::RequestRange(rr("x", ""))),
        ],
        failure: vec![txn_op(request_op::Request::RequestRange(rr("a", "")))],
    };
    for (c, want) in [
        (cmp("a", T::Value, R::Equal, U::Value(b"1".to_vec())), true),
        (cmp("a", T::Value, R::Equal, U::Value(b"2".to_vec())), false),
        (cmp("a", T::Version, R::Greater, U::Version(0)), true),
        (cmp("a", T::Create, R::Equal, U::CreateRevision(2)), true),
        (cmp("a", T::Mod, R::Less, U::ModRevision(2)), false),
        (cmp("a", T::Lease, R::NotEqual, U::Lease(0)), false),
        (cmp("nope", T::Version, R::Equal, U::Version(0)), true),
        (
            cmp("nope", T::Value, R::NotEqual, U::Value(b"z".to_vec())),
            false,
        ),
    ] {
        let before = h.store.current_revision();
        let Ok(Resp::Txn(t)) = h.apply(Req::Txn(txn(vec![c.clone()]))) else {
            panic!("txn")
        };
        assert_eq!(t.succeeded, want, "{c:?}");
        let after = h.store.current_revision();
        if want {
            // One revision for the whole txn, a sub-revision per write, and reads inside the
            // txn see its own writes.
            assert_eq!(after, before + 1);
            let Some(response_op::Response::ResponseRange(r)) = &t.responses[2].response else {
                panic!("range response")
            };
            assert_eq!(r.kvs[0].mod_revision, after);
            assert_eq!(h.get("y", 0).map(|kv| kv.mod_revision), Some(after));
        } else {
            // A txn with no writes does not advance the revision.
            assert_eq!(after, before);
            assert_eq!(t.header.map(|h| h.revision), Some(before));
        }
    }
    // Duplicate keys are refused and change nothing.
    let rev = h.store.current_revision();
    let bad = TxnRequest {
        compare: vec![],
        success: vec![put_op("q", "1"), put_op("q", "2")],
        failure: vec![],
    };
    let err = h.apply(Req::Txn(bad)).expect_err("duplicate");
    assert_eq!(
        err.grpc_message(),
        "etcdserver: duplicate key given in txn request"
    );
    assert_eq!(h.store.current_revision(), rev);
    assert!(h.get("q", 0).is_none());
    // A txn whose chosen branch puts with a missing lease changes nothing.
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("r", "1"),
            txn_op(request_op::Request::RequestPut(PutRequest {
                key: b"s".to_vec(),
                lease: 42,
                ..Default::default()
            })),
        ],
        failure: vec![],
    };
    assert!(matches!(
        h.apply(Req::Txn(bad)),
        Err(MvccError::LeaseNotFound)
    ));
    assert!(h.get("r", 0).is_none());
    // Nested txns: the inner compare sees the state before the outer txn.
    let nested = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("n1", "1"),
            txn_op(request_op::Request::RequestTxn(TxnRequest {
                compare: vec![cmp("n1", T::Version, R::Equal, U::Version(0))],
                success: vec![put_op("n2", "inner-success")],
                failure: vec![put_op("n2", "inner-failure")],
            })),
        ],
        failure: vec![],
    };
    let Ok(Resp::Txn(t)) = h.apply(Req::Txn(nested)) else {
        panic!("nested")
    };
    assert!(t.succeeded);
    assert_eq!(
        h.get("n2", 0).map(|kv| kv.value),
        Some(b"inner-success".to_vec())
    );
    assert_eq!(
        h.get("n1", 0).map(|kv| kv.mod_revision),
        h.get("n2", 0).map(|kv| kv.mod_revision)
    );
}

#[test]
fn compaction_removes_history_and_refuses_old_reads() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.put("b", "1"); // 4
    h.del("b", ""); // 5
    h.put("c", "1"); // 6
    let Ok(Resp::Compaction(_)) = h.apply(Req::Compaction(CompactionRequest {
        revision: 5,
        physical: true,
    })) else {
        panic!("compact")
    };
    assert_eq!(h.store.compact_revision(), 5);
    assert_eq!(h.store.current_revision(), 6);
    let old = h.store.range(&RangeRequest {
        revision: 4,
        ..rr("a", "")
    });
    assert!(matches!(old, Err(MvccError::Compacted)));
    assert_eq!(
        old.map(|_| ()).expect_err("compacted").grpc_message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // The compact revision itself is still readable, with the latest version of live keys.
    let kv = h.get("a", 5).expect("a at 5");
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.create_revision),
        (&b"2"[..], 2, 2)
    );
    assert!(h.get("b", 5).is_none());
    assert_eq!(h.get("c", 6).map(|kv| kv.version), Some(1));
    // Compacting again at or below is refused; in the future too.
    for (rev, want) in [(5, "compacted"), (3, "compacted"), (7, "future")] {
        let e = h
            .apply(Req::Compaction(CompactionRequest {
                revision: rev,
                physical: false,
            }))
            .expect_err("refused");
        assert!(e.to_string().contains(want), "{e}");
    }
    // Versions keep counting after compaction and a reopen.
    h.put("a", "3");
    drop(h.store);
    let store = MvccStore::open(&h.db).expect("reopen");
    h.store = store;
    let kv = h.get("a", 0).expect("a");
    assert_eq!((kv.version, kv.create_revision), (3, 2));
    assert!(matches!(
        h.store.range(&RangeRequest {
            revision: 4,
            ..rr("a", "")
        }),
        Err(MvccError::Compacted)
    ));
}

#[test]
fn leases_attach_revoke_and_expire() {
    let mut h = Harness::new();
    let Ok(Resp::LeaseGrant(g)) = h.apply(Req::LeaseGrant(LeaseGrantRequest { ttl: 1, id: 0 }))
    else {
        panic!("grant")
    };
    // id chosen from the request id; TTL raised to the minimum.
    assert_eq!(g.id, 1);
    assert_eq!(g.ttl, 2);
    let err = h
        .apply(Req::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 }))
        .expect_err("exists");
    assert_eq!(err.grpc_message(), "etcdserver: lease already exists");
    for k in ["x", "y"] {
        h.apply(Req::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease: 1,
            ..Default::default()
        }))
        .expect("put");
    }
    h.put("z", "no lease");
    // Re-putting y without a lease detaches it.
    h.put("y", "v2");
    assert_eq!(h.store.lease(1).map(|l| l.keys.len()), Some(1));
    assert_eq!(h.store.lease_ids(), vec![1]);
    assert!(h.store.expired_leases(10_000).is_empty());
    assert_eq!(h.store.lease_remaining(1, 11_000), Some(1));
    assert_eq!(h.store.expired_leases(12_000), vec![1]);
    let rev = h.store.current_revision();
    let Ok(Resp::LeaseRevoke(_)) = h.apply(Req::LeaseRevoke(LeaseRevokeRequest { id: 1 })) else {
        panic!("revoke")
    };
    assert_eq!(h.store.current_revision(), rev + 1);
    assert!(h.get("x", 0).is_none());
    assert!(h.get("y", 0).is_some());
    assert!(h.store.lease_ids().is_empty());
    assert!(matches!(
        h.apply(Req::LeaseRevoke(LeaseRevokeRequest { id: 1 })),
        Err(MvccError::LeaseNotFound)
    ));
    assert!(matches!(
        h.apply(Req::LeaseGrant(LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 3
        })),
        Err(MvccError::LeaseTtlTooLarge)
    ));
}

/// Every read a client can make of `store`, for equality checks.
fn fingerprint(store: &MvccStore) -> Vec<String> {
    let mut out = vec![format!(
        "rev {} compact {} applied {} leases {:?}",
        store.current_revision(),
        store.compact_revision(),
        store.applied_index(),
        store
            .lease_ids()
            .iter()
            .map(|id| (id, store.lease(*id).map(|l| (l.ttl, l.keys.clone()))))
            .collect::<Vec<_>>()
    )];
    for rev in 0..=store.current_revision() {
        out.push(format!(
            "{rev}: {:?}",
            store.range(&RangeRequest {
                revision: rev,
                ..rr("\0", "\0")
            })
        ));
    }
    out
}

#[test]
fn snapshot_restore_answers_every_read_identically() {
    let mut h = Harness::new();
    h.apply(Req::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 5 }))
        .expect("grant");
    for i in 0..20 {
        h.put(&format!("k{}", i % 7), &format!("v{i}"));
        if i % 5 == 4 {
            h.del(&format!("k{}", i % 3), "");
        }
    }
    h.apply(Req::Put(PutRequest {
        key: b"leased".to_vec(),
        lease: 5,
        ..Default::default()
    }))
    .expect("put");
    h.apply(Req::Compaction(CompactionRequest {
        revision: 10,
        physical: true,
    }))
    .expect("compact");
    h.put("after", "compaction");
    let data = h.store.snapshot().expect("snapshot");

    let mut other = Harness::new();
    other.put("junk", "to be replaced");
    other.store.restore(&data, h.index).expect("restore");
    assert_eq!(fingerprint(&other.store), fingerprint(&h.store));
    assert_eq!(
        other.store.hash().expect("hash"),
        h.store.hash().expect("hash")
    );
    // And it survives a reopen.
    drop(other.store);
    let reopened = MvccStore::open(&other.db).expect("reopen");
    assert_eq!(fingerprint(&reopened), fingerprint(&h.store));
    // Damaged snapshots are refused and change nothing.
    let mut restored = reopened;
    let mut bad = data.clone();
    bad.truncate(data.len() - 3);
    assert!(matches!(
        restored.restore(&bad, 99),
        Err(MvccError::InvalidSnapshot(_))
    ));
    assert_eq!(fingerprint(&restored), fingerprint(&h.store));
}

#[test]
fn apply_is_idempotent_on_replay_and_restart() {
    let mut h = Harness::new();
    let reqs: Vec<internal::Request> = (1..=10)
        .map(|i| internal::Request {
            id: i,
            header: None,
            op: Some(Req::Put(PutRequest {
                key: format!("k{}", i % 3).into_bytes(),
                value: format!("v{i}").into_bytes(),
                ..Default::default()
            })),
        })
        .collect();
    for (i, r) in reqs.iter().enumerate().take(6) {
        let out = h.store.apply(i as u64 + 1, r).expect("apply");
        assert_eq!(out.events.len(), 1);
    }
    assert_eq!(h.store.applied_index(), 6);
    let before = fingerprint(&h.store);
    // The node restarts and replays the whole log: old entries are skipped.
    drop(h.store);
    h.store = MvccStore::open(&h.db).expect("reopen");
    assert_eq!(fingerprint(&h.store), before);
    for (i, r) in reqs.iter().enumerate() {
        let out = h.store.apply(i as u64 + 1, r).expect("apply");
        assert_eq!(out.skipped, i < 6);
    }
    assert_eq!(h.store.applied_index(), 10);
    assert_eq!(h.store.current_revision(), 11);
    assert_eq!(h.get("k1", 0).map(|kv| kv.version), Some(4));
    // An empty request is a deterministic refusal that still advances the applied index.
    let e = h
        .store
        .apply(
            11,
            &internal::Request {
                id: 11,
                header: None,
                op: None,
            },
        )
        .expect_err("empty");
    assert!(e.is_deterministic());
    assert_eq!(h.store.applied_index(), 11);
}

#[test]
fn raw_entries_and_empty_entries_advance_the_applied_index() {
    use prost::Message as _;
    let mut h = Harness::new();
    let req = internal::Request {
        id: 1,
        header: None,
        op: Some(Req::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    };
    let out = apply_bytes(&mut h.store, 1, &req.encode_to_vec()).expect("apply");
    assert_eq!(out.revision, 2);
    h.store.advance_applied(2).expect("noop entry");
    assert_eq!(h.store.applied_index(), 2);
    let err = apply_bytes(&mut h.store, 3, &[0xff, 0xff, 0xff]).expect_err("garbage");
    assert!(err.is_deterministic());
    let resp = err.to_response();
    assert!(matches!(
        resp.op,
        Some(internal::response::Op::Error(ref e)) if e.code == tonic::Code::InvalidArgument as i32
    ));
    assert_eq!(h.store.applied_index(), 3);
    assert_eq!(h.store.current_revision(), 2);
    h.db.flush().expect("flush");
    assert!(h.store.db_size().expect("size") > 0);
}

/// Apply throughput of 256-byte puts. Run with
/// `cargo test --release -p flotilla-node --test mvcc_store -- --ignored --nocapture`.
#[test]
#[ignore = "throughput figure, run in release"]
fn apply_throughput() {
    let mut h = Harness::new();
    let n = 100_000u64;
    let value = vec![b'x'; 256];
    let start = std::time::Instant::now();
    for i in 1..=n {
        let req = internal::Request {
            id: i,
            header: None,
            op: Some(Req::Put(PutRequest {
                key: format!("key{:06}", i % 10_000).into_bytes(),
                value: value.clone(),
                ..Default::default()
            })),
        };
        h.store.apply(i, &req).expect("apply");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "applied {n} puts in {secs:.2}s: {:.0} puts/s",
        n as f64 / secs
    );
    let start = std::time::Instant::now();
    let reads = 100_000;
    for i in 0..reads {
        let r = h
            .store
            .range(&rr(&format!("key{:06}", i % 10_000), ""))
            .expect("range");
        assert_eq!(r.kvs.len(), 1);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{reads} point reads in {secs:.2}s: {:.0} reads/s",
        reads as f64 / secs
    );
    assert_eq!(h.store.current_revision(), n as i64 + 1);
}

#[test]
fn restore_refuses_inconsistent_snapshots_before_changing_anything() {
    use flotilla_node::mvcc::Revision;
    use flotilla_node::mvcc::record::Record;
    use flotilla_node::mvcc::snapshot;
    let mut h = Harness::new();
    h.put("keep", "me");
    let before = fingerprint(&h.store);
    let mut rev_key = vec![b'r'];
    rev_key.extend_from_slice(&Revision::new(2, 0).to_bytes());
    let tombstone_of_nothing = Record {
        tombstone: true,
        key: b"x".to_vec(),
        ..Record::default()
    };
    for bad in [
        vec![(rev_key.clone(), tombstone_of_nothing.encode())],
        vec![(rev_key.clone(), b"garbage".to_vec())],
        vec![(b"zzz".to_vec(), b"unknown key space".to_vec())],
        vec![(b"mstate".to_vec(), b"short".to_vec())],
    ] {
        let data = snapshot::encode(bad);
        assert!(matches!(
            h.store.restore(&data, 50),
            Err(MvccError::InvalidSnapshot(_))
        ));
        assert_eq!(fingerprint(&h.store), before);
    }
}

#[test]
fn delete_range_returns_prev_kvs_and_uses_one_revision() {
    let mut h = Harness::new();
    h.put("p/1", "a");
    h.put("p/2", "b");
    h.put("q", "c");
    let Ok(Resp::DeleteRange(d)) = h.apply(Req::DeleteRange(DeleteRangeRequest {
        key: b"p/".to_vec(),
        range_end: b"p0".to_vec(),
        prev_kv: true,
    })) else {
        panic!("delete")
    };
    assert_eq!(d.deleted, 2);
    let prev: Vec<_> = d.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(prev, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(d.header.map(|h| h.revision), Some(5));
    assert_eq!(h.store.current_revision(), 5);
    assert!(h.get("p/1", 0).is_none());
    assert!(h.get("q", 0).is_some());
}

/// A mix of every request kind, refusals included (missing lease, compacted and future
/// revisions, an ignore_value put on a missing key, a txn reading keys written by earlier
/// entries of the same batch).
fn mixed_requests() -> Vec<Req> {
    let mut reqs = Vec::new();
    for i in 0..12 {
        reqs.push(Req::Put(PutRequest {
            key: format!("k{}", i % 5).into(),
            value: format!("v{i}").into(),
            prev_kv: i % 2 == 0,
            ..Default::default()
        }));
    }
    reqs.push(Req::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }));
    reqs.push(Req::Put(PutRequest {
        key: "leased".into(),
        value: "x".into(),
        lease: 7,
        ..Default::default()
    }));
    reqs.push(Req::Put(PutRequest {
        key: "bad".into(),
        value: "x".into(),
        lease: 99,
        ..Default::default()
    }));
    reqs.push(Req::Put(PutRequest {
        key: "missing".into(),
        ignore_value: true,
        ..Default::default()
    }));
    reqs.push(Req::Txn(TxnRequest {
        compare: vec![cmp(
            "k1",
            compare::CompareTarget::Value,
            compare::CompareResult::Equal,
            compare::TargetUnion::Value(b"v11".to_vec()),
        )],
        success: vec![
            put_op("k1", "txn"),
            txn_op(request_op::Request::RequestRange(rr("k", "l"))),
        ],
        failure: vec![txn_op(request_op::Request::RequestRange(rr("k0", "")))],
    }));
    reqs.push(Req::DeleteRange(DeleteRangeRequest {
        key: "k2".into(),
        range_end: "k4".into(),
        prev_kv: true,
    }));
    reqs.push(Req::Compaction(CompactionRequest {
        revision: 6,
        physical: true,
    }));
    reqs.push(Req::Compaction(CompactionRequest {
        revision: 3,
        physical: true,
    }));
    reqs.push(Req::Compaction(CompactionRequest {
        revision: 1000,
        physical: true,
    }));
    reqs.push(Req::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
    for i in 0..6 {
        reqs.push(Req::Put(PutRequest {
            key: format!("k{i}").into(),
            value: format!("after{i}").into(),
            prev_kv: true,
            ..Default::default()
        }));
    }
    reqs
}

#[test]
fn batched_apply_matches_one_by_one_apply() {
    use prost::Message as _;
    let reqs = mixed_requests();
    let entries: Vec<Vec<u8>> = reqs
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            internal::Request {
                id: i as u64 + 1,
                header: None,
                op: Some(op),
            }
            .encode_to_vec()
        })
        .chain(std::iter::once(vec![0xff, 0xff, 0xff]))
        .collect();

    let mut one = Harness::new();
    let expected: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, data)| format!("{:?}", apply_bytes(&mut one.store, i as u64 + 1, data)))
        .collect();
    assert!(
        expected.iter().any(|r| r.starts_with("Err")),
        "refusals exercised"
    );

    // Batches of several sizes, the whole log in one included.
    for chunk in [1, 2, 3, 7, entries.len()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut got = Vec::new();
        {
            let db = sled::open(dir.path()).expect("open sled");
            let mut store = MvccStore::open(&db).expect("open store");
            for (c, part) in entries.chunks(chunk).enumerate() {
                store.begin_batch();
                for (j, data) in part.iter().enumerate() {
                    let index = (c * chunk + j) as u64 + 1;
                    got.push(format!("{:?}", apply_bytes(&mut store, index, data)));
                }
                // Reads inside the open batch see its writes: watch replay, hashes and
                // snapshot images merge it over the tree (the loop keeps it open for a tick).
                let changes: Vec<_> = store
                    .changes(0, store.current_revision())
                    .map(|r| format!("{r:?}"))
                    .collect();
                let hash = store.hash().expect("hash");
                let image = store.snapshot().expect("snapshot");
                store.finish_batch().expect("finish");
                assert_eq!(store.pending_writes(), 0);
                let after: Vec<_> = store
                    .changes(0, store.current_revision())
                    .map(|r| format!("{r:?}"))
                    .collect();
                assert_eq!(changes, after, "chunk {chunk}: reads inside the batch");
                assert_eq!(store.hash().expect("hash"), hash, "chunk {chunk}: hash");
                assert_eq!(
                    store.snapshot().expect("snapshot"),
                    image,
                    "chunk {chunk}: snapshot image"
                );
            }
            assert_eq!(got, expected, "chunk {chunk}: per-entry results");
            assert_eq!(fingerprint(&store), fingerprint(&one.store));
            assert_eq!(store.hash().expect("hash"), one.store.hash().expect("hash"));
            db.flush().expect("flush");
        }
        // What reached sled is the same state, with the last entry's applied index.
        // sled's flusher thread may hold the old handle's lock for a moment: open_db waits.
        let db = flotilla_node::storage::open_db(dir.path()).expect("reopen sled");
        let store = MvccStore::open(&db).expect("reopen store");
        assert_eq!(store.applied_index(), entries.len() as u64);
        assert_eq!(fingerprint(&store), fingerprint(&one.store));
    }
}

/// `sync` (what the log store calls before it drops entries) writes an open batch first: the
/// Raft loop keeps one open across Readies, and the log must never drop an entry whose writes
/// are only in memory.
#[test]
fn sync_writes_the_open_batch_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("open sled");
        let mut store = MvccStore::open(&db).expect("open store");
        store.begin_batch();
        for i in 1..=5u64 {
            let req = internal::Request {
                id: i,
                header: None,
                op: Some(Req::Put(PutRequest {
                    key: format!("k{i}").into(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            };
            store.apply(i, &req).expect("apply");
        }
        assert!(store.pending_writes() > 0);
        store.sync().expect("sync");
        assert_eq!(store.pending_writes(), 0);
    }
    let db = flotilla_node::storage::open_db(dir.path()).expect("reopen sled");
    let store = MvccStore::open(&db).expect("reopen store");
    assert_eq!(store.applied_index(), 5);
    assert_eq!(store.current_revision(), 6);
}
