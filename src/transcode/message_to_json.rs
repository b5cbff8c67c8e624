//! Writing messages as proto3 JSON, byte for byte as grpc-gateway's marshaler (Go protojson)
//! writes them, straight into one buffer: declaration order, unset message fields as `null`
//! when unpopulated fields are emitted, map keys sorted, Go's float formatting, and an `Any`
//! whose type is unknown rendered as `@type` plus base64 `value` instead of failing.

use std::cmp::Ordering;

use base64::Engine;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use super::options::JsonOptions;
use crate::well_known::{is_null_value, well_known, WellKnown};

/// Why a message has no JSON form (a non-finite number in a `google.protobuf.Value`, or a
/// Timestamp or Duration out of the JSON range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(pub String);

type Result<T = ()> = std::result::Result<T, JsonError>;

/// The message of the [`JsonError`] for a rendering over its size limit.
pub const TOO_LARGE: &str = "the JSON rendering exceeds its size limit";

/// Appends `message` as JSON to `out`.
pub fn write_message(out: &mut Vec<u8>, message: &DynamicMessage, options: &JsonOptions) -> Result {
    Writer { out, options }.message(message)
}

/// Appends the JSON of one field's value (the `response_body` of a rule).
pub fn write_field(
    out: &mut Vec<u8>,
    message: &DynamicMessage,
    field: &FieldDescriptor,
    options: &JsonOptions,
) -> Result {
    let mut w = Writer { out, options };
    match field.kind() {
        // An unset message is written as its default, as grpc-gateway does for response_body.
        Kind::Message(m) if !message.has_field(field) && !field.is_list() && !field.is_map() => {
            w.message(&DynamicMessage::new(m))
        }
        _ if message.has_field(field) || field.is_list() || field.is_map() => {
            w.field_value(field, &message.get_field(field))
        }
        _ => w.unpopulated(field),
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    options: &'a JsonOptions,
}

impl Writer<'_> {
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn string(&mut self, s: &str) {
        write_string(self.out, s);
    }

    /// Writes `{` or `[`, the items, and the closing bracket (compact: `indent.rs` indents).
    fn container<I, F>(&mut self, open: u8, close: u8, items: I, mut item: F) -> Result
    where
        I: IntoIterator,
        F: FnMut(&mut Self, I::Item) -> Result,
    {
        self.out.push(open);
        for (i, x) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.check_size()?;
            item(self, x)?;
        }
        self.out.push(close);
        Ok(())
    }

    /// Stops a rendering that has outgrown [`JsonOptions::max_output_bytes`]; checked at
    /// every message and element, so it overshoots by one scalar at most.
    fn check_size(&self) -> Result {
        if self.out.len() > self.options.max_output_bytes {
            return Err(JsonError(TOO_LARGE.into()));
        }
        Ok(())
    }

    fn key(&mut self, name: &str) {
        self.string(name);
        self.out.push(b':');
    }

    fn message(&mut self, message: &DynamicMessage) -> Result {
        self.check_size()?;
        let desc = message.descriptor();
        match well_known(&desc) {
            Some(kind) => self.well_known(kind, message),
            None => self.fields(message, &desc, None),
        }
    }

    /// The fields of a plain message; `type_url` adds an `Any`'s `@type` first.
    fn fields(
        &mut self,
        message: &DynamicMessage,
        desc: &MessageDescriptor,
        type_url: Option<&str>,
    ) -> Result {
        let emit = self.options.emit_unpopulated;
        let fields: Vec<FieldDescriptor> = desc
            .fields()
            .filter(|f| message.has_field(f) || (emit && f.containing_oneof().is_none()))
            .collect();
        let entries = type_url
            .map(Entry::Type)
            .into_iter()
            .chain(fields.into_iter().map(Entry::Field));
        self.container(b'{', b'}', entries, |w, entry| match entry {
            Entry::Type(url) => {
                w.key("@type");
                w.string(url);
                Ok(())
            }
            Entry::Field(f) => {
                let name = if w.options.use_proto_names {
                    f.name()
                } else {
                    f.json_name()
                };
                w.key(name);
                match message.has_field(&f) || f.is_list() || f.is_map() {
                    true => w.field_value(&f, &message.get_field(&f)),
                    false => w.unpopulated(&f),
                }
            }
        })
    }

    /// An unset singular field: `null` for a message, the default for a scalar.
    fn unpopulated(&mut self, field: &FieldDescriptor) -> Result {
        match field.kind() {
            Kind::Message(m) if !matches!(well_known(&m), Some(WellKnown::Value)) => {
                self.raw("null");
                Ok(())
            }
            kind => self.value(&kind, &Value::default_value(&kind)),
        }
    }

    fn field_value(&mut self, field: &FieldDescriptor, value: &Value) -> Result {
        match (value, field.kind()) {
            (Value::Map(map), Kind::Message(entry)) => self.map(map, &entry),
            (Value::List(items), kind) => {
                self.container(b'[', b']', items, |w, v| w.value(&kind, v))
            }
            (v, kind) => self.value(&kind, v),
        }
    }

    fn map(
        &mut self,
        map: &std::collections::HashMap<MapKey, Value>,
        entry: &MessageDescriptor,
    ) -> Result {
        let value_kind = entry.map_entry_value_field().kind();
        let mut entries: Vec<(&MapKey, &Value)> = map.iter().collect();
        entries.sort_by(|a, b| compare_keys(a.0, b.0));
        self.container(b'{', b'}', entries, |w, (k, v)| {
            w.key(&map_key_text(k));
            w.value(&value_kind, v)
        })
    }

    fn value(&mut self, kind: &Kind, value: &Value) -> Result {
        match value {
            Value::Bool(b) => self.raw(if *b { "true" } else { "false" }),
            Value::I32(n) => self.raw(&n.to_string()),
            Value::U32(n) => self.raw(&n.to_string()),
            Value::I64(n) => self.int64(&n.to_string()),
            Value::U64(n) => self.int64(&n.to_string()),
            Value::F32(f) => self.float(f64::from(*f), true),
            Value::F64(f) => self.float(*f, false),
            Value::String(s) => self.string(s),
            Value::Bytes(b) => self.string(&base64::engine::general_purpose::STANDARD.encode(b)),
            Value::EnumNumber(n) => self.enumeration(kind, *n),
            Value::Message(m) => return self.message(m),
            Value::List(items) => {
                return self.container(b'[', b']', items, |w, v| w.value(kind, v))
            }
            Value::Map(map) => match kind {
                Kind::Message(entry) => return self.map(map, entry),
                _ => return Err(JsonError("map value without a map entry type".into())),
            },
        }
        Ok(())
    }

    fn int64(&mut self, digits: &str) {
        write_int64(self.out, digits, self.options);
    }

    fn float(&mut self, f: f64, single: bool) {
        write_float(self.out, f, single);
    }

    fn enumeration(&mut self, kind: &Kind, number: i32) {
        let Kind::Enum(e) = kind else {
            self.raw(&number.to_string());
            return;
        };
        if is_null_value(e) {
            return self.raw("null");
        }
        match e.get_value(number).filter(|_| !self.options.enums_as_ints) {
            Some(v) => self.string(v.name()),
            None => self.raw(&number.to_string()),
        }
    }

    fn well_known(&mut self, kind: WellKnown, message: &DynamicMessage) -> Result {
        match kind {
            WellKnown::Any => self.any(message),
            WellKnown::Timestamp => {
                let (s, n) = seconds_nanos(message);
                let text = format_timestamp(s, n)
                    .ok_or_else(|| JsonError(format!("timestamp {s}s {n}ns is out of range")))?;
                self.string(&text);
                Ok(())
            }
            WellKnown::Duration => {
                let (s, n) = seconds_nanos(message);
                let text = format_duration(s, n)
                    .ok_or_else(|| JsonError(format!("duration {s}s {n}ns is out of range")))?;
                self.string(&text);
                Ok(())
            }
            WellKnown::FieldMask => {
                let paths = get(message, "paths");
                let list = paths.as_list().unwrap_or_default();
                let joined: Vec<String> = list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(lower_camel)
                    .collect();
                self.string(&joined.join(","));
                Ok(())
            }
            WellKnown::Wrapper => {
                let field = message.descriptor().get_field_by_name("value");
                match field {
                    Some(f) => self.value(&f.kind(), &message.get_field(&f)),
                    None => Err(JsonError("wrapper without a value field".into())),
                }
            }
            WellKnown::Struct => {
                let fields = get(message, "fields");
                match (fields, message.descriptor().get_field_by_name("fields")) {
                    (Value::Map(map), Some(f)) => match f.kind() {
                        Kind::Message(entry) => self.map(&map, &entry),
                        _ => Err(JsonError("malformed Struct".into())),
                    },
                    _ => Err(JsonError("malformed Struct".into())),
                }
            }
            WellKnown::ListValue => {
                let values = get(message, "values");
                let items = values.as_list().unwrap_or_default().to_vec();
                self.container(b'[', b']', items.iter(), |w, v| match v {
                    Value::Message(m) => w.message(m),
                    _ => Err(JsonError("malformed ListValue".into())),
                })
            }
            WellKnown::Value => self.dynamic_value(message),
            WellKnown::Empty => {
                self.raw("{}");
                Ok(())
            }
        }
    }

    /// `google.protobuf.Value`: whichever member of its `kind` oneof is set.
    fn dynamic_value(&mut self, message: &DynamicMessage) -> Result {
        let desc = message.descriptor();
        let set = desc.fields().find(|f| message.has_field(f));
        let Some(field) = set else {
            self.raw("null");
            return Ok(());
        };
        match message.get_field(&field).as_ref() {
            Value::F64(f) if !f.is_finite() => Err(JsonError(
                "google.protobuf.Value cannot hold NaN or Infinity in JSON".into(),
            )),
            Value::F64(f) => {
                self.float(*f, false);
                Ok(())
            }
            other => self.value(&field.kind(), other),
        }
    }

    /// `google.protobuf.Any`: the embedded message with its `@type`; a well-known type's JSON
    /// goes under `value`; an unknown type keeps its bytes as base64 `value`.
    fn any(&mut self, message: &DynamicMessage) -> Result {
        let url = get(message, "type_url")
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bytes = get(message, "value")
            .as_bytes()
            .cloned()
            .unwrap_or_default();
        if url.is_empty() {
            self.raw("{}");
            return Ok(());
        }
        let name = url.rsplit('/').next().unwrap_or_default();
        let pool = message.descriptor().parent_pool().clone();
        let decoded = pool
            .get_message_by_name(name)
            .and_then(|desc| DynamicMessage::decode(desc, bytes.clone()).ok());
        match decoded {
            Some(inner) if well_known(&inner.descriptor()).is_some() => {
                self.any_with_value(&url, |w| w.message(&inner))
            }
            Some(inner) => self.fields(&inner, &inner.descriptor(), Some(&url)),
            None => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
                self.any_with_value(&url, |w| {
                    w.string(&encoded);
                    Ok(())
                })
            }
        }
    }

    fn any_with_value(&mut self, url: &str, value: impl FnOnce(&mut Self) -> Result) -> Result {
        let mut value = Some(value);
        self.container(b'{', b'}', [0, 1], |w, i| {
            if i == 0 {
                w.key("@type");
                w.string(url);
                Ok(())
            } else {
                w.key("value");
                value.take().map_or(Ok(()), |f| f(w))
            }
        })
    }
}

