//! Content codings on REST: request bodies decoded by their `Content-Encoding` before the
//! JSON is read, and responses compressed as the client's `Accept-Encoding` asks (the codings
//! themselves are in `crate::compression`).
//!
//! - A whole request body is decoded within `--max-request-bytes`, like the encoded one, so a
//!   small bomb is a 413 that costs at most the limit; a client stream is decoded as it is
//!   read, its messages bounded as before. A coding the gateway does not know is 415 with the
//!   ones it does in `Accept-Encoding` (RFC 9110 §15.5.16).
//! - A unary response is compressed when it has at least
//!   [`compression::MIN_RESPONSE_BYTES`]; a stream always (its size is not known up front),
//!   flushed after every message, so that a client sees each message as it is written. Media
//!   and archives (already compressed) are sent as they are. `Vary: Accept-Encoding` goes on
//!   every response that could have been compressed, so that caches keep the codings apart.

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{stream, TryStreamExt};
use http::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, VARY};
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, BufReader};

use super::body::{BoxError, ResponseBody};
use super::settings::Settings;
use crate::compression::{self, DecodeError, Encoding, StreamEncoder};
use crate::error::GatewayError;
use crate::grpc::Code;

/// The codings a REST request body may come in, as the 415 answer lists them.
pub(super) const ACCEPTED: HeaderValue =
    HeaderValue::from_static("zstd, br, gzip, deflate, identity");

/// The request's `Content-Encoding`: identity when absent; 415 for a coding the gateway does
/// not decode or for more than one (a body encoded twice).
pub(super) fn request_encoding(headers: &HeaderMap) -> Result<Encoding, GatewayError> {
    let mut found = Encoding::Identity;
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| unsupported("(not text)"))?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match Encoding::parse(token) {
                None => return Err(unsupported(token)),
                Some(Encoding::Identity) => {}
                Some(_) if !found.is_identity() => return Err(unsupported(text)),
                Some(encoding) => found = encoding,
            }
        }
    }
    Ok(found)
}

/// 415: a request body in a coding the gateway cannot decode.
fn unsupported(token: &str) -> GatewayError {
    GatewayError::new(
        Code::Unimplemented,
        format!(
            "Content-Encoding {} is not supported; use one of {}",
            crate::error::quoted(token),
            ACCEPTED.to_str().unwrap_or_default()
        ),
    )
    .from_source(crate::error::ErrorSource::Client)
    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

/// Adds what a 415 owes the client: the codings it could have used.
pub(super) fn mark_unsupported(headers: &mut HeaderMap, status: StatusCode) {
    if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        headers.insert(ACCEPT_ENCODING, ACCEPTED);
    }
}

/// Decodes a whole request body to at most `limit` bytes (413 beyond, 400 if corrupt).
pub(super) fn decode_request(
    encoding: Encoding,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    if encoding.is_identity() {
        return Ok(body);
    }
    compression::decode(encoding, &body, limit).map_err(|e| match e {
        DecodeError::TooLarge { limit } => GatewayError::payload_too_large(limit),
        DecodeError::Corrupt { .. } => {
            GatewayError::invalid_argument(format!("cannot decode the request body: {e}"))
        }
    })
}

/// A client stream's body as bytes, decoded as they are read.
pub(super) type StreamReader = Pin<Box<dyn AsyncRead + Send>>;

/// Reads `body` through the decoder of `encoding`; the reader pulls, so a bomb expands only
/// as fast as its messages are taken (each at most `limit` bytes, which also caps a zstd
/// window).
pub(super) fn stream_reader(body: Incoming, encoding: Encoding, limit: usize) -> StreamReader {
    use async_compression::tokio::bufread as decode;
    let data = body.into_data_stream().map_err(io::Error::other);
    let reader = BufReader::new(tokio_util::io::StreamReader::new(data));
    match encoding {
        Encoding::Identity => Box::pin(reader),
        Encoding::Gzip => {
            let mut decoder = decode::GzipDecoder::new(reader);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Encoding::Deflate => Box::pin(decode::ZlibDecoder::new(reader)),
        Encoding::Brotli => Box::pin(decode::BrotliDecoder::new(reader)),
        Encoding::Zstd => {
            let window = compression::zstd_window_log(limit);
            let params = [async_compression::zstd::DParameter::window_log_max(window)];
            Box::pin(decode::ZstdDecoder::with_params(reader, &params))
        }
    }
}

/// How a REST response may be compressed.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResponseCoding {
    /// Whether any coding is offered (then `Vary` is owed).
    offered: bool,
    /// The coding the client's `Accept-Encoding` chose; `None`: identity.
    chosen: Option<Encoding>,
}

