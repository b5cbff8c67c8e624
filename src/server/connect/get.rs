//! Unary Connect calls by `GET`, for methods marked `idempotency_level = NO_SIDE_EFFECTS`: the
//! message is in the query (`message`, percent-encoded or, with `base64=1`, URL-safe base64),
//! with its codec (`encoding`) and compression (`compression`). Such answers may be cached
//! by HTTP caches; the gateway adds no caching headers of its own, and passes the upstream's
//! response metadata (a `cache-control`, say) through as headers.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::unary::{check_unary, UnaryCall};
use super::{coding, unsupported_media, Codec};
use crate::compression::Encoding;
use crate::descriptor::is_side_effect_free;
use crate::error::{quoted, GatewayError};
use crate::server::body::ResponseBody;
use crate::server::deadline;
use crate::server::gateway::Gateway;
use crate::server::respond;
use crate::snapshot::Snapshot;

/// What a `GET` query carries.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct GetQuery {
    pub codec: Codec,
    pub message: Bytes,
    pub encoding: Encoding,
}

impl Gateway {
    /// A unary `GET`; errors are Connect JSON errors.
    pub(super) async fn connect_get(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        request: Request<Incoming>,
        label: &mut Option<Arc<str>>,
    ) -> Response<ResponseBody> {
        let json = &self.settings.json;
        match self.unary_get(snapshot, request, label).await {
            Ok(response) => response,
            Err(error) => respond::connect(&error, snapshot, json),
        }
    }

    async fn unary_get(
        &self,
        snapshot: &Snapshot,
        request: Request<Incoming>,
        label: &mut Option<Arc<str>>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, _body) = request.into_parts();
        let path = parts.uri.path();
        let target = self.connect_target(snapshot, path)?;
        *label = Some(target.label.clone());
        if !is_side_effect_free(&target.method) {
            return Err(not_gettable(path));
        }
        check_unary(&target)?;
        let query = parse(
            parts.uri.query().unwrap_or(""),
            self.settings.max_request_bytes,
        )?;
        let deadline = deadline::connect_deadline(&self.settings, target.name(), &parts.headers)?;
        let call = UnaryCall {
            target: &target,
            codec: query.codec,
            message: query.message,
            encoding: query.encoding,
            headers: &parts.headers,
            deadline,
        };
        self.unary_call(snapshot, call).await
    }
}

/// 405 with `Allow: POST`: only side-effect-free methods may be called by `GET`.
fn not_gettable(path: &str) -> GatewayError {
    let mut error = GatewayError::not_allowed(&Method::GET, path, &[Method::POST]);
    error.message = format!(
        "{} cannot be called with GET: it is not marked idempotency_level = NO_SIDE_EFFECTS; use POST",
        quoted(path)
    );
    error
}

/// The codec and message of a `GET` query; a message of more than `limit` bytes is
/// `resource_exhausted`.
pub(super) fn parse(query: &str, limit: usize) -> Result<GetQuery, GatewayError> {
    let (mut message, mut encoding, mut base64, mut compression) = (None, None, false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "message" => message = Some(value),
            "encoding" => encoding = Some(decoded(value)),
            "base64" => base64 = value == "1",
            "compression" => compression = Some(decoded(value)),
            _ => {}
        }
    }
    let encoding = encoding.ok_or_else(|| missing("encoding"))?;
    let codec = Codec::named(&String::from_utf8_lossy(&encoding)).ok_or_else(|| {
        unsupported_media(format!(
            "encoding {} is not supported; use proto or json",
            quoted(&String::from_utf8_lossy(&encoding))
        ))
    })?;
    let encoding = match compression {
        None => Encoding::Identity,
        Some(name) => coding::named(&String::from_utf8_lossy(&name))?,
    };
    let raw = message.ok_or_else(|| missing("message"))?;
    let message = match base64 {
        true => from_base64(&decoded(raw))?,
        false => decoded(raw).into_owned(),
    };
    if message.len() > limit {
        return Err(GatewayError::payload_too_large(limit));
    }
    Ok(GetQuery {
        codec,
        message: Bytes::from(message),
        encoding,
    })
}

fn missing(parameter: &str) -> GatewayError {
    GatewayError::invalid_argument(format!("missing {parameter} parameter in the query"))
}

/// A query value with `+` as space and percent-escapes decoded, as bytes.
fn decoded(value: &str) -> Cow<'_, [u8]> {
    if !value.contains(['+', '%']) {
        return Cow::Borrowed(value.as_bytes());
    }
    let spaced = value.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).collect())
}

/// URL-safe base64 (the spec's), or standard; padded or not.
fn from_base64(text: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let trimmed: Vec<u8> = text.iter().copied().filter(|b| *b != b'=').collect();
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|engine| engine.decode(&trimmed).ok())
        .ok_or_else(|| GatewayError::invalid_argument("the message parameter is not valid base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = parse("connect=v1&encoding=json&message=%7B%22a%22%3A+1%7D", 100).unwrap();
        assert_eq!(q.codec, Codec::Json);
        assert_eq!(q.message, Bytes::from_static(b"{\"a\": 1}"));
        let q = parse("encoding=proto&base64=1&message=CgNhYmM", 100).unwrap();
        assert_eq!(q.message, Bytes::from_static(b"\n\x03abc"));
        let q = parse("encoding=proto&base64=1&message=_-8%3D", 100).unwrap();
        assert_eq!(q.message, Bytes::from_static(&[0xff, 0xef]));
        assert_eq!(
            parse("message=x", 100).unwrap_err().code,
            crate::grpc::Code::InvalidArgument
        );
        assert_eq!(
            parse("encoding=xml&message=x", 100).unwrap_err().status(),
            415
        );
        let q = parse("encoding=json&message=x&compression=gzip", 100).unwrap();
        assert_eq!(q.encoding, Encoding::Gzip);
        let snappy = parse("encoding=json&message=x&compression=snappy", 100).unwrap_err();
        assert!(snappy.message.contains("identity"), "{}", snappy.message);
        let big = parse("encoding=json&message=xxxx", 3).unwrap_err();
        assert_eq!(big.code, crate::grpc::Code::ResourceExhausted);
    }
}
