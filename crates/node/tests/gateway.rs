//! The HTTP/JSON gateway on the client port, driven like `curl -X POST` (raw HTTP/1.1 over a
//! TcpStream) against a 3-process cluster, with etcdctl on the same port checking that gRPC
//! and JSON see the same data; and auth through the gateway (`/v3/auth/*`, the
//! `Authorization` header on every route) judged as etcdctl's gRPC requests are.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, etcdctl_ok};
use serde_json::{Value, json};

/// POSTs `body` to `path` on `port`; returns the status code and the raw body.
fn post_raw(port: u16, path: &str, body: &str) -> (u16, String) {
    post_with(port, path, body, &[])
}

/// POSTs `body` to `path` on `port` with extra `headers` (`curl -H`); returns the status code
/// and the raw body.
fn post_with(port: u16, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the client port");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP response head");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (code, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// POSTs JSON and expects 200 with a JSON body.
fn post(port: u16, path: &str, body: Value) -> Value {
    let (code, text) = post_raw(port, path, &body.to_string());
    assert_eq!(code, 200, "POST {path} {body}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {text}"))
}

#[test]
fn gateway_serves_kv_lease_status_and_members_as_etcds_grpc_gateway() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(20));
    let follower = &c.members[(leader + 1) % 3];
    let port = follower.client;

    // curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
    let put = post(port, "/v3/kv/put", json!({"key": "Zm9v", "value": "YmFy"}));
    let h = &put["header"];
    let rev: i64 = h["revision"]
        .as_str()
        .expect("int64 as a string")
        .parse()
        .expect("numeric revision");
    assert!(h["cluster_id"].as_str().is_some() && h["raft_term"].as_str().is_some());
    assert_eq!(h["member_id"].as_str().map(str::is_empty), Some(false));
    // gRPC on the same port sees it.
    assert_eq!(
        etcdctl_ok(&follower.endpoint(), &["get", "foo"]),
        "foo\nbar\n"
    );

    let range = post(port, "/v3/kv/range", json!({"key": "Zm9v"}));
    assert_eq!(range["count"], "1");
    let kv = &range["kvs"][0];
    assert_eq!(kv["key"], "Zm9v");
    assert_eq!(kv["value"], "YmFy");
    assert_eq!(kv["version"], "1");
    assert_eq!(kv["create_revision"], rev.to_string());
    assert!(kv.get("lease").is_none(), "defaults are omitted: {kv}");

    // A txn with a value compare, etcd's JSON enum names.
    let txn = post(
        port,
        "/v3/kv/txn",
        json!({
            "compare": [{"result": "EQUAL", "target": "VALUE", "key": "Zm9v", "value": "YmFy"}],
            "success": [{"request_put": {"key": "Zm9v", "value": "YmF6"}}],
            "failure": [{"request_range": {"key": "Zm9v"}}]
        }),
    );
    assert_eq!(txn["succeeded"], true);
    assert!(txn["responses"][0]["response_put"].is_object(), "{txn}");
    assert_eq!(
        etcdctl_ok(&follower.endpoint(), &["get", "foo"]),
        "foo\nbaz\n"
    );

    // Leases: grant, attach, revoke removes the key.
    let grant = post(port, "/v3/lease/grant", json!({"TTL": 30, "ID": 0}));
    assert_eq!(grant["TTL"], "30");
    let id = grant["ID"]
        .as_str()
        .expect("lease id as a string")
        .to_string();
    post(
        port,
        "/v3/kv/put",
        json!({"key": "bGVhc2Vk", "value": "dg==", "lease": id}),
    );
    let got = post(port, "/v3/kv/range", json!({"key": "bGVhc2Vk"}));
    assert_eq!(got["kvs"][0]["lease"], id.as_str());
    post(port, "/v3/lease/revoke", json!({"ID": id}));
    let gone = post(port, "/v3/kv/range", json!({"key": "bGVhc2Vk"}));
    assert!(
        gone.get("kvs").is_none() && gone.get("count").is_none(),
        "{gone}"
    );

    // Delete with prev_kv, then compaction.
    let del = post(
        port,
        "/v3/kv/deleterange",
        json!({"key": "Zm9v", "prev_kv": true}),
    );
    assert_eq!(del["deleted"], "1");
    assert_eq!(del["prev_kvs"][0]["value"], "YmF6");
    let cur: i64 = del["header"]["revision"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("revision");
    post(
        port,
        "/v3/kv/compaction",
        json!({"revision": cur.to_string()}),
    );
    let (code, text) = post_raw(
        port,
        "/v3/kv/range",
        &json!({"key": "Zm9v", "revision": rev}).to_string(),
    );
    assert_eq!(code, 400, "{text}");
    let err: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(err["code"], 11, "OutOfRange: {err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("compacted"))
    );

    // Maintenance status and member list (empty bodies are empty requests).
    let st = post(port, "/v3/maintenance/status", json!({}));
    assert!(
        st["leader"].as_str().is_some() && st["version"].as_str().is_some(),
        "{st}"
    );
    let (code, text) = post_raw(port, "/v3/cluster/member/list", "");
    assert_eq!(code, 200, "{text}");
    let ml: Value = serde_json::from_str(&text).expect("JSON");
    let members = ml["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(
        members.iter().all(|m| m["ID"].as_str().is_some()
            && m["peerURLs"].as_array().is_some_and(|u| !u.is_empty()))
    );
}

