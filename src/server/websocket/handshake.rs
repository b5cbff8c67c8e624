//! The WebSocket handshake, before any upgrade: is a request one (decided once, by
//! `dispatch.rs`), is it well formed (RFC 6455 section 4.2.1 over HTTP/1.1, RFC 8441 over
//! HTTP/2), may its origin open one, and the answer that switches protocols.
//!
//! The origin check is what keeps another site's page from riding a user's cookies or
//! credentials into a stream: browsers send `Origin` on every WebSocket and apply no CORS to
//! it, so the gateway itself must refuse origins it does not trust.

use bytes::Bytes;
use http::header::{
    HeaderValue, CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::super::body::{full, ResponseBody};
use super::super::cors::CorsPolicy;
use crate::error::{quoted, GatewayError};
use crate::grpc::Code;

/// Whether `request` asks for a WebSocket: an HTTP/1.x `GET` with `Upgrade: websocket`, or
/// an HTTP/2 extended `CONNECT` with `:protocol websocket`.
pub(crate) fn is_upgrade<B>(request: &Request<B>) -> bool {
    match *request.method() {
        Method::GET => {
            request.version() <= Version::HTTP_11
                && has_token(request.headers(), &UPGRADE, "websocket")
        }
        Method::CONNECT => request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket")),
        _ => false,
    }
}

/// How the upgrade is answered once accepted.
#[derive(Debug, Clone)]
pub(super) enum Accept {
    /// `101 Switching Protocols` with this `Sec-WebSocket-Accept`.
    Http1(HeaderValue),
    /// `200` to the extended CONNECT.
    Http2,
}

impl Accept {
    /// The response that completes the handshake.
    pub(super) fn response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(full(Bytes::new()));
        match self {
            Accept::Http1(accept) => {
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept.clone());
            }
            Accept::Http2 => *response.status_mut() = StatusCode::OK,
        }
        response
    }
}

/// Checks the handshake's headers: version 13, and over HTTP/1.1 `Connection: upgrade` and a
/// key.
pub(super) fn check<B>(request: &Request<B>) -> Result<Accept, GatewayError> {
    let headers = request.headers();
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(refused(
            "a WebSocket handshake needs Sec-WebSocket-Version: 13",
        ));
    }
    if request.method() == Method::CONNECT {
        return Ok(Accept::Http2);
    }
    if request.version() < Version::HTTP_11 {
        return Err(refused("a WebSocket handshake needs HTTP/1.1 or later"));
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(refused("a WebSocket handshake needs Connection: upgrade"));
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| refused("a WebSocket handshake needs a Sec-WebSocket-Key"))?;
    let accept = derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept)
        .map(Accept::Http1)
        .map_err(|_| GatewayError::internal("cannot write Sec-WebSocket-Accept"))
}

fn refused(message: &str) -> GatewayError {
    GatewayError::invalid_argument(message).with_status(StatusCode::BAD_REQUEST)
}

/// Refuses an `Origin` that is neither allowed by `--cors-allow-origin` nor the gateway's
/// own (the request's `Host`, and its scheme when the request names one). No `Origin`: not a
/// browser, nothing to protect.
pub(super) fn check_origin<B>(
    request: &Request<B>,
    cors: Option<&CorsPolicy>,
) -> Result<(), GatewayError> {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return Ok(());
    };
    if cors.is_some_and(|c| c.allows(origin)) || is_own_origin(request, origin) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(origin.as_bytes());
    Err(GatewayError::new(
        Code::PermissionDenied,
        format!(
            "origin {} may not open a WebSocket here (--cors-allow-origin)",
            quoted(&text)
        ),
    ))
}

/// Whether `origin` is the scheme, host and port the request was sent to.
fn is_own_origin<B>(request: &Request<B>, origin: &HeaderValue) -> bool {
    let Some(origin) = origin
        .to_str()
        .ok()
        .and_then(|o| o.parse::<http::Uri>().ok())
    else {
        return false;
    };
    let (Some(scheme), Some(origin_authority)) = (origin.scheme_str(), origin.authority()) else {
        return false;
    };
    if request.uri().scheme_str().is_some_and(|s| s != scheme) {
        return false;
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| host_header(request.headers()));
    let Some(authority) = host.and_then(|h| h.parse::<http::uri::Authority>().ok()) else {
        return false;
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    authority
        .host()
        .eq_ignore_ascii_case(origin_authority.host())
        && authority.port_u16().unwrap_or(default_port)
            == origin_authority.port_u16().unwrap_or(default_port)
}

fn host_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// Whether a comma-separated header has `token` (case-insensitive) in any of its values.
fn has_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(origin: Option<&str>, host: &str) -> Request<()> {
        let mut builder = Request::builder()
            .uri("/v1/chat")
            .header(HOST, host)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(o) = origin {
            builder = builder.header(ORIGIN, o);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_get_with_upgrade_websocket_is_one_and_its_key_is_answered() {
        let request = upgrade(None, "a:80");
        assert!(is_upgrade(&request));
        match check(&request).unwrap() {
            // RFC 6455's own example.
            Accept::Http1(v) => assert_eq!(v, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            Accept::Http2 => panic!("an HTTP/1.1 handshake"),
        }
        let post = Request::post("/").header(UPGRADE, "websocket").body(());
        assert!(!is_upgrade(&post.unwrap()));
    }

    #[test]
    fn own_and_allowed_origins_pass_others_do_not() {
        let own = upgrade(Some("http://gw.example:8080"), "gw.example:8080");
        assert!(check_origin(&own, None).is_ok());
        let default_port = upgrade(Some("https://gw.example"), "gw.example:443");
        assert!(check_origin(&default_port, None).is_ok());
        let other = upgrade(Some("http://evil.example"), "gw.example:8080");
        assert_eq!(check_origin(&other, None).unwrap_err().status(), 403);
        let other_port = upgrade(Some("http://gw.example:9090"), "gw.example:8080");
        assert!(check_origin(&other_port, None).is_err());
        let policy = CorsPolicy::from_origins(&["http://evil.example".into()])
            .unwrap()
            .unwrap();
        assert!(check_origin(&other, Some(&policy)).is_ok());
        assert!(check_origin(&upgrade(None, "x"), None).is_ok());
    }
}
