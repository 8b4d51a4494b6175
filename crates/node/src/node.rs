//! Starting and stopping one member: identity, storage, the Raft loop, the servers.
//!
//! Start-up decides who this member is before anything listens: an identity on the volume wins
//! (a restart); otherwise `--initial-cluster` bootstraps (ids derived from the token and the
//! member list, so bootstrap members agree without talking) or `--join` asks an existing
//! member's Admin service to add this one as a learner (random id chosen by the leader). The
//! identity is written before the first message is sent, and a volume that belongs to another
//! cluster is refused rather than re-initialised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::{AddLearnerRequest, StatusRequest};
use flotilla_raft::{ConfState, EntryKind, NodeId, RawNode, Storage};
use tokio::sync::watch;

use crate::api;
use crate::config::{self, NodeConfig};
use crate::contract::NodeStatus;
use crate::contract::members::{self, Member, Members};
use crate::member::handle::NodeHandle;
use crate::member::raft_loop::{LoopSettings, RaftLoop};
use crate::member::state_lock::StateLock;
use crate::member::state_machine::StateMachine;
use crate::metrics::Metrics;
use crate::mvcc::MvccStore;
use crate::storage::{MemberIdentity, WalLogStore};
use crate::tls::{Dialer, MemberTls};
use crate::transport::{PeerClients, Transport, server::PeerService};
use flotilla_raft::Role;

/// gRPC overhead allowed on top of `--max-request-bytes` (as etcd does), so an oversized
/// request reaches our check and gets etcd's error instead of a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

const META_TREE: &str = "flotilla_node_meta";
const BOOTSTRAP_MEMBERS_KEY: &[u8] = b"bootstrap_members";

/// Who this member is.
#[derive(Debug, Clone, Copy)]
struct Identity {
    cluster_id: u64,
    member_id: NodeId,
}

fn load_meta_members(db: &sled::Db) -> anyhow::Result<Members> {
    let tree = db.open_tree(META_TREE)?;
    match tree.get(BOOTSTRAP_MEMBERS_KEY)? {
        Some(v) => Ok(serde_json::from_slice(&v)?),
        None => Ok(Members::default()),
    }
}

fn store_meta_members(db: &sled::Db, m: &Members) -> anyhow::Result<()> {
    let tree = db.open_tree(META_TREE)?;
    tree.insert(BOOTSTRAP_MEMBERS_KEY, serde_json::to_vec(m)?)?;
    Ok(())
}

/// An Admin client to `url`, dialled with `dialer` (TLS for https://).
async fn admin_client(
    dialer: &Dialer,
    url: &str,
) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let ep = crate::transport::endpoint(url).map_err(anyhow::Error::msg)?;
    Ok(AdminClient::new(dialer.connect(ep).await?))
}