#[test]
fn gateway_refuses_bad_json_with_etcds_error_body() {
    let c = Cluster::start(3, &[]);
    let port = c.members[0].client;
    for (path, body, want) in [
        ("/v3/kv/put", "{\"key\": ", "invalid JSON"),
        ("/v3/kv/put", "[1, 2]", "JSON object"),
        ("/v3/kv/put", "{\"key\": 12}", "base64"),
        ("/v3/kv/put", "{\"key\": \"%%%\"}", "base64"),
        (
            "/v3/kv/range",
            "{\"key\": \"Zm9v\", \"limit\": \"ten\"}",
            "integer",
        ),
        ("/v3/kv/range", "{}", "key is not provided"),
        (
            "/v3/kv/txn",
            "{\"compare\": [{\"result\": \"MAYBE\"}]}",
            "enum",
        ),
        ("/v3/lease/grant", "{\"TTL\": true}", "integer"),
    ] {
        let (code, text) = post_raw(port, path, body);
        assert_eq!(code, 400, "{path} {body}: {text}");
        let err: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} {body}: error body is not JSON ({e}): {text}"));
        assert_eq!(err["code"], 3, "{path} {body}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| e.contains(want)),
            "{path} {body}: {err}"
        );
    }
    // Nothing was written by the refused requests, and the member still serves.
    // (key "\0", range_end "\0": every key.)
    let range = post(
        port,
        "/v3/kv/range",
        json!({"key": "AA==", "range_end": "AA=="}),
    );
    assert!(range.get("kvs").is_none(), "{range}");
    assert!(range["header"]["revision"].as_str().is_some(), "{range}");
}

