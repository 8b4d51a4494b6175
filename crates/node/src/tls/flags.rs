//! The member's TLS flags, named as etcd's (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth` and their `--peer-` twins), each with a `FLOTILLA_*` environment
//! fallback. Flattened into `NodeConfig`; [`TlsFlags::validate`] refuses the combinations that
//! cannot work, before the data dir is touched.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::TlsError;

/// TLS options of a member. Their variables may always be set: an empty path is unset, and the
/// switches read `""`, `0`, `no`, `off` and `false` as off, anything else as on.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct TlsFlags {
    /// Certificate (PEM, chain allowed) the client port serves; with it the client port
    /// speaks TLS only (gRPC and the JSON gateway) and default client URLs are https://.
    #[arg(long, env = "FLOTILLA_CERT_FILE", value_parser = any_path)]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "FLOTILLA_KEY_FILE", value_parser = any_path)]
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates are verified against. With it the client
    /// port asks for a client certificate (optional unless --client-cert-auth); a verified one
    /// may call the admin API. Also the CA trusted when this member dials https client URLs
    /// (--join).
    #[arg(long, env = "FLOTILLA_TRUSTED_CA_FILE", value_parser = any_path)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate verified by --trusted-ca-file on the client port; with
    /// auth enabled, a request without a token is the user named by the certificate's CN.
    #[arg(long, env = "FLOTILLA_CLIENT_CERT_AUTH", value_parser = clap::builder::FalseyValueParser::new())]
    pub client_cert_auth: bool,
    /// Certificate (PEM) of the peer port, also presented when this member dials its peers
    /// (and other members' client ports). With it the peer port speaks mutual TLS and default
    /// peer URLs are https://.
    #[arg(long, env = "FLOTILLA_PEER_CERT_FILE", value_parser = any_path)]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert-file.
    #[arg(long, env = "FLOTILLA_PEER_KEY_FILE", value_parser = any_path)]
    pub peer_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that peers' certificates are verified against, both ways.
    #[arg(long, env = "FLOTILLA_PEER_TRUSTED_CA_FILE", value_parser = any_path)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// etcd's flag, accepted for compatibility: with peer TLS, the peer port always requires a
    /// client certificate verified by --peer-trusted-ca-file.
    #[arg(long, env = "FLOTILLA_PEER_CLIENT_CERT_AUTH", value_parser = clap::builder::FalseyValueParser::new())]
    pub peer_client_cert_auth: bool,
    /// How often the certificate files are read again; changed contents are loaded without a
    /// restart (a duration such as `5s`).
    #[arg(
        long,
        env = "FLOTILLA_TLS_RELOAD_INTERVAL",
        default_value = "5s",
        value_parser = crate::cli::parse_duration
    )]
    pub tls_reload_interval: Duration,
}

impl Default for TlsFlags {
    fn default() -> Self {
        TlsFlags {
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            client_cert_auth: false,
            peer_cert_file: None,
            peer_key_file: None,
            peer_trusted_ca_file: None,
            peer_client_cert_auth: false,
            tls_reload_interval: Duration::from_secs(5),
        }
    }
}

/// Any path, the empty one included (clap's own path parser refuses it): an empty path — an
/// environment variable set to "" — means "not set", so a pod template can always name the
/// variable.
fn any_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

/// An empty path means "not set" (see [`any_path`]).
fn set(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.clone().filter(|p| !p.as_os_str().is_empty())
}

impl TlsFlags {
    /// The flags with empty paths treated as absent.
    pub fn normalized(&self) -> TlsFlags {
        TlsFlags {
            cert_file: set(&self.cert_file),
            key_file: set(&self.key_file),
            trusted_ca_file: set(&self.trusted_ca_file),
            peer_cert_file: set(&self.peer_cert_file),
            peer_key_file: set(&self.peer_key_file),
            peer_trusted_ca_file: set(&self.peer_trusted_ca_file),
            ..self.clone()
        }
    }

