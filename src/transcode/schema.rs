//! What the fast paths, the direct JSON-to-wire encoder (`json_to_wire.rs`) and wire-to-JSON
//! renderer (`wire_to_json.rs`), know of the message types: their fields with names,
//! numbers, kinds and presence. [`Schema::compile`] compiles every type of a snapshot once,
//! for both directions, every route and every protocol. Also here: the protobuf wire
//! format's primitives both use, and [`Declined`], what either answers when the reference
//! path must decide.
//!
//! Only what both fast paths handle compiles: proto3 messages outside `google.protobuf`
//! (well-known types inside are left to the reference path's code, which knows their JSON
//! forms), without extensions, with at most [`MAX_FIELDS`] fields and [`MAX_ONEOFS`] oneofs.

use std::collections::HashSet;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, Syntax};

use crate::well_known::{in_protobuf_package, is_null_value, well_known, WellKnown};

/// The maps looked up while a request is transcoded (names, numbers, type names): keyed by
/// what the descriptors hold, so a fast hash is enough; the seed is still random.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Fields and oneofs per message that the duplicate checks can track.
pub(super) const MAX_FIELDS: usize = 256;
pub(super) const MAX_ONEOFS: usize = 64;

/// The compiled message types of a snapshot.
#[derive(Debug, Default)]
pub(super) struct Schema {
    pub messages: Vec<MessageSchema>,
    /// Full names to indexes in `messages`.
    index: HashMap<String, usize>,
}

/// The fast paths leave this input to the reference path, which decides what it means and
/// gives the answer (and the error message) that it always gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declined;

#[derive(Debug)]
pub(super) struct MessageSchema {
    /// In declaration order, the order of JSON output.
    pub fields: Vec<FieldSchema>,
    /// JSON names and proto names, each with its field's index.
    pub names: Names,
    /// Field numbers to indexes.
    pub by_number: Numbers,
}

#[derive(Debug)]
pub(super) struct FieldSchema {
    pub number: u32,
    /// `"jsonName":` and `"proto_name":`, escaped, for output.
    pub json_key: Box<[u8]>,
    pub proto_key: Box<[u8]>,
    /// The kind of a singular field or list element (unused for maps).
    pub kind: ValueKind,
    pub shape: Shape,
    /// Proto3 implicit presence: set only when it holds a non-default value.
    pub implicit: bool,
    /// Index of the oneof (real or synthetic) the field belongs to.
    pub oneof: Option<u8>,
}

#[derive(Debug)]
pub(super) enum Shape {
    Single,
    Repeated { packed: bool },
    Map { key: ValueKind, value: ValueKind },
}

#[derive(Debug, Clone)]
pub(super) enum ValueKind {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum(Arc<EnumSchema>),
    /// A message type compiled here, by index.
    Message(usize),
    /// A well-known type (which one decided here, once): read and written by the reference
    /// path's code, but for `Timestamp` and `Duration` replies.
    WellKnown(WellKnown, MessageDescriptor),
    /// `google.protobuf.NullValue`, whose JSON form is `null`.
    NullValue,
}

/// An enum's values by name, and names by number (the first name of an aliased number).
#[derive(Debug)]
pub(super) struct EnumSchema {
    pub by_name: Names,
    pub by_number: HashMap<i32, Box<str>>,
}

/// Names to numbers: a short list is searched, a long one hashed.
#[derive(Debug, Default)]
pub(super) struct Names {
    list: Vec<(Box<str>, i32)>,
    map: Option<HashMap<Box<str>, i32>>,
}

impl Names {
    const SEARCHED: usize = 16;

    fn new(list: Vec<(Box<str>, i32)>) -> Self {
        let map = (list.len() > Self::SEARCHED).then(|| list.iter().cloned().collect());
        Names { list, map }
    }

    pub(super) fn get(&self, name: &str) -> Option<i32> {
        match &self.map {
            Some(map) => map.get(name).copied(),
            None => self
                .list
                .iter()
                .find(|(n, _)| n.as_ref() == name)
                .map(|(_, v)| *v),
        }
    }
}

/// Field numbers to field indexes: a table for the usual small numbers, a map otherwise.
#[derive(Debug)]
pub(super) enum Numbers {
    Table(Vec<Option<u16>>),
    Map(HashMap<u32, usize>),
}

