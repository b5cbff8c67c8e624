//! The admin endpoints: `/healthz` (the process is alive), `/readyz` (descriptors loaded and
//! every upstream reachable, by gRPC health checking where the upstream offers it) and
//! `/metrics` (OpenMetrics when the scraper asks for it, the Prometheus text format
//! otherwise; the process figures read from `/proc` here, at scrape time). On the serving port
//! unless `--admin-listen` moves them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::body::full;
use super::body::ResponseBody;
use super::gateway::Gateway;
use super::tags::RouteTag;
use crate::metrics::{process, Format, ProcessStats};

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
    pub(super) async fn admin(
        &self,
        path: AdminPath,
        headers: &HeaderMap,
    ) -> Response<ResponseBody> {
        let mut response = match path {
            AdminPath::Healthz => text(StatusCode::OK, "ok\n".into()),
            AdminPath::Readyz => self.readiness().await,
            AdminPath::Metrics => self.exposition(headers),
        };
        response
            .extensions_mut()
            .insert(RouteTag(Arc::from(path.path())));
        response
    }

    /// The metrics, in the format the scraper's `Accept` asks for.
    fn exposition(&self, headers: &HeaderMap) -> Response<ResponseBody> {
        self.record_connections();
        let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
        let format = Format::negotiate(accept);
        let body = self.metrics.render(format, process_stats().as_ref());
        let mut response = text(StatusCode::OK, body);
        let ct = HeaderValue::from_static(format.content_type());
        response.headers_mut().insert(CONTENT_TYPE, ct);
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

/// The process figures from `/proc`, read now; `None` where they cannot be read.
#[cfg(target_os = "linux")]
fn process_stats() -> Option<ProcessStats> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let units = process::Units {
        ticks_per_second: rustix::param::clock_ticks_per_second(),
        page_size: rustix::param::page_size() as u64,
    };
    process::parse(
        &read("/proc/self/stat")?,
        &read("/proc/self/statm")?,
        &read("/proc/stat")?,
        open_fds,
        units,
    )
}

#[cfg(not(target_os = "linux"))]
fn process_stats() -> Option<ProcessStats> {
    None
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
                                Some(path) => gateway.admin(path, request.headers()).await,
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
