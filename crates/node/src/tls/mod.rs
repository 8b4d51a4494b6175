//! TLS on the client and peer ports, certificates reloaded without a restart, and who is on the
//! other end of a connection.
//!
//! What this module owns, and why it is one place:
//! - [`flags`]: etcd's flag names (`--cert-file`, `--peer-client-cert-auth`, …) and the
//!   combinations that are refused before anything touches the data dir.
//! - [`config`]: rustls server and client configurations built from PEM bytes — the only place
//!   that decides protocol versions, ALPN and how client certificates are verified.
//! - [`reload`]: Kubernetes updates a mounted Secret by swapping a `..data` symlink, so neither
//!   mtime nor inotify on the file path is reliable; the files' *contents* are polled and a
//!   changed set is rebuilt and swapped in whole. Invalid files are refused and the old
//!   configuration keeps serving. Each new connection (accepted or dialled) takes whatever
//!   configuration is current, so a reload needs no restart and breaks no open connection.
//! - [`accept`]: the accepting side — a stream of connections (TLS handshakes run concurrently,
//!   so one slow client cannot hold up the accept loop) that tonic serves with
//!   `serve_with_incoming_shutdown`; every connection carries a [`accept::ConnInfo`] (which
//!   port, its policy, the verified client certificate) into each request's extensions.
//! - [`dial`]: the dialling side — tonic channels to `https://` URLs through a rustls
//!   connector that presents this member's certificate and verifies the server against the
//!   configured CA.
//! - [`cert`]: reading a certificate's common name and serial (the CN is the auth user under
//!   `--client-cert-auth`, as in etcd).
//! - [`pki`]: generating a CA and certificates (`flotilla dev --tls` and the tests).
//!
//! [`MemberTls`] ties them together for one member: the acceptors of its two ports, the
//! dialers for its outgoing calls, and the files to watch.

pub mod accept;
pub mod cert;
pub mod config;
pub mod dial;
pub mod flags;
pub mod pki;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use accept::{Acceptor, ClientPortPolicy, ConnInfo, Port};
pub use dial::Dialer;
pub use flags::TlsFlags;

use self::config::{ClientAuth, ClientSpec, ServerSpec};
use self::reload::{Reloadable, Source, Watcher};

/// Why TLS could not be set up, or a reloaded file set was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A flag combination that cannot work.
    #[error("{0}")]
    Flags(String),
    /// A file could not be read.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a `source`: the WARN of a refused reload prints the
        /// message alone).
        cause: std::io::Error,
    },
    /// A file does not hold what it should (no certificate, no key, bad PEM).
    #[error("{0}")]
    Pem(String),
    /// rustls refused the material (a key that does not match its certificate, say).
    #[error("{what}: {cause}")]
    Rustls {
        /// What was being built.
        what: &'static str,
        /// rustls's reason.
        cause: rustls::Error,
    },
    /// A CA file whose certificates cannot verify clients.
    #[error("{0}")]
    Verifier(String),
    /// A dialled URL needs TLS that is not configured.
    #[error("{0}")]
    Dial(String),
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(String),
}

/// The ALPN protocols the client port offers: gRPC needs h2, the JSON gateway speaks either.
const CLIENT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// The peer port speaks gRPC only.
const PEER_ALPN: &[&[u8]] = &[b"h2"];

/// One member's TLS: how each port accepts, how it dials, and what to watch for rotation.
pub struct MemberTls {
    /// The client port's acceptor (plain TCP when `--cert-file` is not set).
    pub client: Acceptor,
    /// The peer port's acceptor (plain TCP when `--peer-cert-file` is not set).
    pub peer: Acceptor,
    /// Calls to other members' peer URLs: Raft, forwarding, Admin.
    pub peer_dialer: Dialer,
    /// Calls to client URLs made by the member itself (`--join`, HashKV of the corruption
    /// check): trusts `--trusted-ca-file` (else `--peer-trusted-ca-file`) and presents the
    /// peer certificate, since operator-managed TLS signs every certificate with one CA.
    pub client_dialer: Dialer,
    watcher: Watcher,
    interval: Duration,
}

impl MemberTls {
    /// Reads every configured file and builds the configurations; any problem is an error
    /// here, at start-up, rather than a port that refuses every connection later.
    pub fn load(flags: &TlsFlags) -> Result<MemberTls, TlsError> {
        let f = flags.normalized();
        f.validate()?;
        let mut watcher = Watcher::default();

        let client_policy = ClientPortPolicy {
            verifies_client_certs: f.cert_file.is_some() && f.trusted_ca_file.is_some(),
            cert_names_user: f.client_cert_auth,
        };
        let client_tls = match (&f.cert_file, &f.key_file) {
            (Some(cert), Some(key)) => {
                let auth = match (&f.trusted_ca_file, f.client_cert_auth) {
                    (None, _) => ClientAuth::None,
                    (Some(_), false) => ClientAuth::Optional,
                    (Some(_), true) => ClientAuth::Required,
                };
                let mut files = vec![cert.clone(), key.clone()];
                files.extend(f.trusted_ca_file.clone());
                Some(server_source(
                    &mut watcher,
                    "client port certificate",
                    files,
                    auth,
                    CLIENT_ALPN,
                )?)
            }
            _ => None,
        };
        let peer_tls = match (&f.peer_cert_file, &f.peer_key_file, &f.peer_trusted_ca_file) {
            (Some(cert), Some(key), Some(ca)) => Some(server_source(
                &mut watcher,
                "peer port certificate",
                vec![cert.clone(), key.clone(), ca.clone()],
                // Every caller of the peer port is a member, and every member presents its
                // peer certificate: there is no legitimate caller without one.
                ClientAuth::Required,
                PEER_ALPN,
            )?),
            _ => None,
        };
        let peer_identity = f.peer_cert_file.clone().zip(f.peer_key_file.clone());
        let peer_dialer = match &f.peer_trusted_ca_file {
            Some(ca) => client_source(
                &mut watcher,
                "peer client certificate",
                ca,
                peer_identity.as_ref(),
            )?,
            None => Dialer::plain(),
        };
        let client_dialer = match f
            .trusted_ca_file
            .as_ref()
            .or(f.peer_trusted_ca_file.as_ref())
        {
            Some(ca) => client_source(
                &mut watcher,
                "client-port client certificate",
                ca,
                peer_identity.as_ref(),
            )?,
            None => Dialer::plain(),
        };
        Ok(MemberTls {
            client: Acceptor::new(Port::Client(client_policy), client_tls),
            peer: Acceptor::new(Port::Peer, peer_tls),
            peer_dialer,
            client_dialer,
            watcher,
            interval: f.tls_reload_interval,
        })
    }

