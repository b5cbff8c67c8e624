//! The one error type, and the one table from every failure to an HTTP status and a
//! `google.rpc.Status` JSON body.
//!
//! Every error the gateway answers with, its own or the upstream's, in every protocol, is a
//! [`GatewayError`]: a gRPC code, a message that says what was wrong and where, whose fault
//! it was ([`ErrorSource`]), and what the upstream sent with it when it came from there
//! ([`ErrorExtra`]). The HTTP status is derived from the code by [`http_status`], never chosen
//! ad hoc; the code for an upstream's HTTP answer, stream reset or broken frame is chosen
//! here too. `server::respond` writes it for each protocol.
//!
//! A message may repeat what the client sent, but never more than [`ECHO_LIMIT`] bytes of
//! one input: [`quoted`] cuts it, and [`clipped`] bounds a library's message that repeats
//! input of its own accord. An answer cannot be made larger than its request this way.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::grpc::Code;

/// A failure answered to the client: what went wrong, as a gRPC code and a message.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub code: Code,
    pub message: String,
    /// `details` already rendered as JSON (`google.protobuf.Any` in JSON form).
    pub details: Vec<Box<serde_json::value::RawValue>>,
    /// Overrides the status derived from `code` (405, 413, 415 have no exact gRPC code).
    pub http_status: Option<StatusCode>,
    /// Whose fault it was.
    pub source: ErrorSource,
    /// The rarer parts, boxed to keep `Result<_, GatewayError>` small.
    pub extra: Option<Box<ErrorExtra>>,
}

/// Whose fault an error was: the client's request, the gateway itself, or the upstream (its
/// answer, or reaching it). A label on the metrics and a field of the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Gateway,
    Upstream,
}

impl ErrorSource {
    /// The label value: `client`, `gateway` or `upstream`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorSource::Client => "client",
            ErrorSource::Gateway => "gateway",
            ErrorSource::Upstream => "upstream",
        }
    }

    /// Whose fault an error of `code` is unless said otherwise: a request the gateway
    /// refuses is the client's, an unreachable or slow upstream is the upstream's, and
    /// anything internal is the gateway's.
    fn of(code: Code) -> ErrorSource {
        match code {
            Code::InvalidArgument
            | Code::NotFound
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::Cancelled => ErrorSource::Client,
            Code::Unavailable | Code::DeadlineExceeded => ErrorSource::Upstream,
            _ => ErrorSource::Gateway,
        }
    }
}

/// What an error carries besides its code and message.
#[derive(Debug, Clone, Default)]
pub struct ErrorExtra {
    /// The upstream's serialized `google.rpc.Status`, rendered into `details` for REST.
    pub status_details: Option<Bytes>,
    /// The upstream's response headers (metadata) with its error.
    pub upstream_headers: Option<HeaderMap>,
    /// The upstream's trailers (metadata) with its error.
    pub upstream_trailers: Option<HeaderMap>,
    /// The `Allow` header of a 405.
    pub allow: Option<HeaderValue>,
}

