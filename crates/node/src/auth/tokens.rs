//! [`Tokens`]: the tokens this member accepts, as etcd's simple token provider
//! (`auth/simple_token.go`).
//!
//! A simple token is `<16 random letters>.<raft index>`: the serving member draws the letters
//! before proposing Authenticate, and every member that applies the entry records the token
//! for the user ([`Tokens::observe_applied`]) — so a token issued through one member works on
//! any other once it has applied that index (the caller waits for it, as etcd's index
//! waiter). Tokens live in memory only, expire after `--auth-token-ttl` seconds without use,
//! and are dropped when their user is deleted or changes password, or auth is disabled.
//! Nothing here is replicated state: the TTL clock is each member's own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_proto::internal::{self, request::Op as Req, response::Op as Resp};
use rand::Rng as _;

use super::jwt::Jwt;

/// Length of the random part of a simple token (etcd's `defaultSimpleTokenLength`).
const PREFIX_LEN: usize = 16;

struct Entry {
    user: String,
    deadline: Instant,
}

/// The simple tokens this member knows, or its JWT signer when it issues JWTs instead.
pub struct Tokens {
    ttl: Duration,
    table: Mutex<HashMap<String, Entry>>,
    jwt: Option<Jwt>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new(Duration::from_secs(300))
    }
}

impl Tokens {
    /// An empty table whose tokens live `ttl` after their last use.
    pub fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            table: Mutex::new(HashMap::new()),
            jwt: None,
        }
    }

    /// Issue and accept JWTs (`--auth-token jwt,…`) instead of simple tokens.
    pub fn with_jwt(mut self, jwt: Option<Jwt>) -> Self {
        self.jwt = jwt;
        self
    }

    /// The JWT signer, when this member uses JWTs.
    pub fn jwt(&self) -> Option<&Jwt> {
        self.jwt.as_ref()
    }

    /// A fresh random token prefix.
    pub fn new_prefix() -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut rng = rand::rng();
        (0..PREFIX_LEN)
            .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
            .collect()
    }

    /// The Raft index a simple token was issued at, if it has the shape of one.
    pub fn index_of(token: &str) -> Option<u64> {
        let (prefix, index) = token.split_once('.')?;
        if prefix.is_empty() || index.contains('.') {
            return None;
        }
        index.parse().ok()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of a cache; the map
        // is still a map.
        let mut g = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// The user of `token`, renewing its TTL; `None` if unknown or expired.
    pub fn lookup(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let ttl = self.ttl;
        self.with(|t| match t.get_mut(token) {
            Some(e) if e.deadline > now => {
                e.deadline = now + ttl;
                Some(e.user.clone())
            }
            Some(_) => {
                t.remove(token);
                None
            }
            None => None,
        })
    }

    fn record(&self, token: String, user: String) {
        let now = Instant::now();
        let deadline = now + self.ttl;
        self.with(|t| {
            t.retain(|_, e| e.deadline > now);
            t.insert(token, Entry { user, deadline });
        });
    }

    /// Keeps the table in step with an applied entry: records issued tokens, forgets those of
    /// deleted users, changed passwords, and all of them when auth is disabled.
    pub fn observe_applied(&self, req: &internal::Request, resp: &internal::Response) {
        let (Some(op), Some(out)) = (&req.op, &resp.op) else {
            return;
        };
        if matches!(out, Resp::Error(_)) {
            return;
        }
        match (op, out) {
            (Req::Authenticate(_), Resp::Authenticated(a)) if !a.simple_token.is_empty() => {
                self.record(a.simple_token.clone(), a.username.clone());
            }
            (Req::UserDelete(d), _) => self.invalidate_user(&d.name),
            (Req::UserChangePassword(c), _) => self.invalidate_user(&c.name),
            (Req::AuthDisable(_), _) => self.with(|t| t.clear()),
            _ => {}
        }
    }

    fn invalidate_user(&self, user: &str) {
        self.with(|t| t.retain(|_, e| e.user != user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticated(user: &str, token: &str) -> (internal::Request, internal::Response) {
        (
            internal::Request {
                id: 1,
                header: None,
                op: Some(Req::Authenticate(internal::AuthAuthenticate {
                    name: user.into(),
                    simple_token_prefix: "x".into(),
                })),
            },
            internal::Response {
                op: Some(Resp::Authenticated(internal::AuthAuthenticated {
                    username: user.into(),
                    auth_revision: 3,
                    simple_token: token.into(),
                })),
            },
        )
    }

    #[test]
    fn tokens_are_recorded_and_invalidated() {
        let t = Tokens::default();
        let (req, resp) = authenticated("alice", "abc.7");
        t.observe_applied(&req, &resp);
        assert_eq!(t.lookup("abc.7").as_deref(), Some("alice"));
        assert_eq!(t.lookup("abc.8"), None);
        let del = internal::Request {
            id: 2,
            header: None,
            op: Some(Req::UserDelete(
                flotilla_proto::etcdserverpb::AuthUserDeleteRequest {
                    name: "alice".into(),
                },
            )),
        };
        let ok = internal::Response {
            op: Some(Resp::AuthChanged(internal::AuthChanged {
                auth_revision: 4,
            })),
        };
        t.observe_applied(&del, &ok);
        assert_eq!(t.lookup("abc.7"), None);
    }

    #[test]
    fn tokens_expire() {
        let t = Tokens::new(Duration::from_millis(0));
        let (req, resp) = authenticated("bob", "abc.9");
        t.observe_applied(&req, &resp);
        assert_eq!(t.lookup("abc.9"), None);
    }

    #[test]
    fn token_shape() {
        let p = Tokens::new_prefix();
        assert_eq!(p.len(), PREFIX_LEN);
        assert!(p.chars().all(|c| c.is_ascii_alphabetic()));
        assert_eq!(Tokens::index_of(&format!("{p}.12")), Some(12));
        for bad in ["", "abc", "abc.", ".12", "a.b.12", "abc.-1", "abc.x"] {
            assert_eq!(Tokens::index_of(bad), None, "{bad}");
        }
    }
}
