//! The command line. Every flag also reads a `PROTOGATE_*` environment variable, so Helm
//! values map one to one onto flags; list flags take comma-separated values there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use http::header::HeaderName;

use crate::compression;
use crate::descriptor::Sources;
use crate::route::{RouteOptions, Unescape};
use crate::server::{self, Settings};
use crate::trace::TraceConfig;
use crate::transcode::JsonOptions;
use crate::upstream::{UpstreamOptions, UpstreamTls};

#[derive(Debug, Parser)]
#[command(
    name = "protogate",
    version,
    about = "A gRPC gateway driven by protobuf descriptors: REST/JSON in, gRPC out.",
    // Each option on one line with its `[env: ...]`, however long the longest name: clap
    // otherwise moves every description below its flag once one flag is long.
    term_width = 0
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, env = "PROTOGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter (`info`, `protogate=debug`, ...).
    #[arg(long, global = true, env = "PROTOGATE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the descriptors' HTTP rules as REST/JSON, forwarding to gRPC upstreams.
    Serve(ServeArgs),
    /// Print the route table: HTTP method, template, gRPC method, body.
    Routes(DescriptorArgs),
    /// Compile .proto files into a binary FileDescriptorSet (imports included).
    Compile(CompileArgs),
    /// Run the gateway together with a built-in VPS backend.
    Demo(DemoArgs),
    /// Validate descriptors and flags as `serve` would, without serving (for CI pipelines).
    Check(ServeArgs),
    /// Write the OpenAPI 3.1 document of the descriptors' routes (what /openapi.json serves).
    Openapi(OpenapiArgs),
}

