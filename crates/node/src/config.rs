//! Command-line configuration of `flotilla node` and `flotilla dev`.
//!
//! Every flag has an environment fallback (`FLOTILLA_*`) so a StatefulSet can configure a pod
//! from its ordinal and the headless Service's DNS names without templating a command line.
//! Parsing here only checks syntax; [`NodeConfig::validate`] checks what depends on several
//! flags at once, so a bad combination is refused before anything touches the data dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The `flotilla` command line.
#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A Raft-replicated, etcd-compatible key-value store"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one cluster member.
    Node(Box<NodeConfig>),
    /// Run a local cluster of several members on loopback (for trying Flotilla out).
    Dev(DevConfig),
    /// Inspect or restore a file written by `etcdctl snapshot save` from a Flotilla member.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Back up a cluster to S3-compatible storage or a directory, list, prune and restore
    /// backups.
    #[command(subcommand)]
    Backup(Box<crate::backup::BackupCommand>),
}

/// `flotilla snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Hash, revision, key count and size of a snapshot file (as `etcdctl snapshot status`).
    Status {
        /// The file `etcdctl snapshot save` wrote.
        file: PathBuf,
    },
    /// Restore a snapshot file into a new data directory (as `etcdctl snapshot restore`):
    /// restore every member of the new cluster from the same file, then start each with
    /// `flotilla node --data-dir DIR` and a new `--initial-cluster` and `--cluster-token`.
    Restore {
        /// The file `etcdctl snapshot save` wrote.
        file: PathBuf,
        /// The member's new, empty data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Flags of `flotilla node`.
#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// Human-readable member name (unique in the cluster).
    #[arg(long, env = "FLOTILLA_NAME", default_value = "default")]
    pub name: String,
    /// Directory holding this member's data (Raft log, key-value data, identity).
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = "default.flotilla")]
    pub data_dir: PathBuf,
    /// Address the etcd v3 client API listens on.
    #[arg(long, env = "FLOTILLA_LISTEN_CLIENT", default_value = "127.0.0.1:2379")]
    pub listen_client: SocketAddr,
    /// Address the peer (Raft) API listens on.
    #[arg(long, env = "FLOTILLA_LISTEN_PEER", default_value = "127.0.0.1:2380")]
    pub listen_peer: SocketAddr,
    /// Address of the metrics and health HTTP server.
    #[arg(
        long,
        env = "FLOTILLA_LISTEN_METRICS",
        default_value = "127.0.0.1:9379"
    )]
    pub listen_metrics: SocketAddr,
    /// Client URL other members and clients should use (default: http://<listen-client>).
    #[arg(long, env = "FLOTILLA_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,
    /// Peer URL other members should use (default: http://<listen-peer>).
    #[arg(long, env = "FLOTILLA_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// Bootstrap members, `name=http://host:port,…` (this member must be one of them).
    /// Without it (and without --join) a new member bootstraps a one-member cluster. When the
    /// data dir already holds a member, the cluster it describes must be the one on the volume.
    #[arg(long, env = "FLOTILLA_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` bootstraps the cluster `--initial-cluster` describes. `existing` starts a member
    /// that was already added with `etcdctl member add` (etcd's flag and habit): it finds its
    /// id and the cluster's by asking the other listed members for the member with its peer
    /// URL. Ignored when the data dir already holds a member.
    #[arg(
        long,
        env = "FLOTILLA_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value_t = InitialClusterState::New
    )]
    pub initial_cluster_state: InitialClusterState,
    /// Join an existing cluster as a learner through the admin API of one of these client
    /// endpoints (`host:port,…`). Ignored when the data dir already holds a member.
    #[arg(long, env = "FLOTILLA_JOIN", conflicts_with = "initial_cluster")]
    pub join: Option<String>,
    /// Token mixed into the cluster id, so two clusters bootstrapped from the same member list
    /// get different ids and refuse each other's messages.
    #[arg(
        long,
        env = "FLOTILLA_CLUSTER_TOKEN",
        default_value = "flotilla-cluster"
    )]
    pub cluster_token: String,
    /// Length of one Raft tick in milliseconds.
    #[arg(long, env = "FLOTILLA_TICK_MS", default_value_t = 100)]
    pub tick_ms: u64,
    /// Election timeout in ticks (randomised in [n, 2n)).
    #[arg(long, env = "FLOTILLA_ELECTION_TICKS", default_value_t = 10)]
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    #[arg(long, env = "FLOTILLA_HEARTBEAT_TICKS", default_value_t = 1)]
    pub heartbeat_ticks: u32,
    /// Take a snapshot and compact the log after this many applied entries.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_THRESHOLD", default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// Largest client request accepted, in bytes (etcd's default: 1.5 MiB).
    #[arg(long, env = "FLOTILLA_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// How long a linearizable request waits for the cluster before failing, in milliseconds.
    #[arg(long, env = "FLOTILLA_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// How often watches created with `progress_notify` get a progress response, in
    /// milliseconds (etcd's `--experimental-watch-progress-notify-interval`, 10 minutes).
    #[arg(
        long,
        env = "FLOTILLA_WATCH_PROGRESS_NOTIFY_INTERVAL_MS",
        default_value_t = 600_000
    )]
    pub watch_progress_notify_interval_ms: u64,
    /// Auth: token type and TTL, bcrypt cost (`crate::auth::flags`).
    #[command(flatten)]
    pub auth: crate::auth::flags::AuthFlags,
    /// TLS: certificates, keys and CAs of the client and peer ports (`crate::tls::flags`).
    #[command(flatten)]
    pub tls: crate::tls::TlsFlags,
    /// Raise the NOSPACE alarm when the database would pass this many bytes (etcd's flag: 0
    /// is etcd's 2 GiB default, a negative value disables the quota). See api/quota.rs.
    #[arg(
        long,
        env = "FLOTILLA_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,
    /// Before serving, compare this member's HashKV with its peers' at the same revision and
    /// refuse to start on a mismatch (etcd's `--experimental-initial-corrupt-check`).
    #[arg(
        long = "experimental-initial-corrupt-check",
        alias = "initial-corrupt-check",
        env = "FLOTILLA_INITIAL_CORRUPT_CHECK"
    )]
    pub initial_corrupt_check: bool,
    /// How often the leader compares every member's HashKV and raises CORRUPT for a member
    /// that differs (etcd's `--experimental-corrupt-check-time`, a duration such as `5s`;
    /// 0, the default, disables it). See member/corrupt.rs.
    #[arg(
        long = "experimental-corrupt-check-time",
        alias = "corrupt-check-time",
        env = "FLOTILLA_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub corrupt_check_time: Duration,
    /// etcd's `--force-new-cluster`: restart a member whose cluster lost its quorum for good
    /// as the only member of the same cluster, keeping its whole log and rewriting the
    /// membership to itself. Needs a data dir that holds a voter. Run it once; later starts
    /// without the flag keep the new membership.
    #[arg(long, env = "FLOTILLA_FORCE_NEW_CLUSTER", value_parser = clap::builder::BoolishValueParser::new())]
    pub force_new_cluster: bool,
}

