//! Classify each request by protocol, then hand it to the code that speaks it: native gRPC
//! (passthrough), gRPC-Web (translated, then passthrough), or REST (transcoded).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, ORIGIN};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;

use super::respond;
use super::{Gateway, ResponseBody};
use crate::error::GatewayError;
use crate::grpc::Code;

/// The protocol a request speaks, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc`, `application/grpc+proto`, ...
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+proto`, `application/grpc-web-text`, ...
    GrpcWeb,
    /// Everything else.
    Rest,
}

/// Sorts a request by its `content-type`.
pub fn classify(headers: &HeaderMap) -> Protocol {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.starts_with("application/grpc-web") {
        Protocol::GrpcWeb
    } else if media == "application/grpc" || media.starts_with("application/grpc+") {
        Protocol::Grpc
    } else {
        Protocol::Rest
    }
}

impl Gateway {
    /// Answers one request, whatever its protocol; never fails. With CORS on, preflights are
    /// answered before any routing and every other answer gets its CORS headers here.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let Some(cors) = &self.settings.cors else {
            return self.dispatch(request, peer).await;
        };
        if let Some(preflight) = cors.preflight(request.method(), request.headers()) {
            return preflight;
        }
        let origin = request.headers().get(ORIGIN).cloned();
        let mut response = self.dispatch(request, peer).await;
        cors.decorate(origin.as_ref(), response.headers_mut());
        response
    }

    async fn dispatch(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        match classify(request.headers()) {
            Protocol::Grpc if request.version() < http::Version::HTTP_2 => {
                respond::grpc(&GatewayError::new(
                    Code::Unimplemented,
                    "gRPC needs HTTP/2; over HTTP/1.1 use gRPC-Web (application/grpc-web)",
                ))
            }
            Protocol::Grpc => self.handle_grpc(request).await,
            Protocol::GrpcWeb => self.handle_grpc_web(request).await,
            Protocol::Rest => self.handle_rest(request, peer).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ct: &str) -> Protocol {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, ct.parse().unwrap());
        classify(&h)
    }

    #[test]
    fn content_types() {
        assert_eq!(kind("application/grpc"), Protocol::Grpc);
        assert_eq!(kind("application/grpc+proto"), Protocol::Grpc);
        assert_eq!(kind("application/grpc-web"), Protocol::GrpcWeb);
        assert_eq!(kind("application/grpc-web-text+proto"), Protocol::GrpcWeb);
        assert_eq!(kind("application/grpcx"), Protocol::Rest);
        assert_eq!(kind("application/json"), Protocol::Rest);
        assert_eq!(classify(&HeaderMap::new()), Protocol::Rest);
    }
}
