//! `--validate` on the serving side: every protocol hands the request message it is about to
//! send upstream to [`Gateway::validate_wire`], which does nothing when the flag is off or the
//! message type has no rules (the rules themselves are in `crate::validate`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Full};
use prost_reflect::MessageDescriptor;

use super::gateway::Gateway;
use crate::error::GatewayError;
use crate::grpc::frame::{self, Outgoing};
use crate::grpc::Code;
use crate::snapshot::{GrpcMethod, Snapshot};
use crate::upstream::{call, UpstreamBody};

impl Gateway {
    /// Checks the encoded request message `wire` of type `desc`, when `--validate` is on.
    pub(super) fn validate_wire(
        &self,
        snapshot: &Snapshot,
        desc: &MessageDescriptor,
        wire: &[u8],
    ) -> Result<(), GatewayError> {
        match self.settings.validate {
            true => snapshot.rules.check_wire(desc, wire),
            false => Ok(()),
        }
    }

    /// Checks the request message inside the uncompressed gRPC frame `frame` (gathered into
    /// one buffer only when `--validate` is on).
    pub(super) fn validate_frame(
        &self,
        snapshot: &Snapshot,
        desc: &MessageDescriptor,
        frame: &Outgoing,
    ) -> Result<(), GatewayError> {
        if !self.settings.validate {
            return Ok(());
        }
        let frame = frame.to_bytes();
        self.validate_wire(snapshot, desc, crate::validate::frame_payload(&frame))
    }
}

impl Gateway {
    /// A native gRPC or gRPC-Web request whose unary method's input type has rules, read whole
    /// (within `--max-request-bytes` and `--body-timeout`), its one message checked, and
    /// handed on with the bytes as they came. Any other request is handed on untouched,
    /// still streaming; a body that is not one well-formed message is left to the upstream.
    pub(super) async fn validated(
        &self,
        snapshot: Arc<Snapshot>,
        method: Option<GrpcMethod>,
        request: Request<UpstreamBody>,
    ) -> Result<Request<UpstreamBody>, GatewayError> {
        let Some(method) = method else {
            return Ok(request);
        };
        let checked = self.settings.validate && !method.client_streaming;
        if !checked || !snapshot.rules.has_rules(&method.input) {
            return Ok(request);
        }
        let (parts, body) = request.into_parts();
        let settings = &self.settings;
        let bytes = read_frames(body, settings.max_request_bytes, settings.body_timeout).await?;
        let limit = self.settings.max_request_bytes;
        if let Ok([frame]) = frame::decode_all(&bytes, limit).as_deref() {
            if let Ok(message) = call::decompress(frame.clone(), &parts.headers, limit) {
                snapshot.rules.check_wire(&method.input, &message)?;
            }
        }
        let body = Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync();
        Ok(Request::from_parts(parts, body))
    }
}

/// The whole body, within `limit` bytes and `time`.
async fn read_frames(
    body: UpstreamBody,
    limit: usize,
    time: std::time::Duration,
) -> Result<Bytes, GatewayError> {
    match tokio::time::timeout(time, read_within(body, limit)).await {
        Ok(read) => read,
        Err(_) => Err(GatewayError::body_timeout(time)),
    }
}

async fn read_within(mut body: UpstreamBody, limit: usize) -> Result<Bytes, GatewayError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let message = "the request body could not be read";
            return Err(GatewayError::new(Code::Cancelled, message));
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(GatewayError::new(Code::ResourceExhausted, too_large(limit)));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

fn too_large(limit: usize) -> String {
    format!("the request message is larger than --max-request-bytes ({limit} bytes)")
}
