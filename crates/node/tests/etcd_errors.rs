//! Errors etcd defines, as etcd clients see them from a real 3-member cluster: the gRPC code
//! and the exact message (clients match etcd's typed errors by their text, so a suffix breaks
//! them).

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, wait_until};
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, Compare, LeaseGrantRequest, LeaseRevokeRequest,
    MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest, MoveLeaderRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, compare, request_op,
};
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

fn member_add(endpoint: &str, peer_url: &str) -> Result<u64, tonic::Status> {
    let req = MemberAddRequest {
        peer_ur_ls: vec![peer_url.to_string()],
        is_learner: true,
    };
    on(endpoint, async |ch| {
        let r = ClusterClient::new(ch).member_add(req).await?;
        Ok(r.into_inner().member.map(|m| m.id).unwrap_or(0))
    })
}

fn member_promote(endpoint: &str, id: u64) -> Result<(), tonic::Status> {
    on(endpoint, async |ch| {
        ClusterClient::new(ch)
            .member_promote(MemberPromoteRequest { id })
            .await
            .map(|_| ())
    })
}

fn member_remove(endpoint: &str, id: u64) -> Result<(), tonic::Status> {
    on(endpoint, async |ch| {
        ClusterClient::new(ch)
            .member_remove(MemberRemoveRequest { id })
            .await
            .map(|_| ())
    })
}

fn range(endpoint: &str, key: &[u8], revision: i64) -> Result<(), tonic::Status> {
    let req = RangeRequest {
        key: key.to_vec(),
        revision,
        ..Default::default()
    };
    on(endpoint, async |ch| {
        KvClient::new(ch).range(req).await.map(|_| ())
    })
}

/// Puts `key` and returns the revision it created.
fn put(endpoint: &str, key: &[u8]) -> Result<i64, tonic::Status> {
    let req = PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    on(endpoint, async |ch| {
        let r = KvClient::new(ch).put(req).await?.into_inner();
        Ok(r.header.map(|h| h.revision).unwrap_or(0))
    })
}

