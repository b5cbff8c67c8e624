//! Query parameters straight to wire fields, without a `DynamicMessage`, in the usual case:
//! each key names a field of the request message itself (by its proto or JSON name) holding
//! an integer, a bool, an enum or a string, or a list of them.
//!
//! Anything else is declined, writing nothing, and the reference path (`query.rs`) then
//! decides and words any error: a dotted path or a map entry, a message, float, double or
//! bytes field, a member of a oneof, a singular field with explicit presence, a singular field
//! given twice, a value that does not parse, an unknown key, an escape that is not UTF-8.
//! Keys the path binds are skipped, as there.

use std::borrow::Cow;

use super::query::{decode_component, overlaps};
use super::scalar;
use super::schema::{
    put_tag, put_varint, wire_type, Declined, Delimited, FieldSchema, MessageSchema,
};
use super::schema::{Scalar, Shape, ValueKind, LEN};

/// Appends the fields `query` sets to `out`, or declines leaving `out` as it was.
pub(super) fn encode(
    message: &MessageSchema,
    query: &str,
    bound: &[Vec<u32>],
    out: &mut Vec<u8>,
) -> Result<(), Declined> {
    let values = field_values(message, query, bound)?;
    let start = out.len();
    let written = values
        .chunk_by(|a, b| a.0 == b.0)
        .try_for_each(|run| write_field(&message.fields[run[0].0], run, out));
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Each parameter's field index and decoded value, ordered by field (a field's values keep
/// their order), the bound ones left out.
fn field_values<'q>(
    message: &MessageSchema,
    query: &'q str,
    bound: &[Vec<u32>],
) -> Result<Vec<(usize, Cow<'q, str>)>, Declined> {
    let mut values = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // Both are decoded first: a bound key whose value is not UTF-8 is still refused.
        let key = decode_component(raw_key).map_err(|_| Declined)?;
        let value = decode_component(raw_value).map_err(|_| Declined)?;
        let index = message.names.get(&key).ok_or(Declined)?;
        let index = usize::try_from(index).map_err(|_| Declined)?;
        let number = message.fields.get(index).ok_or(Declined)?.number;
        if !bound.iter().any(|b| overlaps(b, &[number])) {
            values.push((index, value));
        }
    }
    values.sort_by_key(|(index, _)| *index);
    Ok(values)
}

/// One field's values: a singular field's one value (nothing for its default), or a list's
/// values, packed when the field is.
fn write_field(
    field: &FieldSchema,
    values: &[(usize, Cow<'_, str>)],
    out: &mut Vec<u8>,
) -> Result<(), Declined> {
    if field.oneof.is_some() {
        return Err(Declined);
    }
    match (&field.shape, values) {
        (Shape::Single, [(_, value)]) if field.implicit => write_single(field, value, out),
        (Shape::Repeated { packed: true }, _) => {
            put_tag(out, field.number, LEN);
            let d = Delimited::open(out);
            for (_, value) in values {
                parse(&field.kind, value)?
                    .put(&field.kind, out)
                    .ok_or(Declined)?;
            }
            d.close(out);
            Ok(())
        }
        (Shape::Repeated { .. }, _) => values
            .iter()
            .try_for_each(|(_, value)| write_element(field, value, out)),
        _ => Err(Declined),
    }
}

/// A singular field with implicit presence: left out when it holds its default.
fn write_single(field: &FieldSchema, value: &str, out: &mut Vec<u8>) -> Result<(), Declined> {
    match &field.kind {
        ValueKind::String if value.is_empty() => Ok(()),
        ValueKind::String => write_element(field, value, out),
        kind => match parse(kind, value)? {
            scalar if scalar.is_default() => Ok(()),
            scalar => write_scalar(field, scalar, out),
        },
    }
}

/// One value with its tag, always written.
fn write_element(field: &FieldSchema, value: &str, out: &mut Vec<u8>) -> Result<(), Declined> {
    match &field.kind {
        ValueKind::String => {
            put_tag(out, field.number, LEN);
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value.as_bytes());
            Ok(())
        }
        kind => write_scalar(field, parse(kind, value)?, out),
    }
}

fn write_scalar(field: &FieldSchema, value: Scalar, out: &mut Vec<u8>) -> Result<(), Declined> {
    put_tag(out, field.number, wire_type(&field.kind));
    value.put(&field.kind, out).ok_or(Declined)
}

/// An integer, bool or enum value as the reference path reads it (`scalar::parse`); floats
/// and doubles are declined.
fn parse(kind: &ValueKind, raw: &str) -> Result<Scalar, Declined> {
    let value = match kind {
        ValueKind::Int32 | ValueKind::Sint32 | ValueKind::Sfixed32 => {
            Scalar::I32(scalar::parse_int(raw, "int32").map_err(|_| Declined)?)
        }
        ValueKind::Int64 | ValueKind::Sint64 | ValueKind::Sfixed64 => {
            Scalar::I64(scalar::parse_int(raw, "int64").map_err(|_| Declined)?)
        }
        ValueKind::Uint32 | ValueKind::Fixed32 => {
            Scalar::U32(scalar::parse_int(raw, "uint32").map_err(|_| Declined)?)
        }
        ValueKind::Uint64 | ValueKind::Fixed64 => {
            Scalar::U64(scalar::parse_int(raw, "uint64").map_err(|_| Declined)?)
        }
        ValueKind::Bool => Scalar::Bool(scalar::parse_bool(raw).map_err(|_| Declined)?),
        ValueKind::Enum(e) => Scalar::Enum(match e.by_name.get(raw) {
            Some(number) => number,
            None => raw
                .parse::<i32>()
                .ok()
                .filter(|n| e.by_number.contains_key(n))
                .ok_or(Declined)?,
        }),
        _ => return Err(Declined),
    };
    Ok(value)
}
