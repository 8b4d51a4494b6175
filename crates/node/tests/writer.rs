//! `flotilla-writer`, the end-to-end suite's continuous-write client, against real clusters:
//! no acknowledged put is lost while a follower is killed; stop file and SIGTERM end the
//! writing and still verify; unreadable data exits 2 instead of hanging.

mod common;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{Cluster, free_port, wait_until};

/// A running writer whose stdout and stderr are drained by threads (so it never blocks on a
/// full pipe).
struct Writer {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

impl Writer {
    fn spawn(args: &[&str]) -> Writer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-writer"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flotilla-writer");
        let stdout = Some(drain(child.stdout.take().expect("stdout")));
        let stderr = Some(drain(child.stderr.take().expect("stderr")));
        Writer {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (bounded) for the exit: (status, stdout, stderr).
    fn finish(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let status = wait_until(timeout, "flotilla-writer exits", || {
            self.child.try_wait().expect("wait")
        });
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.map(|h| h.join().expect("output reader"))
                .unwrap_or_default()
        };
        let out = join(self.stdout.take());
        let err = join(self.stderr.take());
        (status, out, err)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers of the `RESULT` line, by name.
fn result_fields(stdout: &str) -> std::collections::HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    let fields: std::collections::HashMap<String, u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| {
            let (k, v) = f.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect();
    for k in [
        "acked",
        "uncertain",
        "present",
        "lost",
        "unexpected",
        "revision_mismatch",
        "out_of_order",
    ] {
        assert!(fields.contains_key(k), "{k} missing from {line:?}");
    }
    fields
}

fn assert_clean_pass(status: ExitStatus, out: &str, err: &str) {
    assert!(status.success(), "writer failed ({status}):\n{out}\n{err}");
    let r = result_fields(out);
    assert!(r["acked"] > 0, "{out}");
    for k in ["lost", "unexpected", "revision_mismatch", "out_of_order"] {
        assert_eq!(r[k], 0, "{k}:\n{out}");
    }
    // Everything acked is there; uncertain puts may or may not be.
    assert!(r["present"] >= r["acked"], "{out}");
    assert!(r["present"] <= r["acked"] + r["uncertain"], "{out}");
}

#[test]
fn no_acked_put_is_lost_while_a_follower_is_killed() {
    let mut c = Cluster::start(3, &[]);
    let eps = c.endpoints();
    let writer = Writer::spawn(&[
        "--endpoints",
        &eps,
        "--prefix",
        "it/kill/",
        "--workers",
        "4",
        "--duration",
        "3s",
        "--request-timeout",
        "2s",
        "--verify-timeout",
        "30s",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    c.members[follower].kill9();
    let (status, out, err) = writer.finish(Duration::from_secs(60));
    assert_clean_pass(status, &out, &err);
    assert!(out.contains("stopping: --duration"), "{out}");
}

#[test]
fn a_stop_file_ends_the_writing_and_the_check_runs() {
    let c = Cluster::start(1, &[]);
    let stop = c.dir.path().join("stop");
    let writer = Writer::spawn(&[
        "--endpoints",
        &c.endpoints(),
        "--prefix",
        "it/stopfile/",
        "--workers",
        "2",
        "--stop-file",
        stop.to_str().expect("utf-8 path"),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&stop, b"").expect("create stop file");
    let (status, out, err) = writer.finish(Duration::from_secs(30));
    assert_clean_pass(status, &out, &err);
    assert!(out.contains("stopping: stop file"), "{out}");
}

#[test]
fn sigterm_ends_the_writing_and_the_check_runs() {
    let c = Cluster::start(1, &[]);
    let writer = Writer::spawn(&[
        "--endpoints",
        &c.endpoints(),
        "--prefix",
        "it/sigterm/",
        "--workers",
        "2",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(writer.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());
    let (status, out, err) = writer.finish(Duration::from_secs(30));
    assert_clean_pass(status, &out, &err);
    assert!(out.contains("stopping: signal"), "{out}");
}

#[test]
fn unreadable_data_exits_2_within_the_verify_timeout() {
    // Nobody listens: every put fails (uncertain), then verification gives up.
    let port = free_port();
    let writer = Writer::spawn(&[
        "--endpoints",
        &format!("127.0.0.1:{port}"),
        "--prefix",
        "it/dead/",
        "--duration",
        "1s",
        "--request-timeout",
        "1s",
        "--verify-timeout",
        "2s",
    ]);
    let (status, out, err) = writer.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{out}\n{err}");
    assert!(out.contains("VERIFY_ERROR acked=0 "), "{out}");
    assert!(out.contains("progress acked=0 "), "{out}");
    assert!(!out.contains("RESULT"), "{out}");
}