    /// Whether the client port serves TLS.
    pub fn client_tls(&self) -> bool {
        set(&self.cert_file).is_some()
    }

    /// Whether the peer port serves (mutual) TLS.
    pub fn peer_tls(&self) -> bool {
        set(&self.peer_cert_file).is_some()
    }

    /// Refuses combinations that cannot work.
    pub fn validate(&self) -> Result<(), TlsError> {
        let f = self.normalized();
        let refuse = |m: &str| Err(TlsError::Flags(m.to_string()));
        match (&f.cert_file, &f.key_file) {
            (Some(_), None) => return refuse("--cert-file is set without --key-file"),
            (None, Some(_)) => return refuse("--key-file is set without --cert-file"),
            _ => {}
        }
        if f.client_cert_auth && (f.cert_file.is_none() || f.trusted_ca_file.is_none()) {
            return refuse(
                "--client-cert-auth needs --cert-file, --key-file and --trusted-ca-file (the CA \
                 that client certificates are verified against)",
            );
        }
        match (&f.peer_cert_file, &f.peer_key_file) {
            (Some(_), None) => return refuse("--peer-cert-file is set without --peer-key-file"),
            (None, Some(_)) => return refuse("--peer-key-file is set without --peer-cert-file"),
            _ => {}
        }
        if f.peer_cert_file.is_some() && f.peer_trusted_ca_file.is_none() {
            return refuse(
                "--peer-cert-file needs --peer-trusted-ca-file: the peer port verifies every \
                 peer's certificate, and this member verifies its peers' servers",
            );
        }
        if f.peer_trusted_ca_file.is_some() && f.peer_cert_file.is_none() {
            return refuse(
                "--peer-trusted-ca-file is set without --peer-cert-file and --peer-key-file: \
                 peers require this member's certificate",
            );
        }
        if f.peer_client_cert_auth && f.peer_cert_file.is_none() {
            return refuse(
                "--peer-client-cert-auth needs --peer-cert-file, --peer-key-file and \
                 --peer-trusted-ca-file",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(f: impl FnOnce(&mut TlsFlags)) -> TlsFlags {
        let mut t = TlsFlags::default();
        f(&mut t);
        t
    }

    #[test]
    fn incomplete_pairs_and_missing_cas_are_refused_with_the_flag_named() {
        let e = |t: TlsFlags| t.validate().unwrap_err().to_string();
        assert!(e(flags(|t| t.cert_file = Some("c".into()))).contains("without --key-file"));
        assert!(e(flags(|t| t.key_file = Some("k".into()))).contains("without --cert-file"));
        assert!(e(flags(|t| t.client_cert_auth = true)).contains("--trusted-ca-file"));
        assert!(
            e(flags(|t| {
                t.peer_cert_file = Some("c".into());
                t.peer_key_file = Some("k".into());
            }))
            .contains("--peer-trusted-ca-file")
        );
        assert!(e(flags(|t| t.peer_key_file = Some("k".into()))).contains("--peer-cert-file"));
        assert!(e(flags(|t| t.peer_client_cert_auth = true)).contains("--peer-cert-file"));
    }

    #[test]
    fn empty_paths_count_as_unset_and_complete_sets_pass() {
        assert!(flags(|t| t.cert_file = Some("".into())).validate().is_ok());
        assert!(!flags(|t| t.cert_file = Some("".into())).client_tls());
        let full = flags(|t| {
            t.cert_file = Some("c".into());
            t.key_file = Some("k".into());
            t.trusted_ca_file = Some("ca".into());
            t.client_cert_auth = true;
            t.peer_cert_file = Some("pc".into());
            t.peer_key_file = Some("pk".into());
            t.peer_trusted_ca_file = Some("pca".into());
            t.peer_client_cert_auth = true;
        });
        assert!(full.validate().is_ok());
        assert!(full.client_tls() && full.peer_tls());
    }
}
