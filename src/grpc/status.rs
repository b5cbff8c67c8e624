//! gRPC status codes and the `grpc-status` / `grpc-message` / `grpc-status-details-bin`
//! headers that carry them (in trailers, or in the headers of a trailers-only response).
//!
//! An upstream's `grpc-status-details-bin` is only kept when it is a `google.rpc.Status` whose
//! code is the `grpc-status`: gRPC clients report anything else as `INTERNAL` (gRPC-Go) or
//! fail on it (tonic), losing the upstream's status. [`sanitize_details`] drops it otherwise.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::Bytes;
use http::header::HeaderName;
use http::HeaderMap;
use prost::Message;

/// The canonical gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const ALL: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code for a wire value; values outside the canonical range are `Unknown`, as the
    /// gRPC spec requires.
    pub fn from_i32(value: i32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The upper-case name used in logs and messages (`NOT_FOUND`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// The status an upstream reported for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
    /// The serialized `google.rpc.Status` from `grpc-status-details-bin`, when sent.
    pub details: Option<Bytes>,
}

impl Status {
    /// Reads the status from trailers (or trailers-only headers). `None` when the map has no
    /// `grpc-status`; a present but unparsable one is `Unknown`, as the spec requires.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let raw = headers.get(STATUS)?;
        let code = raw
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32);
        let message = headers
            .get(MESSAGE)
            .map(|v| decode_message(v.as_bytes()))
            .unwrap_or_default();
        let details = valid_details(headers);
        Some(Status {
            code,
            message,
            details,
        })
    }
}

const DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
const STATUS: HeaderName = HeaderName::from_static("grpc-status");
const MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Base64 as gRPC clients read `grpc-status-details-bin`: standard alphabet, padded or not,
/// no stray bits after the last byte (tonic's decoder; gRPC-Go's takes a subset of it).
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `google.rpc.Status`, decoded statically to check an upstream's details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.BadRequest.FieldViolation`: one problem with one field of a request.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FieldViolation {
    /// The field's path from the request message's root, in the JSON names the client uses
    /// (`shelf.theme`, `tags[2]`).
    #[prost(string, tag = "1")]
    pub field: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    field_violations: Vec<FieldViolation>,
}

/// A serialized `google.rpc.Status` with one `google.rpc.BadRequest` detail.
pub fn bad_request_status(code: Code, message: &str, violations: Vec<FieldViolation>) -> Bytes {
    bad_request_status_with(code, message, violations, Vec::new())
}

/// A serialized `google.rpc.Status` with a `google.rpc.BadRequest` detail, then `more`.
pub fn bad_request_status_with(
    code: Code,
    message: &str,
    violations: Vec<FieldViolation>,
    more: Vec<prost_types::Any>,
) -> Bytes {
    let detail = prost_types::Any {
        type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
        value: BadRequest {
            field_violations: violations,
        }
        .encode_to_vec(),
    };
    let status = RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: std::iter::once(detail).chain(more).collect(),
    };
    Bytes::from(status.encode_to_vec())
}

/// Removes `grpc-status-details-bin` from trailers (or trailers-only headers) unless it is one
/// base64 `google.rpc.Status` whose code is the `grpc-status`; `grpc-status` and
/// `grpc-message` stay as they are, so the client gets the upstream's status either way.
pub fn sanitize_details(headers: &mut HeaderMap) {
    if headers.contains_key(DETAILS) && valid_details(headers).is_none() {
        headers.remove(DETAILS);
    }
}

/// The serialized `google.rpc.Status` of `grpc-status-details-bin`, when there is exactly one
/// that decodes and whose code is the `grpc-status`.
fn valid_details(headers: &HeaderMap) -> Option<Bytes> {
    let mut values = headers.get_all(DETAILS).iter();
    let (raw, None) = (values.next()?, values.next()) else {
        return None;
    };
    let code = headers
        .get(STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())?;
    let bytes = Bytes::from(STRICT.decode(raw.as_bytes()).ok()?);
    let status = RpcStatus::decode(bytes.clone()).ok()?;
    (status.code == code).then_some(bytes)
}

/// The details of a serialized `google.rpc.Status`: each `Any`'s full type name (its type
/// URL after the last `/`) and value; none when it does not decode.
pub fn status_details(status: &[u8]) -> Vec<(String, Bytes)> {
    let Ok(status) = RpcStatus::decode(status) else {
        return Vec::new();
    };
    status
        .details
        .into_iter()
        .map(|any| {
            let name = any
                .type_url
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            (name, Bytes::from(any.value))
        })
        .collect()
}

