//! Values from text, for path variables and query parameters: scalars, enums by name or
//! number, bytes in standard or URL-safe base64, and the well-known types with a string form.

use crate::well_known::{well_known, WellKnown};
use base64::Engine;
use prost_reflect::{DynamicMessage, EnumDescriptor, Kind, MessageDescriptor, Value};

use crate::error::{clipped, quoted};

/// Parses `raw` as a value of `kind`. The error says what was expected.
pub fn parse(kind: &Kind, raw: &str) -> Result<Value, String> {
    match kind {
        Kind::Double => parse_float(raw).map(Value::F64),
        Kind::Float => parse_float(raw)
            .and_then(|f| to_f32(f, raw))
            .map(Value::F32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => parse_int(raw, "int32").map(Value::I32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => parse_int(raw, "int64").map(Value::I64),
        Kind::Uint32 | Kind::Fixed32 => parse_int(raw, "uint32").map(Value::U32),
        Kind::Uint64 | Kind::Fixed64 => parse_int(raw, "uint64").map(Value::U64),
        Kind::Bool => parse_bool(raw).map(Value::Bool),
        Kind::String => Ok(Value::String(raw.to_string())),
        Kind::Bytes => parse_bytes(raw).map(|b| Value::Bytes(b.into())),
        Kind::Enum(e) => parse_enum(e, raw).map(Value::EnumNumber),
        Kind::Message(m) => parse_message(m, raw).map(Value::Message),
    }
}

fn parse_float(raw: &str) -> Result<f64, String> {
    match raw {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => raw
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("{} is not a number", quoted(raw))),
    }
}

/// A finite double that does not fit a float is out of range, not infinity.
fn to_f32(f: f64, raw: &str) -> Result<f32, String> {
    let single = f as f32;
    match single.is_finite() || !f.is_finite() {
        true => Ok(single),
        false => Err(format!("{} is out of range for float", quoted(raw))),
    }
}

pub(super) fn parse_int<T: std::str::FromStr>(raw: &str, type_name: &str) -> Result<T, String> {
    raw.parse::<T>()
        .map_err(|_| format!("{} is not a valid {type_name}", quoted(raw)))
}

/// Go's `strconv.ParseBool`, which grpc-gateway uses.
pub(super) fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err(format!("{} is not a bool", quoted(raw))),
    }
}

/// Standard or URL-safe base64, with or without padding.
pub fn parse_bytes(raw: &str) -> Result<Vec<u8>, String> {
    let unpadded = raw.trim_end_matches('=');
    let normalised: String = unpadded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(normalised)
        .map_err(|e| format!("{} is not base64: {e}", quoted(raw)))
}

fn parse_enum(e: &EnumDescriptor, raw: &str) -> Result<i32, String> {
    if let Some(v) = e.get_value_by_name(raw) {
        return Ok(v.number());
    }
    raw.parse::<i32>()
        .ok()
        .filter(|n| e.get_value(*n).is_some())
        .ok_or_else(|| format!("{} is not a value of enum {}", quoted(raw), e.full_name()))
}

fn parse_message(m: &MessageDescriptor, raw: &str) -> Result<DynamicMessage, String> {
    match well_known(m) {
        Some(WellKnown::Duration) => {
            from_json(m, &json_string(raw)).or_else(|e| go_duration(m, raw).ok_or(e))
        }
        Some(WellKnown::FieldMask) => Ok(field_mask(m, raw)),
        Some(WellKnown::Timestamp) => {
            from_json(m, &serde_json::Value::String(raw.to_string()).to_string())
        }
        Some(w) if w.is_free_json() => from_json(m, raw),
        Some(WellKnown::Wrapper) => wrapper(m, raw),
        _ => Err(format!(
            "message type {} cannot be set from a string",
            m.full_name()
        )),
    }
}

/// A comma-separated list of paths, taken as written (grpc-gateway does not rename them).
fn field_mask(m: &MessageDescriptor, raw: &str) -> DynamicMessage {
    let paths = raw
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| Value::String(p.to_string()))
        .collect();
    let mut message = DynamicMessage::new(m.clone());
    message.set_field_by_name("paths", Value::List(paths));
    message
}

fn json_string(raw: &str) -> String {
    serde_json::Value::String(raw.to_string()).to_string()
}