/// `--join`: asks the client endpoints' Admin service to add this member as a learner. An
/// endpoint without a scheme is https:// when this member serves TLS on its own client port
/// (a cluster is set up one way throughout) and http:// otherwise; https:// endpoints are
/// dialled trusting `--trusted-ca-file` and presenting this member's peer certificate, which
/// is what lets the client port accept the AddLearner (see `auth::gate`).
///
/// One case needs the peer port instead: under `--client-cert-auth` with auth enabled the
/// client port takes a certificate as its CN's user, and a member's name is no root user. So a
/// refusal there, when this member has peer TLS, is retried on the leader's peer port, where
/// members authenticate each other by mutual TLS.
async fn join(
    cfg: &NodeConfig,
    endpoints: &str,
    tls: &MemberTls,
) -> anyhow::Result<(u64, NodeId, Members)> {
    let dialer = &tls.client_dialer;
    let scheme = if cfg.tls.client_tls() {
        "https"
    } else {
        "http"
    };
    let mut last_err = None;
    for attempt in 0..30 {
        for ep in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let url = if ep.contains("://") {
                ep.to_string()
            } else {
                format!("{scheme}://{ep}")
            };
            let r: anyhow::Result<(u64, NodeId, Members)> = async {
                let mut c = admin_client(dialer, &url).await?;
                let st = c.status(StatusRequest {}).await?.into_inner();
                let req = AddLearnerRequest {
                    name: cfg.name.clone(),
                    peer_urls: vec![cfg.peer_url()],
                    client_urls: vec![cfg.client_url()],
                    voter: false,
                };
                let added = match c.add_learner(req.clone()).await {
                    Err(s)
                        if s.code() == tonic::Code::PermissionDenied
                            && tls.peer_dialer.has_tls() =>
                    {
                        let leader = st
                            .members
                            .iter()
                            .find(|m| m.id == st.leader_id)
                            .and_then(|m| m.peer_urls.first())
                            .ok_or_else(|| anyhow::anyhow!("{s}; and no leader is known"))?;
                        tracing::info!(leader = %leader,
                            "the client port refused AddLearner; asking the leader's peer port");
                        admin_client(&tls.peer_dialer, leader)
                            .await?
                            .add_learner(req)
                            .await
                    }
                    r => r,
                };
                let resp = added
                    .map_err(|status| join_refusal(&cfg.peer_url(), &st, status))?
                    .into_inner();
                let mut ms = Members::default();
                for m in resp.members {
                    ms.upsert(Member {
                        id: m.id,
                        name: m.name,
                        peer_urls: m.peer_urls,
                        client_urls: m.client_urls,
                        is_learner: m.is_learner,
                    });
                }
                Ok((st.cluster_id, resp.member_id, ms))
            }
            .await;
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(endpoint = %ep, error = %e, attempt, "join attempt failed");
                    last_err = Some(e);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("--join lists no endpoint")))
}

/// `--initial-cluster-state existing`: this member was added with `etcdctl member add`; the
/// other listed members (their Admin service is on the peer port) say which id has this
/// member's peer URL, and who else is in the cluster.
async fn adopt(
    cfg: &NodeConfig,
    listed: &[config::InitialMember],
    dialer: &Dialer,
) -> anyhow::Result<(u64, NodeId, Members)> {
    let me = cfg.peer_url();
    let mut last_err = None;
    for attempt in 0..30 {
        for peer in listed.iter().filter(|m| m.name != cfg.name) {
            let r: anyhow::Result<(u64, NodeId, Members)> = async {
                let mut c = admin_client(dialer, &peer.peer_url).await?;
                let st = c.status(StatusRequest {}).await?.into_inner();
                let Some(mine) = st.members.iter().find(|m| m.peer_urls.contains(&me)) else {
                    anyhow::bail!(
                        "no member of the cluster has this member's peer URL {me}: add it first \
                         with `etcdctl member add {} --peer-urls={me}`",
                        cfg.name
                    );
                };
                let mut ms = Members::default();
                for m in &st.members {
                    ms.upsert(Member {
                        id: m.id,
                        name: m.name.clone(),
                        peer_urls: m.peer_urls.clone(),
                        client_urls: m.client_urls.clone(),
                        is_learner: m.is_learner,
                    });
                }
                Ok((st.cluster_id, mine.id, ms))
            }
            .await;
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(peer = %peer.peer_url, error = %e, attempt, "finding this member in the existing cluster failed");
                    last_err = Some(e);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_err
        .unwrap_or_else(|| anyhow::anyhow!("--initial-cluster lists no other member to ask")))
}

/// Words the operator looks for in a failed pod's last log lines: `join refused: member
/// <16 hex digits> (<name>) already has peer URL <url>`. Naming the holder lets the operator
/// remove exactly that member, never a newer one that took the name since (a stale
/// termination message must not remove the replacement).
pub const JOIN_REFUSED_PREFIX: &str = "join refused: member ";

/// The error a join attempt ends with: when a member already holds this peer URL (a pod that
/// lost its volume while its old self is still in the configuration), it says which one.
fn join_refusal(
    peer_url: &str,
    st: &flotilla_proto::admin::StatusResponse,
    status: tonic::Status,
) -> anyhow::Error {
    let holder = st
        .members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url));
    match holder {
        Some(m) if status.message().contains("Peer URLs already exists") => anyhow::anyhow!(
            "{JOIN_REFUSED_PREFIX}{:016x} ({}) already has peer URL {peer_url}: {}",
            m.id,
            m.name,
            status.message()
        ),
        _ => status.into(),
    }
}