impl Numbers {
    const TABLE_MAX: u32 = 1024;

    fn new(fields: &[FieldSchema]) -> Self {
        let max = fields.iter().map(|f| f.number).max().unwrap_or(0);
        if max <= Self::TABLE_MAX {
            let mut table = vec![None; max as usize + 1];
            for (i, f) in fields.iter().enumerate() {
                table[f.number as usize] = u16::try_from(i).ok();
            }
            return Numbers::Table(table);
        }
        Numbers::Map(
            fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.number, i))
                .collect(),
        )
    }

    pub(super) fn get(&self, number: u32) -> Option<usize> {
        match self {
            Numbers::Table(t) => t.get(number as usize).copied().flatten().map(usize::from),
            Numbers::Map(m) => m.get(&number).copied(),
        }
    }
}

impl Schema {
    /// Every message type of `pool` that the fast paths handle, compiled once and shared by
    /// both directions, every route and every protocol. A type is left out when it, or a type
    /// it holds, is outside what they handle.
    pub(super) fn compile(pool: &DescriptorPool) -> Schema {
        let handled = handled_types(pool);
        let mut compiler = Compiler {
            handled: &handled,
            messages: Vec::new(),
            index: HashMap::default(),
        };
        for desc in pool.all_messages() {
            if handled.contains(desc.full_name()) && compiler.message(&desc).is_none() {
                return Schema::default();
            }
        }
        match compiler.messages.into_iter().collect::<Option<Vec<_>>>() {
            Some(messages) => Schema {
                messages,
                index: compiler.index,
            },
            None => Schema::default(),
        }
    }

    /// The index of `desc`'s compiled message, if the fast paths handle it.
    pub(super) fn root(&self, desc: &MessageDescriptor) -> Option<usize> {
        self.index.get(desc.full_name()).copied()
    }
}

/// The message types whose every field the fast paths handle, the types they hold included:
/// the plain messages, less each one holding a type outside the set, until none is left to
/// take out (message types may hold each other).
fn handled_types(pool: &DescriptorPool) -> HashSet<String> {
    let mut handled: HashSet<String> = pool
        .all_messages()
        .filter(is_plain)
        .map(|m| m.full_name().to_string())
        .collect();
    loop {
        let outside: Vec<String> = pool
            .all_messages()
            .filter(|m| handled.contains(m.full_name()))
            .filter(|m| !m.fields().all(|f| kind_handled(&f.kind(), &handled)))
            .map(|m| m.full_name().to_string())
            .collect();
        if outside.is_empty() {
            return handled;
        }
        for name in outside {
            handled.remove(&name);
        }
    }
}

fn kind_handled(kind: &Kind, handled: &HashSet<String>) -> bool {
    match kind {
        Kind::Enum(e) => {
            is_null_value(e)
                || (e.parent_file().syntax() == Syntax::Proto3
                    && !in_protobuf_package(e.full_name()))
        }
        Kind::Message(m) => well_known(m).is_some() || handled.contains(m.full_name()),
        _ => true,
    }
}

struct Compiler<'h> {
    handled: &'h HashSet<String>,
    /// `None` while a message is being compiled (it may hold itself).
    messages: Vec<Option<MessageSchema>>,
    index: HashMap<String, usize>,
}

