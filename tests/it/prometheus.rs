//! The metrics as a real Prometheus server reads them: Debian's `prometheus` scrapes a gateway
//! on loopback every second, and its HTTP API (`/api/v1/query`, `/api/v1/metadata`) is asked
//! for each family's type, labels and values after a known set of requests (REST ok, REST
//! error, gRPC, gRPC-Web). The Prometheus text format 0.0.4 (what a scrape gets without
//! asking for OpenMetrics) is checked with `promtool check metrics`.
//!
//! `.ci/run` installs prometheus. Where it is missing the test says so and skips, except under
//! `CI=true`, where it fails.

use std::io::Write;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http::uri::PathAndQuery;
use protogate::demo::backend::{RawCodec, Reply};
use protogate::server::Settings;
use serde_json::Value;

use crate::support::*;

const LIST: &str = "/testapi.v1.Library/ListShelves";

/// Whether `binary --version` runs; if not, says so (or fails under CI) and returns false.
fn have(binary: &str) -> bool {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{binary} is missing under CI: .ci/run installs it (apt-get install prometheus)"
        );
        // Straight to the terminal: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the Prometheus test needs {binary} (apt-get install prometheus); CI \
             installs it and runs this test"
        );
    }
    found
}

/// A Prometheus server scraping one target, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) every second, on a free loopback
    /// port (found by binding port 0 and releasing it; another tries a new port), and waits
    /// until it is ready.
    async fn start(target: &str) -> Prometheus {
        for _ in 0..5 {
            if let Some(prometheus) = Self::try_start(target).await {
                return prometheus;
            }
        }
        panic!("prometheus did not start on any of 5 free ports");
    }

    async fn try_start(target: &str) -> Option<Prometheus> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: protogate\n    static_configs:\n\
                 \x20     - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        prometheus.ready().await.then_some(prometheus)
    }

    /// Polls `/-/ready` until it answers 200 (true) or the process exits (false: its port
    /// was taken); fails the test after [`TIMEOUT`].
    async fn ready(&mut self) -> bool {
        let url = format!("{}/-/ready", self.base);
        bounded(async {
            loop {
                if self.child.try_wait().unwrap().is_some() {
                    return false;
                }
                if try_get(&url).await.is_some_and(|r| r.status == 200) {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// The result vector of an instant query.
    async fn query(&self, query: &str) -> Vec<Value> {
        let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let resp = get(&format!("{}/api/v1/query?query={q}", self.base)).await;
        let json = resp.json();
        assert_eq!(json["status"], "success", "{json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The one sample of `query`'s result, with its labels.
    async fn only(&self, query: &str) -> (serde_json::Map<String, Value>, f64) {
        let result = self.query(query).await;
        assert_eq!(result.len(), 1, "{query}: {result:?}");
        let labels = result[0]["metric"].as_object().cloned().unwrap();
        let value = result[0]["value"][1].as_str().unwrap().parse().unwrap();
        (labels, value)
    }

    /// Polls `query` (bounded by [`TIMEOUT`]) until it has a result: a scrape has seen it.
    async fn await_series(&self, query: &str) {
        bounded(async {
            while self.query(query).await.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
        .await;
    }

    /// The type Prometheus recorded for a family, by any of the names it may file it under.
    async fn type_of(&self, names: &[&str]) -> String {
        let json = get(&format!("{}/api/v1/metadata", self.base)).await.json();
        names
            .iter()
            .find_map(|n| json["data"][n][0]["type"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("no metadata for {names:?} in {json}"))
    }
}

/// A GET that gives `None` instead of failing when nothing listens yet.
async fn try_get(url: &str) -> Option<Resp> {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority()?.as_str().to_string();
    tokio::net::TcpStream::connect(authority).await.ok()?;
    Some(get(url).await)
}

/// A backend answering `GetBook` with NOT_FOUND and everything else with an empty message.
async fn backend() -> Backend {
    Backend::start(|call| match call.path.as_str() {
        "/testapi.v1.Library/GetBook" => Err(tonic::Status::not_found("no such book")),
        _ => Ok(Reply {
            message: Bytes::new(),
            metadata: Default::default(),
        }),
    })
    .await
}

/// Sends the known set of requests: REST ok, REST error, gRPC, gRPC-Web.
async fn traffic(base: &str) {
    assert_eq!(get(&format!("{base}/v1/shelves")).await.status, 200);
    assert_eq!(get(&format!("{base}/v2/books/b1")).await.status, 404);
    let mut client = grpc_client(base).await;
    let path = PathAndQuery::from_static(LIST);
    bounded(client.unary(tonic::Request::new(Bytes::new()), path, RawCodec))
        .await
        .unwrap();
    let web = send(
        "POST",
        &format!("{base}{LIST}"),
        &[("content-type", "application/grpc-web+proto")],
        protogate::grpc::frame::encode_raw(&[]),
    )
    .await;
    assert_eq!(web.status, 200);
}

#[tokio::test]
async fn prometheus_reads_every_family() {
    if !have("prometheus") {
        return;
    }
    let backend = backend().await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    let target = gw.base.trim_start_matches("http://").to_string();
    traffic(&gw.base).await;
    let prometheus = Prometheus::start(&target).await;
    // Every request was answered before this series could be scraped.
    prometheus
        .await_series(r#"protogate_requests_total{protocol="grpc-web"}"#)
        .await;

    let (labels, n) = prometheus
        .only(r#"protogate_requests_total{http_route="/v1/shelves"}"#)
        .await;
    assert_eq!(n, 1.0);
    for (k, v) in [
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("rpc_grpc_status_code", "0"),
        ("protocol", "rest"),
    ] {
        assert_eq!(labels[k], v, "{labels:?}");
    }
    // An empty label is no label in Prometheus.
    assert!(!labels.contains_key("error_source"), "{labels:?}");

    let (labels, n) = prometheus
        .only(r#"protogate_requests_total{http_route="/v2/books/{name}"}"#)
        .await;
    assert_eq!(n, 1.0);
    assert_eq!(labels["http_response_status_code"], "404");
    assert_eq!(labels["rpc_grpc_status_code"], "5");
    assert_eq!(labels["error_source"], "upstream");

    for protocol in ["grpc", "grpc-web"] {
        let query =
            format!(r#"protogate_requests_total{{http_route="{LIST}",protocol="{protocol}"}}"#);
        let (labels, n) = prometheus.only(&query).await;
        assert_eq!(n, 1.0);
        assert_eq!(labels["http_request_method"], "POST");
        assert_eq!(labels["http_response_status_code"], "200");
        assert_eq!(labels["rpc_grpc_status_code"], "0");
        let count = format!(
            r#"http_server_request_duration_seconds_count{{http_route="{LIST}",protocol="{protocol}"}}"#
        );
        assert_eq!(prometheus.only(&count).await.1, 1.0);
    }

    let buckets = prometheus
        .query(r#"count by (le) (http_server_request_duration_seconds_bucket)"#)
        .await;
    let les: Vec<f64> = buckets
        .iter()
        .filter_map(|b| b["metric"]["le"].as_str()?.parse().ok())
        .collect();
    for le in [0.001, 1.0, 60.0, 120.0, f64::INFINITY] {
        assert!(les.contains(&le), "no bucket {le} in {les:?}");
    }

    let version = env!("CARGO_PKG_VERSION");
    let build = format!(r#"protogate_build_info{{version="{version}"}}"#);
    assert_eq!(prometheus.only(&build).await.1, 1.0);
    for gauge in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
    ] {
        assert!(prometheus.only(gauge).await.1 > 0.0, "{gauge}");
    }
    assert!(prometheus.only("protogate_requests_in_flight").await.1 >= 1.0);

    for (names, kind) in [
        (
            &["protogate_requests", "protogate_requests_total"][..],
            "counter",
        ),
        (
            &["process_cpu_seconds", "process_cpu_seconds_total"][..],
            "counter",
        ),
        (&["protogate_bytes", "protogate_bytes_total"][..], "counter"),
        (&["http_server_request_duration_seconds"][..], "histogram"),
        (&["protogate_requests_in_flight"][..], "gauge"),
        (&["protogate_build_info"][..], "gauge"),
        (&["process_resident_memory_bytes"][..], "gauge"),
    ] {
        assert_eq!(prometheus.type_of(names).await, kind, "{names:?}");
    }
}

/// What a scrape that does not ask for OpenMetrics gets passes `promtool check metrics` (the
/// Prometheus text format 0.0.4, linted), and OpenMetrics ends with `# EOF`.
#[tokio::test]
async fn both_formats_are_served_as_asked() {
    let backend = backend().await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    traffic(&gw.base).await;
    let url = format!("{}/metrics", gw.base);

    let open = send(
        "GET",
        &url,
        &[("accept", "application/openmetrics-text")],
        "",
    )
    .await;
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = String::from_utf8_lossy(&open.body).to_string();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE protogate_requests counter"), "{text}");

    let plain = get(&url).await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8_lossy(&plain.body).to_string();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE protogate_requests_total counter"),
        "{text}"
    );

    if !have("promtool") {
        return;
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(&plain.body)
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
