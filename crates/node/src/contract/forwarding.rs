//! [`Forwarding`]: how a member reaches the leader, injected into the member's handle.
//!
//! The handle decides *whether* a write is forwarded; the transport knows *how* (batched
//! `ForwardBatch` calls, cached channels). Injecting it as a trait keeps the member free of any
//! dependency on the transport, which itself depends on the member's handle to deliver what it
//! receives.

use std::future::Future;
use std::pin::Pin;

use flotilla_raft::NodeId;
use tonic::transport::Channel;

use super::error::ServerError;

/// The future [`Forwarding::forward`] returns.
pub type ForwardFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<u8>, ServerError>> + Send + 'a>>;

/// Reaching other members on their peer URL.
pub trait Forwarding: Send + Sync {
    /// Hands an encoded `internal::Request` to the leader at `url` and returns its encoded
    /// `internal::Response`.
    fn forward<'a>(
        &'a self,
        url: &'a str,
        cluster_id: u64,
        from: NodeId,
        request: Vec<u8>,
    ) -> ForwardFuture<'a>;

    /// A (lazily connecting) channel to the member at `url`, for the calls that are forwarded
    /// whole (lease keep-alives, the admin join).
    fn channel(&self, url: &str) -> Result<Channel, ServerError>;

    /// A (lazily connecting) channel to another member's *client* URL, for the member's own
    /// calls there (HashKV of the corruption check). It differs from [`channel`](Self::channel)
    /// only in whom it trusts: the client port's certificate is signed by the CA of
    /// `--trusted-ca-file`.
    fn client_channel(&self, url: &str) -> Result<Channel, ServerError>;
}