impl Compiler<'_> {
    fn message(&mut self, desc: &MessageDescriptor) -> Option<usize> {
        if let Some(&i) = self.index.get(desc.full_name()) {
            return Some(i);
        }
        if !self.handled.contains(desc.full_name()) {
            return None;
        }
        let i = self.messages.len();
        self.messages.push(None);
        self.index.insert(desc.full_name().to_string(), i);
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for (n, field) in desc.fields().enumerate() {
            fields.push(self.field(desc, &field)?);
            let n = i32::try_from(n).ok()?;
            names.push((field.json_name().into(), n));
            if field.name() != field.json_name() {
                names.push((field.name().into(), n));
            }
        }
        let by_number = Numbers::new(&fields);
        self.messages[i] = Some(MessageSchema {
            fields,
            names: Names::new(names),
            by_number,
        });
        Some(i)
    }

    fn field(&mut self, desc: &MessageDescriptor, field: &FieldDescriptor) -> Option<FieldSchema> {
        let (kind, shape) = if field.is_map() {
            let entry = field.kind().as_message()?.clone();
            let key = self.kind(&entry.map_entry_key_field().kind())?;
            let value = self.kind(&entry.map_entry_value_field().kind())?;
            (ValueKind::Bool, Shape::Map { key, value })
        } else if field.is_list() {
            let packed = field.is_packed();
            (self.kind(&field.kind())?, Shape::Repeated { packed })
        } else {
            (self.kind(&field.kind())?, Shape::Single)
        };
        let oneof = match field.containing_oneof() {
            Some(o) => Some(u8::try_from(desc.oneofs().position(|x| x == o)?).ok()?),
            None => None,
        };
        Some(FieldSchema {
            number: field.number(),
            json_key: key_bytes(field.json_name()),
            proto_key: key_bytes(field.name()),
            kind,
            shape,
            implicit: !field.supports_presence(),
            oneof,
        })
    }

    fn kind(&mut self, kind: &Kind) -> Option<ValueKind> {
        Some(match kind {
            Kind::Double => ValueKind::Double,
            Kind::Float => ValueKind::Float,
            Kind::Int32 => ValueKind::Int32,
            Kind::Int64 => ValueKind::Int64,
            Kind::Uint32 => ValueKind::Uint32,
            Kind::Uint64 => ValueKind::Uint64,
            Kind::Sint32 => ValueKind::Sint32,
            Kind::Sint64 => ValueKind::Sint64,
            Kind::Fixed32 => ValueKind::Fixed32,
            Kind::Fixed64 => ValueKind::Fixed64,
            Kind::Sfixed32 => ValueKind::Sfixed32,
            Kind::Sfixed64 => ValueKind::Sfixed64,
            Kind::Bool => ValueKind::Bool,
            Kind::String => ValueKind::String,
            Kind::Bytes => ValueKind::Bytes,
            Kind::Enum(e) if is_null_value(e) => ValueKind::NullValue,
            Kind::Enum(e) => {
                if e.parent_file().syntax() != Syntax::Proto3 || in_protobuf_package(e.full_name())
                {
                    return None;
                }
                let mut by_number = HashMap::default();
                for v in e.values() {
                    by_number
                        .entry(v.number())
                        .or_insert_with(|| v.name().into());
                }
                let by_name =
                    Names::new(e.values().map(|v| (v.name().into(), v.number())).collect());
                ValueKind::Enum(Arc::new(EnumSchema { by_name, by_number }))
            }
            Kind::Message(m) => match well_known(m) {
                Some(kind) => ValueKind::WellKnown(kind, m.clone()),
                None => ValueKind::Message(self.message(m)?),
            },
        })
    }
}

/// A proto3 message outside `google.protobuf`, with no extensions and few enough fields and
/// oneofs for the duplicate checks.
fn is_plain(desc: &MessageDescriptor) -> bool {
    desc.parent_file().syntax() == Syntax::Proto3
        && !in_protobuf_package(desc.full_name())
        && desc.extensions().len() == 0
        && desc.fields().len() <= MAX_FIELDS
        && desc.oneofs().len() <= MAX_ONEOFS
}

/// `"name":`, escaped as a JSON string.
fn key_bytes(name: &str) -> Box<[u8]> {
    let mut out = serde_json::to_vec(name).unwrap_or_default();
    out.push(b':');
    out.into_boxed_slice()
}

// --- the wire format ---------------------------------------------------------------------

pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const FIXED32: u8 = 5;

