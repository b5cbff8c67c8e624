//! A direct protobuf-wire-to-JSON renderer: the upstream's bytes are read once and written as
//! JSON, with no `DynamicMessage` in between. It is the one renderer of responses
//! (`response.rs`) and of whole messages (`message.rs`):
//!
//! - It reads the snapshot's compiled [`Schema`]. Well-known types inside (`Timestamp`,
//!   `Struct`, `Any`, ...) are decoded and written by `message_to_json.rs`, which knows
//!   their JSON forms.
//! - It declines what would take protobuf's merging rules or the reference path's error
//!   messages: a singular message field given twice (merged), two members of one oneof, a
//!   string that is not UTF-8, a malformed or mistyped field. The caller then decodes the
//!   message (which merges, and finds what is malformed), encodes it again, and renders that.
//!
//! The `json_response` fuzz target compares it with the reference path on arbitrary upstream
//! bytes, the `json_request` target on every message it accepts, and `tests/it/fast_paths.rs`
//! on the benchmark's replies.

use std::cmp::Ordering;

use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::message_to_json;
use super::options::JsonOptions;
use super::schema::{
    self, wire_type, Declined, FieldSchema, MessageSchema, Scalar, Schema, Shape, ValueKind, LEN,
    VARINT,
};
use crate::well_known::WellKnown;

type Result<T = ()> = std::result::Result<T, Declined>;

/// The renderer of one compiled message type (the root) and the types it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct WireToJson<'s> {
    pub schema: &'s Schema,
    pub root: usize,
}

impl WireToJson<'_> {
    /// Appends the compact JSON of the root message encoded in `wire` to `out`, or declines
    /// (leaving `out` with unspecified contents).
    pub(super) fn render(self, wire: &[u8], options: &JsonOptions, out: &mut Vec<u8>) -> Result {
        Renderer {
            schema: self.schema,
            options,
            out,
            depth: 0,
        }
        .message(self.root, wire)
    }
}

// --- reading the wire format -------------------------------------------------------------

/// One field occurrence on the wire: its value's bytes (a varint's included).
#[derive(Debug, Clone, Copy)]
struct Occurrence<'w> {
    field: usize,
    wire: u8,
    value: &'w [u8],
}

fn varint(input: &mut &[u8]) -> Result<u64> {
    schema::varint(input).ok_or(Declined)
}

fn field_key(input: &mut &[u8]) -> Result<(u32, u8)> {
    schema::field_key(input).ok_or(Declined)
}

fn take<'w>(input: &mut &'w [u8], n: usize) -> Result<&'w [u8]> {
    schema::take(input, n).ok_or(Declined)
}

fn skip(wire: u8, input: &mut &[u8]) -> Result {
    schema::skip(wire, input).ok_or(Declined)
}

fn read(kind: &ValueKind, input: &mut &[u8]) -> Result<Scalar> {
    Scalar::read(kind, input).ok_or(Declined)
}

/// The known fields of one message on the wire, grouped by field in wire order; unknown
/// fields are skipped (the reference renderer does not write them either).
fn occurrences<'w>(schema: &MessageSchema, mut input: &'w [u8]) -> Result<Vec<Occurrence<'w>>> {
    let mut found = Vec::new();
    while !input.is_empty() {
        let (number, wire) = field_key(&mut input)?;
        let start = input;
        skip(wire, &mut input)?;
        if let Some(field) = schema.by_number.get(number) {
            let value = &start[..start.len() - input.len()];
            found.push(Occurrence { field, wire, value });
        }
    }
    found.sort_by_key(|o| o.field);
    Ok(found)
}

/// A value's bytes without a varint length prefix (for length-delimited values).
fn payload<'w>(o: &Occurrence<'w>) -> Result<&'w [u8]> {
    let mut value = o.value;
    if o.wire == LEN {
        varint(&mut value)?;
    }
    Ok(value)
}

