//! The gateway's state, shared by every connection: what it serves (the snapshot, swapped
//! whole on reload), where it forwards (the upstreams), how (the settings), and what it counts.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::docs::DocsCache;
use super::reflection::ReflectionCache;
use super::settings::Settings;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::trace::Tracing;
use crate::upstream::Upstream;

/// A snapshot and what is built from it on first use, replaced with it on reload: the
/// documentation and the reflection service. The snapshot itself stays plain data.
#[derive(Debug)]
pub(super) struct Current {
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) docs: DocsCache,
    pub(super) reflection: ReflectionCache,
}

impl Current {
    fn new(snapshot: Snapshot) -> Current {
        Current {
            snapshot: Arc::new(snapshot),
            docs: DocsCache::default(),
            reflection: ReflectionCache::default(),
        }
    }
}

/// The gateway: what it serves (swapped whole on reload) and where it forwards.
pub struct Gateway {
    pub(super) metrics: Metrics,
    pub(super) admission: Arc<tokio::sync::Semaphore>,
    current: ArcSwap<Current>,
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) settings: Settings,
    /// Set on shutdown: open WebSocket sessions close (each holds a receiver until it ends).
    pub(super) sessions_closing: tokio::sync::watch::Sender<bool>,
    /// Exports traces when `--otlp-endpoint` is set; `None` costs the request path nothing.
    pub(super) tracing: Option<Tracing>,
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
        Gateway::traced(snapshot, upstreams, settings, Metrics::new(), None)
    }

    /// A gateway counting into `metrics` and exporting traces with `tracing`, when set (whose
    /// queue counts its dropped spans into `metrics`).
    pub fn traced(
        snapshot: Snapshot,
        upstreams: Vec<Arc<Upstream>>,
        settings: Settings,
        metrics: Metrics,
        tracing: Option<Tracing>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            metrics,
            admission: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_requests.max(1),
            )),
            current: ArcSwap::from_pointee(Current::new(snapshot)),
            upstreams,
            settings,
            sessions_closing: tokio::sync::watch::Sender::new(false),
            tracing,
        })
    }

    /// The snapshot requests are served from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load().snapshot.clone()
    }

    /// The snapshot with what is served from it, built on first use.
    pub(super) fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests in flight finish on the one they started with.
    pub fn swap(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(Current::new(snapshot)));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The tracer, when the gateway exports traces.
    pub fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The upstream at `index` (as a route plan or [`Snapshot::upstream_of_service`] gives it).
    pub fn upstream(&self, index: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(index)
    }
}
