//! Errors etcd defines, as etcd clients see them from a real 3-member cluster: the gRPC code
//! and the exact message (clients match etcd's typed errors by their text, so a suffix breaks
//! them).

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, wait_until};
use flotilla_proto::etcdserverpb::MoveLeaderRequest;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::Code;

/// Runs one async gRPC exchange against `endpoint` on a fresh runtime.
fn on<T>(endpoint: &str, f: impl AsyncFnOnce(tonic::transport::Channel) -> T) -> T {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect()
            .await
            .expect("connect");
        f(ch).await
    })
}

fn move_leader(endpoint: &str, target_id: u64) -> Result<(), tonic::Status> {
    on(endpoint, async |ch| {
        MaintenanceClient::new(ch)
            .move_leader(MoveLeaderRequest { target_id })
            .await
            .map(|_| ())
    })
}

/// (code, message) of a failed call.
fn err_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let st = r.expect_err("the call should fail");
    (st.code(), st.message().to_string())
}

#[test]
fn move_leader_is_refused_by_followers_and_for_non_members_as_etcd_does() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let (leader_id, _, term) = c.status_of(leader).expect("leader status");
    let f = (leader + 1) % 3;
    let (follower_id, _, _) = c.status_of(f).expect("follower status");
    let other = (leader + 2) % 3;
    let (other_id, _, _) = c.status_of(other).expect("status");

    // A follower refuses, whatever the target (etcd: rpctypes.ErrGRPCNotLeader).
    let not_leader = (
        Code::FailedPrecondition,
        "etcdserver: not leader".to_string(),
    );
    let fep = c.members[f].endpoint();
    assert_eq!(err_of(move_leader(&fep, other_id)), not_leader);
    assert_eq!(err_of(move_leader(&fep, follower_id)), not_leader);
    // etcdctl finds the leader among the endpoints it is given: a follower alone is refused.
    let out = etcdctl(&fep, &["move-leader", &format!("{other_id:x}")]);
    assert!(
        !out.status.success(),
        "move-leader via a follower succeeded"
    );

    // The leader refuses a target that is not a member (etcd: ErrGRPCBadLeaderTransferee).
    let bad = (
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee".to_string(),
    );
    let lep = c.members[leader].endpoint();
    assert_eq!(err_of(move_leader(&lep, 0)), bad);
    assert_eq!(err_of(move_leader(&lep, 0x1234_5678)), bad);

    // None of that moved leadership.
    let (_, l, t) = c.status_of(leader).expect("leader status");
    assert_eq!(
        (l, t),
        (leader_id, term),
        "a refused MoveLeader changed leadership"
    );

    // The leader moves it to a voter, as etcd does.
    move_leader(&lep, follower_id).expect("move-leader on the leader");
    wait_until(Duration::from_secs(10), "the follower leads", || {
        (c.status_of(f)?.1 == follower_id).then_some(())
    });
}
