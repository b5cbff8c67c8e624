//! Opening one HTTP/2 connection to an endpoint: TCP, TLS when the upstream is `https://`,
//! then the HTTP/2 handshake, all within the connect timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::tls::TlsConnect;
use super::{error_chain, Unreachable, UpstreamBody};

/// The task that drives one connection; it ends when the connection closes.
pub(super) type Driver = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// How an upstream's connections are opened.
pub(super) struct Connector {
    label: Arc<str>,
    tls: Option<TlsConnect>,
    timeout: Duration,
}

impl Connector {
    pub(super) fn new(label: Arc<str>, tls: Option<TlsConnect>, timeout: Duration) -> Connector {
        Connector {
            label,
            tls,
            timeout,
        }
    }

    /// The upstream's URL, for logs.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// A new HTTP/2 connection to `addr`: its request handle and the task to spawn.
    pub(super) async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<(SendRequest<UpstreamBody>, Driver), Unreachable> {
        tokio::time::timeout(self.timeout, self.open(addr))
            .await
            .map_err(|_| {
                let detail = format!(
                    "{addr} did not accept a connection within {:?}",
                    self.timeout
                );
                Unreachable::new("connecting timed out", detail)
            })?
    }

    async fn open(
        &self,
        addr: SocketAddr,
    ) -> Result<(SendRequest<UpstreamBody>, Driver), Unreachable> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            Unreachable::new("cannot connect", format!("cannot connect to {addr}: {e}"))
        })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some(tls) => {
                let stream = tls.handshake(tcp).await.map_err(|e| {
                    let detail = format!("TLS handshake with {addr} failed: {}", error_chain(&e));
                    Unreachable::new(tls_reason(&e), detail)
                })?;
                handshake(stream).await
            }
        }
    }
}

/// What a client is told of a failed TLS handshake: the kind of failure, never the names or
/// addresses the certificate and the connection carry (those go to the log).
fn tls_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "TLS handshake failed";
    };
    match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS handshake failed: the upstream's certificate is not trusted"
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "TLS handshake failed: the upstream's certificate is not valid for its name",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "TLS handshake failed: the upstream's certificate has expired",
        Error::InvalidCertificate(_) => {
            "TLS handshake failed: the upstream's certificate is invalid"
        }
        Error::AlertReceived(_) => "TLS handshake failed: the upstream refused it",
        _ => "TLS handshake failed",
    }
}

/// The HTTP/2 client handshake with the settings every upstream connection uses: an adaptive
/// flow-control window (large messages such as camera frames), and keep-alive pings that
/// find a dead peer within 40 s while requests run. No pings on idle connections: gRPC-Go
/// servers answer those with GOAWAY "too_many_pings" under their default policy.
async fn handshake<I>(io: I) -> Result<(SendRequest<UpstreamBody>, Driver), Unreachable>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| {
            let detail = format!("HTTP/2 handshake failed: {}", error_chain(&e));
            Unreachable::new("HTTP/2 handshake failed", detail)
        })?;
    Ok((sender, Box::pin(connection)))
}
