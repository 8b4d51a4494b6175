//! Talking to the Flotilla nodes: the admin gRPC API behind a narrow trait.
//!
//! The operator reaches nodes only through `flotilla.admin.v1.Admin` (docs/ARCHITECTURE.md: never through
//! files). The trait exists so the plan/act loop runs against real nodes in production and
//! against an in-memory cluster model or local `flotilla` processes in tests. A node is named by
//! (cluster names, ordinal); how that maps to an address is the implementation's business (pod
//! DNS in Kubernetes, loopback ports in a test harness).
//!
//! Every call has a connect timeout and a request timeout: a node that does not answer must
//! make the reconcile pass report it, not hang it.

use std::future::Future;
use std::time::Duration;

use flotilla_proto::admin::admin_client::AdminClient;
use flotilla_proto::admin::{
    PromoteLearnerRequest, RemoveMemberRequest, StatusRequest, StatusResponse,
    TransferLeadershipRequest,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::transport::{Channel, Endpoint};

use crate::resources::Names;
use crate::tls::ClientTls;

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The endpoint is not a valid URI.
    #[error("bad node endpoint {0}")]
    Endpoint(String),
    /// No connection could be made.
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Transport error.
        source: tonic::transport::Error,
    },
    /// The cluster's client certificate Secret does not make a TLS configuration.
    #[error("{0}")]
    Tls(String),
    /// The node answered with an error status.
    #[error("{endpoint}: {status}")]
    Rpc {
        /// The endpoint.
        endpoint: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
}

/// The admin operations the operator needs.
pub trait NodeClient: Send + Sync {
    /// The node's view of itself and (on the leader) of every member's progress.
    fn status(
        &self,
        names: &Names,
        ordinal: u32,
    ) -> impl Future<Output = Result<StatusResponse, NodeError>> + Send;
    /// Promote a learner; `via` is the ordinal of the node to ask (normally the leader).
    fn promote(
        &self,
        names: &Names,
        via: u32,
        member_id: u64,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Remove a member.
    fn remove(
        &self,
        names: &Names,
        via: u32,
        member_id: u64,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Hand leadership to `target` (0: the most up-to-date voter); answers the new leader's id.
    fn transfer(
        &self,
        names: &Names,
        via: u32,
        target: u64,
    ) -> impl Future<Output = Result<u64, NodeError>> + Send;
    /// Dial the members of `names` over TLS with this identity from now on (`None`: plain
    /// HTTP/2). Each pass sets it from the cluster's client certificate Secret (crate::tls),
    /// before any other call. Clients that do not dial real nodes ignore it.
    fn use_tls(&self, names: &Names, tls: Option<ClientTls>) {
        let _ = (names, tls);
    }
}

/// Where the gRPC client finds a node.
pub trait Locator: Send + Sync {
    /// The admin endpoint URL of an ordinal.
    fn endpoint(&self, names: &Names, ordinal: u32) -> String;
}

/// In Kubernetes: the pod's DNS name through the headless Service.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodDns;

impl Locator for PodDns {
    fn endpoint(&self, names: &Names, ordinal: u32) -> String {
        names.admin_endpoint(ordinal)
    }
}

/// The real client: tonic over HTTP/2, a fresh channel per call (a reconcile makes a handful of
/// calls a few times a minute; caching channels to pods that come and go would cost more in
/// stale-connection handling than it saves).
#[derive(Debug, Clone)]
pub struct GrpcNodes<L> {
    locator: L,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Client identities by (namespace, cluster), for clusters with TLS on.
    tls: Arc<Mutex<HashMap<(String, String), ClientTls>>>,
}

impl<L: Locator> GrpcNodes<L> {
    /// A client with the given timeouts.
    pub fn new(locator: L, connect_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            locator,
            connect_timeout,
            request_timeout,
            tls: Arc::default(),
        }
    }

    fn tls_of(&self, names: &Names) -> Option<ClientTls> {
        let key = (names.namespace.clone(), names.cluster.clone());
        self.tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    async fn client(
        &self,
        names: &Names,
        ordinal: u32,
    ) -> Result<(String, AdminClient<Channel>), NodeError> {
        let mut endpoint = self.locator.endpoint(names, ordinal);
        let tls = self.tls_of(names);
        if tls.is_some()
            && let Some(rest) = endpoint.strip_prefix("http://")
        {
            endpoint = format!("https://{rest}");
        }
        let ep = Endpoint::from_shared(endpoint.clone())
            .map_err(|_| NodeError::Endpoint(endpoint.clone()))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        let connected = match tls {
            Some(t) => {
                let config = crate::tls::dial::client_config(&t)
                    .map_err(|e| NodeError::Tls(e.to_string()))?;
                ep.connect_with_connector(crate::tls::dial::TlsConnector::new(config))
                    .await
            }
            None => ep.connect().await,
        };
        let channel = connected.map_err(|source| NodeError::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        Ok((endpoint, AdminClient::new(channel)))
    }
}

fn rpc(endpoint: String) -> impl FnOnce(tonic::Status) -> NodeError {
    move |status| NodeError::Rpc {
        endpoint,
        status: Box::new(status),
    }
}

impl<L: Locator> NodeClient for GrpcNodes<L> {
    fn use_tls(&self, names: &Names, tls: Option<ClientTls>) {
        let key = (names.namespace.clone(), names.cluster.clone());
        let mut m = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        match tls {
            Some(t) => m.insert(key, t),
            None => m.remove(&key),
        };
    }

    async fn status(&self, names: &Names, ordinal: u32) -> Result<StatusResponse, NodeError> {
        let (ep, mut c) = self.client(names, ordinal).await?;
        Ok(c.status(StatusRequest {})
            .await
            .map_err(rpc(ep))?
            .into_inner())
    }

    async fn promote(&self, names: &Names, via: u32, member_id: u64) -> Result<(), NodeError> {
        let (ep, mut c) = self.client(names, via).await?;
        c.promote_learner(PromoteLearnerRequest { member_id })
            .await
            .map_err(rpc(ep))?;
        Ok(())
    }

    async fn remove(&self, names: &Names, via: u32, member_id: u64) -> Result<(), NodeError> {
        let (ep, mut c) = self.client(names, via).await?;
        c.remove_member(RemoveMemberRequest { member_id })
            .await
            .map_err(rpc(ep))?;
        Ok(())
    }

    async fn transfer(&self, names: &Names, via: u32, target: u64) -> Result<u64, NodeError> {
        let (ep, mut c) = self.client(names, via).await?;
        Ok(
            c.transfer_leadership(TransferLeadershipRequest { target_id: target })
                .await
                .map_err(rpc(ep))?
                .into_inner()
                .leader_id,
        )
    }
}
