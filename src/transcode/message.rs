//! One whole message as JSON, both ways: the JSON codec of protocols that carry a message and
//! nothing else (Connect's `application/json`, its streams' `connect+json` envelopes), by the
//! same rules, options and limits as REST bodies and responses.

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::MessageDescriptor;

use super::json_error::check_depth;
use super::json_to_message::parse_message;
use super::options::JsonOptions;
use super::response::render_message;
use super::schemas::Schemas;
use crate::error::GatewayError;

/// The wire bytes (unframed) of the message of type `desc` whose JSON is `json`. A blank body
/// is the empty message. Errors are `INVALID_ARGUMENT`, naming what was wrong.
pub fn json_to_wire(
    schemas: &Schemas,
    desc: &MessageDescriptor,
    json: &[u8],
    options: &JsonOptions,
) -> Result<Bytes, GatewayError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::new());
    }
    if let Some(encoder) = schemas.encoder(desc).filter(|_| options.fast_paths) {
        check_depth(json, options.max_depth)?;
        let mut out = Vec::with_capacity(json.len());
        // Declined or refused, the reference path decides, and says where a refusal is.
        if encoder
            .encode(json, options.reject_unknown_fields, &mut out)
            .is_ok()
        {
            return Ok(Bytes::from(out));
        }
    }
    let message = parse_message(desc, json, options, "")?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// The JSON of the message of type `desc` encoded in `wire`. An undecodable message is
/// `INTERNAL` (it came from the upstream); a rendering over `options.max_output_bytes` is
/// `RESOURCE_EXHAUSTED`.
pub fn wire_to_json(
    schemas: &Schemas,
    desc: &MessageDescriptor,
    wire: Bytes,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    render_message(schemas, desc, wire, options)
}
