//! Transcoding between REST and gRPC messages: JSON, path variables and query parameters into
//! a request message; a response message back into JSON (or raw `HttpBody` bytes).

mod codec;
mod json_in;
mod json_keys;
pub mod json_out;
mod message;
mod options;
mod query;
mod request;
mod response;
pub mod scalar;
mod schemas;
pub mod stream;
mod strict_json;
pub mod well_known;
mod wire_json;

pub use json_in::JsonIn;
pub use message::{json_to_wire, wire_to_json};
pub use options::JsonOptions;
pub use request::{build_request, fast_request, request_message, RequestInput};
pub use response::render_reference;
pub use response::{render_response, render_status_details, RenderedBody};
pub use schemas::Schemas;
pub use wire_json::WireJson;
