//! A direct JSON-to-protobuf-wire encoder for request bodies: serde_json's tokens are written
//! straight into the gRPC frame, with no `DynamicMessage` in between, and `bytes` fields are
//! decoded with SIMD base64 into the frame itself.
//!
//! It is the fast path beside the reference path (prost-reflect's `DynamicMessage`
//! deserialisation, in `request.rs`), and it only ever succeeds where the reference path would
//! accept the same body and build the same message:
//!
//! - A [`JsonIn`] is compiled once per route, and only for proto3 messages without well-known
//!   types (those keep their special JSON forms in the reference path) or extensions.
//! - Each value is accepted by the same rules as prost-reflect's visitors, or refused. Where
//!   those rules are involved (a float written as a string, an unknown enum name, a key given
//!   twice, base64 with stray trailing bits), the fast path refuses and the caller runs the
//!   reference path, which gives the answer, and the error message, that it always gave.
//!
//! `tests/json_in.rs` checks the two paths against each other on the conformance and fuzz
//! corpora, and the `json_request` fuzz target does so on every input it tries.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, Syntax};

use super::request::check_any_type_names;
use crate::route::{BodyPlan, RoutePlan};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

/// Why the fast path declined a body: the reference path decides what it means.
#[derive(Debug)]
pub struct Declined(String);

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Declined {}

impl serde::de::Error for Declined {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Declined(msg.to_string())
    }
}

/// The compiled encoder for one root message type and the message types it holds.
#[derive(Debug)]
pub struct JsonIn {
    /// Index 0 is the root.
    messages: Vec<MessageCodec>,
}

#[derive(Debug)]
struct MessageCodec {
    fields: Vec<FieldCodec>,
    /// JSON names and proto names, each with its field's index.
    names: Names,
}

#[derive(Debug)]
struct FieldCodec {
    number: u32,
    kind: ValueKind,
    shape: Shape,
    /// Proto3 implicit presence: a default value is not written.
    implicit: bool,
    oneof: Option<u8>,
}

#[derive(Debug)]
enum Shape {
    Single,
    Repeated { packed: bool },
    Map { key: ValueKind, value: ValueKind },
}

#[derive(Debug, Clone)]
enum ValueKind {
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
    Enum(Arc<Names>),
    Message(usize),
    /// A well-known type, read by the reference deserialiser (prost-reflect's own, which knows
    /// its JSON form) and encoded from the message it returns.
    WellKnown(MessageDescriptor),
    /// `google.protobuf.NullValue`, whose JSON rules (`null` sets it) are left to the
    /// reference path: any value of it declines.
    NullValue,
}

/// Names to numbers: a short list is searched, a long one hashed.
#[derive(Debug, Default)]
struct Names {
    list: Vec<(Box<str>, i32)>,
    map: Option<HashMap<Box<str>, i32>>,
}

impl Names {
    const SEARCHED: usize = 16;

    fn new(list: Vec<(Box<str>, i32)>) -> Self {
        let map = (list.len() > Self::SEARCHED).then(|| list.iter().cloned().collect());
        Names { list, map }
    }

