//! How JSON is read and written; the defaults are grpc-gateway v2's.

use prost_reflect::DeserializeOptions;

/// The JSON mapping options, each a flag.
#[derive(Debug, Clone)]
pub struct JsonOptions {
    /// Output field names as in the `.proto` (`user_id`) instead of lowerCamel (`userId`).
    pub use_proto_names: bool,
    /// Output fields that hold their default value (grpc-gateway's `EmitUnpopulated`).
    pub emit_unpopulated: bool,
    /// Output enums as numbers instead of names.
    pub enums_as_ints: bool,
    /// Output 64-bit integers as JSON numbers instead of strings.
    pub int64_as_numbers: bool,
    /// Indent output with two spaces (a pass over the compact rendering, `indent.rs`).
    pub indent: bool,
    /// Reject request JSON with unknown fields (grpc-gateway ignores them).
    pub reject_unknown_fields: bool,
    /// Reject query parameters that name no field (grpc-gateway ignores them).
    pub reject_unknown_query: bool,
    /// Deepest nesting of objects and arrays accepted in request JSON.
    pub max_depth: usize,
    /// Largest JSON rendering of one response message, in bytes.
    pub max_output_bytes: usize,
    /// Take the fast paths (`json_to_wire.rs`, `wire_to_json.rs`) where they apply. Off, every
    /// message goes through the reference path: the conformance corpus runs both ways, and a
    /// suspected fast-path fault can be ruled in or out.
    pub fast_paths: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            use_proto_names: false,
            emit_unpopulated: true,
            enums_as_ints: false,
            int64_as_numbers: false,
            indent: false,
            reject_unknown_fields: false,
            reject_unknown_query: false,
            max_depth: 100,
            max_output_bytes: 32 << 20,
            fast_paths: true,
        }
    }
}

impl JsonOptions {
    pub fn deserialize(&self) -> DeserializeOptions {
        DeserializeOptions::new().deny_unknown_fields(self.reject_unknown_fields)
    }
}
