//! The peer transport: Raft messages between members over gRPC (`flotilla.raft.v1.Peer`).
//!
//! Sending: one task per peer keeps a long-lived client stream open; the Raft loop pushes
//! straight into that stream's bounded queue and never waits. When the queue is full or the
//! peer is down the message is dropped and the core is told (`report_unreachable`) — Raft
//! retransmits anyway, and an unbounded queue would only turn a slow peer into memory growth. Snapshots go on their
//! own `InstallSnapshot` call in chunks, so a large snapshot never blocks heartbeats.
//!
//! Receiving ([`server::PeerService`]): every envelope names its cluster; traffic from another
//! cluster is refused with FAILED_PRECONDITION and a malformed one with INVALID_ARGUMENT, in
//! both cases before anything reaches the core. The wire rules (envelopes, snapshot chunks,
//! member contexts) are `crate::codec`'s, the only implementation of each.
//!
//! Forwarding ([`forward`]): a follower's writes travel to the leader in batches over the peer
//! port. The member does not import this module: [`PeerClients`] implements the
//! `contract::Forwarding` trait the member's handle is given at start-up.

pub mod forward;
pub mod server;
pub mod wire;

use std::collections::HashMap;
use std::sync::mpsc::Sender as StdSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_proto::raft::RaftEnvelope;
use flotilla_proto::raft::peer_client::PeerClient;
use flotilla_raft::{Message, MessageBody, NodeId};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::contract::{Command, ForwardFuture, Outbox, ServerError};
use crate::log_limit::LogLimit;
use crate::tls::Dialer;

/// How a peer's refusal of a removed member's message begins: the sender recognises it and
/// learns that it was removed (`Command::Removed`).
pub const REMOVED_MARK: &str = "flotilla: removed member: ";

/// The refusal of a message from `from`, whose removal this member applied.
pub fn removed_refusal(from: NodeId) -> tonic::Status {
    tonic::Status::failed_precondition(format!(
        "{REMOVED_MARK}{from:x} was removed from the cluster"
    ))
}

/// At most one "peer unreachable" line per peer per this interval.
const UNREACHABLE_LOG_EVERY: Duration = Duration::from_secs(30);

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Snapshot data per chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// How long a leader waits after a failed snapshot send before it may send another.
const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The endpoint of a member URL (a bare `host:port` is http://); TLS, when the URL is
/// https://, is the dialer's (`crate::tls::Dialer`).
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// Cached client channels by URL, for `Forward` (and the admin join).
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    client_channels: Arc<Mutex<HashMap<String, Channel>>>,
    forwarder: forward::Forwarder,
    peer_dialer: Dialer,
    client_dialer: Dialer,
}

impl PeerClients {
    /// Clients that dial peer URLs with `peer_dialer` and client URLs with `client_dialer`.
    pub fn new(peer_dialer: Dialer, client_dialer: Dialer) -> Self {
        PeerClients {
            peer_dialer,
            client_dialer,
            ..PeerClients::default()
        }
    }
}

/// The cached lazy channel to `url`, made with `dialer` on first use.
fn cached(
    map: &Mutex<HashMap<String, Channel>>,
    dialer: &Dialer,
    url: &str,
) -> Result<Channel, ServerError> {
    let mut map = map
        .lock()
        .map_err(|_| ServerError::Forward("lock poisoned".into()))?;
    if let Some(c) = map.get(url) {
        return Ok(c.clone());
    }
    let ep = endpoint(url).map_err(ServerError::Forward)?;
    let ch = dialer
        .connect_lazy(ep)
        .map_err(|e| ServerError::Forward(e.to_string()))?;
    map.insert(url.to_string(), ch.clone());
    Ok(ch)
}

impl crate::contract::Forwarding for PeerClients {
    /// A (lazily connecting) channel to `url`, shared by every caller.
    fn channel(&self, url: &str) -> Result<Channel, ServerError> {
        cached(&self.channels, &self.peer_dialer, url)
    }

    fn client_channel(&self, url: &str) -> Result<Channel, ServerError> {
        cached(&self.client_channels, &self.client_dialer, url)
    }

