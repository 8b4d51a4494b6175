//! etcd's Auth service end to end, driven by unchanged clients (etcdctl 3.4 and the etcd-client
//! crate) against real member processes: users and roles, `auth enable`, permissions on every
//! kind of request, etcd's error texts, and auth state that survives restarts, reaches a member
//! through a snapshot, and tokens that work on every member.

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, etcdctl_ok, wait_until};
use etcd_client::{Client, ConnectOptions, Txn, TxnOp, WatchOptions};
use flotilla_proto::etcdserverpb::auth_client::AuthClient;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{
    AuthEnableRequest, AuthUserAddRequest, AuthenticateRequest, PutRequest, RangeRequest,
};
use tonic::Code;

const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:apw";
/// How long to wait for a cluster to elect or a member to catch up: generous, because these
/// tests share a small machine with builds and other clusters.
const PATIENCE: Duration = Duration::from_secs(90);
/// bcrypt at etcd's minimum cost: the tests authenticate often, and debug builds hash slowly.
const FAST_BCRYPT: [&str; 2] = ["--bcrypt-cost", "4"];

/// Runs one async exchange on a fresh runtime.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .expect("connect")
}

/// A request carrying `token` in the metadata key etcd clients use.
fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("token", token.parse().expect("ascii token"));
    r
}