    fn get(&self, name: &str) -> Option<i32> {
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

/// Fields per message and oneofs per message the duplicate checks can track.
const MAX_FIELDS: usize = 256;
const MAX_ONEOFS: usize = 64;

impl JsonIn {
    /// The encoder for `root`, or `None` when it or a message it holds is outside what the
    /// fast path handles.
    pub fn compile(root: &MessageDescriptor) -> Option<Arc<JsonIn>> {
        let mut compiler = Compiler::default();
        compiler.message(root)?;
        Some(Arc::new(JsonIn {
            messages: compiler.messages.into_iter().map(Option::unwrap).collect(),
        }))
    }

    /// The encoder for `plan`'s request bodies, where the fast path applies: a JSON body that
    /// is the whole request message or one top-level message field of it (not an `HttpBody`,
    /// not a PATCH whose mask is filled from the body), and path variables that each set one
    /// singular scalar or enum field. Those (and query parameters) are encoded after the body:
    /// decoding keeps the last value of a scalar and merges messages, which is the reference
    /// path's overwriting. A repeated or message-typed variable would append or merge instead,
    /// so such routes keep the reference path.
    pub fn for_plan(plan: &RoutePlan) -> Option<Arc<JsonIn>> {
        let simple_vars = plan.path_vars.iter().all(|p| {
            let leaf = p.leaf();
            !leaf.is_list() && !leaf.is_map() && !matches!(leaf.kind(), Kind::Message(_))
        });
        if !simple_vars || plan.patch_mask.is_some() || plan.http_body_request {
            return None;
        }
        match &plan.body {
            BodyPlan::Message => JsonIn::compile(&plan.input),
            BodyPlan::Field(f) if f.fields.len() == 1 && !f.leaf().is_list() => {
                match f.leaf().kind() {
                    Kind::Message(m) if !f.leaf().is_map() => JsonIn::compile(&m),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Appends the fields of the root message that the JSON object in `body` holds to `out`,
    /// or declines. `out` is left with unspecified contents when it declines.
    pub fn encode(
        &self,
        body: &[u8],
        deny_unknown: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Declined> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let seed = MessageSeed {
            json: self,
            index: 0,
            deny_unknown,
            out,
        };
        seed.deserialize(&mut de)
            .map_err(|e| Declined(e.to_string()))?;
        de.end().map_err(|e| Declined(e.to_string()))
    }

    /// Like [`JsonIn::encode`], the root message being the value of field `number` (a
    /// `body: "field"` binding).
    pub fn encode_field(
        &self,
        number: u32,
        body: &[u8],
        deny_unknown: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Declined> {
        put_tag(out, number, LEN);
        let len = Delimited::open(out);
        self.encode(body, deny_unknown, out)?;
        len.close(out);
        Ok(())
    }
}

#[derive(Default)]
struct Compiler {
    /// `None` while a message is being compiled (it may hold itself).
    messages: Vec<Option<MessageCodec>>,
    index: HashMap<String, usize>,
}

impl Compiler {
    fn message(&mut self, desc: &MessageDescriptor) -> Option<usize> {
        if let Some(&i) = self.index.get(desc.full_name()) {
            return Some(i);
        }
        if !is_plain(desc) {
            return None;
        }
        let i = self.messages.len();
        self.messages.push(None);
        self.index.insert(desc.full_name().to_string(), i);
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for (n, field) in desc.fields().enumerate() {
            let shape = if field.is_map() {
                let entry = field.kind().as_message()?.clone();
                Shape::Map {
                    key: self.kind(&entry.map_entry_key_field().kind())?,
                    value: self.kind(&entry.map_entry_value_field().kind())?,
                }
            } else if field.is_list() {
                Shape::Repeated {
                    packed: field.is_packed(),
                }
            } else {
                Shape::Single
            };
            let kind = match shape {
                Shape::Map { .. } => ValueKind::Bool,
                _ => self.kind(&field.kind())?,
            };
            let oneof = match field.containing_oneof() {
                Some(o) => Some(u8::try_from(desc.oneofs().position(|x| x == o)?).ok()?),
                None => None,
            };
            fields.push(FieldCodec {
                number: field.number(),
                kind,
                shape,
                implicit: !field.supports_presence(),
                oneof,
            });
            let n = i32::try_from(n).ok()?;
            names.push((field.json_name().into(), n));
            if field.name() != field.json_name() {
                names.push((field.name().into(), n));
            }
        }
        self.messages[i] = Some(MessageCodec {
            fields,
            names: Names::new(names),
        });
        Some(i)
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
            Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => ValueKind::NullValue,
            Kind::Enum(e) => {
                if e.parent_file().syntax() != Syntax::Proto3
                    || e.full_name().starts_with("google.protobuf.")
                {
                    return None;
                }
                let names = e.values().map(|v| (v.name().into(), v.number())).collect();
                ValueKind::Enum(Arc::new(Names::new(names)))
            }
            Kind::Message(m) if m.full_name().starts_with("google.protobuf.") => {
                ValueKind::WellKnown(m.clone())
            }
            Kind::Message(m) => ValueKind::Message(self.message(m)?),
        })
    }
}

/// A proto3 message outside `google.protobuf`, with no extensions and few enough fields and
/// oneofs for the duplicate checks.
fn is_plain(desc: &MessageDescriptor) -> bool {
    desc.parent_file().syntax() == Syntax::Proto3
        && !desc.full_name().starts_with("google.protobuf.")
        && desc.extensions().len() == 0
        && desc.fields().len() <= MAX_FIELDS
        && desc.oneofs().len() <= MAX_ONEOFS
}

// --- the wire format ---------------------------------------------------------------------

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire: u32) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire));
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited value being written: `open` leaves one byte for its length, `close`
/// writes the length, moving the value up when the length needs more than one byte.
struct Delimited(usize);

impl Delimited {
    fn open(out: &mut Vec<u8>) -> Self {
        out.push(0);
        Delimited(out.len())
    }

    fn close(self, out: &mut Vec<u8>) {
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

fn wire_type(kind: &ValueKind) -> u32 {
    match kind {
        ValueKind::Double | ValueKind::Fixed64 | ValueKind::Sfixed64 => FIXED64,
        ValueKind::Float | ValueKind::Fixed32 | ValueKind::Sfixed32 => FIXED32,
        ValueKind::String | ValueKind::Bytes | ValueKind::Message(_) | ValueKind::WellKnown(_) => {
            LEN
        }
        _ => VARINT,
    }
}

/// A decoded scalar, before it is written.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    F64(f64),
    F32(f32),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    Bool(bool),
}

impl Scalar {
    fn is_default(self) -> bool {
        match self {
            Scalar::F64(v) => v == 0.0,
            Scalar::F32(v) => v == 0.0,
            Scalar::I32(v) => v == 0,
            Scalar::I64(v) => v == 0,
            Scalar::U32(v) => v == 0,
            Scalar::U64(v) => v == 0,
            Scalar::Bool(v) => !v,
        }
    }

    /// Writes the value in `kind`'s encoding (no tag).
    fn put(self, kind: &ValueKind, out: &mut Vec<u8>) {
        match (kind, self) {
            (ValueKind::Double, Scalar::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Float, Scalar::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
            (ValueKind::Int32 | ValueKind::Enum(_), Scalar::I32(v)) => {
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
            _ => unreachable!("scalar {self:?} read for {kind:?}"),
        }
    }
}

// --- reading JSON ------------------------------------------------------------------------

/// A JSON object into the fields of message `index`, appended to `out`.
struct MessageSeed<'a> {
    json: &'a JsonIn,
    index: usize,
    deny_unknown: bool,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let codec = &self.json.messages[self.index];
        let mut seen = [0u64; MAX_FIELDS / 64];
        let mut oneofs = 0u64;
        while let Some(key) = map.next_key_seed(KeySeed(&codec.names))? {
            let Some(i) = key else {
                if self.deny_unknown {
                    return Err(A::Error::custom("unknown field"));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if seen[word] & bit != 0 {
                return Err(A::Error::custom("field given twice"));
            }
            seen[word] |= bit;
            let field = &codec.fields[i];
            let present = map.next_value_seed(FieldSeed {
                json: self.json,
                field,
                deny_unknown: self.deny_unknown,
                out: &mut *self.out,
            })?;
            if let (true, Some(o)) = (present, field.oneof) {
                if oneofs & (1 << o) != 0 {
                    return Err(A::Error::custom("two fields of one oneof"));
                }
                oneofs |= 1 << o;
            }
        }
        Ok(())
    }
}

/// An object key into its field's index, `None` for a name the message does not have.
struct KeySeed<'a>(&'a Names);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.get(v).map(|i| i as usize))
    }
}

/// One field's value (`null` included): `true` when it set the field.
struct FieldSeed<'a> {
    json: &'a JsonIn,
    field: &'a FieldCodec,
    deny_unknown: bool,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field value")
    }

    /// `null` leaves a field unset, except a `google.protobuf.Value`, for which it is a value
    /// (left to the reference path).
    fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
        match &self.field.kind {
            ValueKind::WellKnown(m) if m.full_name() == "google.protobuf.Value" => {
                Err(E::custom("null Value"))
            }
            ValueKind::NullValue => Err(E::custom("NullValue")),
            _ => Ok(false),
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let FieldSeed {
            json,
            field,
            deny_unknown,
            out,
        } = self;
        let value = ValueWriter {
            json,
            kind: &field.kind,
            deny_unknown,
        };
        match &field.shape {
            Shape::Single => value.single(d, field.number, field.implicit, out)?,
            Shape::Repeated { packed } => d.deserialize_seq(ListSeed {
                value,
                number: field.number,
                packed: *packed,
                out,
            })?,
            Shape::Map { key, value: kind } => d.deserialize_map(MapSeed {
                key,
                value: ValueWriter { kind, ..value },
                number: field.number,
                out,
            })?,
        }
        Ok(true)
    }
}