/// A `Timestamp`'s or `Duration`'s JSON text read straight from its wire bytes (`seconds` = 1,
/// `nanos` = 2, the last of each kept), without decoding a message: they are in most replies.
/// `None` for anything else, an unexpected field, or a value out of range: the reference path
/// then writes it, or says what is wrong.
fn time_text(kind: WellKnown, mut bytes: &[u8]) -> Option<String> {
    let format = match kind {
        WellKnown::Timestamp => message_to_json::format_timestamp,
        WellKnown::Duration => message_to_json::format_duration,
        _ => return None,
    };
    let (mut seconds, mut nanos) = (0i64, 0i32);
    while !bytes.is_empty() {
        match schema::field_key(&mut bytes)? {
            // int64 and int32 as protobuf reads them: two's complement, truncated.
            (1, VARINT) => seconds = schema::varint(&mut bytes)? as i64,
            (2, VARINT) => nanos = schema::varint(&mut bytes)? as i32,
            _ => return None,
        }
    }
    format(seconds, nanos)
}

/// The scalars of a repeated field's occurrences, packed or not, in wire order.
fn scalars(kind: &ValueKind, group: &[Occurrence<'_>]) -> Result<Vec<Scalar>> {
    let unpacked = wire_type(kind);
    let mut values = Vec::new();
    for o in group {
        let mut input = o.value;
        if o.wire == LEN && unpacked != LEN {
            varint(&mut input)?;
            while !input.is_empty() {
                values.push(read(kind, &mut input)?);
            }
        } else if o.wire == unpacked {
            values.push(read(kind, &mut input)?);
        } else {
            return Err(Declined);
        }
    }
    Ok(values)
}

// --- writing JSON ------------------------------------------------------------------------

struct Renderer<'a> {
    schema: &'a Schema,
    options: &'a JsonOptions,
    out: &'a mut Vec<u8>,
    /// Messages entered so far: deeper than [`MAX_DEPTH`] declines, and the reference path
    /// (prost's decoder, which stops at the same depth) answers.
    depth: usize,
}

/// prost's recursion limit for nested messages.
const MAX_DEPTH: usize = 100;

