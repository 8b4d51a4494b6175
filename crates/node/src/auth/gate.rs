//! Who may change the cluster through the client port: the admin API's mutating calls
//! (`Admin.AddLearner`, `PromoteLearner`, `RemoveMember`, `TransferLeadership`), etcd's
//! `Cluster.MemberAdd/Remove/Update/Promote` and `Maintenance.MoveLeader` (the same transfer
//! under etcd's name: leaving it open would bypass the rule).
//!
//! The rule, per port (the connection says which, `tls::ConnInfo`):
//! - **Peer port**: allowed. Its callers are members — with peer TLS every connection proved a
//!   certificate from `--peer-trusted-ca-file` in the handshake; without it the peer port is
//!   as open as the Raft messages it carries, which is why it belongs on a private network.
//! - **Client port, auth enabled**: the root user (a token of a root-role user, or — under
//!   `--client-cert-auth`, where a certificate *is* its CN's user, as in etcd — a certificate
//!   whose CN is such a user); or, without `--client-cert-auth`, any client certificate
//!   verified against `--trusted-ca-file`: there ordinary clients need only the CA, and a
//!   certificate is the operator's credential.
//! - **Client port, auth disabled**: a client certificate verified against
//!   `--trusted-ca-file`; or anyone when no certificate can be verified (no TLS with a trusted
//!   CA) — a plain development cluster stays open as etcd's is without auth (`node.rs` warns
//!   at start).
//!
//! Refusals are PERMISSION_DENIED and change nothing. `Admin.Status` and `MemberList` stay
//! open: they only read, the operator's probes and `--join` need them first, and etcd's
//! `member list` is open to any client too. A request with no connection information (an
//! in-process call such as the JSON gateway's) is judged as a client-port request that
//! presented no certificate.

use tonic::Status;
use tonic::metadata::MetadataMap;

use super::{AuthError, identity, lock_err};
use crate::member::handle::NodeHandle;
use crate::tls::{ClientPortPolicy, ConnInfo, Port};

/// The refusal without auth: what is missing, since etcd has no words for it.
const NEEDS_IDENTITY: &str = "etcdserver: permission denied: changing the cluster through the \
     client port needs a client certificate verified by the member's --trusted-ca-file, or \
     the root user";

/// What the gate knows about a client-port caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The client port's policy.
    pub policy: ClientPortPolicy,
    /// The connection presented a client certificate that the handshake verified.
    pub verified_cert: bool,
    /// Auth is enabled.
    pub auth_enabled: bool,
    /// The caller's identity (token, or certificate CN under `--client-cert-auth`) holds the
    /// root role. Only meaningful with auth enabled.
    pub root: bool,
}

/// The rule of the module doc, for a client-port caller.
pub fn allowed(c: Caller) -> bool {
    if !c.auth_enabled {
        return c.verified_cert || !c.policy.verifies_client_certs;
    }
    // A certificate that is not a user identity is the operator's credential.
    c.root || (c.verified_cert && !c.policy.cert_names_user)
}

/// Checks that the caller of a cluster-changing request may make it (see the module doc).
pub async fn check(
    node: &NodeHandle,
    md: &MetadataMap,
    ext: &http::Extensions,
) -> Result<(), Status> {
    let conn = ext.get::<ConnInfo>();
    let policy = match conn.map(|c| c.port) {
        Some(Port::Peer) => return Ok(()),
        Some(Port::Client(p)) => p,
        None => ClientPortPolicy {
            verifies_client_certs: true,
            cert_names_user: false,
        },
    };
    let mut caller = Caller {
        policy,
        verified_cert: policy.verifies_client_certs
            && conn.is_some_and(|c| c.client_cert.is_some()),
        auth_enabled: node
            .sm
            .read()
            .map_err(|_| lock_err())?
            .store()
            .auth()
            .enabled(),
        root: false,
    };
    if !caller.auth_enabled {
        return if allowed(caller) {
            Ok(())
        } else {
            Err(Status::permission_denied(NEEDS_IDENTITY))
        };
    }
    // An invalid token is refused as such, unless a certificate already suffices.
    let who = match identity(node, md).await {
        Ok(who) => who.unwrap_or_default(),
        Err(e) if !allowed(caller) => return Err(e),
        Err(_) => return Ok(()),
    };
    caller.root = node
        .sm
        .read()
        .map_err(|_| lock_err())?
        .store()
        .auth()
        .check_admin(&who)
        .is_ok();
    if allowed(caller) {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(verifies: bool, names_user: bool, cert: bool, auth: bool, root: bool) -> bool {
        allowed(Caller {
            policy: ClientPortPolicy {
                verifies_client_certs: verifies,
                cert_names_user: names_user,
            },
            verified_cert: cert,
            auth_enabled: auth,
            root,
        })
    }

    #[test]
    fn the_admin_rule_table() {
        // No trusted CA, auth off: the open development cluster.
        assert!(caller(false, false, false, false, false));
        // Trusted CA, auth off: a verified certificate, nothing else.
        assert!(caller(true, false, true, false, false));
        assert!(!caller(true, false, false, false, false));
        assert!(
            caller(true, true, true, false, false),
            "auth off: any verified certificate"
        );
        // Auth on: root, by token or (under --client-cert-auth) by certificate CN.
        assert!(caller(false, false, false, true, true));
        assert!(!caller(false, false, false, true, false));
        assert!(caller(true, true, true, true, true));
        assert!(
            !caller(true, true, true, true, false),
            "a certificate is its CN's user"
        );
        // Auth on without --client-cert-auth: a verified certificate is the operator's.
        assert!(caller(true, false, true, true, false));
        assert!(!caller(true, false, false, true, false));
    }
}
