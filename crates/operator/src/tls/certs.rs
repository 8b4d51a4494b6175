//! Making and reading X.509 certificates: the cluster CA, member certificates and the admin
//! client certificate the operator issues when `spec.tls.mode` is `Operator`.
//!
//! Generation (rcgen, ECDSA P-256) and inspection (x509-parser) live together so the rest of
//! the operator sees certificates only as PEM text plus the few facts the renewal decision
//! needs ([`CertFacts`]): who issued it, for which names, until when. Times are passed in
//! (Unix seconds) rather than read from the clock, so the renewal rules are testable.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert: String,
    /// Its private key (PKCS#8 PEM).
    pub key: String,
}

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The PEM text holds no certificate, or one that does not parse.
    #[error("reading a certificate: {0}")]
    Parse(String),
    /// A time outside what a certificate can carry.
    #[error("certificate validity out of range")]
    Time,
}

/// What the renewal decision needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject common name.
    pub common_name: String,
    /// Issuer distinguished name, as text.
    pub issuer: String,
    /// Subject distinguished name, as text.
    pub subject: String,
    /// DNS and IP subject alternative names, as text.
    pub names: Vec<String>,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
}

fn at(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CertError::Time)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "flotilla");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A new self-signed CA named `common_name`, valid from `now` (less an hour of clock skew)
/// for `days`.
pub fn new_ca(common_name: &str, now: i64, days: i64) -> Result<Pair, CertError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = at(now - 3600)?;
    p.not_after = at(now + days * 86_400)?;
    let cert = p.self_signed(&key)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A member: serves clients and peers, and is a client of its peers (both EKUs).
    Member,
    /// A client only (the admin identity).
    Client,
}

/// A certificate signed by `ca` for `common_name` and `names` (DNS names or IP addresses),
/// valid from `now` (less an hour of clock skew) for `days`.
pub fn issue(
    ca: &Pair,
    common_name: &str,
    names: &[String],
    usage: Usage,
    now: i64,
    days: i64,
) -> Result<Pair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name = dn(common_name);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match usage {
        Usage::Member => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.use_authority_key_identifier_extension = true;
    p.not_before = at(now - 3600)?;
    p.not_after = at(now + days * 86_400)?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The facts of the first certificate in `pem`.
pub fn facts(pem: &str) -> Result<CertFacts, CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    let text = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip)
                            .map(|a| std::net::IpAddr::from(a).to_string())
                            .ok(),
                        16 => <[u8; 16]>::try_from(*ip)
                            .map(|a| std::net::IpAddr::from(a).to_string())
                            .ok(),
                        _ => None,
                    };
                    names.extend(text);
                }
                _ => {}
            }
        }
    }
    Ok(CertFacts {
        common_name,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Whether `cert` was signed by the key of `ca` (not only issued under its name).
pub fn signed_by(cert: &str, ca: &str) -> bool {
    let parse = |pem: &str| x509_parser::pem::parse_x509_pem(pem.as_bytes()).map(|(_, p)| p);
    let (Ok(leaf), Ok(ca)) = (parse(cert), parse(ca)) else {
        return false;
    };
    let (Ok(leaf), Ok(ca)) = (leaf.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// Whether `key` is the private key of `cert`.
pub fn key_matches(cert: &str, key: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

/// `names` sorted, IP addresses in their canonical text, for comparing with
/// [`CertFacts::names`].
pub fn normalised(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .map(|n| {
            n.parse::<std::net::IpAddr>()
                .map_or_else(|_| n.clone(), |ip| ip.to_string())
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn issued_certificate_carries_names_and_validity_and_chains_to_the_ca() {
        let ca = new_ca("demo CA", NOW, 3650).expect("ca");
        let names = vec!["demo-0.demo-peer.ns.svc".to_owned(), "127.0.0.1".to_owned()];
        let leaf = issue(&ca, "demo-0", &names, Usage::Member, NOW, 90).expect("leaf");
        let f = facts(&leaf.cert).expect("facts");
        assert_eq!(f.common_name, "demo-0");
        assert_eq!(f.not_after, NOW + 90 * 86_400);
        assert_eq!(f.not_before, NOW - 3600);
        let mut got = f.names.clone();
        got.sort();
        assert_eq!(got, normalised(&names));
        assert_eq!(f.issuer, facts(&ca.cert).expect("ca facts").subject);
        assert!(signed_by(&leaf.cert, &ca.cert));
        assert!(key_matches(&leaf.cert, &leaf.key));
        let other = new_ca("demo CA", NOW, 3650).expect("other ca");
        assert!(
            !signed_by(&leaf.cert, &other.cert),
            "same name, other key: not the issuer"
        );
        let other_leaf = issue(&ca, "demo-0", &names, Usage::Member, NOW, 90).expect("leaf");
        assert!(!key_matches(&leaf.cert, &other_leaf.key));
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        assert!(matches!(facts("not a pem"), Err(CertError::Parse(_))));
        assert!(!signed_by("x", "y"));
        assert!(!key_matches("x", "y"));
    }
}
