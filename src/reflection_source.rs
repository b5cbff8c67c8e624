//! Descriptors from the upstreams themselves (`--descriptors-from-reflection`): each upstream's
//! gRPC server reflection (v1, falling back to v1alpha) lists its services, and gives the files
//! that define them and every file those import. The files come as the server encoded them, so
//! their options (`google.api.http`) and source info (comments) survive; they are assembled into
//! one `FileDescriptorSet` per upstream, which the snapshot loads after the files given on the
//! command line (a file name already loaded wins) and validates like any other set.
//!
//! Fetched at start-up, on every reload, and every `--reflection-interval` (see
//! [`crate::reload`]); a refresh that brings the same bytes swaps nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use prost::Message;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::descriptor::EMBEDDED_FILES;
use crate::grpc::RawCodec;
use crate::upstream::{Upstream, UpstreamBody, UpstreamResponseBody};

/// The bound on fetching one upstream's descriptors, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Rounds of asking for imported files before giving up (each round is one call).
const MAX_ROUNDS: usize = 32;
/// The largest reflection response message accepted.
const MAX_MESSAGE: usize = 64 << 20;

const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// The descriptor sets of every upstream, named for messages (`reflection of URL`).
pub async fn fetch_all(upstreams: &[Arc<Upstream>]) -> Result<Vec<(String, Bytes)>, String> {
    let fetches = upstreams.iter().map(|upstream| async move {
        let set = tokio::time::timeout(FETCH_TIMEOUT, fetch(upstream.clone()))
            .await
            .map_err(|_| {
                format!(
                    "upstream {}: reflection did not answer within {FETCH_TIMEOUT:?}",
                    upstream.url()
                )
            })?
            .map_err(|e| format!("upstream {}: {e}", upstream.url()))?;
        Ok::<_, String>((format!("reflection of {}", upstream.url()), set))
    });
    futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .collect()
}

/// One upstream's services and the files they need, as an encoded `FileDescriptorSet`.
pub async fn fetch(upstream: Arc<Upstream>) -> Result<Bytes, String> {
    let mut client = Client::new(upstream);
    let services = client.list_services().await?;
    let mut files: BTreeMap<String, FileEntry> = BTreeMap::new();
    let wanted: Vec<MessageRequest> = services
        .iter()
        .map(|s| MessageRequest::FileContainingSymbol(s.clone()))
        .collect();
    for (request, answer) in wanted.iter().zip(client.call(&wanted).await?) {
        let protos = file_protos(request, answer)?;
        add_files(&mut files, protos)?;
    }
    for _ in 0..MAX_ROUNDS {
        let missing = missing_imports(&files);
        if missing.is_empty() {
            return Ok(encode_set(&files));
        }
        let asked: Vec<MessageRequest> = missing
            .iter()
            .map(|name| MessageRequest::FileByFilename(name.clone()))
            .collect();
        for (request, answer) in asked.iter().zip(client.call(&asked).await?) {
            let protos = file_protos(request, answer)?;
            add_files(&mut files, protos)?;
        }
        if let Some(name) = missing.iter().find(|name| !files.contains_key(*name)) {
            return Err(format!("reflection did not send the file {name:?}"));
        }
    }
    Err(format!(
        "the imports of the services' files did not resolve in {MAX_ROUNDS} rounds"
    ))
}

/// One file as the server sent it, and the names it imports.
struct FileEntry {
    raw: Bytes,
    dependencies: Vec<String>,
}

fn add_files(files: &mut BTreeMap<String, FileEntry>, protos: Vec<Vec<u8>>) -> Result<(), String> {
    for raw in protos {
        // Decoded only to read the name and imports; the raw bytes keep every option.
        let file = prost_types::FileDescriptorProto::decode(raw.as_slice())
            .map_err(|e| format!("reflection sent a file that does not decode: {e}"))?;
        files.entry(file.name().to_string()).or_insert(FileEntry {
            raw: Bytes::from(raw),
            dependencies: file.dependency,
        });
    }
    Ok(())
}

/// Imports not received yet, except the files built into the gateway, which every snapshot
/// has (and which win over the upstream's copies anyway).
fn missing_imports(files: &BTreeMap<String, FileEntry>) -> BTreeSet<String> {
    files
        .values()
        .flat_map(|f| f.dependencies.iter())
        .filter(|name| !files.contains_key(*name) && !built_in(name))
        .cloned()
        .collect()
}

fn built_in(name: &str) -> bool {
    name.starts_with("google/protobuf/") || EMBEDDED_FILES.iter().any(|(n, _)| *n == name)
}

/// The files, imports first, as `FileDescriptorSet.file` entries (field 1).
fn encode_set(files: &BTreeMap<String, FileEntry>) -> Bytes {
    let mut ordered: Vec<&str> = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    fn visit<'a>(
        name: &'a str,
        files: &'a BTreeMap<String, FileEntry>,
        done: &mut BTreeSet<&'a str>,
        ordered: &mut Vec<&'a str>,
    ) {
        let Some(file) = files.get(name) else { return };
        if !done.insert(name) {
            return;
        }
        for dependency in &file.dependencies {
            visit(dependency, files, done, ordered);
        }
        ordered.push(name);
    }
    for name in files.keys() {
        visit(name, files, &mut done, &mut ordered);
    }
    let mut out = BytesMut::new();
    for name in ordered {
        let raw = &files[name].raw;
        out.put_u8(0x0a);
        prost::encoding::encode_varint(raw.len() as u64, &mut out);
        out.put_slice(raw);
    }
    out.freeze()
}

