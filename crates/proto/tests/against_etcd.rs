//! The generated clients against a real etcd 3.4 server: if our field numbers or paths were
//! wrong, etcd would drop fields or answer `Unimplemented`.
//!
//! Needs the `etcd` binary (Debian `etcd-server`, 3.4) on PATH:
//! `cargo test -p flotilla-proto --test against_etcd -- --ignored`

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_proto::etcdserverpb as etcd;
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::response_op::Response as OpResponse;
use tonic::transport::Channel;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn start_etcd(dir: &std::path::Path) -> (Server, Channel) {
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new("etcd")
        .args(["--name", "proto-test", "--data-dir"])
        .arg(dir)
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("proto-test={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the etcd binary (Debian etcd-server) on PATH");
    let server = Server(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = Channel::from_shared(client.clone())
            .expect("url")
            .connect()
            .await
        {
            let mut maintenance = etcd::maintenance_client::MaintenanceClient::new(channel.clone());
            if maintenance.status(etcd::StatusRequest {}).await.is_ok() {
                return (server, channel);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd did not answer within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs the etcd 3.4 server binary; see the module docs"]
async fn generated_clients_speak_to_etcd_34() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, channel) = start_etcd(dir.path()).await;
    let mut kv = etcd::kv_client::KvClient::new(channel.clone());

    let first = kv
        .put(etcd::PutRequest {
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    let header = first.header.expect("header");
    assert_ne!(header.cluster_id, 0);
    assert_ne!(header.member_id, 0);
    assert!(header.raft_term > 0);
    let rev1 = header.revision;

    let second = kv
        .put(etcd::PutRequest {
            key: b"k".to_vec(),
            value: b"v2".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    let prev = second.prev_kv.expect("prev_kv (field 2 of PutResponse)");
    assert_eq!(prev.value, b"v1");
    assert_eq!(prev.create_revision, rev1);
    assert_eq!(prev.version, 1);

    let range = kv
        .range(etcd::RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(range.count, 1);
    assert!(range.kvs.is_empty(), "count_only (field 9) was honoured");

    let old = kv
        .range(etcd::RangeRequest {
            key: b"k".to_vec(),
            revision: rev1,
            ..Default::default()
        })
        .await
        .expect("range at a past revision")
        .into_inner();
    assert_eq!(old.kvs[0].value, b"v1");
    assert_eq!(old.kvs[0].mod_revision, rev1);

    let txn = kv
        .txn(etcd::TxnRequest {
            compare: vec![etcd::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: b"k".to_vec(),
                target_union: Some(TargetUnion::Version(2)),
                ..Default::default()
            }],
            success: vec![etcd::RequestOp {
                request: Some(Op::RequestDeleteRange(etcd::DeleteRangeRequest {
                    key: b"k".to_vec(),
                    prev_kv: true,
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(txn.succeeded);
    let Some(OpResponse::ResponseDeleteRange(deleted)) = &txn.responses[0].response else {
        panic!("not a delete response: {:?}", txn.responses);
    };
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].value, b"v2");

    kv.compact(etcd::CompactionRequest {
        revision: rev1 + 1,
        physical: true,
    })
    .await
    .expect("compact");
    let compacted = kv
        .range(etcd::RangeRequest {
            key: b"k".to_vec(),
            revision: rev1,
            ..Default::default()
        })
        .await
        .expect_err("a compacted revision");
    assert_eq!(compacted.code(), tonic::Code::OutOfRange);
    assert_eq!(
        compacted.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    let mut cluster = etcd::cluster_client::ClusterClient::new(channel.clone());
    let members = cluster
        .member_list(etcd::MemberListRequest {})
        .await
        .expect("member list")
        .into_inner()
        .members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "proto-test");
    assert_eq!(members[0].id, header.member_id);
    assert!(!members[0].is_learner);
    assert_eq!(members[0].peer_ur_ls.len(), 1);
    assert_eq!(members[0].client_ur_ls.len(), 1);

    let mut maintenance = etcd::maintenance_client::MaintenanceClient::new(channel.clone());
    let status = maintenance
        .status(etcd::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(status.version.starts_with("3.4"), "{}", status.version);
    assert_eq!(status.leader, header.member_id);
    assert!(status.raft_applied_index > 0);
    assert!(status.db_size_in_use > 0);

    let mut lease = etcd::lease_client::LeaseClient::new(channel);
    let granted = lease
        .lease_grant(etcd::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("lease grant")
        .into_inner();
    assert_eq!(granted.ttl, 60);
    let ttl = lease
        .lease_time_to_live(etcd::LeaseTimeToLiveRequest {
            id: granted.id,
            keys: true,
        })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
}
