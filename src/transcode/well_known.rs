//! The well-known types (`google.protobuf.*`) whose JSON form is their own: which they are,
//! and the rules of protojson that apply to them beyond the form (an `Any`'s type name).
//! The JSON writers, the direct encoder's schema and the OpenAPI schemas all ask here.

use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::error::{quoted, GatewayError};

/// The well-known types with a JSON form of their own (wrappers share one).
#[derive(Debug, Clone, Copy)]
pub enum WellKnown {
    Any,
    Timestamp,
    Duration,
    FieldMask,
    Wrapper,
    Struct,
    ListValue,
    Value,
    Empty,
}

/// Which well-known type `desc` is, if any.
pub fn well_known(desc: &MessageDescriptor) -> Option<WellKnown> {
    let name = desc.full_name().strip_prefix("google.protobuf.")?;
    Some(match name {
        "Any" => WellKnown::Any,
        "Timestamp" => WellKnown::Timestamp,
        "Duration" => WellKnown::Duration,
        "FieldMask" => WellKnown::FieldMask,
        "Struct" => WellKnown::Struct,
        "ListValue" => WellKnown::ListValue,
        "Value" => WellKnown::Value,
        "Empty" => WellKnown::Empty,
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
        | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => WellKnown::Wrapper,
        _ => return None,
    })
}

/// Refuses an `Any` (at any depth, inside other `Any`s too) whose type URL names its type
/// with a leading dot, as Go's protojson does. prost-reflect resolves such a name, but then
/// reads a well-known type as a plain message and drops its `"value"` silently.
pub(crate) fn check_any_type_names(message: &DynamicMessage) -> Result<(), GatewayError> {
    let desc = message.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        return check_any(message);
    }
    for (_, value) in message.fields() {
        match value {
            Value::Message(m) => check_any_type_names(m)?,
            Value::List(items) => items.iter().try_for_each(check_value)?,
            Value::Map(entries) => entries.values().try_for_each(check_value)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_value(value: &Value) -> Result<(), GatewayError> {
    match value {
        Value::Message(m) => check_any_type_names(m),
        _ => Ok(()),
    }
}

fn check_any(any: &DynamicMessage) -> Result<(), GatewayError> {
    let url = match any.get_field_by_name("type_url").as_deref() {
        Some(Value::String(url)) => url.clone(),
        _ => return Ok(()),
    };
    let name = url.rsplit('/').next().unwrap_or_default();
    if name.starts_with('.') {
        return Err(GatewayError::invalid_argument(format!(
            "invalid Any type URL {}: the type name may not start with \".\"",
            quoted(&url)
        )));
    }
    let Some(packed) = any.descriptor().parent_pool().get_message_by_name(name) else {
        return Ok(());
    };
    let value = match any.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(value)) => value.clone(),
        _ => return Ok(()),
    };
    match DynamicMessage::decode(packed, value) {
        Ok(inner) => check_any_type_names(&inner),
        Err(_) => Ok(()),
    }
}
