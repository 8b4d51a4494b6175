//! The certificate rules: what is issued, kept, renewed and copied, by mode.

use super::*;
use crate::resources::tests::cluster;

const NOW: i64 = 1_800_000_000;

fn with_tls(mode: TlsMode) -> RaftCluster {
    let mut rc = cluster(3);
    rc.spec.tls.mode = mode;
    if mode == TlsMode::CertManager {
        rc.spec.tls.issuer_ref = Some(crate::crd::IssuerRef {
            name: "ca-issuer".into(),
            kind: "Issuer".into(),
            group: "cert-manager.io".into(),
        });
    }
    rc
}

fn secrets(p: &TlsPlan) -> BTreeMap<String, Secret> {
    p.apply
        .iter()
        .filter_map(|o| match o {
            Owned::Secret(s) => Some((s.metadata.name.clone().unwrap_or_default(), s.clone())),
            _ => None,
        })
        .collect()
}

/// Feeds what a plan applied back as the next pass's inputs (the API server's part).
fn applied(mut inputs: TlsInputs, p: &TlsPlan, names: &Names) -> TlsInputs {
    for (name, s) in secrets(p) {
        if name == names.ca_secret() {
            inputs.ca = Some(s);
        } else if name == names.tls_secret() {
            inputs.bundle = Some(s);
        } else if name == names.client_secret() {
            inputs.client = Some(s);
        }
    }
    inputs
}

fn member_cert(inputs: &TlsInputs, pod: &str) -> Option<String> {
    text(inputs.bundle.as_ref(), &format!("{pod}.crt"))
}

#[test]
fn disabled_needs_nothing() {
    let rc = cluster(3);
    let names = Names::of(&rc).expect("names");
    let p = plan(&rc, &names, 3, &TlsInputs::default(), NOW).expect("plan");
    assert!(p.apply.is_empty() && p.client.is_none() && p.status.is_none());
    assert!(p.condition().is_none());
}

#[test]
fn operator_mode_issues_a_ca_every_member_and_the_admin_client_then_keeps_them() {
    let rc = with_tls(TlsMode::Operator);
    let names = Names::of(&rc).expect("names");
    let p = plan(&rc, &names, 3, &TlsInputs::default(), NOW).expect("plan");
    let s = secrets(&p);
    assert_eq!(
        s.keys().cloned().collect::<Vec<_>>(),
        ["demo-ca", "demo-client-tls", "demo-tls"]
    );
    let inputs = applied(TlsInputs::default(), &p, &names);
    let ca = text(inputs.ca.as_ref(), "tls.crt").expect("ca");
    assert_eq!(
        text(inputs.bundle.as_ref(), "ca.crt").as_deref(),
        Some(&*ca)
    );
    for k in 0..3 {
        let pod = names.pod(k);
        let cert = member_cert(&inputs, &pod).expect("member cert");
        let f = certs::facts(&cert).expect("facts");
        assert_eq!(f.common_name, pod);
        assert!(certs::signed_by(&cert, &ca));
        assert!(f.names.contains(&format!("{pod}.demo-peer.ns.svc")));
        assert!(f.names.contains(&"demo.ns.svc".to_owned()));
        assert_eq!(f.not_after, NOW + 90 * DAY);
    }
    let client = p.client.clone().expect("client identity");
    assert_eq!(client.ca, ca);
    assert_eq!(
        certs::facts(&client.identity.cert)
            .expect("facts")
            .common_name,
        CLIENT_CN
    );
    assert_eq!(p.condition().map(|c| c.0), Some(true));
    let st = p.status.clone().expect("status");
    assert_eq!(st.secret, "demo-tls");
    assert!(st.certificates_expire_at.is_some() && st.ca_expires_at.is_some());
    assert!(
        p.notes
            .iter()
            .any(|n| n.reason == "CertificateAuthorityCreated")
    );

    // The next pass, a day later, keeps everything: nothing to apply, same identity.
    let again = plan(&rc, &names, 3, &inputs, NOW + DAY).expect("plan");
    assert!(again.apply.is_empty(), "{:?}", secrets(&again).keys());
    assert!(again.notes.is_empty());
    assert_eq!(again.client, p.client);
}

