//! gRPC server reflection, served by the gateway on its own port for the descriptors it
//! loaded, through `tonic-reflection`'s own clients (v1 and v1alpha), as grpcurl uses it.

use crate::support::*;
use futures_util::stream;
use prost::Message;
use protogate::server::Settings;
use protogate::snapshot::Snapshot;
use tonic_reflection::pb::{v1, v1alpha};

const SERVED: [&str; 4] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "testapi.v1.Library",
    "testapi.v1.Relay",
];

/// A gateway for the test API; reflection never reaches the upstream, so none is running.
async fn gateway() -> Gw {
    start_gateway(relay_sources(), &dead_url().await, Settings::default()).await
}

/// One v1 reflection exchange.
async fn ask_v1(
    gw: &Gw,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    use v1::server_reflection_client::ServerReflectionClient;
    let mut client = ServerReflectionClient::new(grpc_channel(&gw.base).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = bounded(client.server_reflection_info(stream::iter([request])))
        .await
        .unwrap()
        .into_inner();
    let response = bounded(responses.message()).await.unwrap().unwrap();
    response.message_response.unwrap()
}

fn service_names(response: v1::server_reflection_response::MessageResponse) -> Vec<String> {
    let v1::server_reflection_response::MessageResponse::ListServicesResponse(list) = response
    else {
        panic!("not a service list: {response:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

fn files(
    response: v1::server_reflection_response::MessageResponse,
) -> Vec<prost_types::FileDescriptorProto> {
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) = response
    else {
        panic!("not a file response: {response:?}");
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|raw| prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn v1_lists_the_loaded_services() {
    let gw = gateway().await;
    let listed = ask_v1(
        &gw,
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await;
    assert_eq!(service_names(listed), SERVED);
}

#[tokio::test]
async fn v1alpha_lists_the_loaded_services() {
    use v1alpha::server_reflection_client::ServerReflectionClient;
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let gw = gateway().await;
    let mut client = ServerReflectionClient::new(grpc_channel(&gw.base).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = bounded(client.server_reflection_info(stream::iter([request])))
        .await
        .unwrap()
        .into_inner();
    let response = bounded(responses.message()).await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(names, SERVED);
}

#[tokio::test]
async fn describes_the_file_holding_a_service_with_every_call_kind() {
    let gw = gateway().await;
    let request = v1::server_reflection_request::MessageRequest::FileContainingSymbol(
        "testapi.v1.Relay".into(),
    );
    let files = files(ask_v1(&gw, request).await);
    assert_eq!(files.len(), 1);
    let file = &files[0];
    assert_eq!(file.name(), "testapi/v1/streams.proto");
    let service = &file.service[0];
    assert_eq!(service.name(), "Relay");
    let kinds: Vec<(&str, bool, bool)> = service
        .method
        .iter()
        .map(|m| (m.name(), m.client_streaming(), m.server_streaming()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("Say", false, false),
            ("Listen", false, true),
            ("Collect", true, false),
            ("Converse", true, true),
        ]
    );
}

#[tokio::test]
async fn files_keep_their_http_rules_and_their_imports_resolve() {
    let gw = gateway().await;
    let request = v1::server_reflection_request::MessageRequest::FileContainingSymbol(
        "testapi.v1.Library.GetBook".into(),
    );
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(raw) =
        ask_v1(&gw, request).await
    else {
        panic!("not a file response");
    };
    let raw = &raw.file_descriptor_proto[0];
    let template = b"/v1/{name=shelves/*/books/*}";
    assert!(
        raw.windows(template.len()).any(|w| w == template),
        "the google.api.http option was lost"
    );
    let file = prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap();
    for dependency in &file.dependency {
        let request =
            v1::server_reflection_request::MessageRequest::FileByFilename(dependency.clone());
        let found = files(ask_v1(&gw, request).await);
        assert_eq!(found[0].name(), dependency);
    }
}

/// Unknown symbols, files, extensions and extension numbers of unknown types are each answered
/// with an `error_response` (`NOT_FOUND`), and the stream stays open: the next request on it,
/// sent only after that answer came, is answered too (as the reference implementations do,
/// and as clients that reuse one stream expect).
#[tokio::test]
async fn unknown_names_are_error_responses_and_the_stream_stays_usable() {
    use v1::server_reflection_client::ServerReflectionClient;
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let gw = gateway().await;
    let mut client = ServerReflectionClient::new(grpc_channel(&gw.base).await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let requests = tokio_stream_of(rx);
    let mut answers = bounded(client.server_reflection_info(requests))
        .await
        .unwrap()
        .into_inner();
    let unknown = [
        MessageRequest::FileContainingSymbol("nope.Nothing".into()),
        MessageRequest::FileByFilename("nope.proto".into()),
        MessageRequest::AllExtensionNumbersOfType("nope.Nothing".into()),
        MessageRequest::FileContainingExtension(v1::ExtensionRequest {
            containing_type: "nope.Nothing".into(),
            extension_number: 5,
        }),
    ];
    for request in unknown {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        tx.send(request).await.unwrap();
        let answer = bounded(answers.message()).await.unwrap().unwrap();
        match answer.message_response {
            Some(MessageResponse::ErrorResponse(e)) => {
                assert_eq!(e.error_code, tonic::Code::NotFound as i32);
                assert!(e.error_message.contains("nope."), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    tx.send(list).await.unwrap();
    let answer = bounded(answers.message()).await.unwrap().unwrap();
    let names = service_names(answer.message_response.unwrap());
    assert!(names.contains(&"testapi.v1.Relay".into()), "{names:?}");
    drop(tx);
    assert!(
        bounded(answers.message()).await.unwrap().is_none(),
        "ends OK"
    );
}

/// A stream of the messages sent on `rx`.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

#[tokio::test]
async fn a_reload_changes_what_is_reflected() {
    let gw = gateway().await;
    let list = || v1::server_reflection_request::MessageRequest::ListServices(String::new());
    assert!(service_names(ask_v1(&gw, list()).await).contains(&"testapi.v1.Relay".into()));
    let map = protogate::snapshot::UpstreamMap {
        default: Some(0),
        ..Default::default()
    };
    let library_only = Snapshot::build(&library_sources(), &Default::default(), Some(&map));
    gw.gateway.swap(library_only.unwrap());
    let names = service_names(ask_v1(&gw, list()).await);
    assert!(!names.contains(&"testapi.v1.Relay".into()), "{names:?}");
    assert!(names.contains(&"testapi.v1.Library".into()));
}
