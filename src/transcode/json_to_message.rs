//! Go protojson's rules for numbers written as JSON strings, enforced on prost-reflect's
//! deserialiser.
//!
//! proto3 JSON lets a number field take a string (`"fDouble": "1.5"`, `"fInt64": "-7"`).
//! prost-reflect parses such strings with Rust's `str::parse`, which takes more than the
//! mapping allows: `"1e999"` becomes infinity (out of range), `"inf"`, `"nan"`, `"+1"` and
//! `".5"` are numbers. Go's protojson accepts only a JSON number token, or exactly `"NaN"`,
//! `"Infinity"` and `"-Infinity"` for floating-point fields, and refuses a value out of range.
//!
//! [`Strict`] wraps the serde deserialiser given to prost-reflect: every string a number
//! visitor is about to read is checked first (visitors are recognised by what they say they
//! expect), every other value passes through untouched.
//!
//! It also refuses keys given twice, as protojson does (prost-reflect keeps the last value):
//! it follows the message type down the body ([`Expect`]) and records each object's keys as
//! they are read ([`Keys`], `json_keys.rs`).

use std::fmt;

use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde::de::{DeserializeSeed, Deserializer, EnumAccess, Error, MapAccess, SeqAccess, Visitor};

use super::json_error::{check_depth, invalid_body, Place};
use super::json_keys::{duplicated_key, Expect, Keys};
use super::options::JsonOptions;
use crate::error::{quoted, GatewayError};
use crate::well_known::check_any_type_names;

/// The message of type `desc` in the JSON `body`, by protojson's rules: the reference path.
/// `prefix` is where the body sits in the request message (`shelf.` for `body: "shelf"`), for
/// the field path of an error, which names the field as the client wrote it.
pub(super) fn parse_message(
    desc: &MessageDescriptor,
    body: &[u8],
    options: &JsonOptions,
    prefix: &str,
) -> Result<DynamicMessage, GatewayError> {
    check_depth(body, options.max_depth)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = DynamicMessage::deserialize_with_options(
        desc.clone(),
        Strict::new(&mut de, desc),
        &options.deserialize(),
    )
    .and_then(|m| de.end().map(|()| m));
    let message = parsed.map_err(|e| {
        let path = error_path(desc, body, options, &e);
        invalid_body(
            desc.full_name(),
            Place {
                path: &path,
                prefix,
            },
            &e,
        )
    })?;
    check_any_type_names(&message)?;
    Ok(message)
}

/// Bodies nested deeper than this are refused without a field path: tracking it costs stack
/// on every level, and serde_json's own limit (128) must stay the one that stops a deep body.
const PATH_DEPTH: usize = 32;

/// Where in `body` the refusal `error` is, found by reading the body again with the path
/// tracked (refusals are rare; accepted bodies never pay for the tracking).
fn error_path(
    desc: &MessageDescriptor,
    body: &[u8],
    options: &JsonOptions,
    error: &serde_json::Error,
) -> String {
    if check_depth(body, PATH_DEPTH).is_err() {
        return String::new();
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(Strict::new(&mut de, desc), &mut track);
    let again =
        DynamicMessage::deserialize_with_options(desc.clone(), tracked, &options.deserialize());
    if again.is_ok() {
        return String::new();
    }
    let mut path = client_path(&track.path());
    if let Some(key) = duplicated_key(&error.to_string()) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key);
    }
    path
}

/// A path as the client wrote it: `a.b[0].c`, empty at the top. A key that could not be
/// read (a key given twice) is not on the path: the error names it.
fn client_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// A number field's type, as its visitor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    F32,
    F64,
    Integer,
}

/// The number type `visitor` reads, from its `expecting` text (prost-reflect's visitors).
fn number_visitor<'de, V: Visitor<'de>>(visitor: &V) -> Option<Number> {
    struct Expecting<'a, V>(&'a V);
    impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }
    match Expecting(visitor).to_string().as_str() {
        "a 32-bit floating point value" => Some(Number::F32),
        "a 64-bit floating point value" => Some(Number::F64),
        "a 32-bit signed integer"
        | "a 32-bit unsigned integer or decimal string"
        | "a 64-bit signed integer or decimal string"
        | "a 64-bit unsigned integer or decimal string" => Some(Number::Integer),
        _ => None,
    }
}

