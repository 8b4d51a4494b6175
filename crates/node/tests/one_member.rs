//! A one-member cluster — what `replicas: 1`, a laptop or a CI job runs — must answer as fast
//! as its own disk allows. Nothing arrives from peers to wake its Raft loop, so every step that
//! waited for "the next input" would wait for the next tick instead: the election at start and
//! the commit of each write after its own sync (it once cost 100 ms per put, the default tick).
//! With a tick of ten minutes, such a wait is a timeout here, not a slow test.

mod common;

use std::process::{Command, Stdio};

use common::{etcdctl_ok, flotilla_bin, free_port};

/// Kills the member when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lone_member_elects_itself_and_commits_every_write_without_waiting_for_a_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = free_port();
    let child = Command::new(flotilla_bin())
        .args(["node", "--name", "solo", "--data-dir"])
        .arg(dir.path().join("solo"))
        .arg("--listen-client")
        .arg(format!("127.0.0.1:{client}"))
        .arg("--listen-peer")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--listen-metrics")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--tick-ms", "600000"])
        .env("FLOTILLA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn flotilla");
    let _member = Running(child);
    let ep = format!("127.0.0.1:{client}");
    // The first call may come before the port is open: etcdctl's dial waits for it.
    let mut last = 0;
    for i in 0..30 {
        let out = etcdctl_ok(
            &ep,
            &[
                "--dial-timeout=10s",
                "--command-timeout=5s",
                "put",
                &format!("k{i}"),
                "v",
                "-w",
                "json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let rev = v["header"]["revision"].as_i64().expect("revision");
        assert!(rev > last, "revisions grow: {rev} after {last}");
        last = rev;
    }
    let got = etcdctl_ok(
        &ep,
        &["--command-timeout=5s", "get", "k29", "--print-value-only"],
    );
    assert_eq!(got.trim(), "v");
}
