//! The metrics and health HTTP server (`--listen-metrics`).
//!
//! Separate from the client port so a scrape or a kubelet probe never competes with client
//! traffic for a gRPC connection, and so the probes work even when gRPC is wedged.
//! `/healthz` says the process is alive; `/readyz` says this member has a known leader and has
//! applied everything that was committed when it first saw one (a fresh learner is not ready
//! until it has caught up, so a Service does not send it clients that would wait).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

use crate::contract::NodeStatus;
use crate::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    status: watch::Receiver<NodeStatus>,
}

/// The router, separate from [`serve`] so tests can drive it without a socket.
pub fn router(metrics: Metrics, status: watch::Receiver<NodeStatus>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HttpState { metrics, status })
}

async fn metrics_handler(State(s): State<HttpState>) -> (StatusCode, String) {
    (StatusCode::OK, s.metrics.render())
}

/// Why this member is not ready (see the module doc), or `Ok` when it is; shared with the
/// client port's etcd-style `/readyz` (`crate::client_http`).
pub fn readiness(st: &NodeStatus) -> Result<(), String> {
    if st.ready() {
        Ok(())
    } else if st.leader == 0 {
        Err("no leader".into())
    } else {
        Err(format!(
            "catching up: applied {} of {}",
            st.applied, st.ready_commit_target
        ))
    }
}

async fn ready_handler(State(s): State<HttpState>) -> (StatusCode, String) {
    match readiness(&s.status.borrow()) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    status: watch::Receiver<NodeStatus>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, status))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] on a thread of its own with a single-threaded runtime: `/healthz`, `/readyz` and
/// `/metrics` keep answering while the member's main runtime is stalled (a long snapshot
/// restore holds the state machine's lock, and client requests waiting for it occupy every
/// worker). The liveness probe must not kill a member for being busy catching up. The returned
/// future resolves when the server stops.
pub fn serve_on_own_thread(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    status: watch::Receiver<NodeStatus>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = listener.into_std()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        serve(listener, metrics, status, shutdown).await
                    })
                });
            let _ = done_tx.send(served);
        })?;
    Ok(async move {
        done_rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the metrics thread ended")))
    })
}

/// Binds the metrics listener (separately, so a port conflict fails start-up at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