enum Entry<'a> {
    Type(&'a str),
    Field(FieldDescriptor),
}

fn get(message: &DynamicMessage, name: &str) -> Value {
    message
        .get_field_by_name(name)
        .map(|v| v.into_owned())
        .unwrap_or(Value::Bool(false))
}

fn seconds_nanos(message: &DynamicMessage) -> (i64, i32) {
    let seconds = get(message, "seconds").as_i64().unwrap_or(0);
    let nanos = get(message, "nanos").as_i32().unwrap_or(0);
    (seconds, nanos)
}

fn compare_keys(a: &MapKey, b: &MapKey) -> Ordering {
    match (a, b) {
        (MapKey::Bool(x), MapKey::Bool(y)) => x.cmp(y),
        (MapKey::I32(x), MapKey::I32(y)) => x.cmp(y),
        (MapKey::I64(x), MapKey::I64(y)) => x.cmp(y),
        (MapKey::U32(x), MapKey::U32(y)) => x.cmp(y),
        (MapKey::U64(x), MapKey::U64(y)) => x.cmp(y),
        (MapKey::String(x), MapKey::String(y)) => x.cmp(y),
        _ => map_key_text(a).cmp(&map_key_text(b)),
    }
}

fn map_key_text(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// `foo_bar.baz_qux` -> `fooBar.bazQux`, as FieldMask paths are written in JSON.
fn lower_camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A string, escaped.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// A 64-bit integer's digits: a string unless the options ask for numbers.
pub fn write_int64(out: &mut Vec<u8>, digits: &str, options: &JsonOptions) {
    if options.int64_as_numbers {
        out.extend_from_slice(digits.as_bytes());
    } else {
        out.push(b'"');
        out.extend_from_slice(digits.as_bytes());
        out.push(b'"');
    }
}

/// A float or double as Go's protojson writes it ([`format_float`]).
pub fn write_float(out: &mut Vec<u8>, f: f64, single: bool) {
    match format_float(f, single) {
        Ok(text) => out.extend_from_slice(text.as_bytes()),
        Err(special) => write_string(out, special),
    }
}

/// A number as Go's protojson writes it: shortest round-trip digits, plain notation between
/// 1e-6 and 1e21, exponent notation outside (`1e+21`, `1e-7`); `Err` gives the string form of
/// NaN and the infinities.
pub fn format_float(f: f64, single: bool) -> std::result::Result<String, &'static str> {
    if f.is_nan() {
        return Err("NaN");
    }
    if f.is_infinite() {
        return Err(if f > 0.0 { "Infinity" } else { "-Infinity" });
    }
    let abs = f.abs();
    let exponent = abs != 0.0 && !(1e-6..1e21).contains(&abs);
    let text = match (single, exponent) {
        (true, false) => format!("{}", f as f32),
        (false, false) => format!("{f}"),
        (true, true) => format!("{:e}", f as f32),
        (false, true) => format!("{f:e}"),
    };
    Ok(match text.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => text,
    })
}

