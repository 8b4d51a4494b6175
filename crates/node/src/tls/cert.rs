//! What a verified certificate says about its holder: the subject's common name (the auth
//! user under `--client-cert-auth`, as etcd's `AuthInfoFromTLS`) and the serial number.
//!
//! Parsing runs only on certificates rustls has already verified, but it still never panics:
//! a certificate x509-parser cannot read simply names nobody.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The client certificate of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's first common name, if it has one that is UTF-8.
    pub common_name: Option<String>,
    /// The serial number's bytes (big-endian, as encoded).
    pub serial: Vec<u8>,
}

impl ClientCert {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> ClientCert {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return ClientCert::default();
        };
        ClientCert {
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            serial: cert.raw_serial().to_vec(),
        }
    }
}

/// The serial number of a DER certificate as lowercase hex (what `openssl x509 -serial`
/// prints, in lowercase), or `None` if it does not parse.
pub fn serial_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(
        cert.raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki::{Ca, Usage};

    #[test]
    fn common_name_and_serial_are_read_and_garbage_names_nobody() {
        let ca = Ca::new("cn CA").expect("ca");
        let c = ca.issue("alice", &[], Usage::Client).expect("issue");
        let der = crate::tls::config::certs(c.cert_pem.as_bytes(), "t").expect("der");
        let cert = ClientCert::from_der(der[0].as_ref());
        assert_eq!(cert.common_name.as_deref(), Some("alice"));
        assert!(!cert.serial.is_empty());
        assert_eq!(
            serial_hex(der[0].as_ref()).map(|s| s.len()),
            Some(cert.serial.len() * 2)
        );
        assert_eq!(ClientCert::from_der(b"\x30\x03junk"), ClientCert::default());
        assert_eq!(serial_hex(b""), None);
    }
}
