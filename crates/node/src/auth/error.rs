//! Errors of the auth store, in etcd's words and codes (`api/v3rpc/rpctypes/error.go`): etcdctl
//! prints the text and clientv3 matches on it (it re-authenticates on an old auth revision or an
//! invalid token), so the strings are byte-for-byte etcd's.

/// An auth refusal. Every variant is deterministic: members applying the same entry refuse it
/// alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `auth enable` without a user `root`.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// `auth enable` while `root` lacks the role `root`.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of an existing user.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A request without a user name (or, while auth is enabled, without a token).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// The user does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of an existing role.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// The role does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd without a name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user or password (or a user without a password).
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The user may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown, expired or forged.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Deleting root, its role, or revoking root's role while auth is enabled.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The request was authorised against auth state that has changed since.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Authenticate with a password for a user created with `--no-password`. etcd 3.4.x does
    /// not map this one to an `etcdserver:` error, so clients get its raw text, code Unknown.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
}

impl AuthError {
    /// The gRPC status code etcd answers with.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::InvalidAuthMgmt
            | AuthError::AuthOldRevision
            | AuthError::PermissionNotGiven => Code::InvalidArgument,
            AuthError::PermissionDenied => Code::PermissionDenied,
            AuthError::NoPasswordUser => Code::Unknown,
            AuthError::InvalidAuthToken => Code::Unauthenticated,
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExist
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted
            | AuthError::AuthNotEnabled => Code::FailedPrecondition,
        }
    }

    /// etcd's `auth` package text for this error (`auth: …`). etcd 3.4's Maintenance
    /// service returns the auth store's errors unconverted, so clients see these with code
    /// Unknown there.
    pub fn raw_text(&self) -> String {
        match self {
            AuthError::UserNotFound => "auth: user not found".into(),
            AuthError::UserAlreadyExist => "auth: user already exists".into(),
            AuthError::RoleAlreadyExist => "auth: role already exists".into(),
            AuthError::RoleNotFound => "auth: role not found".into(),
            AuthError::AuthOldRevision => "auth: revision in header is old".into(),
            AuthError::NoPasswordUser => self.to_string(),
            other => other.to_string().replacen("etcdserver: ", "auth: ", 1),
        }
    }

    /// The error a client sees.
    pub fn status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), self.to_string())
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        e.status()
    }
}
