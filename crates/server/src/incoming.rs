//! The connections a node serves (docs/security.md "Mutual TLS").
//!
//! Every accepted connection has Nagle's algorithm off: small answers and Raft messages must
//! not wait for the peer's delayed ACK (40 ms). On a node with a TLS identity the handshake is
//! made here rather than inside tonic, so that a refusal is never silent:
//!
//! - a handshake that fails (no client certificate, one of another CA, a client that gives up)
//!   is logged as a warning naming the peer and the reason;
//! - a client that speaks plaintext to a TLS port is not cut off: its connection is served,
//!   marked [`Security::RefusedPlaintext`], and [`crate::authorization`] answers each of its
//!   requests `Unauthenticated` with what to do, so the client's error says why.
//!
//! At most [`HANDSHAKES_MAX`] handshakes run at once (a connection past it is dropped, with a
//! warning), each within [`HANDSHAKE_TIMEOUT`]. What the peer's certificate says ([`Peer`]) is
//! kept in the connection's [`ConnectionInfo`], which tonic puts in every request's
//! extensions, for [`crate::authorization`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mosaic_client::{Role, Tls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// Handshakes in progress at once, at most.
pub const HANDSHAKES_MAX: usize = 256;
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed to the server but not yet taken by it, at most.
const ACCEPTED_QUEUE: usize = 64;
/// The pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the node knows of a connection; every request on it carries it in its extensions.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// How the connection is secured.
    pub security: Security,
}

/// How a connection is secured.
#[derive(Clone, Debug)]
pub enum Security {
    /// A node without TLS: plaintext, as configured.
    Plaintext,
    /// A node with TLS reached in plaintext: every request is refused.
    RefusedPlaintext,
    /// Mutual TLS: the peer presented a certificate signed by the cluster's CA.
    Tls {
        /// What the peer's certificate says.
        peer: Arc<Peer>,
    },
}

/// Who is at the other end of a mutual TLS connection: what its certificate (signed by the
/// cluster's CA) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The certificate's common name (CN); empty without one.
    pub name: String,
    /// The certificate's organizational unit (OU) as written; empty without one.
    pub unit: String,
    /// The role the OU names, if it names exactly one.
    pub role: Option<Role>,
}

impl Peer {
    /// What `certificate` (DER) says. A certificate rustls accepted parses; one that does not
    /// is a peer without a name or role, allowed nothing.
    #[must_use]
    pub fn of_certificate(certificate: &[u8]) -> Self {
        let Ok((_, certificate)) = X509Certificate::from_der(certificate) else {
            return Self { name: String::new(), unit: String::new(), role: None };
        };
        let subject = certificate.subject();
        let name = subject.iter_common_name().find_map(|name| name.as_str().ok());
        let units: Vec<&str> =
            subject.iter_organizational_unit().filter_map(|unit| unit.as_str().ok()).collect();
        let mut roles = units.iter().filter_map(|unit| Role::from_name(unit));
        let first = roles.next();
        let role = first.filter(|first| roles.all(|role| role == *first));
        Self { name: name.unwrap_or_default().to_string(), unit: units.join(","), role }
    }
}

/// One accepted connection.
pub struct Connection {
    stream: Stream,
    info: ConnectionInfo,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The acceptor of a node with identity `tls`: it presents the node's certificate and accepts
/// only clients that present one signed by the cluster's CA (TLS 1.2 and 1.3, HTTP/2).
///
/// # Errors
/// Why rustls refuses the identity (a key that does not match the certificate, say).
pub fn acceptor(tls: &Tls) -> Result<TlsAcceptor, String> {
    // The provider tonic's client side (`tls-ring`) uses too. rustls 0.23.48 deprecates it
    // for its lack of post-quantum key exchange, which aws-lc-rs has, at the price of a
    // CMake-built C library (docs/security.md).
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in tls.ca_certificates() {
        roots.add(certificate.clone()).map_err(|error| format!("the CA certificate: {error}"))?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|error| format!("the CA certificate: {error}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.certificate_chain().to_vec(), tls.private_key())
        .map_err(|error| format!("the certificate and key: {error}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connections of `listener`, through a TLS handshake with `tls` (see the module
/// documentation). The listener is closed once the server stops taking connections.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> ReceiverStream<io::Result<Connection>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, tls, sender));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    sender: mpsc::Sender<io::Result<Connection>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender.closed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%remote, %error, "cannot turn Nagle's algorithm off");
        }
        let Some(acceptor) = &tls else {
            let info = ConnectionInfo { remote, security: Security::Plaintext };
            if sender.send(Ok(Connection { stream: Stream::Plain(stream), info })).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            tracing::warn!(%remote, limit = HANDSHAKES_MAX,
                "too many TLS handshakes at once; connection dropped");
            continue;
        };
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, secure(acceptor, stream, remote));
            let connection = handshake.await.unwrap_or_else(|_| {
                tracing::warn!(%remote, timeout = ?HANDSHAKE_TIMEOUT,
                    "refused a connection: no TLS handshake in time");
                None
            });
            drop(permit);
            if let Some(connection) = connection {
                let _ = sender.send(Ok(connection)).await;
            }
        });
    }
}

/// The TLS handshake of `stream`; a plaintext connection is kept, marked refused.
async fn secure(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<Connection> {
    let mut first = [0_u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        // Closed before sending anything, or broken.
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        tracing::warn!(%remote,
            "refused a plaintext connection: this node requires mutual TLS; its requests are \
             answered Unauthenticated");
        let info = ConnectionInfo { remote, security: Security::RefusedPlaintext };
        return Some(Connection { stream: Stream::Plain(stream), info });
    }
    match acceptor.accept(stream).await {
        Ok(stream) => {
            let certificates = stream.get_ref().1.peer_certificates().unwrap_or_default();
            let own = certificates.first().map_or(&[][..], |certificate| certificate.as_ref());
            let peer = Arc::new(Peer::of_certificate(own));
            let info = ConnectionInfo { remote, security: Security::Tls { peer } };
            Some(Connection { stream: Stream::Tls(Box::new(stream)), info })
        }
        Err(error) => {
            tracing::warn!(%remote, %error, "refused a TLS connection");
            None
        }
    }
}
