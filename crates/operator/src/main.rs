//! `flotilla-operator`: runs RaftCluster resources.
//!
//! Serves `/metrics`, `/healthz` and `/readyz` from the start (a standby replica is healthy and
//! ready: it is waiting for the Lease, which is its job), takes the leader Lease, then runs the
//! controller. Losing the Lease ends the process; Kubernetes restarts it as a standby.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::Parser;
use flotilla_operator::controller;
use flotilla_operator::lease::Elector;
use flotilla_operator::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tracing::{error, info};

/// Command line (every flag has an environment fallback for the Deployment).
#[derive(Debug, Parser)]
#[command(
    name = "flotilla-operator",
    version,
    about = "Runs Flotilla clusters on Kubernetes"
)]
struct Args {
    /// Address of the metrics and health server.
    #[arg(
        long,
        env = "FLOTILLA_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "FLOTILLA_OPERATOR_LEASE",
        default_value = "flotilla-operator"
    )]
    lease_name: String,
    /// This replica's identity in the Lease (normally the pod name).
    #[arg(long, env = "POD_NAME", default_value = "flotilla-operator")]
    identity: String,
    /// Lease duration in seconds.
    #[arg(long, env = "FLOTILLA_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Run without leader election (a single replica).
    #[arg(long, env = "FLOTILLA_OPERATOR_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Log as JSON lines.
    #[arg(long, env = "FLOTILLA_OPERATOR_LOG_JSON")]
    log_json: bool,
    /// Give every RaftCluster whose spec does not say otherwise a NetworkPolicy
    /// (`spec.networkPolicy.enabled` overrides it per cluster).
    #[arg(long, env = "FLOTILLA_OPERATOR_NETWORK_POLICY")]
    network_policy: bool,
    /// Labels of the operator's own pods (`k=v,k=v`), which the clusters' NetworkPolicies let
    /// reach the client port; the namespace is the Lease's (the operator's own).
    #[arg(long, env = "FLOTILLA_OPERATOR_POD_LABELS", value_parser = parse_labels)]
    pod_labels: Option<std::collections::BTreeMap<String, String>>,
}

/// `k=v,k=v` into a map; a pair without `=` is an error.
fn parse_labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("`{kv}` is not key=value"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colour codes only for a terminal: `kubectl logs` gets plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }

    let metrics = Metrics::new().context("registering metrics")?;
    let page = Arc::new(metrics.clone());
    let app = Router::new()
        .route("/metrics", get(move || async move { page.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server stopped");
        }
    });

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let operator_pods = args
        .pod_labels
        .clone()
        .map(|labels| (args.lease_namespace.clone(), labels));
    let controller = controller::run(
        client.clone(),
        metrics.clone(),
        Some(args.identity.clone()),
        args.network_policy,
        operator_pods,
    );
    if args.no_leader_election {
        metrics.leader.set(1);
        controller.await;
        return Ok(());
    }

    let elector = Elector::new(
        Api::<Lease>::namespaced(client, &args.lease_namespace),
        args.lease_name.clone(),
        args.identity.clone(),
        Duration::from_secs(args.lease_seconds),
    );
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => error!(error = %e, "leader election"),
        }
        tokio::time::sleep(elector.period()).await;
    }
    info!(identity = %args.identity, lease = %args.lease_name, "became leader");
    metrics.leader.set(1);
    let keep = async {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(elector.period()).await;
            match elector.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return "another replica took the Lease",
                Err(e) => error!(error = %e, "renewing the Lease"),
            }
            if last_renewal.elapsed() >= Duration::from_secs(args.lease_seconds) {
                return "could not renew the Lease in time";
            }
        }
    };
    tokio::select! {
        () = controller => Ok(()),
        why = keep => {
            metrics.leader.set(0);
            anyhow::bail!("lost leadership: {why}")
        }
    }
}
