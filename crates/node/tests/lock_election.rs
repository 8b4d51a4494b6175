//! etcd's Lock and Election services, driven by unchanged clients: the Rust `etcd-client`
//! crate's LockClient/ElectionClient (the server-side recipes) and etcdctl 3.4's `lock` and
//! `elect` (the client-side recipes over KV, Lease and Watch, which share the key layout).
//! Waits are bounded; "still blocked" is checked by a bounded wait that must time out.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Cluster, etcdctl_path, wait_until};
use etcd_client::{Client, Error, GetOptions, LockOptions, ProclaimOptions, ResignOptions};

/// Bound on anything that should happen.
const SOON: Duration = Duration::from_secs(15);
/// How long a blocked call is watched for not completing.
const BLOCKED: Duration = Duration::from_millis(700);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.expect("connect")
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    c.lease_grant(ttl, None).await.expect("lease grant").id()
}

async fn lock(c: &mut Client, name: &str, lease: i64) -> Result<Vec<u8>, Error> {
    let r = c
        .lock(name, Some(LockOptions::new().with_lease(lease)))
        .await?;
    Ok(r.key().to_vec())
}

/// The gRPC status inside an etcd-client error.
fn status(e: Error) -> tonic::Status {
    match e {
        Error::GRpcStatus(s) => s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Keys under `prefix`, oldest first.
async fn keys_under(c: &mut Client, prefix: &str) -> Vec<String> {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    let mut kvs: Vec<_> = r.kvs().to_vec();
    kvs.sort_by_key(|kv| kv.create_revision());
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Spawns a Lock call; the handle yields its key.
fn spawn_lock(
    endpoint: &str,
    name: &'static str,
    lease: i64,
) -> tokio::task::JoinHandle<Result<Vec<u8>, Error>> {
    let endpoint = endpoint.to_string();
    tokio::spawn(async move {
        let mut c = connect(&endpoint).await;
        lock(&mut c, name, lease).await
    })
}

/// Asserts the task is still running after [`BLOCKED`].
async fn still_blocked<T: std::fmt::Debug>(h: &mut tokio::task::JoinHandle<T>) {
    if let Ok(r) = tokio::time::timeout(BLOCKED, &mut *h).await {
        panic!("expected the call to block, it returned {r:?}");
    }
}

/// Awaits the task within [`SOON`].
async fn done<T>(h: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(SOON, h)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete in time"))
        .expect("task")
}

#[test]
fn second_locker_blocks_until_the_first_unlocks() {
    let c = Cluster::start(1, &[]);
    let ep = c.members[0].endpoint();
    runtime().block_on(async {
        let mut a = connect(&ep).await;
        let l1 = grant(&mut a, 60).await;
        let l2 = grant(&mut a, 60).await;

        let k1 = lock(&mut a, "lk", l1).await.expect("uncontended lock");
        assert_eq!(k1, format!("lk/{l1:x}").into_bytes(), "etcd's key layout");
        // Locking again with the same lease is the same acquisition, at once.
        assert_eq!(lock(&mut a, "lk", l1).await.expect("relock"), k1);

        let mut waiter = spawn_lock(&ep, "lk", l2);
        still_blocked(&mut waiter).await;
        assert_eq!(
            keys_under(&mut a, "lk/").await,
            [format!("lk/{l1:x}"), format!("lk/{l2:x}")],
            "the waiter queues its key behind the holder's"
        );

        let unlocked = a.unlock(k1.clone()).await.expect("unlock");
        let unlock_rev = unlocked.header().expect("header").revision();
        let k2 = done(waiter, "the waiter's lock")
            .await
            .expect("lock after unlock");
        assert_eq!(k2, format!("lk/{l2:x}").into_bytes());
        assert_eq!(keys_under(&mut a, "lk/").await, [format!("lk/{l2:x}")]);

        // The response header is the read that saw the way clear, after the unlock.
        let mut b = connect(&ep).await;
        let l3 = grant(&mut b, 60).await;
        let r = b
            .lock("other", Some(LockOptions::new().with_lease(l3)))
            .await
            .expect("lock other");
        assert!(r.header().expect("header").revision() > unlock_rev);
    });
}

#[test]
fn the_lock_goes_with_its_lease_revoked_or_expired() {
    let c = Cluster::start(1, &[]);
    let ep = c.members[0].endpoint();
    runtime().block_on(async {
        let mut a = connect(&ep).await;
        let holder = grant(&mut a, 60).await;
        let next = grant(&mut a, 60).await;
        lock(&mut a, "lease-lk", holder).await.expect("lock");

        let mut waiter = spawn_lock(&ep, "lease-lk", next);
        still_blocked(&mut waiter).await;
        a.lease_revoke(holder).await.expect("revoke");
        done(waiter, "lock after revoke")
            .await
            .expect("lock after revoke");

        // A short TTL that is never kept alive: the lock passes on when it expires.
        let short = grant(&mut a, 2).await;
        let after = grant(&mut a, 60).await;
        lock(&mut a, "ttl-lk", short).await.expect("lock ttl-lk");
        let mut waiter = spawn_lock(&ep, "ttl-lk", after);
        still_blocked(&mut waiter).await;
        let k = done(waiter, "lock after expiry")
            .await
            .expect("lock after expiry");
        assert_eq!(k, format!("ttl-lk/{after:x}").into_bytes());
        assert_eq!(
            keys_under(&mut a, "ttl-lk/").await,
            [format!("ttl-lk/{after:x}")]
        );

        // A waiter whose own lease ends while it waits does not get the lock once the way is
        // clear: etcd 3.5's check (3.4.23 answered with a key that no longer existed).
        let holder = grant(&mut a, 60).await;
        let doomed = grant(&mut a, 60).await;
        let k = lock(&mut a, "gone-lk", holder).await.expect("lock gone-lk");
        let mut waiter = spawn_lock(&ep, "gone-lk", doomed);
        still_blocked(&mut waiter).await;
        assert_eq!(
            keys_under(&mut a, "gone-lk/").await.len(),
            2,
            "the waiter queued"
        );
        a.lease_revoke(doomed)
            .await
            .expect("revoke the waiter's lease");
        still_blocked(&mut waiter).await;
        a.unlock(k).await.expect("unlock");
        let st = status(
            done(waiter, "the expired waiter")
                .await
                .expect_err("expired"),
        );
        assert_eq!(st.message(), "mutex: session is expired");
        assert_eq!(st.code(), tonic::Code::Unknown, "{st:?}");
    });
}

#[test]
fn locking_through_a_follower_survives_a_raft_leader_change_and_cancelled_waiters_leave() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(SOON);
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;
    let (ep_f1, ep_f2) = (c.members[f1].endpoint(), c.members[f2].endpoint());
    let rt = runtime();
    let (holder_key, waiter) = rt.block_on(async {
        let mut a = connect(&ep_f1).await;
        let l1 = grant(&mut a, 60).await;
        let l2 = grant(&mut a, 60).await;
        let l3 = grant(&mut a, 60).await;
        let k1 = lock(&mut a, "flk", l1).await.expect("lock via a follower");

        // A waiter whose caller gives up takes its key back out.
        let mut b = connect(&ep_f2).await;
        let gave_up = tokio::time::timeout(BLOCKED, lock(&mut b, "flk", l3)).await;
        assert!(gave_up.is_err(), "the lock is held: {gave_up:?}");
        let mut left = Vec::new();
        for _ in 0..200 {
            left = keys_under(&mut a, "flk/").await;
            if left == [format!("flk/{l1:x}")] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            left,
            [format!("flk/{l1:x}")],
            "the cancelled waiter's key is removed"
        );

        let mut waiter = spawn_lock(&ep_f2, "flk", l2);
        still_blocked(&mut waiter).await;
        (k1, waiter)
    });

    // The Raft leader goes away while the waiter waits on a follower.
    c.members[leader].kill9();
    c.wait_leader(Duration::from_secs(30));
    rt.block_on(async {
        let mut a = connect(&ep_f1).await;
        let mut unlocked = None;
        for _ in 0..100 {
            match a.unlock(holder_key.clone()).await {
                Ok(r) => {
                    unlocked = Some(r);
                    break;
                }
                // Right after the election a write may still be refused; retry it.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(unlocked.is_some(), "unlock after the leader change");
        let k2 = done(waiter, "the waiter after a leader change")
            .await
            .expect("lock");
        assert!(k2.starts_with(b"flk/"), "{k2:?}");
        assert_eq!(keys_under(&mut a, "flk/").await.len(), 1);
    });
}

#[test]
fn lock_errors_are_etcds() {
    let c = Cluster::start(1, &[]);
    let ep = c.members[0].endpoint();
    runtime().block_on(async {
        let mut a = connect(&ep).await;
        let st = status(
            lock(&mut a, "nolease", 0x1234_5678)
                .await
                .expect_err("no lease"),
        );
        // etcd's in-process client makes every error of these services code Unknown.
        assert_eq!(st.code(), tonic::Code::Unknown, "{st:?}");
        assert_eq!(st.message(), "etcdserver: requested lease not found");
        assert!(keys_under(&mut a, "nolease/").await.is_empty());

        // Without a lease, etcd's session grants one (60 s) and binds the key to it.
        let k = lock(&mut a, "anon", 0).await.expect("lock without a lease");
        let lease =
            i64::from_str_radix(std::str::from_utf8(&k["anon/".len()..]).expect("utf-8"), 16)
                .expect("hex lease id");
        let ttl = a.lease_time_to_live(lease, None).await.expect("ttl");
        assert!(ttl.ttl() > 0 && ttl.ttl() <= 60, "{ttl:?}");
        a.unlock(k).await.expect("unlock");
        assert!(keys_under(&mut a, "anon/").await.is_empty());

        let st = status(a.unlock("").await.expect_err("no key"));
        assert_eq!(st.message(), "etcdserver: key is not provided");
        assert_eq!(st.code(), tonic::Code::Unknown, "{st:?}");
        // Unlocking a key that is not there is not an error.
        a.unlock("lk/none").await.expect("unlock a missing key");
        let st = status(
            a.campaign("el", "v", 0x1234_5678)
                .await
                .expect_err("no lease"),
        );
        assert_eq!(st.message(), "etcdserver: requested lease not found");
        let st = status(a.proclaim("v", None).await.expect_err("no leader key"));
        assert_eq!(st.message(), r#""leader" field must be provided"#);
        assert_eq!(st.code(), tonic::Code::Unknown, "{st:?}");
        let st = status(a.resign(None).await.expect_err("no leader key"));
        assert_eq!(st.message(), r#""leader" field must be provided"#);
    });
}

/// The next Observe response's value, within [`SOON`].
async fn observed(stream: &mut etcd_client::ObserveStream) -> (String, i64) {
    let r = tokio::time::timeout(SOON, stream.message())
        .await
        .expect("an observe response in time")
        .expect("observe stream ok")
        .expect("observe stream open");
    let kv = r.kv().expect("kv");
    (
        String::from_utf8_lossy(kv.value()).into_owned(),
        r.header().expect("header").revision(),
    )
}

#[test]
fn election_campaign_proclaim_observe_and_resign_hand_over_in_order() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(SOON);
    let f = (leader + 1) % 3;
    let (ep_l, ep_f) = (c.members[leader].endpoint(), c.members[f].endpoint());
    runtime().block_on(async {
        let mut a = connect(&ep_f).await;
        let mut b = connect(&ep_l).await;

        let st = status(a.leader("el").await.expect_err("nobody campaigned"));
        assert_eq!(st.message(), "election: no leader", "{st:?}");
        assert_eq!(st.code(), tonic::Code::Unknown, "{st:?}");

        // Observing before anyone campaigns: the first leader is the first thing seen.
        let mut obs = connect(&ep_f).await.observe("el").await.expect("observe");

        let l1 = grant(&mut a, 60).await;
        let l2 = grant(&mut b, 60).await;
        let r = a.campaign("el", "v1", l1).await.expect("campaign");
        let first = r.leader().expect("leader key").clone();
        assert_eq!(first.name(), b"el");
        assert_eq!(first.key(), format!("el/{l1:x}").as_bytes());
        assert_eq!(first.lease(), l1);
        assert_eq!(first.rev(), r.header().expect("header").revision());
        assert_eq!(observed(&mut obs).await.0, "v1");

        let kv = a.leader("el").await.expect("leader");
        let kv = kv.kv().expect("kv");
        assert_eq!((kv.key(), kv.value()), (first.key(), &b"v1"[..]));
        assert_eq!(kv.create_revision(), first.rev());

        a.proclaim(
            "v2",
            Some(ProclaimOptions::new().with_leader(first.clone())),
        )
        .await
        .expect("proclaim");
        assert_eq!(observed(&mut obs).await.0, "v2");

        // A second campaigner waits behind the leader.
        let ep = ep_l.clone();
        let mut second = tokio::spawn(async move {
            let mut b = connect(&ep).await;
            b.campaign("el", "w1", l2).await
        });
        still_blocked(&mut second).await;
        let kv = b.leader("el").await.expect("leader");
        assert_eq!(
            kv.kv().expect("kv").value(),
            b"v2",
            "the first leader still leads"
        );

        a.resign(Some(ResignOptions::new().with_leader(first.clone())))
            .await
            .expect("resign");
        let r = done(second, "the second campaign").await.expect("campaign");
        let next = r.leader().expect("leader key").clone();
        assert_eq!(next.key(), format!("el/{l2:x}").as_bytes());
        let (v, rev) = observed(&mut obs).await;
        assert_eq!(v, "w1");
        assert!(rev >= next.rev(), "{rev} < {}", next.rev());

        // The old leadership can no longer speak for the election.
        let st = status(
            a.proclaim(
                "stale",
                Some(ProclaimOptions::new().with_leader(first.clone())),
            )
            .await
            .expect_err("not the leader"),
        );
        assert_eq!(st.message(), "election: not leader", "{st:?}");
        assert_eq!(st.code(), tonic::Code::Unknown, "{st:?}");
        // Resigning a stale leadership changes nothing and is not an error (as etcd).
        a.resign(Some(ResignOptions::new().with_leader(first)))
            .await
            .expect("stale resign");
        let kv = a.leader("el").await.expect("leader");
        assert_eq!(kv.kv().expect("kv").value(), b"w1");

        // Revoking the leader's lease ends its leadership: observers see nobody new, and
        // Leader says so.
        b.proclaim("w2", Some(ProclaimOptions::new().with_leader(next.clone())))
            .await
            .expect("proclaim w2");
        assert_eq!(observed(&mut obs).await.0, "w2");
        b.lease_revoke(l2).await.expect("revoke");
        wait_for_no_leader(&mut a).await;

        // And a new campaigner after that is seen by the same observer.
        let l3 = grant(&mut a, 60).await;
        a.campaign("el", "x1", l3).await.expect("campaign x1");
        assert_eq!(observed(&mut obs).await.0, "x1");
    });
}

async fn wait_for_no_leader(c: &mut Client) {
    for _ in 0..200 {
        match c.leader("el").await {
            Err(Error::GRpcStatus(s)) if s.message() == "election: no leader" => return,
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!("the election kept a leader after its lease was revoked");
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl_spawn(endpoint: &str, args: &[&str]) -> Child {
    Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl")
}

#[test]
fn etcdctl_lock_excludes_concurrent_holders() {
    let c = Cluster::start(3, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    // Each holder checks nobody else is inside, stays a moment, and leaves.
    let section = format!(
        "if [ -e {d}/inside ]; then echo overlap >> {d}/bad; fi; touch {d}/inside; \
         sleep 0.2; echo x >> {d}/done; rm {d}/inside"
    );
    let procs: Vec<Proc> = (0..4)
        .map(|i| {
            let ep = c.members[i % 3].endpoint();
            Proc(etcdctl_spawn(
                &ep,
                &["lock", "ctl-lk", "--", "sh", "-c", &section],
            ))
        })
        .collect();
    for mut p in procs {
        let st = wait_until(Duration::from_secs(30), "etcdctl lock to finish", || {
            p.0.try_wait().expect("wait")
        });
        if !st.success() {
            let mut err = String::new();
            if let Some(mut e) = p.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("etcdctl lock failed: {err}");
        }
    }
    let ran = std::fs::read_to_string(dir.path().join("done")).unwrap_or_default();
    assert_eq!(ran.lines().count(), 4, "every holder ran its section");
    assert!(
        !dir.path().join("bad").exists(),
        "two etcdctl lock holders were inside at once"
    );
    // The client-side recipe and the server-side one share a lock: Lock waits for etcdctl.
    runtime().block_on(async {
        let mut a = connect(&c.members[0].endpoint()).await;
        assert!(
            keys_under(&mut a, "ctl-lk/").await.is_empty(),
            "all released"
        );
        let mut held = Proc(etcdctl_spawn(&c.members[1].endpoint(), &["lock", "mixed"]));
        let held_out = held.0.stdout.take().expect("stdout");
        // etcdctl prints the key once it holds the lock.
        let key = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(held_out)
                .read_line(&mut line)
                .expect("read etcdctl");
            line.trim().to_string()
        });
        let key = tokio::time::timeout(SOON, key)
            .await
            .expect("etcdctl holds")
            .expect("task");
        assert!(key.starts_with("mixed/"), "{key}");
        let l = grant(&mut a, 60).await;
        let mut waiter = spawn_lock(&c.members[2].endpoint(), "mixed", l);
        still_blocked(&mut waiter).await;
        // SIGINT: etcdctl releases the lock (revokes its session) as it exits.
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(held.0.id().to_string())
            .status();
        done(waiter, "Lock after etcdctl released")
            .await
            .expect("lock");
    });
}

#[test]
fn etcdctl_elect_and_the_election_service_agree_on_the_leader() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(SOON);
    let ep = c.members[(leader + 1) % 3].endpoint();
    runtime().block_on(async {
        let mut a = connect(&ep).await;
        let mut obs = a.observe("ctl-el").await.expect("observe");
        let mut p1 = Proc(etcdctl_spawn(
            &c.members[0].endpoint(),
            &["elect", "ctl-el", "p1"],
        ));
        assert_eq!(observed(&mut obs).await.0, "p1");
        let kv = a.leader("ctl-el").await.expect("leader");
        assert_eq!(kv.kv().expect("kv").value(), b"p1");

        let _p2 = Proc(etcdctl_spawn(
            &c.members[1].endpoint(),
            &["elect", "ctl-el", "p2"],
        ));
        for _ in 0..400 {
            if keys_under(&mut a, "ctl-el/").await.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(keys_under(&mut a, "ctl-el/").await.len(), 2, "p2 queued");
        // A server-side campaigner queues too.
        let l = grant(&mut a, 60).await;
        let ep2 = c.members[2].endpoint();
        let mut campaign = tokio::spawn(async move {
            let mut b = connect(&ep2).await;
            b.campaign("ctl-el", "p3", l).await
        });
        still_blocked(&mut campaign).await;
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(p1.0.id().to_string())
            .status();
        let _ = p1.0.wait();
        assert_eq!(
            observed(&mut obs).await.0,
            "p2",
            "etcdctl's p2 queued first"
        );
        still_blocked(&mut campaign).await;
    });
}

/// etcd runs the recipes on an in-process client that carries the caller's token, so with
/// auth on every step is checked as the caller's: a user may lock and campaign only under
/// prefixes its roles allow.
#[test]
fn lock_and_election_are_checked_as_the_caller_when_auth_is_on() {
    let c = Cluster::start(1, &[]);
    let ep = c.members[0].endpoint();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "locker"],
        &[
            "role",
            "grant-permission",
            "locker",
            "readwrite",
            "locks/",
            "--prefix",
        ],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "locker"],
        &["user", "add", "bob:bpw"],
        &["auth", "enable"],
    ] {
        common::etcdctl_ok(&ep, args);
    }
    runtime().block_on(async {
        let as_user = |u: &'static str, p: &'static str| {
            let ep = ep.clone();
            async move {
                Client::connect(
                    [ep.as_str()],
                    Some(etcd_client::ConnectOptions::new().with_user(u, p)),
                )
                .await
                .expect("connect as user")
            }
        };
        let mut alice = as_user("alice", "apw").await;
        let mut bob = as_user("bob", "bpw").await;
        // Lease 0: the service grants the session lease as the caller (no permission needed).
        let key = alice
            .lock("locks/a", None)
            .await
            .expect("alice locks under her prefix");
        assert!(key.key().starts_with(b"locks/a/"));
        let denied = status(
            alice
                .lock("other/a", None)
                .await
                .expect_err("outside her prefix"),
        );
        assert!(denied.message().contains("permission denied"), "{denied:?}");
        let denied = status(
            bob.lock("locks/b", None)
                .await
                .expect_err("bob has no role"),
        );
        assert!(denied.message().contains("permission denied"), "{denied:?}");
        let lease = grant(&mut alice, 30).await;
        alice
            .campaign("locks/e", "alice", lease)
            .await
            .expect("alice campaigns under her prefix");
        let denied = status(
            bob.leader("locks/e")
                .await
                .expect_err("bob may not read it"),
        );
        assert!(denied.message().contains("permission denied"), "{denied:?}");
        let denied = status(bob.observe("locks/e").await.expect_err("nor observe it"));
        assert!(denied.message().contains("permission denied"), "{denied:?}");
        assert_eq!(
            alice
                .leader("locks/e")
                .await
                .expect("alice reads the leader")
                .kv()
                .map(|kv| kv.value().to_vec()),
            Some(b"alice".to_vec())
        );
        // Nothing of bob's attempts was written.
        let mut root = as_user("root", "rootpw").await;
        assert!(keys_under(&mut root, "locks/b").await.is_empty());
    });
}
