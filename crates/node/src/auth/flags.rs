//! The member's auth flags, named as etcd's: `--auth-token`, `--auth-token-ttl`,
//! `--bcrypt-cost`. Flattened into `NodeConfig` so the auth options stay in one place.

use std::time::Duration;

use clap::Args;

/// etcd's bcrypt cost bounds (`golang.org/x/crypto/bcrypt` MinCost/MaxCost).
const MIN_BCRYPT_COST: u32 = 4;
const MAX_BCRYPT_COST: u32 = 31;

/// Auth options of a member.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct AuthFlags {
    /// Token type: `simple` (random, kept in every member's memory) or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256|ES256|…[,ttl=5m]` (signed).
    #[arg(long, env = "FLOTILLA_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds a simple token stays valid after its last use.
    #[arg(long, env = "FLOTILLA_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt cost of stored password hashes (4..=31; etcd's default 10).
    #[arg(long, env = "FLOTILLA_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
}

impl Default for AuthFlags {
    fn default() -> Self {
        AuthFlags {
            auth_token: "simple".into(),
            auth_token_ttl: 300,
            bcrypt_cost: 10,
        }
    }
}

impl AuthFlags {
    /// The simple tokens' TTL.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.auth_token_ttl.max(1))
    }

    /// The bcrypt cost; out-of-range values fall back to the default, as etcd does.
    pub fn bcrypt_cost(&self) -> u32 {
        if (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&self.bcrypt_cost) {
            self.bcrypt_cost
        } else {
            10
        }
    }
}
