//! How requests are served: the settings that do not change with the descriptors, from the
//! flags (`crate::config`).

use std::time::Duration;

use http::header::HeaderName;

use super::cors::CorsPolicy;
use crate::compression::{self, Encoding};
use crate::transcode::JsonOptions;

/// Request handling settings that do not change with the descriptors.
#[derive(Debug, Clone)]
pub struct Settings {
    pub json: JsonOptions,
    /// Largest REST request body accepted (413 beyond).
    pub max_request_bytes: usize,
    /// Most parts of a `multipart/form-data` body (413 beyond).
    pub max_form_parts: usize,
    /// Time a client gets to send a whole REST request body (408 beyond).
    pub body_timeout: Duration,
    /// Largest upstream response message accepted.
    pub max_response_bytes: usize,
    /// A call with no message either way for this long is cancelled.
    pub stream_idle_timeout: Duration,
    /// A connection owed response data that its client takes none of for this long is closed.
    pub write_timeout: Duration,
    /// Requests (HTTP/2 streams) one connection may have in progress at once.
    pub max_concurrent_streams: u32,
    /// Time a new connection gets to show which protocol it speaks (HTTP/1.1 or HTTP/2).
    pub detection_timeout: Duration,
    /// Time an HTTP/1.1 client gets to send a request's headers, the first or the next.
    pub header_read_timeout: Duration,
    /// Deadline for upstream calls when the client sets a shorter one or none.
    pub timeout: Option<Duration>,
    /// Request headers forwarded to the upstream unchanged.
    pub forward_headers: Vec<HeaderName>,
    /// Answer `/healthz`, `/readyz` and `/metrics` on the serving port.
    pub admin_on_main_port: bool,
    /// Requests served at once; more are refused with 503 and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Deadlines per fully-qualified method or service, before `timeout`.
    pub method_timeouts: std::collections::HashMap<String, Duration>,
    /// Largest request header block, in bytes.
    pub max_header_bytes: usize,
    /// Browser access (CORS) for gRPC-Web and REST; `None` sends no CORS headers at all.
    pub cors: Option<CorsPolicy>,
    /// Where `/openapi.json` and `/docs` are served (on the serving port).
    pub docs: DocsSettings,
    /// Codings offered for REST responses, in order of preference; empty: none.
    pub response_compression: Vec<Encoding>,
    /// How often a WebSocket client is pinged; one that has answered nothing since the last
    /// ping is gone. No flag: zero turns pings off.
    pub websocket_ping_interval: Duration,
    /// Check requests against their `buf.validate` rules before calling the upstream.
    pub validate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            json: JsonOptions::default(),
            max_request_bytes: 8 << 20,
            max_form_parts: 1000,
            body_timeout: Duration::from_secs(30),
            max_response_bytes: 8 << 20,
            stream_idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            detection_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            timeout: None,
            forward_headers: Vec::new(),
            admin_on_main_port: true,
            max_concurrent_requests: 4096,
            method_timeouts: Default::default(),
            max_header_bytes: 64 << 10,
            cors: None,
            docs: DocsSettings::default(),
            response_compression: compression::DEFAULT_RESPONSE.to_vec(),
            websocket_ping_interval: Duration::from_secs(30),
            validate: false,
        }
    }
}

/// Where the documentation is served; `None` turns a path off.
#[derive(Debug, Clone)]
pub struct DocsSettings {
    pub openapi_path: Option<String>,
    pub docs_path: Option<String>,
}

impl Default for DocsSettings {
    fn default() -> Self {
        DocsSettings {
            openapi_path: Some("/openapi.json".into()),
            docs_path: Some("/docs".into()),
        }
    }
}

impl DocsSettings {
    /// From the flags: empty disables a path; any other value must be an absolute path.
    pub fn from_paths(openapi: &str, docs: &str) -> Result<DocsSettings, String> {
        let check = |flag: &str, value: &str| -> Result<Option<String>, String> {
            match value {
                "" => Ok(None),
                v if v.starts_with('/') && !v.contains(['?', '#']) => Ok(Some(v.to_string())),
                v => Err(format!(
                    "{flag} {v:?} must be a path starting with '/' (or empty, to turn it off)"
                )),
            }
        };
        let settings = DocsSettings {
            openapi_path: check("--openapi-path", openapi)?,
            docs_path: check("--docs-path", docs)?,
        };
        if settings.openapi_path.is_some() && settings.openapi_path == settings.docs_path {
            return Err("--openapi-path and --docs-path must differ".into());
        }
        Ok(settings)
    }
}
