//! The API's own documentation, on the serving port: `/openapi.json` (the OpenAPI 3.1 document
//! of the routes loaded now) and `/docs` (a page for people, with a form to try each route).
//!
//! Both answer on the serving port even when `--admin-listen` moves the admin endpoints: they
//! describe the API that port serves, and the page sends its requests there (same origin).
//! They are answered before route matching, as the admin paths are, so they take precedence
//! over a route with the same path; each path is a flag, and empty turns it off.
//!
//! Both are rendered once per snapshot, on first use, and kept with it: a reload brings a new
//! document with the new snapshot.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use super::body::full;
use super::body::ResponseBody;
use super::settings::{DocsSettings, Settings};
use super::tags::RouteTag;
use crate::snapshot::Snapshot;
use crate::transcode::JsonOptions;

/// The page: one self-contained file (no network at run time); the document goes in its
/// `__OPENAPI_DOCUMENT__` placeholder.
const PAGE: &str = include_str!("../../assets/docs.html");
const PLACEHOLDER: &str = "__OPENAPI_DOCUMENT__";
/// The page may run its own inline script and talk to this origin only.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The rendered document and page of one snapshot.
#[derive(Default)]
pub(crate) struct DocsCache(OnceLock<Rendered>);

impl std::fmt::Debug for DocsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocsCache")
    }
}

struct Rendered {
    json: Bytes,
    page: Bytes,
}

/// The documentation's two paths. The document gets CORS headers like the API (tools on
/// allowed origins, an OpenAPI viewer say, may read it); the page does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocsPage {
    /// `/openapi.json`.
    Document,
    /// `/docs`.
    Page,
}

impl DocsPage {
    /// The documentation `method` and `path` ask for, if any.
    pub(crate) fn of(settings: &DocsSettings, method: &Method, path: &str) -> Option<DocsPage> {
        if !is_read(method) {
            return None;
        }
        if settings.openapi_path.as_deref() == Some(path) {
            Some(DocsPage::Document)
        } else if settings.docs_path.as_deref() == Some(path) {
            Some(DocsPage::Page)
        } else {
            None
        }
    }
}

/// `/openapi.json` or `/docs` for `snapshot`, rendered once into `cache`.
pub(super) fn respond(
    which: DocsPage,
    cache: &DocsCache,
    snapshot: &Snapshot,
    settings: &Settings,
) -> Response<ResponseBody> {
    let docs = &settings.docs;
    let path = match which {
        DocsPage::Document => docs.openapi_path.as_deref(),
        DocsPage::Page => docs.docs_path.as_deref(),
    }
    .unwrap_or_default();
    let rendered = cache.0.get_or_init(|| render(snapshot, &settings.json));
    let (body, content_type) = match which {
        DocsPage::Document => (rendered.json.clone(), "application/json"),
        DocsPage::Page => (rendered.page.clone(), "text/html; charset=utf-8"),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if which == DocsPage::Page {
        headers.insert(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response.extensions_mut().insert(RouteTag(Arc::from(path)));
    response
}

/// `GET` or `HEAD`: the methods the documentation answers.
pub(super) fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// `GET /` when no route is bound there: where a person finds the documentation, as HTML
/// for a browser and as text otherwise.
pub(super) fn landing(settings: &Settings, headers: &http::HeaderMap) -> Response<ResponseBody> {
    let docs = &settings.docs;
    let mut links: Vec<(&str, &str)> = Vec::new();
    if let Some(path) = &docs.docs_path {
        links.push(("API documentation", path));
    }
    if let Some(path) = &docs.openapi_path {
        links.push(("OpenAPI document", path));
    }
    if settings.admin_on_main_port {
        links.extend([
            ("Prometheus metrics", "/metrics"),
            ("liveness", "/healthz"),
            ("readiness", "/readyz"),
        ]);
    }
    let wants_html = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let (body, content_type) = if wants_html {
        (landing_html(&links), "text/html; charset=utf-8")
    } else {
        (landing_text(&links), "text/plain; charset=utf-8")
    };
    let mut response = Response::new(full(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.extensions_mut().insert(RouteTag(Arc::from("/")));
    response
}

const LANDING_TITLE: &str = "protogate: a gRPC gateway";

/// Where clients of the RPC protocols call, beside the REST routes.
const CALLS: &str = "gRPC, gRPC-Web and Connect clients call every loaded method at \
                     /<package.Service>/<Method> on this port.";

fn landing_text(links: &[(&str, &str)]) -> String {
    let mut text = format!("{LANDING_TITLE}\n\n");
    for (name, path) in links {
        text.push_str(&format!("{name}: {path}\n"));
    }
    if links.is_empty() {
        text.push_str("No documentation is served on this port.\n");
    }
    text.push_str(&format!("\n{CALLS}\n"));
    text
}

/// The paths are flags checked to start with `/` and hold no `?` or `#`; they are escaped
/// all the same.
fn landing_html(links: &[(&str, &str)]) -> String {
    let items: String = links
        .iter()
        .map(|(name, path)| {
            let path = html_escape(path);
            format!("<li><a href=\"{path}\">{name}</a> <code>{path}</code></li>")
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{LANDING_TITLE}</title>\
         </head><body><h1>{LANDING_TITLE}</h1><ul>{items}</ul><p>{}</p></body></html>\n",
        html_escape(CALLS)
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(snapshot: &Snapshot, json: &JsonOptions) -> Rendered {
    let document = crate::openapi::document(snapshot, json);
    let text = serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".into());
    Rendered {
        page: Bytes::from(page(&text)),
        json: Bytes::from(text + "\n"),
    }
}

/// The page with the document inlined as data. `<`, `>` and `&` can only occur inside JSON
/// strings, where their `\u` escapes mean the same, so no text in the document (a proto
/// comment, say) can close the script element.
fn page(document_json: &str) -> String {
    let mut escaped = String::with_capacity(document_json.len() + 64);
    for c in document_json.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            c => escaped.push(c),
        }
    }
    PAGE.replacen(PLACEHOLDER, &escaped, 1)
}
