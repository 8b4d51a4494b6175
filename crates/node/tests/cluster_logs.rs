//! What a member logs at the default level (INFO) about elections, leader changes,
//! unreachable peers and membership changes: what an operator debugging an outage reads first.
//! Each line names member ids and terms; a dead peer's repeated failures are rate-limited.

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl_ok, wait_until};

fn log_of(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(c.members[i].log_to.as_ref().expect("log file")).unwrap_or_default()
}

fn admin_id(ep: &str) -> (u64, u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut c =
            flotilla_proto::admin::admin_client::AdminClient::connect(format!("http://{ep}"))
                .await
                .expect("connect admin");
        let st = c
            .status(flotilla_proto::admin::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        (st.id, st.leader_id)
    })
}

#[test]
fn elections_leader_changes_unreachable_peers_and_membership_are_logged() {
    let mut c = Cluster::new(3, &[]);
    for i in 0..3 {
        c.members[i].log_to = Some(c.dir.path().join(format!("m{i}.log")));
        c.members[i].start();
    }
    c.wait_leader(Duration::from_secs(20));
    let (_, leader) = admin_id(&c.members[0].endpoint());
    let ids: Vec<u64> = (0..3)
        .map(|i| admin_id(&c.members[i].endpoint()).0)
        .collect();
    let old = ids.iter().position(|id| *id == leader).expect("leader");
    let hex = |id: u64| format!("{id:x}");
    // The first leader said so, with its term; the others followed it by id.
    wait_until(Duration::from_secs(5), "the election is logged", || {
        let l = log_of(&c, old);
        (l.contains("became the leader") && l.contains("term=")).then_some(())
    });
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    for &i in &others {
        let l = log_of(&c, i);
        assert!(
            l.contains("following a new leader")
                && l.contains(&format!("leader=\"{}\"", hex(leader))),
            "member {i} names the leader it follows:\n{l}"
        );
    }

    // The leader dies: the survivors log the loss or a campaign, the new leader, and the dead
    // peer — once, not once per reconnect attempt.
    c.members[old].kill9();
    let new_leader = wait_until(Duration::from_secs(10), "a new leader", || {
        let (_, l) = admin_id(&c.members[others[0]].endpoint());
        (l != 0 && l != leader).then_some(l)
    });
    let new_i = ids
        .iter()
        .position(|id| *id == new_leader)
        .expect("new leader");
    wait_until(Duration::from_secs(5), "the new leader logged it", || {
        log_of(&c, new_i)
            .matches("became the leader")
            .count()
            .eq(&1)
            .then_some(())
    });
    let l = log_of(&c, new_i);
    assert!(l.contains("campaigning"), "{l}");
    wait_until(Duration::from_secs(5), "the dead peer is logged", || {
        log_of(&c, new_i)
            .contains(&format!("peer=\"{}\"", hex(leader)))
            .then_some(())
    });
    // Reconnects are retried at least every second; let several happen.
    std::thread::sleep(Duration::from_secs(3));
    let l = log_of(&c, new_i);
    let dead_lines = l
        .lines()
        .filter(|line| line.contains(&format!("peer=\"{}\"", hex(leader))))
        .filter(|line| line.contains("WARN"))
        .count();
    assert!(
        (1..=2).contains(&dead_lines),
        "a dead peer is logged once per interval, not per attempt ({dead_lines} lines):\n{l}"
    );

    // A membership change names the member and the resulting configuration.
    let ep = c.members[new_i].endpoint();
    etcdctl_ok(&ep, &["member", "remove", &hex(leader)]);
    wait_until(Duration::from_secs(5), "the removal is logged", || {
        let l = log_of(&c, new_i);
        l.lines()
            .any(|line| {
                line.contains("membership change applied")
                    && line.contains("RemoveNode")
                    && line.contains(&format!("member=\"{}\"", hex(leader)))
                    && line.contains("voters=2")
            })
            .then_some(())
    });
}
