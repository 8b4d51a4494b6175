//! User stories 4, 5 and 8: durability across kill -9, leader failover, catch-up by log and by
//! snapshot, a partitioned minority refusing stale service, foreign-cluster and malformed peer
//! traffic, and one fdatasync per Ready (group commit) seen with strace.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, ELECTION, etcdctl, etcdctl_ok, wait_until};

#[test]
fn leader_kill9_fails_over_and_the_old_leader_catches_up() {
    let mut c = Cluster::start(3, &[]);
    let eps_all = c.endpoints();
    for i in 0..20 {
        etcdctl_ok(&eps_all, &["put", &format!("fo{i:02}"), "x"]);
    }
    let leader = c.wait_leader(Duration::from_secs(5));
    c.members[leader].kill9();
    let killed_at = Instant::now();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let ep = c.members[others[0]].endpoint();
    wait_until(
        Duration::from_secs(10),
        "a new leader serves a write",
        || {
            etcdctl(&ep, &["put", "after-failover", "y"])
                .status
                .success()
                .then_some(())
        },
    );
    let took = killed_at.elapsed();
    // Detection takes up to 2 election timeouts, the election ~1 more (+ process overhead).
    assert!(
        took < ELECTION * 3 + Duration::from_secs(2),
        "failover took {took:?}"
    );
    // Every acknowledged write survived.
    assert_eq!(common::count_prefix(&ep, "fo", false), Some(20));
    // The old leader restarts and catches up by log.
    c.members[leader].start();
    let old = c.members[leader].endpoint();
    wait_until(
        Duration::from_secs(15),
        "restarted member has the new write",
        || {
            let out = etcdctl(&old, &["get", "after-failover", "--consistency=s"]);
            (String::from_utf8_lossy(&out.stdout) == "after-failover\ny\n").then_some(())
        },
    );
}

#[test]
fn whole_cluster_kill9_and_restart_keeps_acknowledged_writes() {
    let mut c = Cluster::start(3, &[]);
    let eps = c.endpoints();
    for i in 0..30 {
        etcdctl_ok(&eps, &["put", &format!("d{i:02}"), &format!("v{i}")]);
    }
    for m in &mut c.members {
        m.kill9();
    }
    for m in &mut c.members {
        m.start();
    }
    c.wait_leader(Duration::from_secs(20));
    let out = etcdctl_ok(&c.endpoints(), &["get", "d", "--prefix"]);
    assert_eq!(out.lines().count(), 60, "{out}");
    assert!(out.contains("d29\nv29\n"));
}

#[test]
fn a_member_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-threshold", "20"]);
    let leader = c.wait_leader(Duration::from_secs(5));
    let lagging = (leader + 1) % 3;
    c.members[lagging].kill9();
    let eps = c.endpoints();
    // More than the 4 thresholds of entries a leader keeps for a follower it heard from
    // lately (`member::apply::compaction_index`): the lagging member needs an image.
    for i in 0..120 {
        etcdctl_ok(&eps, &["put", &format!("s{i:03}"), "v"]);
    }
    // The others restart too: what they compacted to (member list only, the state lives in
    // the store) must be enough to rebuild their membership and to serve a full image.
    for (i, m) in c.members.iter_mut().enumerate() {
        if i != lagging {
            m.kill9();
            m.start();
        }
    }
    c.wait_leader(Duration::from_secs(20));
    c.members[lagging].start();
    let ep = c.members[lagging].endpoint();
    wait_until(
        Duration::from_secs(20),
        "lagging member has every key",
        || (common::count_prefix(&ep, "s", true) == Some(120)).then_some(()),
    );
    // It installed a snapshot (the log it missed was compacted away).
    let snaps = c.members[lagging]
        .metric("flotilla_snapshots_total")
        .expect("snapshot counter");
    assert!(snaps >= 1.0, "{snaps} snapshots installed");
}

