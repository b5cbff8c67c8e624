//! Prometheus metrics, named and labelled by the OpenTelemetry HTTP conventions so dashboards
//! built for other services read the gateway's too: requests and their duration by
//! `http_request_method`, `http_route`, `http_response_status_code`, `rpc_grpc_status_code`,
//! `protocol` and `error_source`; requests in flight; upstream connections by state; reloads
//! by outcome; bytes in and out; trace spans dropped by a full export queue; the standard
//! `process_*` metrics and `protogate_build_info`.
//!
//! Pure: the process figures are read from `/proc` by the caller at scrape time and handed to
//! [`Metrics::render`]; the exposition formats are in [`exposition`], the `/proc` parsers in
//! [`process`].

pub mod exposition;
pub mod process;

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use exposition::Format;
pub use process::ProcessStats;

/// Labels of a finished request, on both the counter and the duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The method, or `_OTHER` for one outside the standard set ([`method_label`]).
    pub http_request_method: &'static str,
    /// The route template (`/skvps/locdata`), the `/package.Service/Method` path for gRPC,
    /// gRPC-Web and Connect, the admin or docs path, or `unmatched`.
    pub http_route: Arc<str>,
    pub http_response_status_code: u16,
    /// The gRPC status code, as its number (0 for success).
    pub rpc_grpc_status_code: u16,
    /// The protocol's name (`rest`, `grpc`, `grpc-web`, `connect`, ...).
    pub protocol: &'static str,
    /// Whose fault an error was (`client`, `gateway`, `upstream`); empty for success.
    pub error_source: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Request duration buckets, in seconds: from a millisecond to the long calls and streams
/// (two minutes) a gateway also serves.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The method as the label names it: one of the standard methods, or `_OTHER`, so that
/// clients cannot grow the label set.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("_OTHER")
}

/// Every metric the gateway keeps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// The two series of each request label set already seen, found with one fast lookup
    /// instead of a SipHash lookup in each family; it holds the families' label sets, no more.
    series: RwLock<SeriesMap>,
    in_flight: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
    /// The two series of `protogate_bytes`, held so that counting needs no label lookup.
    bytes_in: Counter,
    bytes_out: Counter,
    connections: Family<ConnectionLabels, Gauge<i64, AtomicI64>>,
    spans_dropped: Counter,
}

type AtomicI64 = std::sync::atomic::AtomicI64;

type SeriesMap =
    std::collections::HashMap<RequestLabels, RequestSeries, foldhash::fast::RandomState>;

/// A request label set's counter and histogram (handles on the families' own).
#[derive(Clone, Debug)]
struct RequestSeries {
    count: Counter,
    duration: Histogram,
}

impl RequestSeries {
    fn record(&self, seconds: f64) {
        self.duration.observe(seconds);
        self.count.inc();
    }
}

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
        let mut registry = Registry::default();
        let requests = Family::default();
        let duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let in_flight = Gauge::default();
        let reloads = Family::default();
        let bytes = Family::<DirectionLabels, Counter>::default();
        let bytes_in = bytes
            .get_or_create(&DirectionLabels { direction: "in" })
            .clone();
        let bytes_out = bytes
            .get_or_create(&DirectionLabels { direction: "out" })
            .clone();
        let connections = Family::default();
        let spans_dropped = Counter::default();
        registry.register("protogate_requests", "Requests answered", requests.clone());
        registry.register(
            "http_server_request_duration_seconds",
            "Time to answer a request (to the response headers for streams)",
            duration.clone(),
        );
        registry.register(
            "protogate_requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        let reload_help = "Descriptor reloads by outcome";
        registry.register("protogate_reloads", reload_help, reloads.clone());
        registry.register(
            "protogate_bytes",
            "Body bytes received from and sent to clients",
            bytes,
        );
        registry.register(
            "protogate_upstream_connections",
            "HTTP/2 connections to upstreams by state",
            connections.clone(),
        );
        registry.register(
            "protogate_trace_spans_dropped",
            "Finished spans dropped because the trace export queue was full",
            spans_dropped.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        let version = env!("CARGO_PKG_VERSION");
        build.get_or_create(&VersionLabels { version }).set(1);
        registry.register("protogate_build_info", "The gateway's version", build);
        Metrics {
            registry,
            requests,
            duration,
            series: RwLock::default(),
            in_flight,
            reloads,
            bytes_in,
            bytes_out,
            connections,
            spans_dropped,
        }
    }

    /// The counter of spans the trace export queue had no room for (shared: the queue counts
    /// into it).
    pub fn spans_dropped(&self) -> &Counter {
        &self.spans_dropped
    }

    /// Marks a request as started; the guard marks it finished when dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Counts a finished request and its duration.
    pub fn finish(&self, labels: RequestLabels, seconds: f64) {
        if let Some(series) = self
            .series
            .read()
            .ok()
            .as_ref()
            .and_then(|s| s.get(&labels))
        {
            return series.record(seconds);
        }
        let series = RequestSeries {
            count: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
        };
        series.record(seconds);
        if let Ok(mut known) = self.series.write() {
            known.insert(labels, series);
        }
    }

    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    pub fn bytes_out(&self, n: u64) {
        self.bytes_out.inc_by(n);
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

    /// The exposition in `format`, with the process figures read at this scrape (none where
    /// the platform has no `/proc`).
    pub fn render(&self, format: Format, process: Option<&ProcessStats>) -> String {
        let mut open_metrics = String::new();
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut open_metrics, &self.registry);
        if let Some(stats) = process {
            let _ = prometheus_client::encoding::text::encode_registry(
                &mut open_metrics,
                &process_registry(stats),
            );
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut open_metrics);
        match format {
            Format::OpenMetrics => open_metrics,
            Format::Text004 => exposition::to_text_004(&open_metrics),
        }
    }
}

