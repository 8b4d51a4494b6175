//! etcd's alarms against a 3-member cluster, driven by the real etcdctl and the `etcd-client`
//! crate: NOSPACE from a small `--quota-backend-bytes` (raised, replicated, refusing writes on
//! every member with etcd's error while reads, deletes and compaction work, surviving restarts,
//! raised again by the next write when disarmed without room, and cleared for good by
//! `alarm disarm` after delete, compact and defrag made room, with the same quota, as in etcd),
//! and CORRUPT from the corruption checks after one stopped member's stored data is altered on
//! disk (the initial check refuses to start it, the leader's periodic check raises the alarm
//! and the cluster refuses writes).

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, etcdctl_ok, wait_until};
use etcd_client::{AlarmAction, AlarmType, Client};

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";
const CORRUPT: &str = "etcdserver: corrupt cluster";
/// Bound on a whole-cluster restart: three members replaying tens of MB on a shared machine
/// (one run under a concurrent build took more than 20 s).
const RESTART: Duration = Duration::from_secs(60);

fn output_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `(member id, alarm type)` of every active alarm, by the etcd-client crate.
fn alarms(rt: &tokio::runtime::Runtime, ep: &str) -> Vec<(u64, AlarmType)> {
    rt.block_on(async {
        let mut c = Client::connect([ep], None).await.expect("connect");
        let resp = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        resp.alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect()
    })
}

/// `endpoint status` of one endpoint: (member id, db size, errors).
fn status(ep: &str) -> (u64, i64, Vec<String>) {
    let out = etcdctl_ok(ep, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    let st = &v[0]["Status"];
    let errors = st["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        st["header"]["member_id"].as_u64().expect("member id"),
        st["dbSize"].as_i64().unwrap_or(0),
        errors,
    )
}

fn revision(ep: &str) -> i64 {
    let out = etcdctl_ok(ep, &["get", "nothing-here", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("get json");
    v["header"]["revision"].as_i64().expect("revision")
}

/// A put through etcdctl: Ok, or the error text.
fn put(ep: &str, key: &str, value: &str) -> Result<(), String> {
    let out = etcdctl(ep, &["put", key, value]);
    if out.status.success() {
        Ok(())
    } else {
        Err(output_of(&out))
    }
}

/// Fills the database through `ep` with 100 kB values over a few keys until a put is refused;
/// returns the refusal.
fn fill_until_refused(ep: &str) -> String {
    let value = "x".repeat(100_000);
    for i in 0..400 {
        if let Err(e) = put(ep, &format!("fill/{}", i % 5), &value) {
            return e;
        }
    }
    panic!("400 puts of 100 kB never reached a quota of a few MB");
}

#[test]
fn nospace_refuses_writes_on_every_member_until_disarmed_with_room() {
    let mut c = Cluster::start(3, &["--quota-backend-bytes", "3000000"]);
    let rt = runtime();
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    let leader = c.wait_leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    assert_eq!(etcdctl_ok(&eps[0], &["alarm", "list"]).trim(), "");
    assert!(alarms(&rt, &eps[0]).is_empty());
    etcdctl_ok(&eps[leader], &["put", "keep", "me"]);

    // Fill through a follower: the quota is checked by the member that receives the write.
    let refusal = fill_until_refused(&eps[follower]);
    assert!(refusal.contains(NOSPACE), "{refusal}");
    let (follower_id, _, _) = status(&eps[follower]);
    // The alarm is replicated: every member lists it and reports it in Status.errors.
    for ep in &eps {
        wait_until(
            Duration::from_secs(10),
            "every member lists NOSPACE",
            || {
                alarms(&rt, ep)
                    .contains(&(follower_id, AlarmType::Nospace))
                    .then_some(())
            },
        );
        let (_, _, errors) = status(ep);
        assert_eq!(
            errors,
            vec![format!("memberID:{follower_id} alarm:NOSPACE ")]
        );
    }
    assert_eq!(
        etcdctl_ok(&eps[0], &["alarm", "list"]).trim(),
        format!("memberID:{follower_id} alarm:NOSPACE")
    );

    // Every member refuses writes with etcd's error (whatever its own size): puts, txns that
    // put, lease grants; etcd-client sees etcd's code.
    for ep in &eps {
        let e = put(ep, "small", "v").unwrap_err();
        assert!(e.contains(NOSPACE), "{e}");
        let out = etcdctl(ep, &["lease", "grant", "60"]);
        assert!(output_of(&out).contains(NOSPACE), "{}", output_of(&out));
    }
    let err = rt.block_on(async {
        let mut cl = Client::connect([eps[leader].as_str()], None)
            .await
            .expect("connect");
        cl.put("small", "v", None).await.unwrap_err()
    });
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted);
            assert_eq!(s.message(), NOSPACE);
        }
        other => panic!("unexpected error {other:?}"),
    }

    // Disarmed without room, the next write over the quota raises it again, as in etcd.
    let listed = etcdctl_ok(&eps[leader], &["alarm", "list"]);
    let disarmed = etcdctl_ok(&eps[leader], &["alarm", "disarm"]);
    assert_eq!(disarmed, listed);
    assert!(listed.contains(&format!("memberID:{follower_id} alarm:NOSPACE")));
    let e = put(&eps[follower], "small", "v").unwrap_err();
    assert!(e.contains(NOSPACE), "{e}");
    wait_until(Duration::from_secs(10), "NOSPACE raised again", || {
        alarms(&rt, &eps[leader])
            .contains(&(follower_id, AlarmType::Nospace))
            .then_some(())
    });

    // Reads, deletes and compaction still work, so space can be freed: delete, compact and
    // defragment every member, as etcd's operators do.
    assert!(etcdctl_ok(&eps[follower], &["get", "keep"]).contains("me"));
    etcdctl_ok(&eps[leader], &["del", "fill/", "--prefix"]);
    let rev = revision(&eps[leader]);
    etcdctl_ok(&eps[leader], &["compact", &rev.to_string()]);
    etcdctl_ok(&eps.join(","), &["defrag"]);
    for ep in &eps {
        let (_, size, _) = status(ep);
        assert!(size < 3_000_000, "{ep}: {size} bytes after the defrag");
    }

    // The alarm survives a restart of every member (kill -9: the ports stay free for
    // milliseconds only, so no other test process takes one meanwhile).
    for m in &mut c.members {
        m.kill9();
    }
    for m in &mut c.members {
        m.start();
    }
    let leader = c.wait_leader(RESTART);
    for ep in &eps {
        assert!(
            alarms(&rt, ep).contains(&(follower_id, AlarmType::Nospace)),
            "alarm lost in a restart"
        );
        let e = put(ep, "small", "v").unwrap_err();
        assert!(e.contains(NOSPACE), "{e}");
    }

    // With room again, disarm restores writes on every member, with the same quota.
    etcdctl_ok(&eps[leader], &["alarm", "disarm"]);
    for ep in &eps {
        wait_until(Duration::from_secs(10), "writes accepted again", || {
            put(ep, "after", "ok").ok()
        });
        assert!(alarms(&rt, ep).is_empty());
        assert!(status(ep).2.is_empty());
    }
    assert!(etcdctl_ok(&eps[follower], &["get", "keep"]).contains("me"));
}

