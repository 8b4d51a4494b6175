//! etcd's Watch and Lease services driven by the real etcdctl against a 3-process cluster:
//! watches on the leader and on followers, history replay, compaction cancel, and the lease
//! life cycle (grant, attach, keep-alive, time-to-live, list, revoke, expiry by the leader).

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, etcdctl_ok, etcdctl_path, wait_until};

/// A long-running `etcdctl watch …` whose output is collected as it arrives.
struct Watcher {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(endpoint: &str, args: &[&str]) -> Watcher {
        let mut child = Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("--dial-timeout=2s")
            .arg("watch")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start etcdctl watch");
        let out = Arc::new(Mutex::new(String::new()));
        // stderr too: etcdctl reports a canceled watch there.
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect(stdout, out.clone());
        collect(stderr, out.clone());
        Watcher { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the collected output contains `want`.
    fn wait_for(&self, want: &str) {
        wait_until(
            Duration::from_secs(10),
            &format!("watch output {want:?}"),
            || self.output().contains(want).then_some(()),
        );
    }
}

fn collect(mut from: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn revision_of(endpoint: &str, args: &[&str]) -> i64 {
    let out = etcdctl_ok(endpoint, &[args, &["-w", "json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
    v["header"]["revision"].as_i64().expect("header revision")
}

#[test]
fn etcdctl_watch_sees_live_events_on_every_member() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let on_leader = Watcher::start(&c.members[leader].endpoint(), &["foo"]);
    let on_follower = Watcher::start(&c.members[follower].endpoint(), &["foo", "--prev-kv"]);
    // A watch is live once it has been created; etcdctl prints nothing for that, so write
    // until the first event shows up on both.
    wait_until(Duration::from_secs(10), "both watches see a put", || {
        etcdctl_ok(&c.members[leader].endpoint(), &["put", "foo", "v1"]);
        (on_leader.output().contains("PUT\nfoo\nv1\n")
            && on_follower.output().contains("PUT\nfoo\nv1\n"))
        .then_some(())
    });
    etcdctl_ok(&c.members[follower].endpoint(), &["put", "foo", "v2"]);
    etcdctl_ok(&c.members[follower].endpoint(), &["put", "other", "x"]);
    etcdctl_ok(&c.members[leader].endpoint(), &["del", "foo"]);
    on_leader.wait_for("PUT\nfoo\nv2\nDELETE\nfoo\n");
    // --prev-kv prints the previous value before each event's new one.
    on_follower.wait_for("PUT\nfoo\nv1\nfoo\nv2\nDELETE\nfoo\nv2\nfoo\n\n");
    assert!(
        !on_leader.output().contains("other"),
        "a watch on one key saw another: {}",
        on_leader.output()
    );
}

#[test]
fn etcdctl_watch_prefix_replays_history_from_a_revision() {
    let c = Cluster::start(3, &[]);
    let ep = c.members[0].endpoint();
    let first = revision_of(&ep, &["put", "p/a", "1"]);
    etcdctl_ok(&ep, &["put", "p/b", "2"]);
    etcdctl_ok(&ep, &["put", "q", "not-in-prefix"]);
    etcdctl_ok(&ep, &["del", "p/a"]);
    let rev = format!("--rev={first}");
    let w = Watcher::start(&c.members[1].endpoint(), &["--prefix", "p/", &rev]);
    w.wait_for("PUT\np/a\n1\nPUT\np/b\n2\nDELETE\np/a\n");
    // Live events follow the replayed history on the same watch.
    etcdctl_ok(&ep, &["put", "p/c", "3"]);
    w.wait_for("DELETE\np/a\n\nPUT\np/c\n3\n");
    assert!(!w.output().contains("not-in-prefix"), "{}", w.output());
}

#[test]
fn watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let c = Cluster::start(3, &[]);
    let ep = c.members[0].endpoint();
    let first = revision_of(&ep, &["put", "c", "1"]);
    let last = revision_of(&ep, &["put", "c", "2"]);
    etcdctl_ok(&ep, &["compaction", &last.to_string()]);
    // The server cancels the watch with compact_revision set; etcdctl reports it.
    let canceled = Watcher::start(&ep, &["c", &format!("--rev={first}")]);
    canceled.wait_for("required revision has been compacted");
    // A normal watch on the same member still works afterwards.
    let w = Watcher::start(&ep, &["c"]);
    wait_until(Duration::from_secs(10), "the new watch sees a put", || {
        etcdctl_ok(&ep, &["put", "c", "3"]);
        w.output().contains("PUT\nc\n3\n").then_some(())
    });
}

/// The hex lease id from `lease grant`'s "lease <id> granted with TTL(<n>s)".
fn granted_id(out: &str) -> String {
    let mut words = out.split_whitespace();
    assert_eq!(
        words.next(),
        Some("lease"),
        "unexpected grant output: {out}"
    );
    words.next().expect("lease id").to_string()
}

#[test]
fn etcdctl_lease_commands_work_through_any_member() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let follower = c.members[(leader + 1) % 3].endpoint();
    let other = c.members[(leader + 2) % 3].endpoint();

    let out = etcdctl_ok(&follower, &["lease", "grant", "30"]);
    assert!(out.contains("granted with TTL(30s)"), "{out}");
    let id = granted_id(&out);
    assert_eq!(
        etcdctl_ok(&follower, &["put", "--lease", &id, "leased", "v"]).trim(),
        "OK"
    );
    // A lease that does not exist is refused and the key is not written.
    let bad = common::etcdctl(&follower, &["put", "--lease", "1234abcd", "nolease", "v"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("requested lease not found"));
    assert_eq!(etcdctl_ok(&other, &["get", "nolease"]), "");

    // Keep-alive and time-to-live from a follower are answered with the leader's clock.
    let out = etcdctl_ok(&follower, &["lease", "keep-alive", "--once", &id]);
    assert_eq!(out.trim(), format!("lease {id} keepalived with TTL(30)"));
    let out = etcdctl_ok(&other, &["lease", "timetolive", "--keys", &id]);
    assert!(
        out.contains(&format!("lease {id} granted with TTL(30s), remaining("))
            && out.contains("attached keys([leased])"),
        "{out}"
    );
    let out = etcdctl_ok(&other, &["lease", "list"]);
    assert!(out.contains("found 1 leases") && out.contains(&id), "{out}");

    // Revoke removes the attached keys on every member.
    let out = etcdctl_ok(&other, &["lease", "revoke", &id]);
    assert_eq!(out.trim(), format!("lease {id} revoked"));
    for m in &c.members {
        assert_eq!(etcdctl_ok(&m.endpoint(), &["get", "leased"]), "");
    }
    let out = etcdctl_ok(&follower, &["lease", "timetolive", &id]);
    assert!(out.contains("already expired"), "{out}");
    // The leader answers TTL 0 for an unknown lease; etcdctl turns that into this error.
    let out = common::etcdctl(&follower, &["lease", "keep-alive", "--once", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requested lease not found"));
    assert!(etcdctl_ok(&follower, &["lease", "list"]).contains("found 0 leases"));
}

#[test]
fn the_leader_expires_leases_and_their_keys_vanish_everywhere() {
    let c = Cluster::start(3, &[]);
    let ep = c.members[0].endpoint();
    let short = granted_id(&etcdctl_ok(&ep, &["lease", "grant", "2"]));
    let long = granted_id(&etcdctl_ok(&ep, &["lease", "grant", "60"]));
    etcdctl_ok(&ep, &["put", "--lease", &short, "short", "v"]);
    etcdctl_ok(&ep, &["put", "--lease", &long, "long", "v"]);
    for m in &c.members {
        wait_until(
            Duration::from_secs(15),
            "the short lease's key expires",
            || {
                let out = etcdctl_ok(&m.endpoint(), &["get", "short", "--consistency=s"]);
                out.is_empty().then_some(())
            },
        );
    }
    assert_eq!(etcdctl_ok(&ep, &["get", "long"]), "long\nv\n");
    let out = etcdctl_ok(&ep, &["lease", "list"]);
    assert!(out.contains(&long) && !out.contains(&short), "{out}");
}

#[test]
fn a_new_leader_gives_leases_a_fresh_ttl() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let ep = c.members[(leader + 1) % 3].endpoint();
    let id = granted_id(&etcdctl_ok(&ep, &["lease", "grant", "15"]));
    etcdctl_ok(&ep, &["put", "--lease", &id, "held", "v"]);
    c.members[leader].kill9();
    let new_leader = c.wait_leader(Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    // The new leader never saw the old one's clock: it restarts the lease with its full TTL
    // instead of expiring it at once.
    let out = etcdctl_ok(&ep, &["lease", "timetolive", "--keys", &id]);
    assert!(
        out.contains("granted with TTL(15s)") && out.contains("attached keys([held])"),
        "{out}"
    );
    assert!(!out.contains("already expired"), "{out}");
    assert_eq!(etcdctl_ok(&ep, &["get", "held"]), "held\nv\n");
    // ... and still expires it once nobody keeps it alive.
    wait_until(
        Duration::from_secs(20),
        "the lease expires on the new leader",
        || etcdctl_ok(&ep, &["get", "held"]).is_empty().then_some(()),
    );
}

/// The next response on a watch stream, within a bound.
async fn next(
    inbound: &mut tonic::Streaming<flotilla_proto::etcdserverpb::WatchResponse>,
) -> flotilla_proto::etcdserverpb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("a watch response in time")
        .expect("stream ok")
        .expect("stream open")
}

#[test]
fn one_watch_stream_carries_many_watches_with_ids_cancel_and_progress() {
    use flotilla_proto::etcdserverpb::watch_client::WatchClient;
    use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
    use flotilla_proto::etcdserverpb::{
        WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    };

    let c = Cluster::start(3, &[]);
    let ep = c.members[2].endpoint();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = WatchClient::connect(format!("http://{ep}"))
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut inbound = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open the watch stream")
            .into_inner();
        let create = |key: &[u8], watch_id: i64| WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.to_vec(),
                watch_id,
                ..Default::default()
            })),
        };
        tx.send(create(b"a", 0)).await.expect("send");
        let r = next(&mut inbound).await;
        assert!(r.created && !r.canceled);
        let auto_id = r.watch_id;
        let h = r.header.expect("header");
        assert!(h.cluster_id != 0 && h.member_id != 0 && h.raft_term != 0 && h.revision > 0);

