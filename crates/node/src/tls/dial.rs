//! The dialling side: tonic channels to other members, over TLS when the URL is `https://`.
//!
//! A [`Dialer`] turns an [`Endpoint`] into a channel. `http://` URLs connect as before;
//! `https://` ones go through [`TlsConnector`], a tower connector that opens the TCP socket
//! (TCP_NODELAY, as the plain path), runs the rustls handshake — presenting this member's
//! certificate and verifying the server against the configured CA, for the URL's host name or
//! IP address — and hands the stream to hyper. The connector reads the current configuration
//! on every connection, so a reloaded certificate or CA is used by the next connection,
//! including a cached channel's reconnect. The scheme decides, as in etcd: a member with peer
//! TLS dials `https://` peer URLs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::TlsError;
use super::reload::Reloadable;

/// How this member dials one kind of URL.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<Arc<Reloadable<rustls::ClientConfig>>>,
}

impl Dialer {
    /// Plain TCP only: an `https://` URL is refused.
    pub fn plain() -> Self {
        Dialer { tls: None }
    }

    /// TLS for `https://` URLs with this (reloadable) configuration.
    pub fn tls(config: Arc<Reloadable<rustls::ClientConfig>>) -> Self {
        Dialer { tls: Some(config) }
    }

    /// A dialer with a fixed configuration (clients such as `flotilla-load`).
    pub fn with_config(config: rustls::ClientConfig) -> Self {
        Dialer::tls(Arc::new(Reloadable::new(config)))
    }

    /// A client tool's dialer from etcdctl-style files: plain without a CA, else TLS verifying
    /// with `cacert` and presenting `cert`/`key` when given.
    pub fn from_files(
        cacert: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Self, TlsError> {
        let Some(ca) = cacert else {
            return Ok(Dialer::plain());
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TlsError::Dial(format!("reading {}: {e}", p.display())))
        };
        let ca = read(ca)?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let config = super::config::ClientSpec {
            ca: &ca,
            identity: identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        }
        .build()?;
        Ok(Dialer::with_config(config))
    }

    /// Whether `https://` URLs can be dialled.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn connector(&self, ep: &Endpoint) -> Result<Option<TlsConnector>, TlsError> {
        if ep.uri().scheme_str() != Some("https") {
            return Ok(None);
        }
        match &self.tls {
            Some(config) => Ok(Some(TlsConnector {
                config: config.clone(),
            })),
            None => Err(TlsError::Dial(format!(
                "{} is https://, but no CA to verify it is configured (--trusted-ca-file / \
                 --peer-trusted-ca-file)",
                ep.uri()
            ))),
        }
    }

    /// A channel that connects on first use (and reconnects with the configuration current
    /// then).
    pub fn connect_lazy(&self, ep: Endpoint) -> Result<Channel, TlsError> {
        Ok(match self.connector(&ep)? {
            Some(c) => ep.connect_with_connector_lazy(c),
            None => ep.connect_lazy(),
        })
    }

    /// A connected channel.
    pub async fn connect(&self, ep: Endpoint) -> Result<Channel, DialError> {
        match self.connector(&ep)? {
            Some(c) => ep.connect_with_connector(c).await,
            None => ep.connect().await,
        }
        .map_err(DialError::Connect)
    }
}

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The URL needs TLS this dialer lacks.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connecting failed (TCP, handshake, HTTP/2). Shown with its causes: tonic's own text
    /// is only "transport error", and a refused certificate is in the chain.
    #[error("{}", chain(.0))]
    Connect(tonic::transport::Error),
}

/// An error and its sources, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Opens TCP + TLS to the URI's host with the configuration current at each call.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<Reloadable<rustls::ClientConfig>>,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let config = self.config.load();
        Box::pin(async move {
            let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {m}"));
            let host = uri.host().ok_or_else(|| bad("no host"))?;
            // An IPv6 literal comes bracketed in the URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
