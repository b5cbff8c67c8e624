//! A response message back to REST: JSON by the proto3 mapping (only the `response_body`
//! field when the rule names one), or the raw bytes of a `google.api.HttpBody`.

use base64::Engine;
use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde::Serialize;

use super::options::JsonOptions;
use crate::error::GatewayError;
use crate::route::RoutePlan;

/// A rendered REST response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderedBody {
    Json(Vec<u8>),
    Raw { content_type: String, data: Bytes },
}

/// Decodes the upstream's message and renders it for the client.
pub fn render_response(
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
        return Ok(raw_http_body(&message));
    }
    let json = match &plan.response_body {
        None => to_json(&message, options)?,
        Some(path) => field_json(&message, path.leaf(), options)?,
    };
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

/// Serialises `value` with the configured indentation.
fn write_json<T: Serialize + ?Sized>(
    value: &T,
    indent: bool,
    capacity: usize,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    if indent {
        value.serialize(&mut serde_json::Serializer::pretty(&mut out))?;
    } else {
        value.serialize(&mut serde_json::Serializer::new(&mut out))?;
    }
    Ok(out)
}

/// A message as JSON.
pub fn to_json(message: &DynamicMessage, options: &JsonOptions) -> Result<Vec<u8>, GatewayError> {
    let ser = options.serialize();
    let mut out = Vec::with_capacity(2 * message.encoded_len() + 16);
    let result = if options.indent {
        message.serialize_with_options(&mut serde_json::Serializer::pretty(&mut out), &ser)
    } else {
        message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &ser)
    };
    result.map_err(|e| {
        GatewayError::internal(format!(
            "cannot render {} as JSON: {e}",
            message.descriptor().full_name()
        ))
    })?;
    Ok(out)
}

/// The JSON of one field: a message field directly, anything else through the JSON of
/// the whole message (with defaults, so an empty list is `[]` and not missing).
fn field_json(
    message: &DynamicMessage,
    field: &prost_reflect::FieldDescriptor,
    options: &JsonOptions,
) -> Result<Vec<u8>, GatewayError> {
    if let (Kind::Message(m), false, false) = (field.kind(), field.is_list(), field.is_map()) {
        let value = message.get_field(field);
        let sub = value
            .as_message()
            .cloned()
            .unwrap_or_else(|| DynamicMessage::new(m));
        return to_json(&sub, options);
    }
    let ser = options.serialize().skip_default_fields(false);
    let whole = message
        .serialize_with_options(serde_json::value::Serializer, &ser)
        .map_err(|e| GatewayError::internal(format!("cannot render response: {e}")))?;
    let key = if options.use_proto_names {
        field.name()
    } else {
        field.json_name()
    };
    let value = whole.get(key).cloned().unwrap_or(serde_json::Value::Null);
    write_json(&value, options.indent, 64).map_err(|e| GatewayError::internal(e.to_string()))
}

/// The `details` of an upstream `google.rpc.Status`, each `Any` rendered as JSON with its
/// `@type`; a type the pool does not know is rendered as `@type` plus base64 `value` rather
/// than failing the whole error.
pub fn render_status_details(
    pool: &DescriptorPool,
    status_bytes: &[u8],
    options: &JsonOptions,
) -> Vec<serde_json::Value> {
    let Ok(status) = StatusProto::decode(status_bytes) else {
        return Vec::new();
    };
    let ser = options.serialize();
    status
        .details
        .iter()
        .map(|any| render_any(pool, any, &ser))
        .collect()
}

fn render_any(
    pool: &DescriptorPool,
    any: &prost_types::Any,
    ser: &SerializeOptions,
) -> serde_json::Value {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    let rendered = pool
        .get_message_by_name(type_name)
        .and_then(|desc| decode_to_json(desc, &any.value, ser));
    match rendered {
        Some(serde_json::Value::Object(mut fields)) => {
            fields.insert("@type".into(), any.type_url.clone().into());
            serde_json::Value::Object(fields)
        }
        Some(value) => serde_json::json!({"@type": any.type_url, "value": value}),
        None => serde_json::json!({
            "@type": any.type_url,
            "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
        }),
    }
}

fn decode_to_json(
    desc: MessageDescriptor,
    bytes: &[u8],
    ser: &SerializeOptions,
) -> Option<serde_json::Value> {
    let message = DynamicMessage::decode(desc, bytes).ok()?;
    message
        .serialize_with_options(serde_json::value::Serializer, ser)
        .ok()
}

/// `google.rpc.Status`, decoded statically: only `details` is needed here.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusProto {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}
