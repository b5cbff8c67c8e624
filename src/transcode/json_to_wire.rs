//! A direct JSON-to-protobuf-wire encoder for request bodies: serde_json's tokens are written
//! straight into the gRPC frame, with no `DynamicMessage` in between, and `bytes` fields are
//! decoded with SIMD base64 into the frame itself.
//!
//! It is the fast path beside the reference path (prost-reflect's `DynamicMessage`
//! deserialisation with `json_to_message.rs`'s rules, in `request.rs`), and it only ever
//! succeeds where the reference path would accept the same body and build the same message:
//!
//! - It reads the snapshot's compiled [`Schema`]; well-known types inside are read by the
//!   reference deserialiser, which knows their JSON forms.
//! - Each value is accepted by the same rules as prost-reflect's visitors (with protojson's
//!   rules for numbers in strings, `json_to_message.rs`), or refused. Where those rules are
//!   involved (a float written as a string, an unknown enum name, base64 with stray trailing
//!   bits), the fast path declines and the caller runs the reference path, which gives the
//!   answer, and the error message, that it always gave.
//! - A key given twice (a field, a map key) stops it (`json_keys.rs`), and the reference path
//!   refuses the body, saying where: a bitset of field indexes and a few inline map keys per
//!   object keep the check free of allocation for small objects.
//!
//! The `json_request` fuzz target compares the two paths on every input it tries, and
//! `tests/it/fast_paths.rs` on the benchmark's bodies; the conformance corpus runs once with the
//! fast paths and once without ([`JsonOptions::fast_paths`](super::JsonOptions)).

use std::borrow::Cow;
use std::fmt;

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage};

use super::json_keys::{duplicate_field, duplicate_map_key, EncodedKeys};
use super::json_to_message::{is_json_integer, Strict};
use super::schema::{
    put_tag, put_varint, wire_type, Declined, Delimited, FieldSchema, Names, Scalar, Schema, Shape,
    ValueKind, LEN, MAX_FIELDS,
};
use crate::well_known::{check_any_type_names, WellKnown};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

/// Bitset words for one message's fields, in [`MessageSeed::visit_map`].
const SEEN_WORDS: usize = MAX_FIELDS / 64;

/// The encoder of one compiled message type (the root) and the types it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonToWire<'s> {
    pub schema: &'s Schema,
    pub root: usize,
}