/// How values of one kind are read and written.
#[derive(Clone, Copy)]
struct ValueWriter<'a> {
    json: &'a JsonIn,
    kind: &'a ValueKind,
    deny_unknown: bool,
}

impl ValueWriter<'_> {
    /// A singular field: tag and value, or nothing for an implicit-presence default.
    fn single<'de, D: Deserializer<'de>>(
        self,
        d: D,
        number: u32,
        implicit: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), D::Error> {
        match self.kind {
            ValueKind::String | ValueKind::Bytes => {
                let mark = out.len();
                put_tag(out, number, LEN);
                let written = self.delimited(d, out)?;
                if implicit && written == 0 {
                    out.truncate(mark);
                }
            }
            ValueKind::Message(_) | ValueKind::WellKnown(_) => {
                put_tag(out, number, LEN);
                self.delimited(d, out)?;
            }
            kind => {
                let v = self.scalar(d)?;
                if !(implicit && v.is_default()) {
                    put_tag(out, number, wire_type(kind));
                    v.put(kind, out);
                }
            }
        }
        Ok(())
    }

    /// A string, bytes or message value with its length; how many bytes it took.
    fn delimited<'de, D: Deserializer<'de>>(
        self,
        d: D,
        out: &mut Vec<u8>,
    ) -> Result<usize, D::Error> {
        match self.kind {
            ValueKind::String => d.deserialize_string(StringSeed(out)),
            ValueKind::Bytes => d.deserialize_str(BytesSeed(out)),
            ValueKind::Message(index) => {
                let len = Delimited::open(out);
                let start = out.len();
                MessageSeed {
                    json: self.json,
                    index: *index,
                    deny_unknown: self.deny_unknown,
                    out: &mut *out,
                }
                .deserialize(d)?;
                let written = out.len() - start;
                len.close(out);
                Ok(written)
            }
            ValueKind::WellKnown(desc) => {
                let options = DeserializeOptions::new().deny_unknown_fields(self.deny_unknown);
                let message = DynamicMessage::deserialize_with_options(desc.clone(), d, &options)?;
                if desc.full_name() == "google.protobuf.Any" {
                    check_any_type_names(&message).map_err(D::Error::custom)?;
                }
                let len = message.encoded_len();
                put_varint(out, len as u64);
                message.encode_raw(out);
                Ok(len)
            }
            _ => unreachable!("not length-delimited"),
        }
    }

    fn scalar<'de, D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        match self.kind {
            ValueKind::Double => d.deserialize_any(DoubleVisitor),
            ValueKind::Float => d.deserialize_any(FloatVisitor),
            ValueKind::Int32 | ValueKind::Sint32 | ValueKind::Sfixed32 => {
                d.deserialize_any(IntVisitor::<i32>::default())
            }
            ValueKind::Int64 | ValueKind::Sint64 | ValueKind::Sfixed64 => {
                d.deserialize_any(IntVisitor::<i64>::default())
            }
            ValueKind::Uint32 | ValueKind::Fixed32 => {
                d.deserialize_any(IntVisitor::<u32>::default())
            }
            ValueKind::Uint64 | ValueKind::Fixed64 => {
                d.deserialize_any(IntVisitor::<u64>::default())
            }
            ValueKind::Bool => d.deserialize_any(BoolVisitor),
            ValueKind::Enum(names) => d.deserialize_any(EnumVisitor(names)),
            ValueKind::NullValue => Err(D::Error::custom("NullValue")),
            _ => unreachable!("not a scalar"),
        }
    }

    /// One element of a list or one map value: never `null`, always written.
    fn element<'de, D: Deserializer<'de>>(self, d: D, out: &mut Vec<u8>) -> Result<(), D::Error> {
        match self.kind {
            ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Message(_)
            | ValueKind::WellKnown(_) => self.delimited(d, out).map(drop),
            kind => self.scalar(d).map(|v| v.put(kind, out)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueWriterSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.element(d, self.1)
    }
}

struct ValueWriterSeed<'a, 'o>(ValueWriter<'a>, &'o mut Vec<u8>);

/// A repeated field: packed (one tag, one length) or one tag per element.
struct ListSeed<'a, 'o> {
    value: ValueWriter<'a>,
    number: u32,
    packed: bool,
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        if self.packed {
            let mark = out.len();
            put_tag(out, self.number, LEN);
            let len = Delimited::open(out);
            let start = out.len();
            while seq
                .next_element_seed(ValueWriterSeed(self.value, &mut *out))?
                .is_some()
            {}
            if out.len() == start {
                out.truncate(mark);
            } else {
                len.close(out);
            }
            return Ok(());
        }
        let wire = wire_type(self.value.kind);
        loop {
            let mark = out.len();
            put_tag(out, self.number, wire);
            if seq
                .next_element_seed(ValueWriterSeed(self.value, &mut *out))?
                .is_none()
            {
                out.truncate(mark);
                return Ok(());
            }
        }
    }
}

