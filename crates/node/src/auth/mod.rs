//! etcd's authentication and authorisation: users, roles with key-range permissions, the
//! `auth enable` switch, tokens, and the permission check on every request.
//!
//! Split by where each part runs:
//! - [`state`]: the replicated state and its rules, applied inside the MVCC store so it is
//!   persisted, snapshotted and restored with the keyspace (but outside it).
//! - [`check`]: what each replicated request needs, checked at apply on every member.
//! - [`perm`]: key-range coverage.
//! - [`tokens`]: the simple tokens a member accepts (memory only, per member).
//! - [`gate`]: who may change the cluster (membership, leadership) through the client port.
//! - this module: the serving member's side — turning a request's `token` metadata (or, under
//!   `--client-cert-auth`, its verified client certificate) into an identity, checking reads
//!   locally, and stamping writes with the caller's identity so the apply-time check can judge
//!   them. The gRPC service is `crate::api::auth`.

pub mod check;
pub mod error;
pub mod flags;
pub mod gate;
pub mod jwt;
pub mod perm;
pub mod state;
pub mod tokens;

use flotilla_proto::authpb::permission::Type;
use flotilla_proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserDeleteRequest,
    AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use flotilla_proto::internal::{self, request, response};
use tonic::Status;
use tonic::metadata::MetadataMap;

pub use error::AuthError;

use crate::contract::ServerError;
use crate::member::handle::NodeHandle;
use crate::member::write::Write;

/// The name of the root user and of the root role.
pub const ROOT: &str = "root";

/// Who sent a request, as its token says: the user and the auth revision the token vouches for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user.
    pub username: String,
    /// The auth revision the identity was established at (0: no user).
    pub revision: u64,
}

/// The gRPC metadata keys a token arrives under: Go clientv3 and etcd-client send `token`;
/// etcd's HTTP gateway passes the `Authorization` header.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

fn lock_err() -> Status {
    Status::internal("state machine lock poisoned")
}

/// The identity carried by a request's metadata: `None` without a token; an unknown, expired
/// or malformed token is etcd's "invalid auth token". Without a token, a client certificate
/// verified under `--client-cert-auth` names the user by its CN, at the current auth revision
/// (etcd's `AuthInfoFromTLS`); `crate::tls::accept::stamp_cert_user` is the only source of
/// that metadata.
pub async fn identity(node: &NodeHandle, md: &MetadataMap) -> Result<Option<AuthInfo>, Status> {
    let Some(raw) = TOKEN_KEYS.iter().find_map(|k| md.get(*k)) else {
        let Some(cn) = md
            .get(crate::tls::accept::CERT_USER_METADATA)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(None);
        };
        let sm = node.sm.read().map_err(|_| lock_err())?;
        return Ok(Some(AuthInfo {
            username: cn.to_string(),
            revision: sm.store().auth().revision(),
        }));
    };
    let token = raw.to_str().map_err(|_| AuthError::InvalidAuthToken)?;
    let tokens = node
        .sm
        .read()
        .map_err(|_| lock_err())?
        .auth_tokens()
        .clone();
    if let Some(jwt) = tokens.jwt() {
        return Ok(Some(jwt.verify(token)?));
    }
    let index = tokens::Tokens::index_of(token).ok_or(AuthError::InvalidAuthToken)?;
    // A token issued through another member is known here once this member applied the
    // entry that issued it (etcd waits the same way).
    let mut applied = node.applied.clone();
    let reached = tokio::time::timeout(node.request_timeout, applied.wait_for(|a| *a >= index));
    if !matches!(reached.await, Ok(Ok(_))) {
        return Err(AuthError::InvalidAuthToken.into());
    }
    let sm = node.sm.read().map_err(|_| lock_err())?;
    let user = sm
        .auth_tokens()
        .lookup(token)
        .ok_or(AuthError::InvalidAuthToken)?;
    Ok(Some(AuthInfo {
        username: user,
        revision: sm.store().auth().revision(),
    }))
}

