//! The header mapping between REST clients and gRPC metadata, by grpc-gateway v2's rules.
//!
//! Request side: `Grpc-Metadata-<key>` is forwarded as `<key>`; the IANA "permanent" headers
//! as `grpcgateway-<name>`; `Authorization` also unprefixed; `X-Forwarded-For/Host` are
//! extended; headers named by `--forward-header` pass unchanged; everything else is dropped.
//! Response side: header metadata comes back as `Grpc-Metadata-<key>` and trailer metadata
//! as `Grpc-Trailer-<key>` (as headers, since a unary response is complete before it is sent).

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::error::{quoted, GatewayError};

const METADATA_PREFIX: &str = "grpc-metadata-";

/// `(name, grpcgateway-name)` for each header name given.
macro_rules! prefixed {
    ($($name:literal),* $(,)?) => {
        [$(($name, HeaderName::from_static(concat!("grpcgateway-", $name)))),*]
    };
}

/// Permanent HTTP headers and the metadata key grpc-gateway forwards each under, made once
/// (a `static`: a `const` array of header names would be built and dropped at each use).
/// Keys are compared as strings, which a differing length settles at once.
/// (`Host` is not among them: Go's server moves it out of the header map, so grpc-gateway
/// never forwards it.)
static PERMANENT: [(&str, HeaderName); 23] = prefixed![
    "accept",
    "accept-charset",
    "accept-language",
    "accept-ranges",
    "authorization",
    "cache-control",
    "content-type",
    "cookie",
    "date",
    "expect",
    "from",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-schedule-tag-match",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "referer",
    "user-agent",
    "via",
    "warning",
];

/// Headers forwarded as they are: the request id and W3C trace context.
const ALWAYS_FORWARDED: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// Forwarded headers whose value is new on every request: a request id, a trace context's
/// span. They go upstream never indexed by HPACK: each value would take a new entry of the
/// HTTP/2 connection's header table, push out the entries every request shares, and
/// lengthen the search for a value under the same name on every later request.
const NEW_PER_REQUEST: [&str; 2] = ["x-request-id", "traceparent"];

/// The request's id: the client's, or one the gateway makes; sent upstream and logged.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `value` of header `name` as it goes upstream: never indexed when it is new on every
/// request (`NEW_PER_REQUEST`).
pub fn upstream_value(name: &str, mut value: HeaderValue) -> HeaderValue {
    if NEW_PER_REQUEST.contains(&name) {
        value.set_sensitive(true);
    }
    value
}

/// Metadata keys that belong to the gRPC transport and are never set from a client header.
fn is_reserved_key(key: &str) -> bool {
    key.starts_with("grpc-")
        || key.starts_with(':')
        || matches!(
            key,
            "content-type"
                | "te"
                | "host"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
        )
}

/// Valid gRPC metadata keys are `[0-9a-z._-]` (header names arrive lower-cased).
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b"._-".contains(&b))
}

fn is_printable_ascii(value: &HeaderValue) -> bool {
    value.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b))
}

/// What the request mapping needs besides the headers themselves.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The client's address, appended to `x-forwarded-for`.
    pub ip: Option<IpAddr>,
    /// The request's authority, used for `x-forwarded-host` when the client sent none.
    pub authority: Option<&'a str>,
}

/// Builds the upstream metadata for a REST request's headers.
pub fn request_metadata(
    incoming: &HeaderMap,
    peer: Peer<'_>,
    forward: &[HeaderName],
    out: &mut HeaderMap,
) -> Result<(), GatewayError> {
    for (name, value) in incoming {
        map_request_header(name, value, forward, out)?;
    }
    forwarded_for(incoming, peer.ip, out);
    forwarded_host(incoming, peer.authority, out);
    Ok(())
}

fn map_request_header(
    name: &HeaderName,
    value: &HeaderValue,
    forward: &[HeaderName],
    out: &mut HeaderMap,
) -> Result<(), GatewayError> {
    let key = name.as_str();
    if let Some(stripped) = key.strip_prefix(METADATA_PREFIX) {
        return map_prefixed(stripped, value, out);
    }
    if let Some((_, prefixed)) = PERMANENT.iter().find(|(k, _)| *k == key) {
        out.append(prefixed.clone(), value.clone());
        if name == http::header::AUTHORIZATION {
            out.append(http::header::AUTHORIZATION, value.clone());
        }
    } else if (ALWAYS_FORWARDED.contains(&key) || forward.contains(name)) && !is_reserved_key(key) {
        out.append(name.clone(), upstream_value(key, value.clone()));
    }
    Ok(())
}

