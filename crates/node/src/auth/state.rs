//! [`AuthState`]: the replicated auth state — users, roles, the enabled flag and the auth
//! revision — and the deterministic rules that change it (etcd's `auth/store.go`).
//!
//! It lives inside the MVCC store (`crate::mvcc::store`) because its changes must land in the
//! same sled batch as the applied index: an auth entry is applied exactly once, and a snapshot
//! image (every entry of the store's tree) carries it to new members. Its keys start with
//! [`PREFIX`], outside the record/lease/metadata spaces, so auth changes never touch the
//! keyspace or the KV revision; etcd keeps a separate auth revision, bumped by every change a
//! token holder must notice.
//!
//! Every mutation validates first and changes memory last, so a refusal leaves nothing behind
//! (the store's reload-on-error path is for storage failures only). bcrypt never runs here:
//! the serving member hashes and checks passwords before proposing.

use std::collections::BTreeMap;

use flotilla_proto::authpb::{Permission, Role, User, UserAddOptions, permission::Type};
use flotilla_proto::internal::{self, request::Op as Req, response::Op as Resp};
use prost::Message as _;

use super::error::AuthError;
use super::perm;
use super::{AuthInfo, ROOT};

/// First byte of every auth key in the store's tree.
pub const PREFIX: u8 = b'a';
const ENABLED: &[u8] = b"ae";
const REVISION: &[u8] = b"av";
const USER: &[u8] = b"au";
const ROLE: &[u8] = b"ar";

/// Tree writes of one entry (`None` = remove), as the store's writer takes them.
pub type TreeOps = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Users, roles, the enabled flag and the auth revision.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        // etcd's auth store starts at revision 1 (NewAuthStore commits it), so a token's
        // revision is never 0 — which is how "no user given" is told apart.
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

