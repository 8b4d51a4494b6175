//! The accepting side of both ports: TCP connections, TLS handshakes, and what each
//! connection tells the services about its caller.
//!
//! [`incoming`] owns the listener. Each accepted socket gets TCP_NODELAY (a gRPC answer is
//! several small frames, and with Nagle the last one waits for the client's delayed ACK) and,
//! on a TLS port, a handshake of its own task, bounded by [`HANDSHAKE_TIMEOUT`]: a client that
//! stalls mid-handshake must not hold up the accept loop. Finished connections are handed to
//! tonic through a channel. The handshake takes the port's configuration as it is at that
//! moment, which is how a reloaded certificate reaches new connections.
//!
//! Every connection carries a [`ConnInfo`]: which port it came in on, that port's policy, and
//! the client certificate rustls verified, if any. tonic puts it into each request's
//! extensions (`Connected`), where the admin check (`auth::gate`) reads it. For the token-based
//! identity, [`stamp_cert_user`] turns a verified certificate's CN into request metadata (under
//! `--client-cert-auth` only), after removing any such metadata the client sent itself.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::cert::ClientCert;
use super::reload::Reloadable;
use crate::log_limit::LogLimit;

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed over but not yet taken by the server.
const BACKLOG: usize = 256;
/// At most one line about failed handshakes per port per this interval.
const HANDSHAKE_LOG_EVERY: Duration = Duration::from_secs(30);

/// The gRPC metadata key carrying the CN of a verified client certificate under
/// `--client-cert-auth`. Set only by [`stamp_cert_user`], which first removes whatever a
/// client sent under this name.
pub const CERT_USER_METADATA: &str = "flotilla-verified-cert-cn";

/// What the client port does with client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPortPolicy {
    /// Client certificates are asked for and verified against `--trusted-ca-file` (TLS on,
    /// trusted CA set): a connection that presented one proves it holds a key the CA vouched
    /// for.
    pub verifies_client_certs: bool,
    /// `--client-cert-auth`: every client has a certificate, and its CN is its auth user.
    pub cert_names_user: bool,
}

/// Which port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The client port, with its policy.
    Client(ClientPortPolicy),
    /// The peer port: its callers are members (authenticated by mutual TLS when peer TLS is
    /// configured).
    Peer,
}

/// What tonic attaches to every request of a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The socket's addresses.
    pub tcp: TcpConnectInfo,
    /// The port and its policy.
    pub port: Port,
    /// The client certificate rustls verified during the handshake.
    pub client_cert: Option<Arc<ClientCert>>,
}

/// How a port accepts: plain TCP, or TLS with a reloadable configuration.
#[derive(Clone)]
pub struct Acceptor {
    port: Port,
    tls: Option<Arc<Reloadable<rustls::ServerConfig>>>,
}

