//! Property test: the MVCC store against a naive model that keeps a full copy of the key
//! space at every revision. Random sequences of puts, deletes, txns, compactions, restarts
//! and snapshot round-trips; after every step every readable revision must match the model.

use std::collections::BTreeMap;

use flotilla_node::mvcc::{MvccError, MvccStore};
use flotilla_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, compare, request_op,
};
use flotilla_proto::internal::{self, request::Op as Req};
use flotilla_proto::mvccpb::KeyValue;
use proptest::prelude::*;

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u8),
    Delete(usize, End),
    /// if version(key) == n then put(p) + delete(d) else put(f)
    Txn {
        key: usize,
        n: i64,
        p: usize,
        d: usize,
        f: usize,
        v: u8,
    },
    Compact(i64),
    Reopen,
    SnapshotRoundTrip,
    Read(usize, End, i64, i64),
}

#[derive(Debug, Clone, Copy)]
enum End {
    Single,
    All,
    Key(usize),
}

fn end_bytes(e: End) -> Vec<u8> {
    match e {
        End::Single => vec![],
        End::All => vec![0],
        End::Key(i) => KEYS[i].as_bytes().to_vec(),
    }
}

fn in_range(k: &str, start: usize, e: End) -> bool {
    let s = KEYS[start];
    match e {
        End::Single => k == s,
        End::All => k >= s,
        End::Key(i) => k >= s && k < KEYS[i],
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let end = prop_oneof![
        Just(End::Single),
        Just(End::All),
        (0..KEYS.len()).prop_map(End::Key)
    ];
    prop_oneof![
        5 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (key.clone(), end.clone()).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (key.clone(), 0..3i64, key.clone(), key.clone(), key.clone(), any::<u8>())
            .prop_map(|(key, n, p, d, f, v)| Op::Txn { key, n, p, d, f, v }),
        1 => (0..40i64).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::SnapshotRoundTrip),
        2 => (key, end, 0..40i64, 0..4i64).prop_map(|(k, e, r, l)| Op::Read(k, e, r, l)),
    ]
}

type State = BTreeMap<String, KeyValue>;

struct Model {
    /// `states[r]` is the key space at revision r (index 0 unused).
    states: Vec<State>,
    compact: i64,
}

impl Model {
    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn current(&self) -> &State {
        &self.states[self.states.len() - 1]
    }
    /// Applies a set of writes as one revision (if any change happens).
    fn write(&mut self, puts: &[(usize, Vec<u8>)], dels: &[(usize, End)]) {
        let rev = self.rev() + 1;
        let mut next = self.current().clone();
        let mut changed = false;
        for (start, e) in dels {
            let gone: Vec<String> = next
                .keys()
                .filter(|k| in_range(k, *start, *e))
                .cloned()
                .collect();
            for k in gone {
                next.remove(&k);
                changed = true;
            }
        }
        for (k, v) in puts {
            let key = KEYS[*k].to_string();
            let (create, version) = match next.get(&key) {
                Some(kv) => (kv.create_revision, kv.version + 1),
                None => (rev, 1),
            };
            next.insert(
                key.clone(),
                KeyValue {
                    key: key.into_bytes(),
                    create_revision: create,
                    mod_revision: rev,
                    version,
                    value: v.clone(),
                    lease: 0,
                },
            );
            changed = true;
        }
        if changed {
            self.states.push(next);
        }
    }
}

struct Sut {
    dir: tempfile::TempDir,
    db: sled::Db,
    store: MvccStore,
    index: u64,
}

impl Sut {
    fn apply(&mut self, op: Req) -> Result<(), MvccError> {
        self.index += 1;
        self.store
            .apply(
                self.index,
                &internal::Request {
                    id: self.index,
                    header: None,
                    op: Some(op),
                },
            )
            .map(|_| ())
    }
}

fn put_op(k: usize, v: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: KEYS[k].into(),
            value: v.to_vec(),
            ..Default::default()
        })),
    }
}

