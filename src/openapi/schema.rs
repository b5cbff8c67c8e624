//! JSON Schemas of messages, enums and fields, following the proto3 JSON mapping exactly as
//! the gateway writes it (`transcode::message_to_json`) under the current flags; and the schemas of
//! path and query parameters, which hold the text forms the request parser reads.

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};

use super::comments::Comments;
use crate::transcode::JsonOptions;
use crate::well_known::{well_known, WellKnown};

const REF: &str = "#/components/schemas/";

/// Standard base64 with padding, as bytes are written.
const BASE64: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
/// Durations as written: seconds with 0, 3, 6 or 9 fractional digits and an `s`.
const DURATION: &str = r"^-?[0-9]+(?:\.[0-9]{3}|\.[0-9]{6}|\.[0-9]{9})?s$";
/// Integers as written in strings: no sign on zero, no leading zeros.
/// Decimal `int64` text within its range (-2^63 to 2^63-1), digit by digit: what protojson
/// accepts, so a schema-driven client never sends a value the gateway must refuse.
const INT64_DIGITS: &str = "^(?:0|(?:[1-9][0-9]{0,17}|[1-8][0-9]{18}|9(?:[0-1][0-9]{17}|2(?:[0-1][0-9]{16}|2(?:[0-2][0-9]{15}|3(?:[0-2][0-9]{14}|3(?:[0-6][0-9]{13}|7(?:[0-1][0-9]{12}|20(?:[0-2][0-9]{10}|3(?:[0-5][0-9]{9}|6(?:[0-7][0-9]{8}|8(?:[0-4][0-9]{7}|5(?:[0-3][0-9]{6}|4(?:[0-6][0-9]{5}|7(?:[0-6][0-9]{4}|7(?:[0-4][0-9]{3}|5(?:[0-7][0-9]{2}|80[0-7]))))))))))))))))|-(?:[1-9][0-9]{0,17}|[1-8][0-9]{18}|9(?:[0-1][0-9]{17}|2(?:[0-1][0-9]{16}|2(?:[0-2][0-9]{15}|3(?:[0-2][0-9]{14}|3(?:[0-6][0-9]{13}|7(?:[0-1][0-9]{12}|20(?:[0-2][0-9]{10}|3(?:[0-5][0-9]{9}|6(?:[0-7][0-9]{8}|8(?:[0-4][0-9]{7}|5(?:[0-3][0-9]{6}|4(?:[0-6][0-9]{5}|7(?:[0-6][0-9]{4}|7(?:[0-4][0-9]{3}|5(?:[0-7][0-9]{2}|80[0-8])))))))))))))))))$";
/// Decimal `uint64` text within its range (0 to 2^64-1).
const UINT64_DIGITS: &str = "^(?:0|(?:[1-9][0-9]{0,18}|1(?:[0-7][0-9]{18}|8(?:[0-3][0-9]{17}|4(?:[0-3][0-9]{16}|4(?:[0-5][0-9]{15}|6(?:[0-6][0-9]{14}|7(?:[0-3][0-9]{13}|4(?:[0-3][0-9]{12}|40(?:[0-6][0-9]{10}|7(?:[0-2][0-9]{9}|3(?:[0-6][0-9]{8}|70(?:[0-8][0-9]{6}|9(?:[0-4][0-9]{5}|5(?:[0-4][0-9]{4}|5(?:0[0-9]{3}|1(?:[0-5][0-9]{2}|6(?:0[0-9]{1}|1[0-5]))))))))))))))))))$";
/// Decimal `int32` text within its range (map keys).
const INT32_DIGITS: &str = "^(?:0|(?:[1-9][0-9]{0,8}|[1-1][0-9]{9}|2(?:0[0-9]{8}|1(?:[0-3][0-9]{7}|4(?:[0-6][0-9]{6}|7(?:[0-3][0-9]{5}|4(?:[0-7][0-9]{4}|8(?:[0-2][0-9]{3}|3(?:[0-5][0-9]{2}|6(?:[0-3][0-9]{1}|4[0-7])))))))))|-(?:[1-9][0-9]{0,8}|[1-1][0-9]{9}|2(?:0[0-9]{8}|1(?:[0-3][0-9]{7}|4(?:[0-6][0-9]{6}|7(?:[0-3][0-9]{5}|4(?:[0-7][0-9]{4}|8(?:[0-2][0-9]{3}|3(?:[0-5][0-9]{2}|6(?:[0-3][0-9]{1}|4[0-8]))))))))))$";
/// Decimal `uint32` text within its range (map keys).
const UINT32_DIGITS: &str = "^(?:0|(?:[1-9][0-9]{0,8}|[1-3][0-9]{9}|4(?:[0-1][0-9]{8}|2(?:[0-8][0-9]{7}|9(?:[0-3][0-9]{6}|4(?:[0-8][0-9]{5}|9(?:[0-5][0-9]{4}|6(?:[0-6][0-9]{3}|7(?:[0-1][0-9]{2}|2(?:[0-8][0-9]{1}|9[0-5]))))))))))$";
/// The largest finite `float`.
const FLOAT_MAX: f64 = f32::MAX as f64;