fn file_protos(request: &MessageRequest, answer: MessageResponse) -> Result<Vec<Vec<u8>>, String> {
    match answer {
        MessageResponse::FileDescriptorResponse(files) => Ok(files.file_descriptor_proto),
        MessageResponse::ErrorResponse(e) => Err(format!(
            "reflection could not answer {}: {} (code {})",
            describe(request),
            e.error_message,
            e.error_code
        )),
        _ => Err(format!(
            "reflection answered {} with something else",
            describe(request)
        )),
    }
}

fn describe(request: &MessageRequest) -> String {
    match request {
        MessageRequest::FileContainingSymbol(s) => format!("the file of {s}"),
        MessageRequest::FileByFilename(f) => format!("the file {f:?}"),
        MessageRequest::ListServices(_) => "the list of services".into(),
        _ => "a request".into(),
    }
}

/// Why a reflection call failed.
enum CallError {
    /// The server has no reflection service of this version.
    Unimplemented,
    Other(String),
}

/// Reflection calls to one upstream, over its connections.
struct Client {
    grpc: tonic::client::Grpc<Transport>,
    path: &'static str,
}

impl Client {
    fn new(upstream: Arc<Upstream>) -> Client {
        let grpc = tonic::client::Grpc::new(Transport(upstream))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Client { grpc, path: V1 }
    }

    /// The services, through v1 or else v1alpha (which the client then keeps using); the
    /// reflection services themselves are left out.
    async fn list_services(&mut self) -> Result<Vec<String>, String> {
        let list = [MessageRequest::ListServices(String::new())];
        let answers = match self.try_call(&list).await {
            Err(CallError::Unimplemented) => {
                self.path = V1ALPHA;
                self.try_call(&list).await
            }
            other => other,
        };
        let answers = answers.map_err(|e| match e {
            CallError::Unimplemented => {
                "it does not serve gRPC server reflection (v1 or v1alpha)".to_string()
            }
            CallError::Other(e) => e,
        })?;
        match answers.into_iter().next() {
            Some(MessageResponse::ListServicesResponse(list)) => Ok(list
                .service
                .into_iter()
                .map(|s| s.name)
                .filter(|name| !name.starts_with("grpc.reflection."))
                .collect()),
            Some(MessageResponse::ErrorResponse(e)) => Err(format!(
                "reflection could not list the services: {}",
                e.error_message
            )),
            _ => Err("reflection did not list the services".into()),
        }
    }

    async fn call(&mut self, requests: &[MessageRequest]) -> Result<Vec<MessageResponse>, String> {
        self.try_call(requests).await.map_err(|e| match e {
            CallError::Unimplemented => "reflection went away".to_string(),
            CallError::Other(e) => e,
        })
    }

    /// One stream: every request sent, then every answer read, in order.
    async fn try_call(
        &mut self,
        requests: &[MessageRequest],
    ) -> Result<Vec<MessageResponse>, CallError> {
        let encoded: Vec<Bytes> = requests
            .iter()
            .map(|r| {
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(r.clone()),
                };
                Bytes::from(request.encode_to_vec())
            })
            .collect();
        let status = |s: tonic::Status| match s.code() {
            tonic::Code::Unimplemented => CallError::Unimplemented,
            _ => CallError::Other(format!("reflection failed: {}", s.message())),
        };
        self.grpc
            .ready()
            .await
            .map_err(|e| CallError::Other(format!("cannot reach the upstream: {e}")))?;
        let stream = tonic::Request::new(futures_util::stream::iter(encoded));
        let path = PathAndQuery::from_static(self.path);
        let response = self
            .grpc
            .streaming(stream, path, RawCodec)
            .await
            .map_err(status)?;
        let mut messages = response.into_inner();
        let mut answers = Vec::with_capacity(requests.len());
        while let Some(message) = messages.message().await.map_err(status)? {
            let response = ServerReflectionResponse::decode(message).map_err(|e| {
                CallError::Other(format!("reflection sent an undecodable answer: {e}"))
            })?;
            match response.message_response {
                Some(answer) => answers.push(answer),
                None => return Err(CallError::Other("reflection sent an empty answer".into())),
            }
        }
        if answers.len() != requests.len() {
            return Err(CallError::Other(format!(
                "reflection answered {} of {} requests",
                answers.len(),
                requests.len()
            )));
        }
        Ok(answers)
    }
}

/// tonic's client over an [`Upstream`]'s connections.
#[derive(Clone)]
struct Transport(Arc<Upstream>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<UpstreamResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let upstream = self.0.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = upstream.uri(&path).map_err(|e| e.to_string())?;
            let body: UpstreamBody = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
            let request = http::Request::from_parts(parts, body);
            upstream
                .send(request)
                .await
                .map_err(|e| BoxError::from(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, deps: &[&str]) -> (String, FileEntry) {
        let file = prost_types::FileDescriptorProto {
            name: Some(name.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        (
            name.to_string(),
            FileEntry {
                raw: Bytes::from(file.encode_to_vec()),
                dependencies: file.dependency,
            },
        )
    }

    #[test]
    fn sets_put_imports_first_and_skip_built_in_files() {
        let files: BTreeMap<String, FileEntry> = [
            entry("a.proto", &["z.proto", "google/api/annotations.proto"]),
            entry("z.proto", &["google/protobuf/timestamp.proto"]),
        ]
        .into_iter()
        .collect();
        assert!(missing_imports(&files).is_empty());
        let set = prost_types::FileDescriptorSet::decode(encode_set(&files)).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["z.proto", "a.proto"]);
        let partial: BTreeMap<String, FileEntry> =
            [entry("a.proto", &["b.proto"])].into_iter().collect();
        assert_eq!(
            missing_imports(&partial).into_iter().collect::<Vec<_>>(),
            ["b.proto"]
        );
    }
}