/// etcdctl's stderr and stdout for a command expected to fail.
fn etcdctl_err(ep: &str, args: &[&str]) -> String {
    let out = etcdctl(ep, args);
    assert!(
        !out.status.success(),
        "etcdctl {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `args` as `user`. etcdctl authenticates while it dials, so the dial gets more time than the
/// common helper's 2 s (the last `--dial-timeout` wins): Authenticate waits for a leader.
fn as_user<'a>(user: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--dial-timeout=10s", "--user", user];
    v.extend_from_slice(args);
    v
}

/// root (with the root role), role r1 (readwrite `foo`, read prefix `pre/`, write `[k1, k5)`)
/// and alice (r1); then `auth enable`.
fn set_up_and_enable(ep: &str) {
    for args in [
        &["user", "add", "root", "--new-user-password=rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "r1"],
        &["role", "grant-permission", "r1", "readwrite", "foo"],
        &["role", "grant-permission", "r1", "read", "--prefix", "pre/"],
        &["role", "grant-permission", "r1", "write", "k1", "k5"],
        &["user", "add", "alice", "--new-user-password=apw"],
        &["user", "grant-role", "alice", "r1"],
    ] {
        etcdctl_ok(ep, args);
    }
    assert_eq!(
        etcdctl_ok(ep, &["auth", "enable"]),
        "Authentication Enabled\n"
    );
}

/// Starts `n` members and waits (patiently) for a leader that serves reads.
fn start_cluster(n: usize, extra: &[&str]) -> Cluster {
    let mut c = Cluster::new(n, extra);
    for m in &mut c.members {
        m.start();
    }
    c.wait_leader(PATIENCE);
    c
}

/// Waits until `ep` serves root's linearizable reads (the common helper reads without a user,
/// which auth refuses).
fn wait_serving_root(ep: &str) {
    wait_until(PATIENCE, "an authenticated read", || {
        etcdctl(ep, &as_user(ROOT, &["get", "probe"]))
            .status
            .success()
            .then_some(())
    });
}

#[test]
fn etcdctl_manages_users_and_roles_and_enforces_permissions() {
    let c = start_cluster(1, &FAST_BCRYPT);
    let ep = c.members[0].endpoint();

    // Before auth is enabled: the root rules (through the API: etcdctl's `auth enable` adds
    // the root role and grants it itself), and management errors in etcd's words.
    let enable = || {
        block_on(async {
            AuthClient::new(channel(&ep).await)
                .auth_enable(AuthEnableRequest {})
                .await
                .map(|_| ())
                .unwrap_err()
        })
    };
    let e = enable();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: root user does not exist"
        )
    );
    etcdctl_ok(&ep, &["user", "add", "root", "--new-user-password=rootpw"]);
    let e = enable();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: root user does not have root role"
        )
    );
    for args in [
        &["role", "add", "root"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "r1"],
        &["role", "grant-permission", "r1", "readwrite", "foo"],
        &["role", "grant-permission", "r1", "read", "--prefix", "pre/"],
        &["role", "grant-permission", "r1", "write", "k1", "k5"],
        &["user", "add", "alice", "--new-user-password=apw"],
        &["user", "grant-role", "alice", "r1"],
    ] {
        etcdctl_ok(&ep, args);
    }
    for (args, want) in [
        (
            &["user", "add", "alice", "--new-user-password=x"][..],
            "etcdserver: user name already exists",
        ),
        (
            &["role", "add", "r1"],
            "etcdserver: role name already exists",
        ),
        (
            &["user", "grant-role", "alice", "nosuch"],
            "etcdserver: role name not found",
        ),
        (
            &["user", "revoke-role", "alice", "nosuch"],
            "etcdserver: role is not granted to the user",
        ),
        (
            &["role", "revoke-permission", "r1", "nokey"],
            "etcdserver: permission is not granted to the role",
        ),
        (
            &["user", "grant-role", "nobody", "r1"],
            "etcdserver: user name not found",
        ),
    ] {
        let err = etcdctl_err(&ep, args);
        assert!(err.contains(&format!("Error: {want}")), "{args:?}: {err}");
    }
    assert_eq!(
        etcdctl_ok(&ep, &["auth", "enable"]),
        "Authentication Enabled\n"
    );

    // Permissions: readwrite foo, read prefix pre/, write [k1, k5).
    etcdctl_ok(&ep, &as_user(ROOT, &["put", "foo", "bar"]));
    assert_eq!(
        etcdctl_ok(&ep, &as_user(ALICE, &["get", "foo"])),
        "foo\nbar\n"
    );
    etcdctl_ok(&ep, &as_user(ALICE, &["put", "foo", "baz"]));
    etcdctl_ok(&ep, &as_user(ALICE, &["put", "k3", "v"]));
    etcdctl_ok(&ep, &as_user(ALICE, &["get", "pre/", "--prefix"]));
    let denied = "Error: etcdserver: permission denied";
    for args in [
        &["put", "pre/x", "1"][..],
        &["put", "k5", "v"],
        &["get", "k3"],
        &["get", "foo", "--prefix"],
        &["del", "foo", "--prefix"],
        &["del", "k3", "--prev-kv"],
        &["user", "add", "bob", "--new-user-password=b"],
        &["user", "list"],
        &["role", "list"],
        &["user", "get", "root"],
        &["role", "get", "root"],
        &["auth", "disable"],
    ] {
        let err = etcdctl_err(&ep, &as_user(ALICE, args));
        assert!(err.contains(denied), "{args:?}: {err}");
    }
    // etcd 3.4's admin-only Maintenance calls answer with the raw auth error.
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("s.db");
    let snap = snap.to_str().expect("utf-8 path");
    for args in [
        &["endpoint", "hashkv"][..],
        &["snapshot", "save", snap],
        &["defrag"],
    ] {
        let err = etcdctl_err(&ep, &as_user(ALICE, args));
        assert!(
            err.contains("rpc error: code = Unknown desc = auth: permission denied"),
            "{args:?}: {err}"
        );
    }
    etcdctl_ok(&ep, &as_user(ROOT, &["endpoint", "hashkv"]));
    etcdctl_ok(&ep, &as_user(ROOT, &["snapshot", "save", snap]));

    // A user reads itself and its roles.
    assert_eq!(
        etcdctl_ok(&ep, &as_user(ALICE, &["user", "get", "alice"])),
        "User: alice\nRoles: r1\n"
    );
    assert!(etcdctl_ok(&ep, &as_user(ALICE, &["role", "get", "r1"])).contains("[k1, k5)"));

    // Txn: a denied operation in either branch refuses the whole txn, whichever runs.
    let txn = |compare: &str, success: &str, failure: &str| {
        let mut cmd = std::process::Command::new(common::etcdctl_path());
        cmd.env("ETCDCTL_API", "3")
            .args([&format!("--endpoints={ep}"), "--user", ALICE, "txn"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("etcdctl txn");
        use std::io::Write as _;
        write!(
            child.stdin.take().expect("stdin"),
            "{compare}\n\n{success}\n\n{failure}\n\n"
        )
        .expect("txn input");
        child.wait_with_output().expect("txn output")
    };
    let out = txn(r#"value("foo") = "baz""#, "put foo ok", "put k9 no");
    assert!(String::from_utf8_lossy(&out.stderr).contains(denied));
    let out = txn(r#"value("foo") = "baz""#, "put foo ok", "get k9");
    assert!(String::from_utf8_lossy(&out.stderr).contains(denied));
    let out = txn(r#"value("k9") = "x""#, "put foo ok", "put foo no");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(denied),
        "compare on k9"
    );
    let out = txn(r#"value("foo") = "zzz""#, "put foo ok", "get pre/a");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FAILURE\n\n");
    assert_eq!(
        etcdctl_ok(&ep, &as_user(ALICE, &["get", "foo"])),
        "foo\nbaz\n"
    );

    // No token, a wrong password, an unknown user.
    for (args, want) in [
        (&["get", "foo"][..], "etcdserver: user name is empty"),
        (&["put", "foo", "x"], "etcdserver: user name is empty"),
        (
            &["user", "add", "bob", "--new-user-password=b"],
            "etcdserver: user name is empty",
        ),
        (
            &["--user", "alice:wrong", "get", "foo"],
            "etcdserver: authentication failed, invalid user ID or password",
        ),
        (
            &["--user", "nobody:x", "get", "foo"],
            "etcdserver: authentication failed, invalid user ID or password",
        ),
    ] {
        let err = etcdctl_err(&ep, args);
        assert!(err.contains(&format!("Error: {want}")), "{args:?}: {err}");
    }

    // The root rules while enabled.
    for args in [
        &["user", "revoke-role", "root", "root"][..],
        &["user", "delete", "root"],
        &["role", "delete", "root"],
    ] {
        let err = etcdctl_err(&ep, &as_user(ROOT, args));
        assert!(
            err.contains("Error: etcdserver: invalid auth management"),
            "{err}"
        );
    }
    assert_eq!(
        etcdctl_ok(&ep, &as_user(ROOT, &["user", "list"])),
        "alice\nroot\n"
    );
    // A user without a password cannot authenticate (etcd 3.4's raw text, code Unknown).
    etcdctl_ok(
        &ep,
        &as_user(ROOT, &["user", "add", "nopw", "--no-password"]),
    );
    let err = etcdctl_err(&ep, &["--user", "nopw:x", "get", "foo"]);
    assert!(
        err.contains("auth: authentication failed, password was given for no password user"),
        "{err}"
    );

    // Revoking a permission takes effect at once.
    etcdctl_ok(
        &ep,
        &as_user(ROOT, &["role", "revoke-permission", "r1", "foo"]),
    );
    assert!(etcdctl_err(&ep, &as_user(ALICE, &["get", "foo"])).contains(denied));

    assert_eq!(
        etcdctl_ok(&ep, &as_user(ROOT, &["auth", "disable"])),
        "Authentication Disabled\n"
    );
    assert_eq!(etcdctl_ok(&ep, &["get", "foo"]), "foo\nbaz\n");
}

#[test]
fn etcd_client_with_user_is_refused_what_its_roles_do_not_allow() {
    let c = start_cluster(1, &["--bcrypt-cost", "4", "--max-request-bytes", "4096"]);
    let ep = c.members[0].endpoint();
    set_up_and_enable(&ep);
    block_on(async {
        let root_opts = ConnectOptions::new().with_user("root", "rootpw");
        let mut root = Client::connect([&ep], Some(root_opts)).await.expect("root");
        let opts = ConnectOptions::new().with_user("alice", "apw");
        let mut alice = Client::connect([&ep], Some(opts)).await.expect("alice");

        alice.put("foo", "1", None).await.expect("put foo");
        let got = alice.get("foo", None).await.expect("get foo");
        assert_eq!(got.kvs()[0].value(), b"1");

        let status = |e: etcd_client::Error| match e {
            etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("not a gRPC status: {other}"),
        };
        let denied = (
            Code::PermissionDenied,
            "etcdserver: permission denied".to_string(),
        );
        assert_eq!(
            status(alice.put("k9", "x", None).await.unwrap_err()),
            denied
        );
        assert_eq!(status(alice.get("k3", None).await.unwrap_err()), denied);
        assert_eq!(status(alice.delete("k9", None).await.unwrap_err()), denied);

        // Both branches and nested txns are checked, whatever the compare decides.
        let txns = [
            Txn::new()
                .and_then([TxnOp::put("foo", "2", None)])
                .or_else([TxnOp::put("k9", "x", None)]),
            Txn::new().or_else([TxnOp::get("k9", None)]),
            Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::delete("k9", None)]))]),
        ];
        for t in txns {
            assert_eq!(status(alice.txn(t).await.unwrap_err()), denied);
        }
        let got = alice.get("foo", None).await.expect("get foo");
        assert_eq!(got.kvs()[0].value(), b"1", "a refused txn changed nothing");

        // A watch on a range alice may not read is created and canceled, as etcd answers.
        let mut stream = alice
            .watch("k9", Some(WatchOptions::new()))
            .await
            .expect("watch stream");
        let first = stream
            .message()
            .await
            .expect("watch answer")
            .expect("a response");
        assert!(first.created() && first.canceled(), "{first:?}");
        assert_eq!(first.watch_id(), -1);
        assert_eq!(
            first.cancel_reason(),
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        );

        // Revoking a lease needs write permission on every key attached to it.
        let lease = root.lease_grant(60, None).await.expect("grant").id();
        root.put(
            "k9",
            "leased",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("root put");
        assert_eq!(status(alice.lease_revoke(lease).await.unwrap_err()), denied);
        assert_eq!(
            status(alice.lease_time_to_live(lease, None).await.unwrap_err()),
            denied
        );
        root.lease_revoke(lease).await.expect("root revokes");

        // A wrong password does not connect.
        let bad = ConnectOptions::new().with_user("alice", "nope");
        let err = Client::connect([&ep], Some(bad))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            status(err),
            (
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password".to_string()
            )
        );

        // Malformed and unknown tokens: etcd's error, and nothing changes.
        let ch = channel(&ep).await;
        let before = root
            .get("foo", None)
            .await
            .expect("get")
            .header()
            .unwrap()
            .revision();
        for token in ["garbage", "", "abc.", "abc.1.2", "abcdefghijklmnop.1"] {
            let put = PutRequest {
                key: b"foo".to_vec(),
                value: b"forged".to_vec(),
                ..Default::default()
            };
            let e = KvClient::new(ch.clone())
                .put(with_token(put, token))
                .await
                .unwrap_err();
            assert_eq!(
                (e.code(), e.message()),
                (Code::Unauthenticated, "etcdserver: invalid auth token"),
                "token {token:?}"
            );
        }
        let after = root.get("foo", None).await.expect("get");
        assert_eq!(after.header().unwrap().revision(), before);
        assert_eq!(after.kvs()[0].value(), b"1");

        // An oversized request is refused before it is proposed.
        let big = AuthUserAddRequest {
            name: "u".repeat(5000),
            password: "p".into(),
            options: None,
        };
        let token = root_token(&ep).await;
        let e = AuthClient::new(ch.clone())
            .user_add(with_token(big, &token))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        let users = root.user_list().await.expect("users");
        assert_eq!(users.users(), ["alice", "root"]);
    });
}

