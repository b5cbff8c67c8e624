//! The one place that decides what spans are called and what they say, by the OpenTelemetry
//! HTTP and RPC semantic conventions.
//!
//! A server span per request: `METHOD /route/template` (the route as the metrics' `http_route`
//! label has it: the template for REST, `/package.Service/Method` for gRPC, gRPC-Web and
//! Connect; the method alone for an unmatched path), with the request's `http.*`, `url.*`,
//! `client.address` and `rpc.*` attributes and the gateway's `protogate.protocol` and
//! `protogate.error_source`. A client span per upstream attempt: `package.Service/Method`, with
//! `rpc.*` and the endpoint's `server.address` and `server.port`.
//!
//! What a client sent (its path, a gRPC path it made up) is clipped to [`MAX_TEXT`] bytes: a
//! queue of spans must not grow with what hostile clients put in their requests.
//!
//! Pure: everything arrives as arguments.

use std::net::{IpAddr, SocketAddr};

use opentelemetry::KeyValue;

use crate::grpc::Code;
use crate::metrics::RequestLabels;

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// The most bytes of client-chosen text an attribute or a name carries.
pub(super) const MAX_TEXT: usize = 256;

/// `text`, cut to at most [`MAX_TEXT`] bytes at a character boundary.
pub(super) fn clipped(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What a server span says about its request besides its labels.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    /// The path as the client sent it, without the query.
    pub(crate) path: String,
    pub(crate) scheme: &'static str,
    /// `1.0`, `1.1` or `2`.
    pub(crate) version: &'static str,
    pub(crate) client: IpAddr,
}

/// `network.protocol.version` of an HTTP version.
pub(super) fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// A server span's name: the method and the route, or the method alone when no route matched.
pub(super) fn server_name(labels: &RequestLabels) -> String {
    match &*labels.http_route {
        UNMATCHED => labels.http_request_method.to_string(),
        route => format!("{} {route}", labels.http_request_method),
    }
}

/// The service and method of a `/package.Service/Method` path.
pub(super) fn rpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let plausible = !service.is_empty() && !method.is_empty() && !method.contains('/');
    plausible.then_some((service, method))
}

/// The gRPC method a request called: the upstream's when it made a call, else its route's for
/// the protocols whose route is the method's path.
fn called_method<'a>(
    labels: &'a RequestLabels,
    called: Option<&'a str>,
) -> Option<(&'a str, &'a str)> {
    if let Some(found) = called.and_then(rpc_method) {
        return Some(found);
    }
    match labels.protocol {
        "grpc" | "grpc-web" | "connect" => rpc_method(&labels.http_route),
        _ => None,
    }
}

/// How a request failed, as `error.type`: its gRPC code's name, or its HTTP status for a
/// 5xx without one; `None` for success and for the client's own mistakes (a 4xx), which are
/// not the server's errors.
pub(super) fn server_error_type(labels: &RequestLabels, code: Code) -> Option<String> {
    let status = labels.http_response_status_code;
    let client_fault = labels.error_source == "client" && status < 500;
    match code {
        Code::Ok if status >= 500 => Some(status.to_string()),
        Code::Ok => None,
        _ if client_fault => None,
        code => Some(code.name().to_string()),
    }
}

/// The attributes of a finished server span. `code` is the request's gRPC code: its label's,
/// or the upstream's when the label says OK but the upstream's trailers did not (a status
/// that arrived after the response headers were measured).
pub(super) fn server_attributes(
    labels: &RequestLabels,
    facts: &RequestFacts,
    called: Option<&str>,
    code: Code,
) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new("http.request.method", labels.http_request_method),
        KeyValue::new(
            "http.response.status_code",
            i64::from(labels.http_response_status_code),
        ),
        KeyValue::new("url.path", clipped(&facts.path).to_string()),
        KeyValue::new("url.scheme", facts.scheme),
        KeyValue::new("network.protocol.version", facts.version),
        KeyValue::new("client.address", facts.client.to_string()),
        KeyValue::new("protogate.protocol", labels.protocol),
    ];
    if &*labels.http_route != UNMATCHED {
        attributes.push(KeyValue::new("http.route", labels.http_route.to_string()));
    }
    if let Some((service, method)) = called_method(labels, called) {
        attributes.extend(rpc(service, method));
        attributes.push(KeyValue::new("rpc.grpc.status_code", code as i64));
    }
    let source = match (labels.error_source, code) {
        ("", Code::Ok) => "",
        ("", _) => "upstream",
        (source, _) => source,
    };
    if !source.is_empty() {
        attributes.push(KeyValue::new("protogate.error_source", source));
    }
    if let Some(error) = server_error_type(labels, code) {
        attributes.push(KeyValue::new("error.type", error));
    }
    attributes
}

fn rpc(service: &str, method: &str) -> [KeyValue; 3] {
    [
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", clipped(service).to_string()),
        KeyValue::new("rpc.method", clipped(method).to_string()),
    ]
}

/// A client span's name: `package.Service/Method`, or the path when it is not a method's.
pub(super) fn client_name(path: &str) -> String {
    match rpc_method(path) {
        Some((service, method)) => format!("{}/{}", clipped(service), clipped(method)),
        None => clipped(path).to_string(),
    }
}

