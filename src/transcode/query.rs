//! Query parameters into fields, by grpc-gateway's rules: dotted paths through singular
//! messages (proto or JSON names), repeated keys for repeated fields, `m[key]=value` for maps,
//! `+` as a space; keys bound by the path or the body are skipped; unknown keys are ignored
//! unless the options reject them.

use std::borrow::Cow;

use crate::well_known::well_known;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use super::options::JsonOptions;
use super::scalar;
use crate::error::{quoted, GatewayError};
use crate::route::field_path::find_field;

/// Applies every query parameter to `message`.
pub(super) fn apply(
    message: &mut DynamicMessage,
    query: &str,
    bound: &[Vec<u32>],
    options: &JsonOptions,
) -> Result<(), GatewayError> {
    let mut seen: Vec<Vec<u32>> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_component(raw_key).map_err(|e| invalid(raw_key, &e))?;
        let value = decode_component(raw_value).map_err(|e| invalid(&key, &e))?;
        apply_one(message, &key, &value, bound, options, &mut seen)
            .map_err(|e| invalid(&key, &e))?;
    }
    Ok(())
}

/// An `application/x-www-form-urlencoded` body, by the query rules (nothing is bound: the
/// path variables are applied after it, over it).
pub(super) fn apply_form(
    message: &mut DynamicMessage,
    form: &str,
    options: &JsonOptions,
) -> Result<(), GatewayError> {
    let mut seen: Vec<Vec<u32>> = Vec::new();
    for pair in form.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let invalid = |key: &str, e: &str| {
            GatewayError::field_invalid(&format!("form field {}", quoted(key)), key, e)
        };
        let key = decode_component(raw_key).map_err(|e| invalid(raw_key, &e))?;
        let value = decode_component(raw_value).map_err(|e| invalid(&key, &e))?;
        apply_field(message, &key, &value, options, &mut seen)?;
    }
    Ok(())
}

/// One decoded `key=value` (a form field, a multipart text part) applied by the query rules;
/// `seen` keeps what was set, so that a singular field set twice is refused.
pub(super) fn apply_field(
    message: &mut DynamicMessage,
    key: &str,
    value: &str,
    options: &JsonOptions,
    seen: &mut Vec<Vec<u32>>,
) -> Result<(), GatewayError> {
    apply_one(message, key, value, &[], options, seen)
        .map_err(|e| GatewayError::field_invalid(&format!("form field {}", quoted(key)), key, &e))
}

/// A refused query parameter, named by its key (the field path as the client wrote it).
fn invalid(key: &str, reason: &str) -> GatewayError {
    GatewayError::field_invalid(&format!("query parameter {}", quoted(key)), key, reason)
}

/// One query key or value: `+` is a space, `%XX` escapes are decoded, and the result must be
/// UTF-8 (a lossy replacement would hand the upstream text the client never sent).
pub(super) fn decode_component(raw: &str) -> Result<Cow<'_, str>, String> {
    let invalid = |_| "is not valid UTF-8 once percent-decoded".to_string();
    match raw.contains('+') {
        true => {
            let spaced = raw.replace('+', " ");
            let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8();
            decoded.map(|v| Cow::Owned(v.into_owned())).map_err(invalid)
        }
        false => percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(invalid),
    }
}

fn apply_one(
    message: &mut DynamicMessage,
    key: &str,
    value: &str,
    bound: &[Vec<u32>],
    options: &JsonOptions,
    seen: &mut Vec<Vec<u32>>,
) -> Result<(), String> {
    let (path_text, map_key) = split_map_key(key);
    let Some(path) = resolve(&message.descriptor(), path_text)? else {
        return match options.reject_unknown_query {
            true => Err("no such field".into()),
            false => Ok(()),
        };
    };
    let numbers: Vec<u32> = path.iter().map(FieldDescriptor::number).collect();
    if bound.iter().any(|b| overlaps(b, &numbers)) {
        return Ok(());
    }
    let (leaf, parents) = path.split_last().ok_or("empty field name")?;
    let target = parent_mut(message, parents)?;
    match map_key {
        Some(k) => set_map_entry(target, leaf, k, value),
        None if leaf.is_map() => Err("a map field is set as name[key]=value".into()),
        None if leaf.is_list() => push(target, leaf, value),
        None => set_once(target, leaf, value, numbers, seen),
    }
}

/// `m[key]` -> (`m`, Some(`key`)).
fn split_map_key(key: &str) -> (&str, Option<&str>) {
    match (key.find('['), key.strip_suffix(']')) {
        (Some(open), Some(body)) if open > 0 => (&key[..open], Some(&body[open + 1..])),
        _ => (key, None),
    }
}

