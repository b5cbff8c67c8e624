//! gRPC status codes and the `grpc-status` / `grpc-message` / `grpc-status-details-bin`
//! headers that carry them (in trailers, or in the headers of a trailers-only response).

use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;

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
        let raw = headers.get("grpc-status")?;
        let code = raw
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32);
        let message = headers
            .get("grpc-message")
            .map(|v| decode_message(v.as_bytes()))
            .unwrap_or_default();
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|v| decode_binary_header(v.as_bytes()));
        Some(Status {
            code,
            message,
            details,
        })
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

    #[test]
    fn missing_and_garbled_status() {
        assert_eq!(Status::from_headers(&HeaderMap::new()), None);
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "abc".parse().unwrap());
        assert_eq!(Status::from_headers(&h).unwrap().code, Code::Unknown);
    }
}
