//! etcd's Watch service: one bidirectional stream per `Watch` call, carrying any number of
//! watches.
//!
//! The semantics (history replay from `start_revision`, live events, filters, `prev_kv`,
//! compaction cancel, slow watchers) live in [`crate::mvcc::watch::WatchHub`], which sits next
//! to the store inside the state machine so every applied entry reaches it before the next one
//! is applied. This module only translates: each request on the client stream becomes a hub
//! call under the state-machine lock, and each hub response gets the full etcd header
//! (cluster, member, term) on its way out. Events come from the local apply, so any member
//! serves watches, followers included.
//!
//! Closing the client stream (either direction) forgets the stream and all its watches: the
//! request reader closes it in the hub when the client's half ends, and the hub drops a
//! stream whose response receiver is gone on its next sync. The hub holds the only strong
//! sender of a stream's responses, so when the *server* forgets a stream (after installing a
//! snapshot, whose skipped changes no watcher saw) the response stream ends with
//! `Unavailable`, which etcd clients answer by re-creating their watches from the last
//! revision they received.
//!
//! Watches created with `progress_notify` get etcd's periodic progress responses
//! (`--watch-progress-notify-interval-ms`, 10 minutes by default); explicit progress requests
//! are answered. Not implemented: `fragment` (responses are never split).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::watch_server::Watch;
use flotilla_proto::etcdserverpb::{WatchRequest, WatchResponse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{header, observe};
use crate::member::handle::NodeHandle;
use crate::member::state_machine::StateMachine;
use crate::mvcc::watch::StreamId;

/// Responses buffered per client stream before its watchers fall back to catching up from
/// history (the hub never blocks apply on a slow client).
const STREAM_BUFFER: usize = 256;

/// How often unsynced watchers catch up and queued control responses are retried, as etcd's
/// `syncWatchersLoop` (every 100 ms).
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The Watch service.
#[derive(Clone)]
pub struct WatchService {
    node: NodeHandle,
}

impl WatchService {
    /// Creates the service and starts the hub's periodic catch-up (it runs for the life of the
    /// process, as the state machine does). Must be called inside a Tokio runtime.
    pub fn new(node: NodeHandle, progress_notify_interval: Duration) -> Self {
        tokio::spawn(every(node.clone(), SYNC_INTERVAL, |sm| {
            if let Err(e) = sm.watch_sync() {
                tracing::warn!(error = %e, "watch catch-up failed");
            }
        }));
        tokio::spawn(every(
            node.clone(),
            progress_notify_interval,
            StateMachine::watch_notify_progress,
        ));
        WatchService { node }
    }
}

/// Runs `f` on the hub every `period` (first after one period), under the state machine's
/// write lock, until the lock is poisoned.
async fn every(node: NodeHandle, period: Duration, mut f: impl FnMut(&mut StateMachine) + Send) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(mut sm) = node.sm.write() else {
            return;
        };
        f(&mut sm);
    }
}

/// Fills the parts of the header the hub does not know; keeps its revision.
fn complete(node: &NodeHandle, mut resp: WatchResponse) -> WatchResponse {
    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
    resp.header = Some(header(node, rev));
    resp
}

/// Applies one client request to the hub. Returns a response to send when the hub refused
/// the request (the hub queues every other answer itself).
fn handle_request(
    node: &NodeHandle,
    stream: StreamId,
    req: WatchRequest,
) -> Result<Option<WatchResponse>, Status> {
    let mut sm = node
        .sm
        .write()
        .map_err(|_| Status::internal("state machine lock poisoned"))?;
    match req.request_union {
        Some(RequestUnion::CreateRequest(c)) => match sm.watch_create(stream, &c) {
            Ok(()) => Ok(None),
            // etcd 3.4 answers a refused create with created + canceled and watch id -1.
            Err((e, revision)) => Ok(Some(WatchResponse {
                header: Some(header(node, revision)),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: e.grpc_message(),
                ..Default::default()
            })),
        },
        Some(RequestUnion::CancelRequest(c)) => {
            // Unknown ids are ignored, as etcd does.
            sm.watch_cancel(stream, c.watch_id);
            Ok(None)
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            sm.watch_progress(stream);
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The answer to a watch the caller may not read (etcd's `isWatchPermitted`): created and
/// canceled with watch id -1, the reason being the gRPC error's text, as etcd sends it.
async fn refuse_unpermitted(
    node: &NodeHandle,
    md: &tonic::metadata::MetadataMap,
    c: &flotilla_proto::etcdserverpb::WatchCreateRequest,
) -> Option<WatchResponse> {
    // etcd's normalisation: an empty key is "\0", the smallest key.
    let key: &[u8] = if c.key.is_empty() { &[0] } else { &c.key };
    let e = crate::auth::check_read(node, md, key, &c.range_end)
        .await
        .err()?;
    Some(WatchResponse {
        header: Some(header(node, 0)),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: format!(
            "rpc error: code = {} desc = {}",
            crate::auth::go_code_name(e.code()),
            e.message()
        ),
        ..Default::default()
    })
}

/// Reads the client's requests until its half of the stream ends, then forgets the stream.
async fn read_requests(
    node: NodeHandle,
    stream: StreamId,
    mut inbound: Streaming<WatchRequest>,
    md: tonic::metadata::MetadataMap,
    tx: mpsc::WeakSender<WatchResponse>,
    client_done: Arc<AtomicBool>,
) {
    loop {
        let req = match inbound.next().await {
            Some(Ok(req)) => req,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "watch stream ended with an error");
                break;
            }
            None => {
                client_done.store(true, Ordering::SeqCst);
                break;
            }
        };
        let refused = match &req.request_union {
            Some(RequestUnion::CreateRequest(c)) => refuse_unpermitted(&node, &md, c).await,
            _ => None,
        };
        let answer = match refused {
            Some(resp) => Ok(Some(resp)),
            None => handle_request(&node, stream, req),
        };
        match answer {
            Ok(None) => {}
            Ok(Some(resp)) => {
                // No strong sender left: the hub has forgotten this stream.
                let Some(tx) = tx.upgrade() else { break };
                if tx.send(resp).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch request failed");
                break;
            }
        }
    }
    if let Ok(mut sm) = node.sm.write() {
        sm.watch_close(stream);
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (md, _, inbound) = request.into_parts();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let r = (|| {
            let mut sm = self
                .node
                .sm
                .write()
                .map_err(|_| Status::internal("state machine lock poisoned"))?;
            Ok(sm.watch_open(tx.clone()))
        })();
        let stream = observe(&self.node, "Watch", r)?;
        let client_done = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_requests(
            self.node.clone(),
            stream,
            inbound,
            md,
            tx.downgrade(),
            client_done.clone(),
        ));
        drop(tx);
        let node = self.node.clone();
        let out = ReceiverStream::new(rx).map(move |resp| Ok(complete(&node, resp)));
        // The responses end when the hub forgets the stream: normal if the client closed its
        // half, otherwise the server reset it and the client must resume.
        let tail = futures::stream::once(async move {
            (!client_done.load(Ordering::SeqCst)).then(|| {
                Err(Status::unavailable(
                    "etcdserver: watch stream reset by the server; resume from the last revision",
                ))
            })
        })
        .filter_map(std::future::ready);
        Ok(Response::new(Box::pin(out.chain(tail))))
    }
}