/// Checks on the serving member that the caller may read `[key, range_end)` (Range, Watch,
/// LeaseTimeToLive): reads are not replicated, so nothing else would check them.
pub async fn check_read(
    node: &NodeHandle,
    md: &MetadataMap,
    key: &[u8],
    range_end: &[u8],
) -> Result<(), Status> {
    let who = identity(node, md).await?.unwrap_or_default();
    let sm = node.sm.read().map_err(|_| lock_err())?;
    Ok(sm
        .store()
        .auth()
        .check_op(&who, key, range_end, Type::Read)?)
}

/// Checks on the serving member that the caller holds the root role while auth is enabled,
/// for etcd 3.4's admin-only Maintenance calls (Snapshot, Hash, HashKV, Defragment). Their
/// refusals are etcd's unconverted auth errors: code Unknown, text `auth: …`.
pub async fn check_admin(node: &NodeHandle, md: &MetadataMap) -> Result<(), Status> {
    let raw = |e: AuthError| Status::unknown(e.raw_text());
    let who = match identity(node, md).await {
        Ok(who) => who.unwrap_or_default(),
        Err(_) => return Err(raw(AuthError::InvalidAuthToken)),
    };
    let sm = node.sm.read().map_err(|_| lock_err())?;
    sm.store().auth().check_admin(&who).map_err(raw)
}

/// How often a write refused for an old auth revision is retried with a fresh identity
/// (etcd retries `ErrAuthOldRevision` in `raftRequest`; a simple token always vouches for the
/// current revision, so one retry normally suffices).
const OLD_REVISION_RETRIES: usize = 3;

/// Replicates `req` on behalf of the caller identified by `md`: the identity goes into the
/// entry's header, and the state machine checks it when applying.
pub async fn write<W: Write + Clone>(
    node: &NodeHandle,
    md: &MetadataMap,
    req: W,
) -> Result<W::Response, Status> {
    let old = AuthError::AuthOldRevision.to_string();
    let mut attempt = 0;
    loop {
        let who = identity(node, md).await?.unwrap_or_default();
        let header = internal::RequestHeader {
            username: who.username,
            auth_revision: who.revision,
        };
        match node.write_with_header(req.clone(), Some(header)).await {
            Err(ServerError::Refused(_, m)) if m == old && attempt < OLD_REVISION_RETRIES => {
                attempt += 1;
            }
            r => return r.map_err(Status::from),
        }
    }
}

// The auth requests as log entries. Mutations answer with the new auth revision; the API
// builds etcd's (header-only) response around it.
macro_rules! auth_write {
    ($req:ty, $variant:ident) => {
        impl Write for $req {
            type Response = internal::AuthChanged;
            fn into_op(self) -> request::Op {
                request::Op::$variant(self)
            }
            fn response(op: response::Op) -> Option<internal::AuthChanged> {
                match op {
                    response::Op::AuthChanged(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

auth_write!(AuthEnableRequest, AuthEnable);
auth_write!(AuthDisableRequest, AuthDisable);
auth_write!(internal::AuthUserAdd, UserAdd);
auth_write!(AuthUserDeleteRequest, UserDelete);
auth_write!(internal::AuthUserChangePassword, UserChangePassword);
auth_write!(AuthUserGrantRoleRequest, UserGrantRole);
auth_write!(AuthUserRevokeRoleRequest, UserRevokeRole);
auth_write!(AuthRoleAddRequest, RoleAdd);
auth_write!(AuthRoleDeleteRequest, RoleDelete);
auth_write!(AuthRoleGrantPermissionRequest, RoleGrantPermission);
auth_write!(AuthRoleRevokePermissionRequest, RoleRevokePermission);

impl Write for internal::AuthAuthenticate {
    type Response = internal::AuthAuthenticated;
    fn into_op(self) -> request::Op {
        request::Op::Authenticate(self)
    }
    fn response(op: response::Op) -> Option<internal::AuthAuthenticated> {
        match op {
            response::Op::Authenticated(r) => Some(r),
            _ => None,
        }
    }
}

/// The name Go's gRPC gives a status code in an error's text (`codes.Code.String()`), for the
/// places where etcd sends a whole Go error string (a refused watch's `cancel_reason`).
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
