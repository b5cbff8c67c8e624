//! Classify each request once, then hand it to the code that speaks its protocol: the admin
//! endpoints, the API's documentation, a CORS preflight, REST (transcoded), native gRPC
//! (passed through), gRPC-Web (translated, then passed through), Connect (translated to
//! gRPC) or a WebSocket upgrade (a streaming call over frames). CORS headers are added here,
//! and only here.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, ORIGIN};
use http::{HeaderMap, Method, Request, Response, Version};
use hyper::body::Incoming;

use super::admin::AdminPath;
use super::body::ResponseBody;
use super::connect::{self, ConnectKind};
use super::docs::DocsPage;
use super::gateway::Gateway;
use super::respond;
use super::settings::Settings;
use crate::error::GatewayError;
use crate::grpc::Code;

/// What a request is, decided once at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/healthz`, `/readyz` or `/metrics` on the serving port.
    Admin(AdminPath),
    /// `/openapi.json` or `/docs`.
    Docs(DocsPage),
    /// A CORS preflight, with `--cors-allow-origin` set.
    Preflight,
    Rest,
    /// `application/grpc`, `application/grpc+proto`, ...
    Grpc,
    /// `application/grpc-web`, `application/grpc-web+proto`, `application/grpc-web-text`, ...
    GrpcWeb,
    /// The Connect protocol: a unary `POST`, a stream, or a unary `GET`.
    Connect(ConnectKind),
    /// An HTTP/1.1 `GET` with `Upgrade: websocket`, or an HTTP/2 extended `CONNECT` for one.
    WebSocket,
}

impl Kind {
    /// Answered even when the gateway is at its concurrency limit: probes, metrics and docs
    /// must not fail with the load they are there to show.
    pub(crate) fn bypasses_admission(self) -> bool {
        matches!(self, Kind::Admin(_) | Kind::Docs(_) | Kind::Preflight)
    }

    /// The protocol label of the metrics.
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Kind::Grpc => Protocol::Grpc,
            Kind::GrpcWeb => Protocol::GrpcWeb,
            Kind::Connect(kind) => Protocol::Connect(kind),
            Kind::WebSocket => Protocol::WebSocket,
            _ => Protocol::Rest,
        }
    }
}

/// The protocol a request speaks, for the metrics and the error it gets when refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    GrpcWeb,
    Rest,
    /// Connect, and which of its forms (its errors are written differently).
    Connect(ConnectKind),
    WebSocket,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Rest => "rest",
            Protocol::WebSocket => "websocket",
            Protocol::Connect(_) => "connect",
        }
    }
}

impl Gateway {
    /// Sorts a request as [`classify`] does, except that a request that looks like Connect but
    /// matches a REST route is REST: routes win, as they did before Connect was served. A
    /// route on the method's own path (`--expose-unannotated` makes one for each method
    /// without rules) is the same call either way, so Connect answers it in its own terms.
    pub(crate) fn classify<B>(&self, request: &Request<B>) -> Kind {
        match classify(request, &self.settings) {
            Kind::Connect(_) if self.is_routed_elsewhere(request) => Kind::Rest,
            kind => kind,
        }
    }

    fn is_routed_elsewhere<B>(&self, request: &Request<B>) -> bool {
        let snapshot = self.snapshot();
        let path = request.uri().path();
        match snapshot.routes.lookup(request.method(), path) {
            crate::route::Lookup::Found { value, .. } => value.grpc_path.path() != path,
            _ => false,
        }
    }
}