async fn root_token(ep: &str) -> String {
    let req = AuthenticateRequest {
        name: "root".into(),
        password: "rootpw".into(),
    };
    AuthClient::new(channel(ep).await)
        .authenticate(req)
        .await
        .expect("authenticate")
        .into_inner()
        .token
}

#[test]
fn auth_survives_restarts_reaches_a_member_by_snapshot_and_tokens_work_on_every_member() {
    let mut c = start_cluster(3, &["--bcrypt-cost", "4", "--snapshot-threshold", "20"]);
    let eps = c.endpoints();
    set_up_and_enable(&eps);
    etcdctl_ok(&eps, &as_user(ROOT, &["put", "foo", "bar"]));

    // A token issued through one member is accepted by the others.
    let token = block_on(root_token(&c.members[0].endpoint()));
    for m in &c.members[1..] {
        let ep = m.endpoint();
        let got = block_on(async {
            let req = RangeRequest {
                key: b"foo".to_vec(),
                ..Default::default()
            };
            KvClient::new(channel(&ep).await)
                .range(with_token(req, &token))
                .await
        })
        .expect("range with another member's token");
        assert_eq!(got.into_inner().kvs[0].value, b"bar");
    }

    // One member misses enough entries to need a snapshot; the others restart.
    let lagging = 2;
    c.members[lagging].kill9();
    let live = c.endpoints();
    // It may have led: wait for the others to elect (etcdctl authenticates within its dial
    // timeout, and Authenticate waits for a leader).
    wait_serving_root(&live);
    for i in 0..60 {
        etcdctl_ok(&live, &as_user(ROOT, &["put", &format!("s{i:02}"), "v"]));
    }
    etcdctl_ok(
        &live,
        &as_user(ROOT, &["role", "grant-permission", "r1", "read", "s00"]),
    );
    for m in &mut c.members[..lagging] {
        m.kill9();
        m.start();
    }
    wait_serving_root(&c.endpoints());
    // Auth is still on after the restart; the old simple token died with the process.
    let ep0 = c.members[0].endpoint();
    assert!(etcdctl_err(&ep0, &["get", "foo"]).contains("etcdserver: user name is empty"));
    let e = block_on(async {
        let req = RangeRequest {
            key: b"foo".to_vec(),
            ..Default::default()
        };
        KvClient::new(channel(&ep0).await)
            .range(with_token(req, &token))
            .await
    })
    .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );
    assert_eq!(
        etcdctl_ok(&ep0, &as_user(ALICE, &["get", "foo"])),
        "foo\nbar\n"
    );

    // The lagging member catches up by snapshot and enforces the same users and roles,
    // including the grant it only knows from the snapshot.
    c.members[lagging].start();
    let lep = c.members[lagging].endpoint();
    wait_until(
        Duration::from_secs(30),
        "the lagging member serves s00 to alice",
        || {
            let out = etcdctl(&lep, &as_user(ALICE, &["get", "s00", "--consistency=s"]));
            (out.status.success() && out.stdout == b"s00\nv\n").then_some(())
        },
    );
    let err = etcdctl_err(&lep, &as_user(ALICE, &["get", "s01", "--consistency=s"]));
    assert!(err.contains("etcdserver: permission denied"), "{err}");
    assert!(
        etcdctl_err(&lep, &["get", "s00", "--consistency=s"])
            .contains("etcdserver: user name is empty")
    );
    let (_, metrics) = c.members[lagging].http_get("/metrics").expect("metrics");
    let snaps: f64 = metrics
        .lines()
        .find(|l| l.starts_with("flotilla_snapshots_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("snapshot counter");
    assert!(snaps >= 1.0, "the lagging member installed no snapshot");
}

#[test]
fn jwt_tokens_work_on_every_member_and_go_stale_when_auth_changes() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let flag = format!(
        "jwt,pub-key={fixtures}/jwt-es256-public.pem,priv-key={fixtures}/jwt-es256-private.pem,sign-method=ES256,ttl=5m"
    );
    let c = start_cluster(3, &["--bcrypt-cost", "4", "--auth-token", &flag]);
    let eps = c.endpoints();
    set_up_and_enable(&eps);
    // etcdctl works with JWTs as with simple tokens.
    etcdctl_ok(&eps, &as_user(ALICE, &["put", "foo", "1"]));

    let ep0 = c.members[0].endpoint();
    let ep1 = c.members[1].endpoint();
    let token = block_on(async {
        let req = AuthenticateRequest {
            name: "alice".into(),
            password: "apw".into(),
        };
        AuthClient::new(channel(&ep0).await)
            .authenticate(req)
            .await
            .expect("authenticate")
            .into_inner()
            .token
    });
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let put = |ep: &str, token: &str, value: &str| {
        let req = PutRequest {
            key: b"foo".to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        };
        block_on(async {
            KvClient::new(channel(ep).await)
                .put(with_token(req, token))
                .await
        })
    };
    put(&ep1, &token, "2").expect("a JWT from member 0 on member 1");

    // A forged token is refused; a change of the auth state makes the token stale.
    let mut forged = token.clone();
    forged.pop();
    let e = put(&ep1, &forged, "3").unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );
    etcdctl_ok(&eps, &as_user(ROOT, &["role", "add", "r2"]));
    let e = put(&ep1, &token, "4").unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old"
        )
    );
    assert_eq!(
        etcdctl_ok(&eps, &as_user(ALICE, &["get", "foo"])),
        "foo\n2\n"
    );
}