impl ResponseCoding {
    /// The coding for a request with `headers`: none without `Accept-Encoding`.
    pub(super) fn of(settings: &Settings, headers: &HeaderMap) -> ResponseCoding {
        let offer = &settings.response_compression;
        let accept = headers
            .get_all(ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok());
        ResponseCoding {
            offered: !offer.is_empty(),
            chosen: compression::negotiate_values(accept, offer),
        }
    }

    /// The coding for a body of `content_type` (`None`: send it as it is), after adding
    /// `Vary` to `headers` when the body could have been compressed.
    fn for_body(self, content_type: &HeaderValue, headers: &mut HeaderMap) -> Option<Encoding> {
        let content_type = content_type.to_str().unwrap_or("");
        if !self.offered || !compression::compressible(content_type) {
            return None;
        }
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
        // A coding the upstream chose (`x-http-header-content-encoding`) stays.
        self.chosen
            .filter(|_| !headers.contains_key(CONTENT_ENCODING))
    }

    /// A whole body, compressed when it is worth it.
    pub(super) fn whole(
        self,
        content_type: &HeaderValue,
        body: Bytes,
        headers: &mut HeaderMap,
    ) -> Bytes {
        let Some(encoding) = self.for_body(content_type, headers) else {
            return body;
        };
        if body.len() < compression::MIN_RESPONSE_BYTES {
            return body;
        }
        match compression::encode(encoding, &body) {
            Ok(encoded) => {
                mark_encoded(headers, encoding);
                encoded
            }
            Err(_) => body,
        }
    }

    /// A streamed body, compressed message by message (each body frame flushed).
    pub(super) fn stream(
        self,
        content_type: &HeaderValue,
        body: ResponseBody,
        headers: &mut HeaderMap,
    ) -> ResponseBody {
        let Some(encoding) = self.for_body(content_type, headers) else {
            return body;
        };
        match StreamEncoder::new(encoding) {
            Ok(Some(encoder)) => {
                mark_encoded(headers, encoding);
                compress_stream(encoder, body)
            }
            Ok(None) | Err(_) => body,
        }
    }
}

fn mark_encoded(headers: &mut HeaderMap, encoding: Encoding) {
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    headers.remove(CONTENT_LENGTH);
}

/// Each data frame of `body` compressed and flushed as it comes; the coding's end after the
/// last. An error ends the body as it would have.
fn compress_stream(encoder: StreamEncoder, body: ResponseBody) -> ResponseBody {
    let frames = stream::unfold(Some((body, encoder)), |state| async move {
        let (mut body, mut encoder) = state?;
        match body.frame().await {
            None => Some((finish(encoder), None)),
            Some(Err(e)) => Some((Err(e), None)),
            Some(Ok(frame)) => {
                let item = match frame.into_data() {
                    Ok(data) => encoder.message(&data).map(Frame::data).map_err(boxed),
                    Err(frame) => Ok(frame),
                };
                Some((item, Some((body, encoder))))
            }
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

fn finish(encoder: StreamEncoder) -> Result<Frame<Bytes>, BoxError> {
    encoder.finish().map(Frame::data).map_err(boxed)
}

fn boxed(error: io::Error) -> BoxError {
    Box::new(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn request_codings() {
        let e = |pairs| request_encoding(&headers(pairs)).map_err(|e| e.status());
        assert_eq!(e(&[]), Ok(Encoding::Identity));
        assert_eq!(e(&[("content-encoding", "GZIP")]), Ok(Encoding::Gzip));
        assert_eq!(
            e(&[("content-encoding", "identity, br")]),
            Ok(Encoding::Brotli)
        );
        assert_eq!(
            e(&[("content-encoding", "snappy")]),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            e(&[("content-encoding", "gzip"), ("content-encoding", "gzip")]),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[test]
    fn small_and_media_bodies_stay_as_they_are() {
        let settings = Settings::default();
        let coding = ResponseCoding::of(&settings, &headers(&[("accept-encoding", "gzip")]));
        let json = HeaderValue::from_static("application/json");
        let mut h = HeaderMap::new();
        assert_eq!(coding.whole(&json, Bytes::from_static(b"{}"), &mut h), "{}");
        assert_eq!(h[VARY], "accept-encoding");
        assert!(!h.contains_key(CONTENT_ENCODING));

        let big = Bytes::from(vec![b'a'; 4096]);
        let mut h = HeaderMap::new();
        let png = HeaderValue::from_static("image/png");
        assert_eq!(coding.whole(&png, big.clone(), &mut h), big);
        assert!(h.is_empty());

        let mut h = HeaderMap::new();
        let out = coding.whole(&json, big.clone(), &mut h);
        assert_eq!(h[CONTENT_ENCODING], "gzip");
        assert_eq!(
            compression::decode(Encoding::Gzip, &out, 4096).unwrap(),
            big
        );
    }
}
