//! Runs tests/e2e/kind.sh, so the suite shows whether the kind end-to-end test ran or was
//! skipped and why. Where kind, helm, kubectl, etcdctl and docker exist, this is the full
//! end-to-end run (minutes); elsewhere the script prints `SKIPPED: …` and exits 0.

use std::path::Path;
use std::process::Command;

#[test]
fn kind_end_to_end_runs_or_reports_why_it_was_skipped() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/kind.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run kind.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "kind.sh failed:\n{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("SKIPPED: ") || l == "PASSED: kind end-to-end"),
        "kind.sh must say whether it ran: {stdout}"
    );
}
