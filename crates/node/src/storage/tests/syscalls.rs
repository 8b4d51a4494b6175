//! Proof that durability reaches the disk: workloads run in a child process under
//! `strace -f -c`, and the fdatasync/fsync calls are counted.
//!
//! Each count is compared with a `baseline` run (open and close, no sync) so that the syscalls
//! sled and the open path make by themselves do not blur the result. Requires strace:
//! `./scripts/test.sh` installs it.

use tempfile::TempDir;

use super::child;

/// fdatasync and fsync calls made by one workload.
#[derive(Debug, Clone, Copy)]
struct Counts {
    fdatasync: u64,
    fsync: u64,
}

impl Counts {
    fn total(self) -> u64 {
        self.fdatasync + self.fsync
    }
}

fn strace_available() {
    match std::process::Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`strace -V` failed ({}): this test needs a working strace; run ./scripts/test.sh \
             or `apt-get install strace`",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "strace is not installed ({e}): this test counts fdatasync calls with it; run \
             ./scripts/test.sh (which installs it) or `apt-get install strace`"
        ),
    }
}

/// Runs `mode` under strace in a fresh store directory and returns its sync counts.
fn count(mode: &str) -> Counts {
    strace_available();
    let dir = TempDir::new().expect("temp dir");
    let store_dir = dir.path().join("db");
    let report = dir.path().join("strace.txt");
    let report_arg = report.to_str().expect("utf-8 temp path").to_owned();
    let out = child::run(
        &[
            "strace",
            "-f",
            "-c",
            "-e",
            "trace=fdatasync,fsync",
            "-o",
            &report_arg,
        ],
        mode,
        &store_dir,
    );
    assert!(
        out.status.success(),
        "workload {mode} under strace failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 passed"),
        "workload {mode} did not run (test filter?):\n{stdout}"
    );
    let text = std::fs::read_to_string(&report).expect("strace report");
    parse(&text)
}

/// Reads the `calls` column of `strace -c` output for fdatasync and fsync.
fn parse(text: &str) -> Counts {
    let mut counts = Counts {
        fdatasync: 0,
        fsync: 0,
    };
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        let (Some(&name), Some(calls)) = (cols.last(), cols.get(3)) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue;
        };
        match name {
            "fdatasync" => counts.fdatasync = calls,
            "fsync" => counts.fsync = calls,
            _ => {}
        }
    }
    counts
}

#[test]
fn parse_reads_strace_summary() {
    let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                ------ ----------- ----------- --------- --------- ----------------\n\
                 91.00    0.001000          50        20           fdatasync\n\
                  9.00    0.000100          25         4         1 fsync\n\
                ------ ----------- ----------- --------- --------- ----------------\n\
                100.00    0.001100          45        24         1 total\n";
    let c = parse(text);
    assert_eq!((c.fdatasync, c.fsync), (20, 4));
}

/// N syncs after appends make at least N fdatasync calls beyond the baseline: `sync()` really
/// reaches the disk, every time.
#[test]
fn every_sync_is_an_fdatasync() {
    const N: u64 = 25;
    let base = count("baseline");
    let synced = count(&format!("syncs:{N}"));
    assert!(
        synced.fdatasync >= base.fdatasync + N,
        "{N} sync() calls made {} fdatasync calls (baseline {}): sync() is not fdatasyncing",
        synced.fdatasync,
        base.fdatasync
    );
}

/// M entries appended in one batch and synced once cost O(1) syncs, not M (group commit).
#[test]
fn one_batch_costs_constant_syncs() {
    const M: u64 = 500;
    let base = count("baseline");
    let batch = count(&format!("batch:{M}"));
    assert!(
        batch.fdatasync > base.fdatasync,
        "the batch's sync() made no fdatasync (baseline {base:?}, batch {batch:?})"
    );
    // sled's background flusher may add an fsync of its own during the run: allow a few.
    assert!(
        batch.total() <= base.total() + 4,
        "{M} entries in one batch + one sync() made {batch:?} sync calls vs baseline {base:?}: \
         the store syncs per entry"
    );
}

/// A value large enough to be a sled blob file is fdatasynced too, not only sled's `db` file.
#[test]
fn large_snapshot_blob_is_synced() {
    let base = count("baseline");
    let blob = count("blob");
    assert!(
        blob.fdatasync >= base.fdatasync + 2,
        "a sync() after a {} KiB snapshot made {} fdatasync calls (baseline {}): expected the \
         blob file and the db file",
        child::BIG_SNAPSHOT / 1024,
        blob.fdatasync,
        base.fdatasync
    );
}

/// The store directory the blob workload leaves really contains a blob file beside sled's
/// `db` file, so the test above checks what it claims to.
#[test]
fn large_snapshot_is_a_sled_blob() {
    let dir = TempDir::new().expect("temp dir");
    let out = child::run(&[], "blob", dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("db").is_file(), "sled's data file");
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .expect("blobs dir")
        .count();
    assert!(
        blobs >= 1,
        "expected a blob file under {:?}",
        dir.path().join("blobs")
    );
}
