//! A response message back to REST: JSON by the proto3 mapping (only the `response_body`
//! field when the rule names one), or the raw bytes of a `google.api.HttpBody`.
//!
//! There is one renderer, `wire_to_json.rs`. Where it declines (a field given twice to be
//! merged, two members of a oneof, a malformed message), the message is decoded, which
//! merges and finds what is malformed, encoded again, and rendered by the same code. What it
//! cannot render (proto2 types, well-known types at the top, a value with no JSON form) is
//! written by `message_to_json.rs`, which the renderer itself uses for well-known types.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::value::RawValue;

use super::indent::indent;
use super::message_to_json;
use super::options::JsonOptions;
use super::schemas::Schemas;
use crate::error::GatewayError;
use crate::route::{FieldPath, RoutePlan};

/// A rendered REST response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderedBody {
    Json(Vec<u8>),
    Raw { content_type: String, data: Bytes },
}

/// Renders the upstream's message for the client.
pub fn render_response(
    plan: &RoutePlan,
    schemas: &Schemas,
    options: &JsonOptions,
    payload: Bytes,
) -> Result<RenderedBody, GatewayError> {
    if plan.http_body_response {
        let message = decode(&plan.output, payload)?;
        return Ok(raw_http_body(&http_body_of(plan, message)));
    }
    let json = match &plan.response_body {
        None => render_message(schemas, &plan.output, payload, options)?,
        Some(path) => render_field(schemas, plan, path, payload, options)?,
    };
    Ok(RenderedBody::Json(json))
}

/// The response message's protobuf wire bytes (only the `response_body` field's, when the
/// rule names a message field), for a client that asked for them. A raw `HttpBody`, or a
/// `response_body` that is not a message, is answered as it would be otherwise.
pub fn render_protobuf(plan: &RoutePlan, payload: Bytes) -> Result<RenderedBody, GatewayError> {
    if plan.http_body_response {
        let message = decode(&plan.output, payload)?;
        return Ok(raw_http_body(&http_body_of(plan, message)));
    }
    let data = match &plan.response_body {
        None => payload,
        Some(path) => {
            let field = path.leaf();
            if field.is_list() || field.is_map() || field.kind().as_message().is_none() {
                return Err(GatewayError::new(
                    crate::grpc::Code::InvalidArgument,
                    "this route answers a field that is not a message: ask for JSON",
                )
                .with_status(http::StatusCode::NOT_ACCEPTABLE));
            }
            let message = decode(&plan.output, payload)?;
            match message.get_field(field).as_message() {
                Some(inner) => Bytes::from(inner.encode_to_vec()),
                None => Bytes::new(),
            }
        }
    };
    Ok(RenderedBody::Raw {
        content_type: "application/x-protobuf".into(),
        data,
    })
}

/// The JSON of the `desc` message encoded in `wire`, indented if asked, within the size limit.
pub(super) fn render_message(
    schemas: &Schemas,
    desc: &MessageDescriptor,
    wire: Bytes,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    let compact = compact_json(schemas, desc, wire, options)?;
    finish(compact, options)
}

fn compact_json(
    schemas: &Schemas,
    desc: &MessageDescriptor,
    wire: Bytes,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    let Some(renderer) = schemas.renderer(desc).filter(|_| options.fast_paths) else {
        return to_json(&decode(desc, wire)?, options);
    };
    // Field names make a small message's JSON several times its wire size: room for a few
    // hundred bytes of them, so that a small reply is written without growing the buffer.
    let mut out = Vec::with_capacity(2 * wire.len() + 256);
    if renderer.render(&wire, options, &mut out).is_ok() {
        return Ok(out);
    }
    check_size(&out, options)?;
    let message = decode(desc, wire)?;
    out.clear();
    if renderer
        .render(&message.encode_to_vec(), options, &mut out)
        .is_ok()
    {
        return Ok(out);
    }
    check_size(&out, options)?;
    // Over the size limit, or a value with no JSON form: the reference writer says which.
    to_json(&message, options)
}

