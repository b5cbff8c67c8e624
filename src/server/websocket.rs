//! Streaming methods over WebSocket (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2): a
//! browser cannot send a streaming request body, but it can hold a WebSocket, so client and
//! bidi streams reach browsers this way (and server streams, for symmetry; what a browser
//! sees of a client stream's end is in `docs/behaviour.md`).
//!
//! An upgrade to the path of a streaming method's binding, whatever the binding's HTTP
//! method, opens one call: each data frame from the client is a request message, each
//! response message a frame back (`messages.rs`), and the Close frames carry how the call
//! ended (`session.rs`). Everything that can be refused is refused before the upgrade, as an
//! ordinary `google.rpc.Status` answer: a bad handshake or an untrusted origin
//! (`handshake.rs`), an unknown path (404), a unary method (400). The upgrade's headers are
//! the call's metadata, mapped as for REST. The connection is read and written as two
//! sockets (`halves.rs` says why).

mod halves;
pub(crate) mod handshake;
mod messages;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::ResponseBody;
use super::gateway::Gateway;
use super::respond;
use super::tags::{RouteTag, SessionHold};
use crate::error::GatewayError;
use crate::grpc::metadata::REQUEST_ID;
use crate::route::{Lookup, RoutePlan};
use crate::snapshot::Snapshot;
use messages::Mapping;

/// A method no binding names: looking a path up under it lists every method it is bound
/// under (or finds a `custom` binding of kind `*`).
const PROBE: &[u8] = b"PROTOGATE-WEBSOCKET";

impl Gateway {
    /// Tells every open WebSocket session to close (1001): the gateway is shutting down.
    pub(super) fn close_sessions(&self) {
        self.sessions_closing.send_replace(true);
    }

    /// Completes when no WebSocket session is open.
    pub(super) async fn sessions_closed(&self) {
        self.sessions_closing.closed().await;
    }

    /// Answers a WebSocket upgrade: the handshake that switches protocols (the session then
    /// runs in a task of its own), or the error that refuses it.
    pub(super) async fn handle_websocket(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot();
        let mut route = None;
        let mut response = match self.upgrade(&snapshot, request, peer, &mut route) {
            Ok(response) => response,
            Err(error) => respond::rest(&error, &snapshot, &self.settings.json),
        };
        if let Some(label) = route {
            response.extensions_mut().insert(RouteTag(label));
        }
        response
    }

    fn upgrade(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        route: &mut Option<Arc<str>>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        handshake::check_origin(&request, self.settings.cors.as_ref())?;
        let (plan, vars) = streaming_route(snapshot, request.uri().path())?;
        *route = Some(plan.label.clone());
        let accept = handshake::check(&request)?;
        let upgraded = hyper::upgrade::on(&mut request);
        let (parts, _) = request.into_parts();
        let setup = self.call_setup(&parts, peer, &plan)?;
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let call = session::Call {
            gateway: self.clone(),
            mapping: Mapping {
                plan,
                snapshot: snapshot.clone(),
                json: self.settings.json.clone(),
                vars,
                query: parts.uri.query().map(str::to_owned),
            },
            setup,
            request_id,
        };
        let (hold, held) = SessionHold::new();
        // The session's upstream calls belong to this request's trace.
        let trace = crate::access::trace();
        tokio::spawn(async move {
            match upgraded.await {
                Ok(upgraded) => {
                    let _held = held.await.ok();
                    let session = session::run(call, TokioIo::new(upgraded));
                    match trace {
                        Some(trace) => {
                            let note = Arc::new(crate::access::Note::traced(Some(trace)));
                            crate::access::scope(note, session).await;
                        }
                        None => session.await,
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the WebSocket upgrade did not complete"),
            }
        });
        let mut response = accept.response();
        response.extensions_mut().insert(hold);
        Ok(response)
    }
}

/// The binding of a streaming method whose template `path` matches, under any HTTP method,
/// and its path variables. A path bound only to unary methods is 400, an unknown one 404.
fn streaming_route(
    snapshot: &Snapshot,
    path: &str,
) -> Result<(Arc<RoutePlan>, Vec<String>), GatewayError> {
    let probe = Method::from_bytes(PROBE).map_err(|_| GatewayError::internal("probe method"))?;
    let mut methods = vec![Method::GET, probe.clone()];
    if let Lookup::MethodNotAllowed { allowed } = snapshot.routes.lookup(&probe, path) {
        methods.extend(allowed);
    }
    let mut unary = None;
    for method in methods {
        match snapshot.routes.lookup(&method, path) {
            Lookup::Found { value, vars, .. } if !value.is_unary() => {
                return Ok((value.clone(), vars.to_vec()))
            }
            Lookup::Found { value, .. } => unary = Some(value.clone()),
            Lookup::BadPath(message) => return Err(GatewayError::invalid_argument(message)),
            Lookup::MethodNotAllowed { .. } | Lookup::NotFound => {}
        }
    }
    match unary {
        None => Err(GatewayError::not_found(path)),
        Some(plan) => Err(GatewayError::invalid_argument(format!(
            "{} is a unary method; a WebSocket serves streaming methods only (send a plain \
             request instead)",
            plan.method_name()
        ))
        .with_status(StatusCode::BAD_REQUEST)),
    }
}
