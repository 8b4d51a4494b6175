//! TLS for a cluster: which certificates its members and the operator need, where they live,
//! and when they are issued or renewed.
//!
//! Layout, for a cluster `NAME` (the same whoever issues the certificates, so the pods and the
//! nodes never need to know):
//! - Secret `NAME-tls`, mounted by every pod at [`MOUNT`]: `ca.crt`, and `<pod>.crt` /
//!   `<pod>.key` for each member. One certificate per member serves both ports and is its
//!   client identity towards its peers (server and client EKU). A StatefulSet's pods share one
//!   template, so they cannot mount one Secret each; they mount this one and pick their files by
//!   pod name.
//! - Secret `NAME-client-tls` (`ca.crt`, `tls.crt`, `tls.key`, CN `root`): the admin client
//!   identity the operator dials the members with, and root's when auth is enabled.
//! - mode `Operator`: Secret `NAME-ca`, the cluster's CA (ten years; only the operator reads it).
//!   Member and client certificates last `spec.tls.certificateDays` and are re-issued when fewer
//!   than `renewBeforeDays` remain, when their names or key do not match, or when the CA changed.
//! - mode `CertManager`: one `Certificate` per member (`NAME-<k>`, Secret `NAME-<k>-tls`) and one
//!   for the admin client (`NAME-client`, Secret `NAME-client-tls`); cert-manager issues and
//!   renews them, and the operator copies each member's files into `NAME-tls`.
//!
//! Nothing restarts on a renewal: the kubelet refreshes the mounted Secret and the node reloads
//! certificate files when their content changes. [`plan`] is a pure function of the Secrets it
//! is shown and the time, so every rule here is tested without a cluster.

pub mod certs;
pub mod dial;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::DynamicObject;
use serde_json::json;

use crate::Error;
use crate::crd::{RaftCluster, TlsMode, TlsStatus};
use crate::kube_api::{Owned, Reads};
use crate::plan::{Note, Observed, Plan, Severity};
use crate::resources::{BuildError, Names, labels};
use certs::{CertError, Pair, Usage};

/// Where the pods mount `NAME-tls`.
pub const MOUNT: &str = "/etc/flotilla/tls";
/// The admin client certificate's common name (the auth user it stands for).
pub const CLIENT_CN: &str = "root";
/// Lifetime of an operator-made CA.
pub const CA_DAYS: i64 = 3650;
/// The CA is reported (condition `CertificatesReady` stays True, a Warning Event is published)
/// when fewer than this many days of it remain: the operator does not rotate CAs.
pub const CA_WARN_DAYS: i64 = 365;

const DAY: i64 = 86_400;

impl Names {
    /// The Secret the pods mount.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.cluster)
    }
    /// The operator-made CA's Secret.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }
    /// The admin client certificate's Secret.
    pub fn client_secret(&self) -> String {
        format!("{}-client-tls", self.cluster)
    }
    /// The cert-manager `Certificate` of a member.
    pub fn member_certificate(&self, ordinal: u32) -> String {
        self.pod(ordinal)
    }
    /// The Secret cert-manager writes a member's certificate to.
    pub fn member_issued_secret(&self, ordinal: u32) -> String {
        format!("{}-tls", self.pod(ordinal))
    }
    /// The cert-manager `Certificate` of the admin client.
    pub fn client_certificate(&self) -> String {
        format!("{}-client", self.cluster)
    }
}

