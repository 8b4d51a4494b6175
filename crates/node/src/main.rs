//! The `flotilla` binary: `flotilla node …` runs one member, `flotilla dev` a local cluster,
//! `flotilla snapshot …` and `flotilla backup …` handle snapshot files and backups.

use clap::Parser;
use flotilla_node::cli::shutdown_signal;
use flotilla_node::config::{Cli, Command, SnapshotCommand};
use tracing_subscriber::EnvFilter;

// The Raft loop and the gRPC workers allocate and free many short-lived buffers on different
// threads; glibc's malloc spent ~8% of the leader's CPU in `_int_malloc`/`malloc_consolidate`
// under the put benchmark (perf, see README's benchmark section). mimalloc's per-thread
// free lists are cheaper for that pattern. It is built without transparent huge pages (the
// workspace's `no_thp` feature): with them an idle member's arena held 50 MB of huge pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
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
        snapshot(cmd)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Node(cfg) => flotilla_node::node::run(*cfg, shutdown_signal()).await?,
            Command::Dev(dev) => flotilla_node::dev::run(dev, shutdown_signal()).await?,
            Command::Backup(cmd) => return Ok(backup(&cmd).await),
            Command::Snapshot(_) => {}
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// `flotilla backup …`: JSON lines on stdout; on failure one `error: …` line on stderr, exit
/// status 1; with `--result-file`, the result (or `{"error": …}`) there too.
async fn backup(cmd: &flotilla_node::backup::BackupCommand) -> std::process::ExitCode {
    use flotilla_node::backup;
    let result = backup::run(cmd).await;
    let file_text = match &result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            lines.last().map(|l| l.to_string())
        }
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            Some(backup::error_json(&e.to_string()))
        }
    };
    if let (Some(path), Some(text)) = (backup::result_file(cmd), file_text)
        && let Err(e) = std::fs::write(path, text)
    {
        eprintln!("error: writing the result to {}: {e}", path.display());
        return std::process::ExitCode::FAILURE;
    }
    if result.is_ok() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
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
