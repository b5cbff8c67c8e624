//! Transcoding between JSON and protobuf messages, by one rulebook: JSON, path variables and
//! query parameters into a request message; a response message back into JSON (or the raw
//! bytes of a `google.api.HttpBody`); and one whole message either way, for the protocols
//! that carry nothing else (Connect).
//!
//! The files, by direction:
//!
//! | | fast path (on the wire) | reference path (`DynamicMessage`) |
//! | --- | --- | --- |
//! | JSON to protobuf | `json_to_wire.rs` | `json_to_message.rs` (protojson's rules on prost-reflect) |
//! | protobuf to JSON | `wire_to_json.rs` (the renderer) | `message_to_json.rs` (well-known types, proto2) |
//!
//! `schema.rs` compiles what the fast paths know of each message type, once per snapshot
//! (`schemas.rs`); `crate::well_known` says which types have JSON forms of their own;
//! `request.rs`, `response.rs` and `message.rs` choose the path; `options.rs` holds the
//! flags; `indent.rs` is the indented writer mode.

mod body;
mod indent;
mod json_error;
mod json_keys;
mod json_to_message;
mod json_to_wire;
mod message;
pub mod message_to_json;
mod options;
mod query;
mod query_to_wire;
mod request;
mod response;
pub mod scalar;
mod schema;
mod schemas;
pub mod stream;
mod wire_to_json;

pub use body::{media_type, FormPart};
pub use message::{json_to_wire, wire_to_json};
pub use options::JsonOptions;
pub use request::{build_request, fast_request, request_message, RequestInput};
pub use response::{render_protobuf, render_response, render_status_details, RenderedBody};
pub use schema::Declined;
pub use schemas::Schemas;