/// Who this member is: from the volume, by joining, or by bootstrapping. `state_applied` is
/// the index the key-value state is as of; on a volume with no member yet, anything but 0
/// means a restored backup (see [`WalLogStore::initialize_restored`]).
async fn identity(
    cfg: &NodeConfig,
    tls: &MemberTls,
    db: &sled::Db,
    store: &mut WalLogStore,
    state_applied: u64,
) -> anyhow::Result<(Identity, Members)> {
    let bootstrap_members = match &cfg.initial_cluster {
        Some(ic) => config::parse_initial_cluster(ic)?,
        None => vec![config::InitialMember {
            name: cfg.name.clone(),
            peer_url: cfg.peer_url(),
        }],
    };
    let given_cluster = bootstrap_cluster_id(cfg, &bootstrap_members);
    if let Some(id) = store.identity()? {
        if cfg.join.is_none()
            && cfg.initial_cluster.is_some()
            && cfg.initial_cluster_state == config::InitialClusterState::New
        {
            // The flags describe a cluster: the volume must belong to it (docs/ARCHITECTURE.md identity
            // rule); a mismatch stops the start instead of merging unrelated logs.
            store.set_identity(&MemberIdentity {
                cluster_id: given_cluster,
                member_id: config::bootstrap_member_id(given_cluster, &cfg.name),
                name: cfg.name.clone(),
            })?;
        }
        let members = load_meta_members(db)?;
        return Ok((
            Identity {
                cluster_id: id.cluster_id,
                member_id: id.member_id,
            },
            members,
        ));
    }
    let joined = match &cfg.join {
        Some(endpoints) => Some(join(cfg, endpoints, tls).await?),
        None if cfg.initial_cluster_state == config::InitialClusterState::Existing => {
            Some(adopt(cfg, &bootstrap_members, &tls.peer_dialer).await?)
        }
        None => None,
    };
    if let Some((cluster_id, member_id, members)) = joined {
        store_meta_members(db, &members)?;
        store.set_identity(&MemberIdentity {
            cluster_id,
            member_id,
            name: cfg.name.clone(),
        })?;
        return Ok((
            Identity {
                cluster_id,
                member_id,
            },
            members,
        ));
    }
    let cluster_id = given_cluster;
    let mut members = Members::default();
    for m in &bootstrap_members {
        let id = config::bootstrap_member_id(cluster_id, &m.name);
        members.upsert(Member {
            id,
            name: m.name.clone(),
            peer_urls: vec![m.peer_url.clone()],
            client_urls: if m.name == cfg.name {
                vec![cfg.client_url()]
            } else {
                Vec::new()
            },
            is_learner: false,
        });
    }
    let member_id = config::bootstrap_member_id(cluster_id, &cfg.name);
    store_meta_members(db, &members)?;
    // Bootstrap first, identity last: a crash in between re-runs the same (idempotent)
    // bootstrap on the next start.
    let conf_state = ConfState::with_voters(members.by_id.keys().copied());
    if state_applied > 0 {
        tracing::info!(
            index = state_applied,
            "bootstrapping from a restored key-value state: members that join get it as a snapshot"
        );
        store.initialize_restored(
            conf_state,
            state_applied,
            members::encode_snapshot(&members, &[]),
        )?;
    } else {
        store.initialize(conf_state)?;
    }
    store.set_identity(&MemberIdentity {
        cluster_id,
        member_id,
        name: cfg.name.clone(),
    })?;
    Ok((
        Identity {
            cluster_id,
            member_id,
        },
        members,
    ))
}

fn bootstrap_cluster_id(cfg: &NodeConfig, members: &[config::InitialMember]) -> u64 {
    config::bootstrap_cluster_id(&cfg.cluster_token, members)
}