/// Parses a duration the way etcd's flags are written: a number and a unit (`ms`, `s`, `m`,
/// `h`), or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}`: missing unit (ms, s, m, h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{s}`: unknown unit (ms, s, m, h)")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Flags of `flotilla dev`.
#[derive(Debug, Clone, Args)]
pub struct DevConfig {
    /// Directory for the members' data (default: a temporary directory removed on exit).
    #[arg(long, env = "FLOTILLA_DEV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of members.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// First client port; member i uses base+2i (client) and base+2i+1 (peer), metrics at
    /// base+7000+i.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
    /// Tick length passed to the members, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Serve TLS: a CA, per-member server and peer certificates and a client certificate
    /// (CN=root) are generated under `<data-dir>/tls/`; client ports speak TLS and peers
    /// mutual TLS.
    #[arg(long)]
    pub tls: bool,
}

/// One member of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// Its name.
    pub name: String,
    /// Its peer URL.
    pub peer_url: String,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--initial-cluster` does not parse.
    #[error("--initial-cluster: {0}")]
    InitialCluster(String),
    /// A timing flag is out of range.
    #[error("{0}")]
    Timing(String),
    /// TLS flags that cannot work, or URLs whose scheme disagrees with them.
    #[error("{0}")]
    Tls(String),
}

impl NodeConfig {
    /// The client URL advertised to others (https:// by default when the client port serves
    /// TLS).
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.client_tls() {
            "https"
        } else {
            "http"
        };
        self.advertise_client
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen_client))
    }

    /// The peer URL advertised to others (https:// by default with peer TLS).
    pub fn peer_url(&self) -> String {
        let scheme = if self.tls.peer_tls() { "https" } else { "http" };
        self.advertise_peer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen_peer))
    }

    /// The tick interval.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(1))
    }

    /// The timeout of linearizable requests.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// Checks flag combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tick_ms == 0 {
            return Err(ConfigError::Timing("--tick-ms must be positive".into()));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::Timing(
                "--election-ticks must be greater than --heartbeat-ticks (> 0)".into(),
            ));
        }
        if self.initial_cluster_state == InitialClusterState::Existing
            && self.initial_cluster.is_none()
        {
            return Err(ConfigError::InitialCluster(
                "--initial-cluster-state existing needs --initial-cluster listing the cluster's \
                 members and this one"
                    .into(),
            ));
        }
        if let Some(ic) = &self.initial_cluster {
            let members = parse_initial_cluster(ic)?;
            if !members.iter().any(|m| m.name == self.name) {
                return Err(ConfigError::InitialCluster(format!(
                    "this member ({}) is not listed",
                    self.name
                )));
            }
        }
        self.tls
            .validate()
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        self.validate_schemes()
    }

    /// The scheme decides whether a URL is dialled with TLS (as in etcd), so a URL that
    /// disagrees with this member's own TLS setup would only fail later, connection by
    /// connection: peer URLs must be https:// exactly when peer TLS is on, and an advertised
    /// client URL https:// exactly when the client port serves TLS.
    fn validate_schemes(&self) -> Result<(), ConfigError> {
        let peer_tls = self.tls.peer_tls();
        let want = if peer_tls { "https://" } else { "http://" };
        let why = if peer_tls {
            "peer TLS is on (--peer-cert-file)"
        } else {
            "peer TLS is off (no --peer-cert-file)"
        };
        let mut peer_urls: Vec<(String, String)> =
            vec![("--advertise-peer".into(), self.peer_url())];
        if let Some(ic) = &self.initial_cluster {
            for m in parse_initial_cluster(ic)? {
                peer_urls.push((format!("--initial-cluster member {}", m.name), m.peer_url));
            }
        }
        for (flag, url) in peer_urls {
            if url.contains("://") && !url.starts_with(want) {
                return Err(ConfigError::Tls(format!(
                    "{flag}: {url} should start with {want}: {why}"
                )));
            }
        }
        let client_tls = self.tls.client_tls();
        let url = self.client_url();
        let want = if client_tls { "https://" } else { "http://" };
        if url.contains("://") && !url.starts_with(want) {
            return Err(ConfigError::Tls(format!(
                "--advertise-client: {url} should start with {want}: the client port {} TLS",
                if client_tls {
                    "serves"
                } else {
                    "does not serve"
                }
            )));
        }
        Ok(())
    }
}

/// What `--initial-cluster` describes: a cluster to bootstrap, or one this member was added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialClusterState {
    /// Bootstrap the listed members as a new cluster.
    New,
    /// The cluster exists and already lists this member (added with `member add`).
    Existing,
}

/// Parses `name=url,name=url`.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut out: Vec<InitialMember> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::InitialCluster(format!("`{part}` is not name=url")))?;
        if name.is_empty() || url.is_empty() {
            return Err(ConfigError::InitialCluster(format!(
                "`{part}` is not name=url"
            )));
        }
        if out.iter().any(|m| m.name == name) {
            return Err(ConfigError::InitialCluster(format!(
                "member {name} is listed twice"
            )));
        }
        out.push(InitialMember {
            name: name.to_string(),
            peer_url: url.to_string(),
        });
    }
    if out.is_empty() {
        return Err(ConfigError::InitialCluster("no member listed".into()));
    }
    Ok(out)
}

/// FNV-1a: a stable hash for ids derived from names (std's `DefaultHasher` is not stable
/// across releases, and ids are written to disk).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // 0 means "nobody" in the core.
    if h == 0 { 1 } else { h }
}

/// The cluster id of a bootstrapped cluster: derived from the token and the member list, the
/// same on every bootstrap member without any communication.
pub fn bootstrap_cluster_id(token: &str, members: &[InitialMember]) -> u64 {
    let mut sorted: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    sorted.sort();
    let mut parts: Vec<&str> = vec![token];
    parts.extend(sorted.iter().map(String::as_str));
    stable_hash(&parts)
}

/// The member id of a bootstrap member. Bootstrap members must agree on each other's ids
/// before they can talk, so (like etcd) the id is derived from the cluster id and the name;
/// members that join later get random ids.
pub fn bootstrap_member_id(cluster_id: u64, name: &str) -> u64 {
    stable_hash(&[&cluster_id.to_string(), name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_garbage() {
        let m = parse_initial_cluster("a=http://h:1, b=http://h:2").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].name, "b");
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=x,a=y").is_err());
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn durations_parse_like_etcd_flags() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    fn node(args: &[&str]) -> NodeConfig {
        let mut argv = vec!["flotilla", "node"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Node(cfg) => *cfg,
            _ => unreachable!("node subcommand"),
        }
    }

    #[test]
    fn tls_flags_switch_default_urls_to_https_and_refuse_disagreeing_schemes() {
        let tls = [
            "--cert-file",
            "c",
            "--key-file",
            "k",
            "--peer-cert-file",
            "pc",
            "--peer-key-file",
            "pk",
            "--peer-trusted-ca-file",
            "ca",
        ];
        let cfg = node(&tls);
        assert!(cfg.client_url().starts_with("https://"));
        assert!(cfg.peer_url().starts_with("https://"));
        assert_eq!(cfg.validate(), Ok(()));
        let mut plain_peers = tls.to_vec();
        plain_peers.extend(["--name", "a", "--initial-cluster", "a=http://h:1"]);
        let e = node(&plain_peers).validate().unwrap_err().to_string();
        assert!(e.contains("should start with https://"), "{e}");
        let e = node(&["--initial-cluster", "default=https://h:1"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer TLS is off"), "{e}");
        let unset = node(&["--cert-file", "", "--key-file", ""]);
        assert_eq!(unset.validate(), Ok(()), "empty paths are unset");
        assert!(unset.client_url().starts_with("http://"));
        let e = node(&["--cert-file", "c"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--key-file"), "{e}");
        let e = node(&["--advertise-client", "https://h:1"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not serve TLS"), "{e}");
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let m = parse_initial_cluster("a=http://h:1,b=http://h:2").unwrap();
        let c1 = bootstrap_cluster_id("t", &m);
        let mut r = m.clone();
        r.reverse();
        assert_eq!(c1, bootstrap_cluster_id("t", &r));
        assert_ne!(c1, bootstrap_cluster_id("u", &m));
        assert_ne!(bootstrap_member_id(c1, "a"), bootstrap_member_id(c1, "b"));
        assert_ne!(bootstrap_member_id(c1, "a"), 0);
    }
}