        tx.send(create(b"b", 7)).await.expect("send");
        let r = next(&mut inbound).await;
        assert!(r.created && r.watch_id == 7);
        // A duplicate id is refused on the stream, which stays usable.
        tx.send(create(b"c", 7)).await.expect("send");
        let r = next(&mut inbound).await;
        assert!(r.created && r.canceled && r.watch_id == -1, "{r:?}");

        etcdctl_ok(&ep, &["put", "b", "1"]);
        let r = next(&mut inbound).await;
        assert_eq!(r.watch_id, 7);
        assert_eq!(r.events.len(), 1);
        let kv = r.events[0].kv.as_ref().expect("kv");
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"b"[..], &b"1"[..])
        );

        // Progress: every watch is synced, so the current revision comes back at once.
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        })
        .await
        .expect("send");
        let r = next(&mut inbound).await;
        assert_eq!(r.watch_id, -1);
        assert_eq!(r.header.map(|h| h.revision), Some(kv.mod_revision));

        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 7,
            })),
        })
        .await
        .expect("send");
        let r = next(&mut inbound).await;
        assert!(r.canceled && r.watch_id == 7);
        // The canceled watch sees nothing more; the other one still does.
        etcdctl_ok(&ep, &["put", "b", "2"]);
        etcdctl_ok(&ep, &["put", "a", "1"]);
        let r = next(&mut inbound).await;
        assert_eq!(r.watch_id, auto_id);
        assert_eq!(
            r.events[0].kv.as_ref().map(|kv| kv.key.clone()),
            Some(b"a".to_vec())
        );
        // Closing our half ends the server's stream.
        drop(tx);
        let end = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("the stream ends in time");
        assert!(matches!(end, Ok(None)), "{end:?}");
    });
}