fn map_prefixed(key: &str, value: &HeaderValue, out: &mut HeaderMap) -> Result<(), GatewayError> {
    if !is_valid_key(key) || is_reserved_key(key) {
        return Ok(());
    }
    let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
        return Ok(());
    };
    if key.ends_with("-bin") {
        out.append(name, canonical_binary(key, value)?);
    } else if is_printable_ascii(value) {
        out.append(name, value.clone());
    }
    Ok(())
}

/// Checks a binary metadata value and re-encodes it as unpadded standard base64.
fn canonical_binary(key: &str, value: &HeaderValue) -> Result<HeaderValue, GatewayError> {
    let decoded = crate::grpc::status::decode_binary_header(value.as_bytes()).ok_or_else(|| {
        let header = format!("Grpc-Metadata-{key}");
        GatewayError::invalid_argument(format!("header {} is not valid base64", quoted(&header)))
    })?;
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(decoded);
    HeaderValue::from_str(&encoded).map_err(|e| GatewayError::internal(e.to_string()))
}

fn forwarded_for(incoming: &HeaderMap, ip: Option<IpAddr>, out: &mut HeaderMap) {
    let mut parts = String::new();
    let existing = incoming.get_all(&X_FORWARDED_FOR).iter();
    for hop in existing.filter_map(|v| v.to_str().ok()) {
        separate(&mut parts);
        parts.push_str(hop);
    }
    if let Some(ip) = ip {
        separate(&mut parts);
        push_ip(&mut parts, ip);
    }
    if let Ok(value) = HeaderValue::from_str(&parts) {
        if !parts.is_empty() {
            out.insert(X_FORWARDED_FOR, value);
        }
    }
}

/// `ip` as `Display` writes it; an IPv4 address through `itoa`, as `write!` costs many times
/// more and runs once per request.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        // Writing into a String cannot fail.
        IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

/// A list's ", " before its next item.
fn separate(list: &mut String) {
    if !list.is_empty() {
        list.push_str(", ");
    }
}

fn forwarded_host(incoming: &HeaderMap, authority: Option<&str>, out: &mut HeaderMap) {
    let value = incoming
        .get(&X_FORWARDED_HOST)
        .cloned()
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
    if let Some(value) = value {
        out.insert(X_FORWARDED_HOST, value);
    }
}

/// Response metadata that sets the REST response's status (`x-http-code: 201`), the pattern
/// grpc-gateway users implement with a forward-response option.
pub const HTTP_CODE_KEY: &str = "x-http-code";
/// Prefix of response metadata that sets a REST response header as is
/// (`x-http-header-location: /v1/books/7` sets `location`).
pub const HTTP_HEADER_PREFIX: &str = "x-http-header-";

/// Applies the upstream's `x-http-code` and `x-http-header-*` metadata to a response.
pub fn apply_http_overrides(
    upstream: &HeaderMap,
    status: &mut http::StatusCode,
    out: &mut HeaderMap,
) {
    let code = upstream
        .get(HTTP_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|n| (100..=599).contains(n))
        .and_then(|n| http::StatusCode::from_u16(n).ok());
    if let Some(code) = code {
        *status = code;
    }
    for (name, value) in upstream {
        let Some(header) = name.as_str().strip_prefix(HTTP_HEADER_PREFIX) else {
            continue;
        };
        if let Ok(header) = HeaderName::from_bytes(header.as_bytes()) {
            if !is_reserved_key(header.as_str()) {
                out.append(header, value.clone());
            }
        }
    }
}

/// Response headers that describe the gRPC transport, not the application, or that
/// [`apply_http_overrides`] consumes.
fn is_transport_header(key: &str) -> bool {
    key == HTTP_CODE_KEY
        || key.starts_with(HTTP_HEADER_PREFIX)
        || matches!(
            key,
            "content-type"
                | "grpc-status"
                | "grpc-message"
                | "grpc-status-details-bin"
                | "grpc-encoding"
                | "grpc-accept-encoding"
                | "content-length"
                | "date"
                | "te"
                | "trailer"
        )
}

