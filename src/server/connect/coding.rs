//! Connect's compression: the coding of a request (`Content-Encoding` for unary calls,
//! `Connect-Content-Encoding` for streams, `compression` for a `GET`), and the coding of the
//! answer, negotiated from `Accept-Encoding` or `Connect-Accept-Encoding` against the codings
//! the gateway offers (`--response-compression`). The codings are `crate::compression`'s.
//!
//! A message the upstream compressed in the coding the client accepts is passed on as it is
//! (binary codec only: JSON is rendered from the decoded message); otherwise messages are
//! decoded, and compressed again for the client when they are worth it.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::compression::{self, DecodeError, Encoding};
use crate::error::{quoted, ErrorSource, GatewayError};
use crate::grpc::Code;

/// The codings a Connect request may use, as errors list them.
const SUPPORTED: &str = "zstd, br, gzip, deflate, identity";

/// The codings a Connect request may use, as every answer announces them (in
/// `Accept-Encoding`, or `Connect-Accept-Encoding` for streams).
pub(super) const ACCEPTED: HeaderValue = HeaderValue::from_static("zstd, br, gzip, deflate");

/// The coding `token` names, when the gateway decodes it; else `unimplemented`, naming the
/// codings it does decode (as the Connect specification asks).
pub(super) fn named(token: &str) -> Result<Encoding, GatewayError> {
    Encoding::parse(token)
        .filter(|e| compression::DECODED.contains(e))
        .ok_or_else(|| unsupported(token))
}

/// The coding of a request, by its `header`: identity when absent.
pub(super) fn request(headers: &HeaderMap, header: &str) -> Result<Encoding, GatewayError> {
    match headers.get(header) {
        None => Ok(Encoding::Identity),
        Some(value) => named(&String::from_utf8_lossy(value.as_bytes())),
    }
}

fn unsupported(token: &str) -> GatewayError {
    GatewayError::new(
        Code::Unimplemented,
        format!(
            "compression {} is not supported; supported: {SUPPORTED}",
            quoted(token)
        ),
    )
    .from_source(ErrorSource::Client)
}

/// The coding to answer with, from the client's `accept` header: `None` for identity.
pub(super) fn response(headers: &HeaderMap, accept: &str, offer: &[Encoding]) -> Option<Encoding> {
    let accepted = headers.get(accept)?.to_str().ok()?;
    compression::negotiate(accepted, offer).filter(|e| !e.is_identity())
}

/// A client's message in `encoding`, decoded to at most `limit` bytes.
pub(super) fn decode(encoding: Encoding, data: Bytes, limit: usize) -> Result<Bytes, GatewayError> {
    if encoding.is_identity() {
        return Ok(data);
    }
    compression::decode(encoding, &data, limit).map_err(|e| {
        let code = match e {
            DecodeError::TooLarge { .. } => Code::ResourceExhausted,
            DecodeError::Corrupt { .. } => Code::InvalidArgument,
        };
        GatewayError::new(code, format!("{encoding} request message: {e}"))
            .from_source(ErrorSource::Client)
    })
}

/// `message` compressed for the client, when it is large enough to gain from it.
pub(super) fn encode(encoding: Option<Encoding>, message: &Bytes) -> Option<Bytes> {
    let encoding = encoding?;
    if message.len() < compression::MIN_RESPONSE_BYTES {
        return None;
    }
    compression::encode(encoding, message).ok()
}

/// The coding of the upstream's compressed messages (its `grpc-encoding`).
pub(super) fn upstream(headers: &HeaderMap) -> Option<Encoding> {
    let token = headers.get("grpc-encoding")?.to_str().ok()?;
    Encoding::parse(token).filter(|e| !e.is_identity())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_named_negotiated_and_bounded() {
        assert_eq!(named("gzip").unwrap(), Encoding::Gzip);
        let error = named("snappy").unwrap_err();
        assert_eq!(error.code, Code::Unimplemented);
        assert!(error.message.contains("gzip"), "{}", error.message);
        let mut h = HeaderMap::new();
        h.insert("connect-accept-encoding", "br, gzip".parse().unwrap());
        let offer = [Encoding::Gzip];
        assert_eq!(
            response(&h, "connect-accept-encoding", &offer),
            Some(Encoding::Gzip)
        );
        assert_eq!(response(&h, "accept-encoding", &offer), None);
        let big = Bytes::from(vec![b'a'; 4096]);
        let gz = encode(Some(Encoding::Gzip), &big).unwrap();
        assert_eq!(decode(Encoding::Gzip, gz.clone(), 4096).unwrap(), big);
        let error = decode(Encoding::Gzip, gz, 100).unwrap_err();
        assert_eq!(error.code, Code::ResourceExhausted);
        assert!(encode(Some(Encoding::Gzip), &Bytes::from_static(b"small")).is_none());
    }
}