/// Sets `grpc-status-details-bin` to the serialized `google.rpc.Status` `details` (unpadded
/// base64, as gRPC writes binary metadata).
pub fn insert_details(headers: &mut HeaderMap, details: &[u8]) {
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(details);
    if let Ok(v) = http::HeaderValue::from_str(&encoded) {
        headers.insert(DETAILS, v);
    }
}

/// Sets `grpc-status` and `grpc-message` (percent-encoded) of trailers, or of the headers of a
/// trailers-only response.
pub fn insert_status(headers: &mut HeaderMap, code: Code, message: &str) {
    headers.insert(STATUS, http::HeaderValue::from(code as i32));
    let encoded =
        percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    if let Ok(v) = http::HeaderValue::from_str(&encoded) {
        headers.insert(MESSAGE, v);
    }
}

/// `grpc-message` is percent-encoded UTF-8; undecodable bytes are replaced, not rejected.
pub fn decode_message(raw: &[u8]) -> String {
    percent_encoding::percent_decode(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// Values of `-bin` headers are base64, padded or not.
pub fn decode_binary_header(raw: &[u8]) -> Option<Bytes> {
    let trimmed: Vec<u8> = raw.iter().copied().filter(|b| *b != b'=').collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .ok()
        .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_out_of_range_is_unknown() {
        for (i, code) in ALL.iter().enumerate() {
            assert_eq!(Code::from_i32(i as i32), *code);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn reads_status_message_and_details() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "book%20not%20found".parse().unwrap());
        h.insert("grpc-status-details-bin", "CAUSAXg".parse().unwrap());
        let s = Status::from_headers(&h).unwrap();
        assert_eq!(s.code, Code::NotFound);
        assert_eq!(s.message, "book not found");
        assert_eq!(s.details.unwrap().as_ref(), b"\x08\x05\x12\x01x");
    }

    fn trailers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    fn encoded(status: &RpcStatus) -> String {
        base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec())
    }

    #[test]
    fn consistent_details_are_kept() {
        let status = RpcStatus {
            code: 5,
            message: "gone".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/x.Y".into(),
                value: vec![1, 2],
            }],
        };
        let details = encoded(&status);
        for value in [details.as_str(), details.trim_end_matches('=')] {
            let mut h = trailers(&[
                ("grpc-status", "5"),
                ("grpc-message", "gone"),
                ("grpc-status-details-bin", value),
            ]);
            sanitize_details(&mut h);
            assert_eq!(h["grpc-status-details-bin"], value);
            let parsed = Status::from_headers(&h).unwrap();
            assert_eq!(parsed.details.unwrap(), status.encode_to_vec());
        }
    }

    #[test]
    fn undecodable_or_inconsistent_details_are_dropped_and_the_status_kept() {
        let other_code = encoded(&RpcStatus {
            code: 3,
            ..Default::default()
        });
        let five = encoded(&RpcStatus {
            code: 5,
            ..Default::default()
        });
        let cases: [&[(&str, &str)]; 7] = [
            &[("grpc-status-details-bin", "!!not base64!!")],
            // Base64 of 0xff 0xff: not a message.
            &[("grpc-status-details-bin", "//8")],
            // Base64 with stray bits after the last byte.
            &[("grpc-status-details-bin", "CAV")],
            &[("grpc-status-details-bin", &other_code)],
            &[
                ("grpc-status-details-bin", &five),
                ("grpc-status-details-bin", &five),
            ],
            &[("grpc-status-details-bin", "CA=U")],
            &[("grpc-status-details-bin", "")],
        ];
        for extra in cases {
            let mut h = trailers(&[("grpc-status", "5"), ("grpc-message", "gone")]);
            for (k, v) in extra {
                h.append(*k, v.parse().unwrap());
            }
            assert!(
                Status::from_headers(&h).unwrap().details.is_none(),
                "{extra:?}"
            );
            sanitize_details(&mut h);
            assert!(!h.contains_key("grpc-status-details-bin"), "{extra:?}");
            assert_eq!(h["grpc-status"], "5");
            assert_eq!(h["grpc-message"], "gone");
        }
        // Details without a status describe nothing.
        let mut h = trailers(&[("grpc-status-details-bin", &five)]);
        sanitize_details(&mut h);
        assert!(h.is_empty());
        // Nothing to check: nothing changes.
        let mut h = trailers(&[("grpc-status", "0")]);
        sanitize_details(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn missing_and_garbled_status() {
        assert_eq!(Status::from_headers(&HeaderMap::new()), None);
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "abc".parse().unwrap());
        assert_eq!(Status::from_headers(&h).unwrap().code, Code::Unknown);
    }
}