/// Copies upstream header (or trailer) metadata into REST response headers under `prefix`
/// (`grpc-metadata-` or `grpc-trailer-`).
pub fn response_metadata(upstream: &HeaderMap, prefix: &str, out: &mut HeaderMap) {
    for (name, value) in upstream {
        if is_transport_header(name.as_str()) {
            continue;
        }
        let prefixed = format!("{prefix}{}", name.as_str());
        if let Ok(name) = HeaderName::from_bytes(prefixed.as_bytes()) {
            out.append(name, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(headers: &[(&str, &str)], forward: &[HeaderName]) -> Result<HeaderMap, GatewayError> {
        let mut incoming = HeaderMap::new();
        for (k, v) in headers {
            incoming.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        let mut out = HeaderMap::new();
        let peer = Peer {
            ip: Some("10.1.2.3".parse().unwrap()),
            authority: Some("gw.example:8080"),
        };
        request_metadata(&incoming, peer, forward, &mut out)?;
        Ok(out)
    }

    #[test]
    fn grpc_gateway_request_mapping() {
        let out = map(
            &[
                ("grpc-metadata-foo", "x"),
                ("authorization", "Bearer t"),
                ("user-agent", "curl/8"),
                ("x-request-id", "r1"),
                ("x-random", "1"),
                ("grpc-metadata-grpc-timeout", "1S"),
                ("grpc-metadata-blob-bin", "AQID"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(out["foo"], "x");
        assert_eq!(out["authorization"], "Bearer t");
        assert_eq!(out["grpcgateway-authorization"], "Bearer t");
        assert_eq!(out["grpcgateway-user-agent"], "curl/8");
        assert_eq!(out["blob-bin"], "AQID");
        assert_eq!(
            out["x-request-id"], "r1",
            "the request id is always forwarded"
        );
        assert!(
            out["x-request-id"].is_sensitive(),
            "a value new on every request is never indexed upstream"
        );
        assert!(!out["grpcgateway-user-agent"].is_sensitive());
        assert!(out.get("x-random").is_none());
        assert!(out.get("grpc-timeout").is_none());
        assert_eq!(out["x-forwarded-for"], "10.1.2.3");
        assert_eq!(out["x-forwarded-host"], "gw.example:8080");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let v4 = (0..=255u8).map(|o| IpAddr::from([o, o / 10, o / 100, 255 - o]));
        let v6 = ["::1", "::ffff:10.1.2.3", "2001:db8::8a2e:370:7334"].map(|a| a.parse().unwrap());
        for ip in v4.chain(v6) {
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn forwarded_headers_are_extended_and_allowlist_applies() {
        let out = map(
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-host", "public.example"),
                ("x-request-id", "r1"),
            ],
            &[HeaderName::from_static("x-request-id")],
        )
        .unwrap();
        assert_eq!(out["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        let hops = map(
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2"),
            ],
            &[],
        );
        assert_eq!(
            hops.unwrap()["x-forwarded-for"],
            "1.1.1.1, 2.2.2.2, 10.1.2.3"
        );
        assert_eq!(out["x-forwarded-host"], "public.example");
        assert_eq!(out["x-request-id"], "r1");
    }

    #[test]
    fn bad_binary_metadata_is_a_400_and_non_ascii_is_skipped() {
        let err = map(&[("grpc-metadata-x-bin", "!!!")], &[]).unwrap_err();
        assert!(
            err.message.contains("Grpc-Metadata-x-bin"),
            "{}",
            err.message
        );
        let out = map(&[("grpc-metadata-loc", "Gjøvik")], &[]).unwrap();
        assert!(out.get("loc").is_none());
    }

    #[test]
    fn response_metadata_is_prefixed_without_transport_headers() {
        let mut up = HeaderMap::new();
        up.insert("content-type", "application/grpc".parse().unwrap());
        up.insert("x-served-by", "b1".parse().unwrap());
        let mut out = HeaderMap::new();
        response_metadata(&up, "grpc-metadata-", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out["grpc-metadata-x-served-by"], "b1");
    }
}