#[test]
fn a_partitioned_minority_refuses_linearizable_requests() {
    let mut c = Cluster::start(3, &[]);
    let eps = c.endpoints();
    etcdctl_ok(&eps, &["put", "p", "1"]);
    // Leave one member alone: the other two are killed, so it has no majority.
    let alone = 0;
    c.members[1].kill9();
    c.members[2].kill9();
    let ep = c.members[alone].endpoint();
    let started = Instant::now();
    let out = etcdctl(&ep, &["get", "p"]);
    assert!(
        !out.status.success(),
        "a minority served a linearizable read"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no leader") || err.contains("timed out") || err.contains("leader"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    let out = etcdctl(&ep, &["put", "p", "2"]);
    assert!(!out.status.success(), "a minority accepted a write");
    // A serializable read is still served locally (stale by design).
    assert_eq!(etcdctl_ok(&ep, &["get", "p", "--consistency=s"]), "p\n1\n");
}

#[test]
fn readyz_and_metrics_report_the_member_state() {
    let c = Cluster::start(3, &[]);
    for m in &c.members {
        wait_until(Duration::from_secs(10), "readyz 200", || {
            m.http_get("/readyz").filter(|(code, _)| *code == 200)
        });
        assert_eq!(m.http_get("/healthz").map(|r| r.0), Some(200));
    }
    etcdctl_ok(&c.endpoints(), &["put", "m", "1"]);
    let (code, body) = c.members[0].http_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "\nflotilla_server_has_leader 1\n",
        "flotilla_server_is_leader",
        "flotilla_server_leader_changes_seen_total",
        "flotilla_server_proposals_committed_total",
        "flotilla_disk_wal_fsync_duration_seconds_count",
        "flotilla_grpc_requests_total",
        "flotilla_mvcc_db_total_size_in_bytes",
    ] {
        assert!(body.contains(name), "{name} missing");
    }
    let leaders: usize = c
        .members
        .iter()
        .filter_map(|m| m.http_get("/metrics"))
        .filter(|(_, b)| b.lines().any(|l| l == "flotilla_server_is_leader 1"))
        .count();
    assert_eq!(leaders, 1);
}