#[test]
fn certificates_are_renewed_before_they_expire_and_the_ca_is_kept() {
    let rc = with_tls(TlsMode::Operator);
    let names = Names::of(&rc).expect("names");
    let first = plan(&rc, &names, 3, &TlsInputs::default(), NOW).expect("plan");
    let inputs = applied(TlsInputs::default(), &first, &names);
    // 59 days in: 31 left, more than renewBeforeDays (30): kept.
    assert!(
        plan(&rc, &names, 3, &inputs, NOW + 59 * DAY)
            .expect("plan")
            .apply
            .is_empty()
    );
    // 61 days in: 29 left: every member and the client are re-issued from the same CA.
    let later = NOW + 61 * DAY;
    let renewed = plan(&rc, &names, 3, &inputs, later).expect("plan");
    let s = secrets(&renewed);
    assert_eq!(
        s.keys().cloned().collect::<Vec<_>>(),
        ["demo-client-tls", "demo-tls"],
        "the CA is not replaced"
    );
    let next = applied(inputs.clone(), &renewed, &names);
    for k in 0..3 {
        let cert = member_cert(&next, &names.pod(k)).expect("cert");
        assert_ne!(Some(&cert), member_cert(&inputs, &names.pod(k)).as_ref());
        assert_eq!(
            certs::facts(&cert).expect("facts").not_after,
            later + 90 * DAY
        );
    }
    assert!(
        renewed
            .notes
            .iter()
            .any(|n| n.reason == "CertificatesIssued")
    );
}

#[test]
fn scaling_issues_only_the_new_members_and_drops_the_gone_ones() {
    let rc = with_tls(TlsMode::Operator);
    let names = Names::of(&rc).expect("names");
    let first = plan(&rc, &names, 3, &TlsInputs::default(), NOW).expect("plan");
    let three = applied(TlsInputs::default(), &first, &names);
    let grown = plan(&rc, &names, 5, &three, NOW + 10).expect("plan");
    let five = applied(three.clone(), &grown, &names);
    for k in 0..3 {
        assert_eq!(
            member_cert(&five, &names.pod(k)),
            member_cert(&three, &names.pod(k)),
            "member {k} keeps its certificate"
        );
    }
    for k in 3..5 {
        assert!(member_cert(&five, &names.pod(k)).is_some());
    }
    let shrunk = plan(&rc, &names, 3, &five, NOW + 20).expect("plan");
    let back = applied(five, &shrunk, &names);
    assert!(member_cert(&back, "demo-3").is_none());
    assert!(member_cert(&back, "demo-4").is_none());
    assert_eq!(member_cert(&back, "demo-0"), member_cert(&three, "demo-0"));
}

#[test]
fn a_lost_ca_or_a_damaged_certificate_is_replaced() {
    let rc = with_tls(TlsMode::Operator);
    let names = Names::of(&rc).expect("names");
    let first = plan(&rc, &names, 3, &TlsInputs::default(), NOW).expect("plan");
    let inputs = applied(TlsInputs::default(), &first, &names);

    // A member's key swapped for another member's: re-issued, the others kept.
    let mut damaged = inputs.clone();
    let d = damaged
        .bundle
        .as_mut()
        .and_then(|s| s.data.as_mut())
        .expect("data");
    let other = d.get("demo-2.key").cloned().expect("key");
    d.insert("demo-1.key".into(), other);
    let fixed = applied(
        damaged.clone(),
        &plan(&rc, &names, 3, &damaged, NOW).expect("plan"),
        &names,
    );
    let (c, k) = (
        member_cert(&fixed, "demo-1").expect("cert"),
        text(fixed.bundle.as_ref(), "demo-1.key").expect("key"),
    );
    assert!(certs::key_matches(&c, &k));
    assert_ne!(Some(c), member_cert(&inputs, "demo-1"));
    assert_eq!(
        member_cert(&fixed, "demo-0"),
        member_cert(&inputs, "demo-0")
    );

    // The CA Secret deleted: a new CA, and every certificate re-issued from it.
    let mut lost = inputs.clone();
    lost.ca = None;
    let p = plan(&rc, &names, 3, &lost, NOW).expect("plan");
    let next = applied(lost, &p, &names);
    let ca = text(next.ca.as_ref(), "tls.crt").expect("ca");
    assert_ne!(Some(&ca), text(inputs.ca.as_ref(), "tls.crt").as_ref());
    for k in 0..3 {
        assert!(certs::signed_by(
            &member_cert(&next, &names.pod(k)).expect("cert"),
            &ca
        ));
    }
    assert!(certs::signed_by(
        &text(next.client.as_ref(), "tls.crt").expect("client"),
        &ca
    ));
}

