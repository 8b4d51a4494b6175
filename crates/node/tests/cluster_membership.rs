//! User story 6: membership through the API — join as a learner, promote once caught up
//! (refused while behind), remove, transfer leadership — with etcdctl and the Admin service.

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, etcdctl_ok, wait_until};
use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::{StatusRequest, TransferLeadershipRequest};

/// `member list -w json` as (id, name, is_learner).
fn members(ep: &str) -> Vec<(u64, String, bool)> {
    let out = etcdctl_ok(ep, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["members"]
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
        .unwrap_or_default()
}

fn admin_status(ep: &str) -> flotilla_proto::admin::StatusResponse {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c = AdminClient::connect(format!("http://{ep}"))
            .await
            .expect("connect admin");
        c.status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    })
}

#[test]
fn members_join_as_learners_get_promoted_removed_and_lead() {
    let mut c = Cluster::start(1, &[]);
    let ep0 = c.members[0].endpoint();
    for i in 0..10 {
        etcdctl_ok(&ep0, &["put", &format!("j{i}"), "v"]);
    }
    // Grow one member at a time: join as learner, catch up, promote.
    for name in ["m2", "m3"] {
        let i = c.add_joiner(name);
        c.members[i].start();
        let id = wait_until(Duration::from_secs(20), "the joiner is a learner", || {
            members(&ep0)
                .into_iter()
                .find(|(_, n, learner)| n == name && *learner)
                .map(|(id, _, _)| id)
        });
        let ep = c.members[i].endpoint();
        wait_until(Duration::from_secs(20), "the learner caught up", || {
            (common::count_prefix(&ep, "j", true) == Some(10)).then_some(())
        });
        // The leader reports its progress.
        let st = admin_status(&ep0);
        let m = st
            .members
            .iter()
            .find(|m| m.id == id)
            .expect("learner in status");
        assert!(m.is_learner);
        assert!(m.match_index.is_some() && m.lag.is_some());
        wait_until(
            Duration::from_secs(10),
            "the leader says it is caught up",
            || {
                admin_status(&ep0)
                    .members
                    .iter()
                    .any(|m| m.id == id && m.caught_up == Some(true))
                    .then_some(())
            },
        );
        wait_until(Duration::from_secs(10), "promotion succeeds", || {
            etcdctl(&ep0, &["member", "promote", &format!("{id:x}")])
                .status
                .success()
                .then_some(())
        });
        assert!(
            members(&ep0)
                .iter()
                .any(|(m, _, learner)| *m == id && !learner),
            "{name} is a voter"
        );
    }
    assert_eq!(members(&ep0).len(), 3);
    let all = c.endpoints();
    etcdctl_ok(&all, &["put", "grown", "yes"]);
    // Any member serves linearizable reads now, the newest one included.
    assert_eq!(
        etcdctl_ok(&c.members[2].endpoint(), &["get", "grown"]),
        "grown\nyes\n"
    );

    // Transfer leadership to the newest member through the Admin service of another member.
    let target = admin_status(&c.members[2].endpoint()).id;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let leader = rt.block_on(async {
        let mut a = AdminClient::connect(format!("http://{}", c.members[1].endpoint()))
            .await
            .expect("connect");
        a.transfer_leadership(TransferLeadershipRequest { target_id: target })
            .await
            .expect("transfer")
            .into_inner()
            .leader_id
    });
    assert_eq!(leader, target);
    wait_until(
        Duration::from_secs(5),
        "everyone sees the new leader",
        || {
            (0..3)
                .all(|i| admin_status(&c.members[i].endpoint()).leader_id == target)
                .then_some(())
        },
    );

    // Remove the first member (through a member that is not the leader).
    let first = admin_status(&ep0).id;
    let out = etcdctl_ok(
        &c.members[1].endpoint(),
        &["member", "remove", &format!("{first:x}")],
    );
    assert!(out.contains("removed"), "{out}");
    c.members[0].kill9();
    let rest = c.endpoints();
    wait_until(Duration::from_secs(5), "two members left", || {
        (members(&rest).len() == 2).then_some(())
    });
    assert_eq!(
        etcdctl_ok(&rest, &["put", "after-remove", "ok"]).trim(),
        "OK"
    );
}

#[test]
fn promotion_of_a_learner_that_is_behind_is_refused() {
    let c = Cluster::start(1, &[]);
    let ep = c.members[0].endpoint();
    // A voter cannot be added directly (single-server rule): the error says what to do.
    let out = etcdctl(
        &ep,
        &["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--learner"));
    // A learner that never starts stays behind.
    let out = etcdctl_ok(
        &ep,
        &[
            "member",
            "add",
            "x",
            "--learner",
            "--peer-urls=http://127.0.0.1:1",
        ],
    );
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("member id in `member add` output")
        .to_string();
    for i in 0..100 {
        etcdctl_ok(&ep, &["put", &format!("b{i}"), "v"]);
    }
    let learner = admin_status(&ep)
        .members
        .into_iter()
        .find(|m| m.is_learner)
        .expect("the learner in the leader's status");
    assert_eq!(learner.caught_up, Some(false), "{learner:?}");
    let out = etcdctl(&ep, &["member", "promote", &id]);
    assert!(!out.status.success(), "a lagging learner was promoted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in sync with leader"), "{err}");
    // Nothing changed: still one voter and one learner, and writes still commit.
    let ms = members(&ep);
    assert_eq!(ms.iter().filter(|m| m.2).count(), 1);
    assert_eq!(ms.iter().filter(|m| !m.2).count(), 1);
    assert_eq!(etcdctl_ok(&ep, &["put", "still", "ok"]).trim(), "OK");
}
