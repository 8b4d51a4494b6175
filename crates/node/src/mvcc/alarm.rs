//! Alarms: etcd's `v3alarm` store and the appliers that an active alarm switches on.
//!
//! An alarm is a `(member id, alarm type)` pair raised by an `ACTIVATE` request and cleared by
//! a `DEACTIVATE` (etcdctl `alarm disarm`). Both travel through Raft as `internal::Request`
//! `alarm` entries, so every member raises and clears the same alarms at the same index and
//! refuses the same writes afterwards: the refusals below are decided by the replicated alarm
//! set alone, never by anything local such as the size of this member's files.
//!
//! Storage: one key per alarm in the MVCC tree, `x` + member id (8 bytes, big-endian) + alarm
//! type (4 bytes, big-endian), with an empty value. It is not part of the keyspace: raising an
//! alarm creates no revision and no watch event (etcd keeps alarms in bbolt's own `alarm`
//! bucket). Because a Raft snapshot and `Maintenance.Snapshot` carry every tree entry
//! (`snapshot.rs`), and a restart reloads the tree, alarms survive both. `hash_at` hashes only
//! the `r` records, so alarms do not change HashKV (as in etcd, where they are outside `key`).
//!
//! Gates (etcd's `server/etcdserver/apply.go`):
//! - CORRUPT active anywhere (`applierV3Corrupt`): Put, DeleteRange, Txn, Compaction,
//!   LeaseGrant and LeaseRevoke are refused with `etcdserver: corrupt cluster`. etcd's corrupt
//!   applier refuses Range too, but etcd serves reads through its base applier, which no alarm
//!   wraps; reads here do not go through the log at all, so they are served, as etcd does.
//! - NOSPACE active (`applierV3Capped`): Put, a Txn whose put cost is above zero, and
//!   LeaseGrant are refused with `etcdserver: mvcc: database space exceeded`; Range,
//!   DeleteRange, Compaction and LeaseRevoke still work, so an operator can free space.
//!
//! CORRUPT wins over NOSPACE when both are active, as the corrupt applier refuses a superset.

use std::collections::BTreeSet;

use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, PutRequest, TxnRequest, request_op,
};
use flotilla_proto::internal;

use super::error::MvccError;

/// The first byte of every alarm key in the MVCC tree.
pub const ALARM_PREFIX: u8 = b'x';

const KEY_LEN: usize = 1 + 8 + 4;

/// etcd's estimate of the metadata a key costs in the backend (`kvOverhead`, quota.go).
const KV_OVERHEAD: u64 = 256;
/// etcd's estimate of what a lease costs in the backend (`leaseOverhead`, quota.go).
pub const LEASE_OVERHEAD: u64 = 64;

/// The tree key of one alarm.
pub fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.push(ALARM_PREFIX);
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

fn decode_key(k: &[u8]) -> Result<(u64, i32), MvccError> {
    if k.len() != KEY_LEN || k[0] != ALARM_PREFIX {
        return Err(MvccError::Corrupt("bad alarm key".into()));
    }
    let member = u64::from_be_bytes(
        k[1..9]
            .try_into()
            .map_err(|_| MvccError::Corrupt("bad alarm key".into()))?,
    );
    let alarm = i32::from_be_bytes(
        k[9..]
            .try_into()
            .map_err(|_| MvccError::Corrupt("bad alarm key".into()))?,
    );
    Ok((member, alarm))
}

