//! [`Write`]: the requests that go through Raft, each paired with the response it is answered
//! with, so [`NodeHandle::write`](super::handle::NodeHandle::write) is one typed path: it wraps
//! the request with a fresh id, replicates it, turns a refusal into an error and the response
//! into the caller's type, and stamps its header — once, for every service.

use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use flotilla_proto::internal::{self, request, response};

/// A write request and its response type.
pub trait Write: Send {
    /// What the state machine answers.
    type Response;
    /// The request as a log entry's operation.
    fn into_op(self) -> request::Op;
    /// The response, if `op` is of this request's kind.
    fn response(op: response::Op) -> Option<Self::Response>;
    /// The response's etcd header, for the handle to complete.
    fn header(_: &mut Self::Response) -> Option<&mut Option<ResponseHeader>> {
        None
    }
}

macro_rules! etcd_write {
    ($req:ty, $resp:ty, $variant:ident) => {
        impl Write for $req {
            type Response = $resp;
            fn into_op(self) -> request::Op {
                request::Op::$variant(self)
            }
            fn response(op: response::Op) -> Option<$resp> {
                match op {
                    response::Op::$variant(r) => Some(r),
                    _ => None,
                }
            }
            fn header(r: &mut $resp) -> Option<&mut Option<ResponseHeader>> {
                Some(&mut r.header)
            }
        }
    };
}

etcd_write!(PutRequest, PutResponse, Put);
etcd_write!(DeleteRangeRequest, DeleteRangeResponse, DeleteRange);
etcd_write!(TxnRequest, TxnResponse, Txn);
etcd_write!(CompactionRequest, CompactionResponse, Compaction);
etcd_write!(LeaseGrantRequest, LeaseGrantResponse, LeaseGrant);
etcd_write!(LeaseRevokeRequest, LeaseRevokeResponse, LeaseRevoke);
etcd_write!(AlarmRequest, AlarmResponse, Alarm);

impl Write for internal::MemberUpdate {
    type Response = internal::MemberUpdated;
    fn into_op(self) -> request::Op {
        request::Op::MemberUpdate(self)
    }
    fn response(op: response::Op) -> Option<internal::MemberUpdated> {
        match op {
            response::Op::MemberUpdated(r) => Some(r),
            _ => None,
        }
    }
}