    /// Hands an encoded `internal::Request` to the leader at `url` (batched with other
    /// forwarded writes, see [`forward`]).
    fn forward<'a>(
        &'a self,
        url: &'a str,
        cluster_id: u64,
        from: NodeId,
        request: Vec<u8>,
    ) -> ForwardFuture<'a> {
        Box::pin(
            self.forwarder
                .forward(url, || self.channel(url), cluster_id, from, request),
        )
    }
}

struct PeerLink {
    url: String,
    inlet: PeerInlet,
    task: tokio::task::JoinHandle<()>,
}

/// A link's task only dials and keeps the stream open: it ends with the link (a peer removed,
/// or the transport dropped at shutdown), never on its own.
impl Drop for PeerLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sending side, plugged into the Raft loop as its [`Outbox`].
pub struct Transport {
    cluster_id: u64,
    self_id: NodeId,
    rt: tokio::runtime::Handle,
    loop_tx: StdSender<Command>,
    dialer: Dialer,
    links: Mutex<HashMap<NodeId, PeerLink>>,
    /// When the last unanswered heartbeat to each peer left, for the round-trip histogram.
    pub(crate) heartbeat_sent: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Transport {
    /// Creates the transport, dialling peers with `dialer`; peers are set by the Raft loop.
    pub fn new(
        cluster_id: u64,
        self_id: NodeId,
        rt: tokio::runtime::Handle,
        loop_tx: StdSender<Command>,
        dialer: Dialer,
    ) -> Self {
        Transport {
            cluster_id,
            self_id,
            rt,
            loop_tx,
            dialer,
            links: Mutex::new(HashMap::new()),
            heartbeat_sent: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn send_snapshot(&self, msg: Message, url: String) {
        let loop_tx = self.loop_tx.clone();
        let cluster_id = self.cluster_id;
        let to = msg.to;
        let dialer = self.dialer.clone();
        self.rt.spawn(async move {
            let ok = match send_snapshot(&dialer, &url, cluster_id, msg).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(to = format!("{to:x}"), error = %e, "snapshot send failed");
                    // The member stays in the snapshot state (paused) until this report: a
                    // pause here keeps the leader from building image after image for a
                    // member that is down or still installing an earlier one.
                    tokio::time::sleep(SNAPSHOT_RETRY_AFTER).await;
                    false
                }
            };
            let _ = loop_tx.send(Command::SnapshotSent { to, ok });
        });
    }
}

async fn send_snapshot(
    dialer: &Dialer,
    url: &str,
    cluster_id: u64,
    msg: Message,
) -> Result<(), String> {
    let total = match &msg.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.data.len() as u64,
        _ => return Err("not a snapshot message".into()),
    };
    let chunks = crate::codec::snapshot_chunks(cluster_id, msg, SNAPSHOT_CHUNK)
        .ok_or("not a snapshot message")?;
    let channel = dialer
        .connect(endpoint(url)?)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let ack = tokio::time::timeout(
        Duration::from_secs(60),
        client.install_snapshot(futures::stream::iter(chunks)),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|s| s.message().to_string())?;
    if ack.into_inner().received_bytes != total {
        return Err("peer acknowledged a different size".into());
    }
    Ok(())
}

/// Where the Raft loop puts one peer's envelopes: the request stream of the connection that is
/// open now, or of the one being dialled (swapped by [`peer_task`] on every attempt; a closed
/// sender while it backs off).
type PeerInlet = Arc<Mutex<mpsc::Sender<RaftEnvelope>>>;

/// A sender whose receiver is gone: every send fails, so the loop hears `Unreachable` at once.
fn closed_inlet() -> mpsc::Sender<RaftEnvelope> {
    mpsc::channel(1).0
}

