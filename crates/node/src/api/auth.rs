//! etcd's Auth service: the switch, Authenticate, and user and role management.
//!
//! Changes are replicated (`crate::auth::write`) and judged at apply by the auth state, admin
//! rights included, so every member agrees on them. Passwords are hashed (bcrypt, on a
//! blocking thread) and checked here, on the serving member, before anything is proposed: the
//! log never holds a clear password and apply never runs bcrypt. The read-only calls (UserGet,
//! UserList, RoleGet, RoleList) are served locally after a ReadIndex barrier with etcd's
//! rules: admin, or a user reading itself or a role it holds.

use flotilla_proto::etcdserverpb::auth_server::Auth;
use flotilla_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthUserAddRequest,
    AuthUserAddResponse, AuthUserChangePasswordRequest, AuthUserChangePasswordResponse,
    AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse,
    AuthUserGrantRoleRequest, AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateRequest,
    AuthenticateResponse,
};
use flotilla_proto::internal;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{header, observe};
use crate::auth::tokens::Tokens;
use crate::auth::{self, AuthError, AuthInfo};
use crate::member::handle::NodeHandle;
use crate::member::write::Write;

/// How often Authenticate starts over when the auth state changed between the password check
/// and the apply (etcd loops until they agree).
const AUTHENTICATE_ATTEMPTS: usize = 5;

/// The Auth service.
#[derive(Clone)]
pub struct AuthService {
    node: NodeHandle,
    bcrypt_cost: u32,
}

impl AuthService {
    /// Creates the service; passwords are hashed with `bcrypt_cost`.
    pub fn new(node: NodeHandle, bcrypt_cost: u32) -> Self {
        AuthService { node, bcrypt_cost }
    }

    async fn hash(&self, password: String) -> Result<Vec<u8>, Status> {
        let cost = self.bcrypt_cost;
        let hashed = tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|e| Status::internal(format!("etcdserver: hashing failed: {e}")))?
            .map_err(|e| Status::internal(format!("etcdserver: hashing failed: {e}")))?;
        Ok(hashed.into_bytes())
    }

    /// Replicates an auth change and answers with etcd's header-only response.
    async fn change<W>(&self, md: &MetadataMap, req: W) -> Result<(), Status>
    where
        W: Write<Response = internal::AuthChanged> + Clone,
    {
        auth::write(&self.node, md, req).await.map(|_| ())
    }

    fn hdr(&self) -> Option<flotilla_proto::etcdserverpb::ResponseHeader> {
        Some(header(&self.node, 0))
    }

    /// Runs `f` on the auth state after a linearizable barrier, with the caller's identity.
    async fn read<T>(
        &self,
        md: &MetadataMap,
        f: impl FnOnce(&auth::state::AuthState, &AuthInfo) -> Result<T, AuthError>,
    ) -> Result<T, Status> {
        self.node.linearizable_barrier().await?;
        let who = auth::identity(&self.node, md).await?.unwrap_or_default();
        let sm = self
            .node
            .sm
            .read()
            .map_err(|_| Status::internal("state machine lock poisoned"))?;
        Ok(f(sm.store().auth(), &who)?)
    }

    /// etcd's `CheckPassword`: the auth revision the password was checked at.
    async fn check_password(&self, name: &str, password: String) -> Result<u64, Status> {
        let (hash, revision) = {
            let sm = self
                .node
                .sm
                .read()
                .map_err(|_| Status::internal("state machine lock poisoned"))?;
            let st = sm.store().auth();
            if !st.enabled() {
                return Err(AuthError::AuthNotEnabled.into());
            }
            let user = st.user(name).ok_or(AuthError::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(AuthError::NoPasswordUser.into());
            }
            (user.password.clone(), st.revision())
        };
        let ok = tokio::task::spawn_blocking(move || {
            let hash = String::from_utf8(hash).ok()?;
            bcrypt::verify(password, &hash).ok()
        })
        .await
        .map_err(|e| Status::internal(format!("etcdserver: password check failed: {e}")))?;
        if ok != Some(true) {
            return Err(AuthError::AuthFailed.into());
        }
        Ok(revision)
    }

    async fn authenticate_inner(&self, req: AuthenticateRequest) -> Result<String, Status> {
        self.node.linearizable_barrier().await?;
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            let checked = self.check_password(&req.name, req.password.clone()).await?;
            let tokens = self
                .node
                .sm
                .read()
                .map_err(|_| Status::internal("state machine lock poisoned"))?
                .auth_tokens()
                .clone();
            let applied = self
                .node
                .write_with_header(
                    internal::AuthAuthenticate {
                        name: req.name.clone(),
                        // A JWT is signed below; a simple token's random part is drawn here.
                        simple_token_prefix: if tokens.jwt().is_some() {
                            String::new()
                        } else {
                            Tokens::new_prefix()
                        },
                    },
                    None,
                )
                .await?;
            // The password was checked against the auth state at `checked`; if a change was
            // applied since (a new password, a deleted user), check again.
            if applied.auth_revision == checked {
                return match tokens.jwt() {
                    Some(jwt) => jwt.sign(&applied.username, applied.auth_revision),
                    None => Ok(applied.simple_token),
                };
            }
        }
        Err(AuthError::AuthOldRevision.into())
    }
}

