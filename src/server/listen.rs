//! Accepting connections: HTTP/1.1 and h2c on one port (or HTTP/1.1 and h2 over TLS), until
//! shutdown, then draining.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::body::BoxError;
use super::connection::Connection;
use super::detect::{closes_if_undetected, Detecting};
use super::gateway::Gateway;
use super::settings::Settings;
use crate::workers::Workers;

/// Time a client gets to complete the TLS handshake: a slow or silent one must not hold a
/// task and a socket for long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How connections are served: over TLS or not, and on which threads.
#[derive(Debug, Default)]
pub struct Serving {
    /// TLS with this configuration (its certificate resolver decides which certificate each
    /// handshake gets, so a reloading one rotates without a restart). HTTP/1.1 or HTTP/2 is
    /// whatever the client speaks after the handshake, as ALPN agreed.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Each connection on one of these serving threads; without them, on the runtime the
    /// accept loop runs on.
    pub workers: Option<Arc<Workers>>,
}

/// Serves `gateway` on `listener` until `shutdown` completes, then waits up to `grace` for
/// open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    serve_with(listener, gateway, Serving::default(), shutdown, grace).await
}

/// Like [`serve`], over TLS with `config`.
pub async fn serve_tls(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let serving = Serving {
        tls: Some(config),
        workers: None,
    };
    serve_with(listener, gateway, serving, shutdown, grace).await
}

/// Like [`serve`], as `serving` says.
pub async fn serve_with(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = builder(gateway.settings());
    let tls = serving.tls.map(TlsAcceptor::from);
    let spawner = Spawner(serving.workers);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        None => serve_connection(&spawner, &builder, &graceful, &gateway, stream, peer),
                        Some(acceptor) => serve_tls_connection(&spawner, &builder, &graceful, &gateway, acceptor, stream, peer),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(grace_ms = grace.as_millis() as u64, "drain started");
    let started = std::time::Instant::now();
    // Upgraded connections (WebSocket sessions) are no longer hyper's to drain: they are
    // told to close, and waited for within the same grace.
    gateway.close_sessions();
    let drained = async { tokio::join!(graceful.shutdown(), gateway.sessions_closed()) };
    match tokio::time::timeout(grace, drained).await {
        Ok(_) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drain finished: every connection closed"
        ),
        Err(_) => tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "drain finished: connections still open after the grace period"
        ),
    }
}

/// Where a connection's task runs: on a serving thread when there are any, else on the
/// current runtime.
struct Spawner(Option<Arc<Workers>>);

impl Spawner {
    /// Runs `serve(stream)` in a task of its own. A socket moving to a serving thread is
    /// registered with that thread's event loop, so its readiness wakes that thread alone.
    fn spawn<F, Fut>(&self, stream: TcpStream, peer: SocketAddr, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(workers) = &self.0 else {
            drop(tokio::spawn(serve(stream)));
            return;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => return tracing::debug!(%peer, error = %e, "cannot hand the connection over"),
        };
        workers.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(%peer, error = %e, "cannot hand the connection over"),
            }
        });
    }
}

/// HTTP/1.1 and HTTP/2 with bounded headers, a header read timeout (slow clients), a bound on
/// the streams of one connection, and HTTP/2 rapid-reset protection (a cap on streams reset
/// before the gateway saw them).
fn builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let max_header_bytes = settings.max_header_bytes;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(max_header_bytes.max(8192))
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        .keep_alive_interval(Duration::from_secs(30))
        // RFC 8441: WebSockets over HTTP/2 streams (extended CONNECT).
        .enable_connect_protocol();
    builder
}

/// Completes the TLS handshake in the connection's own task (a slow client must not stall
/// the accept loop), then serves it like a plain one.
fn serve_tls_connection(
    spawner: &Spawner,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    gateway: &Arc<Gateway>,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let (builder, gateway, acceptor) = (builder.clone(), gateway.clone(), acceptor.clone());
    // Taken before the handshake: a shutdown waits for handshakes in progress (bounded by
    // their timeout), then closes those connections gracefully like the others.
    let watcher = graceful.watcher();
    spawner.spawn(stream, peer, move |stream| async move {
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        };
        serve_detected(&builder, watcher, &gateway, stream, peer).await;
    });
}

fn serve_connection(
    spawner: &Spawner,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    gateway: &Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let watcher = graceful.watcher();
    let (builder, gateway) = (builder.clone(), gateway.clone());
    spawner.spawn(stream, peer, move |stream| async move {
        serve_detected(&builder, watcher, &gateway, stream, peer).await;
    });
}

/// Serves `io` until it ends, closing it early if its first bytes do not show HTTP/1.1 or
/// HTTP/2 within the detection timeout, or if its client stops taking the response data it is
/// owed for `--write-timeout`.
async fn serve_detected<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    gateway: &Arc<Gateway>,
    io: I,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = gateway.settings();
    let max_unsent = settings.json.max_output_bytes.saturating_mul(2);
    let connection = Connection::new(peer, settings.max_concurrent_streams, max_unsent);
    let (io, known) = Detecting::new(io, connection.clone());
    let served = watcher.watch(http_connection(builder, gateway, io, &connection));
    tokio::select! {
        ended = closes_if_undetected(served, known, settings.detection_timeout) => match ended {
            None => tracing::debug!(%peer, "closed: no protocol shown in time"),
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            Some(Ok(())) => {}
        },
        () = connection.stalled(settings.write_timeout) => {
            tracing::debug!(%peer, "closed: the client took no response data in time");
        }
    }
}

/// HTTP/1.1 or HTTP/2 on `io`, every request going to the gateway with the peer's address.
fn http_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    gateway: &Arc<Gateway>,
    io: I,
    connection: &Arc<Connection>,
) -> impl GracefulConnection<Error = BoxError> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (gateway, connection) = (gateway.clone(), connection.clone());
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (gateway, connection) = (gateway.clone(), connection.clone());
        async move {
            let response = gateway.serve_request(request, &connection).await;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned()
}