fn key(space: &[u8], name: &str) -> Vec<u8> {
    let mut k = space.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl AuthState {
    /// Loads one tree entry whose key starts with [`PREFIX`].
    pub fn load_entry(&mut self, k: &[u8], v: &[u8]) -> Result<(), String> {
        let name = |space: &[u8]| {
            String::from_utf8(k[space.len()..].to_vec()).map_err(|_| "bad auth name".to_string())
        };
        if k == ENABLED {
            self.enabled = v == [1];
        } else if k == REVISION {
            let arr: [u8; 8] = v.try_into().map_err(|_| "bad auth revision".to_string())?;
            self.revision = u64::from_be_bytes(arr);
        } else if k.starts_with(USER) {
            let u = User::decode(v).map_err(|e| format!("bad user: {e}"))?;
            self.users.insert(name(USER)?, u);
        } else if k.starts_with(ROLE) {
            let r = Role::decode(v).map_err(|e| format!("bad role: {e}"))?;
            self.roles.insert(name(ROLE)?, r);
        } else {
            return Err("unknown auth key".into());
        }
        Ok(())
    }

    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// User names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Role names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Whether `user` has `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's `IsAdminPermitted`: with auth enabled, only a user with the root role.
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if info.username.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        match self.users.get(&info.username) {
            None => Err(AuthError::UserNotFound),
            Some(u) if has_root_role(u) => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// etcd's `isOpPermitted`: may `info` do a `want` (READ or WRITE) on `[key, range_end)`?
    pub fn check_op(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        want: Type,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if info.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if info.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let Some(user) = self.users.get(&info.username) else {
            return Err(AuthError::PermissionDenied);
        };
        if has_root_role(user) {
            return Ok(());
        }
        let perms = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.key_permission.iter());
        if perm::covered(perms, want, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Applies an auth operation of entry `index`; `None` if `op` is not one. Tree writes go
    /// to `ops`; on a refusal nothing changed.
    pub fn apply(
        &mut self,
        op: &Req,
        index: u64,
        ops: &mut TreeOps,
    ) -> Option<Result<Resp, AuthError>> {
        let r = match op {
            Req::AuthEnable(_) => self.enable(ops),
            Req::AuthDisable(_) => {
                if self.enabled {
                    self.enabled = false;
                    ops.push((ENABLED.to_vec(), Some(vec![0])));
                    self.bump(ops);
                }
                Ok(())
            }
            Req::Authenticate(a) => return Some(self.authenticate(a, index)),
            Req::UserAdd(a) => self.user_add(a, ops),
            Req::UserDelete(d) => self.user_delete(&d.name, ops),
            Req::UserChangePassword(c) => self.update_user(&c.name, ops, |u| {
                u.password = c.hashed_password.clone();
                true
            }),
            Req::UserGrantRole(g) => self.user_grant_role(&g.user, &g.role, ops),
            Req::UserRevokeRole(r) => self.user_revoke_role(&r.name, &r.role, ops),
            Req::RoleAdd(a) => self.role_add(&a.name, ops),
            Req::RoleDelete(d) => self.role_delete(&d.role, ops),
            Req::RoleGrantPermission(g) => match &g.perm {
                Some(p) => self.role_grant(&g.name, p, ops),
                None => Err(AuthError::PermissionNotGiven),
            },
            Req::RoleRevokePermission(r) => self.role_revoke(&r.role, &r.key, &r.range_end, ops),
            _ => return None,
        };
        Some(r.map(|()| {
            Resp::AuthChanged(internal::AuthChanged {
                auth_revision: self.revision,
            })
        }))
    }

    fn bump(&mut self, ops: &mut TreeOps) {
        self.revision += 1;
        ops.push((
            REVISION.to_vec(),
            Some(self.revision.to_be_bytes().to_vec()),
        ));
    }

    fn put_user(&mut self, name: &str, u: User, ops: &mut TreeOps) {
        ops.push((key(USER, name), Some(u.encode_to_vec())));
        self.users.insert(name.to_string(), u);
    }

    fn put_role(&mut self, name: &str, r: Role, ops: &mut TreeOps) {
        ops.push((key(ROLE, name), Some(r.encode_to_vec())));
        self.roles.insert(name.to_string(), r);
    }

    fn enable(&mut self, ops: &mut TreeOps) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        ops.push((ENABLED.to_vec(), Some(vec![1])));
        Ok(())
    }

    fn authenticate(&self, a: &internal::AuthAuthenticate, index: u64) -> Result<Resp, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        match self.users.get(&a.name) {
            None => return Err(AuthError::AuthFailed),
            Some(u) if u.options.as_ref().is_some_and(|o| o.no_password) => {
                return Err(AuthError::AuthFailed);
            }
            Some(_) => {}
        }
        // etcd's simple token: the proposer's random prefix and the entry's index, so every
        // member records the same token when it applies this entry.
        let simple_token = if a.simple_token_prefix.is_empty() {
            String::new()
        } else {
            format!("{}.{index}", a.simple_token_prefix)
        };
        Ok(Resp::Authenticated(internal::AuthAuthenticated {
            username: a.name.clone(),
            auth_revision: self.revision,
            simple_token,
        }))
    }

    fn user_add(&mut self, a: &internal::AuthUserAdd, ops: &mut TreeOps) -> Result<(), AuthError> {
        if a.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(&a.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let u = User {
            name: a.name.as_bytes().to_vec(),
            password: if a.no_password {
                Vec::new()
            } else {
                a.hashed_password.clone()
            },
            roles: Vec::new(),
            options: Some(UserAddOptions {
                no_password: a.no_password,
            }),
        };
        self.put_user(&a.name, u, ops);
        self.bump(ops);
        Ok(())
    }

    fn user_delete(&mut self, name: &str, ops: &mut TreeOps) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.users.remove(name).is_none() {
            return Err(AuthError::UserNotFound);
        }
        ops.push((key(USER, name), None));
        self.bump(ops);
        Ok(())
    }

    /// Changes user `name` with `f` (which says whether anything changed).
    fn update_user(
        &mut self,
        name: &str,
        ops: &mut TreeOps,
        f: impl FnOnce(&mut User) -> bool,
    ) -> Result<(), AuthError> {
        let mut u = self
            .users
            .get(name)
            .cloned()
            .ok_or(AuthError::UserNotFound)?;
        if f(&mut u) {
            self.put_user(name, u, ops);
            self.bump(ops);
        }
        Ok(())
    }

    fn user_grant_role(
        &mut self,
        user: &str,
        role: &str,
        ops: &mut TreeOps,
    ) -> Result<(), AuthError> {
        if !self.users.contains_key(user) {
            return Err(AuthError::UserNotFound);
        }
        // As etcd: the root role may be granted before it is created.
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        self.update_user(user, ops, |u| {
            match u.roles.binary_search_by(|r| r.as_str().cmp(role)) {
                Ok(_) => false,
                Err(at) => {
                    u.roles.insert(at, role.to_string());
                    true
                }
            }
        })
    }

    fn user_revoke_role(
        &mut self,
        user: &str,
        role: &str,
        ops: &mut TreeOps,
    ) -> Result<(), AuthError> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let u = self.users.get(user).ok_or(AuthError::UserNotFound)?;
        if !u.roles.iter().any(|r| r == role) {
            return Err(AuthError::RoleNotGranted);
        }
        self.update_user(user, ops, |u| {
            u.roles.retain(|r| r != role);
            true
        })
    }

    fn role_add(&mut self, name: &str, ops: &mut TreeOps) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        let r = Role {
            name: name.as_bytes().to_vec(),
            key_permission: Vec::new(),
        };
        self.put_role(name, r, ops);
        self.bump(ops);
        Ok(())
    }

    fn role_delete(&mut self, name: &str, ops: &mut TreeOps) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.roles.remove(name).is_none() {
            return Err(AuthError::RoleNotFound);
        }
        ops.push((key(ROLE, name), None));
        let holders: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == name))
            .map(|(n, _)| n.clone())
            .collect();
        for h in holders {
            if let Some(mut u) = self.users.get(&h).cloned() {
                u.roles.retain(|r| r != name);
                self.put_user(&h, u, ops);
            }
        }
        self.bump(ops);
        Ok(())
    }

    fn role_grant(
        &mut self,
        name: &str,
        p: &Permission,
        ops: &mut TreeOps,
    ) -> Result<(), AuthError> {
        let mut r = self
            .roles
            .get(name)
            .cloned()
            .ok_or(AuthError::RoleNotFound)?;
        match r
            .key_permission
            .iter_mut()
            .find(|q| q.key == p.key && q.range_end == p.range_end)
        {
            Some(q) => q.perm_type = p.perm_type,
            None => {
                r.key_permission.push(p.clone());
                // Stable: permissions on the same key keep their order, as etcd's sort.
                r.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        self.put_role(name, r, ops);
        self.bump(ops);
        Ok(())
    }

    fn role_revoke(
        &mut self,
        name: &str,
        key_: &[u8],
        range_end: &[u8],
        ops: &mut TreeOps,
    ) -> Result<(), AuthError> {
        let mut r = self
            .roles
            .get(name)
            .cloned()
            .ok_or(AuthError::RoleNotFound)?;
        let before = r.key_permission.len();
        r.key_permission
            .retain(|q| !(q.key == key_ && q.range_end == range_end));
        if r.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.put_role(name, r, ops);
        self.bump(ops);
        Ok(())
    }
}

/// Whether the user holds the root role (which has every permission).
pub fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::{
        AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
        AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserDeleteRequest,
        AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
    };

    fn run(s: &mut AuthState, op: Req) -> Result<TreeOps, AuthError> {
        let mut ops = TreeOps::new();
        s.apply(&op, 7, &mut ops).expect("an auth op")?;
        Ok(ops)
    }

    fn add_user(s: &mut AuthState, name: &str) {
        run(
            s,
            Req::UserAdd(internal::AuthUserAdd {
                name: name.into(),
                hashed_password: b"hash".to_vec(),
                no_password: false,
            }),
        )
        .unwrap();
    }

    fn grant(s: &mut AuthState, user: &str, role: &str) -> Result<TreeOps, AuthError> {
        run(
            s,
            Req::UserGrantRole(AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            }),
        )
    }

    fn enabled_with_root() -> AuthState {
        let mut s = AuthState::default();
        add_user(&mut s, ROOT);
        grant(&mut s, ROOT, ROOT).unwrap();
        run(&mut s, Req::AuthEnable(AuthEnableRequest {})).unwrap();
        s
    }

    fn reload(s: &AuthState, ops: &[TreeOps]) -> AuthState {
        let mut tree = BTreeMap::new();
        for (k, v) in ops.iter().flatten() {
            match v {
                Some(v) => tree.insert(k.clone(), v.clone()),
                None => tree.remove(k),
            };
        }
        let mut l = AuthState::default();
        for (k, v) in &tree {
            l.load_entry(k, v).unwrap();
        }
        assert_eq!(&l, s);
        l
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let mut s = AuthState::default();
        let enable = || Req::AuthEnable(AuthEnableRequest {});
        assert_eq!(run(&mut s, enable()), Err(AuthError::RootUserNotExist));
        add_user(&mut s, ROOT);
        assert_eq!(run(&mut s, enable()), Err(AuthError::RootRoleNotExist));
        assert!(!s.enabled());
        grant(&mut s, ROOT, ROOT).unwrap();
        run(&mut s, enable()).unwrap();
        assert!(s.enabled());
    }

    #[test]
    fn root_is_protected_while_enabled() {
        let mut s = enabled_with_root();
        let rev = s.revision();
        let revoke = Req::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: ROOT.into(),
            role: ROOT.into(),
        });
        assert_eq!(run(&mut s, revoke.clone()), Err(AuthError::InvalidAuthMgmt));
        let del = Req::UserDelete(AuthUserDeleteRequest { name: ROOT.into() });
        assert_eq!(run(&mut s, del), Err(AuthError::InvalidAuthMgmt));
        let del_role = Req::RoleDelete(AuthRoleDeleteRequest { role: ROOT.into() });
        assert_eq!(run(&mut s, del_role), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(s.revision(), rev, "refusals change nothing");
        run(&mut s, Req::AuthDisable(AuthDisableRequest {})).unwrap();
        assert_eq!(s.revision(), rev + 1);
        run(&mut s, revoke).unwrap();
    }

    #[test]
    fn permissions_follow_roles() {
        let mut s = enabled_with_root();
        let mut log = Vec::new();
        add_user(&mut s, "alice");
        log.push(
            run(
                &mut s,
                Req::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
            )
            .unwrap(),
        );
        log.push(grant(&mut s, "alice", "r").unwrap());
        log.push(
            run(
                &mut s,
                Req::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(Permission {
                        perm_type: Type::Read as i32,
                        key: b"a/".to_vec(),
                        range_end: b"a0".to_vec(),
                    }),
                }),
            )
            .unwrap(),
        );
        let alice = AuthInfo {
            username: "alice".into(),
            revision: s.revision(),
        };
        assert_eq!(s.check_op(&alice, b"a/x", b"", Type::Read), Ok(()));
        assert_eq!(
            s.check_op(&alice, b"a/x", b"", Type::Write),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check_admin(&alice), Err(AuthError::PermissionDenied));
        let stale = AuthInfo {
            revision: alice.revision - 1,
            ..alice.clone()
        };
        assert_eq!(
            s.check_op(&stale, b"a/x", b"", Type::Read),
            Err(AuthError::AuthOldRevision)
        );
        let nobody = AuthInfo::default();
        assert_eq!(
            s.check_op(&nobody, b"a/x", b"", Type::Read),
            Err(AuthError::UserEmpty)
        );
        let revoke = Req::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
        });
        log.push(run(&mut s, revoke.clone()).unwrap());
        assert_eq!(run(&mut s, revoke), Err(AuthError::PermissionNotGranted));
        let fresh = AuthInfo {
            username: "alice".into(),
            revision: s.revision(),
        };
        assert_eq!(
            s.check_op(&fresh, b"a/x", b"", Type::Read),
            Err(AuthError::PermissionDenied)
        );
        log.push(
            run(
                &mut s,
                Req::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
            )
            .unwrap(),
        );
        assert!(s.user("alice").unwrap().roles.is_empty());
        assert_eq!(grant(&mut s, "alice", "r"), Err(AuthError::RoleNotFound));
    }

    #[test]
    fn state_reloads_from_its_tree_writes() {
        let mut s = AuthState::default();
        let mut log = Vec::new();
        for op in [
            Req::UserAdd(internal::AuthUserAdd {
                name: ROOT.into(),
                hashed_password: b"h".to_vec(),
                no_password: false,
            }),
            Req::UserGrantRole(AuthUserGrantRoleRequest {
                user: ROOT.into(),
                role: ROOT.into(),
            }),
            Req::RoleAdd(AuthRoleAddRequest { name: "x".into() }),
            Req::AuthEnable(AuthEnableRequest {}),
            Req::UserAdd(internal::AuthUserAdd {
                name: "bob".into(),
                hashed_password: Vec::new(),
                no_password: true,
            }),
            Req::UserDelete(AuthUserDeleteRequest { name: "bob".into() }),
        ] {
            log.push(run(&mut s, op).unwrap());
        }
        reload(&s, &log);
    }

    #[test]
    fn authenticate_rules() {
        let mut s = AuthState::default();
        let auth = |name: &str| {
            Req::Authenticate(internal::AuthAuthenticate {
                name: name.into(),
                simple_token_prefix: "abc".into(),
            })
        };
        assert_eq!(run(&mut s, auth(ROOT)), Err(AuthError::AuthNotEnabled));
        let mut s2 = enabled_with_root();
        s = s2.clone();
        assert_eq!(run(&mut s, auth("ghost")), Err(AuthError::AuthFailed));
        let mut ops = TreeOps::new();
        match s2.apply(&auth(ROOT), 42, &mut ops) {
            Some(Ok(Resp::Authenticated(a))) => {
                assert_eq!(a.simple_token, "abc.42");
                assert_eq!(a.username, ROOT);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(ops.is_empty(), "authenticate writes nothing");
    }
}