/// Rebuilds member metadata on restart: the snapshot's list if there is one, then every
/// configuration change still in the log (a removal only once committed: an uncommitted one
/// may yet be replaced).
fn rebuild_members(store: &WalLogStore, mut members: Members) -> anyhow::Result<Members> {
    let committed = store.initial_state()?.0.commit;
    let snap = store.snapshot()?;
    if !snap.is_empty()
        && let Ok((m, _)) = members::decode_snapshot(&snap.data)
    {
        members = m;
    }
    let (first, last) = (store.first_index()?, store.last_index()?);
    let mut lo = first;
    while lo <= last {
        let batch = store.entries(lo, last + 1, 64 << 20)?;
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            if e.kind == EntryKind::ConfChange
                && let Some(cc) = crate::member::roster::decode_conf_change(&e.data)
            {
                if cc.kind == flotilla_raft::ConfChangeKind::RemoveNode {
                    if e.index <= committed {
                        members.remove(cc.node_id);
                    }
                } else if let Some(m) = crate::member::roster::member_of(&cc) {
                    members.upsert(m);
                }
            }
            // Peer URL updates applied before a restart are not applied again.
            if e.kind == EntryKind::Normal
                && let Ok(req) =
                    <flotilla_proto::internal::Request as prost::Message>::decode(e.data.as_slice())
                && let Some(flotilla_proto::internal::request::Op::MemberUpdate(u)) = req.op
                && members.by_id.contains_key(&u.id)
            {
                members.upsert(Member {
                    id: u.id,
                    peer_urls: u.peer_urls,
                    ..Member::default()
                });
            }
        }
        lo = batch.last().map(|e| e.index + 1).unwrap_or(last + 1);
    }
    Ok(members)
}

/// The error `run` ends with when this member was removed from the cluster: the process
/// exits non-zero, and its data dir must be wiped before the member can join again.
#[derive(Debug, thiserror::Error)]
#[error(
    "member {member:016x} was removed from cluster {cluster:016x}: it stopped serving; \
     remove its data dir ({data_dir}) before it joins again as a new member"
)]
pub struct RemovedFromCluster {
    /// This member.
    pub member: NodeId,
    /// Its cluster.
    pub cluster: u64,
    /// Its data dir.
    pub data_dir: String,
}

/// Resolves once this member learns it was removed from the cluster.
async fn removed(mut status: watch::Receiver<NodeStatus>) {
    if status.wait_for(NodeStatus::self_removed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs one member until `shutdown` resolves, then hands off leadership and stops cleanly. A
/// member that learns it was removed stops serving at once and returns
/// [`RemovedFromCluster`], as etcd does.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    cfg.validate()?;
    // Certificates are read before the data dir is touched: a typo in a path is an error now,
    // not a member that joined and then refuses every connection.
    let tls = Arc::new(MemberTls::load(&cfg.tls)?);
    let peers = PeerClients::new(tls.peer_dialer.clone(), tls.client_dialer.clone());
    let opened = open_storage(&cfg, &tls).await?;
    // etcd checks only a member that already holds data, before it serves anything.
    if cfg.initial_corrupt_check && opened.sm.applied_index() > 0 {
        let local = opened
            .sm
            .hash()
            .map_err(crate::member::corrupt::CorruptError::Local)?;
        let members: Vec<Member> = opened.members.by_id.values().cloned().collect();
        crate::member::corrupt::initial_check(
            &peers,
            (local.0, local.2, local.1),
            &members,
            opened.ident.member_id,
            opened.ident.cluster_id,
        )
        .await?;
    }
    let ident = opened.ident;
    let db = opened.db.clone();
    let member = start_member(&cfg, opened, peers, &tls)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = serve(&cfg, &member, &tls, stop_rx.clone()).await?;
    servers.push(tokio::spawn(tls.clone().watch(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|v| *v).await;
    })));
    warn_if_admin_open(&cfg);
    tracing::info!(
        member = format!("{:x}", ident.member_id),
        cluster = format!("{:x}", ident.cluster_id),
        client = %cfg.listen_client,
        peer = %cfg.listen_peer,
        metrics = %cfg.listen_metrics,
        "member started"
    );

    let discovery = tokio::spawn(discover_client_urls(member.handle.clone()));
    let corrupt_check = (!cfg.corrupt_check_time.is_zero()).then(|| {
        tokio::spawn(crate::member::corrupt::monitor(
            member.handle.clone(),
            cfg.corrupt_check_time,
        ))
    });
    let was_removed = tokio::select! {
        () = shutdown => false,
        () = removed(member.status_rx.clone()) => true,
    };
    discovery.abort();
    if let Some(t) = corrupt_check {
        t.abort();
    }
    if was_removed {
        // No hand-off: a removed member leads nothing and must not answer clients with data
        // the cluster no longer replicates to it.
        let _ = stop_tx.send(true);
        tracing::error!(
            member = format!("{:x}", ident.member_id),
            cluster = format!("{:x}", ident.cluster_id),
            "this member was removed from the cluster; stopping"
        );
    } else {
        tracing::info!("shutting down");
        graceful_handoff(&member.handle).await;
    }
    member.handle.shutdown().await;
    let _ = stop_tx.send(true);
    for t in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let loop_thread = member.loop_thread;
    let _ = tokio::task::spawn_blocking(move || loop_thread.join()).await;
    db.flush_async().await.ok();
    // Not needed for safety (the WAL replays what the state database lost), but a clean stop
    // should not leave replay work for the next start.
    let sm = member.handle.sm.clone();
    let synced = tokio::task::spawn_blocking(move || match sm.write() {
        Ok(mut sm) => sm.sync(),
        Err(_) => Err("state machine lock poisoned".to_string()),
    })
    .await;
    if let Ok(Err(e)) = synced {
        tracing::warn!(error = %e, "syncing the key-value store at shutdown failed");
    }
    tracing::info!("stopped");
    if was_removed {
        return Err(RemovedFromCluster {
            member: ident.member_id,
            cluster: ident.cluster_id,
            data_dir: cfg.data_dir.display().to_string(),
        }
        .into());
    }
    Ok(())
}

