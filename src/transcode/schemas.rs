//! The compiled schemas of a snapshot's message types, shared by every route and protocol
//! that transcodes them.

use prost_reflect::DescriptorPool;

/// A snapshot's compiled message schemas.
#[derive(Debug, Default)]
pub struct Schemas {}

impl Schemas {
    /// The schemas of the message types `pool` defines.
    pub fn build(pool: &DescriptorPool) -> Schemas {
        let _ = pool;
        Schemas {}
    }
}