/// Where descriptors come from.
#[derive(Debug, Clone, Args)]
pub struct DescriptorArgs {
    /// A binary FileDescriptorSet (`protoc --include_imports --descriptor_set_out`, `buf build`).
    #[arg(
        long = "descriptor-set",
        value_name = "FILE",
        env = "PROTOGATE_DESCRIPTOR_SET",
        value_delimiter = ','
    )]
    pub descriptor_sets: Vec<PathBuf>,
    /// A .proto file compiled in-process (no protoc needed).
    #[arg(
        long = "proto",
        value_name = "FILE",
        env = "PROTOGATE_PROTO",
        value_delimiter = ','
    )]
    pub protos: Vec<PathBuf>,
    /// An import root for --proto files.
    #[arg(
        short = 'I',
        long = "include",
        value_name = "DIR",
        env = "PROTOGATE_INCLUDE",
        value_delimiter = ','
    )]
    pub includes: Vec<PathBuf>,
    /// Serve methods without an http rule as `POST /package.Service/Method` with body "*".
    #[arg(long, env = "PROTOGATE_EXPOSE_UNANNOTATED")]
    pub expose_unannotated: bool,
    /// How multi-segment path variables ({name=shelves/*}, {name=**}) are percent-decoded:
    /// all but %2F (the google.api.http spec), all but RFC 6570 reserved characters (Envoy),
    /// or all.
    #[arg(long, value_name = "MODE", env = "PROTOGATE_PATH_UNESCAPE", default_value = "all-except-slash",
          value_parser = ["all-except-slash", "all-except-reserved", "all"])]
    pub path_unescape: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub descriptors: DescriptorArgs,
    /// The default upstream: `http://host:port` (h2c with prior knowledge) or `https://host:port`
    /// (TLS); the host is resolved to every address it has, or is a list `h1:port,h2:port`.
    #[arg(long, value_name = "URL", env = "PROTOGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// Send one fully-qualified service to another upstream: `pkg.Service=http://host:port`.
    #[arg(
        long = "service-upstream",
        value_name = "SERVICE=URL",
        env = "PROTOGATE_SERVICE_UPSTREAM",
        value_delimiter = ','
    )]
    pub service_upstreams: Vec<String>,
    /// Address to serve REST (HTTP/1.1 and h2c) on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PROTOGATE_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Reload when the descriptor files change (SIGHUP always reloads).
    #[arg(long, env = "PROTOGATE_WATCH_DESCRIPTORS")]
    pub watch_descriptors: bool,
    /// Also take descriptors from the upstreams' gRPC server reflection (v1, else v1alpha), at
    /// start-up and every --reflection-interval; files given too win by file name.
    #[arg(long, env = "PROTOGATE_DESCRIPTORS_FROM_REFLECTION")]
    pub descriptors_from_reflection: bool,
    /// How often reflection descriptors are fetched again (a change is swapped in like a
    /// reload); 0 fetches them at start-up and on SIGHUP only.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_REFLECTION_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub reflection_interval: Duration,
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// How requests are served; shared by `serve` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct ServingArgs {
    /// HTTP/2 connections opened to each upstream endpoint (each address of an upstream).
    /// Each serving thread (`--workers`) sends on its own share of them; with fewer
    /// connections than threads, threads share.
    #[arg(long, value_name = "N", env = "PROTOGATE_UPSTREAM_CONNECTIONS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub upstream_connections: u16,
    /// Time allowed to connect to an upstream.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How often upstream host names are resolved again; every address is an endpoint (a
    /// Kubernetes headless Service gives one per pod). Addresses in the URL are not resolved.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_UPSTREAM_RESOLVE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub upstream_resolve_interval: Duration,
    /// CA certificates (PEM) trusted for https:// upstreams, instead of the system's roots.
    #[arg(long, value_name = "FILE", env = "PROTOGATE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to https:// upstreams (mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "PROTOGATE_UPSTREAM_CLIENT_CERT",
        requires = "upstream_client_key"
    )]
    pub upstream_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --upstream-client-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROTOGATE_UPSTREAM_CLIENT_KEY",
        requires = "upstream_client_cert"
    )]
    pub upstream_client_key: Option<PathBuf>,
    /// Name sent as TLS SNI and verified in the upstream's certificate, instead of the
    /// URL's host.
    #[arg(long, value_name = "NAME", env = "PROTOGATE_UPSTREAM_TLS_SERVER_NAME")]
    pub upstream_tls_server_name: Option<String>,
    /// The :authority (host) of upstream requests, instead of the URL's first host:port.
    #[arg(long, value_name = "HOST[:PORT]", env = "PROTOGATE_UPSTREAM_AUTHORITY")]
    pub upstream_authority: Option<String>,
    /// Certificate chain (PEM) to serve TLS with on the serving port (ALPN h2 and
    /// http/1.1); re-read when the file changes. Plain HTTP when unset.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROTOGATE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert; re-read when the file changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROTOGATE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Deadline of every upstream call; a shorter client `Grpc-Timeout` wins. No deadline when unset.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_TIMEOUT", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Time a client gets to send a whole request body (408 beyond), so a slow sender cannot
    /// hold a request open.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", env = "PROTOGATE_MAX_REQUEST_BYTES", default_value_t = 8 << 20, value_parser = parse_message_bytes)]
    pub max_request_bytes: usize,
    /// Largest upstream response message accepted, in bytes.
    #[arg(long, value_name = "BYTES", env = "PROTOGATE_MAX_RESPONSE_BYTES", default_value_t = 8 << 20, value_parser = parse_message_bytes)]
    pub max_response_bytes: usize,
    /// Most parts a `multipart/form-data` request body may have (413 beyond).
    #[arg(
        long,
        value_name = "N",
        env = "PROTOGATE_MAX_FORM_PARTS",
        default_value_t = 1000
    )]
    pub max_form_parts: usize,
    /// Check requests against the `buf.validate` rules of their message types before calling
    /// the upstream (400 / INVALID_ARGUMENT with the violations); types without rules pass as
    /// they are.
    #[arg(long, env = "PROTOGATE_VALIDATE")]
    pub validate: bool,
    /// Largest JSON rendering of one response message, in bytes (500 with RESOURCE_EXHAUSTED
    /// beyond): unpopulated fields written out can make a small message render large.
    #[arg(long, value_name = "BYTES", env = "PROTOGATE_MAX_RENDERED_BYTES", default_value_t = 32 << 20)]
    pub max_rendered_bytes: usize,
    /// A call (gRPC, gRPC-Web or a REST stream) with no message either way for this long is
    /// cancelled with the protocol's error; 0 turns it off.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,
    /// A connection whose client takes no response data for this long, while the gateway
    /// has some to send, is closed; 0 turns it off.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Requests one connection may have in progress at once (HTTP/2 MAX_CONCURRENT_STREAMS
    /// too), so one client cannot take the whole --max-concurrent-requests budget.
    #[arg(long, value_name = "N", env = "PROTOGATE_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Serving threads, each with its own event loop and its own upstream connections
    /// (default: one per CPU this process may use).
    #[arg(long, value_name = "N", env = "PROTOGATE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Time open connections get to finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "DURATION", env = "PROTOGATE_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Request header forwarded to the upstream unchanged (besides grpc-gateway's mapping).
    #[arg(
        long = "forward-header",
        value_name = "NAME",
        env = "PROTOGATE_FORWARD_HEADER",
        value_delimiter = ','
    )]
    pub forward_headers: Vec<String>,
    /// Let browser pages from this origin (`https://app.example.com`, or `*` for any) call the
    /// gateway: answers CORS preflights and adds CORS headers, for gRPC-Web and REST alike.
    /// No CORS headers at all when unset.
    #[arg(
        long = "cors-allow-origin",
        value_name = "ORIGIN",
        env = "PROTOGATE_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,
    /// Serve /healthz, /readyz and /metrics on this address instead of the serving port.
    #[arg(long, value_name = "ADDR", env = "PROTOGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Requests served at once; more are refused at once with 503 and Retry-After.
    #[arg(
        long,
        value_name = "N",
        env = "PROTOGATE_MAX_CONCURRENT_REQUESTS",
        default_value_t = 4096
    )]
    pub max_concurrent_requests: usize,
    /// Deadline for one fully-qualified method or service (`pkg.Svc/Method=2s`, `pkg.Svc=10s`),
    /// used instead of --timeout; a shorter client Grpc-Timeout still wins.
    #[arg(
        long = "method-timeout",
        value_name = "NAME=DURATION",
        env = "PROTOGATE_METHOD_TIMEOUT",
        value_delimiter = ','
    )]
    pub method_timeouts: Vec<String>,
    /// Largest request header block accepted, in bytes (431 beyond, over HTTP/1.1).
    #[arg(long, value_name = "BYTES", env = "PROTOGATE_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Deepest nesting of objects and arrays accepted in request JSON (400 beyond).
    #[arg(
        long,
        value_name = "N",
        env = "PROTOGATE_MAX_JSON_DEPTH",
        default_value_t = 100
    )]
    pub max_json_depth: usize,
    /// Where the OpenAPI 3.1 document of the loaded routes is served, on the serving port;
    /// empty disables it.
    #[arg(
        long,
        value_name = "PATH",
        env = "PROTOGATE_OPENAPI_PATH",
        default_value = "/openapi.json"
    )]
    pub openapi_path: String,
    /// Where the browsable API documentation page is served, on the serving port; empty
    /// disables it.
    #[arg(
        long,
        value_name = "PATH",
        env = "PROTOGATE_DOCS_PATH",
        default_value = "/docs"
    )]
    pub docs_path: String,
    /// Codings offered for REST responses (unary bodies of 1 KiB or more, and streams), in
    /// order of preference, when the client's Accept-Encoding takes one: of zstd, br, gzip,
    /// deflate; `none` turns compression off.
    #[arg(
        long,
        value_name = "LIST",
        env = "PROTOGATE_RESPONSE_COMPRESSION",
        value_delimiter = ',',
        default_value = "zstd,br,gzip"
    )]
    pub response_compression: Vec<String>,
    /// Export traces over OTLP to this collector (its base URL: `http://collector:4317`);
    /// OTEL_EXPORTER_OTLP_ENDPOINT when unset. The protocol, service name, sampler and export
    /// queue follow the standard OTEL_* variables. No tracing at all when neither is set.
    #[arg(long, value_name = "URL", env = "PROTOGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub json: JsonArgs,
}

