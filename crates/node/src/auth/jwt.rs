//! JWT tokens (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`), as etcd's
//! `auth/jwt.go`: a token is signed with the member's private key and carries the user name,
//! the auth revision it was issued at, and an expiry. Any member with the public key accepts it
//! without shared state, and a change of the auth state after issue makes it stale: the
//! revision in it is then older than the store's, which writes refuse (`revision of auth store
//! is old`) — clients re-authenticate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthInfo;
use super::error::AuthError;

/// etcd's default JWT lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// A JWT signer/verifier.
pub struct Jwt {
    alg: Algorithm,
    sign: Option<EncodingKey>,
    verify: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("alg", &self.alg)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A Go duration as etcd's flag takes it (`300s`, `5m`, `1h`, `1h30m`, `500ms`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {s:?}"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let d = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            u => return Err(format!("bad duration unit {u:?} in {s:?}")),
        };
        total += d;
        rest = &rest[unit..];
    }
    Ok(total)
}

impl Jwt {
    /// Parses `--auth-token`: `None` for `simple`, the signer for `jwt,…`.
    pub fn from_flag(flag: &str) -> Result<Option<Jwt>, String> {
        let mut parts = flag.split(',');
        match parts.next() {
            Some("simple") => return Ok(None),
            Some("jwt") => {}
            other => return Err(format!("--auth-token: unknown token type {other:?}")),
        }
        let (mut pub_key, mut priv_key, mut method, mut ttl) = (None, None, None, DEFAULT_TTL);
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("--auth-token: invalid option {opt:?}"))?;
            match k {
                "pub-key" => pub_key = Some(v.to_string()),
                "priv-key" => priv_key = Some(v.to_string()),
                "sign-method" => method = Some(v.to_string()),
                "ttl" => ttl = parse_duration(v).map_err(|e| format!("--auth-token: {e}"))?,
                _ => return Err(format!("--auth-token: unknown option {k:?}")),
            }
        }
        let method = method.ok_or("--auth-token: jwt needs sign-method")?;
        let alg: Algorithm = method
            .parse()
            .map_err(|_| format!("--auth-token: unsupported sign-method {method:?}"))?;
        let read =
            |p: &str| std::fs::read(p).map_err(|e| format!("--auth-token: reading {p}: {e}"));
        let bad = |e: jsonwebtoken::errors::Error| format!("--auth-token: bad key: {e}");
        let (sign, verify) = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = read(
                    priv_key
                        .as_deref()
                        .ok_or("--auth-token: jwt needs priv-key")?,
                )?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            _ => {
                let public = read(
                    pub_key
                        .as_deref()
                        .ok_or("--auth-token: jwt needs pub-key")?,
                )?;
                let private = priv_key.as_deref().map(read).transpose()?;
                match alg {
                    Algorithm::ES256 | Algorithm::ES384 => (
                        private
                            .map(|k| EncodingKey::from_ec_pem(&k))
                            .transpose()
                            .map_err(bad)?,
                        DecodingKey::from_ec_pem(&public).map_err(bad)?,
                    ),
                    Algorithm::EdDSA => (
                        private
                            .map(|k| EncodingKey::from_ed_pem(&k))
                            .transpose()
                            .map_err(bad)?,
                        DecodingKey::from_ed_pem(&public).map_err(bad)?,
                    ),
                    _ => (
                        private
                            .map(|k| EncodingKey::from_rsa_pem(&k))
                            .transpose()
                            .map_err(bad)?,
                        DecodingKey::from_rsa_pem(&public).map_err(bad)?,
                    ),
                }
            }
        };
        Ok(Some(Jwt {
            alg,
            sign,
            verify,
            ttl,
        }))
    }

    /// A token for `username` at auth revision `revision`. A member with only the public key
    /// verifies but cannot issue (etcd's `ErrVerifyOnly`).
    pub fn sign(&self, username: &str, revision: u64) -> Result<String, tonic::Status> {
        let key = self.sign.as_ref().ok_or_else(|| {
            tonic::Status::unknown("auth: token signing attempted with verify-only key")
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            username: username.to_string(),
            revision,
            exp: (now + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.alg), &claims, key)
            .map_err(|e| tonic::Status::internal(format!("etcdserver: signing a token: {e}")))
    }

    /// The identity a valid, unexpired token carries.
    pub fn verify(&self, token: &str) -> Result<AuthInfo, AuthError> {
        let mut v = Validation::new(self.alg);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verify, &v)
            .map_err(|_| AuthError::InvalidAuthToken)?;
        Ok(AuthInfo {
            username: data.claims.username,
            revision: data.claims.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn hmac_tokens_round_trip_and_forgeries_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("secret");
        std::fs::write(&key, b"0123456789abcdef0123456789abcdef").expect("write key");
        let flag = format!("jwt,priv-key={},sign-method=HS256,ttl=1m", key.display());
        let jwt = Jwt::from_flag(&flag).expect("flag").expect("jwt");
        let t = jwt.sign("alice", 7).expect("sign");
        assert_eq!(
            jwt.verify(&t),
            Ok(AuthInfo {
                username: "alice".into(),
                revision: 7
            })
        );
        let mut forged = t.clone();
        forged.pop();
        assert_eq!(jwt.verify(&forged), Err(AuthError::InvalidAuthToken));
        assert_eq!(jwt.verify("abc.12"), Err(AuthError::InvalidAuthToken));
        assert!(Jwt::from_flag("simple").expect("simple").is_none());
        for bad in ["jwt", "jwt,sign-method=XX1", "jwt,foo", "opaque"] {
            assert!(Jwt::from_flag(bad).is_err(), "{bad}");
        }
    }
}
