//! gRPC-Web: requests translated to gRPC and passed through, responses translated back.
//!
//! The translation is `tonic-web`'s: it decodes `application/grpc-web` bodies as they are and
//! `application/grpc-web-text` bodies from base64 (in chunks of any size), and answers with
//! the upstream's frames followed by its trailers as one last frame flagged `0x80`, base64
//! encoded again in text mode. It wraps a tower service, [`Passthrough`], that hands the
//! translated request to [`Gateway::passthrough`], so both directions stream unbuffered.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower_layer::Layer;
use tower_service::Service;

use super::passthrough::grpc_error;
use super::{BoxError, Gateway, ResponseBody};
use crate::error::quoted;
use crate::grpc::Code;

/// The content types `tonic-web` translates (it passes anything else through untouched,
/// which would send gRPC-Web framing to an upstream that expects gRPC).
const TRANSLATED: [&str; 4] = [
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
];

impl Gateway {
    /// Answers a gRPC-Web request.
    pub(super) async fn handle_grpc_web(
        self: &Arc<Self>,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        if !is_translated(request.headers()) {
            return unsupported(request.headers());
        }
        let mut request = request;
        answer_in_kind(request.headers_mut());
        let service = tonic_web::GrpcWebLayer::new().layer(Passthrough(self.clone()));
        let mut response = call(service, request)
            .await
            .map(|body| unsized_body(body.map_err(Into::into)));
        // The upstream's length, if it sent one, is not the translated body's.
        response.headers_mut().remove(CONTENT_LENGTH);
        response
    }
}

/// Calls a service that cannot fail, after waiting until it is ready, as tower requires.
async fn call<S, B>(mut service: S, request: Request<Incoming>) -> Response<B>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
{
    let ready = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
    let response = match ready {
        Ok(()) => service.call(request).await,
        Err(never) => match never {},
    };
    match response {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A body that hides its size. `tonic-web` reports the untranslated body's exact size for the
/// translated one (base64 text is a third longer than what it decodes to), and hyper would
/// send that as `content-length`, which the peer then rejects as a protocol error.
struct Unsized<B>(B);

fn unsized_body<B>(body: B) -> UnsyncBoxBody<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static,
{
    UnsyncBoxBody::new(Unsized(body))
}

impl<B> http_body::Body for Unsized<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

fn is_translated(headers: &HeaderMap) -> bool {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    content_type.is_some_and(|ct| TRANSLATED.contains(&ct))
}

/// `tonic-web` picks the response encoding from `Accept`; a text-mode request that names no
/// gRPC-Web type there (`*/*`, or none) gets a text-mode answer, as it would from Envoy.
fn answer_in_kind(headers: &mut HeaderMap) {
    let Some(content_type) = headers.get(CONTENT_TYPE).cloned() else {
        return;
    };
    let text = content_type
        .as_bytes()
        .starts_with(b"application/grpc-web-text");
    let accepts_web = headers
        .get(ACCEPT)
        .is_some_and(|a| a.as_bytes().starts_with(b"application/grpc-web"));
    if text && !accepts_web {
        headers.insert(ACCEPT, content_type);
    }
}

/// A gRPC-Web variant the gateway cannot translate (another codec, or parameters).
fn unsupported(headers: &HeaderMap) -> Response<ResponseBody> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default();
    let message = format!(
        "content-type {} is not supported; use application/grpc-web(-text)[+proto]",
        quoted(&content_type)
    );
    let mut response = grpc_error(Code::Internal, &message);
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// The passthrough as the tower service `tonic-web` wraps.
#[derive(Clone)]
struct Passthrough(Arc<Gateway>);

type PassthroughFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl Service<Request<tonic::body::Body>> for Passthrough {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = PassthroughFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let gateway = self.0.clone();
        let request = request.map(|body| unsized_body(body.map_err(Into::into)));
        Box::pin(async move { Ok(gateway.passthrough(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, content_type.parse().unwrap());
        h
    }

    #[test]
    fn translated_content_types() {
        for ct in TRANSLATED {
            assert!(is_translated(&headers(ct)), "{ct}");
        }
        for ct in [
            "application/grpc-web+json",
            "application/grpc-web; charset=utf-8",
        ] {
            assert!(!is_translated(&headers(ct)), "{ct}");
            assert_eq!(unsupported(&headers(ct)).status(), 415);
        }
    }

    #[test]
    fn text_requests_get_text_answers_unless_they_ask_otherwise() {
        let mut h = headers("application/grpc-web-text");
        h.insert(ACCEPT, "*/*".parse().unwrap());
        answer_in_kind(&mut h);
        assert_eq!(h[ACCEPT], "application/grpc-web-text");

        let mut h = headers("application/grpc-web-text+proto");
        h.insert(ACCEPT, "application/grpc-web+proto".parse().unwrap());
        answer_in_kind(&mut h);
        assert_eq!(h[ACCEPT], "application/grpc-web+proto");

        let mut h = headers("application/grpc-web");
        answer_in_kind(&mut h);
        assert!(!h.contains_key(ACCEPT));
    }
}