/// `--force-new-cluster`: makes this member the only one of its cluster
/// (`storage::standalone`), saying loudly what it dropped and where it starts from.
fn force_new_cluster(
    log_store: &mut WalLogStore,
    ident: Identity,
    known: &Members,
) -> anyhow::Result<()> {
    let member = format!("{:016x}", ident.member_id);
    let cluster = format!("{:016x}", ident.cluster_id);
    match crate::storage::standalone::force_new_cluster(log_store, ident.member_id)? {
        None => tracing::warn!(
            member,
            cluster,
            "--force-new-cluster: this member is already the only member of its cluster; \
             nothing to rewrite (remove the flag: it would remove members added later)"
        ),
        Some(f) => {
            let dropped: Vec<String> = f
                .removed
                .iter()
                .map(|id| match known.by_id.get(id).map(|m| m.name.as_str()) {
                    Some(name) if !name.is_empty() => format!("{id:016x} ({name})"),
                    _ => format!("{id:016x}"),
                })
                .collect();
            tracing::warn!(
                member,
                cluster,
                removed = dropped.join(", "),
                "--force-new-cluster: removed every other member from the configuration; this \
                 member is now the only voter of the same cluster"
            );
            tracing::warn!(
                member,
                commit_index_before = f.old_commit,
                kept_past_commit = f.old_last - f.old_commit,
                last_index = f.last_index,
                term = f.term,
                "--force-new-cluster: kept the whole log (entries this member had not yet seen \
                 committed included) and committed it; starting from index {}",
                f.last_index
            );
        }
    }
    Ok(())
}

/// What is on the volume once start-up has decided who this member is.
struct Opened {
    db: sled::Db,
    log_store: WalLogStore,
    ident: Identity,
    /// Every member this one knows of, itself included with its current addresses.
    members: Members,
    sm: StateMachine,
    /// The index the state machine (or the snapshot) has applied.
    applied: u64,
}

