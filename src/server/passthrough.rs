//! Native gRPC passthrough: frames and trailers streamed to the upstream serving the service.

use http::{Request, Response};
use hyper::body::Incoming;

use super::{Gateway, ResponseBody};
use crate::grpc::Code;

impl Gateway {
    /// Answers a native gRPC request.
    pub(super) async fn handle_grpc(&self, _request: Request<Incoming>) -> Response<ResponseBody> {
        grpc_error(
            Code::Unimplemented,
            "native gRPC passthrough is not served yet",
        )
    }
}

/// A trailers-only gRPC error response.
pub(super) fn grpc_error(code: Code, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(super::rest::full(bytes::Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    let encoded =
        percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    if let Ok(v) = http::HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", v);
    }
    response
}
