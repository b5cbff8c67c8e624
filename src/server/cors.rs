//! CORS for browser clients (gRPC-Web, Connect and REST alike), off unless `--cors-allow-origin` is
//! given: then preflights are answered here, before any routing, and every response to an
//! allowed origin carries `Access-Control-Allow-Origin` and the exposed headers.
//!
//! A small module rather than `tower_http::cors`: the gateway's handler is an async method on
//! [`super::Gateway`], not a tower service, and the policy below is all gRPC-Web and REST need.
//! No `Access-Control-Allow-Credentials`: the gateway passes `Authorization` through as a
//! header, which needs no credentialed mode, and credentials would forbid the `*` forms used
//! below.

use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};

use super::body::ResponseBody;

/// Response headers a browser script may read. The gRPC status trio is what gRPC-Web clients
/// need when a call fails trailers-only; Connect clients read the encodings of a stream
/// (`connect-content-encoding`, `connect-accept-encoding`) and of a unary answer;
/// `x-request-id`, `retry-after`, `allow` and `www-authenticate` matter to REST clients. The final `*` exposes every other header too
/// (custom gRPC metadata, `Grpc-Metadata-*`), which cannot be listed in advance; browsers that
/// predate the wildcard still get the named ones.
const EXPOSED: HeaderValue = HeaderValue::from_static(
    "grpc-status, grpc-message, grpc-status-details-bin, grpc-encoding, grpc-accept-encoding, \
     connect-content-encoding, connect-accept-encoding, content-encoding, \
     x-request-id, retry-after, allow, www-authenticate, *",
);

/// How long a browser may cache a preflight answer (browsers cap it lower anyway).
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");

/// The methods a preflight allows when the browser names none (it always does).
const METHODS: HeaderValue = HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS");

/// Which origins may call the gateway from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// Every origin (`--cors-allow-origin '*'`): answered with `*`, so caches need no `Vary`.
    AnyOrigin,
    /// Exactly these origins, compared byte for byte with the request's `Origin`.
    Origins(Vec<HeaderValue>),
}

impl CorsPolicy {
    /// The policy for the `--cors-allow-origin` values; `None` when there are none (CORS off).
    /// Each value is `*` or a serialized origin, `scheme://host[:port]`, as browsers send it.
    pub fn from_origins(origins: &[String]) -> Result<Option<CorsPolicy>, String> {
        if origins.is_empty() {
            return Ok(None);
        }
        if origins.iter().any(|o| o.trim() == "*") {
            return Ok(Some(CorsPolicy::AnyOrigin));
        }
        let parsed = origins
            .iter()
            .map(|o| parse_origin(o))
            .collect::<Result<_, _>>()?;
        Ok(Some(CorsPolicy::Origins(parsed)))
    }

    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            CorsPolicy::AnyOrigin => Some(HeaderValue::from_static("*")),
            CorsPolicy::Origins(list) => list.contains(origin).then(|| origin.clone()),
        }
    }

    /// The answer to a preflight request, or `None` when `headers` are not a preflight's.
    /// A preflight from an origin that is not allowed gets 403 with no CORS headers, so the
    /// browser refuses the real request and the developer sees why.
    pub fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<ResponseBody>> {
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        let mut response = Response::new(super::body::full(bytes::Bytes::new()));
        self.vary(response.headers_mut(), true);
        let Some(allowed) = self.allow(origin) else {
            *response.status_mut() = StatusCode::FORBIDDEN;
            return Some(response);
        };
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        // Echoing what was asked for allows custom verbs (google.api.http `custom` rules) and
        // every metadata header a gRPC-Web or Connect client may send (x-grpc-web,
        // grpc-timeout, connect-protocol-version, connect-timeout-ms, ...).
        let requested_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD).cloned();
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            requested_method.unwrap_or(METHODS),
        );
        if let Some(requested) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        Some(response)
    }

    /// Adds the CORS headers of an actual (non-preflight) response to a request with
    /// `request_origin`.
    pub fn decorate(&self, request_origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        self.vary(out, false);
        let Some(allowed) = request_origin.and_then(|o| self.allow(o)) else {
            return;
        };
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
    }

    /// Answers that depend on the request's `Origin` (and, for preflights, on what it asks)
    /// must say so, or a shared cache could serve one origin's answer to another.
    fn vary(&self, out: &mut HeaderMap, preflight: bool) {
        let value = match (self, preflight) {
            (_, true) => "origin, access-control-request-method, access-control-request-headers",
            (CorsPolicy::Origins(_), false) => "origin",
            (CorsPolicy::AnyOrigin, false) => return,
        };
        out.append(VARY, HeaderValue::from_static(value));
    }
}

/// A serialized origin as browsers send it in `Origin`: scheme, host, optional port, no path.
fn parse_origin(text: &str) -> Result<HeaderValue, String> {
    let text = text.trim().trim_end_matches('/');
    let bad =
        |why: &str| format!("--cors-allow-origin {text:?} {why}; use '*' or scheme://host[:port]");
    let uri: http::Uri = text.parse().map_err(|_| bad("is not an origin"))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(bad("lacks a scheme or host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("has a path"));
    }
    HeaderValue::from_str(&text.to_ascii_lowercase()).map_err(|_| bad("is not a header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        let owned: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        CorsPolicy::from_origins(&owned).unwrap().unwrap()
    }

    fn preflight_headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, origin.parse().unwrap());
        h.insert(ACCESS_CONTROL_REQUEST_METHOD, "PATCH".parse().unwrap());
        h.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            "x-grpc-web, content-type".parse().unwrap(),
        );
        h
    }

    #[test]
    fn origins_are_validated_and_normalized() {
        assert_eq!(CorsPolicy::from_origins(&[]), Ok(None));
        assert_eq!(policy(&["https://a.example", "*"]), CorsPolicy::AnyOrigin);
        assert_eq!(
            policy(&["HTTPS://App.Example:8443/"]),
            CorsPolicy::Origins(vec![HeaderValue::from_static("https://app.example:8443")])
        );
        for bad in [
            "app.example",
            "https://a.example/path",
            "https://a.example/?q",
            "",
        ] {
            assert!(
                CorsPolicy::from_origins(&[bad.to_string()]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn preflight_from_allowed_origin_mirrors_the_request() {
        let p = policy(&["https://a.example"]);
        let r = p
            .preflight(&Method::OPTIONS, &preflight_headers("https://a.example"))
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "PATCH");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-grpc-web, content-type");
        assert!(h[VARY].to_str().unwrap().contains("origin"));
    }

    #[test]
    fn preflight_from_other_origin_is_refused_without_cors_headers() {
        let p = policy(&["https://a.example"]);
        let r = p
            .preflight(&Method::OPTIONS, &preflight_headers("https://evil.example"))
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(!r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn plain_options_is_not_a_preflight() {
        let p = policy(&["*"]);
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, "https://a.example".parse().unwrap());
        assert!(p.preflight(&Method::OPTIONS, &h).is_none());
        assert!(p
            .preflight(&Method::POST, &preflight_headers("https://a.example"))
            .is_none());
    }

    #[test]
    fn actual_responses_expose_grpc_status() {
        let mut out = HeaderMap::new();
        policy(&["*"]).decorate(
            Some(&HeaderValue::from_static("https://x.example")),
            &mut out,
        );
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(out[ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .contains("grpc-status-details-bin"));
        assert!(!out.contains_key(VARY));

        let mut out = HeaderMap::new();
        policy(&["https://a.example"]).decorate(None, &mut out);
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(out[VARY], "origin");
    }
}
