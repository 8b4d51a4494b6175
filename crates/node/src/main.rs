//! The `flotilla` binary: `flotilla node …` runs one member, `flotilla dev` a local cluster.

use clap::Parser;
use flotilla_node::cli::shutdown_signal;
use flotilla_node::config::{Cli, Command, SnapshotCommand};
use tracing_subscriber::EnvFilter;

// The Raft loop and the gRPC workers allocate and free many short-lived buffers on different
// threads; glibc's malloc spent ~8% of the leader's CPU in `_int_malloc`/`malloc_consolidate`
// under the put benchmark (perf, see README's benchmark section). mimalloc's per-thread
// free lists are cheaper for that pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOTILLA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: `kubectl logs`, journald and log
        // files get plain `key=value` text that grep and log pipelines can read.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Command::Snapshot(cmd) = &cli.command {
        return snapshot(cmd);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Node(cfg) => flotilla_node::node::run(*cfg, shutdown_signal()).await,
            Command::Dev(dev) => flotilla_node::dev::run(dev, shutdown_signal()).await,
            Command::Snapshot(_) => Ok(()),
        }
    })
}

/// `flotilla snapshot status|restore`, printed as etcdctl prints its own.
fn snapshot(cmd: &SnapshotCommand) -> anyhow::Result<()> {
    use flotilla_node::snapshot_file;
    match cmd {
        SnapshotCommand::Status { file } => {
            let s = snapshot_file::status(file)?;
            println!(
                "{:x}, {}, {}, {}",
                s.hash, s.revision, s.total_keys, s.total_size
            );
        }
        SnapshotCommand::Restore { file, data_dir } => {
            let s = snapshot_file::restore(file, data_dir)?;
            println!(
                "restored revision {} ({} keys) into {}; start it with `flotilla node --data-dir {}` \
                 and a new --initial-cluster and --cluster-token",
                s.revision,
                s.total_keys,
                data_dir.display(),
                data_dir.display()
            );
        }
    }
    Ok(())
}