/// Resolves a dotted path; `Ok(None)` when some name is unknown.
/// The deepest dotted path a query parameter may name: recursive messages would otherwise let
/// one parameter build an arbitrarily deep request.
const MAX_PATH_DEPTH: usize = 32;

fn resolve(
    message: &MessageDescriptor,
    dotted: &str,
) -> Result<Option<Vec<FieldDescriptor>>, String> {
    let mut current = message.clone();
    let mut fields = Vec::new();
    let parts: Vec<&str> = dotted.split('.').collect();
    if parts.len() > MAX_PATH_DEPTH {
        return Err(format!(
            "a field path may have at most {MAX_PATH_DEPTH} parts"
        ));
    }
    for (i, part) in parts.iter().enumerate() {
        let Some(field) = find_field(&current, part) else {
            return Ok(None);
        };
        if i + 1 < parts.len() {
            current = crate::route::field_path::singular_message(&field)
                .map_err(|e| format!("invalid path: {e}"))?;
        }
        fields.push(field);
    }
    Ok(Some(fields))
}

/// A query path is skipped when it and a bound path share a prefix (one contains the other).
pub(super) fn overlaps(bound: &[u32], path: &[u32]) -> bool {
    let n = bound.len().min(path.len());
    bound[..n] == path[..n]
}

fn leaf_value(leaf: &FieldDescriptor, raw: &str) -> Result<Value, String> {
    if let Kind::Message(m) = leaf.kind() {
        let settable = well_known(&m).is_some_and(|w| w.has_text_form() || w.is_free_json());
        if !settable {
            return Err(format!(
                "message type {} cannot be set from a query parameter",
                m.full_name()
            ));
        }
    }
    scalar::parse(&leaf.kind(), raw)
}

fn push(target: &mut DynamicMessage, leaf: &FieldDescriptor, raw: &str) -> Result<(), String> {
    let value = leaf_value(leaf, raw)?;
    if let Value::List(list) = target.get_field_mut(leaf) {
        list.push(value);
    }
    Ok(())
}

fn set_once(
    target: &mut DynamicMessage,
    leaf: &FieldDescriptor,
    raw: &str,
    numbers: Vec<u32>,
    seen: &mut Vec<Vec<u32>>,
) -> Result<(), String> {
    if seen.contains(&numbers) {
        return Err(format!("too many values for field {:?}", leaf.name()));
    }
    if let Some(oneof) = leaf.containing_oneof().filter(|o| !o.is_synthetic()) {
        let taken = oneof
            .fields()
            .any(|f| f.number() != leaf.number() && target.has_field(&f));
        if taken {
            return Err(format!("field already set for oneof {:?}", oneof.name()));
        }
    }
    target.set_field(leaf, leaf_value(leaf, raw)?);
    seen.push(numbers);
    Ok(())
}

fn set_map_entry(
    target: &mut DynamicMessage,
    leaf: &FieldDescriptor,
    key: &str,
    raw: &str,
) -> Result<(), String> {
    let Kind::Message(entry) = leaf.kind() else {
        return Err("only map fields take name[key]=value".into());
    };
    if !leaf.is_map() {
        return Err("only map fields take name[key]=value".into());
    }
    let key = map_key(&entry.map_entry_key_field().kind(), key)?;
    let value = leaf_value(&entry.map_entry_value_field(), raw)?;
    if let Value::Map(map) = target.get_field_mut(leaf) {
        if map.contains_key(&key) {
            return Err("more than one value for the same map key".into());
        }
        map.insert(key, value);
    }
    Ok(())
}

fn map_key(kind: &Kind, raw: &str) -> Result<MapKey, String> {
    Ok(match scalar::parse(kind, raw)? {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(n) => MapKey::I32(n),
        Value::I64(n) => MapKey::I64(n),
        Value::U32(n) => MapKey::U32(n),
        Value::U64(n) => MapKey::U64(n),
        Value::String(s) => MapKey::String(s),
        _ => return Err("unsupported map key type".into()),
    })
}

/// The message a path ends in, creating the messages along the way.
pub(super) fn parent_mut<'m>(
    message: &'m mut DynamicMessage,
    path: &[FieldDescriptor],
) -> Result<&'m mut DynamicMessage, String> {
    let mut current = message;
    for field in path {
        current = match current.get_field_mut(field) {
            Value::Message(m) => m,
            _ => return Err(format!("{:?} is not a message", field.name())),
        };
    }
    Ok(current)
}
