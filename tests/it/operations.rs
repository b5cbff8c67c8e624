//! Operating the gateway: admin endpoints, metrics, readiness, limits, overload, reload and
//! graceful shutdown, against real backends on loopback.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use protogate::reload::{self, Outcome, ReloadSource};
use protogate::server::Settings;
use protogate::snapshot::UpstreamMap;
use tokio::sync::{mpsc, Semaphore};

fn vps_sample() -> Vec<u8> {
    std::fs::read(repo_path("examples/sample.json")).unwrap()
}

/// A VPS backend answering every call with an empty message.
async fn vps_backend() -> Backend {
    Backend::start(reply_with(bytes::Bytes::new())).await
}

async fn vps_gateway(upstream: &str, settings: Settings) -> Gw {
    start_gateway(protogate::demo::vps_sources(), upstream, settings).await
}

#[tokio::test]
async fn healthz_and_metrics_count_requests() {
    let backend = vps_backend().await;
    let gw = vps_gateway(&backend.url, Settings::default()).await;
    assert_eq!(get(&format!("{}/healthz", gw.base)).await.status, 200);
    let ok = send(
        "POST",
        &format!("{}/skvps/locdata", gw.base),
        &[],
        vps_sample(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("x-request-id").is_some_and(|id| id.len() == 32));
    let traced = send(
        "POST",
        &format!("{}/skvps/locdata", gw.base),
        &[("x-request-id", "abc-1")],
        "{}",
    )
    .await;
    assert_eq!(traced.header("x-request-id"), Some("abc-1"));
    assert_eq!(
        backend.calls()[1].metadata.get("x-request-id").unwrap(),
        "abc-1",
        "forwarded upstream"
    );
    assert_eq!(get(&format!("{}/nope", gw.base)).await.status, 404);

    let metrics = get(&format!("{}/metrics", gw.base)).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    for needle in [
        r#"protogate_requests_total{http_request_method="POST",http_route="/skvps/locdata",http_response_status_code="200",rpc_grpc_status_code="0",protocol="rest",error_source=""} 2"#,
        r#"protogate_requests_total{http_request_method="GET",http_route="unmatched",http_response_status_code="404",rpc_grpc_status_code="5",protocol="rest",error_source="client"} 1"#,
        r#"protogate_requests_total{http_request_method="GET",http_route="/healthz",http_response_status_code="200",rpc_grpc_status_code="0",protocol="rest",error_source=""} 1"#,
        r#"http_server_request_duration_seconds_count{http_request_method="POST",http_route="/skvps/locdata",http_response_status_code="200",rpc_grpc_status_code="0",protocol="rest",error_source=""} 2"#,
        "# TYPE protogate_requests_total counter",
        "protogate_requests_in_flight 1",
        "process_open_fds ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
        &format!(
            r#"protogate_upstream_connections{{upstream="{}",state="connected"}}"#,
            backend.url
        ),
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert!(!text.contains("# EOF"), "{text}");
    let bytes_in = metric_value(&text, r#"protogate_bytes_total{direction="in"}"#);
    assert!(bytes_in >= vps_sample().len() as f64, "{bytes_in}");
    assert!(metric_value(&text, r#"protogate_bytes_total{direction="out"}"#) > 0.0);
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

#[tokio::test]
async fn readiness_follows_the_upstream() {
    let backend = vps_backend().await;
    let addr = backend.addr;
    let gw = vps_gateway(&backend.url, Settings::default()).await;
    let ready = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);

    drop(backend);
    let down = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!(down.status, 503);
    assert!(String::from_utf8_lossy(&down.body).contains(&addr.to_string()));

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let handler = protogate::demo::backend::handler(|call| async move {
        match call.path.as_str() {
            "/grpc.health.v1.Health/Check" => Err(tonic::Status::unimplemented("")),
            _ => Ok(Default::default()),
        }
    });
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(protogate::demo::backend::serve(
        listener,
        handler,
        async move {
            let _ = stopped.await;
        },
    ));
    let back = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
}

/// A backend whose health service answers `status` (1 SERVING, 2 NOT_SERVING).
async fn health_backend(status: u8) -> (String, tokio::sync::oneshot::Sender<()>) {
    let handler = protogate::demo::backend::handler(move |_| async move {
        Ok(protogate::demo::backend::Reply {
            message: bytes::Bytes::from(vec![0x08, status]),
            metadata: Default::default(),
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(protogate::demo::backend::serve(
        listener,
        handler,
        async move {
            let _ = stopped.await;
        },
    ));
    (url, stop)
}

#[tokio::test]
async fn readiness_uses_grpc_health_checking() {
    let (serving, _a) = health_backend(1).await;
    let gw = vps_gateway(&serving, Settings::default()).await;
    assert_eq!(get(&format!("{}/readyz", gw.base)).await.status, 200);
    let (not_serving, _b) = health_backend(2).await;
    let gw = vps_gateway(&not_serving, Settings::default()).await;
    let resp = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!(resp.status, 503);
    assert!(String::from_utf8_lossy(&resp.body).contains("NOT_SERVING"));
}

#[tokio::test]
async fn admin_endpoints_can_move_to_their_own_port() {
    let backend = vps_backend().await;
    let settings = Settings {
        admin_on_main_port: false,
        ..Settings::default()
    };
    let gw = vps_gateway(&backend.url, settings).await;
    assert_eq!(get(&format!("{}/healthz", gw.base)).await.status, 404);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(protogate::server::serve_admin(
        listener,
        gw.gateway.clone(),
        std::future::pending(),
    ));
    assert_eq!(get(&format!("{admin}/healthz")).await.status, 200);
    assert_eq!(get(&format!("{admin}/readyz")).await.status, 200);
    assert_eq!(get(&format!("{admin}/skvps/locdata")).await.status, 404);
}

#[tokio::test]
async fn each_limit_answers_with_its_status() {
    let backend = vps_backend().await;
    let settings = Settings {
        max_request_bytes: 300_000,
        max_header_bytes: 16 << 10,
        ..Settings::default()
    };
    let gw = vps_gateway(&backend.url, settings).await;
    let url = format!("{}/skvps/locdata", gw.base);
    let big = vec![b' '; 400_000];
    let too_big = send("POST", &url, &[], big).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["code"], 8);

    let long_header = "x".repeat(40 << 10);
    let too_long = send("POST", &url, &[("x-long", long_header.as_str())], "{}").await;
    assert_eq!(too_long.status, 431);

    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let nested = send("POST", &url, &[], format!("{{\"stVPHeader\": {deep}}}")).await;
    assert_eq!(nested.status, 400);
    assert!(nested.json()["message"]
        .as_str()
        .unwrap()
        .contains("nested deeper than 100"));

    assert_eq!(
        send("POST", &url, &[], vps_sample()).await.status,
        200,
        "still serving"
    );
    assert_eq!(
        backend.calls().len(),
        1,
        "only the good request reached the backend"
    );
}

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_are_refused_at_once() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let handler = protogate::demo::backend::handler(move |_| {
        let (seen_tx, gate) = (seen_tx.clone(), held.clone());
        async move {
            let _ = seen_tx.send(());
            let _permit = gate.acquire().await;
            Ok(Default::default())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(protogate::demo::backend::serve(
        listener,
        handler,
        std::future::pending(),
    ));
    let settings = Settings {
        max_concurrent_requests: 2,
        ..Settings::default()
    };
    let gw = Arc::new(vps_gateway(&url, settings).await);
    let target = format!("{}/skvps/locdata", gw.base);
    let held_requests: Vec<_> = (0..2)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { send("POST", &target, &[], vps_sample()).await })
        })
        .collect();
    for _ in 0..2 {
        bounded(seen.recv()).await.unwrap();
    }
    // Refused at once, not queued: the two admitted requests are held until after this
    // answer, so one that waited for a slot would never come.
    let refused = send("POST", &target, &[], vps_sample()).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["code"], 14);
    assert_eq!(
        get(&format!("{}/healthz", gw.base)).await.status,
        200,
        "admin still answers"
    );
    // Refused before any handler saw it, and still counted under its route.
    let metrics = get(&format!("{}/metrics", gw.base)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"protogate_requests_total{http_request_method="POST",http_route="/skvps/locdata",http_response_status_code="503",rpc_grpc_status_code="14",protocol="rest",error_source="gateway"} 1"#),
        "{text}"
    );

    gate.add_permits(2);
    for r in held_requests {
        assert_eq!(bounded(r).await.unwrap().status, 200);
    }
    assert_eq!(send("POST", &target, &[], vps_sample()).await.status, 200);
}

fn source_for(path: &std::path::Path, upstream_index: usize) -> ReloadSource {
    ReloadSource {
        sources: protogate::descriptor::Sources {
            descriptor_sets: vec![path.to_path_buf()],
            ..Default::default()
        },
        options: Default::default(),
        upstreams: UpstreamMap {
            by_service: Default::default(),
            default: Some(upstream_index),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request_and_a_bad_set_keeps_the_old_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vps.binpb");
    std::fs::write(&path, protogate::demo::VPS_DESCRIPTORS).unwrap();
    let backend = vps_backend().await;
    let source = source_for(&path, 0);
    let options = protogate::upstream::UpstreamOptions::default();
    let (upstreams, _) = protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let gateway =
        protogate::server::Gateway::new(source.build().unwrap(), upstreams, Settings::default());
    let gw = start_with(gateway.clone()).await;
    let target = format!("{}/skvps/locdata", gw.base);

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut failures = 0;
                for _ in 0..60 {
                    if send("POST", &target, &[], "{\"user_id\":\"u\"}")
                        .await
                        .status
                        != 200
                    {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    for _ in 0..10 {
        assert!(matches!(
            reload::reload(&gateway, &source).await,
            Outcome::Swapped { routes: 1 }
        ));
    }
    let mut failures = 0;
    for w in workers {
        failures += bounded(w).await.unwrap();
    }
    assert_eq!(failures, 0, "requests failed during reloads");

    std::fs::write(&path, b"not a descriptor set").unwrap();
    assert!(matches!(
        reload::reload(&gateway, &source).await,
        Outcome::Kept(_)
    ));
    assert_eq!(
        send("POST", &target, &[], "{}").await.status,
        200,
        "old routes kept"
    );
    let text =
        String::from_utf8_lossy(&get(&format!("{}/metrics", gw.base)).await.body).to_string();
    assert!(
        text.contains(r#"protogate_reloads_total{outcome="success"} 10"#),
        "{text}"
    );
    assert!(
        text.contains(r#"protogate_reloads_total{outcome="failure"} 1"#),
        "{text}"
    );
}

/// A Kubernetes ConfigMap volume: files are symlinks through `..data`, which an update
/// swaps atomically to a new timestamped directory.
fn configmap_update(dir: &std::path::Path, generation: u32, content: &[u8]) {
    let data = dir.join(format!("..gen{generation}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("api.binpb"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..gen{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("api.binpb");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/api.binpb", &link).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_is_picked_up_by_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    configmap_update(dir.path(), 1, protogate::demo::VPS_DESCRIPTORS);
    let library = protogate::descriptor::compile(
        &[repo_path("tests/protos")],
        &["testapi/v1/library.proto".into()],
        false,
    )
    .unwrap();
    let backend = vps_backend().await;
    let source = source_for(&dir.path().join("api.binpb"), 0);
    let options = protogate::upstream::UpstreamOptions::default();
    let (upstreams, _) = protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let gateway =
        protogate::server::Gateway::new(source.build().unwrap(), upstreams, Settings::default());
    let gw = start_with(gateway.clone()).await;
    reload::spawn_triggers(gateway.clone(), source, true).unwrap();
    assert_eq!(get(&format!("{}/v2/books/b1", gw.base)).await.status, 404);

    configmap_update(dir.path(), 2, &library);
    let swapped = bounded(async {
        loop {
            if gateway.snapshot().routes.len() > 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    swapped.await;
    assert_eq!(get(&format!("{}/v2/books/b1", gw.base)).await.status, 200);
    assert_eq!(
        get(&format!("{}/skvps/locdata", gw.base)).await.status,
        404,
        "the old API is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_and_exits_zero() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<()>();
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let handler = protogate::demo::backend::handler(move |_| {
        let (seen_tx, gate) = (seen_tx.clone(), held.clone());
        async move {
            let _ = seen_tx.send(());
            let _permit = gate.acquire().await;
            Ok(Default::default())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(protogate::demo::backend::serve(
        listener,
        handler,
        std::future::pending(),
    ));
    let process = spawn_gateway(&[
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--upstream",
        &url,
        "--shutdown-grace",
        "10s",
    ]);
    let target = format!("{}/skvps/locdata", process.base);
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { send("POST", &target, &[], "{}").await })
        })
        .collect();
    for _ in 0..5 {
        bounded(seen.recv()).await.unwrap();
    }
    let pid = process.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    gate.add_permits(5);
    for r in in_flight {
        assert_eq!(
            bounded(r).await.unwrap().status,
            200,
            "a request in flight was lost"
        );
    }
    let lines = process.log_until(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("drain finished"))
    });
    assert!(
        lines.iter().any(|v| v["message"] == "drain started"),
        "{lines:#?}"
    );
    let status = bounded(tokio::task::spawn_blocking(move || {
        let mut process = process;
        process.child.wait()
    }))
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn start_up_logs_where_the_docs_and_admin_endpoints_are_and_root_points_to_them() {
    let backend = vps_backend().await;
    let process = spawn_gateway(&[
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--upstream",
        &backend.url,
    ]);
    let lines = process.log_until(|v| v["readiness"].is_string());
    let urls: Vec<String> = lines
        .iter()
        .flat_map(|v| ["url", "liveness", "readiness"].map(|k| v[k].as_str().map(String::from)))
        .flatten()
        .collect();
    for path in ["/docs", "/openapi.json", "/metrics", "/healthz", "/readyz"] {
        let want = format!("{}{path}", process.base);
        assert!(
            urls.contains(&want),
            "no {want} in the start-up log: {lines:#?}"
        );
    }

    // GET / with no route bound there: a page with links for a browser, text for curl.
    let html = send(
        "GET",
        &format!("{}/", process.base),
        &[("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(html.status, 200);
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let body = String::from_utf8_lossy(&html.body);
    assert!(body.contains("<a href=\"/docs\">"), "{body}");
    assert!(body.contains("<a href=\"/openapi.json\">"), "{body}");
    let text = send("GET", &format!("{}/", process.base), &[], "").await;
    assert_eq!(text.status, 200);
    let body = String::from_utf8_lossy(&text.body);
    assert!(
        body.contains("/docs") && body.contains("/metrics"),
        "{body}"
    );
    // Other methods on `/` and other unknown paths are still 404.
    assert_eq!(
        send("POST", &format!("{}/", process.base), &[], "{}")
            .await
            .status,
        404
    );
    assert_eq!(
        send("GET", &format!("{}/nothing", process.base), &[], "")
            .await
            .status,
        404
    );
}

/// An upstream that cannot be reached: the client (REST and native gRPC) reads the service
/// and the reason, never the address; the log has the detail with the request id, the
/// endpoint going down, and one access line per request with every field at the top level.
#[tokio::test]
async fn upstream_detail_goes_to_the_log_not_the_client() {
    let dead = dead_url().await;
    let process = spawn_gateway(&[
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--upstream",
        &dead,
    ]);
    let sample = vps_sample();
    let rest = send(
        "POST",
        &format!("{}/skvps/locdata", process.base),
        &[("x-request-id", "down-rest")],
        sample.clone(),
    )
    .await;
    assert_eq!(rest.status, 503);
    let message = rest.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("service vpresult.LocationService is unavailable"),
        "{message}"
    );
    assert!(!message.contains("127.0.0.1"), "{message}");

    let mut client = grpc_client(&process.base).await;
    let mut request = tonic::Request::new(bytes::Bytes::new());
    request
        .metadata_mut()
        .insert("x-request-id", "down-grpc".parse().unwrap());
    let path = http::uri::PathAndQuery::from_static("/vpresult.LocationService/getLocationPose");
    let status = bounded(client.unary(request, path, protogate::demo::backend::RawCodec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(!status.message().contains("127.0.0.1"), "{status:?}");

    let is_access = |v: &serde_json::Value, id: &str| {
        v["target"] == "protogate::access" && v["request_id"] == id
    };
    let lines = process.log_until(|v| is_access(v, "down-grpc"));
    let port = dead.rsplit(':').next().unwrap();
    for id in ["down-rest", "down-grpc"] {
        let detail = lines
            .iter()
            .find(|v| v["message"] == "upstream unavailable" && v["request_id"] == id)
            .unwrap_or_else(|| panic!("no upstream detail for {id} in {lines:#?}"));
        assert!(detail["error"].as_str().unwrap().contains(port), "{detail}");
    }
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "upstream endpoint down" && v["endpoint"].is_string()),
        "{lines:#?}"
    );
    let rest_line = lines.iter().find(|v| is_access(v, "down-rest")).unwrap();
    assert!(rest_line["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(rest_line["bytes_in"], sample.len());
    assert!(rest_line["bytes_out"].as_u64().unwrap() > 0, "{rest_line}");
    assert_eq!(rest_line["status"], 503);
    assert_eq!(rest_line["route"], "/skvps/locdata");
    assert_eq!(rest_line["error_source"], "upstream");
    assert!(rest_line.get("fields").is_none(), "{rest_line}");
}

/// A request that reached the upstream: its access line names the endpoint and how long it
/// took to answer.
#[tokio::test]
async fn the_access_line_names_the_upstream_endpoint() {
    let backend = vps_backend().await;
    let process = spawn_gateway(&[
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--upstream",
        &backend.url,
    ]);
    let ok = send(
        "POST",
        &format!("{}/skvps/locdata", process.base),
        &[("x-request-id", "reached")],
        vps_sample(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let lines =
        process.log_until(|v| v["target"] == "protogate::access" && v["request_id"] == "reached");
    let line = lines.last().unwrap();
    assert_eq!(line["upstream"], backend.addr.to_string(), "{line}");
    assert!(line["upstream_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert_eq!(line["error_source"], "");

    // Native gRPC sends no content-length: the bytes are counted as they are forwarded.
    let mut client = grpc_client(&process.base).await;
    let mut request = tonic::Request::new(bytes::Bytes::from_static(b"\x08\x01"));
    request
        .metadata_mut()
        .insert("x-request-id", "reached-grpc".parse().unwrap());
    let path = http::uri::PathAndQuery::from_static("/vpresult.LocationService/getLocationPose");
    bounded(client.unary(request, path, protogate::demo::backend::RawCodec))
        .await
        .unwrap();
    let lines = process
        .log_until(|v| v["target"] == "protogate::access" && v["request_id"] == "reached-grpc");
    let line = lines.last().unwrap();
    // A 5-byte frame header and the 2-byte message.
    assert_eq!(line["bytes_in"], 7, "{line}");
    assert_eq!(line["protocol"], "grpc", "{line}");
    assert_eq!(line["upstream"], backend.addr.to_string(), "{line}");
}

/// An endpoint that was down and comes back: the log says it went down, then that it is up
/// again (the background reconnection, without a request), and requests reach it.
#[tokio::test]
async fn an_endpoint_coming_back_is_logged_up() {
    let dead = dead_url().await;
    let addr: std::net::SocketAddr = dead.trim_start_matches("http://").parse().unwrap();
    let process = spawn_gateway(&[
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--upstream",
        &dead,
    ]);
    let url = format!("{}/skvps/locdata", process.base);
    assert_eq!(send("POST", &url, &[], vps_sample()).await.status, 503);
    process.log_until(|v| v["message"] == "upstream endpoint down");

    // The same address now serves: the reconnection (every 100 ms, doubling) finds it.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let handler = protogate::demo::backend::handler(|_call| async move { Ok(Default::default()) });
    tokio::spawn(protogate::demo::backend::serve(
        listener,
        handler,
        std::future::pending(),
    ));
    let lines = process.log_until(|v| v["message"] == "upstream endpoint up");
    let up = lines.last().unwrap();
    assert_eq!(up["level"], "INFO", "{up}");
    assert_eq!(up["endpoint"], addr.to_string(), "{up}");
    assert_eq!(up["upstream"], dead, "{up}");
    assert_eq!(send("POST", &url, &[], vps_sample()).await.status, 200);
}

/// SIGHUP reloads the descriptor files: a good set is logged with its route count, a broken
/// one is refused with the reason while the routes already loaded stay in service.
#[tokio::test]
async fn reloads_are_logged_whether_taken_or_refused() {
    let backend = vps_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("api.binpb");
    std::fs::copy(repo_path("descriptors/vps.binpb"), &set).unwrap();
    let process = spawn_gateway(&[
        "--descriptor-set",
        set.to_str().unwrap(),
        "--upstream",
        &backend.url,
    ]);
    let hangup = |process: &Process| {
        let pid = process.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    hangup(&process);
    let lines = process.log_until(|v| v["message"] == "descriptors reloaded");
    let reloaded = lines.last().unwrap();
    assert_eq!(reloaded["level"], "INFO", "{reloaded}");
    assert!(reloaded["routes"].as_u64().unwrap() >= 1, "{reloaded}");

    std::fs::write(&set, b"not a descriptor set").unwrap();
    hangup(&process);
    let lines = process
        .log_until(|v| v["message"] == "reload failed; the previous descriptors stay in service");
    let refused = lines.last().unwrap();
    assert_eq!(refused["level"], "ERROR", "{refused}");
    assert!(
        refused["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{refused}"
    );
    let url = format!("{}/skvps/locdata", process.base);
    assert_eq!(send("POST", &url, &[], vps_sample()).await.status, 200);
    let metrics = get(&format!("{}/metrics", process.base)).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert_eq!(
        metric_value(&text, r#"protogate_reloads_total{outcome="success"}"#),
        1.0
    );
    assert_eq!(
        metric_value(&text, r#"protogate_reloads_total{outcome="failure"}"#),
        1.0
    );
}
