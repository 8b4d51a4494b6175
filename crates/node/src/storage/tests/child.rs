//! Workloads that must run in a process of their own: under strace (to count its syscalls) or
//! killed without unwinding (to test crash recovery). The parent test re-executes this test
//! binary, running only [`workload`] with the workload named in an environment variable.

use std::path::Path;
use std::process::{Command, Output};

use flotilla_raft::{ConfState, HardState, LogStore, Snapshot, SnapshotMeta, Storage};

use super::{entry, open_store};
use crate::storage::MemberIdentity;

/// Names the workload to run.
const MODE_ENV: &str = "FLOTILLA_STORAGE_WORKLOAD";
/// The store's directory.
const DIR_ENV: &str = "FLOTILLA_STORAGE_WORKLOAD_DIR";
/// This test's path inside the test binary.
const TEST_PATH: &str = "storage::tests::child::workload";

/// The identity the crash workload stores.
pub fn crash_identity() -> MemberIdentity {
    MemberIdentity {
        cluster_id: 0xc1a5_7e12,
        member_id: 7,
        name: "crash-test".into(),
    }
}

/// Size of the snapshot image the crash and blob workloads store: above sled's 128 KiB
/// threshold, so it goes to a blob file.
pub const BIG_SNAPSHOT: usize = 300 * 1024;

/// The snapshot image of the crash workload.
pub fn snapshot_data() -> Vec<u8> {
    (0..BIG_SNAPSHOT).map(|i| (i % 249) as u8).collect()
}

/// Runs a workload in a child process, as `prefix… <this test binary> <args>`: `prefix` is
/// e.g. `["strace", "-f", …]`, or empty.
pub fn run(prefix: &[&str], mode: &str, dir: &Path) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "--exact",
        TEST_PATH,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MODE_ENV, mode)
    .env(DIR_ENV, dir);
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {prefix:?} {exe:?}: {e}"),
    }
}

/// The child side. Run by the parent tests; run alone it does the `syncs:3` workload in a
/// temporary directory.
#[test]
#[ignore = "a child workload: run by the strace and crash tests in their own process"]
fn workload() {
    let mode = std::env::var(MODE_ENV).unwrap_or_else(|_| "syncs:3".into());
    let temp;
    let dir = match std::env::var_os(DIR_ENV) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = tempfile::TempDir::new().expect("temp dir");
            temp.path().to_path_buf()
        }
    };
    let mut store = open_store(&dir);
    let (name, arg) = mode.split_once(':').unwrap_or((mode.as_str(), "0"));
    let n: u64 = arg.parse().expect("workload argument");
    match name {
        // Open and close only: the syscalls every run makes.
        "baseline" => {}
        // n rounds of one append and one sync.
        "syncs" => {
            for i in 1..=n {
                store.append(&[entry(i, 1)]).expect("append");
                store.sync().expect("sync");
            }
            assert_eq!(store.last_index(), Ok(n));
        }
        // One batch of n entries, one sync.
        "batch" => {
            let entries: Vec<_> = (1..=n).map(|i| entry(i, 1)).collect();
            store.append(&entries).expect("append");
            store.sync().expect("sync");
            assert_eq!(store.last_index(), Ok(n));
        }
        // A snapshot large enough to be a sled blob, and one sync.
        "blob" => {
            store
                .apply_snapshot(Snapshot {
                    meta: SnapshotMeta {
                        index: 5,
                        term: 2,
                        conf_state: ConfState::with_voters([1]),
                    },
                    data: snapshot_data(),
                })
                .expect("apply_snapshot");
            store.sync().expect("sync");
        }
        // Synced state, then unsynced appends, then death without unwinding or Drop.
        "crash" => {
            for chunk in (1..=100u64).collect::<Vec<_>>().chunks(10) {
                let batch: Vec<_> = chunk.iter().map(|&i| entry(i, 1 + i / 40)).collect();
                store.append(&batch).expect("append");
            }
            store
                .set_hard_state(HardState {
                    term: 3,
                    vote: 7,
                    commit: 90,
                })
                .expect("set_hard_state");
            store
                .create_snapshot(50, ConfState::with_voters([7, 8, 9]), snapshot_data())
                .expect("create_snapshot");
            store.set_identity(&crash_identity()).expect("set_identity");
            store.sync().expect("sync");
            // Not synced: may or may not survive, but must not damage what was synced.
            store
                .append(&[entry(101, 3), entry(102, 3)])
                .expect("append");
            store.append(&[entry(98, 4)]).expect("append");
            die_like_kill_9();
        }
        other => panic!("unknown workload {other:?}"),
    }
}

/// Ends this process the way `kill -9` does: no unwinding, no `Drop`, no flush. Falls back to
/// `abort` (which skips them too) if `kill` cannot be run.
fn die_like_kill_9() -> ! {
    let _ = Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    std::process::abort();
}
