//! The `buf.validate` rules a JSON Schema can say, added to the schemas of the fields that carry
//! them, so a client generated from the document knows the bounds `--validate` (or the service
//! itself) holds it to. Rules JSON Schema cannot say (CEL, `in` lists of messages, cross-field
//! rules) are left to the error answer.
//!
//! The rules are read as the pool decoded them (`(buf.validate.field)` is a message extension
//! of `FieldOptions`), by field name, so any version of `validate.proto` a set carries works.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, ReflectMessage, Value};
use serde_json::{Map, Value as Json};

/// The field's `(buf.validate.field)` rules, when it has them.
pub(super) fn field_rules(field: &FieldDescriptor) -> Option<DynamicMessage> {
    let pool = field.parent_message().parent_pool();
    let extension = pool.get_extension_by_name("buf.validate.field")?;
    let options = field.options();
    if !options.has_extension(&extension) {
        return None;
    }
    options.get_extension(&extension).as_message().cloned()
}

/// Whether the rules say the field must be set (`required: true`).
pub(super) fn is_required(field: &FieldDescriptor) -> bool {
    field_rules(field).is_some_and(|rules| flag(&rules, "required"))
}

/// Adds the keywords `field`'s rules express to `schema`, the schema of its whole value.
pub(super) fn add_keywords(field: &FieldDescriptor, schema: &mut Map<String, Json>) {
    let Some(rules) = field_rules(field) else {
        return;
    };
    if field.is_map() {
        if let Some(map) = message(&rules, "map") {
            copy_u64(&map, "min_pairs", "minProperties", schema);
            copy_u64(&map, "max_pairs", "maxProperties", schema);
        }
        return;
    }
    if field.is_list() {
        if let Some(repeated) = message(&rules, "repeated") {
            copy_u64(&repeated, "min_items", "minItems", schema);
            copy_u64(&repeated, "max_items", "maxItems", schema);
            if flag(&repeated, "unique") {
                schema.insert("uniqueItems".into(), true.into());
            }
            let items = message(&repeated, "items");
            if let (Some(items), Some(Json::Object(item))) = (items, schema.get_mut("items")) {
                scalar_keywords(&field.kind(), &items, item);
            }
        }
        return;
    }
    scalar_keywords(&field.kind(), &rules, schema);
}

/// The keywords of the string or number rules in `rules` (a `FieldRules`) for a `kind` value.
fn scalar_keywords(kind: &Kind, rules: &DynamicMessage, schema: &mut Map<String, Json>) {
    match kind {
        Kind::String => {
            if let Some(string) = message(rules, "string") {
                string_keywords(&string, schema);
            }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => number_keywords(rules, "int32", schema),
        Kind::Uint32 | Kind::Fixed32 => number_keywords(rules, "uint32", schema),
        Kind::Float => number_keywords(rules, "float", schema),
        Kind::Double => number_keywords(rules, "double", schema),
        // 64-bit integers are written as strings: bounds on them are not JSON Schema's.
        _ => {}
    }
}

fn string_keywords(string: &DynamicMessage, schema: &mut Map<String, Json>) {
    copy_u64(string, "min_len", "minLength", schema);
    copy_u64(string, "max_len", "maxLength", schema);
    if let Some(len) = set(string, "len").and_then(|v| v.as_u64()) {
        schema.insert("minLength".into(), len.into());
        schema.insert("maxLength".into(), len.into());
    }
    if let Some(pattern) = set(string, "pattern").and_then(|v| v.as_str().map(str::to_owned)) {
        schema.insert("pattern".into(), pattern.into());
    }
    let formats = [
        ("email", "email"),
        ("uri", "uri"),
        ("uuid", "uuid"),
        ("hostname", "hostname"),
        ("ipv4", "ipv4"),
        ("ipv6", "ipv6"),
    ];
    if let Some((_, format)) = formats.iter().find(|(rule, _)| flag(string, rule)) {
        schema.insert("format".into(), (*format).into());
    }
}

/// `gt`/`gte`/`lt`/`lte` of the `name` rules (`int32`, `uint32`, `float`, `double`).
fn number_keywords(rules: &DynamicMessage, name: &str, schema: &mut Map<String, Json>) {
    let Some(number) = message(rules, name) else {
        return;
    };
    let bounds = [
        ("gt", "exclusiveMinimum"),
        ("gte", "minimum"),
        ("lt", "exclusiveMaximum"),
        ("lte", "maximum"),
    ];
    for (rule, keyword) in bounds {
        if let Some(bound) = set(&number, rule).as_ref().and_then(number_value) {
            schema.insert(keyword.into(), bound);
        }
    }
}

fn number_value(value: &Value) -> Option<Json> {
    match value {
        Value::I32(n) => Some((*n).into()),
        Value::U32(n) => Some((*n).into()),
        Value::F32(n) => serde_json::Number::from_f64(f64::from(*n)).map(Json::Number),
        Value::F64(n) => serde_json::Number::from_f64(*n).map(Json::Number),
        _ => None,
    }
}

/// The value of the field `name` of `message`, when it is set.
fn set(message: &DynamicMessage, name: &str) -> Option<Value> {
    let field = message.descriptor().get_field_by_name(name)?;
    message
        .has_field(&field)
        .then(|| message.get_field(&field).into_owned())
}

fn message(rules: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    set(rules, name)?.as_message().cloned()
}

fn flag(rules: &DynamicMessage, name: &str) -> bool {
    set(rules, name).and_then(|v| v.as_bool()).unwrap_or(false)
}

fn copy_u64(rules: &DynamicMessage, rule: &str, keyword: &str, schema: &mut Map<String, Json>) {
    if let Some(n) = set(rules, rule).and_then(|v| v.as_u64()) {
        schema.insert(keyword.into(), n.into());
    }
}