/// Sorts a request: the admin and documentation paths first (they win over routes), then
/// preflights, then WebSocket upgrades, then Connect (by method, headers and query), then
/// by `content-type`.
pub(crate) fn classify<B>(request: &Request<B>, settings: &Settings) -> Kind {
    let (method, path) = (request.method(), request.uri().path());
    if let Some(admin) = AdminPath::of(method, path).filter(|_| settings.admin_on_main_port) {
        return Kind::Admin(admin);
    }
    if let Some(page) = DocsPage::of(&settings.docs, method, path) {
        return Kind::Docs(page);
    }
    if settings.cors.is_some() && is_preflight(method, request.headers()) {
        return Kind::Preflight;
    }
    if super::websocket::handshake::is_upgrade(request) {
        return Kind::WebSocket;
    }
    if let Some(kind) = connect::kind_of(method, request.headers(), request.uri().query()) {
        return Kind::Connect(kind);
    }
    content_kind(request.headers())
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// REST, gRPC or gRPC-Web, by `content-type`.
fn content_kind(headers: &HeaderMap) -> Kind {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.starts_with("application/grpc-web") {
        Kind::GrpcWeb
    } else if media == "application/grpc" || media.starts_with("application/grpc+") {
        Kind::Grpc
    } else {
        Kind::Rest
    }
}

impl Gateway {
    /// Answers one request of `kind`; never fails. With CORS on, every answer but the admin
    /// endpoints' and the docs page's gets its CORS headers here.
    pub(super) async fn dispatch(
        self: &Arc<Self>,
        kind: Kind,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let origin = request.headers().get(ORIGIN).cloned();
        let mut response = match kind {
            Kind::Admin(path) => return self.admin(path, request.headers()).await,
            Kind::Docs(DocsPage::Page) => return self.docs(DocsPage::Page),
            Kind::Docs(page) => self.docs(page),
            Kind::Preflight => match self.preflight(&request) {
                Some(preflight) => return preflight,
                None => self.handle_rest(request, peer).await,
            },
            Kind::Grpc if request.version() < Version::HTTP_2 => grpc_over_http1(),
            Kind::Grpc => self.handle_grpc(request).await,
            Kind::GrpcWeb => self.handle_grpc_web(request).await,
            Kind::Rest => self.handle_rest(request, peer).await,
            // Boxed: their futures are large, and a REST request's should not carry their room.
            Kind::Connect(kind) => Box::pin(self.handle_connect(kind, request)).await,
            Kind::WebSocket => Box::pin(self.handle_websocket(request, peer)).await,
        };
        if let Some(cors) = &self.settings.cors {
            cors.decorate(origin.as_ref(), response.headers_mut());
        }
        response
    }
}

impl Gateway {
    fn docs(&self, page: DocsPage) -> Response<ResponseBody> {
        let current = self.current();
        super::docs::respond(page, &current.docs, &current.snapshot, &self.settings)
    }

    fn preflight<B>(&self, request: &Request<B>) -> Option<Response<ResponseBody>> {
        let cors = self.settings.cors.as_ref()?;
        cors.preflight(request.method(), request.headers())
    }
}

fn grpc_over_http1() -> Response<ResponseBody> {
    respond::grpc(&GatewayError::new(
        Code::Unimplemented,
        "gRPC needs HTTP/2; over HTTP/1.1 use gRPC-Web (application/grpc-web)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ct: &str) -> Kind {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, ct.parse().unwrap());
        content_kind(&h)
    }

    fn kind_of(method: &str, path: &str, settings: &Settings) -> Kind {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        classify(&request, settings)
    }

    #[test]
    fn content_types() {
        assert_eq!(kind("application/grpc"), Kind::Grpc);
        assert_eq!(kind("application/grpc+proto"), Kind::Grpc);
        assert_eq!(kind("application/grpc-web"), Kind::GrpcWeb);
        assert_eq!(kind("application/grpc-web-text+proto"), Kind::GrpcWeb);
        assert_eq!(kind("application/grpcx"), Kind::Rest);
        assert_eq!(kind("application/json"), Kind::Rest);
        assert_eq!(content_kind(&HeaderMap::new()), Kind::Rest);
    }

    #[test]
    fn admin_and_docs_paths_come_first() {
        let settings = Settings::default();
        assert_eq!(
            kind_of("GET", "/healthz", &settings),
            Kind::Admin(AdminPath::Healthz)
        );
        assert_eq!(kind_of("POST", "/healthz", &settings), Kind::Rest);
        assert_eq!(
            kind_of("GET", "/docs", &settings),
            Kind::Docs(DocsPage::Page)
        );
        assert_eq!(
            kind_of("GET", "/openapi.json", &settings),
            Kind::Docs(DocsPage::Document)
        );
        let connect = |method: &str, uri: &str, headers: &[(&str, &str)]| {
            let mut request = Request::builder().method(method).uri(uri);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            classify(&request.body(()).unwrap(), &settings)
        };
        let v1 = ("connect-protocol-version", "1");
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(
            connect("POST", "/a.B/C", &[json, v1]),
            Kind::Connect(ConnectKind::Unary)
        );
        assert_eq!(connect("POST", "/a.B/C", &[json]), Kind::Rest);
        assert_eq!(
            connect(
                "POST",
                "/a.B/C",
                &[("content-type", "application/connect+proto")]
            ),
            Kind::Connect(ConnectKind::Stream)
        );
        assert_eq!(
            connect("GET", "/a.B/C?encoding=json&connect=v1&message=%7B%7D", &[]),
            Kind::Connect(ConnectKind::Get)
        );
        assert_eq!(connect("GET", "/a.B/C?encoding=json", &[]), Kind::Rest);
        let moved = Settings {
            admin_on_main_port: false,
            ..Settings::default()
        };
        assert_eq!(kind_of("GET", "/metrics", &moved), Kind::Rest);
    }
}