impl Acceptor {
    /// An acceptor for `port`.
    pub fn new(port: Port, tls: Option<Arc<Reloadable<rustls::ServerConfig>>>) -> Self {
        Acceptor { port, tls }
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The configuration the next handshake would use.
    pub fn current(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|t| t.load())
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, ready for the HTTP server.
pub struct Accepted {
    io: Io,
    info: ConnInfo,
}

impl Connected for Accepted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts on `listener` until the returned stream is dropped (the server stopped), handing
/// over connections that completed their handshake.
pub fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Accepted>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(accept_loop(listener, acceptor, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Acceptor,
    tx: mpsc::Sender<io::Result<Accepted>>,
) {
    let log = Arc::new(std::sync::Mutex::new(LogLimit::new(HANDSHAKE_LOG_EVERY)));
    loop {
        let accepted = tokio::select! {
            // The server dropped the stream: stop, and release the port with the listener.
            () = tx.closed() => return,
            r = listener.accept() => r,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: transient; back off a little rather
                // than spin, and keep the listener.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tcp_info = tcp.connect_info();
        let Some(config) = acceptor.tls.as_ref().map(|t| t.load()) else {
            let conn = Accepted {
                io: Io::Plain(tcp),
                info: ConnInfo {
                    tcp: tcp_info,
                    port: acceptor.port,
                    client_cert: None,
                },
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
            continue;
        };
        let tx = tx.clone();
        let port = acceptor.port;
        let log = log.clone();
        tokio::spawn(async move {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    log_refused(&log, port, &tcp_info, &e.to_string());
                    return;
                }
                Err(_) => {
                    log_refused(&log, port, &tcp_info, "handshake timed out");
                    return;
                }
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::new(ClientCert::from_der(leaf.as_ref())));
            let conn = Accepted {
                io: Io::Tls(Box::new(tls)),
                info: ConnInfo {
                    tcp: tcp_info,
                    port,
                    client_cert,
                },
            };
            let _ = tx.send(Ok(conn)).await;
        });
    }
}

/// A refused handshake (a peer with another CA's certificate, a plain-text client on a TLS
/// port) says who and why — rate-limited, since a misconfigured peer retries all the time.
fn log_refused(
    log: &std::sync::Mutex<LogLimit<()>>,
    port: Port,
    tcp: &TcpConnectInfo,
    error: &str,
) {
    let Ok(mut log) = log.lock() else {
        return;
    };
    if let Some(held) = log.allow((), Instant::now()) {
        let port = match port {
            Port::Client(_) => "client",
            Port::Peer => "peer",
        };
        tracing::warn!(port, remote = ?tcp.remote_addr, error, refusals_not_logged = held,
            "TLS handshake refused");
    }
}

/// Removes any client-sent [`CERT_USER_METADATA`] and, on a client port under
/// `--client-cert-auth`, sets it to the CN of the certificate the handshake verified. Applied
/// as a layer to both servers, so the metadata reaching a service is never the client's word.
pub fn stamp_cert_user<B>(mut req: http::Request<B>) -> http::Request<B> {
    req.headers_mut().remove(CERT_USER_METADATA);
    let cn = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| match c.port {
            Port::Client(p) if p.cert_names_user => c
                .client_cert
                .as_ref()
                .and_then(|cert| cert.common_name.clone()),
            _ => None,
        });
    if let Some(v) = cn.and_then(|cn| http::HeaderValue::from_str(&cn).ok()) {
        req.headers_mut().insert(CERT_USER_METADATA, v);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(port: Port, cn: Option<&str>) -> ConnInfo {
        ConnInfo {
            tcp: TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
            port,
            client_cert: cn.map(|cn| {
                Arc::new(ClientCert {
                    common_name: Some(cn.to_string()),
                    serial: Vec::new(),
                })
            }),
        }
    }

    fn stamped(info: Option<ConnInfo>, sent: Option<&str>) -> Option<String> {
        let mut req = http::Request::new(());
        if let Some(s) = sent {
            req.headers_mut().insert(
                CERT_USER_METADATA,
                http::HeaderValue::from_str(s).expect("value"),
            );
        }
        if let Some(i) = info {
            req.extensions_mut().insert(i);
        }
        stamp_cert_user(req)
            .headers()
            .get(CERT_USER_METADATA)
            .map(|v| v.to_str().expect("ascii").to_string())
    }

    #[test]
    fn only_a_verified_certificate_under_client_cert_auth_names_the_user() {
        let user_port = Port::Client(ClientPortPolicy {
            verifies_client_certs: true,
            cert_names_user: true,
        });
        let optional = Port::Client(ClientPortPolicy {
            verifies_client_certs: true,
            cert_names_user: false,
        });
        assert_eq!(
            stamped(Some(info(user_port, Some("alice"))), None).as_deref(),
            Some("alice")
        );
        assert_eq!(
            stamped(Some(info(user_port, Some("alice"))), Some("root")).as_deref(),
            Some("alice"),
            "the client's own value is replaced"
        );
        assert_eq!(
            stamped(Some(info(user_port, None)), Some("root")),
            None,
            "and removed"
        );
        assert_eq!(stamped(Some(info(optional, Some("alice"))), None), None);
        assert_eq!(
            stamped(Some(info(Port::Peer, Some("m1"))), Some("root")),
            None
        );
        assert_eq!(stamped(None, Some("root")), None);
    }
}