/// Changes the value of the newest stored revision in a stopped member's database: the same
/// revision then holds other data than on its peers, which is what the hash checks catch.
fn tamper_newest_record(data_dir: &std::path::Path) {
    use flotilla_node::mvcc::record::Record;
    let live = flotilla_node::storage::StateDir::new(data_dir)
        .current_path()
        .expect("read CURRENT")
        .expect("a state database");
    let db = sled::Config::new()
        .path(live)
        .open()
        .expect("open the stopped member's state db");
    let tree = db.open_tree("mvcc").expect("mvcc tree");
    let (k, v) = tree
        .scan_prefix(b"r")
        .last()
        .expect("a record")
        .expect("read record");
    let mut rec = Record::decode(&v).expect("decode record");
    rec.value = b"tampered".to_vec();
    tree.insert(k, rec.encode()).expect("write record");
    db.flush().expect("flush");
}

#[test]
fn corrupt_member_is_refused_at_start_and_raised_by_the_leaders_check() {
    let mut c = Cluster::start(3, &["--experimental-corrupt-check-time", "500ms"]);
    let rt = runtime();
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    let leader = c.wait_leader(Duration::from_secs(20));
    for i in 0..20 {
        etcdctl_ok(&eps[leader], &["put", &format!("k{i}"), "v"]);
    }
    let rev = revision(&eps[leader]);
    for ep in &eps {
        wait_until(Duration::from_secs(10), "every member applied", || {
            let out = etcdctl(ep, &["get", "k19", "--consistency=s", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["header"]["revision"].as_i64()? == rev).then_some(())
        });
    }
    // Nothing to report while the members agree.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alarms(&rt, &eps[leader]).is_empty());

    let victim = (leader + 1) % 3;
    let (victim_id, _, _) = status(&eps[victim]);
    c.members[victim].terminate();
    tamper_newest_record(&c.members[victim].data_dir);

    // The initial check compares with the peers before serving and refuses to start.
    let normal = c.members[victim].extra.clone();
    c.members[victim]
        .extra
        .push("--experimental-initial-corrupt-check".into());
    c.members[victim].start();
    let exit = wait_until(
        Duration::from_secs(20),
        "the member refuses to start",
        || {
            c.members[victim]
                .child
                .as_mut()
                .and_then(|ch| ch.try_wait().ok().flatten())
        },
    );
    assert!(!exit.success(), "a member with inconsistent data started");
    c.members[victim].child = None;

    // Started without it, the leader's periodic check finds it and raises CORRUPT for it.
    c.members[victim].extra = normal;
    c.members[victim].start();
    for ep in &eps {
        wait_until(
            Duration::from_secs(20),
            "CORRUPT raised for the victim",
            || {
                let out = etcdctl(ep, &["alarm", "list"]);
                output_of(&out)
                    .contains(&format!("memberID:{victim_id} alarm:CORRUPT"))
                    .then_some(())
            },
        );
    }
    // Writes, deletes and compaction are refused on every member; reads are still served.
    for ep in &eps {
        let e = put(ep, "k0", "again").unwrap_err();
        assert!(e.contains(CORRUPT), "{e}");
        let out = etcdctl(ep, &["del", "k1"]);
        assert!(output_of(&out).contains(CORRUPT), "{}", output_of(&out));
        let out = etcdctl(ep, &["compact", "2"]);
        assert!(output_of(&out).contains(CORRUPT), "{}", output_of(&out));
        assert!(etcdctl_ok(ep, &["get", "k2"]).contains('v'));
        let (_, _, errors) = status(ep);
        assert!(
            errors.contains(&format!("memberID:{victim_id} alarm:CORRUPT ")),
            "{errors:?}"
        );
    }
}