/// Whether `s` is a JSON number token (RFC 8259): `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
pub(super) fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Whether `s` is a JSON integer token: `-?(0|[1-9][0-9]*)`.
pub(super) fn is_json_integer(s: &str) -> bool {
    is_json_number(s) && !s.contains(['.', 'e', 'E'])
}

/// Whether protojson takes `s` as a string-encoded number of type `number`.
fn allowed(number: Number, s: &str) -> bool {
    match number {
        Number::Integer => is_json_integer(s),
        _ if matches!(s, "NaN" | "Infinity" | "-Infinity") => true,
        Number::F32 => is_json_number(s) && s.parse::<f32>().is_ok_and(f32::is_finite),
        Number::F64 => is_json_number(s) && s.parse::<f64>().is_ok_and(f64::is_finite),
    }
}

fn check<'de, V: Visitor<'de>, E: Error>(visitor: &V, s: &str) -> Result<(), E> {
    // Only a string Rust would read as a number can be one protojson refuses (a number visitor
    // refuses any other string itself), and such a string starts with one of these bytes: most
    // strings are passed at the first test.
    let could_be_number = matches!(
        s.as_bytes().first(),
        Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'i' | b'I' | b'n' | b'N')
    );
    if !could_be_number || (s.parse::<f64>().is_err() && s.parse::<i128>().is_err()) {
        return Ok(());
    }
    match number_visitor(visitor) {
        Some(number) if !allowed(number, s) => {
            Err(E::custom(format!("invalid number {}", quoted(s))))
        }
        _ => Ok(()),
    }
}

/// A deserialiser whose number visitors see only strings protojson accepts, and whose objects
/// are checked for keys given twice ([`json_keys`](super::json_keys)).
pub(super) struct Strict<D> {
    de: D,
    expect: Expect,
}

impl<D> Strict<D> {
    /// `de`, about to read a message of type `desc` (a well-known type included).
    pub(super) fn new(de: D, desc: &MessageDescriptor) -> Self {
        Strict {
            de,
            expect: Expect::of_message(desc),
        }
    }

    fn split<V>(self, inner: V) -> (D, StrictVisitor<V>) {
        let visitor = StrictVisitor {
            inner,
            expect: self.expect,
        };
        (self.de, visitor)
    }
}

/// A visitor, checked.
struct StrictVisitor<V> {
    inner: V,
    expect: Expect,
}

/// A seed whose deserialiser is wrapped too.
struct StrictSeed<S> {
    inner: S,
    expect: Expect,
}

/// An object: its keys are recorded as they are read, and each value is wrapped with what it
/// is expected to be.
struct StrictMap<A> {
    map: A,
    keys: Keys,
    next: Expect,
}

struct StrictSeq<A> {
    seq: A,
    element: Expect,
}

/// The seed, deserialiser and visitor of an object key: they record it, refusing it when it
/// was given before, and say what its value is.
struct KeySeed<'k, S> {
    inner: S,
    keys: &'k mut Keys,
    next: &'k mut Expect,
}

struct KeyDe<'k, D> {
    de: D,
    keys: &'k mut Keys,
    next: &'k mut Expect,
}

struct KeyVisitor<'k, V> {
    inner: V,
    keys: &'k mut Keys,
    next: &'k mut Expect,
}

impl<'k, D> KeyDe<'k, D> {
    fn split<V>(self, inner: V) -> (D, KeyVisitor<'k, V>) {
        let visitor = KeyVisitor {
            inner,
            keys: self.keys,
            next: self.next,
        };
        (self.de, visitor)
    }
}

