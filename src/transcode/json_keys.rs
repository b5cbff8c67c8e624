//! Keys given twice in a JSON body, refused as Go's protojson refuses them: a message field
//! named twice, by one name or by its JSON name and its proto name (`duplicate field "x"`),
//! and a map key given twice, compared by value (`"1"` and `"01"` in an int32 map are one
//! key: `duplicate map key "x"`), `google.protobuf.Struct` objects included, since a
//! `Struct` is a map. The key is named as the client wrote it.
//!
//! [`Expect`] says what each object of a body is and [`Keys`] records the keys of one: the
//! reference path's deserialiser ([`Strict`](super::json_to_message::Strict)) asks them about
//! every key. The direct encoder keeps its own cheaper record (a bitset of field indexes,
//! [`EncodedKeys`] for maps) and words its refusals with the same [`duplicate_field`] and
//! [`duplicate_map_key`], at the same point of the body, so both paths refuse a body with
//! the same message.

use crate::well_known::{in_protobuf_package, well_known, WellKnown};
use std::collections::HashSet;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use smallvec::SmallVec;

use crate::error::quoted;

/// The refusal of a message field given twice; `key` as written.
pub(super) fn duplicate_field(key: &str) -> String {
    format!("duplicate field {}", quoted(key))
}

/// The refusal of a map (or `Struct`) key given twice; `key` as written.
pub(super) fn duplicate_map_key(key: &str) -> String {
    format!("duplicate map key {}", quoted(key))
}

/// The key a refusal of [`duplicate_field`] or [`duplicate_map_key`] names, from the error's
/// text (`None` for any other error, or a key too long to have been repeated whole).
pub(super) fn duplicated_key(error: &str) -> Option<String> {
    let rest = error
        .strip_prefix("duplicate field ")
        .or_else(|| error.strip_prefix("duplicate map key "))?;
    let mut de = serde_json::Deserializer::from_str(rest);
    serde::Deserialize::deserialize(&mut de).ok()
}

/// What a JSON value about to be read is, as far as keys given twice are concerned.
#[derive(Debug, Clone, Default)]
pub(super) enum Expect {
    /// Nothing inside to check: a scalar, an unknown field, a well-known type with a string
    /// form, or an object read some other way.
    #[default]
    Other,
    /// A message: each field once.
    Message(MessageDescriptor),
    /// A repeated field: its elements are of the field's kind.
    List(FieldDescriptor),
    /// A map field: each key once.
    Map(FieldDescriptor),
    /// A `google.protobuf.Struct`: each key once.
    Struct,
    /// A `google.protobuf.Value`: an object is a `Struct`, a list holds `Value`s.
    Value,
    /// A `google.protobuf.ListValue`: a list of `Value`s.
    ListValue,
    /// A `google.protobuf.Any`: each key once, as written (its type is only known once its
    /// `@type` is read).
    Any,
}

impl Expect {
    /// A message of type `desc`, a well-known type included.
    pub(super) fn of_message(desc: &MessageDescriptor) -> Expect {
        match well_known(desc) {
            Some(WellKnown::Struct) => Expect::Struct,
            Some(WellKnown::Value) => Expect::Value,
            Some(WellKnown::ListValue) => Expect::ListValue,
            Some(WellKnown::Any) => Expect::Any,
            _ if in_protobuf_package(desc.full_name()) => Expect::Other,
            _ => Expect::Message(desc.clone()),
        }
    }

    fn of_kind(kind: &Kind) -> Expect {
        match kind {
            Kind::Message(m) => Expect::of_message(m),
            _ => Expect::Other,
        }
    }

    /// The value of `field`.
    fn of_field(field: &FieldDescriptor) -> Expect {
        if field.is_map() {
            Expect::Map(field.clone())
        } else if field.is_list() {
            Expect::List(field.clone())
        } else {
            Expect::of_kind(&field.kind())
        }
    }

    /// What each element of a list read here is.
    pub(super) fn element(&self) -> Expect {
        match self {
            Expect::List(field) => Expect::of_kind(&field.kind()),
            Expect::Value | Expect::ListValue => Expect::Value,
            _ => Expect::Other,
        }
    }

    /// The record of the keys of an object read here.
    pub(super) fn keys(&self) -> Keys {
        match self {
            Expect::Message(desc) => Keys::Fields {
                desc: desc.clone(),
                seen: SmallVec::new(),
            },
            Expect::Map(field) => match field.kind() {
                Kind::Message(entry) => Keys::Map {
                    key: entry.map_entry_key_field().kind(),
                    value: Expect::of_kind(&entry.map_entry_value_field().kind()),
                    seen: HashSet::new(),
                },
                _ => Keys::Unchecked,
            },
            Expect::Struct | Expect::Value => Keys::Map {
                key: Kind::String,
                value: Expect::Value,
                seen: HashSet::new(),
            },
            Expect::Any => Keys::Written(HashSet::new()),
            Expect::Other | Expect::List(_) | Expect::ListValue => Keys::Unchecked,
        }
    }
}

