//! `multipart/form-data` request bodies read into parts (with `multer`), bounded by
//! `--max-form-parts` and, through the body already read, `--max-request-bytes`. What each
//! part sets is decided by `crate::transcode` (`body.rs`).

use bytes::Bytes;
use futures_util::stream;
use http::HeaderMap;

use crate::error::{clipped, GatewayError};
use crate::transcode::{media_type, FormPart};

/// Whether the request's body is `multipart/form-data`.
pub(super) fn is_multipart(headers: &HeaderMap) -> bool {
    media_type(content_type(headers)).as_deref() == Some("multipart/form-data")
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// The parts of `body`, at most `max_parts` of them (413 beyond); a malformed body is 400.
pub(super) async fn read_parts(
    headers: &HeaderMap,
    body: Bytes,
    max_parts: usize,
) -> Result<Vec<FormPart>, GatewayError> {
    let boundary = content_type(headers)
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            GatewayError::invalid_argument("multipart/form-data without a valid boundary")
        })?;
    let chunks = stream::iter([Ok::<Bytes, std::convert::Infallible>(body)]);
    let mut multipart = multer::Multipart::new(chunks, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        if parts.len() == max_parts {
            return Err(GatewayError::too_many_parts(max_parts));
        }
        let name = field.name().unwrap_or_default().to_string();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(malformed)?;
        parts.push(FormPart {
            name,
            filename,
            content_type,
            data,
        });
    }
    Ok(parts)
}

fn malformed(error: multer::Error) -> GatewayError {
    let reason = clipped(&error.to_string());
    GatewayError::invalid_argument(format!("malformed multipart/form-data body: {reason}"))
}
