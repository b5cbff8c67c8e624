//! Prometheus metrics: requests by route template, method, HTTP status and gRPC code; latency
//! histograms; requests in flight; upstream connections by state; reloads by outcome; bytes
//! in and out. Rendered in the Prometheus text format at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`POST /skvps/locdata`), the gRPC method for native calls, or
    /// `unmatched`.
    pub route: Arc<str>,
    /// `rest`, `grpc`, `grpc-web` or `admin`.
    pub protocol: &'static str,
    pub status: u16,
    pub grpc_code: &'static str,
    /// Whose fault an error was (`client`, `gateway`, `upstream`); empty for success.
    pub error_source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<str>,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub upstream: Arc<str>,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric the gateway keeps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    connections: Family<ConnectionLabels, Gauge<i64, AtomicI64>>,
}

type AtomicI64 = std::sync::atomic::AtomicI64;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("protogate");
        let requests = Family::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let in_flight = Gauge::default();
        let reloads = Family::default();
        let bytes = Family::default();
        let connections = Family::default();
        registry.register("requests", "Requests answered", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a request (to the response headers for streams)",
            latency.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register("reloads", "Descriptor reloads by outcome", reloads.clone());
        registry.register(
            "bytes",
            "Body bytes received from and sent to clients",
            bytes.clone(),
        );
        registry.register(
            "upstream_connections",
            "HTTP/2 connections to upstreams by state",
            connections.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            reloads,
            bytes,
            connections,
        }
    }

    /// Marks a request as started; the guard marks it finished when dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Counts a finished request and its latency.
    pub fn finish(&self, labels: RequestLabels, seconds: f64) {
        let route = RouteLabels {
            route: labels.route.clone(),
            protocol: labels.protocol,
        };
        self.latency.get_or_create(&route).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    pub fn bytes_in(&self, n: u64) {
        self.bytes
            .get_or_create(&DirectionLabels { direction: "in" })
            .inc_by(n);
    }

    pub fn bytes_out(&self, n: u64) {
        self.bytes
            .get_or_create(&DirectionLabels { direction: "out" })
            .inc_by(n);
    }

    pub fn reload(&self, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Sets the number of upstream connections in `state` (`connected`, `connecting`, `failed`).
    pub fn connections(&self, upstream: &Arc<str>, state: &'static str, n: i64) {
        let labels = ConnectionLabels {
            upstream: upstream.clone(),
            state,
        };
        self.connections.get_or_create(&labels).set(n);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when the request is done.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels() {
        let m = Metrics::new();
        let route: Arc<str> = Arc::from("POST /skvps/locdata");
        m.finish(
            RequestLabels {
                route: route.clone(),
                protocol: "rest",
                status: 200,
                grpc_code: "OK",
                error_source: "",
            },
            0.002,
        );
        m.bytes_in(10);
        m.reload(false);
        m.connections(&Arc::from("http://b:1"), "connected", 2);
        let _guard = m.start();
        let text = m.render();
        for needle in [
            r#"protogate_requests_total{route="POST /skvps/locdata",protocol="rest",status="200",grpc_code="OK",error_source=""} 1"#,
            r#"protogate_request_duration_seconds_count{route="POST /skvps/locdata",protocol="rest"} 1"#,
            "protogate_requests_in_flight 1",
            r#"protogate_reloads_total{outcome="failure"} 1"#,
            r#"protogate_bytes_total{direction="in"} 10"#,
            r#"protogate_upstream_connections{upstream="http://b:1",state="connected"} 2"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
