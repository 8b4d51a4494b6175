//! `flotilla dev`: a local cluster on loopback for trying Flotilla out.
//!
//! The members run in this process (one tokio runtime, one Raft thread each), which keeps
//! Ctrl-C handling trivial — one signal stops every member through the same graceful path as
//! `flotilla node` — while each member still has its own data dir, ports and sled database,
//! exactly as separate processes would.
//!
//! With `--tls` the cluster is set up as a production one would be: a CA, a server and a peer
//! certificate per member and a client certificate with CN=root are generated under
//! `<data-dir>/tls/` (`crate::tls::pki`, kept across restarts on the same data dir); client
//! ports serve TLS with that CA as `--trusted-ca-file`, and peers speak mutual TLS.

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::{DevConfig, NodeConfig};
use crate::tls::TlsFlags;
use crate::tls::pki::DevPki;

/// Where `flotilla dev --tls` keeps its certificates.
pub fn pki(data_dir: &std::path::Path) -> DevPki {
    DevPki {
        dir: data_dir.join("tls"),
    }
}

/// Member `name`'s TLS flags in a dev cluster with TLS.
fn member_tls(pki: &DevPki, name: &str, reload: std::time::Duration) -> TlsFlags {
    let (cert, key) = pki.server(name);
    let (peer_cert, peer_key) = pki.peer(name);
    TlsFlags {
        cert_file: Some(cert),
        key_file: Some(key),
        trusted_ca_file: Some(pki.ca()),
        client_cert_auth: false,
        peer_cert_file: Some(peer_cert),
        peer_key_file: Some(peer_key),
        peer_trusted_ca_file: Some(pki.ca()),
        peer_client_cert_auth: true,
        tls_reload_interval: reload,
    }
}

/// The per-member configurations of a dev cluster.
pub fn member_configs(dev: &DevConfig, data_dir: &std::path::Path) -> Vec<NodeConfig> {
    let n = dev.nodes.max(1);
    let client = |i: u16| dev.base_port + 2 * i;
    let peer = |i: u16| dev.base_port + 2 * i + 1;
    let scheme = if dev.tls { "https" } else { "http" };
    let pki = pki(data_dir);
    let initial: Vec<String> = (0..n)
        .map(|i| format!("n{}={scheme}://127.0.0.1:{}", i + 1, peer(i)))
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
            tls: if dev.tls {
                member_tls(
                    &pki,
                    &format!("n{}", i + 1),
                    TlsFlags::default().tls_reload_interval,
                )
            } else {
                TlsFlags::default()
            },
            quota_backend_bytes: 0,
            initial_corrupt_check: false,
            corrupt_check_time: std::time::Duration::ZERO,
            force_new_cluster: false,
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
    let pki = pki(&data_dir);
    if dev.tls {
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        DevPki::ensure(&pki.dir, &names).context("generating the dev cluster's certificates")?;
    }
    let endpoints: Vec<String> = configs.iter().map(NodeConfig::client_url).collect();
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
            c.name,
            c.client_url(),
            c.peer_url(),
            c.listen_metrics
        );
    }
    println!();
    println!("try:");
    // With TLS, etcdctl needs the CA, and the client certificate (CN=root) for membership
    // changes; without, the bare host:port list works as before.
    let (etcdctl, endpoints) = if dev.tls {
        let (cert, key) = pki.client();
        (
            format!(
                "ETCDCTL_API=3 etcdctl --cacert {} --cert {} --key {}",
                pki.ca().display(),
                cert.display(),
                key.display()
            ),
            endpoints.join(","),
        )
    } else {
        let plain: Vec<String> = configs
            .iter()
            .map(|c| c.listen_client.to_string())
            .collect();
        ("ETCDCTL_API=3 etcdctl".to_string(), plain.join(","))
    };
    println!("  {etcdctl} --endpoints={endpoints} put hello world");
    println!("  {etcdctl} --endpoints={endpoints} endpoint status -w table");
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
