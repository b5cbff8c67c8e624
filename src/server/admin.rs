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
use super::tags::RouteTag;
use super::{Gateway, ResponseBody};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Gateway {
    /// The admin answer to `request`, if it is an admin request served on this port.
    pub(super) async fn admin_response<B>(
        &self,
        request: &Request<B>,
    ) -> Option<Response<ResponseBody>> {
        if let Some(docs) = self.docs_response(request) {
            return Some(docs);
        }
        if !self.settings.admin_on_main_port {
            return None;
        }
        self.admin(request).await
    }

    async fn admin<B>(&self, request: &Request<B>) -> Option<Response<ResponseBody>> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let path = request.uri().path();
        let response = match path {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => self.readiness().await,
            "/metrics" => {
                self.record_connections();
                let mut r = text(StatusCode::OK, self.metrics.render());
                let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
                r.headers_mut().insert(CONTENT_TYPE, ct);
                r
            }
            _ => return None,
        };
        let mut response = response;
        response.extensions_mut().insert(RouteTag(Arc::from(path)));
        Some(response)
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
                            let response = gateway.admin(&request).await;
                            Ok::<_, std::convert::Infallible>(response.unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n".into())))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
}