macro_rules! respond {
    ($self:ident, $method:literal, $body:expr) => {{
        let r = $body.await;
        observe(&$self.node, $method, r).map(Response::new)
    }};
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "AuthEnable", async {
            self.change(&md, req).await?;
            Ok(AuthEnableResponse { header: self.hdr() })
        })
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "AuthDisable", async {
            self.change(&md, req).await?;
            Ok(AuthDisableResponse { header: self.hdr() })
        })
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        respond!(self, "Authenticate", async {
            let token = self.authenticate_inner(req).await?;
            Ok(AuthenticateResponse {
                header: self.hdr(),
                token,
            })
        })
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "UserAdd", async {
            let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
            let hashed_password = if no_password {
                Vec::new()
            } else {
                self.hash(req.password).await?
            };
            let op = internal::AuthUserAdd {
                name: req.name,
                hashed_password,
                no_password,
            };
            self.change(&md, op).await?;
            Ok(AuthUserAddResponse { header: self.hdr() })
        })
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "UserGet", async {
            let roles = self
                .read(&md, |st, who| {
                    if let Err(e) = st.check_admin(who)
                        && who.username != req.name
                    {
                        return Err(e);
                    }
                    Ok(st
                        .user(&req.name)
                        .ok_or(AuthError::UserNotFound)?
                        .roles
                        .clone())
                })
                .await?;
            Ok(AuthUserGetResponse {
                header: self.hdr(),
                roles,
            })
        })
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let (md, _, _) = request.into_parts();
        respond!(self, "UserList", async {
            let users = self
                .read(&md, |st, who| {
                    st.check_admin(who)?;
                    Ok(st.user_names())
                })
                .await?;
            Ok(AuthUserListResponse {
                header: self.hdr(),
                users,
            })
        })
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "UserDelete", async {
            self.change(&md, req).await?;
            Ok(AuthUserDeleteResponse { header: self.hdr() })
        })
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "UserChangePassword", async {
            let op = internal::AuthUserChangePassword {
                name: req.name,
                hashed_password: self.hash(req.password).await?,
            };
            self.change(&md, op).await?;
            Ok(AuthUserChangePasswordResponse { header: self.hdr() })
        })
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "UserGrantRole", async {
            self.change(&md, req).await?;
            Ok(AuthUserGrantRoleResponse { header: self.hdr() })
        })
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "UserRevokeRole", async {
            self.change(&md, req).await?;
            Ok(AuthUserRevokeRoleResponse { header: self.hdr() })
        })
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "RoleAdd", async {
            self.change(&md, req).await?;
            Ok(AuthRoleAddResponse { header: self.hdr() })
        })
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "RoleGet", async {
            let perm = self
                .read(&md, |st, who| {
                    if let Err(e) = st.check_admin(who)
                        && !st.has_role(&who.username, &req.role)
                    {
                        return Err(e);
                    }
                    Ok(st
                        .role(&req.role)
                        .ok_or(AuthError::RoleNotFound)?
                        .key_permission
                        .clone())
                })
                .await?;
            Ok(AuthRoleGetResponse {
                header: self.hdr(),
                perm,
            })
        })
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let (md, _, _) = request.into_parts();
        respond!(self, "RoleList", async {
            let roles = self
                .read(&md, |st, who| {
                    st.check_admin(who)?;
                    Ok(st.role_names())
                })
                .await?;
            Ok(AuthRoleListResponse {
                header: self.hdr(),
                roles,
            })
        })
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "RoleDelete", async {
            self.change(&md, req).await?;
            Ok(AuthRoleDeleteResponse { header: self.hdr() })
        })
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "RoleGrantPermission", async {
            self.change(&md, req).await?;
            Ok(AuthRoleGrantPermissionResponse { header: self.hdr() })
        })
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let (md, _, req) = request.into_parts();
        respond!(self, "RoleRevokePermission", async {
            self.change(&md, req).await?;
            Ok(AuthRoleRevokePermissionResponse { header: self.hdr() })
        })
    }
}