/// `protogate openapi`: descriptors in, the OpenAPI document out.
#[derive(Debug, Clone, Args)]
pub struct OpenapiArgs {
    #[command(flatten)]
    pub descriptors: DescriptorArgs,
    #[command(flatten)]
    pub json: JsonArgs,
    /// Where to write the document (standard output when not given).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// The JSON mapping; defaults are grpc-gateway v2's.
#[derive(Debug, Clone, Args)]
pub struct JsonArgs {
    /// Output proto field names (`user_id`) instead of lowerCamel JSON names (`userId`).
    #[arg(long, env = "PROTOGATE_USE_PROTO_NAMES")]
    pub use_proto_names: bool,
    /// Omit fields that hold their default value (grpc-gateway emits them).
    #[arg(long, env = "PROTOGATE_OMIT_UNPOPULATED")]
    pub omit_unpopulated: bool,
    /// Output enums as numbers.
    #[arg(long, env = "PROTOGATE_ENUMS_AS_INTS")]
    pub enums_as_ints: bool,
    /// Output 64-bit integers as JSON numbers instead of strings.
    #[arg(long, env = "PROTOGATE_INT64_AS_NUMBERS")]
    pub int64_as_numbers: bool,
    /// Indent JSON output.
    #[arg(long, env = "PROTOGATE_INDENT_JSON")]
    pub indent_json: bool,
    /// Reject request bodies with unknown JSON fields (400).
    #[arg(long, env = "PROTOGATE_REJECT_UNKNOWN_FIELDS")]
    pub reject_unknown_fields: bool,
    /// Reject query parameters that name no field (400).
    #[arg(long, env = "PROTOGATE_REJECT_UNKNOWN_QUERY")]
    pub reject_unknown_query: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompileArgs {
    /// An import root.
    #[arg(short = 'I', long = "include", value_name = "DIR", required = true)]
    pub includes: Vec<PathBuf>,
    /// The .proto files to compile.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the FileDescriptorSet.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Keep comments and source positions (for documentation generators).
    #[arg(long)]
    pub include_source_info: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address to serve the demo on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PROTOGATE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub serving: ServingArgs,
}

/// A message size limit: a gRPC frame writes a message's length in 32 bits, so no limit may
/// pass `u32::MAX` bytes.
pub fn parse_message_bytes(text: &str) -> Result<usize, String> {
    let bytes: u32 = text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a number of bytes from 0 to {} (a gRPC message length is 32 bits)",
            u32::MAX
        )
    })?;
    usize::try_from(bytes).map_err(|e| format!("{text:?}: {e}"))
}