/// Moves leadership to member `to` and waits until every running member sees it.
fn move_leader(c: &Cluster, to: usize) {
    let (to_id, _, _) = c.status_of(to).expect("status");
    let out = etcdctl_ok(&c.endpoints(), &["move-leader", &format!("{to_id:x}")]);
    assert!(out.contains("Leadership transferred"), "{out}");
    wait_until(Duration::from_secs(10), "the target leads", || {
        let (_, l, _) = c.status_of(to)?;
        (l == to_id).then_some(())
    });
}

#[test]
fn a_returning_leader_does_not_expire_leases_kept_alive_elsewhere() {
    let c = Cluster::start(3, &[]);
    let a = c.wait_leader(Duration::from_secs(20));
    let b = (a + 1) % 3;
    let ep_b = c.members[b].endpoint();
    // A starts the lease's clock while it leads ...
    let id = granted_id(&etcdctl_ok(
        &c.members[a].endpoint(),
        &["lease", "grant", "4"],
    ));
    etcdctl_ok(&ep_b, &["put", "--lease", &id, "kept", "v"]);
    etcdctl_ok(&c.members[a].endpoint(), &["lease", "timetolive", &id]);
    // ... then B leads and receives the keep-alives for longer than the TTL ...
    move_leader(&c, b);
    let started = std::time::Instant::now();
    wait_until(
        Duration::from_secs(20),
        "B kept the lease alive past its TTL",
        || {
            let out = etcdctl_ok(&ep_b, &["lease", "keep-alive", "--once", &id]);
            assert!(out.contains("keepalived"), "{out}");
            (started.elapsed() > Duration::from_secs(6)).then_some(())
        },
    );
    // ... so when A leads again, its stale deadline must not revoke the lease at once: it
    // gives the lease a full TTL from its promotion.
    move_leader(&c, a);
    let out = etcdctl_ok(&ep_b, &["lease", "timetolive", "--keys", &id]);
    assert!(
        !out.contains("already expired") && out.contains("attached keys([kept])"),
        "{out}"
    );
    assert_eq!(etcdctl_ok(&ep_b, &["get", "kept"]), "kept\nv\n");
}

#[test]
fn installing_a_snapshot_ends_every_watch_stream() {
    use flotilla_node::member::state_machine::StateMachine;
    use flotilla_node::mvcc::MvccStore;
    use flotilla_proto::etcdserverpb::WatchCreateRequest;
    use tokio::sync::mpsc::error::TryRecvError;

    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let mut sm = StateMachine::new(MvccStore::open(&db).expect("store"));
    let image = sm.snapshot().expect("snapshot");
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let stream = sm.watch_open(tx);
    let req = WatchCreateRequest {
        key: b"a".to_vec(),
        ..Default::default()
    };
    sm.watch_create(stream, &req)
        .map_err(|(e, _)| e)
        .expect("create");
    assert!(rx.try_recv().expect("created response").created);
    sm.restore(&image, 10).expect("restore");
    // The hub dropped its sender: the Watch service ends the client's stream (Unavailable) so
    // the client resumes instead of silently missing what the snapshot skipped.
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
}
