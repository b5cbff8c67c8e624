//! The gateway's state, shared by every connection: what it serves (the snapshot, swapped
//! whole on reload), where it forwards (the upstreams), how (the settings), and what it counts.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderName;

use super::cors::CorsPolicy;
use super::docs::DocsSettings;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::transcode::JsonOptions;
use crate::upstream::Upstream;

/// Request handling settings that do not change with the descriptors.
#[derive(Debug, Clone)]
pub struct Settings {
    pub json: JsonOptions,
    /// Largest REST request body accepted (413 beyond).
    pub max_request_bytes: usize,
    /// Time a client gets to send a whole REST request body (408 beyond).
    pub body_timeout: Duration,
    /// Largest upstream response message accepted.
    pub max_response_bytes: usize,
    /// A call with no message either way for this long is cancelled.
    pub stream_idle_timeout: Duration,
    /// A connection owed response data that its client takes none of for this long is closed.
    pub write_timeout: Duration,
    /// Requests (HTTP/2 streams) one connection may have in progress at once.
    pub max_concurrent_streams: u32,
    /// Time a new connection gets to show which protocol it speaks (HTTP/1.1 or HTTP/2).
    pub detection_timeout: Duration,
    /// Time an HTTP/1.1 client gets to send a request's headers, the first or the next.
    pub header_read_timeout: Duration,
    /// Deadline for upstream calls when the client sets a shorter one or none.
    pub timeout: Option<Duration>,
    /// Request headers forwarded to the upstream unchanged.
    pub forward_headers: Vec<HeaderName>,
    /// Answer `/healthz`, `/readyz` and `/metrics` on the serving port.
    pub admin_on_main_port: bool,
    /// Requests served at once; more are refused with 503 and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Deadlines per fully-qualified method or service, before `timeout`.
    pub method_timeouts: std::collections::HashMap<String, Duration>,
    /// Largest request header block, in bytes.
    pub max_header_bytes: usize,
    /// Browser access (CORS) for gRPC-Web and REST; `None` sends no CORS headers at all.
    pub cors: Option<CorsPolicy>,
    /// Where `/openapi.json` and `/docs` are served (on the serving port).
    pub docs: DocsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            json: JsonOptions::default(),
            max_request_bytes: 8 << 20,
            body_timeout: Duration::from_secs(30),
            max_response_bytes: 8 << 20,
            stream_idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            detection_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            timeout: None,
            forward_headers: Vec::new(),
            admin_on_main_port: true,
            max_concurrent_requests: 4096,
            method_timeouts: Default::default(),
            max_header_bytes: 64 << 10,
            cors: None,
            docs: DocsSettings::default(),
        }
    }
}

/// The gateway: what it serves (swapped whole on reload) and where it forwards.
pub struct Gateway {
    pub(super) metrics: Metrics,
    pub(super) admission: Arc<tokio::sync::Semaphore>,
    snapshot: ArcSwap<Snapshot>,
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) settings: Settings,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.upstreams)
            .finish()
    }
}

impl Gateway {
    pub fn new(
        snapshot: Snapshot,
        upstreams: Vec<Arc<Upstream>>,
        settings: Settings,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            metrics: Metrics::new(),
            admission: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_requests.max(1),
            )),
            snapshot: ArcSwap::from_pointee(snapshot),
            upstreams,
            settings,
        })
    }

    /// The snapshot requests are served from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot; requests in flight finish on the one they started with.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The upstream at `index` (as a route plan or [`Snapshot::upstream_of_service`] gives it).
    pub fn upstream(&self, index: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(index)
    }
}
