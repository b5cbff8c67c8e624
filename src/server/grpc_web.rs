//! gRPC-Web: requests translated to gRPC and passed through, responses translated back.

use http::{Request, Response};
use hyper::body::Incoming;

use super::passthrough::grpc_error;
use super::{Gateway, ResponseBody};
use crate::grpc::Code;

impl Gateway {
    /// Answers a gRPC-Web request.
    pub(super) async fn handle_grpc_web(
        &self,
        _request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        grpc_error(Code::Unimplemented, "gRPC-Web is not served yet")
    }
}
