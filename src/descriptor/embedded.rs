//! The `google/api` and `google/rpc` files every annotated API imports, and
//! `buf/validate/validate.proto` for the `--validate` rules, built into the binary so users
//! never copy them into their trees (Apache-2.0, from googleapis and protovalidate; see NOTICE).

use prost_reflect::DescriptorPool;
use protox::file::{File, FileResolver, GoogleFileResolver};

use super::DescriptorError;

/// Name and source of every built-in file.
pub const EMBEDDED_FILES: [(&str, &str); 7] = [
    (
        "google/api/http.proto",
        include_str!("../../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../../proto/google/api/annotations.proto"),
    ),
    (
        "google/api/httpbody.proto",
        include_str!("../../proto/google/api/httpbody.proto"),
    ),
    (
        "google/rpc/code.proto",
        include_str!("../../proto/google/rpc/code.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("../../proto/google/rpc/status.proto"),
    ),
    (
        "google/rpc/error_details.proto",
        include_str!("../../proto/google/rpc/error_details.proto"),
    ),
    (
        "buf/validate/validate.proto",
        include_str!("../../proto/buf/validate/validate.proto"),
    ),
];

/// Resolves imports of the built-in files by name.
pub(super) struct Resolver;

impl FileResolver for Resolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match EMBEDDED_FILES.iter().find(|(n, _)| *n == name) {
            Some((n, source)) => File::from_source(n, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Well-known types loaded into every pool, so that `Any` values and details naming them
/// always resolve.
const WELL_KNOWN: [&str; 9] = [
    "google/protobuf/any.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/wrappers.proto",
    "google/protobuf/descriptor.proto",
    "google/protobuf/type.proto",
];

/// A pool holding the built-in files and the well-known types.
pub(super) fn pool() -> Result<DescriptorPool, DescriptorError> {
    let mut chain = protox::file::ChainFileResolver::new();
    chain.add(Resolver);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true).include_source_info(false);
    let names = EMBEDDED_FILES.iter().map(|(name, _)| *name);
    for name in names.chain(WELL_KNOWN) {
        compiler
            .open_file(name)
            .map_err(|e| DescriptorError::Embedded(e.to_string()))?;
    }
    Ok(compiler.descriptor_pool())
}