/// The component schemas, built as operations refer to them.
pub(super) struct Schemas<'a> {
    json: &'a JsonOptions,
    comments: &'a Comments,
    components: BTreeMap<String, Value>,
}

impl<'a> Schemas<'a> {
    pub(super) fn new(json: &'a JsonOptions, comments: &'a Comments) -> Schemas<'a> {
        Schemas {
            json,
            comments,
            components: BTreeMap::new(),
        }
    }

    pub(super) fn comments(&self) -> &'a Comments {
        self.comments
    }

    pub(super) fn into_components(self) -> Map<String, Value> {
        self.components.into_iter().collect()
    }

    /// The JSON name of a field under the current flags.
    pub(super) fn field_name<'f>(&self, field: &'f FieldDescriptor) -> &'f str {
        match self.json.use_proto_names {
            true => field.name(),
            false => field.json_name(),
        }
    }

    /// `{"$ref": ...}` to the message's component, building it (and what it uses) if needed.
    pub(super) fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name();
        if !self.components.contains_key(name) {
            // A placeholder first, so recursive messages refer to themselves and stop.
            self.components.insert(name.to_string(), Value::Null);
            let schema = self.message(message);
            self.components.insert(name.to_string(), schema);
        }
        json!({ "$ref": format!("{REF}{name}") })
    }

    fn enum_ref(&mut self, enumeration: &EnumDescriptor) -> Value {
        let name = enumeration.full_name();
        if !self.components.contains_key(name) {
            let schema = self.enumeration(enumeration);
            self.components.insert(name.to_string(), schema);
        }
        json!({ "$ref": format!("{REF}{name}") })
    }

    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let mut schema = match well_known(message) {
            Some(WellKnown::Wrapper) => {
                let value = message.get_field_by_name("value");
                let inner = value.map_or(json!({}), |f| self.kind(&f.kind()));
                let mut s = as_object(inner);
                s.insert(
                    "description".into(),
                    "A wrapper: written as the wrapped value itself.".into(),
                );
                Value::Object(s)
            }
            Some(kind) => kind.schema(),
            None => self.plain_message(message),
        };
        if let (Some(text), Some(s)) = (self.comments.message(message), schema.as_object_mut()) {
            let described = match s.get("description").and_then(Value::as_str) {
                Some(own) => format!("{text}\n\n{own}"),
                None => text.to_string(),
            };
            s.insert("description".into(), described.into());
        }
        if message
            .descriptor_proto()
            .options
            .as_ref()
            .is_some_and(|o| o.deprecated())
        {
            schema["deprecated"] = true.into();
        }
        schema
    }

    fn plain_message(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        for field in message.fields() {
            let schema = self.property(&field);
            properties.insert(self.field_name(&field).to_string(), schema);
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        let required: Vec<String> = message
            .fields()
            .filter(super::rules::is_required)
            .map(|f| self.field_name(&f).to_string())
            .collect();
        if !required.is_empty() {
            schema["required"] = required.into();
        }
        let mut exclusive = Map::new();
        for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
            let members: Vec<String> = oneof
                .fields()
                .map(|f| self.field_name(&f).to_string())
                .collect();
            for member in &members {
                let others: Vec<Value> = members
                    .iter()
                    .filter(|m| *m != member)
                    .map(|m| json!({ "required": [m] }))
                    .collect();
                if !others.is_empty() {
                    exclusive.insert(member.clone(), json!({ "not": { "anyOf": others } }));
                }
            }
        }
        if !exclusive.is_empty() {
            schema["dependentSchemas"] = Value::Object(exclusive);
        }
        schema
    }

    /// A field as an object property: its schema, description and field number.
    pub(super) fn property(&mut self, field: &FieldDescriptor) -> Value {
        let nullable = self.json.emit_unpopulated && writes_null_when_unset(field);
        let mut schema = self.field_value(field, nullable);
        if let Some(s) = schema.as_object_mut() {
            s.insert("x-field-number".into(), field.number().into());
        }
        schema
    }

    /// The schema of a field's value, with its description; `nullable` adds `null`.
    pub(super) fn field_value(&mut self, field: &FieldDescriptor, nullable: bool) -> Value {
        let schema = if field.is_map() {
            self.map(field)
        } else if field.is_list() {
            json!({ "type": "array", "items": self.kind(&field.kind()) })
        } else {
            let schema = self.kind(&field.kind());
            match nullable {
                true => json!({ "anyOf": [schema, { "type": "null" }] }),
                false => schema,
            }
        };
        let mut schema = as_object(schema);
        super::rules::add_keywords(field, &mut schema);
        if let Some(text) = self.describe_field(field) {
            schema.insert("description".into(), text.into());
        }
        if field
            .field_descriptor_proto()
            .options
            .as_ref()
            .is_some_and(|o| o.deprecated())
        {
            schema.insert("deprecated".into(), true.into());
        }
        Value::Object(schema)
    }

    /// The comment of a field, and what the JSON mapping does with it that its type does not
    /// say: oneof membership and presence. (That requests may use either name of every field
    /// is said once, in the document's description.)
    pub(super) fn describe_field(&self, field: &FieldDescriptor) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        if let Some(text) = self.comments.field(field) {
            parts.push(text.to_string());
        }
        match field.containing_oneof() {
            Some(oneof) if !oneof.is_synthetic() => {
                let members: Vec<String> = oneof
                    .fields()
                    .map(|f| format!("`{}`", self.field_name(&f)))
                    .collect();
                let mut text = format!(
                    "Member of oneof `{}`: at most one of {} is set; members not set are omitted.",
                    oneof.name(),
                    members.join(", ")
                );
                if let Some(c) = self.comments.oneof(&oneof) {
                    text = format!("{text} {c}");
                }
                parts.push(text);
            }
            Some(_) => parts.push("Optional: omitted when not set.".into()),
            None => {}
        }
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    fn map(&mut self, field: &FieldDescriptor) -> Value {
        let Kind::Message(entry) = field.kind() else {
            return json!({ "type": "object" });
        };
        let key = entry.map_entry_key_field().kind();
        let value = self.kind(&entry.map_entry_value_field().kind());
        let mut schema = json!({ "type": "object", "additionalProperties": value });
        let names = match key {
            Kind::Bool => Some(json!({ "enum": ["true", "false"] })),
            Kind::String => None,
            Kind::Uint32 | Kind::Fixed32 => Some(json!({ "pattern": UINT32_DIGITS })),
            Kind::Uint64 | Kind::Fixed64 => Some(json!({ "pattern": UINT64_DIGITS })),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Some(json!({ "pattern": INT64_DIGITS })),
            _ => Some(json!({ "pattern": INT32_DIGITS })),
        };
        if let Some(names) = names {
            schema["propertyNames"] = names;
        }
        schema
    }

    /// The schema of one value of `kind` in a JSON body.
    pub(super) fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => floating("double"),
            Kind::Float => floating("float"),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                integer("int32", i64::from(i32::MIN).into(), i32::MAX.into())
            }
            Kind::Uint32 | Kind::Fixed32 => integer("uint32", 0.into(), u32::MAX.into()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => match self.json.int64_as_numbers {
                true => integer("int64", i64::MIN.into(), i64::MAX.into()),
                false => json!({ "type": "string", "format": "int64", "pattern": INT64_DIGITS }),
            },
            Kind::Uint64 | Kind::Fixed64 => match self.json.int64_as_numbers {
                true => integer("uint64", 0.into(), u64::MAX.into()),
                false => {
                    json!({ "type": "string", "format": "uint64", "pattern": UINT64_DIGITS })
                }
            },
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => bytes(),
            Kind::Message(m) => self.message_ref(m),
            Kind::Enum(e) if crate::well_known::is_null_value(e) => {
                json!({ "type": "null" })
            }
            Kind::Enum(e) => self.enum_ref(e),
        }
    }

    fn enumeration(&self, enumeration: &EnumDescriptor) -> Value {
        let mut lines = Vec::new();
        if let Some(text) = self.comments.enumeration(enumeration) {
            lines.push(format!("{text}\n"));
        }
        for value in enumeration.values() {
            let line = format!("- `{}` ({})", value.name(), value.number());
            lines.push(match self.comments.enum_value(&value) {
                Some(text) => format!("{line}: {}", text.replace('\n', " ")),
                None => line,
            });
        }
        let mut schema = match self.json.enums_as_ints {
            true => {
                let mut numbers: Vec<i32> = Vec::new();
                for value in enumeration.values() {
                    if !numbers.contains(&value.number()) {
                        numbers.push(value.number());
                    }
                }
                lines.push("\nWritten as numbers (`--enums-as-ints`).".into());
                json!({ "type": "integer", "format": "int32", "enum": numbers })
            }
            false => {
                let names: Vec<String> =
                    enumeration.values().map(|v| v.name().to_string()).collect();
                lines.push(
                    "\nRequests may also give the number. A number these descriptors do not \
                     name is written as a number."
                        .into(),
                );
                json!({ "type": "string", "enum": names })
            }
        };
        schema["description"] = lines.join("\n").into();
        schema
    }

    /// The schema of a path or query parameter bound to `field` (its text form), or `None`
    /// when the field cannot be set from text.
    pub(super) fn parameter(&mut self, field: &FieldDescriptor) -> Option<Value> {
        let one = parameter_kind(&field.kind())?;
        Some(match field.is_list() {
            true => json!({ "type": "array", "items": one }),
            false => one,
        })
    }
}