/// One peer's connection keeper: dials with backoff and opens the client stream whose request
/// side is the link's inlet. The loop's envelopes go straight into that stream, which the
/// HTTP/2 connection task drains: one hand-off between the Raft thread and the socket, not a
/// relay task in between (each hand-off is a wake-up on the replication path of every write).
async fn peer_task(
    id: NodeId,
    url: String,
    inlet: PeerInlet,
    first: mpsc::Receiver<RaftEnvelope>,
    loop_tx: StdSender<Command>,
    dialer: Dialer,
) {
    let mut backoff = Duration::from_millis(50);
    // A dead peer fails every reconnect: warn on the first failure, then at most every
    // UNREACHABLE_LOG_EVERY with the count held back, and say when it answers again.
    let mut log = LogLimit::new(UNREACHABLE_LOG_EVERY);
    let mut down_since: Option<Instant> = None;
    let peer = format!("{id:x}");
    // The link was made with its first stream's queue open, so nothing the loop sends before
    // this task first runs is refused.
    let mut first = Some(first);
    loop {
        // What the loop sends while the dial is under way waits in this stream's queue.
        let stream_rx = match first.take() {
            Some(rx) => rx,
            None => {
                let (stream_tx, stream_rx) = mpsc::channel::<RaftEnvelope>(PEER_QUEUE);
                set_inlet(&inlet, stream_tx);
                stream_rx
            }
        };
        let channel = match endpoint(&url) {
            Ok(ep) => dialer.connect(ep).await,
            Err(e) => {
                tracing::error!(peer = %url, error = %e, "bad peer URL");
                set_inlet(&inlet, closed_inlet());
                return;
            }
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                down_since.get_or_insert_with(Instant::now);
                if let Some(held) = log.allow((), Instant::now()) {
                    tracing::warn!(peer, url = %url, error = %e, failures_not_logged = held,
                        "peer unreachable");
                }
                // Drop what queued up meanwhile (Raft resends, and stale appends only waste
                // bandwidth once the peer is back); until the next dial every send fails.
                set_inlet(&inlet, closed_inlet());
                let dropped = !stream_rx.is_empty();
                drop(stream_rx);
                if dropped {
                    let _ = loop_tx.send(Command::Unreachable(id));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if let Some(since) = down_since.take() {
            tracing::info!(peer, url = %url, down_for = ?since.elapsed(), "peer reachable again");
        }
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let r = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(stream_rx))
            .await;
        set_inlet(&inlet, closed_inlet());
        if let Err(s) = r {
            if s.message().starts_with(REMOVED_MARK) {
                let _ = loop_tx.send(Command::Removed { by: id });
            }
            down_since.get_or_insert_with(Instant::now);
            if let Some(held) = log.allow((), Instant::now()) {
                tracing::warn!(peer, url = %url, status = %s,
                    failures_not_logged = held, "peer stream ended");
            }
        }
        let _ = loop_tx.send(Command::Unreachable(id));
    }
}

fn set_inlet(inlet: &PeerInlet, tx: mpsc::Sender<RaftEnvelope>) {
    if let Ok(mut cur) = inlet.lock() {
        *cur = tx;
    }
}

impl Outbox for Transport {
    fn send(&self, msgs: Vec<Message>) {
        let Ok(links) = self.links.lock() else {
            return;
        };
        for msg in msgs {
            let to = msg.to;
            let Some(link) = links.get(&to) else {
                let _ = self.loop_tx.send(Command::Unreachable(to));
                continue;
            };
            if matches!(msg.body, MessageBody::InstallSnapshot { .. }) {
                self.send_snapshot(msg, link.url.clone());
                continue;
            }
            if matches!(msg.body, MessageBody::Heartbeat { .. })
                && let Ok(mut hb) = self.heartbeat_sent.lock()
            {
                hb.entry(to).or_insert_with(Instant::now);
            }
            let env = wire::to_envelope(self.cluster_id, msg);
            let sent = link
                .inlet
                .lock()
                .map(|tx| tx.try_send(env).is_ok())
                .unwrap_or(false);
            if !sent {
                let _ = self.loop_tx.send(Command::Unreachable(to));
            }
        }
    }

    fn set_peers(&self, peers: Vec<(NodeId, String)>) {
        let Ok(mut links) = self.links.lock() else {
            return;
        };
        // A dropped link aborts its task.
        links.retain(|id, link| peers.iter().any(|(p, u)| p == id && *u == link.url));
        for (id, url) in peers {
            if id == self.self_id || links.contains_key(&id) {
                continue;
            }
            let (first_tx, first_rx) = mpsc::channel(PEER_QUEUE);
            let inlet: PeerInlet = Arc::new(Mutex::new(first_tx));
            let task = self.rt.spawn(peer_task(
                id,
                url.clone(),
                inlet.clone(),
                first_rx,
                self.loop_tx.clone(),
                self.dialer.clone(),
            ));
            links.insert(id, PeerLink { url, inlet, task });
        }
    }
}