fn check(model: &Model, store: &MvccStore) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.current_revision(), model.rev());
    prop_assert_eq!(store.compact_revision(), model.compact);
    for rev in 1..=model.rev() {
        let got = store.range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        });
        if rev < model.compact {
            prop_assert!(matches!(got, Err(MvccError::Compacted)));
            continue;
        }
        let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<KeyValue> = model.states[rev as usize].values().cloned().collect();
        prop_assert_eq!(got.kvs, want, "revision {}", rev);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = MvccStore::open(&db).expect("store");
        let mut sut = Sut { dir, db, store, index: 0 };
        let mut model = Model { states: vec![State::new(), State::new()], compact: 0 };
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    sut.apply(Req::Put(PutRequest { key: KEYS[k].into(), value: vec![v], ..Default::default() }))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model.write(&[(k, vec![v])], &[]);
                }
                Op::Delete(k, e) => {
                    sut.apply(Req::DeleteRange(DeleteRangeRequest { key: KEYS[k].into(), range_end: end_bytes(e), prev_kv: true }))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model.write(&[], &[(k, e)]);
                }
                Op::Txn { key, n, p, d, f, v } => {
                    let t = TxnRequest {
                        compare: vec![Compare {
                            result: compare::CompareResult::Equal as i32,
                            target: compare::CompareTarget::Version as i32,
                            key: KEYS[key].into(),
                            target_union: Some(compare::TargetUnion::Version(n)),
                            range_end: vec![],
                        }],
                        success: vec![
                            put_op(p, &[v]),
                            RequestOp { request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                                key: KEYS[d].into(), ..Default::default()
                            })) },
                        ],
                        failure: vec![put_op(f, &[v, v])],
                    };
                    let res = sut.apply(Req::Txn(t));
                    if p == d {
                        prop_assert!(matches!(res, Err(MvccError::DuplicateKey)));
                    } else {
                        res.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let version = model.current().get(KEYS[key]).map_or(0, |kv| kv.version);
                        if version == n {
                            model.write(&[(p, vec![v])], &[(d, End::Single)]);
                        } else {
                            model.write(&[(f, vec![v, v])], &[]);
                        }
                    }
                }
                Op::Compact(r) => {
                    let res = sut.apply(Req::Compaction(CompactionRequest { revision: r, physical: true }));
                    if r <= model.compact {
                        prop_assert!(matches!(res, Err(MvccError::Compacted)));
                    } else if r > model.rev() {
                        prop_assert!(matches!(res, Err(MvccError::FutureRev)));
                    } else {
                        res.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.compact = r;
                    }
                }
                Op::Reopen => {
                    sut.store = MvccStore::open(&sut.db).expect("reopen");
                    prop_assert_eq!(sut.store.applied_index(), sut.index);
                }
                Op::SnapshotRoundTrip => {
                    let data = sut.store.snapshot().expect("snapshot");
                    let dir = tempfile::tempdir().expect("tempdir");
                    let db = sled::open(dir.path()).expect("sled");
                    let mut fresh = MvccStore::open(&db).expect("store");
                    fresh.restore(&data, sut.index).expect("restore");
                    sut = Sut { dir, db, store: fresh, index: sut.index };
                }
                Op::Read(k, e, rev, limit) => {
                    let got = sut.store.range(&RangeRequest {
                        key: KEYS[k].into(), range_end: end_bytes(e), revision: rev, limit, ..Default::default()
                    });
                    let at = if rev == 0 { model.rev() } else { rev };
                    if rev > model.rev() {
                        prop_assert!(matches!(got, Err(MvccError::FutureRev)));
                    } else if at < model.compact {
                        prop_assert!(matches!(got, Err(MvccError::Compacted)));
                    } else {
                        let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let all: Vec<KeyValue> = model.states[at as usize]
                            .values().filter(|kv| in_range(&String::from_utf8_lossy(&kv.key), k, e)).cloned().collect();
                        prop_assert_eq!(got.count, all.len() as i64);
                        let lim = if limit > 0 { (limit as usize).min(all.len()) } else { all.len() };
                        prop_assert_eq!(got.more, lim < all.len());
                        prop_assert_eq!(&got.kvs[..], &all[..lim]);
                    }
                }
            }
            check(&model, &sut.store)?;
        }
        let _ = &sut.dir;
    }
}