const MIN_TIMESTAMP: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const MAX_TIMESTAMP: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits.
pub fn format_timestamp(seconds: i64, nanos: i32) -> Option<String> {
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&seconds) || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // Written digit by digit: `format!` costs several times as much, once per timestamp.
    let mut text = String::with_capacity(30);
    let fields = [(y, 4, '-'), (m, 2, '-'), (d, 2, 'T'), (secs / 3600, 2, ':')];
    for (value, width, then) in fields.into_iter().chain([(secs % 3600 / 60, 2, ':')]) {
        push_padded(&mut text, value.unsigned_abs(), width);
        text.push(then);
    }
    push_padded(&mut text, (secs % 60).unsigned_abs(), 2);
    push_fraction(&mut text, nanos.unsigned_abs());
    text.push('Z');
    Some(text)
}

/// `3600.500s`, `-1.000000001s`: seconds with 0, 3, 6 or 9 fractional digits.
pub fn format_duration(seconds: i64, nanos: i32) -> Option<String> {
    const MAX: i64 = 315_576_000_000;
    let same_sign = (seconds >= 0 && nanos >= 0) || (seconds <= 0 && nanos <= 0);
    if !(-MAX..=MAX).contains(&seconds) || nanos.abs() >= 1_000_000_000 || !same_sign {
        return None;
    }
    let mut text = String::with_capacity(24);
    if seconds < 0 || nanos < 0 {
        text.push('-');
    }
    text.push_str(itoa::Buffer::new().format(seconds.unsigned_abs()));
    push_fraction(&mut text, nanos.unsigned_abs());
    text.push('s');
    Some(text)
}

/// Nanoseconds as a fraction of a second: nothing for none, else 3, 6 or 9 digits.
fn push_fraction(out: &mut String, nanos: u32) {
    let (value, width) = match nanos {
        0 => return,
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    out.push('.');
    push_padded(out, u64::from(value), width);
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_padded(out: &mut String, value: u64, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10u64.pow(place) % 10;
        out.push(char::from_digit(digit as u32, 10).unwrap_or('0'));
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