/// Puts `prefix0..prefix{n-1}` over one connection; returns the last revision.
fn put_many(endpoint: &str, prefix: &str, n: usize) -> Result<i64, tonic::Status> {
    on(endpoint, async |ch| {
        let mut kv = KvClient::new(ch);
        let mut rev = 0;
        for i in 0..n {
            let req = PutRequest {
                key: format!("{prefix}{i}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            rev = kv
                .put(req)
                .await?
                .into_inner()
                .header
                .map_or(0, |h| h.revision);
        }
        Ok(rev)
    })
}

fn txn_of_puts(endpoint: &str, keys: &[&[u8]]) -> Result<(), tonic::Status> {
    let success = keys
        .iter()
        .map(|k| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        })
        .collect();
    let req = TxnRequest {
        success,
        ..Default::default()
    };
    on(endpoint, async |ch| {
        KvClient::new(ch).txn(req).await.map(|_| ())
    })
}

fn compact(endpoint: &str, revision: i64) -> Result<(), tonic::Status> {
    let req = CompactionRequest {
        revision,
        physical: true,
    };
    on(endpoint, async |ch| {
        KvClient::new(ch).compact(req).await.map(|_| ())
    })
}

fn lease_revoke(endpoint: &str, id: i64) -> Result<(), tonic::Status> {
    on(endpoint, async |ch| {
        LeaseClient::new(ch)
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .map(|_| ())
    })
}

fn admin_status(endpoint: &str) -> Option<flotilla_proto::admin::StatusResponse> {
    on(endpoint, async |ch| {
        flotilla_proto::admin::admin_client::AdminClient::new(ch)
            .status(flotilla_proto::admin::StatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    })
}

/// One row of the table: what provokes the error, and etcd's (code, message) for it.
struct Case<'a> {
    what: &'a str,
    provoke: Box<dyn Fn() -> Result<(), tonic::Status> + 'a>,
    code: Code,
    message: &'a str,
}

#[test]
fn errors_etcd_defines_carry_its_code_and_exact_text() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let f = (leader + 1) % 3;
    let (follower_id, _, _) = c.status_of(f).expect("follower status");
    let other_peer_url = c.members[(leader + 2) % 3].peer_url();
    let lep = c.members[leader].endpoint();
    // Most requests go to a follower, so the error also crosses forwarding intact.
    let fep = c.members[f].endpoint();

    // A learner that never starts stays behind the leader, by more than the lag a learner
    // may be promoted with (flotilla_raft::Config::promotable_lag, 64 entries).
    let learner = member_add(&fep, "http://127.0.0.1:1").expect("add a learner");
    assert_ne!(learner, 0);
    let rev = put_many(&lep, "e", 100).expect("puts");
    compact(&lep, rev).expect("compact");
    // The leader judges "caught up" against where its log was one to two election timeouts
    // ago; wait until that judgement has seen the learner behind for longer than that.
    wait_until(
        Duration::from_secs(20),
        "the leader reports the learner behind",
        || {
            let st = admin_status(&lep)?;
            let m = st.members.iter().find(|m| m.id == learner)?;
            let silent = m.last_contact_ms? > 3 * common::ELECTION.as_millis() as u64;
            (m.caught_up == Some(false) && silent).then_some(())
        },
    );

    let too_many: Vec<Vec<u8>> = (0..129).map(|i| format!("t{i}").into_bytes()).collect();
    let too_many: Vec<&[u8]> = too_many.iter().map(Vec::as_slice).collect();
    let cases = [
        Case {
            what: "member remove of an id that is not a member",
            provoke: Box::new(|| member_remove(&fep, 0xdead_beef)),
            code: Code::NotFound,
            message: "etcdserver: member not found",
        },
        Case {
            what: "member promote of an id that is not a member",
            provoke: Box::new(|| member_promote(&fep, 0xdead_beef)),
            code: Code::NotFound,
            message: "etcdserver: member not found",
        },
        Case {
            what: "member add with a peer URL a member has",
            provoke: Box::new(|| member_add(&fep, &other_peer_url).map(|_| ())),
            code: Code::FailedPrecondition,
            message: "etcdserver: Peer URLs already exists",
        },
        Case {
            what: "member promote of a learner that is behind",
            provoke: Box::new(|| member_promote(&fep, learner)),
            code: Code::FailedPrecondition,
            message: "etcdserver: can only promote a learner member which is in sync with leader",
        },
        Case {
            what: "member promote of a voter",
            provoke: Box::new(|| member_promote(&fep, follower_id)),
            code: Code::FailedPrecondition,
            message: "etcdserver: can only promote a learner member",
        },
        Case {
            what: "member add of a second learner",
            provoke: Box::new(|| member_add(&fep, "http://127.0.0.1:2").map(|_| ())),
            code: Code::FailedPrecondition,
            message: "etcdserver: too many learner members in cluster",
        },
        Case {
            what: "lease revoke of a lease that does not exist",
            provoke: Box::new(|| lease_revoke(&fep, 0x7777)),
            code: Code::NotFound,
            message: "etcdserver: requested lease not found",
        },
        Case {
            what: "range at a compacted revision",
            provoke: Box::new(|| range(&fep, b"e0", 1)),
            code: Code::OutOfRange,
            message: "etcdserver: mvcc: required revision has been compacted",
        },
        Case {
            what: "range at a future revision",
            provoke: Box::new(|| range(&fep, b"e0", rev + 1000)),
            code: Code::OutOfRange,
            message: "etcdserver: mvcc: required revision is a future revision",
        },
        Case {
            what: "move-leader sent to a follower",
            provoke: Box::new(|| move_leader(&fep, follower_id)),
            code: Code::FailedPrecondition,
            message: "etcdserver: not leader",
        },
        Case {
            what: "move-leader to a member that does not exist",
            provoke: Box::new(|| move_leader(&lep, 0xdead_beef)),
            code: Code::FailedPrecondition,
            message: "etcdserver: bad leader transferee",
        },
        Case {
            what: "put without a key",
            provoke: Box::new(|| put(&fep, b"").map(|_| ())),
            code: Code::InvalidArgument,
            message: "etcdserver: key is not provided",
        },
        Case {
            what: "range without a key",
            provoke: Box::new(|| range(&fep, b"", 0)),
            code: Code::InvalidArgument,
            message: "etcdserver: key is not provided",
        },
        Case {
            what: "txn with 129 operations",
            provoke: Box::new(|| txn_of_puts(&fep, &too_many)),
            code: Code::InvalidArgument,
            message: "etcdserver: too many operations in txn request",
        },
        Case {
            what: "txn putting one key twice",
            provoke: Box::new(|| txn_of_puts(&fep, &[b"dup", b"dup"])),
            code: Code::InvalidArgument,
            message: "etcdserver: duplicate key given in txn request",
        },
    ];
    let mut wrong = Vec::new();
    for case in &cases {
        match (case.provoke)() {
            Ok(()) => wrong.push(format!("{}: succeeded", case.what)),
            Err(st) if st.code() != case.code || st.message() != case.message => {
                wrong.push(format!(
                    "{}: got ({:?}, {:?}), etcd answers ({:?}, {:?})",
                    case.what,
                    st.code(),
                    st.message(),
                    case.code,
                    case.message
                ));
            }
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "errors unlike etcd's:\n{}",
        wrong.join("\n")
    );

    // etcd bounds each of a txn's lists by 128, not their sum: 100 compares and 100 puts pass.
    let big = TxnRequest {
        compare: (0..100)
            .map(|i| Compare {
                key: format!("absent{i}").into_bytes(),
                target: compare::CompareTarget::Version as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::Version(0)),
                ..Default::default()
            })
            .collect(),
        success: (0..100)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: format!("big{i}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    };
    let took = on(&fep, async |ch| {
        KvClient::new(ch)
            .txn(big)
            .await
            .map(|r| r.into_inner().succeeded)
    });
    assert_eq!(took.map_err(|s| s.message().to_owned()), Ok(true));

    // None of the refusals changed the membership: three voters and the one learner.
    let out = common::etcdctl_ok(&lep, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ms = v["members"].as_array().expect("members");
    assert_eq!(ms.len(), 4, "{out}");
    let learners = ms.iter().filter(|m| m["isLearner"].as_bool() == Some(true));
    assert_eq!(learners.count(), 1, "{out}");
}

/// Raises (or clears) an alarm with a raw Maintenance.Alarm, as a client may.
fn alarm(endpoint: &str, action: AlarmAction, member_id: u64, alarm: AlarmType) {
    let req = AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    };
    on(endpoint, async |ch| {
        MaintenanceClient::new(ch).alarm(req).await.map(|_| ())
    })
    .expect("alarm request");
}

fn lease_grant(endpoint: &str) -> Result<(), tonic::Status> {
    on(endpoint, async |ch| {
        LeaseClient::new(ch)
            .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .map(|_| ())
    })
}

/// The errors of etcd's alarm appliers (`applierV3Capped`, `applierV3Corrupt`), decided at
/// apply from the replicated alarms, so a follower answers them as the leader does.
#[test]
fn active_alarms_refuse_requests_with_etcds_code_and_text() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let f = (leader + 1) % 3;
    let (follower_id, _, _) = c.status_of(f).expect("follower status");
    let fep = c.members[f].endpoint();
    let lep = c.members[leader].endpoint();
    let rev = put(&fep, b"a").expect("put");

    alarm(&lep, AlarmAction::Activate, follower_id, AlarmType::Nospace);
    let nospace = (
        Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded".to_string(),
    );
    assert_eq!(err_of(put(&fep, b"b")), nospace, "put");
    assert_eq!(
        err_of(txn_of_puts(&fep, &[b"c"])),
        nospace,
        "txn with a put"
    );
    assert_eq!(err_of(lease_grant(&fep)), nospace, "lease grant");
    assert!(range(&fep, b"a", 0).is_ok(), "range is served");
    assert!(
        txn_of_puts(&fep, &[]).is_ok(),
        "a txn without puts is applied"
    );
    assert!(compact(&fep, rev).is_ok(), "compaction is applied");

    alarm(&lep, AlarmAction::Activate, follower_id, AlarmType::Corrupt);
    let corrupt = (Code::DataLoss, "etcdserver: corrupt cluster".to_string());
    assert_eq!(err_of(put(&fep, b"b")), corrupt, "put");
    assert_eq!(err_of(txn_of_puts(&fep, &[])), corrupt, "txn");
    assert_eq!(err_of(compact(&fep, rev + 1)), corrupt, "compaction");
    assert_eq!(err_of(lease_revoke(&fep, 0x7777)), corrupt, "lease revoke");
    assert!(
        range(&fep, b"a", 0).is_ok(),
        "range is served, as etcd's base applier does"
    );

    alarm(
        &lep,
        AlarmAction::Deactivate,
        follower_id,
        AlarmType::Corrupt,
    );
    alarm(
        &lep,
        AlarmAction::Deactivate,
        follower_id,
        AlarmType::Nospace,
    );
    assert!(put(&fep, b"b").is_ok(), "writes work once disarmed");
}
