//! The generated code speaks etcd's wire format: bytes checked against hand-derived etcd
//! encodings (tag = field number << 3 | wire type), and gRPC paths as etcd clients call them.

use std::sync::{Arc, Mutex};

use flotilla_proto::{FILE_DESCRIPTOR_SET, admin, etcdserverpb as etcd, mvccpb, raft};
use prost::Message;

#[test]
fn put_request_bytes_match_etcd() {
    let put = etcd::PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        lease: 0x1234,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    let expected = [
        0x0a, 3, b'f', b'o', b'o', // 1: key (bytes)
        0x12, 3, b'b', b'a', b'r', // 2: value (bytes)
        0x18, 0xb4, 0x24, // 3: lease (varint 0x1234)
        0x20, 1, // 4: prev_kv
        0x28, 1, // 5: ignore_value
        0x30, 1, // 6: ignore_lease
    ];
    assert_eq!(put.encode_to_vec(), expected);
    assert_eq!(etcd::PutRequest::decode(&expected[..]), Ok(put));
}

#[test]
fn range_request_late_fields_have_etcd_numbers() {
    let range = etcd::RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 1,
        revision: 2,
        sort_order: etcd::range_request::SortOrder::Descend as i32,
        sort_target: etcd::range_request::SortTarget::Value as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 3,
        max_mod_revision: 4,
        min_create_revision: 5,
        max_create_revision: 6,
    };
    let expected = [
        0x0a, 1, b'a', // 1: key
        0x12, 1, b'b', // 2: range_end
        0x18, 1, // 3: limit
        0x20, 2, // 4: revision
        0x28, 2, // 5: sort_order DESCEND
        0x30, 4, // 6: sort_target VALUE
        0x38, 1, // 7: serializable
        0x40, 1, // 8: keys_only
        0x48, 1, // 9: count_only
        0x50, 3, // 10: min_mod_revision
        0x58, 4, // 11: max_mod_revision
        0x60, 5, // 12: min_create_revision
        0x68, 6, // 13: max_create_revision
    ];
    assert_eq!(range.encode_to_vec(), expected);
}

#[test]
fn txn_compare_and_ops_have_etcd_numbers() {
    let txn = etcd::TxnRequest {
        compare: vec![etcd::Compare {
            result: etcd::compare::CompareResult::NotEqual as i32,
            target: etcd::compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            target_union: Some(etcd::compare::TargetUnion::ModRevision(7)),
        }],
        success: vec![etcd::RequestOp {
            request: Some(etcd::request_op::Request::RequestDeleteRange(
                etcd::DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: vec![],
                    prev_kv: true,
                },
            )),
        }],
        failure: vec![],
    };
    let compare = [
        0x08, 3, // 1: result NOT_EQUAL
        0x10, 2, // 2: target MOD
        0x1a, 1, b'k', // 3: key
        0x30, 7, // 6: mod_revision (oneof target_union)
        0x82, 0x04, 1, b'l', // 64: range_end
    ];
    let delete = [0x0a, 1, b'k', 0x18, 1]; // key, 3: prev_kv
    let mut expected = vec![0x0a, compare.len() as u8];
    expected.extend_from_slice(&compare);
    expected.extend_from_slice(&[0x12, delete.len() as u8 + 2, 0x1a, delete.len() as u8]);
    expected.extend_from_slice(&delete);
    assert_eq!(txn.encode_to_vec(), expected);
}

