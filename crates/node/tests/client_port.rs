//! The client port beyond etcd's registered services, against a real member: gRPC calls to
//! services and methods Flotilla does not serve get the gRPC status UNIMPLEMENTED (as etcd's
//! grpc-go answers), while plain HTTP to an unknown path keeps its 404; etcd's `/health`,
//! `/livez` and `/readyz` are served there as etcd serves them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Cluster;

/// Calls `path` with an empty protobuf message over a real gRPC channel.
fn grpc_call(endpoint: &str, path: &'static str) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        grpc.unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .map(|_| ())
    })
}

/// A plain HTTP/1.1 request on `port`: the status code.
fn http_status(port: u16, method: &str, path: &str) -> u16 {
    http(port, method, path).0
}

/// A plain HTTP/1.1 request on `port`: the status code and the body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[test]
fn health_livez_and_readyz_answer_as_etcd_on_the_client_port() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let f = (leader + 1) % 3;
    let port = c.members[f].client;

    let (code, body) = http(port, "GET", "/health");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_of(&body),
        serde_json::json!({"health": "true", "reason": ""})
    );
    assert_eq!(http(port, "GET", "/livez"), (200, "ok".to_string()));
    assert_eq!(http(port, "GET", "/readyz"), (200, "ok".to_string()));
    // The API level, as etcd's `/version`, and in Status (what `endpoint status` prints).
    let (code, body) = http(port, "GET", "/version");
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["etcdserver"], "3.4.0", "{body}");
    assert_eq!(v["etcdcluster"], "3.4.0", "{body}");
    assert_eq!(v["flotilla"], env!("CARGO_PKG_VERSION"), "{body}");
    let status = common::etcdctl_ok(&c.members[f].endpoint(), &["endpoint", "status"]);
    assert!(
        status.contains(&format!("3.4.0+flotilla.{}", env!("CARGO_PKG_VERSION"))),
        "{status}"
    );

    // Without a majority the member cannot serve a linearizable read: unhealthy, still live.
    for i in 0..3 {
        if i != f {
            c.members[i].kill9();
        }
    }
    let body = common::wait_until(Duration::from_secs(30), "/health says unhealthy", || {
        let (code, body) = http(port, "GET", "/health");
        (code == 503).then_some(body)
    });
    let v = json_of(&body);
    assert_eq!(v["health"], "false", "{body}");
    assert!(
        !v["reason"].as_str().unwrap_or("").is_empty(),
        "an unhealthy answer says why: {body}"
    );
    assert_eq!(http(port, "GET", "/livez"), (200, "ok".to_string()));
}

#[test]
fn unknown_grpc_services_and_methods_are_unimplemented_and_other_paths_404() {
    let c = Cluster::start(1, &[]);
    let ep = c.members[0].endpoint();

    let st = grpc_call(&ep, "/v3nosuchpb.NoSuch/Call").expect_err("no such service");
    assert_eq!(st.code(), tonic::Code::Unimplemented, "{st:?}");
    assert_eq!(st.message(), "unknown service v3nosuchpb.NoSuch");

    // Lock and Election are served (tests/lock_election.rs): an empty request reaches them.
    let st = grpc_call(&ep, "/v3lockpb.Lock/Unlock").expect_err("Unlock needs a key");
    assert_eq!(st.message(), "etcdserver: key is not provided", "{st:?}");

    let st = grpc_call(&ep, "/etcdserverpb.KV/NoSuchMethod").expect_err("no such method");
    assert_eq!(st.code(), tonic::Code::Unimplemented, "{st:?}");

    // The port still serves the real services on the same connection kind.
    common::etcdctl_ok(&ep, &["put", "k", "v"]);

    assert_eq!(
        http_status(c.members[0].client, "GET", "/no/such/path"),
        404
    );
    assert_eq!(http_status(c.members[0].client, "POST", "/v3/kv/nope"), 404);
}
