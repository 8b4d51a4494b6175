//! Maintenance and Cluster administration with the real etcdctl against a 3-member cluster:
//! `snapshot save` (a consistent image in etcd's stream framing with its SHA-256 trailer),
//! `endpoint hashkv --rev` (hash at a past revision, etcd's errors for compacted and future
//! revisions) and `member update` (refusals of bad requests).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Cluster, etcdctl, etcdctl_ok, wait_until};

fn stderr_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// SHA-256 of `data` in hex, by coreutils' `sha256sum` (independent of the server's code).
fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("blob");
    std::fs::write(&p, data).expect("write blob");
    let out = Command::new("sha256sum")
        .arg(&p)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(hash, compact_revision)` of `endpoint hashkv --rev=rev` on one endpoint, or the error text.
fn hashkv(ep: &str, rev: i64) -> Result<(u64, i64), String> {
    let out = etcdctl(
        ep,
        &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"],
    );
    if !out.status.success() {
        return Err(stderr_of(&out));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", stderr_of(&out)))?;
    let h = &v[0]["HashKV"];
    match (h["hash"].as_u64(), h["compact_revision"].as_i64()) {
        (Some(hash), compact) => Ok((hash, compact.unwrap_or(0))),
        _ => Err(format!("no hash in {v}")),
    }
}

fn revision(ep: &str) -> i64 {
    let out = etcdctl_ok(ep, &["get", "nothing-here", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("get json");
    v["header"]["revision"].as_i64().expect("revision")
}

#[test]
fn snapshot_save_streams_an_image_that_flotilla_restores_into_a_new_cluster() {
    let c = Cluster::start(3, &[]);
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    // Enough data for several 32 KiB chunks.
    let value = "v".repeat(1000);
    for i in 0..150 {
        etcdctl_ok(&eps[i % 3], &["put", &format!("snap/{i:03}"), &value]);
    }
    etcdctl_ok(&eps[0], &["put", "snap/marker", "distinctive-marker-value"]);
    // Every member answers (followers from their own applied state, once caught up).
    for (i, ep) in eps.iter().enumerate() {
        wait_until(
            Duration::from_secs(10),
            "the member applied the marker",
            || {
                etcdctl_ok(ep, &["get", "snap/marker", "--consistency=s"])
                    .contains("distinctive-marker-value")
                    .then_some(())
            },
        );
        let path = c.dir.path().join(format!("backup-{i}.db"));
        let path_s = path.to_string_lossy().into_owned();
        let out = etcdctl(ep, &["snapshot", "save", &path_s]);
        assert!(out.status.success(), "snapshot save: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains("Snapshot saved"),
            "{}",
            stderr_of(&out)
        );
        let file = std::fs::read(&path).expect("snapshot file");
        assert!(file.len() > 150 * 1000 + 32, "file of {} bytes", file.len());
        assert_eq!(&file[..8], b"FLOSNAP1", "the node's snapshot envelope");
        let (image, trailer) = file.split_at(file.len() - 32);
        assert_eq!(image.len() % 512, 0, "padded as etcdctl requires");
        assert_eq!(hex(trailer), sha256_hex(image), "etcd's SHA-256 trailer");
        let marker = b"distinctive-marker-value";
        assert!(
            image.windows(marker.len()).any(|w| w == marker),
            "the image holds the last write"
        );
    }
    // `snapshot status` reads a bbolt file; Flotilla's image is not one, and etcdctl says so
    // rather than printing figures.
    let path_s = c
        .dir
        .path()
        .join("backup-0.db")
        .to_string_lossy()
        .into_owned();
    let out = etcdctl(&eps[0], &["snapshot", "status", &path_s]);
    assert!(!out.status.success(), "{}", stderr_of(&out));

    // `flotilla snapshot status` reads it instead.
    let revision = etcdctl_ok(&eps[0], &["get", "snap/marker", "-w", "json"]);
    let revision: serde_json::Value = serde_json::from_str(&revision).expect("json");
    let revision = revision["header"]["revision"].as_i64().expect("revision");
    let status = flotilla(&["snapshot", "status", &path_s]);
    let fields: Vec<&str> = status.trim().split(", ").collect();
    assert_eq!(fields.len(), 4, "{status}");
    assert_eq!(fields[1], revision.to_string(), "{status}");
    assert_eq!(fields[2], "151", "every key: {status}");

    // Disaster recovery: a new cluster restored from the file has the keyspace and its
    // revisions, and goes on from there.
    let mut restored = Cluster::new(3, &["--cluster-token", "restored"]);
    for m in &restored.members {
        let dir = m.data_dir.to_string_lossy().into_owned();
        let out = flotilla(&["snapshot", "restore", &path_s, "--data-dir", &dir]);
        assert!(
            out.contains(&format!("restored revision {revision}")),
            "{out}"
        );
    }
    // A second restore into the same directory is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["snapshot", "restore", &path_s, "--data-dir"])
        .arg(&restored.members[0].data_dir)
        .output()
        .expect("run flotilla");
    assert!(!again.status.success());
    assert!(
        stderr_of(&again).contains("already holds data"),
        "{}",
        stderr_of(&again)
    );
    for m in &mut restored.members {
        m.start();
    }
    restored.wait_leader(Duration::from_secs(20));
    let reps = restored.endpoints();
    let got = etcdctl_ok(&reps, &["get", "snap/marker", "-w", "json"]);
    let got: serde_json::Value = serde_json::from_str(&got).expect("json");
    assert_eq!(got["header"]["revision"].as_i64(), Some(revision));
    assert_eq!(
        got["kvs"][0]["value"].as_str(),
        Some("ZGlzdGluY3RpdmUtbWFya2VyLXZhbHVl"),
        "the marker, base64"
    );
    etcdctl_ok(&reps, &["put", "after-restore", "x"]);
    let after = etcdctl_ok(&reps, &["get", "after-restore", "-w", "json"]);
    let after: serde_json::Value = serde_json::from_str(&after).expect("json");
    assert_eq!(after["header"]["revision"].as_i64(), Some(revision + 1));
    for m in &restored.members {
        assert_eq!(
            common::count_prefix(&m.endpoint(), "snap/", true),
            Some(151)
        );
    }
}

/// Runs the `flotilla` binary and returns its stdout (it must succeed).
fn flotilla(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .output()
        .expect("run flotilla");
    assert!(
        out.status.success(),
        "flotilla {args:?}: {}",
        stderr_of(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hashkv_at_a_revision_agrees_across_members_and_refuses_compacted_and_future() {
    let c = Cluster::start(3, &[]);
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    for i in 0..10 {
        etcdctl_ok(&eps[0], &["put", &format!("h/{i}"), &format!("a{i}")]);
    }
    let r1 = revision(&eps[0]);
    let at_r1 = wait_until(Duration::from_secs(10), "equal hashkv at r1", || {
        let hs: Vec<(u64, i64)> = eps.iter().filter_map(|e| hashkv(e, r1).ok()).collect();
        (hs.len() == 3 && hs.iter().all(|h| *h == hs[0])).then(|| hs[0])
    });
    for i in 0..10 {
        etcdctl_ok(&eps[1], &["put", &format!("h/{i}"), &format!("b{i}")]);
    }
    let r2 = revision(&eps[0]);
    assert!(r2 > r1);
    // The hash at r1 does not change with later writes; the current one differs.
    wait_until(Duration::from_secs(10), "members applied r2", || {
        eps.iter().all(|e| hashkv(e, r2).is_ok()).then_some(())
    });
    for e in &eps {
        assert_eq!(hashkv(e, r1), Ok(at_r1), "hash at r1 on {e}");
        let now = hashkv(e, 0).expect("current hashkv");
        assert_eq!(hashkv(e, r2), Ok(now), "rev=0 is the current revision");
        assert_ne!(now.0, at_r1.0, "later writes change the current hash");
    }
    // A revision above the store's is refused; so is one below the compaction.
    let err = hashkv(&eps[0], r2 + 1000).expect_err("future revision");
    assert!(err.contains("future revision"), "{err}");
    etcdctl_ok(&eps[0], &["compaction", &r2.to_string()]);
    let err = wait_until(Duration::from_secs(10), "compaction applied", || {
        hashkv(&eps[2], r1).err()
    });
    assert!(err.contains("compacted"), "{err}");
    let after = wait_until(
        Duration::from_secs(10),
        "equal hashkv after compaction",
        || {
            let hs: Vec<(u64, i64)> = eps.iter().filter_map(|e| hashkv(e, r2).ok()).collect();
            (hs.len() == 3 && hs.iter().all(|h| *h == hs[0])).then(|| hs[0])
        },
    );
    assert_eq!(after.1, r2, "the answer carries the compact revision");
}

#[test]
fn member_update_refuses_bad_requests_and_applies_good_ones_everywhere() {
    let c = Cluster::start(3, &[]);
    let ep = c.members[0].endpoint();
    let before = etcdctl_ok(&ep, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&before).expect("member list json");
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    let own_url = c.members[0].peer_url();
    let id0 = members
        .iter()
        .find(|m| m["peerURLs"].to_string().contains(&own_url))
        .and_then(|m| m["ID"].as_u64())
        .expect("member 0 is listed with its peer URL");
    let list_before = etcdctl_ok(&ep, &["member", "list"]);

    // Unknown member: etcd's "member not found".
    let out = etcdctl(
        &ep,
        &["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("member not found"),
        "{}",
        stderr_of(&out)
    );
    // Another member's peer URL.
    let other = c.members[1].peer_url();
    let out = etcdctl(
        &ep,
        &[
            "member",
            "update",
            &format!("{id0:x}"),
            &format!("--peer-urls={other}"),
        ],
    );
    assert!(!out.status.success());
    let text = stderr_of(&out);
    assert!(text.contains("Peer URLs already exists"), "{text}");
    assert_eq!(
        etcdctl_ok(&ep, &["member", "list"]),
        list_before,
        "refusals change nothing"
    );
    // A good update goes through the log: every member lists the new URL (the same listener
    // under another name, so the cluster keeps working), also after a restart.
    let id1 = members
        .iter()
        .find(|m| m["peerURLs"].to_string().contains(&other))
        .and_then(|m| m["ID"].as_u64())
        .expect("member 1 is listed");
    let renamed = other.replace("127.0.0.1", "localhost");
    etcdctl_ok(
        &ep,
        &[
            "member",
            "update",
            &format!("{id1:x}"),
            &format!("--peer-urls={renamed}"),
        ],
    );
    for m in &c.members {
        let e = m.endpoint();
        wait_until(
            Duration::from_secs(10),
            "every member lists the new URL",
            || {
                let list = etcdctl_ok(&e, &["member", "list"]);
                (list.contains(&renamed) && !list.contains(&other)).then_some(())
            },
        );
    }
    let mut c = c;
    c.members[2].kill9();
    c.members[2].start();
    let e2 = c.members[2].endpoint();
    wait_until(
        Duration::from_secs(20),
        "the restarted member lists the new URL",
        || {
            let out = etcdctl(&e2, &["member", "list"]);
            String::from_utf8_lossy(&out.stdout)
                .contains(&renamed)
                .then_some(())
        },
    );
    assert_eq!(etcdctl_ok(&ep, &["put", "after-update", "ok"]).trim(), "OK");
}
