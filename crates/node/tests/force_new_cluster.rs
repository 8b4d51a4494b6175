//! Disaster recovery with `--force-new-cluster`: a 3-member cluster loses two members for
//! good; the survivor reports how up to date its log is without a leader (Admin.Status), is
//! restarted with the flag, keeps every key and the cluster id, serves writes at the next
//! revision, takes a new member through `--join`, restarts without the flag, and a lost member
//! that comes back learns it was removed and exits.

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, etcdctl_ok, wait_until};
use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::{Role, StatusRequest, StatusResponse};

fn admin_status(ep: &str) -> Option<StatusResponse> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = AdminClient::connect(format!("http://{ep}")).await.ok()?;
        let r = tokio::time::timeout(Duration::from_secs(3), c.status(StatusRequest {}));
        Some(r.await.ok()?.ok()?.into_inner())
    })
}

/// The revision a put of `key` got.
fn put_revision(ep: &str, key: &str, value: &str) -> i64 {
    let out = etcdctl_ok(ep, &["put", key, value, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["header"]["revision"].as_i64().expect("revision")
}

fn get_value(ep: &str, key: &str, serializable: bool) -> Option<String> {
    let mut args = vec!["get", key, "--print-value-only"];
    if serializable {
        args.push("--consistency=s");
    }
    let out = etcdctl(ep, &args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_survivor_forced_into_a_new_cluster_keeps_every_key_serves_writes_and_takes_new_members() {
    let mut c = Cluster::start(3, &[]);
    let ep = c.endpoints();
    let mut last_rev = 0;
    for i in 0..100 {
        last_rev = put_revision(&ep, &format!("k{i:03}"), &format!("v{i}"));
    }
    let lease = etcdctl_ok(&ep, &["lease", "grant", "600"]);
    let lease_id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    etcdctl_ok(&ep, &["put", "leased", "x", "--lease", &lease_id]);
    last_rev += 1;
    let before = admin_status(&c.members[1].endpoint()).expect("status");
    let (cluster_id, survivor_id) = (before.cluster_id, before.id);
    let lost: Vec<u64> = before
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != survivor_id)
        .collect();
    assert_eq!(lost.len(), 2);

    // Two members are lost for good. The survivor has no leader, and still says how far its
    // log goes — what the operator compares to pick whom to force.
    c.members[0].kill9();
    c.members[2].kill9();
    let ep2 = c.members[1].endpoint();
    let st = wait_until(
        Duration::from_secs(20),
        "the survivor has no leader",
        || admin_status(&ep2).filter(|s| s.leader_id == 0),
    );
    assert!(
        st.last_index >= st.commit_index && st.commit_index > 100,
        "{st:?}"
    );
    assert!(st.last_term >= 1 && st.last_term <= st.term, "{st:?}");
    assert!(st.applied_index > 100, "{st:?}");

    // Restart it alone with --force-new-cluster.
    c.members[1].terminate();
    let log = c.dir.path().join("m2.log");
    c.members[1].log_to = Some(log.clone());
    c.members[1].extra.push("--force-new-cluster".into());
    c.members[1].start();
    let st = wait_until(Duration::from_secs(20), "the survivor leads alone", || {
        admin_status(&ep2).filter(|s| s.role == Role::Leader as i32)
    });
    assert_eq!(st.cluster_id, cluster_id, "the cluster id is kept");
    assert_eq!(st.id, survivor_id);
    assert_eq!(
        st.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![survivor_id]
    );
    let text = std::fs::read_to_string(&log).expect("log");
    let warn = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("removed every other member"))
        .unwrap_or_else(|| panic!("no WARN line naming the removed members:\n{text}"));
    for id in &lost {
        assert!(warn.contains(&format!("{id:016x}")), "{warn}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("starting from index")),
        "{text}"
    );

    // Every key, the lease, and writes at the next revision.
    assert_eq!(common::count_prefix(&ep2, "k", false), Some(100));
    assert_eq!(get_value(&ep2, "k042", false).as_deref(), Some("v42"));
    let leases = etcdctl_ok(&ep2, &["lease", "timetolive", &lease_id, "--keys"]);
    assert!(leases.contains("leased"), "{leases}");
    assert_eq!(put_revision(&ep2, "after", "1"), last_rev + 1);
    let out = etcdctl_ok(&ep2, &["member", "list"]);
    assert_eq!(out.lines().count(), 1, "{out}");

    // A new member joins and catches up.
    let j = c.add_joiner("m4");
    c.members[j].start();
    let ep4 = c.members[j].endpoint();
    wait_until(Duration::from_secs(30), "the new member caught up", || {
        (get_value(&ep4, "after", true).as_deref() == Some("1")
            && common::count_prefix(&ep4, "k", true) == Some(100))
        .then_some(())
    });

    // Restart without the flag: same membership, same data, writes go on.
    c.members[1].terminate();
    c.members[1].extra.retain(|a| a != "--force-new-cluster");
    c.members[1].start();
    wait_until(Duration::from_secs(20), "the survivor leads again", || {
        admin_status(&ep2).filter(|s| s.role == Role::Leader as i32 && s.members.len() == 2)
    });
    assert_eq!(common::count_prefix(&ep2, "k", false), Some(100));
    assert_eq!(put_revision(&ep2, "after2", "2"), last_rev + 2);
    wait_until(
        Duration::from_secs(20),
        "the new member has the write",
        || (get_value(&ep4, "after2", true).as_deref() == Some("2")).then_some(()),
    );

    // A lost member that comes back with its old data is told it was removed, and exits 1.
    c.members[0].start();
    let status = wait_until(Duration::from_secs(30), "the lost member exits", || {
        c.members[0]
            .child
            .as_mut()
            .and_then(|ch| ch.try_wait().expect("wait"))
    });
    c.members[0].child = None;
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert_eq!(put_revision(&ep2, "after3", "3"), last_rev + 3);
}
