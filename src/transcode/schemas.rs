//! The compiled schemas of a snapshot's message types, built once when the snapshot loads and
//! shared by every route, both directions and every protocol that transcodes.

use prost_reflect::{DescriptorPool, MessageDescriptor};

use super::json_to_wire::JsonToWire;
use super::options::JsonOptions;
use super::schema::{Declined, Schema};
use super::wire_to_json::WireToJson;

/// A snapshot's compiled message schemas: what the fast paths know of each message type.
#[derive(Debug, Default)]
pub struct Schemas {
    schema: Schema,
}

impl Schemas {
    /// The schemas of the message types `pool` defines.
    pub fn build(pool: &DescriptorPool) -> Schemas {
        Schemas {
            schema: Schema::compile(pool),
        }
    }

    /// Whether the fast paths handle `desc` (a proto3 message type outside
    /// `google.protobuf`, holding only such types and well-known ones).
    pub fn handles(&self, desc: &MessageDescriptor) -> bool {
        self.schema.root(desc).is_some()
    }

    /// The fast renderer alone: the compact JSON of the `desc` message in `wire`, or
    /// [`Declined`] where the reference path must decide. The fuzz targets and tests compare
    /// it with that path; the gateway renders through [`render_response`] and
    /// [`wire_to_json`], which fall back on their own.
    ///
    /// [`render_response`]: super::render_response
    /// [`wire_to_json`]: super::wire_to_json
    pub fn render_fast(
        &self,
        desc: &MessageDescriptor,
        wire: &[u8],
        options: &JsonOptions,
        out: &mut Vec<u8>,
    ) -> Result<(), Declined> {
        self.renderer(desc)
            .ok_or(Declined)?
            .render(wire, options, out)
    }

    /// The fields a query string sets, as wire fields of a `desc` message, into `out`
    /// (`query_to_wire.rs`); [`Declined`], having written nothing, where the reference path
    /// must decide.
    pub(super) fn encode_query(
        &self,
        desc: &MessageDescriptor,
        query: &str,
        bound: &[Vec<u32>],
        out: &mut Vec<u8>,
    ) -> Result<(), Declined> {
        let root = self.schema.root(desc).ok_or(Declined)?;
        let message = self.schema.messages.get(root).ok_or(Declined)?;
        super::query_to_wire::encode(message, query, bound, out)
    }

    pub(super) fn encoder(&self, desc: &MessageDescriptor) -> Option<JsonToWire<'_>> {
        let root = self.schema.root(desc)?;
        Some(JsonToWire {
            schema: &self.schema,
            root,
        })
    }

    pub(super) fn renderer(&self, desc: &MessageDescriptor) -> Option<WireToJson<'_>> {
        let root = self.schema.root(desc)?;
        Some(WireToJson {
            schema: &self.schema,
            root,
        })
    }
}