impl GatewayError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        GatewayError {
            code,
            message: message.into(),
            details: Vec::new(),
            http_status: None,
            source: ErrorSource::of(code),
            extra: None,
        }
    }

    /// An error the upstream caused: a broken or unexpected answer, or a failed call.
    pub fn upstream(code: Code, message: impl Into<String>) -> Self {
        Self::new(code, message).from_source(ErrorSource::Upstream)
    }

    /// The same error, blamed on `source`.
    pub fn from_source(mut self, source: ErrorSource) -> Self {
        self.source = source;
        self
    }

    /// An upstream's own error status, with what came with it.
    pub fn upstream_status(
        code: Code,
        message: String,
        status_details: Option<Bytes>,
        headers: HeaderMap,
        trailers: HeaderMap,
    ) -> Self {
        let mut error = Self::new(code, message).from_source(ErrorSource::Upstream);
        error.extra = Some(Box::new(ErrorExtra {
            status_details,
            upstream_headers: Some(headers),
            upstream_trailers: Some(trailers),
            allow: None,
        }));
        error
    }

    /// The upstream's serialized `google.rpc.Status`, if it sent one.
    pub fn status_details(&self) -> Option<&Bytes> {
        self.extra.as_ref()?.status_details.as_ref()
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            Code::NotFound,
            format!("no route matches path {}", quoted(path)),
        )
    }

    /// 405 with `Allow` listing the methods that match `path`.
    pub fn not_allowed(method: &http::Method, path: &str, allowed: &[http::Method]) -> Self {
        let list: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
        let mut error = Self::method_not_allowed(method, path);
        error.extra = Some(Box::new(ErrorExtra {
            allow: HeaderValue::from_str(&list.join(", ")).ok(),
            ..ErrorExtra::default()
        }));
        error
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            Code::Unimplemented,
            format!(
                "method {} is not allowed for path {}",
                token(method.as_str()),
                quoted(path)
            ),
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .from_source(ErrorSource::Client)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            Code::ResourceExhausted,
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .from_source(ErrorSource::Client)
    }

    /// The JSON rendering of a response outgrew `--max-rendered-bytes`: the gateway's limit,
    /// so a 500 (not the 429 of the standard table, which would invite a retry).
    pub fn response_too_large(limit: usize) -> Self {
        Self::new(
            Code::ResourceExhausted,
            format!("the response's JSON rendering exceeds the limit of {limit} bytes (--max-rendered-bytes)"),
        )
        .with_status(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The client did not send its whole request body in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            Code::DeadlineExceeded,
            format!("request body not received within {limit:?}"),
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)
        .from_source(ErrorSource::Client)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.http_status.unwrap_or_else(|| http_status(self.code))
    }

    /// The `google.rpc.Status` JSON body: `{"code","message","details"}`, in that order.
    pub fn to_json(&self) -> Vec<u8> {
        let body = StatusBody {
            code: self.code as i32,
            message: &self.message,
            details: &self.details,
        };
        // Serialising strings, numbers and `serde_json::Value`s cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for GatewayError {}

/// The most bytes of one client input that an error message repeats.
pub const ECHO_LIMIT: usize = 128;

/// The most bytes of a library's error message that repeats client input ([`clipped`]).
pub const MESSAGE_LIMIT: usize = 4 * ECHO_LIMIT;

/// A client's input for an error message: Debug-quoted, at most [`ECHO_LIMIT`] bytes of it
/// (cut on a character boundary), followed by `… (N bytes)` when it was cut.
pub fn quoted(input: &str) -> String {
    if input.len() <= ECHO_LIMIT {
        return format!("{input:?}");
    }
    let kept = &input[..char_floor(input, ECHO_LIMIT)];
    format!("{kept:?}… ({} bytes)", input.len())
}

/// A token the client sent (an HTTP method: no quotes or spaces in it) as written, or
/// [`quoted`] and cut when it is longer than [`ECHO_LIMIT`].
fn token(input: &str) -> String {
    match input.len() <= ECHO_LIMIT {
        true => input.to_string(),
        false => quoted(input),
    }
}

/// A message from a library that may repeat client input whole (serde's `invalid type:
/// string "..."`), cut to [`MESSAGE_LIMIT`] bytes on a character boundary, followed by
/// `… (N bytes)` when it was cut.
pub fn clipped(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let kept = &message[..char_floor(message, MESSAGE_LIMIT)];
    format!("{kept}… ({} bytes)", message.len())
}

/// The largest character boundary of `text` at or below `at`.
fn char_floor(text: &str, at: usize) -> usize {
    let mut cut = at.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[derive(serde::Serialize)]
struct StatusBody<'a> {
    code: i32,
    message: &'a str,
    details: &'a [Box<serde_json::value::RawValue>],
}

/// gRPC code to HTTP status, as grpc-gateway, vanguard and Google's APIs map it.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// Code to HTTP status for the Connect protocol's unary errors, as its specification's table
/// has it. It is the table above today; kept apart so that one can change without the other.
pub fn connect_http_status(code: Code) -> StatusCode {
    http_status(code)
}

/// The Connect protocol's name of a code (`not_found`; `canceled` with one `l`).
pub fn connect_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// HTTP status of a non-gRPC upstream reply to gRPC code, per the gRPC HTTP/2 spec.
pub fn code_from_upstream_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A gRPC frame the upstream got wrong to gRPC code: a message beyond the limit is
/// `RESOURCE_EXHAUSTED` (as gRPC clients report it), anything else broken `INTERNAL`.
pub fn code_from_frame_error(error: &crate::grpc::frame::FrameError) -> Code {
    match error {
        crate::grpc::frame::FrameError::TooLarge { .. } => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

/// An HTTP/2 stream reset by the upstream (or a broken connection: `None`) to gRPC code, as the
/// gRPC spec maps RST_STREAM codes; a stream cut by GOAWAY before the server took it is
/// `UNAVAILABLE` like a refused one.
pub fn code_from_reset(reset: Option<Reset>) -> Code {
    match reset {
        None => Code::Unavailable,
        Some(r) if r.unprocessed() => Code::Unavailable,
        Some(r) => match r.reason {
            h2::Reason::CANCEL => Code::Cancelled,
            h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
            _ => Code::Internal,
        },
    }
}

/// How an HTTP/2 stream was ended by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub reason: h2::Reason,
    /// Ended by a GOAWAY whose last stream id is below this stream's.
    pub go_away: bool,
}

impl Reset {
    /// The server did not process the stream (RFC 9113 §8.7), so it may be sent again.
    pub fn unprocessed(self) -> bool {
        self.reason == h2::Reason::REFUSED_STREAM || self.go_away
    }
}

/// The HTTP/2 reset somewhere in an error's chain of sources.
pub fn h2_reset(error: &(dyn std::error::Error + 'static)) -> Option<Reset> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason().map(|reason| Reset {
                reason,
                go_away: h2.is_go_away(),
            });
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_documented_status() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn connect_names_and_statuses_follow_its_specification() {
        let table = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (code, name, status) in table {
            assert_eq!(connect_code(code), name);
            assert_eq!(connect_http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn body_is_a_google_rpc_status() {
        let e = GatewayError::invalid_argument("bad \"x\"");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 3, "message": "bad \"x\"", "details": []})
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn echoed_inputs_are_cut_on_a_character_boundary() {
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        let exact = "x".repeat(ECHO_LIMIT);
        assert_eq!(quoted(&exact), format!("{exact:?}"));
        let long = format!("{}é{}", "x".repeat(ECHO_LIMIT - 1), "y".repeat(60_000));
        let q = quoted(&long);
        assert_eq!(
            q,
            format!("{:?}… ({} bytes)", "x".repeat(ECHO_LIMIT - 1), long.len())
        );
        let message = format!("bad value {}", "é".repeat(10_000));
        let c = clipped(&message);
        assert!(c.len() < MESSAGE_LIMIT + 20, "{}", c.len());
        assert!(c.ends_with(&format!("… ({} bytes)", message.len())), "{c}");
        assert_eq!(clipped("short"), "short");
    }

    #[test]
    fn overrides_win() {
        assert_eq!(GatewayError::payload_too_large(10).status(), 413);
        let e = GatewayError::method_not_allowed(&http::Method::PUT, "/a");
        assert_eq!(e.status(), 405);
    }
}
