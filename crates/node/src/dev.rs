//! `flotilla dev`: a local cluster on loopback for trying Flotilla out.
//!
//! The members run in this process (one tokio runtime, one Raft thread each), which keeps
//! Ctrl-C handling trivial — one signal stops every member through the same graceful path as
//! `flotilla node` — while each member still has its own data dir, ports and sled database,
//! exactly as separate processes would.

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::{DevConfig, NodeConfig};

/// The per-member configurations of a dev cluster.
pub fn member_configs(dev: &DevConfig, data_dir: &std::path::Path) -> Vec<NodeConfig> {
    let n = dev.nodes.max(1);
    let client = |i: u16| dev.base_port + 2 * i;
    let peer = |i: u16| dev.base_port + 2 * i + 1;
    let initial: Vec<String> = (0..n)
        .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, peer(i)))
        .collect();
    let initial = initial.join(",");
    (0..n)
        .map(|i| NodeConfig {
            name: format!("n{}", i + 1),
            data_dir: data_dir.join(format!("n{}", i + 1)),
            listen_client: ([127, 0, 0, 1], client(i)).into(),
            listen_peer: ([127, 0, 0, 1], peer(i)).into(),
            listen_metrics: ([127, 0, 0, 1], dev.base_port.saturating_add(7000 + i)).into(),
            advertise_client: None,
            advertise_peer: None,
            initial_cluster: Some(initial.clone()),
            initial_cluster_state: crate::config::InitialClusterState::New,
            join: None,
            cluster_token: "flotilla-dev".into(),
            tick_ms: dev.tick_ms,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_threshold: 10_000,
            max_request_bytes: 1_572_864,
            request_timeout_ms: 5_000,
            watch_progress_notify_interval_ms: 600_000,
            auth: Default::default(),
            quota_backend_bytes: 0,
            initial_corrupt_check: false,
            corrupt_check_time: std::time::Duration::ZERO,
        })
        .collect()
}

/// Runs the dev cluster until `shutdown` resolves.
pub async fn run(dev: DevConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (_tmp, data_dir): (Option<tempfile::TempDir>, PathBuf) = match &dev.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("flotilla-dev-")
                .tempdir()
                .context("creating a temporary data dir")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let configs = member_configs(&dev, &data_dir);
    let endpoints: Vec<String> = configs
        .iter()
        .map(|c| c.listen_client.to_string())
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for cfg in configs.clone() {
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let name = cfg.name.clone();
            let r = crate::node::run(cfg, async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await;
            if let Err(e) = &r {
                tracing::error!(member = %name, error = %e, "member failed");
            }
            r
        }));
    }
    println!(
        "flotilla dev: {} members, data in {}",
        configs.len(),
        data_dir.display()
    );
    for c in &configs {
        println!(
            "  {}: client {}  peer {}  metrics http://{}/metrics",
            c.name, c.listen_client, c.listen_peer, c.listen_metrics
        );
    }
    println!();
    println!("try:");
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} put hello world",
        endpoints.join(",")
    );
    println!(
        "  ETCDCTL_API=3 etcdctl --endpoints={} endpoint status -w table",
        endpoints.join(",")
    );
    println!("Ctrl-C stops the cluster.");
    shutdown.await;
    println!("flotilla dev: stopping");
    let _ = stop_tx.send(true);
    let mut failed = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(anyhow::anyhow!("member task panicked: {e}")),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