/// Opens the database, the Raft log and the key-value store, and establishes the identity
/// (restart, bootstrap or join: see the module doc).
async fn open_storage(cfg: &NodeConfig, tls: &MemberTls) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let db_dir = cfg.data_dir.join("db");
    let db = crate::storage::open_db(&db_dir)?;
    let mut log_store = WalLogStore::open(db.clone(), &db_dir).context("opening the Raft log")?;
    if cfg.force_new_cluster && log_store.identity()?.is_none() {
        anyhow::bail!(
            "--force-new-cluster needs a data dir that already holds a member of the cluster \
             to carry on; {} holds none",
            cfg.data_dir.display()
        );
    }
    // The key-value state has a database of its own (moved out of `db` on the first start
    // of a data dir written before that layout). It is opened first: a founding member whose
    // state was restored from a backup bootstraps differently (see `identity`).
    let state = crate::storage::state_db::open(&cfg.data_dir, &db, &log_store.db_sync())
        .context("opening the key-value store's database")?;
    let mut sm =
        StateMachine::new(MvccStore::open_state(state).context("opening the key-value store")?);
    let (ident, members) = identity(cfg, tls, &db, &mut log_store, sm.applied_index()).await?;
    if cfg.force_new_cluster {
        let known = rebuild_members(&log_store, members.clone())?;
        force_new_cluster(&mut log_store, ident, &known)?;
    }
    let mut members = rebuild_members(&log_store, members)?;
    members.upsert(Member {
        id: ident.member_id,
        name: cfg.name.clone(),
        peer_urls: vec![cfg.peer_url()],
        client_urls: vec![cfg.client_url()],
        is_learner: false,
    });
    let jwt = crate::auth::jwt::Jwt::from_flag(&cfg.auth.auth_token).map_err(anyhow::Error::msg)?;
    sm.set_auth_tokens(std::sync::Arc::new(
        crate::auth::tokens::Tokens::new(cfg.auth.token_ttl()).with_jwt(jwt),
    ));
    let applied = sm.applied_index().max(log_store.snapshot_meta().index);
    Ok(Opened {
        db,
        log_store,
        ident,
        members,
        sm,
        applied,
    })
}