/// The names a member's certificate is valid for: its peer DNS names, the client Service's
/// names (clients reach any member through it), and loopback.
pub fn member_names(names: &Names, ordinal: u32) -> Vec<String> {
    let (pod, peer, ns, c) = (
        names.pod(ordinal),
        names.peer_service(),
        &names.namespace,
        &names.cluster,
    );
    vec![
        format!("{pod}.{peer}.{ns}.svc"),
        format!("{pod}.{peer}.{ns}.svc.cluster.local"),
        format!("{pod}.{peer}.{ns}"),
        format!("{pod}.{peer}"),
        c.clone(),
        format!("{c}.{ns}"),
        format!("{c}.{ns}.svc"),
        format!("{c}.{ns}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ]
}

/// What the operator dials the members with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the members' certificates chain to (PEM).
    pub ca: String,
    /// The admin client certificate and key.
    pub identity: Pair,
}

/// The Secrets (and whether cert-manager is installed) that [`plan`] decides from.
#[derive(Debug, Clone, Default)]
pub struct TlsInputs {
    /// `NAME-ca`.
    pub ca: Option<Secret>,
    /// `NAME-tls`.
    pub bundle: Option<Secret>,
    /// `NAME-client-tls`.
    pub client: Option<Secret>,
    /// `NAME-<k>-tls` by ordinal (mode `CertManager`).
    pub issued: BTreeMap<u32, Secret>,
    /// The API server serves `certificates.cert-manager.io/v1`.
    pub cert_manager: bool,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default)]
pub struct TlsPlan {
    /// Objects to apply before anything else (the pods mount them).
    pub apply: Vec<Owned>,
    /// The identity to dial members with; `None` when TLS is off (or not issued yet).
    pub client: Option<ClientTls>,
    /// `Some((reason, message))` while the certificates are not all in place.
    pub pending: Option<(&'static str, String)>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// The status block; `None` when TLS is off.
    pub status: Option<TlsStatus>,
}

impl TlsPlan {
    /// The `CertificatesReady` condition's (status, reason, message); `None` when TLS is off.
    pub fn condition(&self) -> Option<(bool, &'static str, String)> {
        self.status.as_ref()?;
        Some(match &self.pending {
            Some((reason, message)) => (false, *reason, message.clone()),
            None => (
                true,
                "Issued",
                "every member and the admin client have a valid certificate".to_owned(),
            ),
        })
    }
}

/// Reads the Secrets [`plan`] decides from (none when TLS is off).
pub async fn observe<K: Reads>(
    rc: &RaftCluster,
    names: &Names,
    members: u32,
    kube: &K,
) -> Result<TlsInputs, Error> {
    let ns = &names.namespace;
    let mut inputs = TlsInputs::default();
    if rc.spec.tls.mode == TlsMode::Disabled {
        return Ok(inputs);
    }
    inputs.bundle = kube.secret(ns, &names.tls_secret()).await?;
    inputs.client = kube.secret(ns, &names.client_secret()).await?;
    match rc.spec.tls.mode {
        TlsMode::Disabled => {}
        TlsMode::Operator => inputs.ca = kube.secret(ns, &names.ca_secret()).await?,
        TlsMode::CertManager => {
            inputs.cert_manager = kube.cert_manager_installed().await?;
            for k in 0..members {
                if let Some(s) = kube.secret(ns, &names.member_issued_secret(k)).await? {
                    inputs.issued.insert(k, s);
                }
            }
        }
    }
    Ok(inputs)
}

/// Puts the TLS block and the `CertificatesReady` condition into the plan's status.
pub fn report(tls: &TlsPlan, o: &Observed, plan: &mut Plan) {
    plan.status.tls = tls.status.clone();
    if let Some((ok, reason, message)) = tls.condition() {
        plan.status.conditions.push(crate::plan::condition(
            o,
            "CertificatesReady",
            ok,
            reason,
            message,
        ));
    }
}

fn text(s: Option<&Secret>, key: &str) -> Option<String> {
    let b = s?.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

fn pair(s: Option<&Secret>, cert: &str, key: &str) -> Option<Pair> {
    Some(Pair {
        cert: text(s, cert)?,
        key: text(s, key)?,
    })
}

fn rfc3339(unix: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .ok()
        .map(|t| t.to_string())
}

/// Whether `p` can stay: it chains to `ca`, matches its key, carries exactly `want` and has
/// more than `renew_before` seconds left.
fn fresh(p: &Pair, ca: &str, want: &[String], now: i64, renew_before: i64) -> bool {
    let Ok(f) = certs::facts(&p.cert) else {
        return false;
    };
    let mut got = f.names.clone();
    got.sort();
    certs::signed_by(&p.cert, ca)
        && certs::key_matches(&p.cert, &p.key)
        && got == certs::normalised(want)
        && f.not_after - now > renew_before
        && f.not_before <= now + 3600
}

fn secret(
    rc: &RaftCluster,
    names: &Names,
    name: String,
    type_: &str,
    data: &BTreeMap<String, String>,
) -> Result<Owned, BuildError> {
    let data: BTreeMap<String, ByteString> = data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let v = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": names.namespace,
            "labels": labels(names),
            "ownerReferences": rc.controller_owner_ref(&()).map(|o| vec![o]).unwrap_or_default(),
        },
        "type": type_,
        "data": data,
    });
    serde_json::from_value(v)
        .map(Owned::Secret)
        .map_err(|source| BuildError::Shape {
            kind: "Secret",
            source,
        })
}