/// The wire type of `kind`'s values, unpacked.
pub(super) fn wire_type(kind: &ValueKind) -> u8 {
    match kind {
        ValueKind::Double | ValueKind::Fixed64 | ValueKind::Sfixed64 => FIXED64,
        ValueKind::Float | ValueKind::Fixed32 | ValueKind::Sfixed32 => FIXED32,
        ValueKind::String | ValueKind::Bytes | ValueKind::Message(_) | ValueKind::WellKnown(..) => {
            LEN
        }
        _ => VARINT,
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_tag(out: &mut Vec<u8>, number: u32, wire: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited value being written: `open` leaves one byte for its length, `close`
/// writes the length, moving the value up when the length needs more than one byte.
pub(super) struct Delimited(usize);

impl Delimited {
    pub(super) fn open(out: &mut Vec<u8>) -> Self {
        out.push(0);
        Delimited(out.len())
    }

    pub(super) fn close(self, out: &mut Vec<u8>) {
        let start = self.0;
        let len = out.len() - start;
        let extra = varint_len(len as u64) - 1;
        if extra > 0 {
            out.resize(out.len() + extra, 0);
            out.copy_within(start..start + len, start + extra);
        }
        let mut at = start - 1;
        let mut v = len as u64;
        while v >= 0x80 {
            out[at] = (v as u8) | 0x80;
            v >>= 7;
            at += 1;
        }
        out[at] = v as u8;
    }
}

/// A varint from the front of `input`, as prost reads it (at most 10 bytes).
pub(super) fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The next `n` bytes of `input`.
pub(super) fn take<'w>(input: &mut &'w [u8], n: usize) -> Option<&'w [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

/// A length-delimited value's bytes.
pub(super) fn delimited<'w>(input: &mut &'w [u8]) -> Option<&'w [u8]> {
    let len = usize::try_from(varint(input)?).ok()?;
    take(input, len)
}

/// A field key: its number (never 0) and wire type, as prost accepts them.
pub(super) fn field_key(input: &mut &[u8]) -> Option<(u32, u8)> {
    let key = u32::try_from(varint(input)?).ok()?;
    let number = key >> 3;
    (number != 0).then_some((number, (key & 7) as u8))
}

/// Skips a value of wire type `wire`; groups and unknown wire types are refused.
pub(super) fn skip(wire: u8, input: &mut &[u8]) -> Option<()> {
    match wire {
        VARINT => varint(input).map(drop),
        FIXED64 => take(input, 8).map(drop),
        LEN => delimited(input).map(drop),
        FIXED32 => take(input, 4).map(drop),
        _ => None,
    }
}

/// A scalar value (or enum number).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Scalar {
    F64(f64),
    F32(f32),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    Bool(bool),
    Enum(i32),
}

impl Scalar {
    /// The proto3 default (zero, false; `-0.0` counts as zero, as prost-reflect compares).
    pub(super) fn is_default(self) -> bool {
        match self {
            Scalar::F64(v) => v == 0.0,
            Scalar::F32(v) => v == 0.0,
            Scalar::I32(v) | Scalar::Enum(v) => v == 0,
            Scalar::I64(v) => v == 0,
            Scalar::U32(v) => v == 0,
            Scalar::U64(v) => v == 0,
            Scalar::Bool(v) => !v,
        }
    }

    /// The default value of a scalar or enum `kind`.
    pub(super) fn default_of(kind: &ValueKind) -> Scalar {
        match kind {
            ValueKind::Double => Scalar::F64(0.0),
            ValueKind::Float => Scalar::F32(0.0),
            ValueKind::Int32 | ValueKind::Sint32 | ValueKind::Sfixed32 => Scalar::I32(0),
            ValueKind::Int64 | ValueKind::Sint64 | ValueKind::Sfixed64 => Scalar::I64(0),
            ValueKind::Uint32 | ValueKind::Fixed32 => Scalar::U32(0),
            ValueKind::Uint64 | ValueKind::Fixed64 => Scalar::U64(0),
            ValueKind::Enum(_) | ValueKind::NullValue => Scalar::Enum(0),
            _ => Scalar::Bool(false),
        }
    }

    /// Writes the value in `kind`'s encoding (no tag); `None` when it is not of that kind.
    pub(super) fn put(self, kind: &ValueKind, out: &mut Vec<u8>) -> Option<()> {
        match (kind, self) {
            (ValueKind::Double, Scalar::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Float, Scalar::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Int32, Scalar::I32(v)) | (ValueKind::Enum(_), Scalar::Enum(v)) => {
                put_varint(out, i64::from(v) as u64)
            }
            (ValueKind::Sint32, Scalar::I32(v)) => {
                put_varint(out, u64::from(((v << 1) ^ (v >> 31)) as u32))
            }
            (ValueKind::Sfixed32, Scalar::I32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Int64, Scalar::I64(v)) => put_varint(out, v as u64),
            (ValueKind::Sint64, Scalar::I64(v)) => put_varint(out, ((v << 1) ^ (v >> 63)) as u64),
            (ValueKind::Sfixed64, Scalar::I64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Uint32, Scalar::U32(v)) => put_varint(out, u64::from(v)),
            (ValueKind::Fixed32, Scalar::U32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Uint64, Scalar::U64(v)) => put_varint(out, v),
            (ValueKind::Fixed64, Scalar::U64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Bool, Scalar::Bool(v)) => out.push(u8::from(v)),
            _ => return None,
        }
        Some(())
    }

