//! gRPC server reflection (v1 and v1alpha, whose messages are the same on the wire) answered
//! from the snapshot's descriptors: one answer per request, and a lookup that finds nothing
//! is an `error_response` (`NOT_FOUND`) in the stream, which stays open, as the reference
//! implementations answer and as clients that reuse one stream expect.

use std::collections::HashSet;

use prost_reflect::{DescriptorPool, FileDescriptor};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{
    ErrorResponse, ExtensionNumberResponse, ExtensionRequest, FileDescriptorResponse,
    ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};

use super::Code;
use crate::error::quoted;

/// The reflection services, as their paths name them.
pub const V1: &str = "grpc.reflection.v1.ServerReflection";
pub const V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// What reflection answers from: the loaded files plus the reflection protocol's own, and the
/// services listed (the loaded ones, sorted, and the reflection services).
#[derive(Debug)]
pub struct ReflectionIndex {
    pool: DescriptorPool,
    services: Vec<String>,
}

impl ReflectionIndex {
    /// The index of `pool`, listing `services`.
    pub fn new<'s>(pool: &DescriptorPool, services: impl IntoIterator<Item = &'s str>) -> Self {
        let mut pool = pool.clone();
        for own in [
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            // Already there (an API that loads them itself) or not, the services are listed.
            let _ = pool.decode_file_descriptor_set(own);
        }
        let mut services: Vec<String> = services.into_iter().map(str::to_owned).collect();
        services.extend([V1.to_owned(), V1ALPHA.to_owned()]);
        services.sort_unstable();
        services.dedup();
        ReflectionIndex { pool, services }
    }

    /// The answer to one request.
    pub fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let response = match &request.message_request {
            Some(MessageRequest::FileByFilename(name)) => {
                self.files(self.pool.get_file_by_name(name), "file", name)
            }
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                self.files(self.file_of_symbol(symbol), "symbol", symbol)
            }
            Some(MessageRequest::FileContainingExtension(extension)) => self.extension(extension),
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => self.extension_numbers(name),
            Some(MessageRequest::ListServices(_)) => self.list(),
            None => error(Code::InvalidArgument, "the request asks nothing".into()),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(response),
        }
    }

    fn list(&self) -> MessageResponse {
        MessageResponse::ListServicesResponse(ListServiceResponse {
            service: self
                .services
                .iter()
                .map(|name| ServiceResponse { name: name.clone() })
                .collect(),
        })
    }

    /// The file and every file it depends on, directly or not, the file first.
    fn files(&self, file: Option<FileDescriptor>, what: &str, name: &str) -> MessageResponse {
        let Some(file) = file else {
            return error(Code::NotFound, format!("{what} {} not found", quoted(name)));
        };
        let mut seen = HashSet::new();
        let mut queue = vec![file];
        let mut encoded = Vec::new();
        while let Some(file) = queue.pop() {
            if !seen.insert(file.name().to_owned()) {
                continue;
            }
            encoded.push(file.encode_to_vec());
            queue.extend(file.dependencies());
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: encoded,
        })
    }

    /// The file declaring a fully-qualified symbol: a message, enum, service, extension, a
    /// method (`Service.Method`) or a field (`Message.field`).
    fn file_of_symbol(&self, symbol: &str) -> Option<FileDescriptor> {
        let pool = &self.pool;
        let named = pool
            .get_message_by_name(symbol)
            .map(|m| m.parent_file())
            .or_else(|| pool.get_enum_by_name(symbol).map(|e| e.parent_file()))
            .or_else(|| pool.get_service_by_name(symbol).map(|s| s.parent_file()))
            .or_else(|| pool.get_extension_by_name(symbol).map(|e| e.parent_file()));
        named.or_else(|| {
            let (parent, member) = symbol.rsplit_once('.')?;
            let service = pool
                .get_service_by_name(parent)
                .filter(|s| s.methods().any(|m| m.name() == member));
            let message = pool
                .get_message_by_name(parent)
                .filter(|m| m.get_field_by_name(member).is_some());
            service
                .map(|s| s.parent_file())
                .or_else(|| message.map(|m| m.parent_file()))
        })
    }

    fn extension(&self, request: &ExtensionRequest) -> MessageResponse {
        let file = self
            .pool
            .get_message_by_name(&request.containing_type)
            .and_then(|m| {
                m.extensions()
                    .find(|e| i64::from(e.number()) == i64::from(request.extension_number))
            })
            .map(|e| e.parent_file());
        let name = format!("{}({})", request.containing_type, request.extension_number);
        self.files(file, "extension", &name)
    }

    fn extension_numbers(&self, name: &str) -> MessageResponse {
        let Some(message) = self.pool.get_message_by_name(name) else {
            return error(Code::NotFound, format!("type {} not found", quoted(name)));
        };
        MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
            base_type_name: name.to_owned(),
            extension_number: message
                .extensions()
                .filter_map(|e| i32::try_from(e.number()).ok())
                .collect(),
        })
    }
}

fn error(code: Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: code as i32,
        error_message: message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ReflectionIndex {
        let pool = DescriptorPool::decode(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET).unwrap();
        ReflectionIndex::new(&pool, ["grpc.reflection.v1.ServerReflection"])
    }

    fn ask(index: &ReflectionIndex, request: MessageRequest) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        index.answer(request).message_response.unwrap()
    }

    #[test]
    fn unknown_names_are_not_found_answers() {
        let index = index();
        for request in [
            MessageRequest::FileByFilename("nope.proto".into()),
            MessageRequest::FileContainingSymbol("no.Such".into()),
            MessageRequest::AllExtensionNumbersOfType("no.Such".into()),
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "no.Such".into(),
                extension_number: 7,
            }),
        ] {
            match ask(&index, request) {
                MessageResponse::ErrorResponse(e) => assert_eq!(e.error_code, 5),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn symbols_of_every_kind_find_their_file() {
        let index = index();
        for symbol in [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1.ServerReflection.ServerReflectionInfo",
            "grpc.reflection.v1.ServerReflectionRequest",
            "grpc.reflection.v1.ServerReflectionRequest.host",
        ] {
            match ask(&index, MessageRequest::FileContainingSymbol(symbol.into())) {
                MessageResponse::FileDescriptorResponse(f) => {
                    assert!(!f.file_descriptor_proto.is_empty(), "{symbol}")
                }
                other => panic!("{symbol}: {other:?}"),
            }
        }
        match ask(&index, MessageRequest::ListServices(String::new())) {
            MessageResponse::ListServicesResponse(l) => assert_eq!(l.service.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