/// A map field: one entry message (key 1, value 2) per JSON key.
struct MapSeed<'a, 'o> {
    key: &'a ValueKind,
    value: ValueWriter<'a>,
    number: u32,
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for MapSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            put_tag(out, self.number, LEN);
            let entry = Delimited::open(out);
            put_map_key(self.key, &key, out).map_err(A::Error::custom)?;
            put_tag(out, 2, wire_type(self.value.kind));
            map.next_value_seed(ValueWriterSeed(self.value, &mut *out))?;
            entry.close(out);
        }
        Ok(())
    }
}

/// A map key, parsed from its JSON string as prost-reflect parses it (`str::parse`).
fn put_map_key(kind: &ValueKind, key: &str, out: &mut Vec<u8>) -> Result<(), String> {
    fn parsed<T: std::str::FromStr>(key: &str) -> Result<T, String>
    where
        T::Err: fmt::Display,
    {
        key.parse().map_err(|e: T::Err| e.to_string())
    }
    let scalar = match kind {
        ValueKind::String => {
            put_tag(out, 1, LEN);
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key.as_bytes());
            return Ok(());
        }
        ValueKind::Int32 | ValueKind::Sint32 | ValueKind::Sfixed32 => Scalar::I32(parsed(key)?),
        ValueKind::Int64 | ValueKind::Sint64 | ValueKind::Sfixed64 => Scalar::I64(parsed(key)?),
        ValueKind::Uint32 | ValueKind::Fixed32 => Scalar::U32(parsed(key)?),
        ValueKind::Uint64 | ValueKind::Fixed64 => Scalar::U64(parsed(key)?),
        ValueKind::Bool => Scalar::Bool(parsed(key)?),
        _ => return Err("invalid map key type".into()),
    };
    put_tag(out, 1, wire_type(kind));
    scalar.put(kind, out);
    Ok(())
}