    /// One value of `kind` from the front of `input` (in its unpacked encoding), as prost
    /// decodes it.
    pub(super) fn read(kind: &ValueKind, input: &mut &[u8]) -> Option<Scalar> {
        let fixed4 = |input: &mut &[u8]| take(input, 4).and_then(|b| b.try_into().ok());
        let fixed8 = |input: &mut &[u8]| take(input, 8).and_then(|b| b.try_into().ok());
        Some(match kind {
            ValueKind::Double => Scalar::F64(f64::from_le_bytes(fixed8(input)?)),
            ValueKind::Float => Scalar::F32(f32::from_le_bytes(fixed4(input)?)),
            ValueKind::Int32 => Scalar::I32(varint(input)? as i32),
            ValueKind::Int64 => Scalar::I64(varint(input)? as i64),
            ValueKind::Uint32 => Scalar::U32(varint(input)? as u32),
            ValueKind::Uint64 => Scalar::U64(varint(input)?),
            ValueKind::Sint32 => {
                let v = varint(input)? as u32;
                Scalar::I32(((v >> 1) as i32) ^ -((v & 1) as i32))
            }
            ValueKind::Sint64 => {
                let v = varint(input)?;
                Scalar::I64(((v >> 1) as i64) ^ -((v & 1) as i64))
            }
            ValueKind::Fixed32 => Scalar::U32(u32::from_le_bytes(fixed4(input)?)),
            ValueKind::Fixed64 => Scalar::U64(u64::from_le_bytes(fixed8(input)?)),
            ValueKind::Sfixed32 => Scalar::I32(i32::from_le_bytes(fixed4(input)?)),
            ValueKind::Sfixed64 => Scalar::I64(i64::from_le_bytes(fixed8(input)?)),
            ValueKind::Bool => Scalar::Bool(varint(input)? != 0),
            ValueKind::Enum(_) | ValueKind::NullValue => Scalar::Enum(varint(input)? as i32),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimited_lengths_of_every_size_are_minimal_varints() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 200_000] {
            let mut out = vec![9u8];
            let d = Delimited::open(&mut out);
            out.extend(std::iter::repeat_n(7u8, len));
            d.close(&mut out);
            let mut expected = vec![9u8];
            put_varint(&mut expected, len as u64);
            expected.extend(std::iter::repeat_n(7u8, len));
            assert_eq!(out, expected, "length {len}");
        }
    }

    #[test]
    fn varints_round_trip_with_their_lengths() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(varint(&mut out.as_slice()), Some(v));
        }
        // An eleventh byte, or a tenth beyond 64 bits, is refused as prost refuses it.
        assert_eq!(varint(&mut [0xff; 10].as_slice()), None);
        assert_eq!(varint(&mut [0x80, 0x80].as_slice()), None);
    }

    #[test]
    fn scalars_round_trip_through_their_encodings() {
        let cases = [
            (ValueKind::Sint32, Scalar::I32(-3)),
            (ValueKind::Sint64, Scalar::I64(i64::MIN)),
            (ValueKind::Int32, Scalar::I32(-1)),
            (ValueKind::Sfixed64, Scalar::I64(-9)),
            (ValueKind::Fixed32, Scalar::U32(u32::MAX)),
            (ValueKind::Float, Scalar::F32(-2.5)),
            (ValueKind::Bool, Scalar::Bool(true)),
        ];
        for (kind, value) in cases {
            let mut out = Vec::new();
            value.put(&kind, &mut out).expect("matching kind");
            assert_eq!(
                Scalar::read(&kind, &mut out.as_slice()),
                Some(value),
                "{kind:?}"
            );
        }
        assert!(Scalar::I32(1)
            .put(&ValueKind::Int64, &mut Vec::new())
            .is_none());
    }
}
