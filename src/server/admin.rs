//! The admin endpoints: `/healthz` (the process is alive), `/readyz` (descriptors loaded and
//! every upstream reachable, by gRPC health checking where the upstream offers it) and
//! `/metrics` (Prometheus text). On the serving port unless `--admin-listen` moves them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::body::full;
use super::body::ResponseBody;
use super::gateway::Gateway;
use super::tags::RouteTag;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminPath {
    Healthz,
    Readyz,
    Metrics,
}

impl AdminPath {
    /// The admin endpoint `method` and `path` ask for, if any.
    pub(crate) fn of(method: &Method, path: &str) -> Option<AdminPath> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return None;
        }
        match path {
            "/healthz" => Some(AdminPath::Healthz),
            "/readyz" => Some(AdminPath::Readyz),
            "/metrics" => Some(AdminPath::Metrics),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            AdminPath::Healthz => "/healthz",
            AdminPath::Readyz => "/readyz",
            AdminPath::Metrics => "/metrics",
        }
    }
}

impl Gateway {
    /// The answer of an admin endpoint.
    pub(super) async fn admin(&self, path: AdminPath) -> Response<ResponseBody> {
        let mut response = match path {
            AdminPath::Healthz => text(StatusCode::OK, "ok\n".into()),
            AdminPath::Readyz => self.readiness().await,
            AdminPath::Metrics => {
                self.record_connections();
                let mut r = text(StatusCode::OK, self.metrics.render());
                let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
                r.headers_mut().insert(CONTENT_TYPE, ct);
                r
            }
        };
        response
            .extensions_mut()
            .insert(RouteTag(Arc::from(path.path())));
        response
    }

    /// Copies the upstreams' connection counts into the metrics before they are rendered.
    fn record_connections(&self) {
        for upstream in &self.upstreams {
            for (state, n) in upstream.connection_counts().by_state() {
                self.metrics.connections(upstream.label(), state, n);
            }
        }
    }

    /// 200 when descriptors are loaded and every upstream answers; 503 naming what is not.
    async fn readiness(&self) -> Response<ResponseBody> {
        let probes = self.upstreams.iter().map(|u| async move {
            match tokio::time::timeout(PROBE_TIMEOUT, u.probe()).await {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(format!("upstream {}: {reason}", u.url())),
                Err(_) => Some(format!(
                    "upstream {}: no answer within {PROBE_TIMEOUT:?}",
                    u.url()
                )),
            }
        });
        let problems: Vec<String> = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        let routes = self.snapshot().routes.len();
        match problems.is_empty() {
            true => text(StatusCode::OK, format!("ready: {routes} routes\n")),
            false => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready\n{}\n", problems.join("\n")),
            ),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    let ct = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, ct);
    response
}

/// Serves only the admin endpoints on their own listener (`--admin-listen`).
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let gateway = gateway.clone();
                        async move {
                            let response = match AdminPath::of(request.method(), request.uri().path()) {
                                Some(path) => gateway.admin(path).await,
                                None => text(StatusCode::NOT_FOUND, "not found\n".into()),
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
}