#[test]
fn peer_traffic_from_another_cluster_or_malformed_is_refused() {
    use flotilla_proto::raft::peer_client::PeerClient;
    use flotilla_proto::raft::{ForwardRequest, RaftEnvelope, raft_envelope};
    let c = Cluster::start(1, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = c.members[0].peer_url();
    let (own_cluster, id) = {
        let out = etcdctl_ok(
            &c.members[0].endpoint(),
            &["endpoint", "status", "-w", "json"],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        (
            v[0]["Status"]["header"]["cluster_id"]
                .as_u64()
                .expect("cluster id"),
            v[0]["Status"]["header"]["member_id"]
                .as_u64()
                .expect("member id"),
        )
    };
    rt.block_on(async {
        let mut client = PeerClient::connect(url).await.expect("connect");
        // Another cluster: a vote request with a huge term would depose the leader if accepted.
        let env = RaftEnvelope {
            cluster_id: own_cluster ^ 1,
            from: 99,
            to: id,
            term: 1_000_000,
            body: Some(raft_envelope::Body::Vote(flotilla_proto::raft::Vote {
                last_index: 1_000_000,
                last_term: 1_000_000,
                transfer: true,
            })),
        };
        let err = client
            .stream(futures::stream::iter(vec![env]))
            .await
            .expect_err("foreign cluster refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        // Malformed: no body.
        let env = RaftEnvelope {
            cluster_id: own_cluster,
            from: 99,
            to: id,
            term: 1,
            body: None,
        };
        let err = client
            .stream(futures::stream::iter(vec![env]))
            .await
            .expect_err("malformed refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = client
            .forward(ForwardRequest {
                cluster_id: own_cluster ^ 1,
                from: 99,
                request: vec![1, 2, 3],
            })
            .await
            .expect_err("foreign forward refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    });
    // Nothing changed: the term is the same and the member still serves.
    let (_, leader, term) = c.status_of(0).expect("status");
    assert_eq!(leader, id);
    assert!(term < 1_000_000);
    assert_eq!(
        etcdctl_ok(&c.members[0].endpoint(), &["put", "still", "ok"]).trim(),
        "OK"
    );
}

/// Every persisted Ready ends in an fdatasync/fsync, and concurrent writes share syncs
/// (group commit): strace counts the sync calls of a single member under concurrent puts.
#[test]
fn every_ready_is_synced_and_syncs_are_shared() {
    use std::process::{Command, Stdio};
    let strace = Command::new("sh")
        .arg("-c")
        .arg("command -v strace")
        .output()
        .expect("sh");
    assert!(
        !strace.stdout.is_empty(),
        "strace is not installed (apt-get install -y strace; scripts/test.sh does it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let client = common::free_port();
    let trace = dir.path().join("trace");
    let child = Command::new("strace")
        .args(["-f", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_flotilla"))
        .args(["node", "--name", "s", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--listen-client", &format!("127.0.0.1:{client}")])
        .args([
            "--listen-peer",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args([
            "--listen-metrics",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .args(["--tick-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strace");
    let _traced = Traced(child);
    let ep = format!("127.0.0.1:{client}");
    wait_until(
        Duration::from_secs(30),
        "member under strace serves",
        || {
            etcdctl(&ep, &["put", "warm", "up"])
                .status
                .success()
                .then_some(())
        },
    );
    let count_syncs = || -> usize {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("fdatasync(") || l.contains("fsync("))
            .filter(|l| !l.contains("unfinished"))
            .count()
    };
    let before = count_syncs();
    // 200 puts from 20 clients, each with its next put ready the moment the last is answered.
    // (One etcdctl process per put overlapped so little on a loaded machine that the puts
    // were nearly sequential: ~1 sync each, plus sled's own, and the test failed 1 run in 7.)
    let puts = 200;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let writers = (0..20).map(|w| {
            let ep = ep.clone();
            async move {
                let mut cl = etcd_client::Client::connect([ep], None)
                    .await
                    .expect("connect");
                for i in 0..(puts / 20) {
                    cl.put(format!("g{w}-{i}"), "v", None).await.expect("put");
                }
            }
        });
        futures::future::join_all(writers).await;
    });
    let syncs = count_syncs() - before;
    assert!(
        syncs > 0,
        "no fsync/fdatasync seen: writes were not made durable"
    );
    // Sequential puts cost about two syncs each on a single member (append, then the hard
    // state with the new commit index); fewer syncs than puts means Readies were shared.
    assert!(
        syncs < puts,
        "{syncs} syncs for {puts} concurrent puts: writes were not group-committed"
    );
    eprintln!("{syncs} syncs for {puts} concurrent puts");
}

/// Graceful shutdown: a leader that gets SIGTERM hands leadership to another voter before it
/// exits, so the others have a leader the moment it is gone (no election timeout).
#[test]
fn sigterm_on_the_leader_hands_off_leadership_first() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(5));
    let (old_id, _, _) = c.status_of(leader).expect("status");
    etcdctl_ok(&c.endpoints(), &["put", "before-term", "1"]);
    let status = c.members[leader].terminate();
    assert!(status.success(), "exit status {status}");
    let other = (leader + 1) % 3;
    // Well under one election timeout (500 ms with the tests' ticks).
    wait_until(
        Duration::from_millis(300),
        "a new leader right after exit",
        || {
            let (_, l, _) = c.status_of(other)?;
            (l != 0 && l != old_id).then_some(())
        },
    );
    assert_eq!(
        etcdctl_ok(&c.members[other].endpoint(), &["get", "before-term"]),
        "before-term\n1\n"
    );
}

/// Identity rule: a volume that belongs to another cluster is refused, never re-initialised.
#[test]
fn a_volume_of_another_cluster_is_refused_at_start() {
    let mut c = Cluster::start(1, &[]);
    etcdctl_ok(&c.members[0].endpoint(), &["put", "mine", "1"]);
    c.members[0].kill9();
    c.members[0].extra = vec!["--cluster-token".into(), "another-cluster".into()];
    c.members[0].start();
    let status = wait_until(
        Duration::from_secs(20),
        "the member refuses to start",
        || {
            c.members[0]
                .child
                .as_mut()
                .and_then(|ch| ch.try_wait().expect("wait"))
        },
    );
    assert!(!status.success());
    c.members[0].child = None;
    // The volume is intact: with the right flags the member starts and has its data.
    c.members[0].extra.clear();
    c.members[0].start();
    c.wait_leader(Duration::from_secs(20));
    assert_eq!(
        etcdctl_ok(&c.members[0].endpoint(), &["get", "mine"]),
        "mine\n1\n"
    );
}

/// strace and the member it runs. Killing strace alone detaches it and leaves the member
/// running (a process leaked into every later test), so the member goes first.
struct Traced(std::process::Child);

impl Drop for Traced {
    fn drop(&mut self) {
        let tracer = self.0.id();
        let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
            .unwrap_or_default();
        for pid in children.split_whitespace() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
