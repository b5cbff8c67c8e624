//! HTTP/1.1 message framing the gateway refuses (RFC 9112): hyper parses it leniently, and a
//! proxy in front of the gateway may read the same bytes differently (request smuggling).
//!
//! - a request without `Host`, or with several (section 3.2);
//! - a `Transfer-Encoding` other than exactly `chunked`: another coding is not one the
//!   gateway implements (501), and `chunked` twice is malformed (400) (section 6.1).
//!
//! Each is answered with the error and the connection closed.

use http::header::{HOST, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};

use crate::error::GatewayError;
use crate::grpc::Code;

/// Why an HTTP/1.x request's framing is refused, if it is.
pub(super) fn refusal(version: Version, headers: &HeaderMap) -> Option<GatewayError> {
    if version > Version::HTTP_11 {
        return None;
    }
    let hosts = headers.get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Some(bad_request(format!(
            "an HTTP/1.1 request needs exactly one Host header; this one has {hosts}"
        )));
    }
    transfer_coding_refusal(headers)
}

fn transfer_coding_refusal(headers: &HeaderMap) -> Option<GatewayError> {
    let mut codings = Vec::new();
    for value in headers.get_all(TRANSFER_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Some(bad_request(
                "the Transfer-Encoding header is not text".into(),
            ));
        };
        codings.extend(text.split(',').map(str::trim).filter(|c| !c.is_empty()));
    }
    match codings.as_slice() {
        [] => None,
        [only] if only.eq_ignore_ascii_case("chunked") => None,
        all if all.iter().all(|c| c.eq_ignore_ascii_case("chunked")) => Some(bad_request(
            "Transfer-Encoding names chunked more than once".into(),
        )),
        _ => Some(
            GatewayError::new(
                Code::Unimplemented,
                "only the chunked transfer coding is implemented; send Content-Encoding \
                 for compressed bodies",
            )
            .with_status(StatusCode::NOT_IMPLEMENTED),
        ),
    }
}

fn bad_request(message: String) -> GatewayError {
    GatewayError::invalid_argument(message).with_status(StatusCode::BAD_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn status(version: Version, pairs: &[(&str, &str)]) -> Option<u16> {
        refusal(version, &headers(pairs)).map(|e| e.status().as_u16())
    }

    #[test]
    fn host_exactly_once_in_http_1_1() {
        let v = Version::HTTP_11;
        assert_eq!(status(v, &[("host", "a")]), None);
        assert_eq!(status(v, &[]), Some(400));
        assert_eq!(status(v, &[("host", "a"), ("host", "b")]), Some(400));
        assert_eq!(status(Version::HTTP_10, &[]), None);
        assert_eq!(status(Version::HTTP_2, &[]), None);
    }

    #[test]
    fn transfer_encoding_is_chunked_alone() {
        let v = Version::HTTP_11;
        let host = ("host", "a");
        assert_eq!(status(v, &[host, ("transfer-encoding", "chunked")]), None);
        assert_eq!(status(v, &[host, ("transfer-encoding", "Chunked")]), None);
        assert_eq!(
            status(v, &[host, ("transfer-encoding", "gzip, chunked")]),
            Some(501)
        );
        assert_eq!(
            status(v, &[host, ("transfer-encoding", "chunked, chunked")]),
            Some(400)
        );
        let twice = [
            host,
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(status(v, &twice), Some(400));
        assert_eq!(
            status(v, &[host, ("transfer-encoding", "identity")]),
            Some(501)
        );
    }
}