/// A string with its length.
struct StringSeed<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for StringSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
        put_varint(self.0, v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
        Ok(v.len())
    }
}

/// Base64 (standard or URL-safe, padded or not) decoded into the output with its length.
/// Stricter than the reference path, which also takes non-zero trailing bits: such input is
/// declined and left to it.
struct BytesSeed<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for BytesSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
        let src = v.as_bytes();
        let url_safe = memchr::memchr2(b'-', b'_', src).is_some();
        let padded = src.last() == Some(&b'=');
        let engine = match (url_safe, padded) {
            (false, true) => base64_simd::STANDARD,
            (false, false) => base64_simd::STANDARD_NO_PAD,
            (true, true) => base64_simd::URL_SAFE,
            (true, false) => base64_simd::URL_SAFE_NO_PAD,
        };
        let len = engine.decoded_length(src).map_err(E::custom)?;
        put_varint(self.0, len as u64);
        engine.decode_append(src, self.0).map_err(E::custom)?;
        Ok(len)
    }
}

// The scalar visitors accept exactly what prost-reflect's do, or less.

struct DoubleVisitor;

impl Visitor<'_> for DoubleVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::F64(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::F64(v as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::F64(v as f64))
    }
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        if v < f64::from(f32::MIN) || v > f64::from(f32::MAX) {
            return Err(E::custom("float value out of range"));
        }
        Ok(Scalar::F32(v as f32))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::F32(v as f32))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::F32(v as f32))
    }
}

