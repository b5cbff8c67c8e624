//! The well-known types (`google.protobuf.*`) whose JSON form is their own: which they are,
//! what kind of form each has (text a path or query can carry, any JSON value, an object),
//! and the rules of protojson that apply to them beyond the form (an `Any`'s type name).
//! Every part of the gateway that treats them apart asks here, by [`WellKnown`], never by
//! name: the route plan (path variables), the transcoders (JSON in and out, query text), the
//! fast paths' schemas and the OpenAPI document.

use prost_reflect::{DynamicMessage, EnumDescriptor, MessageDescriptor, ReflectMessage, Value};

use crate::error::{quoted, GatewayError};

/// The well-known types with a JSON form of their own (wrappers share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl WellKnown {
    /// A JSON form that is one string or number (a timestamp, a duration, a field mask, a
    /// wrapper's value), so a path variable or a query parameter can set it as text.
    pub fn has_text_form(self) -> bool {
        matches!(
            self,
            WellKnown::Timestamp | WellKnown::Duration | WellKnown::FieldMask | WellKnown::Wrapper
        )
    }

    /// A JSON form that is any JSON value (`Struct`, `Value`, `ListValue`): its keys are the
    /// client's own, not field names.
    pub fn is_free_json(self) -> bool {
        matches!(
            self,
            WellKnown::Struct | WellKnown::Value | WellKnown::ListValue
        )
    }
}

/// Whether a message type's JSON form is text (see [`WellKnown::has_text_form`]).
pub fn has_text_form(desc: &MessageDescriptor) -> bool {
    well_known(desc).is_some_and(WellKnown::has_text_form)
}

/// Whether `full_name` is in the `google.protobuf` package: well-known types, and the
/// descriptor types that no API carries as JSON.
pub fn in_protobuf_package(full_name: &str) -> bool {
    full_name.starts_with("google.protobuf.")
}

/// Whether `e` is `google.protobuf.NullValue`, whose JSON form is `null`.
pub fn is_null_value(e: &EnumDescriptor) -> bool {
    e.full_name() == "google.protobuf.NullValue"
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
