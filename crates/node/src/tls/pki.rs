//! Generating certificates: a CA and the certificates it signs, for `flotilla dev --tls` and
//! the tests (which also rotate certificates and build a rogue CA with it).
//!
//! ECDSA P-256 keys (rcgen's default, which every TLS stack here speaks), random serial
//! numbers (so a re-issued certificate is told apart by its serial) and explicit extended key
//! usages: server certificates `serverAuth`, client certificates `clientAuth`, and peer
//! certificates both, since a member presents its peer certificate when it dials and serves
//! it on the peer port.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};

use super::TlsError;

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server (the client port).
    Server,
    /// A client (etcdctl, the operator).
    Client,
    /// A member's peer certificate: server and client.
    Peer,
}

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (the key readable by its owner only).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), TlsError> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert, key))
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |cause| TlsError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(contents).map_err(io)
}

/// A certificate authority held in memory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn random_serial() -> SerialNumber {
    // 63 bits keep the DER integer positive without a padding byte games.
    SerialNumber::from(rand::random::<u64>() >> 1)
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Ca, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().map_err(gen_err)?;
        Ok(Ca {
            issuer: CertifiedIssuer::self_signed(params, key).map_err(gen_err)?,
        })
    }

    /// The CA certificate (what `--trusted-ca-file` names).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `cn`, valid for the host names and IP addresses in `sans`.
    pub fn issue(&self, cn: &str, sans: &[&str], usage: Usage) -> Result<Issued, TlsError> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).map_err(gen_err)?;
        params.distinguished_name = named(cn);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The files of a dev cluster's PKI, under one directory.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The directory.
    pub dir: PathBuf,
}

/// The names the dev PKI uses for loopback members.
pub const LOOPBACK_SANS: &[&str] = &["127.0.0.1", "localhost"];

impl DevPki {
    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The client certificate (CN=root) and key, for etcdctl.
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.crt"), self.dir.join("client.key"))
    }
    /// Member `name`'s client-port certificate and key.
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }
    /// Member `name`'s peer certificate and key.
    pub fn peer(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}-peer.crt")),
            self.dir.join(format!("{name}-peer.key")),
        )
    }

    /// Every file the members and etcdctl need.
    fn files(&self, members: &[String]) -> Vec<PathBuf> {
        let (cc, ck) = self.client();
        let mut files = vec![self.ca(), cc, ck];
        for m in members {
            let (c, k) = self.server(m);
            let (pc, pk) = self.peer(m);
            files.extend([c, k, pc, pk]);
        }
        files
    }

    /// Makes (or, when every file is already there, keeps) a CA, a client certificate with
    /// CN=root, and for each member a server and a peer certificate for loopback. Keeping
    /// existing files means a dev cluster restarted on the same `--data-dir` keeps working
    /// with the `etcdctl` line printed the first time.
    pub fn ensure(dir: &Path, members: &[String]) -> Result<DevPki, TlsError> {
        let pki = DevPki {
            dir: dir.to_path_buf(),
        };
        if pki.files(members).iter().all(|f| f.exists()) {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir).map_err(|cause| TlsError::Read {
            path: dir.to_path_buf(),
            cause,
        })?;
        let ca = Ca::new("flotilla dev CA")?;
        write_file(&pki.ca(), ca.cert_pem().as_bytes(), 0o644)?;
        ca.issue("root", &[], Usage::Client)?.write(dir, "client")?;
        for m in members {
            ca.issue(m, LOOPBACK_SANS, Usage::Server)?.write(dir, m)?;
            ca.issue(m, LOOPBACK_SANS, Usage::Peer)?
                .write(dir, &format!("{m}-peer"))?;
        }
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_written_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let members = vec!["n1".to_string(), "n2".to_string()];
        let pki = DevPki::ensure(dir.path(), &members).expect("pki");
        let ca = std::fs::read(pki.ca()).expect("ca");
        for f in pki.files(&members) {
            assert!(f.exists(), "{} written", f.display());
        }
        let again = DevPki::ensure(dir.path(), &members).expect("again");
        assert_eq!(
            std::fs::read(again.ca()).expect("ca"),
            ca,
            "existing files are kept"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.client().1)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys are private");
    }
}