impl Renderer<'_> {
    fn message(&mut self, index: usize, wire: &[u8]) -> Result {
        // Beyond the size limit the caller answers the error without the reference path.
        if self.depth >= MAX_DEPTH || self.out.len() > self.options.max_output_bytes {
            return Err(Declined);
        }
        self.depth += 1;
        let rendered = self.fields(index, wire);
        self.depth -= 1;
        rendered
    }

    fn fields(&mut self, index: usize, wire: &[u8]) -> Result {
        let compiled = &self.schema.messages[index];
        let found = occurrences(compiled, wire)?;
        let mut groups = found.chunk_by(|a, b| a.field == b.field).peekable();
        let mut oneofs_set = 0u64;
        let mut first = true;
        self.out.push(b'{');
        for (i, field) in compiled.fields.iter().enumerate() {
            let group = match groups.peek() {
                Some(g) if g[0].field == i => groups.next().unwrap_or_default(),
                _ => &[],
            };
            let value = self.field_value(field, group)?;
            if let (Some(o), false) = (field.oneof, group.is_empty()) {
                let bit = 1u64.checked_shl(o as u32).ok_or(Declined)?;
                if oneofs_set & bit != 0 {
                    return Err(Declined);
                }
                oneofs_set |= bit;
            }
            let shown = match value {
                FieldValue::Absent => self.options.emit_unpopulated && field.oneof.is_none(),
                FieldValue::Present(_) => true,
            };
            if !shown {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            let key = if self.options.use_proto_names {
                &field.proto_key
            } else {
                &field.json_key
            };
            self.out.extend_from_slice(key);
            match value {
                FieldValue::Present(v) => self.present(field, v)?,
                FieldValue::Absent => self.unpopulated(field),
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// What a field holds after decoding: the last of a singular scalar's occurrences, a
    /// singular message's only one, all of a list's or map's.
    fn field_value<'g, 'w>(
        &self,
        field: &FieldSchema,
        group: &'g [Occurrence<'w>],
    ) -> Result<FieldValue<'g, 'w>> {
        let Some(last) = group.last() else {
            return Ok(FieldValue::Absent);
        };
        match (&field.shape, &field.kind) {
            (Shape::Map { .. }, _) => Ok(FieldValue::Present(group)),
            (Shape::Repeated { .. }, kind) => {
                // Packed scalars may come as empty runs: a list of none is unset.
                let packed_empty = |o: &Occurrence<'_>| {
                    o.wire == LEN
                        && wire_type(kind) != LEN
                        && payload(o).is_ok_and(<[u8]>::is_empty)
                };
                Ok(match group.iter().all(packed_empty) {
                    true => FieldValue::Absent,
                    false => FieldValue::Present(group),
                })
            }
            (Shape::Single, ValueKind::Message(_) | ValueKind::WellKnown(..)) => {
                if group.len() > 1 || last.wire != LEN {
                    return Err(Declined);
                }
                Ok(FieldValue::Present(group))
            }
            (Shape::Single, ValueKind::String | ValueKind::Bytes) => {
                // Every occurrence is decoded (and a string checked), the last one kept.
                for o in group {
                    let bytes = if o.wire == LEN {
                        payload(o)?
                    } else {
                        return Err(Declined);
                    };
                    if matches!(field.kind, ValueKind::String)
                        && std::str::from_utf8(bytes).is_err()
                    {
                        return Err(Declined);
                    }
                }
                let empty = payload(last)?.is_empty();
                Ok(match field.implicit && empty {
                    true => FieldValue::Absent,
                    false => FieldValue::Present(std::slice::from_ref(last)),
                })
            }
            (Shape::Single, kind) => {
                if group.iter().any(|o| o.wire != wire_type(kind)) {
                    return Err(Declined);
                }
                let mut input = last.value;
                let value = read(kind, &mut input)?;
                Ok(match field.implicit && value.is_default() {
                    true => FieldValue::Absent,
                    false => FieldValue::Present(std::slice::from_ref(last)),
                })
            }
        }
    }

    fn present(&mut self, field: &FieldSchema, group: &[Occurrence<'_>]) -> Result {
        match &field.shape {
            Shape::Single => self.single(&field.kind, &group[0]),
            Shape::Repeated { .. } => self.list(&field.kind, group),
            Shape::Map { key, value } => self.map(key, value, group),
        }
    }

    fn single(&mut self, kind: &ValueKind, o: &Occurrence<'_>) -> Result {
        match kind {
            ValueKind::String | ValueKind::Bytes | ValueKind::Message(_) => {
                self.delimited(kind, payload(o)?)
            }
            ValueKind::WellKnown(kind, desc) => self.well_known(*kind, desc, payload(o)?),
            _ => {
                let mut input = o.value;
                let v = read(kind, &mut input)?;
                self.scalar(kind, v);
                Ok(())
            }
        }
    }

    fn delimited(&mut self, kind: &ValueKind, bytes: &[u8]) -> Result {
        match kind {
            ValueKind::String => {
                let s = std::str::from_utf8(bytes).map_err(|_| Declined)?;
                self.string(s);
            }
            ValueKind::Bytes => {
                self.out.push(b'"');
                base64_simd::STANDARD.encode_append(bytes, self.out);
                self.out.push(b'"');
            }
            ValueKind::Message(index) => self.message(*index, bytes)?,
            ValueKind::WellKnown(kind, desc) => self.well_known(*kind, desc, bytes)?,
            _ => return Err(Declined),
        }
        Ok(())
    }

    fn well_known(&mut self, kind: WellKnown, desc: &MessageDescriptor, bytes: &[u8]) -> Result {
        if let Some(text) = time_text(kind, bytes) {
            // Digits, '-', ':', '.', 'T', 'Z' and 's': nothing to escape.
            self.out.push(b'"');
            self.out.extend_from_slice(text.as_bytes());
            self.out.push(b'"');
            return Ok(());
        }
        let message = DynamicMessage::decode(desc.clone(), bytes).map_err(|_| Declined)?;
        message_to_json::write_message(self.out, &message, self.options).map_err(|_| Declined)
    }

    fn list(&mut self, kind: &ValueKind, group: &[Occurrence<'_>]) -> Result {
        self.out.push(b'[');
        match kind {
            ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Message(_)
            | ValueKind::WellKnown(..) => {
                for (i, o) in group.iter().enumerate() {
                    if o.wire != LEN {
                        return Err(Declined);
                    }
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.delimited(kind, payload(o)?)?;
                }
            }
            _ => {
                for (i, v) in scalars(kind, group)?.into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.scalar(kind, v);
                }
            }
        }
        self.out.push(b']');
        Ok(())
    }

    /// Entries sorted by key, the last of equal keys kept, as the reference renderer writes
    /// the decoded map.
    fn map(&mut self, key: &ValueKind, value: &ValueKind, group: &[Occurrence<'_>]) -> Result {
        let mut entries = Vec::with_capacity(group.len());
        for o in group {
            if o.wire != LEN {
                return Err(Declined);
            }
            entries.push(map_entry(key, value, payload(o)?)?);
        }
        // A stable sort keeps equal keys in wire order: the last of each run wins.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.out.push(b'{');
        let mut first = true;
        for (i, (k, v)) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.0 == *k) {
                // Replaced by a later entry, but decoded all the same by the reference path:
                // its value must be valid too.
                self.check_entry_value(value, v)?;
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.string(&k.text());
            self.out.push(b':');
            match v {
                EntryValue::Scalar(s) => self.scalar(value, *s),
                EntryValue::Delimited(bytes) => self.delimited(value, bytes)?,
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// Whether a map value would render, written nowhere.
    fn check_entry_value(&self, kind: &ValueKind, value: &EntryValue<'_>) -> Result {
        let EntryValue::Delimited(bytes) = value else {
            return Ok(());
        };
        let mut scratch = Vec::new();
        Renderer {
            schema: self.schema,
            options: self.options,
            out: &mut scratch,
            depth: self.depth,
        }
        .delimited(kind, bytes)
    }

    fn unpopulated(&mut self, field: &FieldSchema) {
        match (&field.shape, &field.kind) {
            (Shape::Repeated { .. }, _) => self.out.extend_from_slice(b"[]"),
            (Shape::Map { .. }, _) => self.out.extend_from_slice(b"{}"),
            (_, ValueKind::Message(_) | ValueKind::WellKnown(..)) => {
                self.out.extend_from_slice(b"null")
            }
            (_, ValueKind::String) => self.out.extend_from_slice(b"\"\""),
            (_, ValueKind::Bytes) => self.out.extend_from_slice(b"\"\""),
            (_, kind) => self.scalar(kind, Scalar::default_of(kind)),
        }
    }

    fn scalar(&mut self, kind: &ValueKind, v: Scalar) {
        match v {
            Scalar::Bool(b) => self.raw(if b { "true" } else { "false" }),
            Scalar::I32(n) => self.raw(itoa::Buffer::new().format(n)),
            Scalar::U32(n) => self.raw(itoa::Buffer::new().format(n)),
            Scalar::I64(n) => self.int64(itoa::Buffer::new().format(n)),
            Scalar::U64(n) => self.int64(itoa::Buffer::new().format(n)),
            Scalar::F32(f) => self.float(f64::from(f), true),
            Scalar::F64(f) => self.float(f, false),
            Scalar::Enum(n) => self.enumeration(kind, n),
        }
    }

    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn string(&mut self, s: &str) {
        message_to_json::write_string(self.out, s);
    }

    fn int64(&mut self, digits: &str) {
        message_to_json::write_int64(self.out, digits, self.options);
    }

    fn float(&mut self, f: f64, single: bool) {
        message_to_json::write_float(self.out, f, single);
    }

    fn enumeration(&mut self, kind: &ValueKind, number: i32) {
        if let ValueKind::NullValue = kind {
            return self.raw("null");
        }
        let name = match kind {
            ValueKind::Enum(e) if !self.options.enums_as_ints => e.by_number.get(&number),
            _ => None,
        };
        match name {
            Some(name) => self.string(name),
            None => self.raw(itoa::Buffer::new().format(number)),
        }
    }
}

enum FieldValue<'g, 'w> {
    Absent,
    Present(&'g [Occurrence<'w>]),
}

/// A map key, ordered as the reference renderer orders them.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    String(String),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Bool(b) => b.to_string(),
            Key::Signed(n) => n.to_string(),
            Key::Unsigned(n) => n.to_string(),
            Key::String(s) => s.clone(),
        }
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Signed(a), Key::Signed(b)) => a.cmp(b),
            (Key::Unsigned(a), Key::Unsigned(b)) => a.cmp(b),
            (Key::String(a), Key::String(b)) => a.cmp(b),
            _ => self.text().cmp(&other.text()),
        }
    }
}

