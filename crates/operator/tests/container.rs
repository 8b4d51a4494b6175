//! Container test: a three-member cluster from the image on a Docker network; etcdctl works
//! against it; `docker kill` of the leader's container and the cluster recovers.
//!
//! Needs docker, etcdctl and the image (built by scripts/build-image.sh, which takes a long
//! while on 2 cores), so it is ignored by default:
//!
//!   scripts/build-image.sh flotilla:dev
//!   cargo test -p flotilla-operator --test container -- --ignored --nocapture
//!
//! FLOTILLA_IMAGE overrides the image name.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Retries `f` until it returns Some or the timeout passes.
fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Cleanup(Vec<String>, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = run("docker", &["rm", "-f", c]);
        }
        let _ = run("docker", &["network", "rm", &self.1]);
    }
}

#[test]
#[ignore = "needs docker, etcdctl and the image: scripts/build-image.sh, then --ignored"]
fn three_containers_survive_killing_the_leader() {
    let image = std::env::var("FLOTILLA_IMAGE").unwrap_or_else(|_| "flotilla:dev".into());
    let net = format!("flotilla-test-{}", std::process::id());
    let names: Vec<String> = (0..3).map(|i| format!("{net}-n{i}")).collect();
    let _cleanup = Cleanup(names.clone(), net.clone());
    ok("docker", &["network", "create", &net]);
    let initial: Vec<String> = names
        .iter()
        .map(|n| format!("{n}=http://{n}:2380"))
        .collect();
    let initial = initial.join(",");
    for (i, n) in names.iter().enumerate() {
        let port = format!("127.0.0.1:{}:2379", 32379 + i);
        ok(
            "docker",
            &[
                "run",
                "-d",
                "--name",
                n,
                "--hostname",
                n,
                "--network",
                &net,
                "-p",
                &port,
                &image,
                "flotilla",
                "node",
                "--name",
                n,
                "--data-dir",
                "/var/lib/flotilla/data",
                "--listen-client",
                "0.0.0.0:2379",
                "--listen-peer",
                "0.0.0.0:2380",
                "--listen-metrics",
                "0.0.0.0:9379",
                "--advertise-client",
                &format!("http://{n}:2379"),
                "--advertise-peer",
                &format!("http://{n}:2380"),
                "--initial-cluster",
                &initial,
            ],
        );
    }
    let eps: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", 32379 + i)).collect();
    let put = |ep: &str, k: &str, v: &str| {
        run(
            "etcdctl",
            &["--endpoints", ep, "--command-timeout=3s", "put", k, v],
        )
        .status
        .success()
    };
    wait("first write", Duration::from_secs(60), || {
        put(&eps[0], "k1", "v1").then_some(())
    });
    let got = ok(
        "etcdctl",
        &["--endpoints", &eps[2], "get", "k1", "--print-value-only"],
    );
    assert_eq!(got.trim(), "v1");

    // Find the leader: the endpoint whose member id equals the leader id it reports.
    let status = ok(
        "etcdctl",
        &[
            "--endpoints",
            &eps.join(","),
            "endpoint",
            "status",
            "-w",
            "json",
        ],
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    let leader = status
        .as_array()
        .expect("array")
        .iter()
        .position(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])
        .expect("a leader");
    let started = Instant::now();
    ok("docker", &["kill", &names[leader]]);
    let rest: Vec<&String> = eps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e)
        .collect();
    wait(
        "a write after killing the leader",
        Duration::from_secs(30),
        || put(rest[0], "k2", "v2").then_some(()),
    );
    eprintln!(
        "writes resumed {:?} after killing the leader",
        started.elapsed()
    );
    let got = ok(
        "etcdctl",
        &["--endpoints", rest[1], "get", "k1", "--print-value-only"],
    );
    assert_eq!(got.trim(), "v1", "no acknowledged write lost");
}