    /// Polls the files until `stop` resolves (see [`reload`]). Nothing to do without TLS.
    pub async fn watch(self: Arc<Self>, stop: impl Future<Output = ()>) {
        if self.watcher.is_empty() {
            return stop.await;
        }
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            // File reads and PEM parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || me.watcher.poll()).await;
        }
    }
}

/// A reloadable server configuration, registered with `watcher`.
fn server_source(
    watcher: &mut Watcher,
    what: &'static str,
    files: Vec<PathBuf>,
    auth: ClientAuth,
    alpn: &'static [&'static [u8]],
) -> Result<Arc<Reloadable<rustls::ServerConfig>>, TlsError> {
    let build = move |contents: &[Vec<u8>]| {
        ServerSpec {
            cert: &contents[0],
            key: &contents[1],
            client_ca: contents.get(2).map(Vec::as_slice),
            client_auth: auth,
            alpn,
        }
        .build()
    };
    reloading(watcher, what, files, build)
}

/// A dialer whose client configuration reloads, registered with `watcher`.
fn client_source(
    watcher: &mut Watcher,
    what: &'static str,
    ca: &Path,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<Dialer, TlsError> {
    let mut files = vec![ca.to_path_buf()];
    if let Some((cert, key)) = identity {
        files.push(cert.clone());
        files.push(key.clone());
    }
    let build = |contents: &[Vec<u8>]| {
        ClientSpec {
            ca: &contents[0],
            identity: contents
                .get(1)
                .zip(contents.get(2))
                .map(|(c, k)| (c.as_slice(), k.as_slice())),
        }
        .build()
    };
    Ok(Dialer::tls(reloading(watcher, what, files, build)?))
}

/// Builds a value from `files` now, and registers with `watcher` a source that builds it again
/// whenever they change (a build that fails keeps the value in use).
fn reloading<T: Send + Sync + 'static>(
    watcher: &mut Watcher,
    what: &'static str,
    files: Vec<PathBuf>,
    build: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync + 'static,
) -> Result<Arc<Reloadable<T>>, TlsError> {
    let contents = reload::read_all(&files)?;
    let holder = Arc::new(Reloadable::new(build(&contents)?));
    let target = holder.clone();
    watcher.add(Source::new(what, files, contents, move |c| {
        target.store(build(c)?);
        Ok(())
    }));
    Ok(holder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::{Ca, Usage};

    /// Whether the server side of an in-memory handshake accepts the client.
    async fn accepts(server: Arc<rustls::ServerConfig>, client: rustls::ClientConfig) -> bool {
        let (a, b) = tokio::io::duplex(64 << 10);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let (s, _) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(server).accept(a),
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, b)
        );
        s.is_ok()
    }

    #[tokio::test]
    async fn a_new_client_ca_applies_to_the_next_handshake() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old_ca, new_ca) = (Ca::new("old").expect("ca"), Ca::new("new").expect("ca"));
        let server = old_ca
            .issue("m1", &["127.0.0.1"], Usage::Server)
            .expect("server");
        let (cert, key) = server.write(dir.path(), "m1").expect("write");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, old_ca.cert_pem()).expect("write");
        let tls = MemberTls::load(&TlsFlags {
            cert_file: Some(cert),
            key_file: Some(key),
            trusted_ca_file: Some(ca_file.clone()),
            client_cert_auth: true,
            ..TlsFlags::default()
        })
        .expect("load");
        let client_of = |ca: &Ca| {
            let c = ca.issue("alice", &[], Usage::Client).expect("client");
            ClientSpec {
                ca: old_ca.cert_pem().as_bytes(),
                identity: Some((c.cert_pem.as_bytes(), c.key_pem.as_bytes())),
            }
            .build()
            .expect("client config")
        };
        let current = || tls.client.current().expect("TLS");
        assert!(accepts(current(), client_of(&old_ca)).await);
        assert!(!accepts(current(), client_of(&new_ca)).await);

        std::fs::write(&ca_file, new_ca.cert_pem()).expect("write");
        // The client port's configuration, and the client dialer's trust (the same file).
        let polled = tls.watcher.poll();
        assert_eq!(polled, vec![reload::Polled::Reloaded; 2]);
        assert!(accepts(current(), client_of(&new_ca)).await);
        assert!(!accepts(current(), client_of(&old_ca)).await);
    }
}