#[test]
fn gateway_serves_lock_and_election_as_etcds_grpc_gateway() {
    let c = Cluster::start(1, &[]);
    let port = c.members[0].client;
    let lease = post(port, "/v3/lease/grant", json!({"TTL": "60"}))["ID"]
        .as_str()
        .expect("lease id")
        .to_string();
    let id: i64 = lease.parse().expect("numeric lease id");

    // base64: "gw-lk" is Z3ctbGs=, "gw-lk/" Z3ctbGsv, "gw-el" Z3ctZWw=, "v1" djE=, "v2" djI=.
    let locked = post(
        port,
        "/v3/lock/lock",
        json!({"name": "Z3ctbGs=", "lease": lease}),
    );
    let key = locked["key"].as_str().expect("key");
    assert!(key.starts_with("Z3ctbGsv"), "{locked}");
    let keys = etcdctl_ok(
        &c.members[0].endpoint(),
        &["get", "gw-lk/", "--prefix", "--keys-only"],
    );
    assert_eq!(keys.trim(), format!("gw-lk/{id:x}"));
    let unlocked = post(port, "/v3/lock/unlock", json!({"key": locked["key"]}));
    assert!(unlocked["header"]["revision"].is_string(), "{unlocked}");

    let won = post(
        port,
        "/v3/election/campaign",
        json!({"name": "Z3ctZWw=", "lease": lease, "value": "djE="}),
    );
    let leader = won["leader"].clone();
    assert_eq!(leader["name"], json!("Z3ctZWw="), "{won}");
    assert_eq!(leader["lease"], json!(lease), "{won}");
    post(
        port,
        "/v3/election/proclaim",
        json!({"leader": leader, "value": "djI="}),
    );
    let now = post(port, "/v3/election/leader", json!({"name": "Z3ctZWw="}));
    assert_eq!(now["kv"]["value"], json!("djI="), "{now}");
    post(port, "/v3/election/resign", json!({"leader": leader}));

    let (code, text) = post_raw(
        port,
        "/v3/election/leader",
        &json!({"name": "Z3ctZWw="}).to_string(),
    );
    let v: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!((code, &v["code"]), (500, &json!(2)), "{text}");
    assert_eq!(v["message"], json!("election: no leader"), "{text}");
}

/// An error body's (HTTP status, gRPC code, message).
fn refusal(code: u16, text: &str) -> (u16, i64, String) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (
        code,
        v["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not a refusal: {code} {text}")),
        v["message"].as_str().expect("message").to_string(),
    )
}