/// A singular field the gateway writes as `null` when it is not set and unpopulated fields are
/// emitted: message fields outside oneofs (Go's protojson does the same).
fn writes_null_when_unset(field: &FieldDescriptor) -> bool {
    match field.kind() {
        Kind::Message(m) => {
            field.containing_oneof().is_none() && !matches!(well_known(&m), Some(WellKnown::Value))
        }
        _ => false,
    }
}

fn as_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("allOf".into(), json!([other]));
            map
        }
    }
}

/// Floating-point numbers, with the three strings the mapping uses for the non-finite ones.
fn floating(format: &str) -> Value {
    json!({ "oneOf": [
        number(format),
        { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] },
    ] })
}

/// A finite number: a `float` within its range (a larger one is refused, never rounded to
/// infinity).
fn number(format: &str) -> Value {
    match format {
        "float" => json!({
            "type": "number", "format": format, "minimum": -FLOAT_MAX, "maximum": FLOAT_MAX
        }),
        _ => json!({ "type": "number", "format": format }),
    }
}

fn integer(format: &str, minimum: Value, maximum: Value) -> Value {
    json!({ "type": "integer", "format": format, "minimum": minimum, "maximum": maximum })
}

fn bytes() -> Value {
    json!({ "type": "string", "format": "byte", "contentEncoding": "base64", "pattern": BASE64 })
}

