//! TLS end to end: real `flotilla node` processes with certificates made by `tls::pki`, driven
//! by etcdctl (3.4, Go's TLS stack), curl and tonic clients over TLS. Client TLS with etcdctl;
//! `--client-cert-auth`; peers with another CA's certificate refused on both ports; a server
//! certificate rotated by a Kubernetes-style `..data` symlink swap and served to new
//! connections while an old one keeps working; the admin gate; CN as the auth user; joining
//! over TLS; and `flotilla dev --tls`.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, Member, etcdctl_path, free_port_block, wait_until};
use flotilla_node::tls::Dialer;
use flotilla_node::tls::config::ClientSpec;
use flotilla_node::tls::pki::{Ca, Issued, Usage};
use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::{RemoveMemberRequest, StatusRequest, TransferLeadershipRequest};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Generous: these tests share a small machine with builds and other clusters.
const PATIENCE: Duration = Duration::from_secs(60);
/// Loopback names every test certificate is valid for.
const SANS: &[&str] = &["127.0.0.1", "localhost"];

/// A test cluster's certificates, written under one directory.
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    fn new(dir: &Path, ca_name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca = Ca::new(ca_name).expect("ca");
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate with this CN (issued once).
    fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let name = format!("client-{cn}");
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        if !c.exists() {
            self.issue(cn, &[], Usage::Client, &name);
        }
        (c, k)
    }

    fn issue(&self, cn: &str, sans: &[&str], usage: Usage, file: &str) -> Issued {
        let issued = self.ca.issue(cn, sans, usage).expect("issue");
        issued.write(&self.dir, file).expect("write cert");
        issued
    }

    /// Member `name`'s TLS flags (server and peer certificates issued here), as a pod would
    /// get them: client TLS with the CA as trusted CA, peer mutual TLS.
    fn member_flags(&self, name: &str, client_cert_auth: bool) -> Vec<String> {
        self.issue(name, SANS, Usage::Server, name);
        self.issue(name, SANS, Usage::Peer, &format!("{name}-peer"));
        let p = |f: String| self.dir.join(f).display().to_string();
        let ca = self.ca_file().display().to_string();
        let mut flags = vec![
            "--cert-file".to_string(),
            p(format!("{name}.crt")),
            "--key-file".into(),
            p(format!("{name}.key")),
            "--trusted-ca-file".into(),
            ca.clone(),
            "--peer-cert-file".into(),
            p(format!("{name}-peer.crt")),
            "--peer-key-file".into(),
            p(format!("{name}-peer.key")),
            "--peer-trusted-ca-file".into(),
            ca,
            "--peer-client-cert-auth".into(),
            "--tls-reload-interval".into(),
            "200ms".into(),
        ];
        if client_cert_auth {
            flags.push("--client-cert-auth".into());
        }
        flags
    }
}

fn https(m: &Member) -> String {
    format!("https://127.0.0.1:{}", m.client)
}

fn https_all(c: &Cluster) -> String {
    c.members
        .iter()
        .filter(|m| m.running())
        .map(https)
        .collect::<Vec<_>>()
        .join(",")
}

/// Who etcdctl (or a tonic client) presents itself as.
#[derive(Clone, Copy)]
enum As<'a> {
    /// Only the CA: no client certificate.
    Anonymous,
    /// A client certificate with this CN.
    Cert(&'a str),
}