fn data_of(s: Option<&Secret>) -> BTreeMap<String, String> {
    s.and_then(|s| s.data.as_ref())
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Why a TLS plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate could not be generated.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// An object did not build.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// What the cluster's certificates need now: `members` is how many ordinals (from 0) must have
/// a certificate — every pod that exists or is about to. `now` is Unix seconds.
pub fn plan(
    rc: &RaftCluster,
    names: &Names,
    members: u32,
    inputs: &TlsInputs,
    now: i64,
) -> Result<TlsPlan, TlsError> {
    match rc.spec.tls.mode {
        TlsMode::Disabled => Ok(TlsPlan::default()),
        TlsMode::Operator => operator_plan(rc, names, members, inputs, now),
        TlsMode::CertManager => cert_manager_plan(rc, names, members, inputs),
    }
}

fn status(names: &Names) -> TlsStatus {
    TlsStatus {
        secret: names.tls_secret(),
        client_secret: names.client_secret(),
        certificates_expire_at: None,
        ca_expires_at: None,
    }
}

fn operator_plan(
    rc: &RaftCluster,
    names: &Names,
    members: u32,
    inputs: &TlsInputs,
    now: i64,
) -> Result<TlsPlan, TlsError> {
    let spec = &rc.spec.tls;
    let days = i64::from(spec.certificate_days);
    let renew_before = i64::from(spec.renew_before_days) * DAY;
    let mut out = TlsPlan {
        status: Some(status(names)),
        ..TlsPlan::default()
    };

    // The CA: kept while it is whole and valid for at least a day more.
    let kept_ca = pair(inputs.ca.as_ref(), "tls.crt", "tls.key").filter(|p| {
        certs::key_matches(&p.cert, &p.key)
            && certs::facts(&p.cert).is_ok_and(|f| f.not_after - now > DAY)
    });
    let ca = match kept_ca {
        Some(ca) => ca,
        None => {
            let ca = certs::new_ca(
                &format!("{}/{} flotilla CA", names.namespace, names.cluster),
                now,
                CA_DAYS,
            )?;
            let data = BTreeMap::from([
                ("tls.crt".to_owned(), ca.cert.clone()),
                ("tls.key".to_owned(), ca.key.clone()),
            ]);
            out.apply.push(secret(
                rc,
                names,
                names.ca_secret(),
                "kubernetes.io/tls",
                &data,
            )?);
            out.notes.push(note(
                Severity::Normal,
                "CertificateAuthorityCreated",
                format!(
                    "created the cluster's CA in Secret {}; every certificate is issued from it",
                    names.ca_secret()
                ),
            ));
            ca
        }
    };
    let ca_facts = certs::facts(&ca.cert)?;
    if ca_facts.not_after - now < CA_WARN_DAYS * DAY {
        out.notes.push(note(
            Severity::Warning,
            "CertificateAuthorityExpiring",
            format!(
                "the cluster's CA (Secret {}) expires at {}; the operator does not rotate CAs",
                names.ca_secret(),
                rfc3339(ca_facts.not_after).unwrap_or_default()
            ),
        ));
    }

    // Member certificates.
    let old = data_of(inputs.bundle.as_ref());
    let mut data = BTreeMap::from([("ca.crt".to_owned(), ca.cert.clone())]);
    let mut issued = Vec::new();
    let mut earliest = i64::MAX;
    for k in 0..members {
        let pod = names.pod(k);
        let want = member_names(names, k);
        let current = old
            .get(&format!("{pod}.crt"))
            .zip(old.get(&format!("{pod}.key")))
            .map(|(c, k)| Pair {
                cert: c.clone(),
                key: k.clone(),
            })
            .filter(|p| fresh(p, &ca.cert, &want, now, renew_before));
        let p = match current {
            Some(p) => p,
            None => {
                issued.push(pod.clone());
                certs::issue(&ca, &pod, &want, Usage::Member, now, days)?
            }
        };
        earliest = earliest.min(certs::facts(&p.cert)?.not_after);
        data.insert(format!("{pod}.crt"), p.cert);
        data.insert(format!("{pod}.key"), p.key);
    }
    if data != old {
        out.apply
            .push(secret(rc, names, names.tls_secret(), "Opaque", &data)?);
        if !issued.is_empty() {
            out.notes.push(note(
                Severity::Normal,
                "CertificatesIssued",
                format!(
                    "issued member certificates for {} (valid {days} days) in Secret {}",
                    issued.join(", "),
                    names.tls_secret()
                ),
            ));
        }
    }

    // The admin client certificate.
    let current = pair(inputs.client.as_ref(), "tls.crt", "tls.key")
        .filter(|p| fresh(p, &ca.cert, &[], now, renew_before))
        .filter(|_| text(inputs.client.as_ref(), "ca.crt").as_deref() == Some(&ca.cert));
    let client = match current {
        Some(p) => p,
        None => {
            let p = certs::issue(&ca, CLIENT_CN, &[], Usage::Client, now, days)?;
            let data = BTreeMap::from([
                ("ca.crt".to_owned(), ca.cert.clone()),
                ("tls.crt".to_owned(), p.cert.clone()),
                ("tls.key".to_owned(), p.key.clone()),
            ]);
            out.apply.push(secret(
                rc,
                names,
                names.client_secret(),
                "kubernetes.io/tls",
                &data,
            )?);
            out.notes.push(note(
                Severity::Normal,
                "CertificatesIssued",
                format!(
                    "issued the admin client certificate (CN {CLIENT_CN}) in Secret {}",
                    names.client_secret()
                ),
            ));
            p
        }
    };
    earliest = earliest.min(certs::facts(&client.cert)?.not_after);
    if let Some(s) = out.status.as_mut() {
        s.certificates_expire_at = rfc3339(earliest);
        s.ca_expires_at = rfc3339(ca_facts.not_after);
    }
    out.client = Some(ClientTls {
        ca: ca.cert,
        identity: client,
    });
    Ok(out)
}

fn note(severity: Severity, reason: &'static str, message: String) -> Note {
    Note {
        severity,
        reason,
        message,
        subject: None,
    }
}

/// A cert-manager `Certificate`.
fn certificate(
    rc: &RaftCluster,
    names: &Names,
    name: String,
    body: serde_json::Value,
) -> Result<Owned, BuildError> {
    let mut spec = body;
    let issuer = rc.spec.tls.issuer_ref.clone();
    spec["issuerRef"] = json!(issuer.map(|i| json!({
        "name": i.name, "kind": i.kind, "group": i.group,
    })));
    spec["privateKey"] = json!({"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"});
    let v = json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": name,
            "namespace": names.namespace,
            "labels": labels(names),
            "ownerReferences": rc.controller_owner_ref(&()).map(|o| vec![o]).unwrap_or_default(),
        },
        "spec": spec,
    });
    serde_json::from_value::<DynamicObject>(v)
        .map(|o| Owned::Certificate(Box::new(o)))
        .map_err(|source| BuildError::Shape {
            kind: "Certificate",
            source,
        })
}