/// The text form of one value of `kind` in a path or query parameter.
fn parameter_kind(kind: &Kind) -> Option<Value> {
    Some(match kind {
        Kind::Double => number("double"),
        Kind::Float => number("float"),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            integer("int32", i64::from(i32::MIN).into(), i32::MAX.into())
        }
        Kind::Uint32 | Kind::Fixed32 => integer("uint32", 0.into(), u32::MAX.into()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            integer("int64", i64::MIN.into(), i64::MAX.into())
        }
        Kind::Uint64 | Kind::Fixed64 => integer("uint64", 0.into(), u64::MAX.into()),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({
            "type": "string", "format": "byte", "contentEncoding": "base64",
            "description": "Base64, standard or URL-safe alphabet."
        }),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
            json!({ "type": "string", "enum": names })
        }
        Kind::Message(m) if crate::well_known::has_text_form(m) => match well_known(m)? {
            WellKnown::Timestamp => json!({ "type": "string", "format": "date-time" }),
            WellKnown::Duration => json!({ "type": "string", "pattern": DURATION }),
            WellKnown::FieldMask => json!({
                "type": "string",
                "description": "Comma-separated field paths."
            }),
            _ => parameter_kind(&m.get_field_by_name("value")?.kind())?,
        },
        Kind::Message(_) => return None,
    })
}

/// Whether one value of `kind` can be set from a query parameter.
pub(super) fn settable_from_text(kind: &Kind) -> bool {
    parameter_kind(kind).is_some()
}

impl WellKnown {
    /// The JSON form of a well-known type (wrappers are built from their value field).
    fn schema(self) -> Value {
        match self {
            WellKnown::Any => json!({
                "type": "object",
                "required": ["@type"],
                "properties": { "@type": {
                    "type": "string",
                    "description": "The type URL, `type.googleapis.com/package.Message`."
                } },
                "description": "Any message: `@type` names it, and its fields follow; a \
                    well-known type's JSON form goes under `value`. An unset Any is `{}`; one \
                    whose type the gateway does not know keeps its bytes as base64 `value`."
            }),
            WellKnown::Timestamp => json!({
                "type": "string", "format": "date-time",
                "description": "RFC 3339 in UTC, with 0, 3, 6 or 9 fractional digits: \
                    `1972-01-01T10:00:20.021Z`."
            }),
            WellKnown::Duration => json!({
                "type": "string", "pattern": DURATION,
                "description": "Seconds with 0, 3, 6 or 9 fractional digits and an `s`: `1.5s`."
            }),
            WellKnown::FieldMask => json!({
                "type": "string",
                "description": "Field paths in lowerCamel, comma-separated: `user.displayName,photo`."
            }),
            WellKnown::Struct => json!({
                "type": "object", "description": "Any JSON object."
            }),
            WellKnown::Value => json!({ "description": "Any JSON value." }),
            WellKnown::ListValue => json!({ "type": "array", "description": "Any JSON array." }),
            WellKnown::Empty => json!({
                "type": "object", "maxProperties": 0, "description": "Always `{}`."
            }),
            WellKnown::Wrapper => json!({}),
        }
    }
}