enum EntryValue<'w> {
    Scalar(Scalar),
    Delimited(&'w [u8]),
}

/// A map entry message: key (field 1) and value (field 2), each the default when missing,
/// the last occurrence winning; a message value given twice (merged) declines.
fn map_entry<'w>(
    key: &ValueKind,
    value: &ValueKind,
    mut input: &'w [u8],
) -> Result<(Key, EntryValue<'w>)> {
    let mut k = None;
    let mut v = None;
    while !input.is_empty() {
        let (number, wire) = field_key(&mut input)?;
        match (number, wire) {
            (1, w) if w == wire_type(key) => k = Some(read_key(key, &mut input)?),
            (2, w) if w == wire_type(value) => {
                v = match value {
                    ValueKind::Message(_) | ValueKind::WellKnown(..) if v.is_some() => {
                        return Err(Declined)
                    }
                    ValueKind::String
                    | ValueKind::Bytes
                    | ValueKind::Message(_)
                    | ValueKind::WellKnown(..) => {
                        let len = usize::try_from(varint(&mut input)?).map_err(|_| Declined)?;
                        let bytes = take(&mut input, len)?;
                        // A string is checked here: a later value in the entry may replace it.
                        if matches!(value, ValueKind::String) && std::str::from_utf8(bytes).is_err()
                        {
                            return Err(Declined);
                        }
                        Some(EntryValue::Delimited(bytes))
                    }
                    kind => Some(EntryValue::Scalar(read(kind, &mut input)?)),
                }
            }
            (1 | 2, _) => return Err(Declined),
            (_, w) => skip(w, &mut input)?,
        }
    }
    let k = match k {
        Some(k) => k,
        None => match key {
            ValueKind::String => Key::String(String::new()),
            ValueKind::Bool => Key::Bool(false),
            ValueKind::Uint32 | ValueKind::Uint64 | ValueKind::Fixed32 | ValueKind::Fixed64 => {
                Key::Unsigned(0)
            }
            _ => Key::Signed(0),
        },
    };
    let v = match v {
        Some(v) => v,
        None => match value {
            ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Message(_)
            | ValueKind::WellKnown(..) => EntryValue::Delimited(&[]),
            kind => EntryValue::Scalar(Scalar::default_of(kind)),
        },
    };
    Ok((k, v))
}

fn read_key(kind: &ValueKind, input: &mut &[u8]) -> Result<Key> {
    if let ValueKind::String = kind {
        let len = usize::try_from(varint(input)?).map_err(|_| Declined)?;
        let s = std::str::from_utf8(take(input, len)?).map_err(|_| Declined)?;
        return Ok(Key::String(s.to_string()));
    }
    Ok(match read(kind, input)? {
        Scalar::Bool(b) => Key::Bool(b),
        Scalar::I32(n) => Key::Signed(i64::from(n)),
        Scalar::I64(n) => Key::Signed(n),
        Scalar::U32(n) => Key::Unsigned(u64::from(n)),
        Scalar::U64(n) => Key::Unsigned(n),
        _ => return Err(Declined),
    })
}