/// etcd's quota cost of a put: the key, the value and the per-key overhead.
pub fn put_cost(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

/// etcd's quota cost of a txn (`costTxn`): the larger of the put costs of its success and
/// failure branches. Puts inside nested txns are not counted, as in etcd.
pub fn txn_cost(t: &TxnRequest) -> u64 {
    let branch = |ops: &[flotilla_proto::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => put_cost(p),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// The active alarms of the cluster, as replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarms {
    active: BTreeSet<(u64, i32)>,
}

impl Alarms {
    /// Adds the alarm stored under tree key `k` (while loading the tree).
    pub fn load(&mut self, k: &[u8]) -> Result<(), MvccError> {
        self.active.insert(decode_key(k)?);
        Ok(())
    }

    /// Every active alarm, ordered by member then type.
    pub fn list(&self) -> Vec<AlarmMember> {
        self.of_type(AlarmType::None as i32)
    }

    /// The active alarms of type `alarm` (`NONE`: all of them), as etcd's `alarmStore.Get`.
    pub fn of_type(&self, alarm: i32) -> Vec<AlarmMember> {
        self.active
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None as i32 || *a == alarm)
            .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// Whether an alarm of this type is active on any member.
    pub fn any(&self, alarm: AlarmType) -> bool {
        self.active.iter().any(|(_, a)| *a == alarm as i32)
    }

    /// etcd's apply of an `AlarmRequest` (`applierV3backend.Alarm`): GET lists, ACTIVATE raises
    /// (NONE is ignored), DEACTIVATE clears; the response lists the alarm that changed. The
    /// tree writes are appended to `ops`, to be committed with the entry.
    pub fn apply(
        &mut self,
        r: &AlarmRequest,
        ops: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> AlarmResponse {
        let mut resp = AlarmResponse::default();
        match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => resp.alarms = self.of_type(r.alarm),
            Ok(AlarmAction::Activate) => {
                if r.alarm != AlarmType::None as i32 {
                    if self.active.insert((r.member_id, r.alarm)) {
                        ops.push((alarm_key(r.member_id, r.alarm), Some(Vec::new())));
                        tracing::warn!(
                            member = format!("{:x}", r.member_id),
                            alarm = alarm_name(r.alarm),
                            "alarm raised"
                        );
                    }
                    resp.alarms.push(AlarmMember {
                        member_id: r.member_id,
                        alarm: r.alarm,
                    });
                }
            }
            Ok(AlarmAction::Deactivate) => {
                if self.active.remove(&(r.member_id, r.alarm)) {
                    ops.push((alarm_key(r.member_id, r.alarm), None));
                    tracing::warn!(
                        member = format!("{:x}", r.member_id),
                        alarm = alarm_name(r.alarm),
                        "alarm cleared"
                    );
                    resp.alarms.push(AlarmMember {
                        member_id: r.member_id,
                        alarm: r.alarm,
                    });
                }
            }
            // etcd answers an unknown action with nothing.
            Err(_) => {}
        }
        resp
    }

    /// Refuses `op` if an active alarm forbids it (see the module docs).
    pub fn gate(&self, op: &internal::request::Op) -> Result<(), MvccError> {
        use internal::request::Op;
        if self.any(AlarmType::Corrupt) {
            return match op {
                Op::Put(_)
                | Op::DeleteRange(_)
                | Op::Txn(_)
                | Op::Compaction(_)
                | Op::LeaseGrant(_)
                | Op::LeaseRevoke(_) => Err(MvccError::CorruptCluster),
                // etcd's corrupt applier overrides only the KV and lease calls.
                _ => Ok(()),
            };
        }
        if self.any(AlarmType::Nospace) {
            return match op {
                Op::Put(_) | Op::LeaseGrant(_) => Err(MvccError::NoSpace),
                Op::Txn(t) if txn_cost(t) > 0 => Err(MvccError::NoSpace),
                _ => Ok(()),
            };
        }
        Ok(())
    }
}

/// The name etcd prints for an alarm type.
pub fn alarm_name(alarm: i32) -> String {
    match AlarmType::try_from(alarm) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => alarm.to_string(),
    }
}

/// etcd's text form of an `AlarmMember` (its gogo-proto `String()`), which `Status.errors`
/// carries: `memberID:<decimal id> alarm:<TYPE> `, trailing space included.
pub fn alarm_text(a: &AlarmMember) -> String {
    format!("memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::{RequestOp, TxnRequest};

    fn req(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        }
    }

    #[test]
    fn activate_deactivate_and_list() {
        let mut a = Alarms::default();
        let mut ops = Vec::new();
        let r = a.apply(&req(AlarmAction::Activate, 7, AlarmType::None), &mut ops);
        assert!(r.alarms.is_empty() && ops.is_empty(), "NONE raises nothing");
        let r = a.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace), &mut ops);
        assert_eq!(r.alarms.len(), 1);
        assert_eq!(ops, vec![(alarm_key(7, 1), Some(Vec::new()))]);
        // Raising it again writes nothing but still answers with it, as etcd.
        ops.clear();
        let r = a.apply(&req(AlarmAction::Activate, 7, AlarmType::Nospace), &mut ops);
        assert_eq!(r.alarms.len(), 1);
        assert!(ops.is_empty());
        a.apply(&req(AlarmAction::Activate, 9, AlarmType::Corrupt), &mut ops);
        let all = a.apply(&req(AlarmAction::Get, 0, AlarmType::None), &mut ops);
        assert_eq!(all.alarms.len(), 2);
        let corrupt = a.apply(&req(AlarmAction::Get, 0, AlarmType::Corrupt), &mut ops);
        assert_eq!(
            corrupt.alarms,
            vec![AlarmMember {
                member_id: 9,
                alarm: 2
            }]
        );
        ops.clear();
        let r = a.apply(
            &req(AlarmAction::Deactivate, 7, AlarmType::Nospace),
            &mut ops,
        );
        assert_eq!(r.alarms.len(), 1);
        assert_eq!(ops, vec![(alarm_key(7, 1), None)]);
        let r = a.apply(
            &req(AlarmAction::Deactivate, 7, AlarmType::Nospace),
            &mut ops,
        );
        assert!(
            r.alarms.is_empty(),
            "clearing a cleared alarm answers nothing"
        );
    }

    #[test]
    fn keys_round_trip() {
        let mut a = Alarms::default();
        a.load(&alarm_key(u64::MAX, 2)).unwrap();
        assert_eq!(
            a.list(),
            vec![AlarmMember {
                member_id: u64::MAX,
                alarm: 2
            }]
        );
        assert!(a.load(b"xbad").is_err());
    }

    #[test]
    fn gates_follow_etcd_appliers() {
        use internal::request::Op;
        let put = Op::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        let txn_put = Op::Txn(TxnRequest {
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest::default())),
            }],
            ..Default::default()
        });
        let txn_read = Op::Txn(TxnRequest::default());
        let delete = Op::DeleteRange(Default::default());
        let compact = Op::Compaction(Default::default());
        let revoke = Op::LeaseRevoke(Default::default());
        let grant = Op::LeaseGrant(Default::default());
        let mut a = Alarms::default();
        for op in [
            &put, &txn_put, &txn_read, &delete, &compact, &revoke, &grant,
        ] {
            assert!(a.gate(op).is_ok());
        }
        a.load(&alarm_key(1, AlarmType::Nospace as i32)).unwrap();
        for op in [&put, &txn_put, &grant] {
            assert!(matches!(a.gate(op), Err(MvccError::NoSpace)));
        }
        for op in [&txn_read, &delete, &compact, &revoke] {
            assert!(a.gate(op).is_ok());
        }
        a.load(&alarm_key(2, AlarmType::Corrupt as i32)).unwrap();
        for op in [
            &put, &txn_put, &txn_read, &delete, &compact, &revoke, &grant,
        ] {
            assert!(matches!(a.gate(op), Err(MvccError::CorruptCluster)));
        }
        assert!(a.gate(&Op::Alarm(Default::default())).is_ok());
    }

    #[test]
    fn txn_cost_is_the_larger_branch() {
        let put = |n: usize| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: vec![b'k'; n],
                ..Default::default()
            })),
        };
        let t = TxnRequest {
            success: vec![put(1)],
            failure: vec![put(10), put(1)],
            ..Default::default()
        };
        assert_eq!(txn_cost(&t), 2 * KV_OVERHEAD + 11);
        let nested = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(t)),
            }],
            ..Default::default()
        };
        assert_eq!(txn_cost(&nested), 0, "etcd does not count nested puts");
    }

    /// Through the store: no revision, refusals advance the applied index, and the alarms
    /// survive a reopen and travel in a snapshot.
    #[test]
    fn store_keeps_alarms_outside_the_keyspace() {
        use crate::mvcc::MvccStore;
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let mut store = MvccStore::open(&db).unwrap();
        let put = |k: &str| internal::Request {
            id: 1,
            header: None,
            op: Some(internal::request::Op::Put(PutRequest {
                key: k.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        };
        let alarm = |action: AlarmAction| internal::Request {
            id: 2,
            header: None,
            op: Some(internal::request::Op::Alarm(req(
                action,
                5,
                AlarmType::Nospace,
            ))),
        };
        store.apply(1, &put("a")).unwrap();
        let rev = store.current_revision();
        store.apply(2, &alarm(AlarmAction::Activate)).unwrap();
        assert_eq!(store.current_revision(), rev, "an alarm is not a revision");
        assert!(matches!(store.apply(3, &put("b")), Err(MvccError::NoSpace)));
        assert_eq!(
            store.applied_index(),
            3,
            "a refusal is applied like any verdict"
        );
        let image = store.snapshot().unwrap();
        drop(store);
        let mut store = MvccStore::open(&db).unwrap();
        assert_eq!(store.alarms().list().len(), 1, "alarms survive a reopen");
        store.apply(4, &alarm(AlarmAction::Deactivate)).unwrap();
        store.apply(5, &put("b")).unwrap();
        store.restore(&image, 6).unwrap();
        assert_eq!(
            store.alarms().list().len(),
            1,
            "alarms travel in a snapshot"
        );
    }

    #[test]
    fn text_matches_etcd() {
        let a = AlarmMember {
            member_id: 10276657743932975437,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(
            alarm_text(&a),
            "memberID:10276657743932975437 alarm:NOSPACE "
        );
    }
}