/// A duration in Go's `time.ParseDuration` syntax (`1h30m`, `1.5s`, `300ms`), which
/// grpc-gateway accepts in query parameters.
fn go_duration(m: &MessageDescriptor, raw: &str) -> Option<DynamicMessage> {
    let nanos = parse_go_duration(raw)?;
    let mut message = DynamicMessage::new(m.clone());
    let seconds = i64::try_from(nanos / 1_000_000_000).ok()?;
    let rest = i32::try_from(nanos % 1_000_000_000).ok()?;
    message.set_field_by_name("seconds", Value::I64(seconds));
    message.set_field_by_name("nanos", Value::I32(rest));
    Some(message)
}

/// Nanoseconds of a Go duration string.
fn parse_go_duration(raw: &str) -> Option<i128> {
    let (sign, mut rest) = match raw.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, raw.strip_prefix('+').unwrap_or(raw)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = rest.split_at(number_end);
        let value: f64 = number.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    (total.is_finite() && total < 3.2e20).then(|| sign * total.round() as i128)
}

fn wrapper(m: &MessageDescriptor, raw: &str) -> Result<DynamicMessage, String> {
    let field = m
        .get_field_by_name("value")
        .ok_or_else(|| format!("{} is not a wrapper type", m.full_name()))?;
    let mut message = DynamicMessage::new(m.clone());
    message.set_field(&field, parse(&field.kind(), raw)?);
    Ok(message)
}

fn from_json(m: &MessageDescriptor, json: &str) -> Result<DynamicMessage, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(m.clone(), &mut de).map_err(|e| {
        let json = quoted(json);
        clipped(&format!("{json} is not a valid {}: {e}", m.full_name()))
    })?;
    de.end().map_err(|e| clipped(&e.to_string()))?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_bools_and_their_errors() {
        assert_eq!(parse(&Kind::Int64, "-42"), Ok(Value::I64(-42)));
        assert_eq!(parse(&Kind::Uint32, "7"), Ok(Value::U32(7)));
        assert!(parse(&Kind::Int32, "4294967296")
            .unwrap_err()
            .contains("int32"));
        assert!(parse(&Kind::Uint64, "-1").is_err());
        assert_eq!(parse(&Kind::Bool, "T"), Ok(Value::Bool(true)));
        assert!(parse(&Kind::Bool, "yes").is_err());
        assert_eq!(
            parse(&Kind::Double, "Infinity"),
            Ok(Value::F64(f64::INFINITY))
        );
        assert!(parse(&Kind::Double, "1e999").is_err());
    }

    #[test]
    fn bytes_in_both_alphabets_with_or_without_padding() {
        for raw in ["+/8=", "+/8", "-_8=", "-_8"] {
            assert_eq!(parse_bytes(raw).unwrap(), vec![0xfb, 0xff], "{raw}");
        }
        assert!(parse_bytes("a").is_err());
    }

    #[test]
    fn well_known_types_from_strings() {
        let pool = crate::descriptor::load(&Default::default()).unwrap();
        let ts = pool
            .get_message_by_name("google.protobuf.Timestamp")
            .unwrap();
        let v = parse(&Kind::Message(ts.clone()), "2024-01-02T03:04:05Z").unwrap();
        let seconds = v
            .as_message()
            .unwrap()
            .get_field_by_name("seconds")
            .unwrap();
        assert_eq!(seconds.as_i64(), Some(1_704_164_645));
        assert!(parse(&Kind::Message(ts), "yesterday").is_err());
        let w = pool
            .get_message_by_name("google.protobuf.Int32Value")
            .unwrap();
        let v = parse(&Kind::Message(w), "10").unwrap();
        let inner = v.as_message().unwrap().get_field_by_name("value").unwrap();
        assert_eq!(inner.as_i32(), Some(10));
        let any = pool.get_message_by_name("google.protobuf.Any").unwrap();
        assert!(parse(&Kind::Message(any), "x").is_err());
        let d = pool
            .get_message_by_name("google.protobuf.Duration")
            .unwrap();
        for (raw, seconds, nanos) in [
            ("1.5s", 1, 500_000_000),
            ("1h30m", 5400, 0),
            ("-300ms", 0, -300_000_000),
        ] {
            let v = parse(&Kind::Message(d.clone()), raw).unwrap();
            let m = v.as_message().unwrap();
            assert_eq!(
                m.get_field_by_name("seconds").unwrap().as_i64(),
                Some(seconds),
                "{raw}"
            );
            assert_eq!(
                m.get_field_by_name("nanos").unwrap().as_i32(),
                Some(nanos),
                "{raw}"
            );
        }
        assert!(parse(&Kind::Message(d), "5 minutes").is_err());
    }
}
