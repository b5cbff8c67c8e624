//! gRPC server reflection (v1 and v1alpha), served by the gateway itself for the services it
//! loaded, so grpcurl and similar tools can list, describe and call them through the gateway
//! without `.proto` files. Served from the snapshot's descriptors, not the upstreams': the
//! gateway only forwards what it loaded, so that is what it advertises.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use http::{Request, Response};
use http_body_util::BodyExt;
use tonic_reflection::server::Builder;
use tower_service::Service;

use super::body::ResponseBody;
use super::respond;
use crate::error::GatewayError;
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamBody;

/// The reflection services, as `ServerReflection/ServerReflectionInfo` paths name them.
const V1: &str = "grpc.reflection.v1.ServerReflection";
const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// What `tonic`'s generated servers return (`tonic::codegen::BoxFuture`).
type Answer = tonic::codegen::BoxFuture<Response<tonic::body::Body>, Infallible>;
/// One reflection version, type-erased (`tonic-reflection` returns an unnameable type).
type Serve = Arc<dyn Fn(Request<UpstreamBody>) -> Answer + Send + Sync>;

/// Both reflection versions for one snapshot.
struct Reflection {
    v1: Serve,
    v1alpha: Serve,
}

/// The reflection services of a snapshot, built on first use and then kept with it, so
/// requests never re-index descriptors and a reload brings fresh ones with the new snapshot.
#[derive(Default)]
pub(crate) struct ReflectionCache(OnceLock<Result<Reflection, String>>);

impl std::fmt::Debug for ReflectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReflectionCache")
    }
}

/// Whether `service` is one of the reflection services the gateway answers itself.
pub(super) fn is_reflection(service: &str) -> bool {
    service == V1 || service == V1ALPHA
}

/// The metrics label of a reflection call: its path, when it is the one method of either
/// version (clients cannot grow the label set).
pub(super) fn label(path: &str) -> Option<Arc<str>> {
    static PATHS: OnceLock<[Arc<str>; 2]> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        [V1, V1ALPHA].map(|service| Arc::from(format!("/{service}/ServerReflectionInfo")))
    });
    paths.iter().find(|p| ***p == *path).cloned()
}

/// Answers a reflection request (one whose service [`is_reflection`] accepts).
pub(super) async fn serve(
    snapshot: &Snapshot,
    cache: &ReflectionCache,
    request: Request<UpstreamBody>,
) -> Response<ResponseBody> {
    let reflection = match cache.0.get_or_init(|| build(snapshot)) {
        Ok(reflection) => reflection,
        Err(e) => return respond::grpc(&GatewayError::internal(e.clone())),
    };
    let v1 = request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(V1));
    let version = if v1.is_some_and(|rest| rest.starts_with('/')) {
        &reflection.v1
    } else {
        &reflection.v1alpha
    };
    match version(request).await {
        Ok(response) => response.map(|body| body.map_err(Into::into).boxed_unsync()),
        Err(never) => match never {},
    }
}

/// Indexes the snapshot's descriptors for both versions. The pool is registered encoded, so
/// the files keep their custom options (`google.api.http`) for tools that read them.
fn build(snapshot: &Snapshot) -> Result<Reflection, String> {
    let encoded = snapshot.pool.encode_to_vec();
    let mut services: Vec<&str> = snapshot.services.keys().map(String::as_str).collect();
    services.extend([V1, V1ALPHA]);
    services.sort_unstable();
    services.dedup();
    let v1 = builder(&encoded, &services)
        .build_v1()
        .map_err(|e| format!("cannot serve reflection: {e}"))?;
    let v1alpha = builder(&encoded, &services)
        .build_v1alpha()
        .map_err(|e| format!("cannot serve reflection: {e}"))?;
    Ok(Reflection {
        v1: erase(v1),
        v1alpha: erase(v1alpha),
    })
}

/// Lists `services` (sorted, so listings are stable) and knows every loaded file and both
/// reflection protocols' own files.
fn builder<'b>(encoded: &'b [u8], services: &[&str]) -> Builder<'b> {
    let mut builder = Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(encoded)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in services {
        builder = builder.with_service_name(*name);
    }
    builder
}

fn erase<S>(service: S) -> Serve
where
    S: Service<Request<UpstreamBody>, Response = Response<tonic::body::Body>, Future = Answer>
        + Clone
        + Send
        + Sync
        + 'static,
{
    Arc::new(move |request| service.clone().call(request))
}