/// The attributes a client span starts with.
pub(super) fn client_attributes(path: &str, endpoint: SocketAddr) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(5);
    if let Some((service, method)) = rpc_method(path) {
        attributes.extend(rpc(service, method));
    }
    attributes.push(KeyValue::new("server.address", endpoint.ip().to_string()));
    attributes.push(KeyValue::new("server.port", i64::from(endpoint.port())));
    attributes
}

/// `error.type` of a client span that ended with `code`: every code but OK is an error of
/// the call.
pub(super) fn client_error_type(code: Code) -> Option<&'static str> {
    (code != Code::Ok).then(|| code.name())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn labels(route: &str, protocol: &'static str, status: u16, code: u16) -> RequestLabels {
        RequestLabels {
            http_request_method: "POST",
            http_route: Arc::from(route),
            http_response_status_code: status,
            rpc_grpc_status_code: code,
            protocol,
            error_source: match code {
                0 => "",
                3 => "client",
                _ => "upstream",
            },
        }
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            path: "/v1/things/7".into(),
            scheme: "http",
            version: "1.1",
            client: "127.0.0.1".parse().unwrap(),
        }
    }

    fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a opentelemetry::Value> {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn names() {
        assert_eq!(
            server_name(&labels("/v1/things/{id}", "rest", 200, 0)),
            "POST /v1/things/{id}"
        );
        assert_eq!(server_name(&labels("unmatched", "rest", 404, 5)), "POST");
        assert_eq!(client_name("/pkg.Svc/Get"), "pkg.Svc/Get");
        assert_eq!(client_name("/odd"), "/odd");
        assert_eq!(rpc_method("/a/b/c"), None);
    }

    #[test]
    fn a_rest_request_that_called_upstream() {
        let l = labels("/v1/things/{id}", "rest", 200, 0);
        let a = server_attributes(&l, &facts(), Some("/pkg.Svc/Get"), Code::Ok);
        assert_eq!(get(&a, "http.route").unwrap().as_str(), "/v1/things/{id}");
        assert_eq!(get(&a, "rpc.service").unwrap().as_str(), "pkg.Svc");
        assert_eq!(get(&a, "rpc.method").unwrap().as_str(), "Get");
        assert_eq!(
            get(&a, "rpc.grpc.status_code"),
            Some(&opentelemetry::Value::I64(0))
        );
        assert_eq!(get(&a, "url.path").unwrap().as_str(), "/v1/things/7");
        assert!(get(&a, "error.type").is_none());
        assert!(get(&a, "protogate.error_source").is_none());
    }

    #[test]
    fn failures() {
        let down = labels("/pkg.Svc/Get", "grpc", 200, 14);
        let a = server_attributes(&down, &facts(), None, Code::Unavailable);
        assert_eq!(get(&a, "error.type").unwrap().as_str(), "UNAVAILABLE");
        assert_eq!(
            get(&a, "protogate.error_source").unwrap().as_str(),
            "upstream"
        );
        assert_eq!(get(&a, "rpc.service").unwrap().as_str(), "pkg.Svc");
        // A status in trailers the labels never saw.
        let late = labels("/pkg.Svc/Get", "grpc", 200, 0);
        let a = server_attributes(&late, &facts(), None, Code::NotFound);
        assert_eq!(get(&a, "error.type").unwrap().as_str(), "NOT_FOUND");
        assert_eq!(
            get(&a, "protogate.error_source").unwrap().as_str(),
            "upstream"
        );
        // The client's mistake is not the server's error.
        let bad = labels("/v1/things/{id}", "rest", 400, 3);
        assert_eq!(server_error_type(&bad, Code::InvalidArgument), None);
        let unmatched = labels("unmatched", "rest", 404, 0);
        let a = server_attributes(&unmatched, &facts(), None, Code::Ok);
        assert!(get(&a, "http.route").is_none());
        assert!(get(&a, "rpc.system").is_none());
        assert_eq!(
            server_error_type(&labels("/x", "rest", 502, 0), Code::Ok).as_deref(),
            Some("502")
        );
        assert_eq!(client_error_type(Code::Ok), None);
        assert_eq!(client_error_type(Code::Internal), Some("INTERNAL"));
    }

    #[test]
    fn what_clients_choose_is_clipped() {
        let long = format!("/{}/{}", "s".repeat(1000), "é".repeat(1000));
        let name = client_name(&long);
        assert!(name.len() <= 2 * MAX_TEXT + 1, "{}", name.len());
        let a = client_attributes(&long, "10.0.0.1:5000".parse().unwrap());
        assert!(get(&a, "rpc.method").unwrap().as_str().len() <= MAX_TEXT);
        let mut f = facts();
        f.path = "/x".repeat(10_000);
        let a = server_attributes(
            &labels("unmatched", "rest", 404, 5),
            &f,
            None,
            Code::NotFound,
        );
        assert_eq!(get(&a, "url.path").unwrap().as_str().len(), MAX_TEXT);
    }

    #[test]
    fn client_attributes_name_the_endpoint() {
        let a = client_attributes("/pkg.Svc/Get", "10.0.0.1:5000".parse().unwrap());
        assert_eq!(get(&a, "server.address").unwrap().as_str(), "10.0.0.1");
        assert_eq!(
            get(&a, "server.port"),
            Some(&opentelemetry::Value::I64(5000))
        );
        assert_eq!(get(&a, "rpc.system").unwrap().as_str(), "grpc");
    }
}