/// Standard base64 of `s` (with padding), as the gateway's `bytes` fields want it.
fn b64(s: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn gateway_auth_routes_and_tokens_as_etcds_grpc_gateway() {
    // Started patiently: bcrypt and three members on a shared machine.
    let mut c = Cluster::new(3, &["--bcrypt-cost", "4"]);
    for m in &mut c.members {
        m.start();
    }
    let leader = c.wait_leader(Duration::from_secs(60));
    let port = c.members[leader].client;
    let other = c.members[(leader + 1) % 3].client;
    let ep = c.members[leader].endpoint();

    // Users and roles through the gateway, as `curl .../v3/auth/...` does with etcd.
    for (path, body) in [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "rootpw"}),
        ),
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": "alice", "password": "apw"}),
        ),
        ("/v3/auth/role/add", json!({"name": "app"})),
        (
            "/v3/auth/role/grant",
            json!({"name": "app", "perm": {"permType": "READWRITE",
                   "key": b64("app/"), "range_end": b64("app0")}}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "alice", "role": "app"}),
        ),
    ] {
        post(port, path, body);
    }
    let users = post(port, "/v3/auth/user/list", json!({}));
    assert_eq!(users["users"], json!(["alice", "root"]), "{users}");
    let role = post(port, "/v3/auth/role/get", json!({"role": "app"}));
    assert_eq!(role["perm"][0]["key"], json!(b64("app/")), "{role}");
    // etcdctl (gRPC) sees what the gateway wrote.
    assert!(etcdctl_ok(&ep, &["user", "get", "alice"]).contains("app"));
    post(port, "/v3/auth/enable", json!({}));

    // Without a token, every route refuses as gRPC does (etcdctl without --user).
    let grpc = common::etcdctl(&ep, &["put", "app/x", "1"]);
    let grpc_err = String::from_utf8_lossy(&grpc.stderr).into_owned();
    assert!(
        grpc_err.contains("etcdserver: user name is empty"),
        "{grpc_err}"
    );
    // (Lock's errors reach clients with code Unknown, as etcd's v3lock server sends them.)
    for (path, body, http, code) in [
        (
            "/v3/kv/put",
            json!({"key": b64("app/x"), "value": b64("1")}),
            400,
            3,
        ),
        ("/v3/kv/range", json!({"key": b64("app/x")}), 400, 3),
        ("/v3/auth/user/list", json!({}), 400, 3),
        ("/v3/lock/lock", json!({"name": b64("app/lk")}), 500, 2),
    ] {
        let (status, text) = post_raw(port, path, &body.to_string());
        assert_eq!(
            refusal(status, &text),
            (http, code, "etcdserver: user name is empty".to_string()),
            "{path} without a token"
        );
    }

    // Authenticate; the token goes in the Authorization header, bare, as etcd's gateway takes it.
    let auth = post(
        port,
        "/v3/auth/authenticate",
        json!({"name": "alice", "password": "apw"}),
    );
    let alice = auth["token"].as_str().expect("token").to_string();
    let as_alice = [("Authorization", alice.as_str())];
    let (code, text) = post_with(
        port,
        "/v3/kv/put",
        &json!({"key": b64("app/x"), "value": b64("1")}).to_string(),
        &as_alice,
    );
    assert_eq!(code, 200, "{text}");
    // The same token on another member, once it applied the Authenticate entry.
    let read = common::wait_until(
        Duration::from_secs(10),
        "the token on another member",
        || {
            let (code, text) = post_with(
                other,
                "/v3/kv/range",
                &json!({"key": b64("app/x")}).to_string(),
                &as_alice,
            );
            (code == 200).then_some(text)
        },
    );
    let read: Value = serde_json::from_str(&read).expect("json");
    assert_eq!(read["kvs"][0]["value"], json!(b64("1")), "{read}");
    // Outside alice's permission, and admin calls: permission denied (403, code 7).
    for (path, body) in [
        (
            "/v3/kv/put",
            json!({"key": b64("other"), "value": b64("1")}),
        ),
        ("/v3/auth/user/list", json!({})),
    ] {
        let (code, text) = post_with(port, path, &body.to_string(), &as_alice);
        assert_eq!(
            refusal(code, &text),
            (403, 7, "etcdserver: permission denied".to_string()),
            "{path}"
        );
    }
    // A token the cluster never issued: etcd's invalid auth token (401, code 16).
    let (code, text) = post_with(
        port,
        "/v3/kv/range",
        &json!({"key": b64("app/x")}).to_string(),
        &[("Authorization", "bogus.7")],
    );
    assert_eq!(
        refusal(code, &text),
        (401, 16, "etcdserver: invalid auth token".to_string())
    );
    // grpc-gateway's other spelling, Grpc-Metadata-Token, carries a token too.
    let (code, text) = post_with(
        port,
        "/v3/kv/range",
        &json!({"key": b64("app/x")}).to_string(),
        &[("Grpc-Metadata-Token", alice.as_str())],
    );
    assert_eq!(code, 200, "{text}");

    // root manages through the gateway with its token, and turns auth off again.
    let root = post(
        port,
        "/v3/auth/authenticate",
        json!({"name": "root", "password": "rootpw"}),
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    let as_root = [("Authorization", root.as_str())];
    let (code, text) = post_with(port, "/v3/auth/user/list", "{}", &as_root);
    assert_eq!(code, 200, "{text}");
    let (code, text) = post_with(
        port,
        "/v3/auth/user/changepw",
        &json!({"name": "alice", "password": "apw2"}).to_string(),
        &as_root,
    );
    assert_eq!(code, 200, "{text}");
    let (code, text) = post_raw(
        port,
        "/v3/auth/authenticate",
        &json!({"name": "alice", "password": "apw"}).to_string(),
    );
    assert_eq!(
        refusal(code, &text),
        (
            400,
            3,
            "etcdserver: authentication failed, invalid user ID or password".to_string()
        )
    );
    let (code, text) = post_with(port, "/v3/auth/disable", "{}", &as_root);
    assert_eq!(code, 200, "{text}");
    let r = post(port, "/v3/kv/range", json!({"key": b64("app/x")}));
    assert_eq!(r["count"], json!("1"), "{r}");
}
