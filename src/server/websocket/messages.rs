//! What a WebSocket frame means to the call, both ways, and how a session ends.
//!
//! Text frames are JSON, mapped by the binding's `body` exactly as a REST body is, with the
//! path variables and query parameters applied to every message. Binary frames are protobuf
//! wire bytes: the whole request message, with the path variables and query parameters
//! encoded as a message of their own and appended, so protobuf's merge semantics let them
//! win as they win over a JSON body. A response goes back in the kind of frame the client
//! used last: text is the line an NDJSON stream writes (`{"result": ...}`), binary the
//! response message's wire bytes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::super::respond;
use crate::error::GatewayError;
use crate::grpc::frame;
use crate::route::RoutePlan;
use crate::snapshot::Snapshot;
use crate::transcode::stream::StreamFormat;
use crate::transcode::{self, JsonOptions, RenderedBody, RequestInput};

/// The longest reason a Close frame carries (125 bytes of payload less the code's two).
const REASON_LIMIT: usize = 123;

/// How the request messages of one call are built: the route and what the upgrade's URL
/// binds.
#[derive(Debug)]
pub(super) struct Mapping {
    pub(super) plan: Arc<RoutePlan>,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) json: JsonOptions,
    pub(super) vars: Vec<String>,
    pub(super) query: Option<String>,
}

impl Mapping {
    /// The gRPC frame of the request message a client frame carries.
    pub(super) fn request(&self, payload: &Bytes, binary: bool) -> Result<Bytes, GatewayError> {
        if binary {
            return self.binary_request(payload);
        }
        let input = self.input(payload);
        let frame =
            transcode::build_request(&self.plan, &self.snapshot.schemas, &self.json, input)?;
        Ok(frame.to_bytes())
    }

    /// The wire bytes as sent, then the path variables and query parameters.
    fn binary_request(&self, payload: &Bytes) -> Result<Bytes, GatewayError> {
        let empty = Bytes::new();
        let bound = transcode::request_message(&self.plan, &self.json, self.input(&empty))?;
        let bound = prost::Message::encode_to_vec(&bound);
        let mut wire = BytesMut::with_capacity(payload.len() + bound.len());
        wire.extend_from_slice(payload);
        wire.extend_from_slice(&bound);
        Ok(frame::encode_raw(&wire))
    }

    fn input<'a>(&'a self, body: &'a Bytes) -> RequestInput<'a> {
        RequestInput {
            body,
            content_type: None,
            vars: &self.vars,
            query: self.query.as_deref(),
            form: None,
        }
    }

    /// The frame of one response message, in the kind the client used last. A raw
    /// `google.api.HttpBody` response is its bytes, in a binary frame.
    pub(super) fn response(&self, payload: Bytes, binary: bool) -> Result<Message, GatewayError> {
        if binary {
            return Ok(Message::Binary(payload));
        }
        let rendered =
            transcode::render_response(&self.plan, &self.snapshot.schemas, &self.json, payload)?;
        match rendered {
            RenderedBody::Json(json) => Ok(text(StreamFormat::NdJson.message(&json))),
            RenderedBody::Raw { data, .. } => Ok(Message::Binary(data)),
        }
    }

    /// The text frame that reports a failed call: `{"error": <google.rpc.Status>}`.
    pub(super) fn error(&self, error: &GatewayError) -> Message {
        let rendered = respond::rendered(error, &self.snapshot, &self.json);
        let line = StreamFormat::NdJson
            .error(&rendered.to_json())
            .unwrap_or_default();
        text(line)
    }
}

/// An NDJSON line as a text frame, without its newline. Rendered JSON is UTF-8; anything
/// else would be a bug, sent as an empty object rather than a broken frame.
fn text(mut line: Bytes) -> Message {
    if line.ends_with(b"\n") {
        line.truncate(line.len() - 1);
    }
    Message::Text(Utf8Bytes::try_from(line).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
}

/// How a session ends.
#[derive(Debug)]
pub(super) enum Ending {
    /// The call ended OK: close with 1000.
    Ok,
    /// The call failed: the error frame, then close with `4000 + code`.
    Failed(GatewayError),
    /// Close with this code and reason, no error frame (idle, oversized, broken frames).
    Close(CloseCode, String),
    /// The client is gone: nothing more is sent.
    Gone,
}

impl Ending {
    /// The Close frame, `None` when the client is gone.
    pub(super) fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            Ending::Ok => (CloseCode::Normal, ""),
            Ending::Failed(error) => (
                CloseCode::from(4000 + error.code as u16),
                error.message.as_str(),
            ),
            Ending::Close(code, reason) => (*code, reason.as_str()),
            Ending::Gone => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(cut(reason).to_owned()),
        })
    }

    /// The close code, for the log (0: none sent).
    pub(super) fn code(&self) -> u16 {
        self.close_frame().map_or(0, |f| f.code.into())
    }
}

/// The longest prefix of `reason` that fits a Close frame and ends on a character boundary.
fn cut(reason: &str) -> &str {
    let mut end = reason.len().min(REASON_LIMIT);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;

    #[test]
    fn close_codes_and_reasons() {
        let failed = Ending::Failed(GatewayError::new(Code::Aborted, "é".repeat(100)));
        let frame = failed.close_frame().unwrap();
        assert_eq!(u16::from(frame.code), 4010);
        assert_eq!(frame.reason.len(), 122);
        assert_eq!(Ending::Ok.code(), 1000);
        assert_eq!(Ending::Gone.code(), 0);
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn text_frames_are_the_ndjson_line_without_its_newline() {
        let Message::Text(t) = text(StreamFormat::NdJson.message(b"{\"a\":1}")) else {
            panic!("a text frame");
        };
        assert_eq!(t.as_str(), "{\"result\":{\"a\":1}}");
    }
}