impl JsonToWire<'_> {
    /// Appends the fields of the root message that the JSON object in `body` holds to `out`,
    /// or declines. `out` is left with unspecified contents when it does not
    /// succeed.
    pub(super) fn encode(
        self,
        body: &[u8],
        deny_unknown: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Declined> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let seed = MessageSeed {
            schema: self.schema,
            index: self.root,
            deny_unknown,
            out,
        };
        let read = seed.deserialize(&mut de).and_then(|()| de.end());
        read.map_err(|_| Declined)
    }

    /// Like [`JsonToWire::encode`], the root message being the value of field `number` (a
    /// `body: "field"` binding).
    pub(super) fn encode_field(
        self,
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

// --- reading JSON ------------------------------------------------------------------------

/// A JSON object into the fields of message `index`, appended to `out`.
struct MessageSeed<'a> {
    schema: &'a Schema,
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let codec = &self.schema.messages[self.index];
        let mut seen = [0u64; SEEN_WORDS];
        let mut oneofs = 0u64;
        loop {
            let keys = KeySeed {
                names: &codec.names,
                seen: &mut seen,
            };
            let Some(key) = map.next_key_seed(keys)? else {
                break;
            };
            let Some(i) = key else {
                if self.deny_unknown {
                    return Err(A::Error::custom("unknown field"));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let field = &codec.fields[i];
            let present = map.next_value_seed(FieldSeed {
                schema: self.schema,
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

/// An object key into its field's index, `None` for a name the message does not have; a
/// field named before (by either of its names) refuses the body.
struct KeySeed<'a> {
    names: &'a Names,
    seen: &'a mut [u64; SEEN_WORDS],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let Some(i) = self.names.get(v).map(|i| i as usize) else {
            return Ok(None);
        };
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.seen[word] & bit != 0 {
            return Err(E::custom(duplicate_field(v)));
        }
        self.seen[word] |= bit;
        Ok(Some(i))
    }
}

/// One field's value (`null` included): `true` when it set the field.
struct FieldSeed<'a> {
    schema: &'a Schema,
    field: &'a FieldSchema,
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field value")
    }

    /// `null` leaves a field unset, except a `google.protobuf.Value`, for which it is a value
    /// (left to the reference path).
    fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
        match &self.field.kind {
            ValueKind::WellKnown(WellKnown::Value, _) => Err(E::custom("null Value")),
            ValueKind::NullValue => Err(E::custom("NullValue")),
            _ => Ok(false),
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let FieldSeed {
            schema,
            field,
            deny_unknown,
            out,
        } = self;
        let value = ValueWriter {
            schema,
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
    schema: &'a Schema,
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
            ValueKind::Message(_) | ValueKind::WellKnown(..) => {
                put_tag(out, number, LEN);
                self.delimited(d, out)?;
            }
            kind => {
                let v = self.scalar(d)?;
                if !(implicit && v.is_default()) {
                    put_tag(out, number, wire_type(kind));
                    v.put(kind, out).ok_or_else(mismatch)?;
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
            // As bytes: serde_json then skips the UTF-8 check of a string that base64 decoding
            // checks byte by byte anyway (any byte outside its alphabet is refused).
            ValueKind::Bytes => d.deserialize_bytes(BytesSeed(out)),
            ValueKind::Message(index) => {
                let len = Delimited::open(out);
                let start = out.len();
                MessageSeed {
                    schema: self.schema,
                    index: *index,
                    deny_unknown: self.deny_unknown,
                    out: &mut *out,
                }
                .deserialize(d)?;
                let written = out.len() - start;
                len.close(out);
                Ok(written)
            }
            ValueKind::WellKnown(kind, desc) => {
                let options = DeserializeOptions::new().deny_unknown_fields(self.deny_unknown);
                let message = DynamicMessage::deserialize_with_options(
                    desc.clone(),
                    Strict::new(d, desc),
                    &options,
                )?;
                if *kind == WellKnown::Any {
                    check_any_type_names(&message).map_err(D::Error::custom)?;
                }
                let len = message.encoded_len();
                put_varint(out, len as u64);
                message.encode_raw(out);
                Ok(len)
            }
            _ => Err(mismatch()),
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
            ValueKind::Enum(e) => d.deserialize_any(EnumVisitor(&e.by_name)),
            ValueKind::NullValue => Err(D::Error::custom("NullValue")),
            _ => Err(mismatch()),
        }
    }

    /// One element of a list or one map value: never `null`, always written.
    fn element<'de, D: Deserializer<'de>>(self, d: D, out: &mut Vec<u8>) -> Result<(), D::Error> {
        match self.kind {
            ValueKind::String
            | ValueKind::Bytes
            | ValueKind::Message(_)
            | ValueKind::WellKnown(..) => self.delimited(d, out).map(drop),
            kind => self.scalar(d)?.put(kind, out).ok_or_else(mismatch),
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// A map field: one entry message (key 1, value 2) per JSON key; a key given twice (by value)
/// refuses the body.
struct MapSeed<'a, 'o> {
    key: &'a ValueKind,
    value: ValueWriter<'a>,
    number: u32,
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for MapSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        let mut keys = EncodedKeys::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            put_tag(out, self.number, LEN);
            let entry = Delimited::open(out);
            let start = out.len();
            put_map_key(self.key, &key, out).map_err(A::Error::custom)?;
            if !keys.insert(&out[start..]) {
                return Err(A::Error::custom(duplicate_map_key(&key)));
            }
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
    scalar.put(kind, out).ok_or("invalid map key type")?;
    Ok(())
}

/// A value read for another kind than its field's: never, but declined rather than assumed.
fn mismatch<E: serde::de::Error>() -> E {
    E::custom("value of another kind")
}

/// A string with its length.
struct StringSeed<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for StringSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
/// declined and left to it. A string is read as raw bytes (escapes resolved, not checked as
/// UTF-8): anything that is not ASCII base64 fails to decode, as it would as a string.
struct BytesSeed<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for BytesSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
        self.visit_bytes(v.as_bytes())
    }

    /// Decoded with the standard alphabet, else the URL-safe one: one pass over the usual
    /// value, not a search for `-` and `_` first.
    fn visit_bytes<E: serde::de::Error>(self, src: &[u8]) -> Result<usize, E> {
        let padded = src.last() == Some(&b'=');
        let (standard, url_safe) = match padded {
            true => (base64_simd::STANDARD, base64_simd::URL_SAFE),
            false => (base64_simd::STANDARD_NO_PAD, base64_simd::URL_SAFE_NO_PAD),
        };
        let len = standard.decoded_length(src).map_err(E::custom)?;
        put_varint(self.0, len as u64);
        // A failed decode leaves the output as it was (base64-simd sets the length last).
        standard
            .decode_append(src, self.0)
            .or_else(|_| url_safe.decode_append(src, self.0))
            .map_err(E::custom)?;
        Ok(len)
    }
}

// The scalar visitors accept exactly what prost-reflect's do, or less.

struct DoubleVisitor;

impl Visitor<'_> for DoubleVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    /// A decimal string, as protojson takes it (a JSON integer token).
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        if !is_json_integer(v) {
            return Err(E::custom("not an integer"));
        }
        v.parse::<T>()
            .map(T::scalar)
            .map_err(|_| E::custom("not an integer"))
    }
}

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an enum name or number")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        self.0
            .get(v)
            .map(Scalar::Enum)
            .ok_or_else(|| E::custom("unknown enum name"))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        i32::try_from(v)
            .map(Scalar::Enum)
            .map_err(|_| E::custom("enum number out of range"))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        i32::try_from(v)
            .map(Scalar::Enum)
            .map_err(|_| E::custom("enum number out of range"))
    }
}
