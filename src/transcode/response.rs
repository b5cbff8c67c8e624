//! A response message back to REST: JSON by the proto3 mapping (only the `response_body`
//! field when the rule names one), or the raw bytes of a `google.api.HttpBody`.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};
use serde_json::value::RawValue;

use super::json_out;
use super::options::JsonOptions;
use crate::error::GatewayError;
use crate::route::RoutePlan;

/// A rendered REST response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderedBody {
    Json(Vec<u8>),
    Raw { content_type: String, data: Bytes },
}

/// Renders the upstream's message for the client: straight from the wire where the route
/// has a [`WireJson`](super::WireJson) renderer and it accepts the message, otherwise through
/// the reference path.
pub fn render_response(
    plan: &RoutePlan,
    options: &JsonOptions,
    payload: Bytes,
) -> Result<RenderedBody, GatewayError> {
    if let Some(renderer) = &plan.wire_json {
        let mut out = Vec::with_capacity(2 * payload.len() + 16);
        if renderer.render(&payload, options, &mut out).is_ok() {
            return within_limit(out, options);
        }
        if out.len() > options.max_output_bytes {
            return Err(GatewayError::response_too_large(options.max_output_bytes));
        }
    }
    render_reference(plan, options, payload)
}

/// The reference path: the upstream's message decoded into a `DynamicMessage`, then
/// rendered.
pub fn render_reference(
    plan: &RoutePlan,
    options: &JsonOptions,
    payload: Bytes,
) -> Result<RenderedBody, GatewayError> {
    let message = DynamicMessage::decode(plan.output.clone(), payload).map_err(|e| {
        GatewayError::internal(format!(
            "upstream response is not a valid {}: {e}",
            plan.output.full_name()
        ))
    })?;
    if plan.http_body_response {
        let body = match &plan.response_body {
            None => message,
            Some(path) => match message.get_field(path.leaf()).as_message() {
                Some(m) => m.clone(),
                None => DynamicMessage::new(plan.output.clone()),
            },
        };
        return Ok(raw_http_body(&body));
    }
    let json = match &plan.response_body {
        None => to_json(&message, options)?,
        Some(path) => field_json(&message, path.leaf(), options)?,
    };
    within_limit(json, options)
}

/// The rendering, unless it is over the size limit (the checks while rendering let it
/// overshoot by one scalar).
fn within_limit(json: Vec<u8>, options: &JsonOptions) -> Result<RenderedBody, GatewayError> {
    if json.len() > options.max_output_bytes {
        return Err(GatewayError::response_too_large(options.max_output_bytes));
    }
    Ok(RenderedBody::Json(json))
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

/// A message as JSON.
pub(super) fn to_json(
    message: &DynamicMessage,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    let mut out = Vec::with_capacity(2 * message.encoded_len() + 16);
    json_out::write_message(&mut out, message, options)
        .map_err(|e| render_error(message, &e, options))?;
    Ok(out)
}

/// The JSON of the `response_body` field.
fn field_json(
    message: &DynamicMessage,
    field: &prost_reflect::FieldDescriptor,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    let mut out = Vec::with_capacity(2 * message.encoded_len() + 16);
    json_out::write_field(&mut out, message, field, options)
        .map_err(|e| render_error(message, &e, options))?;
    Ok(out)
}

fn render_error(
    message: &DynamicMessage,
    error: &json_out::JsonError,
    options: &JsonOptions,
) -> GatewayError {
    if error.0 == json_out::TOO_LARGE {
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
            json_out::write_message(&mut out, any, options).ok()?;
            RawValue::from_string(String::from_utf8(out).ok()?).ok()
        })
        .collect()
}