#[test]
fn cert_manager_missing_is_reported_and_nothing_is_applied() {
    let rc = with_tls(TlsMode::CertManager);
    let names = Names::of(&rc).expect("names");
    let p = plan(&rc, &names, 3, &TlsInputs::default(), NOW).expect("plan");
    assert!(p.apply.is_empty());
    assert!(p.client.is_none());
    assert_eq!(
        p.condition().map(|c| (c.0, c.1)),
        Some((false, "CertManagerNotInstalled"))
    );
    assert!(p.notes.iter().any(|n| n.severity == Severity::Warning));
}

#[test]
fn cert_manager_gets_a_certificate_per_member_and_its_secrets_are_copied_for_the_pods() {
    let rc = with_tls(TlsMode::CertManager);
    let names = Names::of(&rc).expect("names");
    let mut inputs = TlsInputs {
        cert_manager: true,
        ..TlsInputs::default()
    };
    let p = plan(&rc, &names, 3, &inputs, NOW).expect("plan");
    let certificates: Vec<&DynamicObject> = p
        .apply
        .iter()
        .filter_map(|o| match o {
            Owned::Certificate(c) => Some(&**c),
            _ => None,
        })
        .collect();
    let named: Vec<String> = certificates
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(named, ["demo-0", "demo-1", "demo-2", "demo-client"]);
    let c1 = &certificates[1].data["spec"];
    assert_eq!(c1["secretName"], "demo-1-tls");
    assert_eq!(c1["issuerRef"]["name"], "ca-issuer");
    assert_eq!(c1["ipAddresses"], json!(["127.0.0.1"]));
    assert!(
        c1["dnsNames"]
            .as_array()
            .expect("dns")
            .contains(&json!("demo-1.demo-peer.ns.svc"))
    );
    assert_eq!(certificates[3].data["spec"]["commonName"], CLIENT_CN);
    assert_eq!(
        p.condition().map(|c| (c.0, c.1)),
        Some((false, "CertificatesPending"))
    );

    // cert-manager issues members 0 and 1 and the client (the harness plays cert-manager
    // with the operator's own certificate code).
    let ca = certs::new_ca("issuer CA", NOW, 365).expect("ca");
    let issued = |cn: &str, names: &[String], usage| {
        let p = certs::issue(&ca, cn, names, usage, NOW, 90).expect("issue");
        serde_json::from_value::<Secret>(json!({
            "metadata": {"name": "x"},
            "data": {
                "tls.crt": ByteString(p.cert.into_bytes()),
                "tls.key": ByteString(p.key.into_bytes()),
                "ca.crt": ByteString(ca.cert.clone().into_bytes()),
            }
        }))
        .expect("secret")
    };
    for k in 0..2 {
        inputs.issued.insert(
            k,
            issued(&names.pod(k), &member_names(&names, k), Usage::Member),
        );
    }
    inputs.client = Some(issued(CLIENT_CN, &[], Usage::Client));
    let p = plan(&rc, &names, 3, &inputs, NOW).expect("plan");
    let bundle = secrets(&p).remove("demo-tls").expect("bundle");
    let next = TlsInputs {
        bundle: Some(bundle),
        ..inputs.clone()
    };
    assert_eq!(text(next.bundle.as_ref(), "ca.crt"), Some(ca.cert.clone()));
    assert!(member_cert(&next, "demo-0").is_some() && member_cert(&next, "demo-1").is_some());
    assert!(member_cert(&next, "demo-2").is_none());
    let (ok, reason, message) = p.condition().expect("condition");
    assert!(!ok && reason == "CertificatesPending" && message.contains("demo-2"));
    assert_eq!(p.client.as_ref().map(|c| &c.ca), Some(&ca.cert));

    // Once the bundle holds what was issued, nothing more is written.
    let again = plan(&rc, &names, 3, &next, NOW).expect("plan");
    assert!(secrets(&again).is_empty());
}
