//! Descriptors from the upstream's gRPC server reflection (`--descriptors-from-reflection`),
//! against a tonic backend that serves reflection (tonic-reflection, v1 and/or v1alpha) next
//! to the API, whose descriptors can be swapped while it runs.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use protogate::demo::backend::RawCodec;
use protogate::descriptor::Sources;
use protogate::reload::{self, Outcome, ReloadSource};
use protogate::server::{Gateway, Settings};
use protogate::snapshot::{Snapshot, UpstreamMap};
use protogate::upstream::{Upstream, UpstreamOptions};
use tokio::net::TcpListener;
use tower_service::Service;

/// The test API, compiled with its comments.
fn library_set() -> Bytes {
    let set = protogate::descriptor::compile(
        &[repo_path("tests/protos")],
        &["testapi/v1/library.proto".into()],
        true,
    )
    .unwrap();
    Bytes::from(set)
}

fn vps_set() -> Bytes {
    Bytes::from_static(protogate::demo::VPS_DESCRIPTORS)
}

/// What the backend's reflection serves, changeable while it runs.
struct Reflection {
    set: Mutex<Bytes>,
    v1: AtomicBool,
    v1alpha: AtomicBool,
}

/// A tonic gRPC server: reflection over [`Reflection`], and every other method answered
/// with an empty message (valid for any type).
struct ReflectingBackend {
    url: String,
    reflection: Arc<Reflection>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ReflectingBackend {
    async fn start(set: Bytes, v1: bool, v1alpha: bool) -> ReflectingBackend {
        let reflection = Arc::new(Reflection {
            set: Mutex::new(set),
            v1: AtomicBool::new(v1),
            v1alpha: AtomicBool::new(v1alpha),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = reflection.clone();
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = state.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |request| {
                                answer(state.clone(), request)
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .http2_only()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
            connections.abort_all();
        });
        ReflectingBackend {
            url,
            reflection,
            _stop: stop,
        }
    }

    fn serve(&self, set: Bytes) {
        *self.reflection.set.lock().unwrap() = set;
    }
}

async fn answer(
    state: Arc<Reflection>,
    request: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    let set = state.set.lock().unwrap().clone();
    let builder = tonic_reflection::server::Builder::configure();
    if path.starts_with("/grpc.reflection.v1.") {
        if !state.v1.load(Ordering::SeqCst) {
            return Ok(tonic::Status::unimplemented("no v1 reflection").into_http());
        }
        let mut service = builder
            .register_encoded_file_descriptor_set(&set)
            .build_v1()
            .unwrap();
        return service.call(request).await;
    }
    if path.starts_with("/grpc.reflection.v1alpha.") {
        if !state.v1alpha.load(Ordering::SeqCst) {
            return Ok(tonic::Status::unimplemented("no v1alpha reflection").into_http());
        }
        let mut service = builder
            .register_encoded_file_descriptor_set(&set)
            .build_v1alpha()
            .unwrap();
        return service.call(request).await;
    }
    let request =
        request.map(|b| tonic::body::Body::new(b.map_err(|e| tonic::Status::from_error(e.into()))));
    let mut grpc = tonic::server::Grpc::new(RawCodec);
    Ok(grpc.unary(Empty, request).await)
}

/// Answers every unary call with an empty message.
#[derive(Clone)]
struct Empty;

impl tonic::server::UnaryService<Bytes> for Empty {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

fn upstream(url: &str) -> Arc<Upstream> {
    Arc::new(Upstream::new(url, UpstreamOptions::default()).unwrap())
}

/// Polls `/openapi.json` until it documents `path` (a refresh swapped the descriptors in).
async fn wait_for_path(base: &str, path: &str) -> serde_json::Value {
    bounded(async {
        loop {
            let doc = get(&format!("{base}/openapi.json")).await.json();
            if doc["paths"][path].is_object() {
                return doc;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_from_reflection_and_a_change_is_picked_up_on_the_next_refresh() {
    let backend = ReflectingBackend::start(library_set(), true, true).await;
    let gw = spawn_gateway(&[
        "--descriptors-from-reflection",
        "--reflection-interval",
        "200ms",
        "--upstream",
        &backend.url,
    ]);
    let book = get(&format!("{}/v2/books/b1", gw.base)).await;
    assert_eq!(book.status, 200, "{:?}", book.body);
    let doc = get(&format!("{}/openapi.json", gw.base)).await.json();
    assert!(doc["paths"]["/v2/books/{name}"]["get"].is_object());
    assert_eq!(doc["info"]["title"], "testapi.v1.Library");
    assert_eq!(
        get(&format!("{}/skvps/locdata", gw.base)).await.status,
        404,
        "not served yet"
    );

    // The backend now serves another API; the next refresh swaps it in, whole.
    backend.serve(vps_set());
    let doc = wait_for_path(&gw.base, "/skvps/locdata").await;
    assert!(doc["paths"]["/v2/books/{name}"].is_null());
    let located = send("POST", &format!("{}/skvps/locdata", gw.base), &[], "{}").await;
    assert_eq!(located.status, 200, "{:?}", located.body);
    assert_eq!(get(&format!("{}/v2/books/b1", gw.base)).await.status, 404);

    // A refresh that fails keeps what is served.
    backend.reflection.v1.store(false, Ordering::SeqCst);
    backend.reflection.v1alpha.store(false, Ordering::SeqCst);
    let failures = bounded(async {
        loop {
            let metrics = get(&format!("{}/metrics", gw.base)).await;
            let text = String::from_utf8_lossy(&metrics.body).to_string();
            if text.contains(r#"protogate_reloads_total{outcome="failure"}"#) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(failures.contains(r#"protogate_reloads_total{outcome="success"} 1"#));
    let still = send("POST", &format!("{}/skvps/locdata", gw.base), &[], "{}").await;
    assert_eq!(still.status, 200);
}

#[tokio::test]
async fn v1alpha_servers_are_read_and_options_and_comments_survive() {
    let backend = ReflectingBackend::start(library_set(), false, true).await;
    let set = bounded(protogate::reflection_source::fetch(upstream(&backend.url)))
        .await
        .unwrap();
    let files = prost_types::FileDescriptorSet::decode(set.clone()).unwrap();
    let names: Vec<&str> = files.file.iter().map(|f| f.name()).collect();
    assert!(names.contains(&"testapi/v1/library.proto"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("google/protobuf/")),
        "built-in imports are not fetched: {names:?}"
    );
    let sources = Sources {
        fetched_sets: vec![("reflection".into(), set)],
        ..Sources::default()
    };
    let snapshot = Snapshot::build(&sources, &Default::default(), None).unwrap();
    assert_eq!(
        snapshot.routes.len(),
        Snapshot::build(&library_sources(), &Default::default(), None)
            .unwrap()
            .routes
            .len(),
        "every google.api.http rule survived"
    );
    let library = snapshot
        .pool
        .get_file_by_name("testapi/v1/library.proto")
        .unwrap();
    assert!(
        library.file_descriptor_proto().source_code_info.is_some(),
        "source info (comments) survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_reflection_combine_and_reload_fetches_again() {
    let backend = ReflectingBackend::start(library_set(), true, false).await;
    let options = UpstreamOptions::default();
    let (upstreams, _) = protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let fetched = protogate::reflection_source::fetch_all(&upstreams)
        .await
        .unwrap();
    let source = ReloadSource {
        sources: Sources {
            embedded_sets: vec![("descriptors/vps.binpb", protogate::demo::VPS_DESCRIPTORS)],
            from_reflection: true,
            fetched_sets: fetched,
            ..Sources::default()
        },
        options: Default::default(),
        upstreams: UpstreamMap {
            by_service: Default::default(),
            default: Some(0),
        },
    };
    let gateway = Gateway::new(source.build().unwrap(), upstreams, Settings::default());
    let gw = start_with(gateway.clone()).await;
    let both = get(&format!("{}/openapi.json", gw.base)).await.json();
    assert!(both["paths"]["/skvps/locdata"].is_object(), "from the file");
    assert!(
        both["paths"]["/v2/books/{name}"].is_object(),
        "from reflection"
    );
    assert_eq!(get(&format!("{}/v2/books/b1", gw.base)).await.status, 200);

    // A reload fetches reflection again: the backend's API is gone, the file's stays.
    backend.serve(Bytes::new());
    assert!(matches!(
        reload::reload(&gateway, &source).await,
        Outcome::Swapped { .. }
    ));
    assert_eq!(get(&format!("{}/v2/books/b1", gw.base)).await.status, 404);
    let vps = send("POST", &format!("{}/skvps/locdata", gw.base), &[], "{}").await;
    assert_eq!(vps.status, 200);

    // An upstream whose reflection stops answering keeps the descriptors in service.
    backend.reflection.v1.store(false, Ordering::SeqCst);
    let kept = reload::reload(&gateway, &source).await;
    let Outcome::Kept(error) = kept else {
        panic!("a failed fetch swapped")
    };
    assert!(
        error
            .to_string()
            .contains("does not serve gRPC server reflection"),
        "{error}"
    );
    assert_eq!(
        send("POST", &format!("{}/skvps/locdata", gw.base), &[], "{}")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_reflection_stops_start_up_with_the_reason() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let url = backend.url.clone();
    let output = bounded(tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_protogate"))
            .current_dir(repo_path(""))
            .args(["check", "--descriptors-from-reflection", "--upstream", &url])
            .output()
            .unwrap()
    }))
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&backend.url) && stderr.contains("reflection"),
        "{stderr}"
    );
}
