//! User stories 1–3 with the real etcdctl: any endpoint serves any request, MVCC semantics,
//! headers, bad input.

mod common;

use std::time::Duration;

use common::{Cluster, etcdctl, etcdctl_ok, wait_until};

#[test]
fn etcdctl_kv_commands_work_on_every_member() {
    let c = Cluster::start(3, &[]);
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();

    // Writes through each member (followers forward to the leader).
    for (i, ep) in eps.iter().enumerate() {
        assert_eq!(
            etcdctl_ok(ep, &["put", &format!("k{i}"), &format!("v{i}")]).trim(),
            "OK"
        );
    }
    // Linearizable reads from each member see every write.
    for ep in &eps {
        let out = etcdctl_ok(ep, &["get", "k", "--prefix"]);
        assert_eq!(out, "k0\nv0\nk1\nv1\nk2\nv2\n", "from {ep}");
    }
    let ep0 = eps[0].as_str();
    assert_eq!(
        etcdctl_ok(ep0, &["get", "k", "--prefix", "--limit=1"]),
        "k0\nv0\n"
    );
    assert_eq!(
        etcdctl_ok(ep0, &["get", "k", "--prefix", "--keys-only"]),
        "k0\n\nk1\n\nk2\n\n"
    );
    assert_eq!(common::count_prefix(ep0, "k", false), Some(3));
    // Serializable reads are served locally; every member catches up.
    for ep in &eps {
        wait_until(Duration::from_secs(5), "serializable read sees k2", || {
            let out = etcdctl(ep, &["get", "k2", "--consistency=s"]);
            (String::from_utf8_lossy(&out.stdout) == "k2\nv2\n").then_some(())
        });
    }

    // Revisions: overwrite, read the past, compact, read a compacted revision.
    let fields = etcdctl_ok(ep0, &["put", "k0", "new", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&fields).expect("json");
    let rev = v["header"]["revision"]
        .as_i64()
        .expect("revision in header");
    assert!(v["header"]["cluster_id"].as_u64().is_some());
    assert!(v["header"]["member_id"].as_u64().is_some());
    assert!(v["header"]["raft_term"].as_u64().is_some());
    assert_eq!(
        etcdctl_ok(ep0, &["get", "k0", &format!("--rev={}", rev - 1)]),
        "k0\nv0\n"
    );
    assert_eq!(etcdctl_ok(ep0, &["get", "k0"]), "k0\nnew\n");
    assert!(etcdctl_ok(ep0, &["compaction", &rev.to_string()]).contains("compacted"));
    let old = etcdctl(ep0, &["get", "k0", &format!("--rev={}", rev - 1)]);
    assert!(!old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );

    // Txn with compares on value, version, create and mod revision.
    let txn = etcdctl_stdin(
        ep0,
        &["txn"],
        "value(\"k1\") = \"v1\"\nversion(\"k1\") = \"1\"\nmod(\"k0\") = \"{rev}\"\ncreate(\"k2\") > \"0\"\n\nput k1 txn-ok\n\nput k1 txn-failed\n\n"
            .replace("{rev}", &rev.to_string()),
    );
    assert!(txn.starts_with("SUCCESS"), "txn output: {txn}");
    assert_eq!(etcdctl_ok(&eps[2], &["get", "k1"]), "k1\ntxn-ok\n");
    let txn = etcdctl_stdin(
        ep0,
        &["txn"],
        "value(\"k1\") = \"nope\"\n\nput k1 a\n\nput k1 b\n\n".into(),
    );
    assert!(txn.starts_with("FAILURE"), "txn output: {txn}");
    assert_eq!(etcdctl_ok(&eps[1], &["get", "k1"]), "k1\nb\n");

    // Deletes, with --prev-kv and --prefix.
    assert_eq!(
        etcdctl_ok(&eps[1], &["del", "k1", "--prev-kv"]),
        "1\nk1\nb\n"
    );
    assert_eq!(etcdctl_ok(&eps[2], &["del", "k", "--prefix"]).trim(), "2");
    assert_eq!(etcdctl_ok(ep0, &["get", "k", "--prefix"]), "");

    // Cluster views.
    let list = etcdctl_ok(ep0, &["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    for m in &c.members {
        assert!(
            list.contains(&m.name) && list.contains(&m.peer_url()),
            "{list}"
        );
    }
    // Client URLs of the other bootstrap members are discovered.
    wait_until(
        Duration::from_secs(10),
        "member list shows every client URL",
        || {
            let list = etcdctl_ok(ep0, &["member", "list"]);
            eps.iter()
                .all(|e| list.contains(&format!("http://{e}")))
                .then_some(())
        },
    );
    let all = eps.join(",");
    let status = etcdctl_ok(&all, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    // etcdctl 3.4 sends a URL endpoint verbatim as the HTTP/2 :authority when it dials one
    // member (status, hashkv, and every --cluster command): accepted (src/authority.rs).
    let url = format!("http://{}", eps[0]);
    let cluster = etcdctl_ok(&url, &["endpoint", "status", "--cluster"]);
    assert_eq!(cluster.lines().count(), 3, "{cluster}");
    for e in &eps {
        assert!(cluster.contains(&format!("http://{e}")), "{cluster}");
    }
    let hashes = etcdctl_ok(&url, &["endpoint", "hashkv", "--cluster"]);
    assert_eq!(hashes.lines().count(), 3, "{hashes}");
    let health = etcdctl(&all, &["endpoint", "health"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
    assert!(health.status.success(), "{text}");
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
    // Every member applied the same history: equal HashKV.
    wait_until(
        Duration::from_secs(10),
        "equal hashkv on every member",
        || {
            let out = etcdctl(&all, &["endpoint", "hashkv", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let hashes: Vec<u64> = v
                .as_array()?
                .iter()
                .filter_map(|e| e["HashKV"]["hash"].as_u64())
                .collect();
            (hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0])).then_some(())
        },
    );
}

fn etcdctl_stdin(ep: &str, args: &[&str], input: String) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write txn");
    let out = child.wait_with_output().expect("etcdctl txn");
    assert!(
        out.status.success(),
        "etcdctl txn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn move_leader_hands_leadership_to_the_target() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let target = (leader + 1) % 3;
    let (target_id, _, _) = c.status_of(target).expect("status");
    let all = c.endpoints();
    let out = etcdctl_ok(&all, &["move-leader", &format!("{target_id:x}")]);
    assert!(out.contains("Leadership transferred"), "{out}");
    wait_until(Duration::from_secs(5), "target leads", || {
        let (_, l, _) = c.status_of(leader)?;
        (l == target_id).then_some(())
    });
    assert_eq!(etcdctl_ok(&all, &["put", "after-move", "x"]).trim(), "OK");
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let c = Cluster::start(1, &["--max-request-bytes", "4096"]);
    let ep = c.members[0].endpoint();
    let big = "x".repeat(8192);
    let out = etcdctl(&ep, &["put", "big", &big]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("request is too large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(etcdctl_ok(&ep, &["get", "big"]), "");
    // A range whose end is before its key.
    let out = etcdctl(&ep, &["get", "b", "a"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidArgument")
            || String::from_utf8_lossy(&out.stderr).contains("invalid range")
    );
    // Unknown members.
    let out = etcdctl(&ep, &["member", "remove", "1234"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("member not found"));
    let out = etcdctl(&ep, &["member", "promote", "1234"]);
    assert!(!out.status.success());
    // The member still works.
    assert_eq!(etcdctl_ok(&ep, &["put", "small", "ok"]).trim(), "OK");
}

#[test]
fn flotilla_dev_starts_a_cluster_and_stops_on_signal() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let base = common::free_port_block();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["dev", "--data-dir"])
        .arg(dir.path())
        .args(["--base-port", &base.to_string(), "--tick-ms", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flotilla dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut etcdctl_line = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.contains("etcdctl --endpoints=") && line.contains("put hello world") {
            etcdctl_line = Some(line);
            break;
        }
    }
    let line = etcdctl_line.expect("flotilla dev printed an etcdctl line");
    let eps = line
        .split("--endpoints=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("endpoints")
        .to_string();
    assert_eq!(eps.split(',').count(), 3);
    wait_until(Duration::from_secs(20), "dev cluster accepts a put", || {
        etcdctl(&eps, &["put", "hello", "world"])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(etcdctl_ok(&eps, &["get", "hello"]), "hello\nworld\n");
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let status = wait_until(Duration::from_secs(20), "flotilla dev exits", || {
        child.try_wait().expect("wait")
    });
    assert!(status.success(), "flotilla dev exit status {status}");
}
