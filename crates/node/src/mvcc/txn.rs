//! Stateless checks and comparisons for etcd requests: the validation etcd's gRPC layer does
//! before proposing (`v3rpc/key.go`: empty keys, sort options, duplicate keys in a txn), and
//! the evaluation of txn compares (`apply.go`: `applyCompare`, `compareKV`).
//!
//! They run again inside `apply` so that a request that slipped past the API is refused the same
//! way on every member, with the same error, and changes nothing.

use std::collections::BTreeSet;

use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    range_request, request_op,
};
use flotilla_proto::mvccpb::KeyValue;

use super::error::MvccError;
use super::key_index::KeyRange;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Checks a range request's shape.
pub fn check_range(r: &RangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if range_request::SortOrder::try_from(r.sort_order).is_err()
        || range_request::SortTarget::try_from(r.sort_target).is_err()
    {
        return Err(MvccError::InvalidSortOption);
    }
    Ok(())
}

/// Checks a put request's shape.
pub fn check_put(p: &PutRequest) -> Result<(), MvccError> {
    if p.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete request's shape.
pub fn check_delete(d: &DeleteRangeRequest) -> Result<(), MvccError> {
    if d.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Checks a txn's shape: size, keys, nested ops, and that no key is written twice.
pub fn check_txn(t: &TxnRequest) -> Result<(), MvccError> {
    check_txn_ops(t, MAX_TXN_OPS)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

fn check_txn_ops(t: &TxnRequest, max_ops: usize) -> Result<(), MvccError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Err(MvccError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(r)?,
            Some(request_op::Request::RequestPut(p)) => check_put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(request_op::Request::RequestTxn(inner)) => check_txn_ops(inner, max_ops - opc)?,
            // etcd answers an empty operation with "key not found".
            None => return Err(MvccError::KeyNotFound),
        }
    }
    Ok(())
}

/// etcd's `checkIntervals`: within one branch (and the branches nested in it), a key may be put
/// only once and may not be both put and deleted. The two branches of a nested txn exclude each
/// other, so they may put the same key.
fn check_intervals(reqs: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>), MvccError> {
    let mut dels: Vec<KeyRange> = reqs
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(KeyRange::new(&d.key, &d.range_end))
            }
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in reqs {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// Whether any operation of the txn (in either branch, at any depth) writes.
pub fn has_writes(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(request_op::Request::RequestPut(_))
            | Some(request_op::Request::RequestDeleteRange(_)) => true,
            Some(request_op::Request::RequestTxn(inner)) => has_writes(inner),
            _ => false,
        })
}

/// etcd's `applyCompare`: true if every key in the compare's range satisfies it. A compare on
/// VALUE of a missing key is false; other targets compare a missing key as all zeros.
pub fn compare_holds(c: &Compare, kvs: &[KeyValue]) -> bool {
    if kvs.is_empty() {
        if c.target == compare::CompareTarget::Value as i32 {
            return false;
        }
        return compare_kv(c, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_kv(c, kv))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(target) => {
            let (have, want) = match (target, &c.target_union) {
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => (kv.version, *v),
                (CompareTarget::Version, _) => (kv.version, 0),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
                    (kv.create_revision, *v)
                }
                (CompareTarget::Create, _) => (kv.create_revision, 0),
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => (kv.mod_revision, *v),
                (CompareTarget::Mod, _) => (kv.mod_revision, 0),
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => (kv.lease, *v),
                (CompareTarget::Lease, _) => (kv.lease, 0),
                (CompareTarget::Value, _) => (0, 0),
            };
            have.cmp(&want)
        }
        // An unknown target compares as equal, as etcd's switch falls through with result 0.
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compare::{CompareResult, CompareTarget, TargetUnion};
    use flotilla_proto::etcdserverpb::request_op::Request;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(t)),
        }
    }

    #[test]
    fn duplicate_keys_are_refused_as_etcd_does() {
        assert!(check_txn(&txn(vec![put("a"), put("b")], vec![put("a")])).is_ok());
        assert!(matches!(
            check_txn(&txn(vec![put("a"), put("a")], vec![])),
            Err(MvccError::DuplicateKey)
        ));
        assert!(matches!(
            check_txn(&txn(vec![put("b"), del("a", "c")], vec![])),
            Err(MvccError::DuplicateKey)
        ));
        assert!(check_txn(&txn(vec![put("c"), del("a", "c")], vec![])).is_ok());
        // Both branches of a nested txn may put the same key...
        let inner = txn(vec![put("x")], vec![put("x")]);
        assert!(check_txn(&txn(vec![nested(inner)], vec![])).is_ok());
        // ...but not a key the outer level also puts.
        let inner = txn(vec![put("x")], vec![]);
        assert!(matches!(
            check_txn(&txn(vec![nested(inner), put("x")], vec![])),
            Err(MvccError::DuplicateKey)
        ));
        assert!(matches!(
            check_txn(&txn(vec![RequestOp { request: None }], vec![])),
            Err(MvccError::KeyNotFound)
        ));
        let too_many = txn(
            (0..=MAX_TXN_OPS).map(|i| put(&i.to_string())).collect(),
            vec![],
        );
        assert!(matches!(check_txn(&too_many), Err(MvccError::TooManyOps)));
        assert!(has_writes(&txn(
            vec![],
            vec![nested(txn(vec![put("a")], vec![]))]
        )));
        assert!(!has_writes(&txn(vec![], vec![])));
    }

    #[test]
    fn compares_follow_etcd() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease: 0,
        };
        let cmp = |target: CompareTarget, result: CompareResult, u: TargetUnion| Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            target_union: Some(u),
            range_end: vec![],
        };
        let one = std::slice::from_ref(&kv);
        use CompareResult::*;
        use CompareTarget::*;
        assert!(compare_holds(
            &cmp(Value, Equal, TargetUnion::Value(b"v".to_vec())),
            one
        ));
        assert!(compare_holds(
            &cmp(Value, Greater, TargetUnion::Value(b"a".to_vec())),
            one
        ));
        assert!(compare_holds(
            &cmp(Version, Less, TargetUnion::Version(4)),
            one
        ));
        assert!(compare_holds(
            &cmp(Create, Equal, TargetUnion::CreateRevision(2)),
            one
        ));
        assert!(compare_holds(
            &cmp(Mod, NotEqual, TargetUnion::ModRevision(2)),
            one
        ));
        assert!(compare_holds(
            &cmp(Lease, Equal, TargetUnion::Lease(0)),
            one
        ));
        // Missing key: value compares fail, others compare against zero.
        assert!(!compare_holds(
            &cmp(Value, NotEqual, TargetUnion::Value(b"x".to_vec())),
            &[]
        ));
        assert!(compare_holds(
            &cmp(Version, Equal, TargetUnion::Version(0)),
            &[]
        ));
        assert!(compare_holds(
            &cmp(Create, Equal, TargetUnion::CreateRevision(0)),
            &[]
        ));
    }
}