/// The JSON of the `response_body` field: a message field rendered as a message of its own,
/// any other field (a scalar, a list, a map) by the reference writer.
fn render_field(
    schemas: &Schemas,
    plan: &RoutePlan,
    path: &FieldPath,
    payload: Bytes,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    let message = decode(&plan.output, payload)?;
    let field = path.leaf();
    match field.kind() {
        Kind::Message(m) if !field.is_list() && !field.is_map() => {
            let inner = match message.get_field(field).as_message() {
                Some(inner) => Bytes::from(inner.encode_to_vec()),
                None => Bytes::new(),
            };
            render_message(schemas, &m, inner, options)
        }
        _ => {
            let mut out = Vec::with_capacity(2 * message.encoded_len() + 16);
            message_to_json::write_field(&mut out, &message, field, options)
                .map_err(|e| render_error(&message, &e, options))?;
            finish(out, options)
        }
    }
}

/// The upstream's message, decoded.
fn decode(desc: &MessageDescriptor, wire: Bytes) -> Result<DynamicMessage, GatewayError> {
    DynamicMessage::decode(desc.clone(), wire).map_err(|e| {
        GatewayError::internal(format!(
            "upstream response is not a valid {}: {e}",
            desc.full_name()
        ))
    })
}

/// The `HttpBody` to answer with: the message, or its `response_body` field.
fn http_body_of(plan: &RoutePlan, message: DynamicMessage) -> DynamicMessage {
    match &plan.response_body {
        None => message,
        Some(path) => match message.get_field(path.leaf()).as_message() {
            Some(m) => m.clone(),
            None => DynamicMessage::new(plan.output.clone()),
        },
    }
}

/// The rendering in its writer mode (indented or compact), unless it is over the size limit
/// (the checks while rendering let it overshoot by one scalar).
fn finish(compact: Vec<u8>, options: &JsonOptions) -> Result<Vec<u8>, GatewayError> {
    let json = match options.indent {
        true => indent(&compact),
        false => compact,
    };
    check_size(&json, options)?;
    Ok(json)
}

/// A rendering that outgrew [`JsonOptions::max_output_bytes`] is refused, whichever writer
/// made it.
fn check_size(json: &[u8], options: &JsonOptions) -> Result<(), GatewayError> {
    match json.len() > options.max_output_bytes {
        true => Err(GatewayError::response_too_large(options.max_output_bytes)),
        false => Ok(()),
    }
}

fn raw_http_body(message: &DynamicMessage) -> RenderedBody {
    let content_type = message
        .get_field_by_name("content_type")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let data = message
        .get_field_by_name("data")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    RenderedBody::Raw { content_type, data }
}

/// A message as compact JSON, by the reference writer.
fn to_json(message: &DynamicMessage, options: &JsonOptions) -> Result<Vec<u8>, GatewayError> {
    let mut out = Vec::with_capacity(2 * message.encoded_len() + 16);
    message_to_json::write_message(&mut out, message, options)
        .map_err(|e| render_error(message, &e, options))?;
    Ok(out)
}

fn render_error(
    message: &DynamicMessage,
    error: &message_to_json::JsonError,
    options: &JsonOptions,
) -> GatewayError {
    if error.0 == message_to_json::TOO_LARGE {
        return GatewayError::response_too_large(options.max_output_bytes);
    }
    GatewayError::internal(format!(
        "cannot render {} as JSON: {error}",
        message.descriptor().full_name()
    ))
}

/// The `details` of an upstream `google.rpc.Status`, each `Any` rendered as JSON with its
/// `@type`; a type the pool does not know is rendered as `@type` plus base64 `value` rather
/// than failing the whole error.
pub fn render_status_details(
    pool: &DescriptorPool,
    status_bytes: &[u8],
    options: &JsonOptions,
) -> Vec<Box<RawValue>> {
    let Some(status) = pool.get_message_by_name("google.rpc.Status") else {
        return Vec::new();
    };
    let Ok(status) = DynamicMessage::decode(status, status_bytes) else {
        return Vec::new();
    };
    let details = status.get_field_by_name("details").map(|v| v.into_owned());
    let Some(Value::List(details)) = details else {
        return Vec::new();
    };
    details
        .iter()
        .filter_map(Value::as_message)
        .filter_map(|any| {
            let mut out = Vec::new();
            message_to_json::write_message(&mut out, any, options).ok()?;
            RawValue::from_string(String::from_utf8(out).ok()?).ok()
        })
        .collect()
}
