//! gRPC-Web: requests translated to gRPC and passed through, responses translated back.
//!
//! The translation is `tonic-web`'s: it decodes `application/grpc-web` bodies as they are and
//! `application/grpc-web-text` bodies from base64 (in chunks of any size), and answers with
//! the upstream's frames followed by its trailers as one last frame flagged `0x80`, base64
//! encoded again in text mode. It wraps a tower service, [`Passthrough`], that hands the
//! translated request to [`Gateway::passthrough`], so both directions stream unbuffered.
//!
//! Text-mode request bodies are decoded here instead (`text`), so that a body that is not
//! base64 is the client's `INVALID_ARGUMENT`, saying at which byte: refused before the
//! upstream is called when its first chunk shows it, and otherwise by cancelling the call.

mod text;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower_layer::Layer;
use tower_service::Service;

use self::text::{Refusal, WebBody};
use super::body::{BoxError, ResponseBody};
use super::gateway::Gateway;
use super::respond;
use crate::error::quoted;
use crate::error::{ErrorSource, GatewayError};
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
        let (request, refusal) = self.decode_text(request).await;
        let passthrough = Passthrough {
            gateway: self.clone(),
            refusal,
        };
        let service = tonic_web::GrpcWebLayer::new().layer(passthrough);
        let mut response = call(service, request)
            .await
            .map(|body| unsized_body(body.map_err(Into::into)));
        // The upstream's length, if it sent one, is not the translated body's.
        response.headers_mut().remove(CONTENT_LENGTH);
        response
    }

    /// A text-mode request with its body decoded here and the binary content type, so that
    /// `tonic-web` passes it on as it is, and the refusal its body records; its first chunk is
    /// read ahead (for at most the body timeout). Other requests are left as they are.
    async fn decode_text(&self, request: Request<Incoming>) -> (Request<WebBody>, Option<Refusal>) {
        let (mut parts, body) = request.into_parts();
        let binary = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|ct| ct.to_str().ok())
            .and_then(|ct| ct.strip_prefix("application/grpc-web-text"))
            .map(|suffix| HeaderValue::from_static(binary_content_type(suffix)));
        let Some(binary) = binary else {
            return (Request::from_parts(parts, WebBody::binary(body)), None);
        };
        parts.headers.insert(CONTENT_TYPE, binary);
        let refusal = Refusal::default();
        let mut body = WebBody::text(body, refusal.clone());
        body.peek(self.settings.body_timeout).await;
        (Request::from_parts(parts, body), Some(refusal))
    }
}

/// The binary content type of a text one, by what follows `application/grpc-web-text`.
fn binary_content_type(suffix: &str) -> &'static str {
    match suffix {
        "+proto" => "application/grpc-web+proto",
        _ => "application/grpc-web",
    }
}

/// Calls a service that cannot fail, after waiting until it is ready, as tower requires.
async fn call<S, B, R>(mut service: S, request: Request<R>) -> Response<B>
where
    S: Service<Request<R>, Response = Response<B>, Error = Infallible>,
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
    let error = GatewayError::new(Code::Internal, message).from_source(ErrorSource::Client);
    let mut response = respond::grpc_web(&error);
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// The passthrough as the tower service `tonic-web` wraps. With a refusal (text mode), the
/// call is answered `INVALID_ARGUMENT` once the body records one: at once when it did before
/// the call, or in place of the upstream's answer, or as the end of its stream.
#[derive(Clone)]
struct Passthrough {
    gateway: Arc<Gateway>,
    refusal: Option<Refusal>,
}

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
        let gateway = self.gateway.clone();
        let refusal = self.refusal.clone();
        let request = request.map(|body| unsized_body(body.map_err(Into::into)));
        Box::pin(async move {
            let Some(refusal) = refusal else {
                return Ok(gateway.passthrough(request).await);
            };
            if let Some(reason) = refusal.get() {
                return Ok(respond::grpc_web(&GatewayError::invalid_argument(reason)));
            }
            let response = gateway.passthrough(request).await;
            Ok(match refusal.get() {
                Some(reason) => respond::grpc_web(&GatewayError::invalid_argument(reason)),
                None => response.map(|body| {
                    unsized_body(Refusable {
                        body: Some(body),
                        refusal,
                    })
                }),
            })
        })
    }
}

/// An upstream's response to a text-mode call: it ends with an `INVALID_ARGUMENT` status
/// instead as soon as the request body records a refusal (the upstream stream is reset then,
/// since the request body failed).
struct Refusable {
    body: Option<ResponseBody>,
    refusal: Refusal,
}

impl http_body::Body for Refusable {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = std::task::ready!(Pin::new(body).poll_frame(cx));
        let Some(reason) = self.refusal.get() else {
            return Poll::Ready(polled);
        };
        let mut trailers = HeaderMap::new();
        crate::grpc::status::insert_status(&mut trailers, Code::InvalidArgument, reason);
        self.body = None;
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
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
