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

#[tokio::test]
async fn an_unknown_symbol_ends_the_stream_with_not_found() {
    use v1::server_reflection_client::ServerReflectionClient;
    let gw = gateway().await;
    let mut client = ServerReflectionClient::new(grpc_channel(&gw.base).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "nope.Nothing".into(),
            ),
        ),
    };
    // tonic-reflection answers a failed lookup with the call's status, not an ErrorResponse
    // message; grpcurl reports either as "not found".
    let status = match bounded(client.server_reflection_info(stream::iter([request]))).await {
        Err(status) => status,
        Ok(response) => bounded(response.into_inner().message()).await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains("nope.Nothing"), "{status:?}");
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
