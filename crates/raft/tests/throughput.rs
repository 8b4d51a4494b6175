//! A quick throughput check of the core alone (3 in-memory nodes, no I/O), behind `#[ignore]`:
//!
//! ```text
//! cargo test --release -p flotilla-raft --test throughput -- --ignored --nocapture
//! ```
//!
//! The criterion benchmark (benches/throughput.rs) is the reference figure; this test keeps a
//! floor under it so a regression shows up without running criterion.

mod support;

use flotilla_raft::LogStore;
use support::Net;

#[test]
#[ignore = "timing; run in release (see module docs)"]
#[allow(clippy::disallowed_methods)] // wall-clock timing is the point of this test
fn three_node_cluster_commits_a_million_proposals_per_second() {
    let mut net = Net::new(&[1, 2, 3]);
    net.record = false;
    net.elect(1);
    let total: usize = 1_000_000;
    let batch: usize = 8192;
    let payload = vec![7u8; 64];
    let cpu_start = thread_cpu_ns();
    let start = std::time::Instant::now();
    let mut proposed = 0;
    while proposed < total {
        for _ in 0..batch {
            net.node(1).propose(payload.clone()).expect("leader");
        }
        proposed += batch;
        net.drain();
        // Keep memory flat: the test only counts.
        for applied in net.applied.values_mut() {
            applied.clear();
        }
        let commit = net.status(1).commit;
        for id in 1..=3 {
            let st = net.status(id);
            let _ = net.node(id).store_mut().create_snapshot(
                commit.min(st.applied),
                st.conf_state,
                vec![],
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = thread_cpu_ns().saturating_sub(cpu_start) as f64 / 1e9;
    // The machine is shared: CPU time shows what the core costs, wall time what we got.
    let rate = proposed as f64 / if cpu_secs > 0.0 { cpu_secs } else { secs };
    println!(
        "{proposed} proposals committed on 3 nodes: {secs:.3}s wall ({:.0}/s), {cpu_secs:.3}s CPU ({rate:.0}/s)",
        proposed as f64 / secs
    );
    assert!(net.status(1).commit as usize > total);
    assert!(rate > 1_000_000.0, "{rate:.0} proposals/s");
}

/// CPU time of this thread in ns (Linux `schedstat`); 0 where unavailable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