/// The standard process metrics, as the Prometheus client libraries name them.
fn process_registry(stats: &ProcessStats) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        ConstCounter::new(stats.cpu_seconds),
    );
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        ConstGauge::new(stats.resident_memory_bytes),
    );
    registry.register(
        "process_open_fds",
        "Number of open file descriptors",
        ConstGauge::new(stats.open_fds),
    );
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        ConstGauge::new(stats.start_time_seconds),
    );
    registry
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

    fn sample() -> Metrics {
        let m = Metrics::new();
        m.finish(
            RequestLabels {
                http_request_method: "POST",
                http_route: Arc::from("/skvps/locdata"),
                http_response_status_code: 200,
                rpc_grpc_status_code: 0,
                protocol: "rest",
                error_source: "",
            },
            0.002,
        );
        m.bytes_in(10);
        m.reload(false);
        m.connections(&Arc::from("http://b:1"), "connected", 2);
        m
    }

    const LABELS: &str = r#"http_request_method="POST",http_route="/skvps/locdata",http_response_status_code="200",rpc_grpc_status_code="0",protocol="rest",error_source="""#;

    #[test]
    fn families_render_with_their_labels() {
        let m = sample();
        let _guard = m.start();
        let stats = ProcessStats {
            cpu_seconds: 1.5,
            resident_memory_bytes: 4096,
            open_fds: 7,
            start_time_seconds: 1000.0,
        };
        let text = m.render(Format::Text004, Some(&stats));
        for needle in [
            &format!("protogate_requests_total{{{LABELS}}} 1"),
            &format!("http_server_request_duration_seconds_count{{{LABELS}}} 1"),
            &format!("http_server_request_duration_seconds_bucket{{le=\"120.0\",{LABELS}}} 1"),
            "protogate_requests_in_flight 1",
            r#"protogate_reloads_total{outcome="failure"} 1"#,
            r#"protogate_bytes_total{direction="in"} 10"#,
            r#"protogate_upstream_connections{upstream="http://b:1",state="connected"} 2"#,
            "protogate_trace_spans_dropped_total 0",
            "# TYPE protogate_trace_spans_dropped_total counter",
            &format!(
                "protogate_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE protogate_requests_total counter",
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4096",
            "process_open_fds 7",
            "process_start_time_seconds 1000",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn a_label_set_seen_again_counts_into_the_same_series() {
        let m = sample();
        let labels = |status| RequestLabels {
            http_request_method: "POST",
            http_route: Arc::from("/skvps/locdata"),
            http_response_status_code: status,
            rpc_grpc_status_code: 0,
            protocol: "rest",
            error_source: "",
        };
        m.finish(labels(200), 0.5);
        m.finish(labels(200), 0.5);
        m.finish(labels(503), 0.5);
        m.bytes_out(3);
        let text = m.render(Format::Text004, None);
        let other = LABELS.replace("\"200\"", "\"503\"");
        for needle in [
            format!("protogate_requests_total{{{LABELS}}} 3"),
            format!("http_server_request_duration_seconds_count{{{LABELS}}} 3"),
            format!("http_server_request_duration_seconds_bucket{{le=\"0.25\",{LABELS}}} 1"),
            format!("protogate_requests_total{{{other}}} 1"),
            r#"protogate_bytes_total{direction="out"} 3"#.to_owned(),
        ] {
            assert!(text.contains(&needle), "{needle} not in\n{text}");
        }
    }

    #[test]
    fn open_metrics_ends_with_eof_once() {
        let text = sample().render(Format::OpenMetrics, None);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.contains("# TYPE protogate_requests counter"), "{text}");
        assert!(!text.contains("process_"), "{text}");
    }

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("BREW"), "_OTHER");
        assert_eq!(method_label("get"), "_OTHER");
    }
}