#[test]
fn member_and_status_fields_have_etcd_numbers() {
    let member = etcd::Member {
        id: 1,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_eq!(
        member.encode_to_vec(),
        [
            0x08, 1, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1
        ]
    );
    let status = etcd::StatusResponse {
        raft_applied_index: 2,
        db_size_in_use: 3,
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(status.encode_to_vec(), [0x38, 2, 0x48, 3, 0x50, 1]);
    let kv = mvccpb::KeyValue {
        key: b"k".to_vec(),
        create_revision: 1,
        mod_revision: 2,
        version: 3,
        value: b"v".to_vec(),
        lease: 4,
    };
    assert_eq!(
        kv.encode_to_vec(),
        [
            0x0a, 1, b'k', 0x10, 1, 0x18, 2, 0x20, 3, 0x2a, 1, b'v', 0x30, 4
        ]
    );
    let watch = etcd::WatchResponse {
        events: vec![mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: None,
            prev_kv: None,
        }],
        ..Default::default()
    };
    assert_eq!(watch.encode_to_vec(), [0x5a, 2, 0x08, 1]);
}

/// Every RPC of etcd 3.4's client API, as `/package.Service/Method`.
const ETCD_34_METHODS: &[&str] = &[
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate",
    "/etcdserverpb.Cluster/MemberList",
    "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Defragment",
    "/etcdserverpb.Maintenance/Hash",
    "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/MoveLeader",
    "/etcdserverpb.Auth/AuthEnable",
    "/etcdserverpb.Auth/AuthDisable",
    "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Auth/UserAdd",
    "/etcdserverpb.Auth/UserGet",
    "/etcdserverpb.Auth/UserList",
    "/etcdserverpb.Auth/UserDelete",
    "/etcdserverpb.Auth/UserChangePassword",
    "/etcdserverpb.Auth/UserGrantRole",
    "/etcdserverpb.Auth/UserRevokeRole",
    "/etcdserverpb.Auth/RoleAdd",
    "/etcdserverpb.Auth/RoleGet",
    "/etcdserverpb.Auth/RoleList",
    "/etcdserverpb.Auth/RoleDelete",
    "/etcdserverpb.Auth/RoleGrantPermission",
    "/etcdserverpb.Auth/RoleRevokePermission",
];

#[test]
fn descriptor_set_lists_every_etcd_34_method() {
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor");
    let mut paths = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "etcdserverpb") {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    assert_eq!(paths, ETCD_34_METHODS);
    let packages: Vec<&str> = fds.file.iter().map(|f| f.package()).collect();
    for package in [
        "etcdserverpb",
        "mvccpb",
        "authpb",
        "flotilla.raft.v1",
        "flotilla.internal.v1",
        "flotilla.admin.v1",
    ] {
        assert!(packages.contains(&package), "{package} missing");
    }
}

#[test]
fn servers_are_named_as_etcd_services() {
    use flotilla_proto::etcdserverpb::{
        auth_server, cluster_server, kv_server, lease_server, maintenance_server, watch_server,
    };
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(raft::peer_server::SERVICE_NAME, "flotilla.raft.v1.Peer");
    assert_eq!(admin::admin_server::SERVICE_NAME, "flotilla.admin.v1.Admin");
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A transport that records each request's path and fails it, so a generated client shows
/// which path it calls without any server.
fn recorder(
    seen: Seen,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = std::io::Error,
    Future = std::future::Ready<Result<http::Response<tonic::body::Body>, std::io::Error>>,
> + Clone {
    tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        seen.lock().expect("lock").push(req.uri().path().to_owned());
        std::future::ready(Err(std::io::Error::other("recorded")))
    })
}

#[tokio::test]
async fn clients_call_etcd_paths() {
    let seen = Seen::default();
    let mut kv = etcd::kv_client::KvClient::new(recorder(seen.clone()));
    assert!(kv.range(etcd::RangeRequest::default()).await.is_err());
    assert!(kv.put(etcd::PutRequest::default()).await.is_err());
    assert!(kv.txn(etcd::TxnRequest::default()).await.is_err());
    let mut cluster = etcd::cluster_client::ClusterClient::new(recorder(seen.clone()));
    assert!(
        cluster
            .member_list(etcd::MemberListRequest::default())
            .await
            .is_err()
    );
    let mut maintenance = etcd::maintenance_client::MaintenanceClient::new(recorder(seen.clone()));
    assert!(
        maintenance
            .move_leader(etcd::MoveLeaderRequest::default())
            .await
            .is_err()
    );
    let mut peer = raft::peer_client::PeerClient::new(recorder(seen.clone()));
    assert!(peer.forward(raft::ForwardRequest::default()).await.is_err());
    let mut admin = admin::admin_client::AdminClient::new(recorder(seen.clone()));
    assert!(admin.status(admin::StatusRequest::default()).await.is_err());
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Maintenance/MoveLeader",
            "/flotilla.raft.v1.Peer/Forward",
            "/flotilla.admin.v1.Admin/Status",
        ]
    );
}

#[test]
fn lock_and_election_are_etcds_services_and_methods() {
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor");
    let mut paths = Vec::new();
    for file in fds
        .file
        .iter()
        .filter(|f| matches!(f.package(), "v3lockpb" | "v3electionpb"))
    {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths.sort();
    assert_eq!(
        paths,
        [
            "/v3electionpb.Election/Campaign",
            "/v3electionpb.Election/Leader",
            "/v3electionpb.Election/Observe",
            "/v3electionpb.Election/Proclaim",
            "/v3electionpb.Election/Resign",
            "/v3lockpb.Lock/Lock",
            "/v3lockpb.Lock/Unlock",
        ]
    );
    assert_eq!(
        flotilla_proto::v3lockpb::lock_server::SERVICE_NAME,
        "v3lockpb.Lock"
    );
    assert_eq!(
        flotilla_proto::v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
}
