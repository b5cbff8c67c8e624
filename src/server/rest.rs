//! The REST handler: match the route, assemble the request message, call the upstream, and
//! render its answer (or the error) for the client. Streaming methods continue in
//! [`super::rest_stream`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

pub(super) use super::body::full;
use super::body::ResponseBody;
use super::deadline;
use super::gateway::Gateway;
use super::multipart;
use super::respond::{self, JSON};
use super::rest_compression::{self, ResponseCoding};
use super::tags::RouteTag;
use crate::error::GatewayError;
use crate::grpc::metadata;
use crate::route::{Lookup, RoutePlan};
use crate::snapshot::Snapshot;
use crate::transcode::{self, RenderedBody, RequestInput};
use crate::upstream::call::{self, UnaryReply};
use crate::upstream::Upstream;

/// How a unary REST answer is written: its content coding, and whether the client asked for
/// the response message's protobuf wire bytes (`Accept: application/x-protobuf`) over JSON.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub coding: ResponseCoding,
    pub protobuf: bool,
}

impl Answer {
    pub(super) fn of(settings: &crate::server::Settings, headers: &HeaderMap) -> Answer {
        Answer {
            coding: ResponseCoding::of(settings, headers),
            protobuf: accepts_protobuf(headers),
        }
    }
}

/// Whether `Accept` names `application/x-protobuf` (or `application/protobuf`) with a weight
/// above that of `application/json` (which counts as 0 when not named: `*/*` leaves the
/// choice to the explicit types).
fn accepts_protobuf(headers: &HeaderMap) -> bool {
    let mut protobuf = 0.0f32;
    let mut json = 0.0f32;
    let ranges = headers.get_all(http::header::ACCEPT).iter();
    for range in ranges
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut fields = range.split(';');
        let media = fields.next().unwrap_or("").trim();
        let is = |name: &str| media.eq_ignore_ascii_case(name);
        let q = || {
            fields
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
        };
        if is("application/x-protobuf") || is("application/protobuf") {
            protobuf = protobuf.max(q());
        } else if is("application/json") {
            json = json.max(q());
        }
    }
    protobuf > 0.0 && protobuf > json
}

/// What every upstream call of a REST request needs besides its body.
pub(super) struct CallSetup {
    pub headers: HeaderMap,
    pub deadline: Option<Duration>,
}

impl Gateway {
    /// Answers one REST request; never fails: every error becomes a `google.rpc.Status` body.
    pub(super) async fn handle_rest(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot();
        let mut route = None;
        let mut response = match self.rest(&snapshot, request, peer, &mut route).await {
            Ok(response) => response,
            Err(error) => {
                let mut response = respond::rest(&error, &snapshot, &self.settings.json);
                let status = response.status();
                rest_compression::mark_unsupported(response.headers_mut(), status);
                response
            }
        };
        if let Some(label) = route {
            response.extensions_mut().insert(RouteTag(label));
        }
        response
    }

    async fn rest(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        request: Request<Incoming>,
        peer: SocketAddr,
        route: &mut Option<Arc<str>>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let (plan, vars) = match snapshot.routes.lookup(&parts.method, path) {
            Lookup::Found { value, vars, .. } => (value.clone(), vars),
            Lookup::MethodNotAllowed { allowed } => {
                return Err(GatewayError::not_allowed(&parts.method, path, &allowed))
            }
            Lookup::NotFound if path == "/" && super::docs::is_read(&parts.method) => {
                return Ok(super::docs::landing(&self.settings, &parts.headers));
            }
            Lookup::NotFound => return Err(GatewayError::not_found(path)),
            Lookup::BadPath(message) => return Err(GatewayError::invalid_argument(message)),
        };
        *route = Some(plan.label.clone());
        let setup = self.call_setup(&parts, peer, &plan)?;
        if !plan.is_unary() {
            // Boxed, like multipart below: a unary call's future should not carry their room.
            let stream = self.stream(snapshot, plan, vars.to_vec(), parts, body, setup);
            return Box::pin(stream).await;
        }
        let answer = Answer::of(&self.settings, &parts.headers);
        let body = self.read_request_body(&parts.headers, body).await?;
        // An `HttpBody` body takes a multipart body as it is.
        let multipart = !plan.http_body_request && multipart::is_multipart(&parts.headers);
        let form = match multipart {
            true => {
                let limit = self.settings.max_form_parts;
                let parts = multipart::read_parts(&parts.headers, body.clone(), limit);
                Some(Box::pin(parts).await?)
            }
            false => None,
        };
        let input = RequestInput {
            body: &body,
            content_type: content_type(&parts.headers),
            vars: &vars,
            query: parts.uri.query(),
            form: form.as_deref(),
        };
        let frame = transcode::build_request(&plan, &snapshot.schemas, &self.settings.json, input)?;
        self.validate_frame(snapshot, &plan.input, &frame)?;
        let reply = self
            .call_unary(&plan, call::single_frame(frame), setup)
            .await?;
        self.success_response(snapshot, &plan, reply, answer)
    }