/// `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 250ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

// === conversions: flags into the types they configure ===

impl DescriptorArgs {
    pub fn sources(&self) -> Sources {
        Sources {
            descriptor_sets: self.descriptor_sets.clone(),
            protos: self.protos.clone(),
            includes: self.includes.clone(),
            ..Sources::default()
        }
    }

    pub fn route_options(&self) -> RouteOptions {
        RouteOptions {
            expose_unannotated: self.expose_unannotated,
            unescape: match self.path_unescape.as_str() {
                "all-except-reserved" => Unescape::AllExceptReserved,
                "all" => Unescape::All,
                _ => Unescape::AllExceptSlash,
            },
        }
    }
}

impl ServingArgs {
    /// The request handling settings these flags describe.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let forward_headers = self
            .forward_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str())
                    .with_context(|| format!("--forward-header {h:?} is not a header name"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut json = self.json.options(self.max_json_depth);
        json.max_output_bytes = self.max_rendered_bytes;
        Ok(Settings {
            json,
            max_request_bytes: self.max_request_bytes,
            max_form_parts: self.max_form_parts,
            validate: self.validate,
            body_timeout: self.body_timeout,
            max_response_bytes: self.max_response_bytes,
            stream_idle_timeout: self.stream_idle_timeout,
            write_timeout: self.write_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            timeout: self.timeout,
            forward_headers,
            admin_on_main_port: self.admin_listen.is_none(),
            max_concurrent_requests: self.max_concurrent_requests,
            method_timeouts: self.method_timeouts()?,
            max_header_bytes: self.max_header_bytes,
            cors: server::CorsPolicy::from_origins(&self.cors_allow_origins)
                .map_err(anyhow::Error::msg)?,
            docs: server::DocsSettings::from_paths(&self.openapi_path, &self.docs_path)
                .map_err(anyhow::Error::msg)?,
            response_compression: compression::parse_offer(&self.response_compression)
                .map_err(|e| anyhow::anyhow!("--response-compression: {e}"))?,
            ..Settings::default()
        })
    }

    fn method_timeouts(&self) -> anyhow::Result<HashMap<String, Duration>> {
        self.method_timeouts
            .iter()
            .map(|entry| {
                let (name, duration) = entry
                    .split_once('=')
                    .with_context(|| format!("--method-timeout {entry:?} is not NAME=DURATION"))?;
                let duration = parse_duration(duration)
                    .map_err(|e| anyhow::anyhow!("--method-timeout {entry:?}: {e}"))?;
                Ok((name.trim().trim_start_matches('.').to_string(), duration))
            })
            .collect()
    }

    /// How traces are exported, or `None` when no endpoint is set: `--otlp-endpoint`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, and the other `OTEL_*` variables.
    pub fn trace_config(&self) -> anyhow::Result<Option<TraceConfig>> {
        let endpoint = self
            .otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .filter(|e| !e.trim().is_empty());
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let tls = self.tls_cert.is_some();
        TraceConfig::from_env(&endpoint, tls, |name| std::env::var(name).ok())
            .map(Some)
            .map_err(anyhow::Error::msg)
    }

    pub fn upstream_options(&self) -> UpstreamOptions {
        UpstreamOptions {
            connections: usize::from(self.upstream_connections),
            connect_timeout: self.connect_timeout,
            resolve_interval: self.upstream_resolve_interval,
            tls: UpstreamTls {
                ca_file: self.upstream_ca_file.clone(),
                client_cert: self.upstream_client_cert.clone(),
                client_key: self.upstream_client_key.clone(),
                server_name: self.upstream_tls_server_name.clone(),
            },
            authority: self.upstream_authority.clone(),
        }
    }

    /// The serving port's TLS configuration (`--tls-cert`, `--tls-key`), if any; the files
    /// are read now, so that a bad pair stops start-up.
    pub fn server_tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(
                crate::tls::server_config(cert, key).map_err(anyhow::Error::msg)?,
            )),
            (None, None) => Ok(None),
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}

impl JsonArgs {
    /// The JSON mapping these flags describe.
    pub fn options(&self, max_depth: usize) -> JsonOptions {
        JsonOptions {
            use_proto_names: self.use_proto_names,
            emit_unpopulated: !self.omit_unpopulated,
            enums_as_ints: self.enums_as_ints,
            int64_as_numbers: self.int64_as_numbers,
            indent: self.indent_json,
            reject_unknown_fields: self.reject_unknown_fields,
            reject_unknown_query: self.reject_unknown_query,
            max_depth,
            ..JsonOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn message_limits_fit_a_frame_header() {
        assert_eq!(parse_message_bytes("8388608"), Ok(8 << 20));
        assert_eq!(parse_message_bytes("4294967295"), Ok(4_294_967_295));
        let refused = parse_message_bytes("4294967296").unwrap_err();
        assert!(refused.contains("32 bits"), "{refused}");
        assert!(parse_message_bytes("-1").is_err());
        let args = ["protogate", "serve", "--max-request-bytes", "5000000000"];
        let refused = Cli::try_parse_from(args).err().map(|e| e.to_string());
        assert!(refused.is_some_and(|e| e.contains("32 bits")));
        assert!(Cli::try_parse_from(&args[..2]).is_ok());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