/// etcdctl over TLS against `eps`.
fn ctl(pki: &Pki, eps: &str, who: As, args: &[&str]) -> Output {
    let mut cmd = Command::new(etcdctl_path());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={eps}"))
        .arg("--command-timeout=8s")
        .arg("--dial-timeout=3s")
        .arg("--cacert")
        .arg(pki.ca_file());
    if let As::Cert(cn) = who {
        let (c, k) = pki.client(cn);
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.args(args).output().expect("run etcdctl")
}

fn ctl_ok(pki: &Pki, eps: &str, who: As, args: &[&str]) -> String {
    let out = ctl(pki, eps, who, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} against {eps} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `endpoint status` of one member over TLS: (member id, leader, raft term).
fn status_of(pki: &Pki, m: &Member) -> Option<(u64, u64, u64)> {
    let out = ctl(
        pki,
        &https(m),
        As::Cert("root"),
        &["endpoint", "status", "-w", "json"],
    );
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let st = &v[0]["Status"];
    Some((
        st["header"]["member_id"].as_u64()?,
        st["leader"].as_u64()?,
        st["raftTerm"].as_u64()?,
    ))
}

/// Waits until the running members agree on a leader that serves a linearizable read over
/// TLS; returns its index.
fn wait_ready(c: &Cluster, pki: &Pki) -> usize {
    let ready = || {
        let mut leader = None;
        let mut seen = None;
        for (i, m) in c.members.iter().enumerate() {
            if !m.running() {
                continue;
            }
            let (id, l, _) = status_of(pki, m)?;
            if l == 0 || seen.is_some_and(|s| s != l) {
                return None;
            }
            seen = Some(l);
            if id == l {
                leader = Some(i);
            }
        }
        let i = leader?;
        let out = ctl(
            pki,
            &https(&c.members[i]),
            As::Cert("root"),
            &["get", "probe"],
        );
        out.status.success().then_some(i)
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(i) = ready() {
            return i;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out after {PATIENCE:?} waiting for a leader serving linearizable reads \
                 over TLS\n{}",
                member_logs(c)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines each member logged (for a failure message).
fn member_logs(c: &Cluster) -> String {
    let mut out = String::new();
    for m in &c.members {
        let Some(path) = &m.log_to else { continue };
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
        out.push_str(&format!("--- {} ({}):\n{tail}\n", m.name, path.display()));
    }
    out
}

/// Prepares `n` members with TLS (peer URLs https://), starts them, waits for a leader.
fn tls_cluster(n: usize, client_cert_auth: bool, extra: &[&str]) -> (Cluster, Pki) {
    let mut c = Cluster::new(n, extra);
    let pki = Pki::new(&c.dir.path().join("pki"), "flotilla test CA");
    for m in &mut c.members {
        m.extra.extend(pki.member_flags(&m.name, client_cert_auth));
        // Kept for the failure message of `wait_ready`.
        m.log_to = Some(c.dir.path().join(format!("{}.log", m.name)));
        m.initial_cluster = m
            .initial_cluster
            .as_ref()
            .map(|ic| ic.replace("http://", "https://"));
    }
    for m in &mut c.members {
        m.start();
    }
    wait_ready(&c, &pki);
    (c, pki)
}

/// `member list -w json` over TLS: (id, name, is_learner).
fn members(pki: &Pki, ep: &str) -> Vec<(u64, String, bool)> {
    let out = ctl_ok(pki, ep, As::Cert("root"), &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mut list: Vec<(u64, String, bool)> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["ID"].as_u64().unwrap_or(0),
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["isLearner"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

/// A TLS dialer trusting `ca`, presenting `identity` (cert, key files) if given.
fn dialer(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> Dialer {
    let ca = std::fs::read(ca).expect("read ca");
    let identity = identity.map(|(c, k)| {
        (
            std::fs::read(c).expect("read cert"),
            std::fs::read(k).expect("read key"),
        )
    });
    let config = ClientSpec {
        ca: &ca,
        identity: identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    }
    .build()
    .expect("client config");
    Dialer::with_config(config)
}

async fn channel(d: &Dialer, port: u16) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15));
    d.connect(ep).await.map_err(|e| e.to_string())
}

async fn admin(pki: &Pki, port: u16, who: As<'_>) -> AdminClient<Channel> {
    let identity = match who {
        As::Anonymous => None,
        As::Cert(cn) => Some(pki.client(cn)),
    };
    AdminClient::new(
        channel(&dialer(&pki.ca_file(), identity), port)
            .await
            .expect("connect admin over TLS"),
    )
}

#[test]
fn etcdctl_and_the_json_gateway_work_over_tls_with_peers_on_mutual_tls() {
    let (c, pki) = tls_cluster(3, false, &[]);
    let all = https_all(&c);
    // Ordinary clients need only the CA.
    ctl_ok(
        &pki,
        &https(&c.members[0]),
        As::Anonymous,
        &["put", "tls/a", "1"],
    );
    for m in &c.members {
        let got = ctl_ok(
            &pki,
            &https(m),
            As::Anonymous,
            &["get", "tls/a", "--print-value-only"],
        );
        assert_eq!(got.trim(), "1", "{} serves the write", m.name);
    }
    // Peer and client URLs are https:// by default (bootstrap members learn each other's
    // client URLs over the peer port, asynchronously).
    wait_until(PATIENCE, "every member's URLs are https://", || {
        let out = ctl_ok(&pki, &all, As::Anonymous, &["member", "list"]);
        (out.matches("https://").count() == 6).then_some(())
    });
    // `--cluster` dials the advertised https:// client URLs, from the member list of the
    // member asked, which learns the others' client URLs on its own schedule (etcdctl 3.4
    // prints health to stderr).
    wait_until(
        PATIENCE,
        "endpoint health --cluster reaches all three",
        || {
            let out = ctl(
                &pki,
                &https(&c.members[1]),
                As::Anonymous,
                &["endpoint", "health", "--cluster"],
            );
            let healthy = text(&out).matches("is healthy").count();
            (out.status.success() && healthy == 3).then_some(())
        },
    );
    // The JSON gateway shares the TLS port, over HTTP/1.1 and h2.
    for http in ["--http1.1", "--http2"] {
        let out = Command::new("curl")
            .args(["-sS", http, "--cacert"])
            .arg(pki.ca_file())
            .arg(format!("{}/v3/kv/range", https(&c.members[2])))
            .args(["-X", "POST", "-d", r#"{"key":"dGxzL2E="}"#])
            .output()
            .expect("curl");
        let body = text(&out);
        assert!(body.contains(r#""value":"MQ==""#), "{http}: {body}");
    }
    // Plain text on a TLS port gets nowhere.
    let plain = common::etcdctl(
        &format!("127.0.0.1:{}", c.members[0].client),
        &["get", "tls/a"],
    );
    assert!(
        !plain.status.success(),
        "plain text was served: {}",
        text(&plain)
    );
}

#[test]
fn client_cert_auth_refuses_clients_without_a_certificate_from_the_ca() {
    let (c, pki) = tls_cluster(1, true, &[]);
    let ep = https(&c.members[0]);
    let out = ctl(&pki, &ep, As::Anonymous, &["put", "k", "v"]);
    assert!(
        !out.status.success(),
        "no certificate, yet served: {}",
        text(&out)
    );
    // A certificate from another CA is refused as well.
    let rogue = Pki::new(&c.dir.path().join("rogue"), "rogue CA");
    let (cert, key) = rogue.client("root");
    let out = Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["--command-timeout=5s", "--dial-timeout=2s", "--cacert"])
        .arg(pki.ca_file())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["put", "k", "v"])
        .output()
        .expect("etcdctl");
    assert!(
        !out.status.success(),
        "a rogue certificate was served: {}",
        text(&out)
    );
    ctl_ok(&pki, &ep, As::Cert("someone"), &["put", "k", "v"]);
    let got = ctl_ok(
        &pki,
        &ep,
        As::Cert("someone"),
        &["get", "k", "--print-value-only"],
    );
    assert_eq!(got.trim(), "v");
}

#[test]
fn a_peer_with_another_cas_certificate_can_neither_join_nor_send_raft_messages() {
    let (mut c, pki) = tls_cluster(3, false, &[]);
    let leader = wait_ready(&c, &pki);
    let before = members(&pki, &https_all(&c));
    let (_, _, term) = status_of(&pki, &c.members[leader]).expect("status");

    // A member whose certificates come from another CA (it trusts the real one) tries to join.
    let rogue = Pki::new(&c.dir.path().join("rogue"), "rogue CA");
    let i = c.add_joiner("rogue");
    let log = c.dir.path().join("rogue.log");
    c.members[i].extra = rogue.member_flags("rogue", false);
    // ...but verifies the cluster with the cluster's CA.
    let extra = &mut c.members[i].extra;
    for k in 1..extra.len() {
        if extra[k - 1].ends_with("trusted-ca-file") {
            extra[k] = pki.ca_file().display().to_string();
        }
    }
    c.members[i].join = Some(
        c.members[..3]
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(","),
    );
    c.members[i].log_to = Some(log.clone());
    c.members[i].start();

    // Raft traffic signed by the rogue CA: a vote of a much higher term that, accepted, would
    // depose the leader (a transfer vote ignores leader stickiness).
    let st = block_on(async {
        admin(&pki, c.members[leader].client, As::Cert("root"))
            .await
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    });
    let vote = flotilla_proto::raft::RaftEnvelope {
        cluster_id: st.cluster_id,
        from: st
            .members
            .iter()
            .find(|m| m.id != st.id)
            .expect("a follower")
            .id,
        to: st.id,
        term: term + 1000,
        body: Some(flotilla_proto::raft::raft_envelope::Body::Vote(
            flotilla_proto::raft::Vote {
                last_index: u64::MAX / 2,
                last_term: term + 999,
                transfer: true,
            },
        )),
    };
    let send = |identity: (PathBuf, PathBuf), env: flotilla_proto::raft::RaftEnvelope| {
        block_on(async {
            let ch = channel(
                &dialer(&pki.ca_file(), Some(identity)),
                c.members[leader].peer,
            )
            .await?;
            let mut peer = flotilla_proto::raft::peer_client::PeerClient::new(ch);
            peer.stream(futures::stream::iter(vec![env]))
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    };
    let rogue_peer = (
        rogue.dir.join("rogue-peer.crt"),
        rogue.dir.join("rogue-peer.key"),
    );
    let refused = send(rogue_peer, vote.clone());
    assert!(refused.is_err(), "the rogue's vote was delivered");
    // The same channel setup with a member's real peer certificate reaches the peer service
    // (which then refuses a foreign cluster id): the refusal above is the certificate's.
    let real_peer = (pki.dir.join("m2-peer.crt"), pki.dir.join("m2-peer.key"));
    let foreign = flotilla_proto::raft::RaftEnvelope {
        cluster_id: st.cluster_id ^ 1,
        ..vote
    };
    let reached = send(real_peer, foreign).expect_err("a foreign cluster id is refused");
    assert!(reached.starts_with("FailedPrecondition"), "{reached}");

    // The rogue gives up: every attempt failed at the TLS handshake.
    let status = wait_until(PATIENCE, "the rogue member gives up joining", || {
        c.members[i]
            .child
            .as_mut()
            .and_then(|ch| ch.try_wait().expect("wait"))
    });
    c.members[i].child = None;
    assert!(!status.success(), "the rogue joined");
    let log = std::fs::read_to_string(&log).expect("rogue log");
    assert!(log.contains("join attempt failed"), "{log}");

    // The cluster is unaffected: same members, writes go on, and no member ever saw the
    // rogue's term (a vote it accepted would have moved it there). An ordinary election under
    // load may still bump the term by one or two; the rogue's is a thousand ahead.
    assert_eq!(members(&pki, &https_all(&c)), before);
    for m in &c.members[..3] {
        let (_, _, t) = status_of(&pki, m).expect("status");
        assert!(t < term + 1000, "{} reached the rogue's term: {t}", m.name);
    }
    ctl_ok(
        &pki,
        &https_all(&c),
        As::Anonymous,
        &["put", "after", "rogue"],
    );
}

/// Writes `files` into a new version directory of a Kubernetes-style Secret volume at `dir`
/// and swaps the `..data` symlink to it, atomically (rename over the old link), as the kubelet
/// does. The first call also creates the per-file symlinks.
fn secret_swap(dir: &Path, version: u32, files: &[(&str, &[u8])]) {
    use std::os::unix::fs::symlink;
    let v = format!("..v{version}");
    std::fs::create_dir_all(dir.join(&v)).expect("version dir");
    for (name, contents) in files {
        std::fs::write(dir.join(&v).join(name), contents).expect("write");
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&v, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).expect("file symlink");
        }
    }
}

/// The serial (hex) of the certificate a new TLS connection to `port` is served.
async fn served_serial(ca: &Path, port: u16) -> Option<String> {
    let config = ClientSpec {
        ca: &std::fs::read(ca).ok()?,
        identity: None,
    }
    .build()
    .ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let s = tls.connect(name, tcp).await.ok()?;
    let leaf = s.get_ref().1.peer_certificates()?.first()?.clone();
    flotilla_node::tls::cert::serial_hex(leaf.as_ref())
}

fn serial_of(issued: &Issued) -> String {
    let der = flotilla_node::tls::config::certs(issued.cert_pem.as_bytes(), "t").expect("pem");
    flotilla_node::tls::cert::serial_hex(der[0].as_ref()).expect("serial")
}

/// One HTTP/1.1 exchange (`GET /version`) on an open TLS connection: the status code.
fn get_version(s: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>) -> u16 {
    s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("flotilla\"") {
        let n = s.read(&mut chunk).expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_rotated_server_certificate_reaches_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"), "rotation CA");
    let first = pki.ca.issue("m1", SANS, Usage::Server).expect("first");
    let secret = dir.path().join("secret");
    let ca_pem = pki.ca.cert_pem();
    secret_swap(
        &secret,
        1,
        &[
            ("tls.crt", first.cert_pem.as_bytes()),
            ("tls.key", first.key_pem.as_bytes()),
            ("ca.crt", ca_pem.as_bytes()),
        ],
    );
    let mut c = Cluster::new(1, &[]);
    let s = |f: &str| secret.join(f).display().to_string();
    c.members[0].extra = vec![
        "--cert-file".into(),
        s("tls.crt"),
        "--key-file".into(),
        s("tls.key"),
        "--trusted-ca-file".into(),
        s("ca.crt"),
        "--tls-reload-interval".into(),
        "200ms".into(),
    ];
    let log = dir.path().join("m1.log");
    c.members[0].log_to = Some(log.clone());
    c.members[0].start();
    wait_ready(&c, &pki);
    let port = c.members[0].client;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    assert_eq!(
        rt.block_on(served_serial(&pki.ca_file(), port)),
        Some(serial_of(&first))
    );

    // Clients connected before the rotation: a tonic channel (h2) and a raw TLS connection.
    let kv = rt.block_on(async {
        flotilla_proto::etcdserverpb::kv_client::KvClient::new(
            channel(&dialer(&pki.ca_file(), None), port)
                .await
                .expect("connect"),
        )
    });
    let put = |kv: &mut flotilla_proto::etcdserverpb::kv_client::KvClient<Channel>, k: &str| {
        rt.block_on(kv.clone().put(flotilla_proto::etcdserverpb::PutRequest {
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .map(|_| ())
    };
    let mut kv = kv;
    put(&mut kv, "before").expect("put before the rotation");
    let mut old = {
        let mut config = ClientSpec {
            ca: ca_pem.as_bytes(),
            identity: None,
        }
        .build()
        .expect("config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        rustls::StreamOwned::new(conn, tcp)
    };
    assert_eq!(get_version(&mut old), 200);
    let old_serial = old
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| flotilla_node::tls::cert::serial_hex(c.as_ref()));
    assert_eq!(old_serial, Some(serial_of(&first)));

    // The kubelet's swap: a new certificate from the same CA, new serial, one more SAN.
    let second = pki
        .ca
        .issue(
            "m1",
            &["127.0.0.1", "localhost", "m1.example"],
            Usage::Server,
        )
        .expect("second");
    assert_ne!(serial_of(&first), serial_of(&second));
    secret_swap(
        &secret,
        2,
        &[
            ("tls.crt", second.cert_pem.as_bytes()),
            ("tls.key", second.key_pem.as_bytes()),
            ("ca.crt", ca_pem.as_bytes()),
        ],
    );
    wait_until(
        Duration::from_secs(20),
        "new connections get the new certificate",
        || {
            (rt.block_on(served_serial(&pki.ca_file(), port)) == Some(serial_of(&second)))
                .then_some(())
        },
    );
    // The connections made before the rotation keep working.
    assert_eq!(
        get_version(&mut old),
        200,
        "the old TLS connection still serves"
    );
    put(&mut kv, "after").expect("the old channel still serves");
    ctl_ok(
        &pki,
        &https(&c.members[0]),
        As::Anonymous,
        &["get", "after"],
    );
    wait_until(
        Duration::from_secs(5),
        "the reload is logged at INFO",
        || {
            let l = std::fs::read_to_string(&log).unwrap_or_default();
            l.contains("TLS files changed: reloaded").then_some(())
        },
    );

    // A broken update is refused and the current certificate keeps serving.
    secret_swap(
        &secret,
        3,
        &[
            (
                "tls.crt",
                b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
            ),
            ("tls.key", second.key_pem.as_bytes()),
            ("ca.crt", ca_pem.as_bytes()),
        ],
    );
    wait_until(
        Duration::from_secs(10),
        "the broken files are refused with a WARN",
        || {
            let l = std::fs::read_to_string(&log).unwrap_or_default();
            l.contains("new TLS files refused").then_some(())
        },
    );
    assert_eq!(
        rt.block_on(served_serial(&pki.ca_file(), port)),
        Some(serial_of(&second))
    );
    put(&mut kv, "still").expect("still serving");
}

#[test]
fn admin_changes_need_a_client_certificate_and_status_stays_open() {
    let (c, pki) = tls_cluster(3, false, &[]);
    let leader = wait_ready(&c, &pki);
    let all = https_all(&c);
    let before = members(&pki, &all);
    let lport = c.members[leader].client;
    let st = block_on(async {
        admin(&pki, lport, As::Anonymous)
            .await
            .status(StatusRequest {})
            .await
            .expect("Status needs no certificate")
            .into_inner()
    });
    let followers: Vec<u64> = st
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != st.id)
        .collect();
    assert_eq!(followers.len(), 2);

    // Without a certificate, on the leader and on a follower: refused, nothing changes.
    for port in [lport, c.members[(leader + 1) % 3].client] {
        let (remove, transfer) = block_on(async {
            let mut a = admin(&pki, port, As::Anonymous).await;
            let remove = a
                .remove_member(RemoveMemberRequest {
                    member_id: followers[0],
                })
                .await
                .expect_err("remove without identity");
            let transfer = a
                .transfer_leadership(TransferLeadershipRequest {
                    target_id: followers[0],
                })
                .await
                .expect_err("transfer without identity");
            (remove, transfer)
        });
        assert_eq!(remove.code(), Code::PermissionDenied, "{remove:?}");
        assert_eq!(transfer.code(), Code::PermissionDenied, "{transfer:?}");
    }
    let out = ctl(
        &pki,
        &all,
        As::Anonymous,
        &["member", "remove", &format!("{:x}", followers[0])],
    );
    assert!(text(&out).contains("PermissionDenied"), "{}", text(&out));
    let out = ctl(
        &pki,
        &all,
        As::Anonymous,
        &["move-leader", &format!("{:x}", followers[0])],
    );
    assert!(text(&out).contains("PermissionDenied"), "{}", text(&out));
    assert_eq!(
        members(&pki, &all),
        before,
        "member list unchanged after the refusals"
    );
    assert_eq!(
        status_of(&pki, &c.members[leader]).map(|s| s.1),
        Some(st.id)
    );

    // With the client certificate: accepted.
    let new_leader = block_on(async {
        admin(&pki, lport, As::Cert("root"))
            .await
            .transfer_leadership(TransferLeadershipRequest {
                target_id: followers[0],
            })
            .await
            .expect("transfer with a client certificate")
            .into_inner()
            .leader_id
    });
    assert_eq!(new_leader, followers[0]);
    block_on(async {
        admin(&pki, lport, As::Cert("root"))
            .await
            .remove_member(RemoveMemberRequest {
                member_id: followers[1],
            })
            .await
            .expect("remove with a client certificate")
    });
    wait_until(PATIENCE, "the removal is in the member list", || {
        let list = members(&pki, &https(&c.members[leader]));
        (list.len() == 2 && list.iter().all(|m| m.0 != followers[1])).then_some(())
    });
}

#[test]
fn the_client_certificates_cn_is_the_auth_user_under_client_cert_auth() {
    let (c, pki) = tls_cluster(1, true, &["--bcrypt-cost", "4"]);
    let ep = https(&c.members[0]);
    let root = As::Cert("root");
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix",
        ],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        ctl_ok(&pki, &ep, root, args);
    }
    let alice = As::Cert("alice");
    ctl_ok(&pki, &ep, alice, &["put", "app/x", "1"]);
    let out = ctl(&pki, &ep, alice, &["put", "other", "1"]);
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    let got = ctl_ok(&pki, &ep, alice, &["get", "app/x", "--print-value-only"]);
    assert_eq!(got.trim(), "1");
    // The certificate of a user that does not exist is nobody with rights.
    let out = ctl(&pki, &ep, As::Cert("mallory"), &["get", "app/x"]);
    assert!(!out.status.success(), "{}", text(&out));
    // root's certificate is root; a token wins over the certificate, as in etcd.
    ctl_ok(&pki, &ep, root, &["put", "other", "1"]);
    ctl_ok(
        &pki,
        &ep,
        alice,
        &["--user", "root:rootpw", "put", "other", "2"],
    );

    // The admin gate: under --client-cert-auth with auth on, a certificate is its CN's user.
    let port = c.members[0].client;
    let remove = |who| {
        block_on(async {
            admin(&pki, port, who)
                .await
                .remove_member(RemoveMemberRequest { member_id: 0x1234 })
                .await
                .expect_err("no such member")
                .code()
        })
    };
    assert_eq!(remove(alice), Code::PermissionDenied);
    assert_eq!(remove(root), Code::NotFound, "root passes the gate");

    // A member joining now presents its peer certificate (CN m2, no user): the client port
    // refuses its AddLearner, and it asks the leader's peer port, where mutual TLS admits it.
    let mut c = c;
    let i = c.add_joiner("m2");
    c.members[i].extra = pki.member_flags("m2", true);
    c.members[i]
        .extra
        .extend(["--bcrypt-cost".into(), "4".into()]);
    let log = c.dir.path().join("m2.log");
    c.members[i].log_to = Some(log.clone());
    c.members[i].start();
    wait_until(PATIENCE, "m2 joins as a learner and starts", || {
        members(&pki, &ep)
            .into_iter()
            .any(|(_, n, learner)| n == "m2" && learner)
            .then_some(())
    });
    let log = std::fs::read_to_string(&log).expect("m2 log");
    assert!(log.contains("asking the leader's peer port"), "{log}");
}

#[test]
fn members_join_over_tls_with_their_peer_certificate() {
    let (mut c, pki) = tls_cluster(1, false, &[]);
    let ep1 = https(&c.members[0]);
    ctl_ok(&pki, &ep1, As::Anonymous, &["put", "j", "1"]);

    // --join through the client port: https:// by default (the member serves TLS itself),
    // AddLearner accepted on the strength of the joiner's peer certificate.
    let i = c.add_joiner("m2");
    c.members[i].extra = pki.member_flags("m2", false);
    c.members[i].start();
    let id2 = wait_until(PATIENCE, "m2 joins as a learner and starts", || {
        members(&pki, &ep1)
            .into_iter()
            .find(|(_, n, learner)| n == "m2" && *learner)
            .map(|(id, _, _)| id)
    });
    wait_until(PATIENCE, "m2 is promoted once caught up", || {
        ctl(
            &pki,
            &ep1,
            As::Cert("root"),
            &["member", "promote", &format!("{id2:x}")],
        )
        .status
        .success()
        .then_some(())
    });
    let got = ctl_ok(
        &pki,
        &https(&c.members[i]),
        As::Anonymous,
        &["get", "j", "--print-value-only"],
    );
    assert_eq!(got.trim(), "1");

    // `member add` + `--initial-cluster-state existing`: the lookup on the peers' Admin
    // service runs over mutual TLS.
    let j = c.add_joiner("m3");
    c.members[j].join = None;
    let m3_peer = format!("https://127.0.0.1:{}", c.members[j].peer);
    ctl_ok(
        &pki,
        &ep1,
        As::Cert("root"),
        &["member", "add", "m3", &format!("--peer-urls={m3_peer}")],
    );
    let ic = c.members[..3]
        .iter()
        .map(|m| format!("{}=https://127.0.0.1:{}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",");
    c.members[j].initial_cluster = Some(ic);
    c.members[j].extra = pki.member_flags("m3", false);
    c.members[j]
        .extra
        .extend(["--initial-cluster-state".into(), "existing".into()]);
    c.members[j].start();
    wait_until(PATIENCE, "m3 serves linearizable reads", || {
        let out = ctl(
            &pki,
            &https(&c.members[j]),
            As::Anonymous,
            &["get", "j", "--print-value-only"],
        );
        (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1").then_some(())
    });
    // m3 publishes its name once it runs (`member list` shows it unstarted until then).
    wait_until(PATIENCE, "three started voters", || {
        let list = members(&pki, &ep1);
        let started = list
            .iter()
            .all(|(_, name, learner)| !name.is_empty() && !learner);
        (list.len() == 3 && started).then_some(())
    });
}

#[test]
fn flotilla_dev_tls_serves_the_etcdctl_line_it_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_port_block();
    let mut dev = Command::new(common::flotilla_bin())
        .args([
            "dev",
            "--tls",
            "--tick-ms",
            "50",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("FLOTILLA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("dev.log")).expect("log file"))
        .spawn()
        .expect("spawn flotilla dev");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = dev.stdout.take().expect("stdout");
    let dev = Kill(dev);
    // The line to try: `ETCDCTL_API=3 etcdctl --cacert … --endpoints=… put hello world`.
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader keeps draining stdout to the end: a closed pipe would make the dev cluster's
    // next `println!` fail, and it stops (loop 3 run 7 caught exactly that).
    std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        while let Some(Ok(l)) = lines.next() {
            if l.contains("etcdctl --cacert") && l.ends_with("put hello world") {
                let _ = tx.send(l);
            }
        }
    });
    let line = rx
        .recv_timeout(PATIENCE)
        .expect("the etcdctl line is printed");
    let args: Vec<String> = line
        .split_whitespace()
        .skip_while(|w| *w != "etcdctl")
        .skip(1)
        .map(str::to_string)
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("--endpoints=https://")),
        "{line}"
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let out = Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .args(["--command-timeout=5s", "--dial-timeout=2s"])
            .args(&args)
            .output()
            .expect("etcdctl");
        if out.status.success() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default();
            panic!(
                "the printed line `{line}` fails: {}\n--- flotilla dev:\n{log}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ca = dir.path().join("tls").join("ca.crt");
    let pki_dir = dir.path().join("tls");
    for name in [
        "ca.crt",
        "client.crt",
        "client.key",
        "n1.crt",
        "n1-peer.key",
    ] {
        assert!(pki_dir.join(name).exists(), "{name} generated");
    }
    // The members' peer ports want a certificate: a client without one is refused.
    let d = dialer(&ca, None);
    let refused = block_on(async {
        let ch = channel(&d, base + 1).await?;
        AdminClient::new(ch)
            .status(StatusRequest {})
            .await
            .map(|_| ())
            .map_err(|s| s.to_string())
    });
    assert!(
        refused.is_err(),
        "the peer port served a client without a certificate"
    );
    drop(dev);
}

#[test]
fn without_tls_admin_changes_are_open_until_auth_and_then_need_root() {
    let c = Cluster::start(1, &["--bcrypt-cost", "4"]);
    let ep = c.members[0].endpoint();
    let remove = |user: Option<&str>| {
        let mut args = vec!["member", "remove", "1234"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        text(&common::etcdctl(&ep, &args))
    };
    // A plain development cluster: open, as etcd's without auth (the member is not found).
    assert!(
        remove(None).contains("member not found"),
        "{}",
        remove(None)
    );
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:apw"],
        &["auth", "enable"],
    ] {
        common::etcdctl_ok(&ep, args);
    }
    let anonymous = remove(None);
    assert!(anonymous.contains("permission denied"), "{anonymous}");
    let alice = remove(Some("alice:apw"));
    assert!(alice.contains("permission denied"), "{alice}");
    let root = remove(Some("root:rootpw"));
    assert!(
        root.contains("member not found"),
        "root passes the gate: {root}"
    );
}