/// The keys of one JSON object seen so far.
#[derive(Debug)]
pub(super) enum Keys {
    Unchecked,
    /// A message's fields, by number.
    Fields {
        desc: MessageDescriptor,
        seen: SmallVec<[u32; 8]>,
    },
    /// A map's keys, by value (`key` is their kind).
    Map {
        key: Kind,
        value: Expect,
        seen: HashSet<String>,
    },
    /// Keys as written.
    Written(HashSet<String>),
}

impl Keys {
    /// Records `key`: what its value is, or the refusal of a key given twice. Keys the object
    /// cannot have (unknown fields, map keys that do not parse) are left to the reader.
    pub(super) fn check(&mut self, key: &str) -> Result<Expect, String> {
        match self {
            Keys::Unchecked => Ok(Expect::Other),
            Keys::Fields { desc, seen } => {
                let field = desc
                    .get_field_by_json_name(key)
                    .or_else(|| desc.get_field_by_name(key));
                let Some(field) = field else {
                    return Ok(Expect::Other);
                };
                if seen.contains(&field.number()) {
                    return Err(duplicate_field(key));
                }
                seen.push(field.number());
                Ok(Expect::of_field(&field))
            }
            Keys::Map {
                key: kind,
                value,
                seen,
            } => {
                if let Some(canonical) = map_key(kind, key) {
                    if !seen.insert(canonical) {
                        return Err(duplicate_map_key(key));
                    }
                }
                Ok(value.clone())
            }
            Keys::Written(seen) => match seen.insert(key.to_string()) {
                true => Ok(Expect::Other),
                false => Err(duplicate_field(key)),
            },
        }
    }
}

/// A map key by its value, as the reader parses it (`str::parse`); `None` when it does not
/// parse (the reader refuses it).
fn map_key(kind: &Kind, key: &str) -> Option<String> {
    match kind {
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64 => key.parse::<i64>().ok().map(|v| v.to_string()),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
            key.parse::<u64>().ok().map(|v| v.to_string())
        }
        Kind::Bool => key.parse::<bool>().ok().map(|v| v.to_string()),
        _ => Some(key.to_string()),
    }
}

/// The keys of one map object as the direct encoder wrote them (tag and value: a key by its
/// value). A few are kept inline and compared one by one, so small maps cost no allocation;
/// beyond [`EncodedKeys::INLINE`] they go into a hash set.
#[derive(Debug, Default)]
pub(super) struct EncodedKeys {
    bytes: SmallVec<[u8; 128]>,
    ends: SmallVec<[usize; EncodedKeys::INLINE + 1]>,
    set: Option<HashSet<Box<[u8]>>>,
}

impl EncodedKeys {
    const INLINE: usize = 16;

    /// Records `key`; `false` when it was there already.
    pub(super) fn insert(&mut self, key: &[u8]) -> bool {
        if let Some(set) = &mut self.set {
            return set.insert(key.into());
        }
        if self.inline().any(|k| k == key) {
            return false;
        }
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
        if self.ends.len() > Self::INLINE {
            let set = self.inline().map(Box::from).collect();
            self.set = Some(set);
            self.bytes.clear();
            self.ends.clear();
        }
        true
    }

    fn inline(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(s, e)| &self.bytes[s..*e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_keys_inline_then_hashed() {
        let mut keys = EncodedKeys::default();
        for i in 0..100u32 {
            let key = i.to_le_bytes();
            assert!(keys.insert(&key), "{i}");
            assert!(!keys.insert(&key), "{i} again");
            assert_eq!(keys.set.is_some(), i >= EncodedKeys::INLINE as u32, "{i}");
        }
        assert!(keys.insert(b""));
        assert!(!keys.insert(b""));
    }

    #[test]
    fn map_keys_by_value() {
        assert_eq!(map_key(&Kind::Int32, "01"), map_key(&Kind::Int32, "1"));
        assert_eq!(map_key(&Kind::Uint64, "x"), None);
        assert_eq!(map_key(&Kind::String, "01").as_deref(), Some("01"));
        assert_eq!(duplicate_field("a\"b"), r#"duplicate field "a\"b""#);
        assert_eq!(duplicate_map_key("k"), r#"duplicate map key "k""#);
    }
}