/// The running member: its Raft loop thread and the handle every service works through.
struct RunningMember {
    handle: NodeHandle,
    loop_thread: std::thread::JoinHandle<()>,
    status_rx: watch::Receiver<NodeStatus>,
    metrics: Metrics,
    heartbeat_sent: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

/// Starts the core and its loop on a thread of its own, with the transport it sends through.
fn start_member(
    cfg: &NodeConfig,
    o: Opened,
    peers: PeerClients,
    tls: &MemberTls,
) -> anyhow::Result<RunningMember> {
    let ident = o.ident;
    let mut rcfg = flotilla_raft::Config::new(ident.member_id);
    rcfg.election_tick = cfg.election_ticks;
    rcfg.heartbeat_tick = cfg.heartbeat_ticks;
    rcfg.applied = o.applied;
    rcfg.seed = ident.member_id ^ u64::from(std::process::id());
    let raw = RawNode::new(&rcfg, o.log_store).context("starting the Raft node")?;
    let single_voter = {
        let st = raw.status();
        st.conf_state.voters.len() == 1 && st.conf_state.voters.contains(&ident.member_id)
    };

    let metrics = Metrics::new();
    let (loop_tx, loop_rx) = std::sync::mpsc::channel();
    let initial = NodeStatus {
        id: ident.member_id,
        cluster_id: ident.cluster_id,
        term: 0,
        leader: 0,
        role: Role::Follower,
        commit: 0,
        applied: o.applied,
        first_index: 0,
        last_index: 0,
        last_term: 0,
        pending_conf_index: 0,
        members: Vec::new(),
        progress: Default::default(),
        ready_commit_target: 0,
        caught_up_once: false,
        revision: 0,
        db_size: 0,
        removed: Default::default(),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (applied_tx, applied_rx) = watch::channel(o.applied);
    let transport = Arc::new(Transport::new(
        ident.cluster_id,
        ident.member_id,
        tokio::runtime::Handle::current(),
        loop_tx.clone(),
        tls.peer_dialer.clone(),
    ));
    let heartbeat_sent = transport.heartbeat_sent.clone();
    let sm = Arc::new(StateLock::new(o.sm));
    let mut raft_loop = RaftLoop::new(
        raw,
        sm.clone(),
        o.members,
        transport,
        metrics.clone(),
        LoopSettings {
            tick: cfg.tick(),
            snapshot_threshold: cfg.snapshot_threshold,
            cluster_id: ident.cluster_id,
        },
        status_tx,
        applied_tx,
    );
    if single_voter {
        // A one-voter cluster need not wait an election timeout to elect itself.
        raft_loop.campaign();
    }
    let loop_thread = std::thread::Builder::new()
        .name("raft-loop".into())
        .spawn(move || raft_loop.run(loop_rx))?;

    let mut handle = NodeHandle::new(
        loop_tx,
        status_rx.clone(),
        applied_rx,
        sm,
        metrics.clone(),
        Arc::new(peers),
        ident.member_id,
        cfg.name.clone(),
        ident.cluster_id,
        cfg.request_timeout(),
        cfg.max_request_bytes,
    )
    .with_quota(cfg.quota_backend_bytes);
    handle.election_timeout = Duration::from_millis(cfg.tick_ms * u64::from(cfg.election_ticks));
    Ok(RunningMember {
        handle,
        loop_thread,
        status_rx,
        metrics,
        heartbeat_sent,
    })
}

/// Binds the three ports and serves them until `stop` turns true: the client port (the etcd
/// services, Admin, the JSON gateway and health), the peer port (Raft, Admin, forwarded lease
/// calls) and the metrics port. Returns the servers' tasks.
async fn serve(
    cfg: &NodeConfig,
    member: &RunningMember,
    tls: &MemberTls,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use flotilla_proto::admin::admin_server::AdminServer;
    use flotilla_proto::etcdserverpb::cluster_server::ClusterServer;
    use flotilla_proto::etcdserverpb::kv_server::KvServer;
    use flotilla_proto::etcdserverpb::lease_server::LeaseServer;
    use flotilla_proto::etcdserverpb::maintenance_server::MaintenanceServer;
    use flotilla_proto::etcdserverpb::watch_server::WatchServer;
    use flotilla_proto::raft::peer_server::PeerServer;
    use flotilla_proto::v3electionpb::election_server::ElectionServer;
    use flotilla_proto::v3lockpb::lock_server::LockServer;

    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let max_msg = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    // Accepting (TCP_NODELAY on every connection, TLS handshakes when configured, the
    // connection's identity for the services) is `crate::tls::accept`'s. The cert-user layer
    // makes the verified client certificate's CN the only source of that metadata.
    let cert_user = || {
        tower::util::MapRequestLayer::new(crate::tls::accept::stamp_cert_user::<tonic::body::Body>)
    };

    let client_listener = tokio::net::TcpListener::bind(cfg.listen_client)
        .await
        .with_context(|| format!("binding the client address {}", cfg.listen_client))?;
    let peer_listener = tokio::net::TcpListener::bind(cfg.listen_peer)
        .await
        .with_context(|| format!("binding the peer address {}", cfg.listen_peer))?;
    let metrics_listener = crate::http::bind(cfg.listen_metrics)
        .await
        .with_context(|| format!("binding the metrics address {}", cfg.listen_metrics))?;

    let handle = &member.handle;
    // HTTP/1.1 is accepted for the JSON gateway, which shares the client port with gRPC.
    let client_server = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(cert_user())
        .add_routes(crate::client_http::routes(
            handle.clone(),
            cfg.auth.bcrypt_cost(),
        ))
        .add_service(
            KvServer::new(api::kv::KvService::new(handle.clone()))
                .max_decoding_message_size(max_msg),
        )
        .add_service(ClusterServer::new(api::cluster::ClusterService::new(
            handle.clone(),
        )))
        .add_service(MaintenanceServer::new(
            api::maintenance::MaintenanceService::new(handle.clone()),
        ))
        .add_service(AdminServer::new(api::admin::AdminService::new(
            handle.clone(),
        )))
        .add_service(WatchServer::new(api::watch::WatchService::new(
            handle.clone(),
            Duration::from_millis(cfg.watch_progress_notify_interval_ms.max(1)),
        )))
        .add_service(LeaseServer::new(api::lease::LeaseService::new(
            handle.clone(),
        )))
        .add_service(LockServer::new(api::lock::LockService::new(handle.clone())))
        .add_service(ElectionServer::new(api::election::ElectionService::new(
            handle.clone(),
        )))
        .add_service(
            flotilla_proto::etcdserverpb::auth_server::AuthServer::new(
                api::auth::AuthService::new(handle.clone(), cfg.auth.bcrypt_cost()),
            )
            .max_decoding_message_size(max_msg),
        )
        .serve_with_incoming_shutdown(
            // etcd 3.4 clients may send a URL as :authority (see crate::authority); the fix
            // reads the decrypted stream.
            futures::StreamExt::map(
                crate::tls::accept::incoming(client_listener, tls.client.clone()),
                |conn| conn.map(crate::authority::AuthorityFix::new),
            ),
            stopped(stop.clone()),
        );
    let peer_server = tonic::transport::Server::builder()
        .layer(cert_user())
        .add_service(
            PeerServer::new(PeerService::new(
                handle.clone(),
                member.heartbeat_sent.clone(),
            ))
            .max_decoding_message_size(usize::MAX),
        )
        .add_service(AdminServer::new(api::admin::AdminService::new(
            handle.clone(),
        )))
        // Followers forward keep-alives and time-to-live queries here (api/lease.rs).
        .add_service(LeaseServer::new(api::lease::LeaseService::new(
            handle.clone(),
        )))
        .serve_with_incoming_shutdown(
            crate::tls::accept::incoming(peer_listener, tls.peer.clone()),
            stopped(stop.clone()),
        );
    let http_server = crate::http::serve_on_own_thread(
        metrics_listener,
        member.metrics.clone(),
        member.status_rx.clone(),
        stopped(stop),
    )?;
    crate::member::lease_expiry::spawn(handle.clone());
    Ok(vec![
        tokio::spawn(async move {
            if let Err(e) = client_server.await {
                tracing::error!(error = %e, "the client port stopped serving");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = peer_server.await {
                tracing::error!(error = %e, "the peer port stopped serving");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = http_server.await {
                tracing::error!(error = %e, "the metrics port stopped serving");
            }
        }),
    ])
}

/// The admin API on the client port is open when no client certificate can be verified (no
/// TLS with `--trusted-ca-file`) and auth is off — as etcd's is without auth. Said once at
/// start, because a member cannot tell whether a firewall stands in front of the port.
fn warn_if_admin_open(cfg: &NodeConfig) {
    let tls = cfg.tls.normalized();
    if tls.cert_file.is_none() || tls.trusted_ca_file.is_none() {
        tracing::warn!(
            "the admin API (membership changes, leadership transfer) on the client port is \
             open to every client until auth is enabled: serve TLS with --trusted-ca-file to \
             require a client certificate, or enable auth to require the root user"
        );
    }
}

/// Bootstrap members know each other's peer URLs (from `--initial-cluster`) but not their
/// client URLs, which `member list` and `endpoint status --cluster` need. Each member reports
/// its own in Admin.Status (served on the peer port too), so ask the ones we lack.
async fn discover_client_urls(handle: NodeHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let missing: Vec<(NodeId, String)> = handle
            .status()
            .members
            .iter()
            .filter(|m| m.id != handle.id && m.client_urls.is_empty())
            .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())))
            .collect();
        for (id, url) in missing {
            let Ok(ch) = handle.peers.channel(&url) else {
                continue;
            };
            let mut c = AdminClient::new(ch);
            let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(1), c.status(StatusRequest {})).await
            else {
                continue;
            };
            let resp = resp.into_inner();
            if resp.id != id || resp.cluster_id != handle.cluster_id {
                continue;
            }
            if let Some(me) = resp.members.into_iter().find(|m| m.id == id)
                && !me.client_urls.is_empty()
            {
                let _ = handle.send(crate::contract::Command::LearnMember(Member {
                    id,
                    name: me.name,
                    peer_urls: Vec::new(),
                    client_urls: me.client_urls,
                    is_learner: false,
                }));
            }
        }
    }
}

/// A leader hands leadership to the most up-to-date voter before it stops, so the cluster
/// does not wait an election timeout (bounded: a stuck transfer does not block shutdown).
async fn graceful_handoff(handle: &NodeHandle) {
    let st = handle.status();
    if !st.is_leader() {
        return;
    }
    let Some(target) = api::admin::most_up_to_date_voter(&st, st.id) else {
        return;
    };
    let r = tokio::time::timeout(Duration::from_secs(3), handle.transfer_leader(target)).await;
    match r {
        Ok(Ok(_)) => tracing::info!(to = format!("{target:x}"), "leadership handed off"),
        Ok(Err(e)) => tracing::warn!(error = %e, "leadership hand-off failed"),
        Err(_) => tracing::warn!("leadership hand-off timed out"),
    }
}
