//! rustls configurations built from PEM bytes: what the client and peer ports serve, and what
//! this member presents and trusts when it dials.
//!
//! Always rustls's `ring` provider, named explicitly rather than through a process-wide
//! default, so a second provider pulled in by some dependency can never make building a
//! configuration ambiguous. TLS 1.2 and 1.3 (etcd 3.4's Go clients negotiate either).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::TlsError;

/// The crypto provider every configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a server treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asked for.
    None,
    /// Asked for; a client may present none, but one it presents must verify.
    Optional,
    /// Required and verified.
    Required,
}

/// Every certificate in a PEM bundle, in order (leaf first for a chain).
pub fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no PEM certificate found")));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem(format!("{what}: {e}")))
}

/// A root store holding every certificate of a CA bundle.
pub fn roots(pem: &[u8], what: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(pem, what)? {
        roots.add(c).map_err(|cause| TlsError::Rustls {
            what: "CA certificate",
            cause,
        })?;
    }
    Ok(Arc::new(roots))
}

/// What a server configuration is made of.
pub struct ServerSpec<'a> {
    /// The certificate chain (PEM).
    pub cert: &'a [u8],
    /// Its key (PEM).
    pub key: &'a [u8],
    /// The CA bundle client certificates are verified against (PEM).
    pub client_ca: Option<&'a [u8]>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// ALPN protocols offered.
    pub alpn: &'a [&'a [u8]],
}

impl ServerSpec<'_> {
    /// The configuration; a key that does not match its certificate is refused here.
    pub fn build(&self) -> Result<ServerConfig, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|cause| TlsError::Rustls {
                what: "server configuration",
                cause,
            })?;
        let builder = match (self.client_auth, self.client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(TlsError::Flags(
                    "verifying client certificates needs a trusted CA file".into(),
                ));
            }
            (auth, Some(ca)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    roots(ca, "trusted CA file")?,
                    provider(),
                );
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(format!("trusted CA file: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(
                certs(self.cert, "certificate file")?,
                key(self.key, "key file")?,
            )
            .map_err(|cause| TlsError::Rustls {
                what: "certificate and key",
                cause,
            })?;
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// What a client configuration is made of.
pub struct ClientSpec<'a> {
    /// The CA bundle servers are verified against (PEM).
    pub ca: &'a [u8],
    /// The certificate chain and key this side presents (PEM), if any.
    pub identity: Option<(&'a [u8], &'a [u8])>,
}

impl ClientSpec<'_> {
    /// The configuration (ALPN h2: every dialled service is gRPC).
    pub fn build(&self) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|cause| TlsError::Rustls {
                what: "client configuration",
                cause,
            })?
            .with_root_certificates(roots(self.ca, "trusted CA file")?);
        let mut config = match self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certs(cert, "client certificate file")?,
                    self::key(key, "client key file")?,
                )
                .map_err(|cause| TlsError::Rustls {
                    what: "client certificate and key",
                    cause,
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::{Ca, Usage};

    #[test]
    fn garbage_mismatched_keys_and_empty_files_are_refused_not_panicked_on() {
        let ca = Ca::new("test CA").expect("ca");
        let a = ca.issue("a", &["127.0.0.1"], Usage::Server).expect("a");
        let b = ca.issue("b", &["127.0.0.1"], Usage::Server).expect("b");
        let spec = |cert: &[u8], key: &[u8]| {
            ServerSpec {
                cert,
                key,
                client_ca: Some(ca.cert_pem().as_bytes()),
                client_auth: ClientAuth::Optional,
                alpn: &[b"h2"],
            }
            .build()
        };
        assert!(spec(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).is_ok());
        let mismatch = spec(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(mismatch, TlsError::Rustls { .. }), "{mismatch}");
        assert!(matches!(
            spec(b"", a.key_pem.as_bytes()),
            Err(TlsError::Pem(_))
        ));
        assert!(matches!(
            spec(a.cert_pem.as_bytes(), b"junk"),
            Err(TlsError::Pem(_))
        ));
        assert!(matches!(
            spec(
                b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                b""
            ),
            Err(TlsError::Pem(_))
        ));
        let client = ClientSpec {
            ca: b"not a CA",
            identity: None,
        }
        .build();
        assert!(client.is_err());
    }
}
