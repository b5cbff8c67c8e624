//! A small gRPC server for raw protobuf messages, built on tonic: the built-in VPS demo runs on
//! it, and so do the integration tests' backends. Unary handlers see the method path, the
//! request metadata and the message bytes, and answer with bytes or a `tonic::Status`;
//! streaming handlers (for every non-unary kind: on the wire they are all the same) see the
//! request stream and answer with a response stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::Status;

pub use crate::grpc::RawCodec;

/// One call as the backend sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `/package.Service/Method`.
    pub path: String,
    pub metadata: MetadataMap,
    pub message: Bytes,
}

/// A handler's answer: the response message and metadata to send with it.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub message: Bytes,
    pub metadata: MetadataMap,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// The function that answers every unary call.
pub type Handler = Arc<dyn Fn(Call) -> BoxFuture<Result<Reply, Status>> + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Status>> + Send + 'static,
{
    Arc::new(move |call| Box::pin(f(call)))
}

/// A streaming call as the backend sees it.
#[derive(Debug)]
pub struct StreamCall {
    pub path: String,
    pub metadata: MetadataMap,
    pub messages: tonic::Streaming<Bytes>,
}

/// A stream of response messages.
pub type MessageStream = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, Status>> + Send>>;
/// The function that answers streaming calls: initial metadata and the response stream.
pub type StreamHandler = Arc<
    dyn Fn(StreamCall) -> BoxFuture<Result<(MetadataMap, MessageStream), Status>> + Send + Sync,
>;

/// Wraps an async closure as a [`StreamHandler`].
pub fn stream_handler<F, Fut>(f: F) -> StreamHandler
where
    F: Fn(StreamCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(MetadataMap, MessageStream), Status>> + Send + 'static,
{
    Arc::new(move |call| Box::pin(f(call)))
}

/// What a backend serves: unary calls, and the streaming methods named by path.
#[derive(Clone)]
pub struct Handlers {
    pub unary: Handler,
    pub streaming: Option<(Vec<String>, StreamHandler)>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let streaming = self.streaming.as_ref().map(|(paths, _)| paths);
        f.debug_struct("Handlers")
            .field("streaming", &streaming)
            .finish_non_exhaustive()
    }
}

/// Serves `handler` (unary calls only) over h2c on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, handler: Handler, shutdown: impl Future<Output = ()>) {
    serve_all(
        listener,
        Handlers {
            unary: handler,
            streaming: None,
        },
        shutdown,
    )
    .await
}

/// Serves `handlers` over h2c on `listener` until `shutdown` completes; then every open
/// connection is closed at once, as when the server process goes away.
pub async fn serve_all(
    listener: TcpListener,
    handlers: Handlers,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let handlers = handlers.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| dispatch(handlers.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    connections.abort_all();
}

/// Serves `handlers` over HTTP/2 on TLS connections accepted from `listener` (`tls` decides
/// the certificate, ALPN and whether client certificates are required), until `shutdown`
/// completes; then every open connection is closed at once, as with [`serve_all`].
pub async fn serve_tls(
    listener: TcpListener,
    handlers: Handlers,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (acceptor, handlers) = (acceptor.clone(), handlers.clone());
                connections.spawn(async move {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(stream)) = tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                        serve_io(stream, handlers).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    connections.abort_all();
}

/// Serves `handlers` over HTTP/2 on one already accepted connection (plain or TLS) until
/// the client closes it.
pub async fn serve_io<I>(io: I, handlers: Handlers)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| dispatch(handlers.clone(), req));
    let _ = auto::Builder::new(TokioExecutor::new())
        .http2_only()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn dispatch(
    handlers: Handlers,
    request: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let path = request.uri().path().to_string();
    let request = request.map(tonic::body::Body::new);
    let mut grpc = tonic::server::Grpc::new(RawCodec);
    if let Some((paths, handler)) = &handlers.streaming {
        if paths.contains(&path) {
            let service = Streams {
                handler: handler.clone(),
                path,
            };
            return Ok(grpc.streaming(service, request).await);
        }
    }
    let service = Unary {
        handler: handlers.unary,
        path,
    };
    Ok(grpc.unary(service, request).await)
}

/// Adapts a [`StreamHandler`] to tonic's streaming service.
struct Streams {
    handler: StreamHandler,
    path: String,
}

impl tower_service::Service<tonic::Request<tonic::Streaming<Bytes>>> for Streams {
    type Response = tonic::Response<MessageStream>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Bytes>>) -> Self::Future {
        let (metadata, _, messages) = request.into_parts();
        let call = StreamCall {
            path: self.path.clone(),
            metadata,
            messages,
        };
        let future = (self.handler)(call);
        Box::pin(async move {
            let (metadata, stream) = future.await?;
            let mut response = tonic::Response::new(stream);
            *response.metadata_mut() = metadata;
            Ok(response)
        })
    }
}

/// Adapts a [`Handler`] to tonic's unary service.
struct Unary {
    handler: Handler,
    path: String,
}

impl tower_service::Service<tonic::Request<Bytes>> for Unary {
    type Response = tonic::Response<Bytes>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (metadata, _, message) = request.into_parts();
        let call = Call {
            path: self.path.clone(),
            metadata,
            message,
        };
        let future = (self.handler)(call);
        Box::pin(async move {
            let reply = future.await?;
            let mut response = tonic::Response::new(reply.message);
            *response.metadata_mut() = reply.metadata;
            Ok(response)
        })
    }
}