/// An integer type's reading rules: from JSON integers in range, from floats with no
/// fraction in range, and from decimal strings.
trait Integer: Sized + TryFrom<i64> + TryFrom<u64> + std::str::FromStr {
    const MIN: f64;
    const MAX: f64;
    fn from_f64(v: f64) -> Self;
    fn scalar(self) -> Scalar;
}

macro_rules! integer {
    ($t:ty, $variant:ident) => {
        impl Integer for $t {
            const MIN: f64 = <$t>::MIN as f64;
            const MAX: f64 = <$t>::MAX as f64;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn scalar(self) -> Scalar {
                Scalar::$variant(self)
            }
        }
    };
}

integer!(i32, I32);
integer!(i64, I64);
integer!(u32, U32);
integer!(u64, U64);

struct IntVisitor<T>(std::marker::PhantomData<T>);

impl<T> Default for IntVisitor<T> {
    fn default() -> Self {
        IntVisitor(std::marker::PhantomData)
    }
}

impl<T: Integer> Visitor<'_> for IntVisitor<T> {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        T::try_from(v)
            .map(T::scalar)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        T::try_from(v)
            .map(T::scalar)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        if v.fract() != 0.0 || v < T::MIN || v > T::MAX {
            return Err(E::custom("not an integer in range"));
        }
        Ok(T::from_f64(v).scalar())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        v.parse::<T>()
            .map(T::scalar)
            .map_err(|_| E::custom("not an integer"))
    }
}

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
}

/// An enum by name or number; an unknown name is declined (the reference path skips it, or
/// refuses it when unknown fields are refused).
struct EnumVisitor<'a>(&'a Names);

impl Visitor<'_> for EnumVisitor<'_> {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an enum name or number")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        self.0
            .get(v)
            .map(Scalar::I32)
            .ok_or_else(|| E::custom("unknown enum name"))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        i32::try_from(v)
            .map(Scalar::I32)
            .map_err(|_| E::custom("enum number out of range"))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        i32::try_from(v)
            .map(Scalar::I32)
            .map_err(|_| E::custom("enum number out of range"))
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
    fn varint_lengths() {
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
        }
    }
}