/// The `Deserializer` methods of a wrapper whose `split` gives the wrapped deserialiser and
/// the visitor, wrapped in turn.
macro_rules! forward_deserializer {
    () => {
        forward_deserializer!(
            @plain
            deserialize_any,
            deserialize_bool,
            deserialize_i8,
            deserialize_i16,
            deserialize_i32,
            deserialize_i64,
            deserialize_u8,
            deserialize_u16,
            deserialize_u32,
            deserialize_u64,
            deserialize_f32,
            deserialize_f64,
            deserialize_char,
            deserialize_str,
            deserialize_string,
            deserialize_bytes,
            deserialize_byte_buf,
            deserialize_option,
            deserialize_unit,
            deserialize_seq,
            deserialize_map,
            deserialize_identifier,
            deserialize_ignored_any,
        );

        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.split(visitor);
            de.deserialize_unit_struct(name, visitor)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.split(visitor);
            de.deserialize_newtype_struct(name, visitor)
        }

        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.split(visitor);
            de.deserialize_tuple(len, visitor)
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.split(visitor);
            de.deserialize_tuple_struct(name, len, visitor)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.split(visitor);
            de.deserialize_struct(name, fields, visitor)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            let (de, visitor) = self.split(visitor);
            de.deserialize_enum(name, variants, visitor)
        }

        fn is_human_readable(&self) -> bool {
            self.de.is_human_readable()
        }
    };
    (@plain $($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                let (de, visitor) = self.split(visitor);
                de.$method(visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserializer!();
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDe<'_, D> {
    type Error = D::Error;

    forward_deserializer!();
}

/// `Visitor` methods passed on to `self.inner` untouched.
macro_rules! forward_visit {
    ($($method:ident: $t:ty),* $(,)?) => {
        $(
            fn $method<E: Error>(self, v: $t) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

/// The `Visitor` methods both wrappers pass on untouched.
macro_rules! forward_visit_plain {
    () => {
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.inner.expecting(f)
        }

        forward_visit!(
            visit_bool: bool,
            visit_i64: i64,
            visit_i128: i128,
            visit_u64: u64,
            visit_u128: u128,
            visit_f64: f64,
            visit_char: char,
            visit_bytes: &[u8],
            visit_borrowed_bytes: &'de [u8],
            visit_byte_buf: Vec<u8>,
        );

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            self.inner.visit_none()
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            self.inner.visit_unit()
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.inner.visit_enum(data)
        }
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<V> {
    type Value = V::Value;

    forward_visit_plain!();

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        check(&self.inner, v)?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
        check(&self.inner, v)?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        check(&self.inner, &v)?;
        self.inner.visit_string(v)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let expect = self.expect;
        self.inner.visit_some(Strict { de: d, expect })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let expect = self.expect;
        self.inner.visit_newtype_struct(Strict { de: d, expect })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let element = self.expect.element();
        self.inner.visit_seq(StrictSeq { seq, element })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let keys = self.expect.keys();
        self.inner.visit_map(StrictMap {
            map,
            keys,
            next: Expect::Other,
        })
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, V> {
    type Value = V::Value;

    forward_visit_plain!();

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        *self.next = self.keys.check(v).map_err(E::custom)?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
        *self.next = self.keys.check(v).map_err(E::custom)?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
        *self.next = self.keys.check(&v).map_err(E::custom)?;
        self.inner.visit_string(v)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(map)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let expect = self.expect;
        self.inner.deserialize(Strict { de: d, expect })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.deserialize(KeyDe {
            de: d,
            keys: self.keys,
            next: self.next,
        })
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.map.next_key_seed(KeySeed {
            inner: seed,
            keys: &mut self.keys,
            next: &mut self.next,
        })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let expect = std::mem::take(&mut self.next);
        self.map.next_value_seed(StrictSeed {
            inner: seed,
            expect,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        self.seq.next_element_seed(StrictSeed {
            inner: seed,
            expect: self.element.clone(),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_number_tokens() {
        for ok in [
            "0", "-0", "1", "-12", "1.5", "1e5", "1E+5", "-1.25e-3", "0.0",
        ] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in [
            "", "-", "+1", "01", ".5", "1.", "1e", "1e+", " 1", "1 ", "inf", "nan", "0x1", "1_0",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
        assert!(is_json_integer("-7") && !is_json_integer("7.0") && !is_json_integer("1e2"));
    }

    #[test]
    fn strings_protojson_takes_as_floats() {
        for ok in ["NaN", "Infinity", "-Infinity", "1.5", "-0", "3.4e38"] {
            assert!(allowed(Number::F32, ok), "{ok}");
        }
        for bad in ["1e39", "inf", "nan", "+1", ".5", "infinity", "-inf"] {
            assert!(!allowed(Number::F32, bad), "{bad}");
        }
        assert!(allowed(Number::F64, "1e308") && !allowed(Number::F64, "1e309"));
        assert!(allowed(Number::Integer, "-12") && !allowed(Number::Integer, "+12"));
    }
}
