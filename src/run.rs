//! Running a gateway as the process: bind, say where everything is, serve until SIGTERM or
//! SIGINT, then drain. Used by `serve` and `demo`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::ServingArgs;
use crate::server::{self, Gateway, Serving, Settings};
use crate::workers::{self, Workers};

/// The least time the spans still queued at exit get to be exported, even when the drain took
/// the whole grace period (a Kubernetes pod's termination period has a few seconds more).
const FLUSH_AT_LEAST: Duration = Duration::from_secs(1);

/// Binds `listen` and serves on the serving threads, over TLS when the arguments say so,
/// until SIGTERM or SIGINT; then the spans still queued for export get what is left of the
/// grace period.
pub async fn until_signal(
    gateway: Arc<Gateway>,
    listen: SocketAddr,
    args: &ServingArgs,
) -> anyhow::Result<()> {
    let tls = args.server_tls()?;
    let threads = args
        .workers
        .map_or_else(workers::default_count, usize::from);
    let workers = Workers::start(threads)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let routes = gateway.snapshot().routes.len();
    let tls_on = tls.is_some();
    let address = listener.local_addr()?;
    tracing::info!(%address, routes, tls = tls_on, threads, "serving");
    log_endpoints(gateway.settings(), address, tls_on);
    let signalled = Arc::new(OnceLock::new());
    let signal = {
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            let _ = signalled.set(Instant::now());
        }
    };
    let serving = Serving {
        tls,
        workers: Some(workers),
    };
    let grace = args.shutdown_grace;
    server::serve_with(listener, gateway.clone(), serving, signal, grace).await;
    if let Some(tracing) = gateway.tracing() {
        let spent = signalled.get().map_or(Duration::ZERO, Instant::elapsed);
        tracing
            .flush(grace.saturating_sub(spent).max(FLUSH_AT_LEAST))
            .await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tells a person where to look: the docs page, the document and (on this port) the admin paths.
fn log_endpoints(settings: &Settings, address: SocketAddr, tls: bool) {
    let base = base_url(if tls { "https" } else { "http" }, address);
    let docs = &settings.docs;
    if let Some(path) = &docs.docs_path {
        tracing::info!(url = %format!("{base}{path}"), "API documentation page");
    }
    if let Some(path) = &docs.openapi_path {
        tracing::info!(url = %format!("{base}{path}"), "OpenAPI document");
    }
    if settings.admin_on_main_port {
        log_admin_endpoints(&base);
    }
}

/// `scheme://host:port` for a bound address; a wildcard address reads as `localhost`.
pub(crate) fn base_url(scheme: &str, address: SocketAddr) -> String {
    let host = match address.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", address.port())
}

/// The admin paths under `base` (the serving port, or `--admin-listen`).
pub(crate) fn log_admin_endpoints(base: &str) {
    tracing::info!(url = %format!("{base}/metrics"), "Prometheus metrics");
    tracing::info!(
        liveness = %format!("{base}/healthz"),
        readiness = %format!("{base}/readyz"),
        "health endpoints"
    );
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