fn cert_manager_plan(
    rc: &RaftCluster,
    names: &Names,
    members: u32,
    inputs: &TlsInputs,
) -> Result<TlsPlan, TlsError> {
    let mut out = TlsPlan {
        status: Some(status(names)),
        ..TlsPlan::default()
    };
    if !inputs.cert_manager {
        let why = "spec.tls.mode is CertManager but the API server does not serve \
                   certificates.cert-manager.io/v1: install cert-manager or use mode Operator";
        out.notes.push(note(
            Severity::Warning,
            "CertManagerNotInstalled",
            why.to_owned(),
        ));
        out.pending = Some(("CertManagerNotInstalled", why.to_owned()));
        return Ok(out);
    }
    for k in 0..members {
        let want = member_names(names, k);
        let (ips, dns): (Vec<String>, Vec<String>) = want
            .into_iter()
            .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
        out.apply.push(certificate(
            rc,
            names,
            names.member_certificate(k),
            json!({
                "secretName": names.member_issued_secret(k),
                "commonName": names.pod(k),
                "dnsNames": dns,
                "ipAddresses": ips,
                "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            }),
        )?);
    }
    out.apply.push(certificate(
        rc,
        names,
        names.client_certificate(),
        json!({
            "secretName": names.client_secret(),
            "commonName": CLIENT_CN,
            "usages": ["client auth", "digital signature", "key encipherment"],
        }),
    )?);

    // Copy what cert-manager issued into the Secret the pods mount. A member whose Secret is
    // not there yet keeps what the bundle already holds for it.
    let old = data_of(inputs.bundle.as_ref());
    let mut data = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut earliest = i64::MAX;
    for k in 0..members {
        let pod = names.pod(k);
        let issued = inputs.issued.get(&k);
        let fresh = pair(issued, "tls.crt", "tls.key")
            .filter(|p| certs::key_matches(&p.cert, &p.key))
            .zip(text(issued, "ca.crt"));
        match fresh {
            Some((p, ca)) => {
                if let Ok(f) = certs::facts(&p.cert) {
                    earliest = earliest.min(f.not_after);
                }
                data.insert("ca.crt".to_owned(), ca);
                data.insert(format!("{pod}.crt"), p.cert);
                data.insert(format!("{pod}.key"), p.key);
            }
            None => {
                waiting.push(names.member_certificate(k));
                for f in [format!("{pod}.crt"), format!("{pod}.key")] {
                    if let Some(v) = old.get(&f) {
                        data.insert(f, v.clone());
                    }
                }
            }
        }
    }
    if !data.contains_key("ca.crt")
        && let Some(ca) = old.get("ca.crt")
    {
        data.insert("ca.crt".to_owned(), ca.clone());
    }
    if data != old && !data.is_empty() {
        out.apply
            .push(secret(rc, names, names.tls_secret(), "Opaque", &data)?);
    }
    let client = pair(inputs.client.as_ref(), "tls.crt", "tls.key")
        .zip(text(inputs.client.as_ref(), "ca.crt"));
    match client {
        Some((identity, ca)) => {
            if let Ok(f) = certs::facts(&identity.cert) {
                earliest = earliest.min(f.not_after);
            }
            out.client = Some(ClientTls { ca, identity });
        }
        None => waiting.push(names.client_certificate()),
    }
    if !waiting.is_empty() {
        out.pending = Some((
            "CertificatesPending",
            format!(
                "waiting for cert-manager to issue Certificate {}",
                waiting.join(", ")
            ),
        ));
    }
    if let Some(s) = out.status.as_mut() {
        s.certificates_expire_at = (earliest != i64::MAX).then(|| rfc3339(earliest)).flatten();
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
