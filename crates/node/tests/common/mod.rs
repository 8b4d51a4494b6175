//! Shared harness of the multi-process tests: real `flotilla` processes on loopback with free
//! ports, driven by the real `etcdctl` and by tonic clients. Processes are killed on drop;
//! every wait is a condition with a timeout.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Tick length used by the tests (fast elections: 10 ticks = 500 ms).
pub const TICK_MS: u64 = 50;
/// Election timeout in the tests.
pub const ELECTION: Duration = Duration::from_millis(10 * TICK_MS);

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// First and past-the-end port handed out to tests; kept below Linux's ephemeral range
/// (32768..) with room for `flotilla dev`'s metrics ports at +7000.
const PORT_RANGE: std::ops::Range<u16> = 10_000..25_000;

/// A port nobody listens on right now.
///
/// Not an ephemeral port from `bind(0)`: those are what the kernel also hands to outgoing
/// connections, so between our check and the member's own bind another test process's gRPC
/// client could take it (a flaky "no leader" start under load). Instead each test process
/// walks its own stride of a range below the ephemeral one, derived from its pid (nextest runs
/// every test in its own process), and still checks that the port binds.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let start = (std::process::id() % 150) * 100;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = PORT_RANGE.start + ((start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

/// The number of keys `etcdctl get <prefix> --prefix` sees (Debian's etcdctl 3.4 has no
/// `--count-only`), or `None` if the read failed.
pub fn count_prefix(endpoints: &str, prefix: &str, serializable: bool) -> Option<u64> {
    let mut args = vec!["get", prefix, "--prefix", "--keys-only", "-w", "json"];
    if serializable {
        args.push("--consistency=s");
    }
    let out = etcdctl(endpoints, &args);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["count"].as_u64().unwrap_or(0))
}

/// A base port such that base..base+6 and base+7000..base+7003 are free (for `flotilla dev`).
pub fn free_port_block() -> u16 {
    for _ in 0..100 {
        let base = free_port();
        if base + 6 >= PORT_RANGE.end {
            continue;
        }
        let ok = (0..6)
            .map(|i| base + i)
            .chain((0..3).map(|i| base + 7000 + i))
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free block of ports found");
}

/// The etcdctl binary; the suite installs Debian's etcd-client (see scripts/test.sh).
pub fn etcdctl_path() -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg("command -v etcdctl")
        .output()
        .expect("run sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "etcdctl is not installed: these tests drive the real etcdctl (Debian package \
         etcd-client, v3.4). Install it with `apt-get install -y etcd-client` or run \
         ./scripts/test.sh, which does."
    );
    PathBuf::from(p)
}

/// Runs etcdctl against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=8s")
        .arg("--dial-timeout=2s")
        .args(args)
        .output()
        .expect("run etcdctl")
}

/// Runs etcdctl and returns stdout, panicking with stderr on failure.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} against {endpoints} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `flotilla` binary under test: cargo's, unless `FLOTILLA_BIN` names another (a copy
/// taken right after the build, when several worktrees share one target directory and so
/// overwrite each other's `target/debug/flotilla`).
pub fn flotilla_bin() -> PathBuf {
    std::env::var_os("FLOTILLA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flotilla")))
}

/// One member's addresses and process.
pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    pub initial_cluster: Option<String>,
    pub join: Option<String>,
    /// When set, the member logs at INFO into this file (appending across restarts).
    pub log_to: Option<PathBuf>,
    pub child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    /// Starts (or restarts) the process.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        let mut cmd = Command::new(flotilla_bin());
        cmd.arg("node")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client")
            .arg(format!("127.0.0.1:{}", self.client))
            .arg("--listen-peer")
            .arg(format!("127.0.0.1:{}", self.peer))
            .arg("--listen-metrics")
            .arg(format!("127.0.0.1:{}", self.metrics))
            .arg("--tick-ms")
            .arg(TICK_MS.to_string())
            .arg("--request-timeout-ms")
            .arg("3000")
            .args(&self.extra)
            .env("FLOTILLA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("FLOTILLA_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(path) = &self.log_to {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open the member's log file");
            cmd.env("FLOTILLA_LOG", "info").stderr(file);
        }
        if let Some(ic) = &self.initial_cluster {
            cmd.arg("--initial-cluster").arg(ic);
        }
        if let Some(j) = &self.join {
            cmd.arg("--join").arg(j);
        }
        self.child = Some(cmd.spawn().expect("spawn flotilla"));
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("member runs");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("{} did not stop within 15 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// GET on the metrics port: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((code, body))
    }
}

impl Member {
    /// The value of an unlabelled metric on this member's `/metrics`, if it answers.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics")?;
        body.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of real processes.
pub struct Cluster {
    // Fields drop in order: the processes are killed before their data dirs are deleted.
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Prepares `n` bootstrap members (not started).
    pub fn new(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client: free_port(),
                peer: free_port(),
                metrics: free_port(),
                data_dir: dir.path().join(format!("m{}", i + 1)),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                initial_cluster: None,
                join: None,
                log_to: None,
                child: None,
            })
            .collect();
        let ic: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let ic = ic.join(",");
        for m in &mut members {
            m.initial_cluster = Some(ic.clone());
        }
        Cluster { dir, members }
    }

    /// Starts every member and waits until a leader serves a linearizable read.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::new(n, extra);
        for m in &mut c.members {
            m.start();
        }
        c.wait_leader(Duration::from_secs(20));
        c
    }

    /// Prepares (not starts) a member that joins through `--join`.
    pub fn add_joiner(&mut self, name: &str) -> usize {
        let join: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.running())
            .map(|m| m.endpoint())
            .collect();
        self.members.push(Member {
            name: name.to_string(),
            client: free_port(),
            peer: free_port(),
            metrics: free_port(),
            data_dir: self.dir.path().join(name),
            extra: self.members[0].extra.clone(),
            initial_cluster: None,
            join: Some(join.join(",")),
            log_to: None,
            child: None,
        });
        self.members.len() - 1
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.running())
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `endpoint status` of one member as JSON: (member_id, leader, raft_term).
    pub fn status_of(&self, i: usize) -> Option<(u64, u64, u64)> {
        let out = etcdctl(
            &self.members[i].endpoint(),
            &["endpoint", "status", "-w", "json"],
        );
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let st = &v[0]["Status"];
        Some((
            st["header"]["member_id"].as_u64()?,
            st["leader"].as_u64()?,
            st["raftTerm"].as_u64()?,
        ))
    }

    /// Waits until the running members agree on a leader that serves a linearizable read;
    /// returns the leader's index in `members`.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_until(timeout, "a leader that serves linearizable reads", || {
            let mut leader = None;
            for (i, m) in self.members.iter().enumerate() {
                if !m.running() {
                    continue;
                }
                let (id, l, _) = self.status_of(i)?;
                if l == 0 {
                    return None;
                }
                if id == l {
                    leader = Some(i);
                }
            }
            let i = leader?;
            let out = etcdctl(&self.members[i].endpoint(), &["get", "probe-leader"]);
            out.status.success().then_some(i)
        })
    }
}
