//! Which permission each replicated request needs, checked when the entry is applied — on
//! every member, against the auth state as of that entry (etcd's `apply_auth.go`). A permission
//! revoked between the serving member's look at the token and the apply cannot slip through:
//! the revoke bumped the auth revision, and the request's older revision is refused.
//!
//! Requests without a header are the members' own (lease expiry, member updates) and act with
//! root's authority, as etcd's `WithRoot`.

use flotilla_proto::authpb::permission::Type;
use flotilla_proto::etcdserverpb::{TxnRequest, request_op};
use flotilla_proto::internal::{self, request::Op as Req};

use super::AuthInfo;
use super::error::AuthError;
use super::state::AuthState;

/// Checks that the sender of `req` may apply it. `lease_keys(id)` lists a lease's keys.
pub fn check_request(
    st: &AuthState,
    req: &internal::Request,
    lease_keys: impl Fn(i64) -> Vec<Vec<u8>>,
) -> Result<(), AuthError> {
    let (Some(h), Some(op)) = (&req.header, &req.op) else {
        return Ok(());
    };
    if !st.enabled() {
        return Ok(());
    }
    let who = AuthInfo {
        username: h.username.clone(),
        revision: h.auth_revision,
    };
    let write = |key: &[u8]| st.check_op(&who, key, &[], Type::Write);
    let read = |key: &[u8], end: &[u8]| st.check_op(&who, key, end, Type::Read);
    let lease_writes = |id: i64| -> Result<(), AuthError> {
        // A lease's keys go when it is revoked: only who may write all of them may revoke it
        // or attach more keys to it.
        lease_keys(id).iter().try_for_each(|k| write(k))
    };
    match op {
        Req::Put(p) => {
            write(&p.key)?;
            if p.lease != 0 {
                lease_writes(p.lease)?;
            }
            if p.prev_kv {
                read(&p.key, &[])?;
            }
            Ok(())
        }
        Req::DeleteRange(d) => {
            st.check_op(&who, &d.key, &d.range_end, Type::Write)?;
            if d.prev_kv {
                read(&d.key, &d.range_end)?;
            }
            Ok(())
        }
        Req::Txn(t) => check_txn(st, &who, t),
        Req::LeaseRevoke(r) => lease_writes(r.id),
        Req::AuthEnable(_)
        | Req::AuthDisable(_)
        | Req::UserAdd(_)
        | Req::UserDelete(_)
        | Req::UserChangePassword(_)
        | Req::UserGrantRole(_)
        | Req::UserRevokeRole(_)
        | Req::RoleAdd(_)
        | Req::RoleDelete(_)
        | Req::RoleGrantPermission(_)
        | Req::RoleRevokePermission(_) => st.check_admin(&who),
        // As etcd: no permission is needed to compact, grant a lease or authenticate (the
        // serving member checked the password).
        // Nor to raise or clear an alarm (etcd's Maintenance.Alarm checks nothing; a member
        // raising NOSPACE for itself proposes without a user).
        Req::Compaction(_)
        | Req::LeaseGrant(_)
        | Req::Authenticate(_)
        | Req::MemberUpdate(_)
        | Req::Alarm(_) => Ok(()),
    }
}

/// Every compare and every operation of both branches, nested txns included: which branch
/// runs is not known until apply, and a denied branch must not be probed through its sibling.
pub fn check_txn(st: &AuthState, who: &AuthInfo, t: &TxnRequest) -> Result<(), AuthError> {
    use request_op::Request as Op;
    for c in &t.compare {
        st.check_op(who, &c.key, &c.range_end, Type::Read)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => st.check_op(who, &r.key, &r.range_end, Type::Read)?,
            Some(Op::RequestPut(p)) => st.check_op(who, &p.key, &[], Type::Write)?,
            Some(Op::RequestDeleteRange(d)) => {
                if d.prev_kv {
                    st.check_op(who, &d.key, &d.range_end, Type::Read)?;
                }
                st.check_op(who, &d.key, &d.range_end, Type::Write)?
            }
            Some(Op::RequestTxn(inner)) => check_txn(st, who, inner)?,
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::authpb::Permission;
    use flotilla_proto::etcdserverpb::{
        AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
        AuthUserGrantRoleRequest, Compare, PutRequest, RangeRequest, RequestOp,
    };

    fn setup() -> AuthState {
        let mut s = AuthState::default();
        let mut ops = Vec::new();
        let mut run = |s: &mut AuthState, op: Req| {
            s.apply(&op, 1, &mut ops).unwrap().unwrap();
        };
        for user in ["root", "u"] {
            run(
                &mut s,
                Req::UserAdd(internal::AuthUserAdd {
                    name: user.into(),
                    hashed_password: b"h".to_vec(),
                    no_password: false,
                }),
            );
        }
        run(
            &mut s,
            Req::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
        );
        run(
            &mut s,
            Req::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(Permission {
                    perm_type: Type::Readwrite as i32,
                    key: b"ok".to_vec(),
                    range_end: Vec::new(),
                }),
            }),
        );
        for (user, role) in [("root", "root"), ("u", "r")] {
            run(
                &mut s,
                Req::UserGrantRole(AuthUserGrantRoleRequest {
                    user: user.into(),
                    role: role.into(),
                }),
            );
        }
        run(&mut s, Req::AuthEnable(AuthEnableRequest {}));
        s
    }

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    fn as_u(s: &AuthState, op: Req) -> internal::Request {
        internal::Request {
            id: 1,
            header: Some(internal::RequestHeader {
                username: "u".into(),
                auth_revision: s.revision(),
            }),
            op: Some(op),
        }
    }

    #[test]
    fn txn_checks_both_branches_and_nested_txns() {
        let s = setup();
        let none = |_| Vec::new();
        let txn = |success: Vec<RequestOp>, failure: Vec<RequestOp>| {
            Req::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b"ok".to_vec(),
                    ..Default::default()
                }],
                success,
                failure,
            })
        };
        assert_eq!(
            check_request(&s, &as_u(&s, txn(vec![put("ok")], vec![])), none),
            Ok(())
        );
        assert_eq!(
            check_request(&s, &as_u(&s, txn(vec![put("ok")], vec![put("no")])), none),
            Err(AuthError::PermissionDenied)
        );
        let nested = RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b"no".to_vec(),
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })),
        };
        assert_eq!(
            check_request(&s, &as_u(&s, txn(vec![], vec![nested])), none),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn lease_revoke_needs_write_on_every_key_and_members_act_as_root() {
        let s = setup();
        let revoke = Req::LeaseRevoke(flotilla_proto::etcdserverpb::LeaseRevokeRequest { id: 5 });
        let keys = |_| vec![b"ok".to_vec(), b"no".to_vec()];
        assert_eq!(
            check_request(&s, &as_u(&s, revoke.clone()), keys),
            Err(AuthError::PermissionDenied)
        );
        let own = internal::Request {
            id: 1,
            header: None,
            op: Some(revoke),
        };
        assert_eq!(check_request(&s, &own, keys), Ok(()));
        let mut anonymous = as_u(&s, Req::Put(PutRequest::default()));
        anonymous.header = Some(internal::RequestHeader::default());
        assert_eq!(
            check_request(&s, &anonymous, keys),
            Err(AuthError::UserEmpty)
        );
    }
}