    /// Reads the whole request body and decodes its `Content-Encoding`: both the body as sent
    /// and as decoded are bounded by `--max-request-bytes`. An unknown coding is refused
    /// before the body is read.
    pub(super) async fn read_request_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
    ) -> Result<Bytes, GatewayError> {
        let encoding = rest_compression::request_encoding(headers)?;
        let body = self.read_body(body).await?;
        rest_compression::decode_request(encoding, body, self.settings.max_request_bytes)
    }

    /// Reads the whole request body within the size and time limits, counting its bytes.
    pub(super) async fn read_body(&self, body: Incoming) -> Result<Bytes, GatewayError> {
        let limit = self.settings.body_timeout;
        let body = tokio::time::timeout(limit, read_body(body, self.settings.max_request_bytes))
            .await
            .map_err(|_| GatewayError::body_timeout(limit))??;
        self.metrics.bytes_in(body.len() as u64);
        crate::access::read(body.len() as u64);
        Ok(body)
    }

    /// The upstream metadata and deadline of a request.
    pub(super) fn call_setup(
        &self,
        parts: &Parts,
        peer: SocketAddr,
        plan: &RoutePlan,
    ) -> Result<CallSetup, GatewayError> {
        let deadline = deadline::deadline(&self.settings, plan.grpc_path.path(), &parts.headers)?;
        let mut headers = HeaderMap::new();
        let authority = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let peer = metadata::Peer {
            ip: Some(peer.ip()),
            authority,
        };
        let forward = &self.settings.forward_headers;
        metadata::request_metadata(&parts.headers, peer, forward, &mut headers)?;
        Ok(CallSetup { headers, deadline })
    }

    /// The upstream that serves `plan`'s method.
    pub(super) fn upstream_of(&self, plan: &RoutePlan) -> Result<&Arc<Upstream>, GatewayError> {
        self.upstream(plan.upstream)
            .ok_or_else(|| GatewayError::internal("no upstream configured for this route"))
    }

    /// A call with a single response message, bounded by the deadline.
    pub(super) async fn call_unary(
        &self,
        plan: &RoutePlan,
        body: call::CallBody,
        setup: CallSetup,
    ) -> Result<UnaryReply, GatewayError> {
        let upstream = self.upstream_of(plan)?;
        let limit = self.settings.max_response_bytes;
        let call = call::unary(upstream, plan, body, setup.headers, setup.deadline, limit);
        deadline::within(setup.deadline, call).await
    }

    /// The response to a unary reply, compressed as `coding` says.
    pub(super) fn success_response(
        &self,
        snapshot: &Snapshot,
        plan: &RoutePlan,
        reply: UnaryReply,
        answer: Answer,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let coding = answer.coding;
        let rendered = match answer.protobuf {
            true => transcode::render_protobuf(plan, reply.message)?,
            false => transcode::render_response(
                plan,
                &snapshot.schemas,
                &self.settings.json,
                reply.message,
            )?,
        };
        let (content_type, body) = match rendered {
            RenderedBody::Json(json) => (JSON, Bytes::from(json)),
            RenderedBody::Raw { content_type, data } => (raw_content_type(&content_type), data),
        };
        let mut headers = HeaderMap::new();
        let mut status = http::StatusCode::OK;
        metadata::apply_http_overrides(&reply.headers, &mut status, &mut headers);
        metadata::response_metadata(&reply.headers, "grpc-metadata-", &mut headers);
        metadata::response_metadata(&reply.trailers, "grpc-trailer-", &mut headers);
        let body = coding.whole(&content_type, body, &mut headers);
        headers.insert(CONTENT_TYPE, content_type);
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

pub(super) fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

/// The content type of a raw `HttpBody`, `application/octet-stream` when unusable.
pub(super) fn raw_content_type(content_type: &str) -> HeaderValue {
    HeaderValue::from_str(content_type)
        .ok()
        .filter(|_| !content_type.is_empty())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub(super) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    // An announced Content-Length beyond the limit is refused before a byte is read.
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(GatewayError::payload_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::payload_too_large(limit))
        }
        Err(e) => Err(GatewayError::invalid_argument(format!(
            "cannot read the request body: {e}"
        ))),
    }
}
