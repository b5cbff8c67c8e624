//! The serving side. A request's path through it, file by file:
//!
//! 1. `listen.rs` accepts a connection (TLS in `crate::tls`), `detect.rs` waits for its
//!    protocol, and `connection.rs` keeps what the gateway bounds per connection.
//! 2. `edge.rs` takes every request: request id, admission, metrics, access log, and the
//!    server span when traces are exported (`crate::trace`); HTTP/1.1 framing it refuses is in
//!    `framing.rs`.
//! 3. `dispatch.rs` classifies it once (admin, docs, REST, gRPC, gRPC-Web, Connect,
//!    WebSocket; a REST route wins over a Connect-shaped request) and applies CORS
//!    (`cors.rs`).
//! 4. The protocol's handler: `admin.rs`, `docs.rs`, `rest.rs` (unary) and `rest_stream.rs`
//!    (streams), with content codings in `rest_compression.rs`; `passthrough.rs` (native
//!    gRPC), `grpc_web.rs`, `reflection.rs`; `connect.rs` (Connect: `connect/unary.rs`,
//!    `get.rs`, `stream.rs`, its framing in `envelope.rs`, its codings in `coding.rs`);
//!    `websocket.rs` (the upgrade; its session then runs in `websocket/session.rs`, reading
//!    the upstream's responses as `rest_stream.rs` does).
//! 5. REST and WebSocket transcode with `crate::transcode` along the route's plan
//!    (`crate::route`); Connect with its whole-message functions (`json_to_wire`,
//!    `wire_to_json`).
//! 6. The upstream call: `crate::upstream::call` (`src/upstream/call.rs`), with the deadline
//!    from `deadline.rs` and the time bounds from `call_clock.rs`.
//! 7. The response goes back through the edge; every error is written by `respond.rs`, the
//!    one error edge, in the client's protocol.
//!
//! [`Gateway`] (`gateway.rs`) is the state they share, [`Settings`] (`settings.rs`) how they
//! serve.

mod admin;
mod body;
mod call_clock;
mod connect;
mod connection;
mod cors;
mod deadline;
mod detect;
mod dispatch;
mod docs;
mod edge;
mod framing;
mod gateway;
mod grpc_web;
mod listen;
mod multipart;
mod passthrough;
mod reflection;
mod respond;
mod rest;
mod rest_compression;
mod rest_stream;
mod settings;
mod tags;
mod validation;
mod websocket;

pub use admin::serve_admin;
pub use body::{BoxError, ResponseBody};
pub use cors::CorsPolicy;
pub use gateway::Gateway;
pub use listen::{serve, serve_tls, serve_with, Serving};
pub use settings::{DocsSettings, Settings};
